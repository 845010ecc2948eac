//! The service over a Rust test embedder: the OpenAI wire format both ways, error bodies, 503 with
//! Retry-After when the provider is full, and 100 concurrent clients without an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use gilkit_embed::service::{self, ServiceHandle, ServiceOptions};
use gilkit_embed::testing::expected_embedding;
use gilkit_embed::wire::EncodingFormat;
use gilkit_embed::{BoxFuture, EmbedError, Embedder, EmbeddingClient, EmbeddingConfig, Embeddings};

const DIM: usize = 8;

/// Vectors from `expected_embedding`; refuses with `Overloaded` past `capacity` concurrent calls.
struct TestModel {
    in_flight: AtomicUsize,
    capacity: usize,
    delay: Duration,
}

impl Embedder for TestModel {
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, EmbedError>> {
        Box::pin(async move {
            if self.in_flight.fetch_add(1, SeqCst) >= self.capacity {
                self.in_flight.fetch_sub(1, SeqCst);
                return Err(EmbedError::Overloaded {
                    queue_len: self.capacity,
                    retry_after: Duration::from_millis(1500),
                });
            }
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, SeqCst);
            if texts.iter().any(|t| t == "boom") {
                return Err(EmbedError::Provider("ValueError: boom".into()));
            }
            let values = texts
                .iter()
                .flat_map(|t| expected_embedding(t, DIM))
                .collect();
            Ok(Embeddings::from_flat(values, DIM, 0))
        })
    }

    fn model(&self) -> &str {
        "test-model"
    }
}

async fn start(capacity: usize, delay: Duration) -> ServiceHandle {
    let model = TestModel {
        in_flight: AtomicUsize::new(0),
        capacity,
        delay,
    };
    service::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(model),
        ServiceOptions::default(),
    )
    .await
    .unwrap()
}

fn url(h: &ServiceHandle, path: &str) -> String {
    format!("http://{}{path}", h.addr())
}

#[tokio::test]
async fn our_client_against_the_service_in_both_encodings() {
    let h = start(usize::MAX, Duration::ZERO).await;
    for fmt in [EncodingFormat::Float, EncodingFormat::Base64] {
        let client = EmbeddingClient::new(EmbeddingConfig {
            base_url: url(&h, "/v1"),
            model: "test-model".into(),
            encoding_format: fmt,
            max_batch_size: 16,
            ..EmbeddingConfig::openai("")
        })
        .unwrap();
        let texts: Vec<String> = (0..100).map(|i| format!("service text {i}")).collect();
        let got = client.embed_many(&texts).await.unwrap();
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(got.row(i), expected_embedding(t, DIM).as_slice());
        }
        assert!(got.prompt_tokens() > 0, "usage is filled in");
    }
    assert_eq!(h.stats().inputs, 200);
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn post(
    h: &ServiceHandle,
    body: &str,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new()
        .post(url(h, "/v1/embeddings"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, json(r).await, headers)
}

#[tokio::test]
async fn bad_requests_get_openai_error_bodies() {
    let h = start(usize::MAX, Duration::ZERO).await;
    for (body, status, needle) in [
        ("{not json", 400, "not a valid JSON request"),
        ("{}", 400, "missing 'input'"),
        (
            r#"{"input": [[1, 2, 3]]}"#,
            400,
            "token arrays are not supported",
        ),
        (r#"{"input": []}"#, 400, "must not be an empty array"),
        (
            r#"{"input": ["a", ""]}"#,
            400,
            "input[1] is an empty string",
        ),
        (
            r#"{"input": "a", "encoding_format": "hex"}"#,
            400,
            "encoding_format",
        ),
        (
            r#"{"input": "a", "dimensions": 3}"#,
            400,
            "returns 8 dimensions",
        ),
        (r#"{"input": ["ok", "boom"]}"#, 500, "boom"),
    ] {
        let (s, v, _) = post(&h, body).await;
        assert_eq!(s, status, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert!(v["error"]["type"].is_string());
    }
    let r = reqwest::get(url(&h, "/nope")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = reqwest::get(url(&h, "/v1/embeddings")).await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v = json(r).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/embeddings")
    );
}

#[tokio::test]
async fn single_string_input_and_model_echo() {
    let h = start(usize::MAX, Duration::ZERO).await;
    let (s, v, _) = post(&h, r#"{"input": "hello", "model": "test-model"}"#).await;
    assert_eq!(s, 200);
    assert_eq!(v["model"], "test-model");
    assert_eq!(v["data"][0]["index"], 0);
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let models = json(reqwest::get(url(&h, "/v1/models")).await.unwrap()).await;
    assert_eq!(models["data"][0]["id"], "test-model");
    let health = json(reqwest::get(url(&h, "/health")).await.unwrap()).await;
    assert_eq!(health["status"], "ok");
    let (s, v, _) = post(&h, r#"{"input": "hello", "model": "gpt-99"}"#).await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
}

#[tokio::test]
async fn fair_shares_split_a_large_request_and_keep_its_order() {
    let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let model = Recording {
        calls: calls.clone(),
    };
    let h = service::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(model),
        ServiceOptions {
            fair_share_tokens: Some(10),
            ..ServiceOptions::default()
        },
    )
    .await
    .unwrap();
    // 9 texts of 4 estimated tokens: shares of at most 10 tokens are 2 texts.
    let texts: Vec<String> = (0..9).map(|i| format!("text {i:05}")).collect();
    let body = serde_json::json!({ "input": texts }).to_string();
    let (s, v, _) = post(&h, &body).await;
    assert_eq!(s, 200);
    for (i, t) in texts.iter().enumerate() {
        let got: Vec<f32> = serde_json::from_value(v["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(got, expected_embedding(t, DIM));
    }
    assert_eq!(
        calls.lock().iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 2, 2, 1]
    );
    assert_eq!(h.metrics().queue_depth(), 0);
    h.stop().await;
}

/// Records each call's texts; answers with `expected_embedding`.
struct Recording {
    calls: Arc<parking_lot::Mutex<Vec<Vec<String>>>>,
}

impl Embedder for Recording {
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, EmbedError>> {
        self.calls.lock().push(texts.to_vec());
        let values = texts
            .iter()
            .flat_map(|t| expected_embedding(t, DIM))
            .collect();
        Box::pin(async move { Ok(Embeddings::from_flat(values, DIM, 0)) })
    }

    fn model(&self) -> &str {
        "recording"
    }
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let h = start(0, Duration::ZERO).await;
    let (s, v, headers) = post(&h, r#"{"input": "x"}"#).await;
    assert_eq!(s, 503);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(headers["retry-after-ms"], "1500");
    assert_eq!(v["error"]["code"], "overloaded");
    assert_eq!(h.stats().busy, 1);
}

#[tokio::test]
async fn a_hundred_concurrent_clients_get_no_errors() {
    let h = start(usize::MAX, Duration::from_millis(5)).await;
    let base = url(&h, "/v1");
    let tasks: Vec<_> = (0..100)
        .map(|c| {
            let base = base.clone();
            tokio::spawn(async move {
                let client = EmbeddingClient::new(EmbeddingConfig {
                    base_url: base,
                    model: "test-model".into(),
                    ..EmbeddingConfig::openai("")
                })
                .unwrap();
                for i in 0..5 {
                    let t = format!("client {c} request {i}");
                    assert_eq!(client.embed(&t).await.unwrap(), expected_embedding(&t, DIM));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = h.stats();
    assert_eq!(
        (s.requests, s.ok, s.client_errors, s.server_errors, s.busy),
        (500, 500, 0, 0, 0)
    );
    h.stop().await;
}
