//! A fault-injecting OpenAI-compatible embeddings server on loopback, for tests and benchmarks.
//!
//! [`FaultServer::start`] binds `127.0.0.1:0` (loopback only) and serves `POST /v1/embeddings`,
//! `GET /v1/models` and `GET /health` on its own small tokio runtime, so it works the same under a
//! Rust test, a Python test or a benchmark. Vectors are a deterministic function of the text
//! ([`expected_embedding`]), so a test can check that every vector came back next to its text.
//!
//! # Injecting faults
//!
//! A request whose **first input** starts with `@DIRECTIVE` gets a fault; `@DIRECTIVE*N` gets it
//! only for the first `N` requests with that same first input (counted per exact first input, see
//! [`FaultServer::attempts`]), then succeeds, which is how tests see a retry recover.
//!
//! | directive | response |
//! |---|---|
//! | `@429` | 429 with `retry-after` set to [`FaultConfig::retry_after`] |
//! | `@500`, `@502`, `@503`, `@400`, `@401`, `@404`, `@408`, `@409` | that status, OpenAI error body |
//! | `@noretry` | 503 with `x-should-retry: false` |
//! | `@retry400` | 400 with `x-should-retry: true` |
//! | `@malformed` | 200 whose body is not valid JSON |
//! | `@truncated` | 200 whose body breaks off halfway (the connection is cut) |
//! | `@wrongcount` | 200 with one embedding missing |
//! | `@timeout` | waits [`FaultConfig::timeout_sleep`] before answering |
//! | `@slow=MS` | waits `MS` milliseconds, then answers normally |
//! | `@ratelimit` | succeeds, with `x-ratelimit-*` headers saying the budget is used up |
//!
//! Every response carries `x-request-id: req_N`.
//!
//! # Memory ordering
//!
//! Counters are statistics read after the traffic they count has finished (the test joined its
//! calls): `Relaxed` is enough; `fetch_max` keeps the in-flight peak exact.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{StreamExt, stream};
use parking_lot::Mutex;

use crate::provider::Embeddings;
use crate::wire::{self, EncodingFormat, Input, ServiceRequest};

/// Settings of a [`FaultServer`].
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Dimensions of the vectors (unless a request asks for `dimensions`).
    pub dim: usize,
    /// Added before every response (simulates a remote API).
    pub latency: Duration,
    /// The `retry-after` value sent with `@429` (seconds; fractions are understood by the openai
    /// client and ours).
    pub retry_after: String,
    /// How long `@timeout` waits.
    pub timeout_sleep: Duration,
    /// Worker threads of the server's runtime.
    pub worker_threads: usize,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            dim: 8,
            latency: Duration::ZERO,
            retry_after: "0.01".into(),
            timeout_sleep: Duration::from_secs(5),
            worker_threads: 1,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    config: Mutex<Option<FaultConfig>>,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    inputs: AtomicU64,
    attempts: Mutex<HashMap<String, u32>>,
    peers: Mutex<HashSet<SocketAddr>>,
}

/// A running fault-injecting server; stops when dropped.
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The vector the server returns for `text` (`dim` values): `[fnv(text) % 1e6, chars(text), ...]`.
pub fn expected_embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (0..dim)
        .map(|j| match j {
            0 => (h % 1_000_000) as f32,
            1 => text.chars().count() as f32,
            _ => ((h >> (j % 56)) & 0xff) as f32 / 255.0,
        })
        .collect()
}

impl FaultServer {
    /// Starts a server on `127.0.0.1` with a free port.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound or the runtime cannot start.
    pub fn start(config: FaultConfig) -> std::io::Result<FaultServer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("gilkit-fault-server")
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *shared.config.lock() = Some(config);
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { "ok" }))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gilkit-fault-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("a bound listener");
                    let serve = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    );
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                // Connections still open (a `@timeout` in progress) are cut, not waited for.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(FaultServer {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, for a client's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests to `/v1/embeddings` so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Relaxed)
    }

    /// Inputs embedded or refused so far, over all requests.
    pub fn inputs(&self) -> u64 {
        self.shared.inputs.load(Relaxed)
    }

    /// Requests seen whose first input was exactly `first_input`.
    pub fn attempts(&self, first_input: &str) -> u32 {
        self.shared
            .attempts
            .lock()
            .get(first_input)
            .copied()
            .unwrap_or(0)
    }

    /// Distinct client connections (peer addresses) seen so far.
    pub fn connections(&self) -> usize {
        self.shared.peers.lock().len()
    }

    /// Most requests in progress at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Relaxed)
    }

    /// Changes the added latency for the following requests.
    pub fn set_latency(&self, latency: Duration) {
        if let Some(c) = self.shared.config.lock().as_mut() {
            c.latency = latency;
        }
    }

    /// Forgets every count (requests, attempts, connections, peak).
    pub fn reset(&self) {
        self.shared.requests.store(0, Relaxed);
        self.shared.inputs.store(0, Relaxed);
        self.shared.max_in_flight.store(0, Relaxed);
        self.shared.attempts.lock().clear();
        self.shared.peers.lock().clear();
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn models() -> Response {
    json(
        StatusCode::OK,
        br#"{"object":"list","data":[{"id":"fault-model","object":"model","owned_by":"gilkit"}]}"#
            .to_vec(),
    )
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(status: u16, message: &str) -> Response {
    let error_type = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json(
        StatusCode::from_u16(status).expect("valid status"),
        wire::error_body(message, error_type, None, None),
    )
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let n = shared.requests.fetch_add(1, Relaxed) + 1;
    let now = shared.in_flight.fetch_add(1, Relaxed) + 1;
    shared.max_in_flight.fetch_max(now, Relaxed);
    let _guard = InFlight(&shared);
    shared.peers.lock().insert(peer);
    let config = shared.config.lock().clone().expect("set at start");
    let mut resp = respond(&shared, &config, &body).await;
    resp.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&format!("req_{n}")).expect("ascii"),
    );
    resp
}

async fn respond(shared: &Shared, config: &FaultConfig, body: &[u8]) -> Response {
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let req: ServiceRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return api_error(400, &format!("invalid JSON body: {e}")),
    };
    let texts = match req.input {
        Some(Input::One(s)) => vec![s],
        Some(Input::Many(v)) => v,
        _ => return api_error(400, "'input' must be a string or a list of strings"),
    };
    shared.inputs.fetch_add(texts.len() as u64, Relaxed);
    let Some(first) = texts.first() else {
        return api_error(400, "'input' must not be empty");
    };
    let seen = {
        let mut a = shared.attempts.lock();
        let c = a.entry(first.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let directive = first
        .strip_prefix('@')
        .map(|d| d.split_whitespace().next().unwrap_or(""));
    let (kind, times) = match directive {
        Some(d) => match d.split_once('*') {
            Some((k, t)) => (k, t.parse::<u32>().unwrap_or(u32::MAX)),
            None => (d, u32::MAX),
        },
        None => ("", 0),
    };
    let active = seen <= times;
    let dim = req.dimensions.map_or(config.dim, |d| d as usize);
    let format = match req.encoding_format.as_deref() {
        Some("base64") => EncodingFormat::Base64,
        _ => EncodingFormat::Float,
    };
    let make_body = |texts: &[String]| {
        let values: Vec<f32> = texts
            .iter()
            .flat_map(|t| expected_embedding(t, dim))
            .collect();
        let tokens = texts
            .iter()
            .map(|t| crate::tokens::estimate_tokens(t) as u64)
            .sum();
        wire::encode_response(
            &Embeddings::from_flat(values, dim, tokens),
            "fault-model",
            format,
        )
    };
    if active {
        match kind {
            "429" => {
                let mut r = api_error(429, "Rate limit reached (injected)");
                if let Ok(v) = HeaderValue::from_str(&config.retry_after) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            "noretry" => {
                let mut r = api_error(503, "unavailable, do not retry (injected)");
                r.headers_mut()
                    .insert("x-should-retry", HeaderValue::from_static("false"));
                return r;
            }
            "retry400" => {
                let mut r = api_error(400, "bad request, but retry (injected)");
                r.headers_mut()
                    .insert("x-should-retry", HeaderValue::from_static("true"));
                return r;
            }
            "malformed" => {
                return json(
                    StatusCode::OK,
                    b"{\"object\": \"list\", \"data\": [{\"index\": 0,".to_vec(),
                );
            }
            "truncated" => {
                let full = make_body(&texts);
                let half = Bytes::copy_from_slice(&full[..full.len() / 2]);
                // The pause lets hyper flush the head and first half before the error cuts the
                // connection, so the client sees a 200 whose body breaks off.
                let cut = async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err::<Bytes, _>(std::io::Error::other("injected truncation"))
                };
                let body = stream::iter([Ok(half)]).chain(stream::once(cut));
                let mut r = Response::new(Body::from_stream(body));
                let h: &mut HeaderMap = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
                return r;
            }
            "wrongcount" => return json(StatusCode::OK, make_body(&texts[..texts.len() - 1])),
            "timeout" => tokio::time::sleep(config.timeout_sleep).await,
            "ratelimit" => {
                let mut r = json(StatusCode::OK, make_body(&texts));
                let h = r.headers_mut();
                h.insert("x-ratelimit-limit-requests", HeaderValue::from_static("60"));
                h.insert(
                    "x-ratelimit-remaining-requests",
                    HeaderValue::from_static("0"),
                );
                h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
                return r;
            }
            k if k.starts_with("slow=") => {
                let ms = k["slow=".len()..].parse::<u64>().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            k => {
                if let Ok(status) = k.parse::<u16>()
                    && (400..600).contains(&status)
                {
                    return api_error(status, &format!("injected HTTP {status}"));
                }
            }
        }
    }
    json(StatusCode::OK, make_body(&texts))
}
