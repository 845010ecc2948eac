//! The client against the fault-injecting server: every fault ends in the right retry or error,
//! and vectors stay aligned with their texts.

use std::time::{Duration, Instant};

use gilkit_embed::breaker::BreakerConfig;
use gilkit_embed::ratelimit::RateLimitConfig;
use gilkit_embed::retry::RetryPolicy;
use gilkit_embed::testing::{FaultConfig, FaultServer, expected_embedding};
use gilkit_embed::wire::EncodingFormat;
use gilkit_embed::{EmbedError, EmbeddingClient, EmbeddingConfig, InvalidInput, TransportKind};

const DIM: usize = 8;

fn server() -> FaultServer {
    FaultServer::start(FaultConfig::default()).unwrap()
}

/// A config with fast retries (10 ms first step) so tests do not sleep for the real backoff.
fn config(server: &FaultServer) -> EmbeddingConfig {
    EmbeddingConfig {
        base_url: server.base_url(),
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        breaker: None,
        ..EmbeddingConfig::openai("test-key")
    }
}

fn client(config: EmbeddingConfig) -> EmbeddingClient {
    EmbeddingClient::new(config).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i}")).collect()
}

fn assert_aligned(texts: &[String], got: &gilkit_embed::Embeddings) {
    assert_eq!(got.len(), texts.len());
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(
            got.row(i),
            expected_embedding(t, DIM).as_slice(),
            "vector {i} is not {t:?}'s"
        );
    }
}

#[tokio::test]
async fn split_requests_reassemble_in_order_even_when_the_first_finishes_last() {
    let s = server();
    let c = client(EmbeddingConfig {
        max_batch_size: 7,
        max_concurrency: 8,
        ..config(&s)
    });
    let mut input = texts(1000);
    input[0] = "@slow=100 the first request finishes last".into();
    let got = c.embed_many(&input).await.unwrap();
    assert_aligned(&input, &got);
    assert_eq!(s.requests(), 1000u64.div_ceil(7));
    assert!(s.max_in_flight() > 1, "requests did not overlap");
}

#[tokio::test]
async fn both_encodings_decode() {
    let s = server();
    for fmt in [EncodingFormat::Float, EncodingFormat::Base64] {
        let c = client(EmbeddingConfig {
            encoding_format: fmt,
            ..config(&s)
        });
        let input = texts(5);
        assert_aligned(&input, &c.embed_many(&input).await.unwrap());
    }
}

#[tokio::test]
async fn rate_limited_then_recovers_honouring_retry_after() {
    let s = FaultServer::start(FaultConfig {
        retry_after: "1.2".into(),
        ..FaultConfig::default()
    })
    .unwrap();
    let c = client(EmbeddingConfig {
        retry: RetryPolicy {
            max_retries: 1,
            ..RetryPolicy::default()
        },
        ..config(&s)
    });
    let key = "@429*1 rate limited once";
    let t0 = Instant::now();
    let v = c.embed(key).await.unwrap();
    // Our own backoff for a first retry is at most 0.5 s; the server asked for 1.2 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(v, expected_embedding(key, DIM));
    assert_eq!(s.attempts(key), 2);
}

#[tokio::test]
async fn persistent_429_ends_in_rate_limit_error_after_all_retries() {
    let s = server();
    let c = client(config(&s));
    let key = "@429 always";
    let err = c.embed(key).await.unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    let EmbedError::Api(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.attempts, 3);
    assert_eq!(api.message, "Rate limit reached (injected)");
    assert!(api.request_id.as_deref().unwrap().starts_with("req_"));
    assert_eq!(s.attempts(key), 3);
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let s = server();
    let c = client(config(&s));
    for (key, ok, attempts, status) in [
        ("@500*1 once", true, 2, None),
        ("@502*2 twice", true, 3, None),
        ("@408*1 once", true, 2, None),
        ("@409*1 once", true, 2, None),
        ("@503 always", false, 3, Some(503)),
        ("@400 bad", false, 1, Some(400)),
        ("@401 key", false, 1, Some(401)),
        ("@404 model", false, 1, Some(404)),
        ("@noretry told not to", false, 1, Some(503)),
        ("@retry400*1 told to", true, 2, None),
    ] {
        let r = c.embed(key).await;
        assert_eq!(r.is_ok(), ok, "{key}: {r:?}");
        assert_eq!(s.attempts(key), attempts, "{key}");
        if let Err(e) = r {
            assert_eq!(e.status(), status, "{key}");
            assert!(e.request_id().is_some(), "{key}");
        }
    }
    let err = c.embed("@400 message").await.unwrap_err();
    let EmbedError::Api(api) = err else { panic!() };
    assert_eq!(api.message, "injected HTTP 400");
    assert_eq!(api.error_type.as_deref(), Some("invalid_request_error"));
}

#[tokio::test]
async fn malformed_and_short_bodies_are_decode_errors_not_retried() {
    let s = server();
    let c = client(config(&s));
    let err = c.embed("@malformed body").await.unwrap_err();
    assert!(err.is_decode(), "{err}");
    assert_eq!(s.attempts("@malformed body"), 1);
    let err = c
        .embed_many(&["@wrongcount x".into(), "y".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sent 2 inputs but got 1"), "{err}");
}

#[tokio::test]
async fn truncated_bodies_are_retried_as_connection_errors() {
    let s = server();
    let c = client(config(&s));
    let key = "@truncated*1 cut once";
    assert_eq!(c.embed(key).await.unwrap(), expected_embedding(key, DIM));
    assert_eq!(s.attempts(key), 2);
    let key = "@truncated always";
    let err = c.embed(key).await.unwrap_err();
    assert!(err.is_connection(), "{err:?}");
    assert!(
        matches!(&err, EmbedError::Transport(t) if t.kind == TransportKind::Body && t.attempts == 3),
        "{err:?}"
    );
    assert_eq!(s.attempts(key), 3);
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let s = server();
    let with_timeout = |timeout| {
        client(EmbeddingConfig {
            timeout,
            retry: RetryPolicy {
                max_retries: 1,
                initial_delay: Duration::from_millis(10),
                ..RetryPolicy::default()
            },
            ..config(&s)
        })
    };
    // The retry is answered, so its timeout is far above any local round trip (and below the
    // server's 5 s `timeout_sleep`, which the first attempt runs into).
    let key = "@timeout*1 slow once";
    let c = with_timeout(Duration::from_secs(2));
    assert_eq!(c.embed(key).await.unwrap(), expected_embedding(key, DIM));
    assert_eq!(s.attempts(key), 2);
    // Never answered: a short timeout fires however fast the machine is.
    let c = with_timeout(Duration::from_millis(300));
    let err = c.embed("@timeout always").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        err.to_string().contains("timed out after 2 attempts"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connection_error() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client(EmbeddingConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        breaker: None,
        ..EmbeddingConfig::openai("k")
    });
    let err = c.embed("hello").await.unwrap_err();
    assert!(err.is_connection(), "{err:?}");
    assert!(err.to_string().contains("could not reach"), "{err}");
}

#[tokio::test]
async fn failed_batches_keep_their_slot() {
    let s = server();
    let c = client(config(&s));
    let batches: Vec<Vec<String>> = (0..20)
        .map(|b| {
            let mut batch: Vec<String> = (0..5).map(|i| format!("batch {b} text {i}")).collect();
            if b == 3 || b == 11 {
                batch[0] = format!("@500 batch {b} fails");
            }
            if b == 7 {
                batch[0] = format!("@slow=80 batch {b} is slow");
            }
            batch
        })
        .collect();
    let out = c.embed_batches(&batches, Some(4), None).await.unwrap();
    assert_eq!(out.results.len(), 20);
    for (b, (batch, r)) in batches.iter().zip(&out.results).enumerate() {
        if b == 3 || b == 11 {
            assert_eq!(r.as_ref().unwrap_err().status(), Some(500), "batch {b}");
        } else {
            assert_aligned(batch, r.as_ref().unwrap());
        }
    }
    assert_eq!((out.stats.succeeded, out.stats.failed), (18, 2));
    assert_eq!(out.stats.embeddings, 90);
}

#[tokio::test]
async fn batch_timeout_fails_only_that_batch() {
    let s = server();
    let c = client(config(&s));
    // The slow batch is answered long after the timeout; the fast ones would need a local round
    // trip of over 3 s to time out.
    let batches = vec![
        vec!["fast".to_string()],
        vec!["@slow=6000 slow".to_string()],
        vec!["fast too".to_string()],
    ];
    let out = c
        .embed_batches(&batches, None, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(out.results[0].is_ok());
    assert!(out.results[1].as_ref().unwrap_err().is_timeout());
    assert!(out.results[2].is_ok());
}

#[tokio::test]
async fn breaker_opens_after_repeated_failures_and_stops_sending() {
    let s = server();
    let c = client(EmbeddingConfig {
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        breaker: Some(BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_secs(60),
        }),
        ..config(&s)
    });
    for _ in 0..3 {
        assert_eq!(c.embed("@500 down").await.unwrap_err().status(), Some(500));
    }
    let err = c.embed("healthy text").await.unwrap_err();
    assert!(err.is_circuit_open(), "{err:?}");
    assert!(
        err.to_string()
            .contains("circuit breaker open after 3 consecutive failures"),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    assert_eq!(s.requests(), 3, "the open breaker still sent a request");
}

#[tokio::test]
async fn connections_are_pooled_across_concurrent_calls() {
    let s = server();
    let c = client(EmbeddingConfig {
        max_concurrency: 8,
        ..config(&s)
    });
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    c.embed(&format!("task {t} call {i}")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.requests(), 200);
    assert!(
        s.max_in_flight() <= 8,
        "max_concurrency not enforced: {}",
        s.max_in_flight()
    );
    assert!(
        s.connections() <= 8,
        "{} connections for 200 requests",
        s.connections()
    );
}

#[tokio::test]
async fn rate_limit_headers_slow_the_next_request() {
    let s = server();
    let c = client(EmbeddingConfig {
        rate_limit: RateLimitConfig {
            from_headers: true,
            ..RateLimitConfig::default()
        },
        ..config(&s)
    });
    c.embed("@ratelimit budget used up").await.unwrap();
    c.embed("next").await.unwrap();
    let waited = c.http().unwrap().stats().rate_limited_ms;
    // 60 requests per minute learnt, none remaining: the next one waits about a second.
    assert!(waited >= 900, "waited {waited} ms");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_request() {
    let s = server();
    let c = client(config(&s));
    let cases: Vec<(Vec<String>, InvalidInput)> = vec![
        (vec![], InvalidInput::EmptyList),
        (
            vec!["ok".into(), String::new()],
            InvalidInput::EmptyText { index: 1 },
        ),
        (
            vec!["x".repeat(30_000)],
            InvalidInput::TooLong {
                index: 0,
                estimated_tokens: 10_000,
                limit: 8192,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            c.embed_many(&input).await.unwrap_err(),
            EmbedError::InvalidInput(want)
        );
    }
    let err = c
        .embed_batches(&[vec!["a".into()], vec![]], None, None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        EmbedError::InvalidInput(InvalidInput::EmptyBatch { batch: 1 })
    );
    assert_eq!(s.requests(), 0);
}

#[tokio::test]
async fn requests_split_by_token_budget() {
    let s = server();
    let c = client(EmbeddingConfig {
        limits: gilkit_embed::tokens::Limits {
            max_tokens_per_request: 100,
            ..gilkit_embed::tokens::Limits::OPENAI
        },
        ..config(&s)
    });
    // 30 texts of 60 bytes = 20 estimated tokens each: 5 per request, so 6 requests.
    let input: Vec<String> = (0..30).map(|i| format!("{i:060}")).collect();
    assert_aligned(&input, &c.embed_many(&input).await.unwrap());
    assert_eq!(s.requests(), 6);
}
