//! The embedding service: any [`Embedder`] behind an OpenAI-compatible HTTP API (axum).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/embeddings` (also `/embeddings`) | `{"object": "list", "data": [...], "model", "usage"}`, vectors as `float` (default) or `base64` |
//! | `GET /v1/models` | the one model served |
//! | `GET /health` | `{"status": "ok", ...}` with request counters |
//! | anything else | 404 / 405 with an OpenAI-style error body |
//!
//! Errors use OpenAI's body shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
//! bad request (with what is wrong and how to fix it), 413 for a body over the size limit, 500 when
//! the model fails, 503 with `Retry-After` when the provider's queue is full (so clients back off
//! instead of piling up), 502/504 when an upstream HTTP provider fails.
//!
//! Requests are handled on the tokio runtime the service is started on; the embedder decides how
//! the model is reached (for a Python model, [`crate::python::PyCallableEmbedder`] batches
//! concurrent requests into one GIL acquisition). Nothing here touches the GIL.
//!
//! # Memory ordering
//!
//! The counters are independent statistics: `Relaxed`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::error::{EmbedError, TransportKind};
use crate::provider::Embedder;
use crate::tokens::estimate_tokens;
use crate::wire::{self, EncodingFormat, Input, ServiceRequest};

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Model name reported by `/v1/models` and in responses (default: the embedder's).
    pub model_name: Option<String>,
    /// Most inputs accepted in one request.
    pub max_inputs_per_request: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            model_name: None,
            max_inputs_per_request: 2048,
            max_body_bytes: 16 << 20,
        }
    }
}

/// Counters of a running service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Embedding requests received.
    pub requests: u64,
    /// Texts embedded.
    pub inputs: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered 4xx.
    pub client_errors: u64,
    /// Requests answered 5xx other than 503-busy.
    pub server_errors: u64,
    /// Requests refused with 503 because the queue was full.
    pub busy: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    inputs: AtomicU64,
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    busy: AtomicU64,
}

struct AppState {
    embedder: Arc<dyn Embedder>,
    model: String,
    options: ServiceOptions,
    counters: Counters,
}

/// A handle to a running service: its address, counters, and a way to stop it.
///
/// Shareable between threads (`&self` methods): one thread may wait while another stops it.
pub struct ServiceHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("addr", &self.addr)
            .field("model", &self.state.model)
            .finish_non_exhaustive()
    }
}

/// Builds the axum router serving `embedder` (to embed the service in a larger app).
pub fn router(embedder: Arc<dyn Embedder>, options: ServiceOptions) -> Router {
    router_with_state(new_state(embedder, options))
}

fn new_state(embedder: Arc<dyn Embedder>, options: ServiceOptions) -> Arc<AppState> {
    let model = options
        .model_name
        .clone()
        .unwrap_or_else(|| embedder.model().to_owned());
    Arc::new(AppState {
        embedder,
        model,
        options,
        counters: Counters::default(),
    })
}

fn router_with_state(state: Arc<AppState>) -> Router {
    let limit = state.options.max_body_bytes;
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Binds `addr` and serves `embedder` on the current tokio runtime until the handle is stopped
/// or dropped.
///
/// # Errors
///
/// When the address cannot be bound.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use gilkit_embed::service::{self, ServiceOptions};
/// use gilkit_embed::testing::{FaultConfig, FaultServer};
/// use gilkit_embed::{EmbeddingConfig, OpenAiEmbedder};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // A proxy service in front of another OpenAI-compatible server.
/// let upstream = FaultServer::start(FaultConfig::default()).unwrap();
/// let embedder = OpenAiEmbedder::new(EmbeddingConfig {
///     base_url: upstream.base_url(),
///     ..EmbeddingConfig::openai("")
/// })
/// .unwrap();
/// let handle = service::start("127.0.0.1:0".parse().unwrap(), Arc::new(embedder), ServiceOptions::default())
///     .await
///     .unwrap();
/// assert!(handle.addr().port() > 0);
/// handle.stop().await;
/// # });
/// ```
pub async fn start(
    addr: SocketAddr,
    embedder: Arc<dyn Embedder>,
    options: ServiceOptions,
) -> std::io::Result<ServiceHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = new_state(embedder, options);
    let app = router_with_state(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, done) = watch::channel(false);
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let _ = serve.await;
        let _ = finished.send(true);
    });
    Ok(ServiceHandle {
        addr,
        state,
        stop: Mutex::new(Some(stop)),
        done,
    })
}

impl ServiceHandle {
    /// The bound address (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The model name served.
    pub fn model(&self) -> &str {
        &self.state.model
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServiceStats {
        stats_of(&self.state.counters)
    }

    /// Asks the server to stop accepting connections; in-flight requests finish. Idempotent.
    pub fn request_stop(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
    }

    /// True once the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.done.borrow()
    }

    /// Waits until the server has stopped (after [`ServiceHandle::request_stop`], or forever).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: waiting again later still sees the stop.
    pub async fn wait(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|stopped| *stopped).await;
    }

    /// Stops the server and waits for in-flight requests to finish.
    pub async fn stop(&self) {
        self.request_stop();
        self.wait().await;
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.request_stop();
    }
}

fn stats_of(c: &Counters) -> ServiceStats {
    ServiceStats {
        requests: c.requests.load(Relaxed),
        inputs: c.inputs.load(Relaxed),
        ok: c.ok.load(Relaxed),
        client_errors: c.client_errors.load(Relaxed),
        server_errors: c.server_errors.load(Relaxed),
        busy: c.busy.load(Relaxed),
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An OpenAI-style error response.
fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let error_type = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json(status, wire::error_body(message, error_type, code))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown route: use POST /v1/embeddings, GET /v1/models or GET /health",
        Some("not_found"),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: embeddings are POST /v1/embeddings",
        Some("method_not_allowed"),
    )
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{"id": state.model, "object": "model", "created": 0, "owned_by": "gilkit"}],
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let s = stats_of(&state.counters);
    let body = serde_json::json!({
        "status": "ok",
        "model": state.model,
        "requests": s.requests,
        "inputs": s.inputs,
        "ok": s.ok,
        "client_errors": s.client_errors,
        "server_errors": s.server_errors,
        "busy": s.busy,
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

/// What is wrong with a request, before the model sees it.
fn parse(
    state: &AppState,
    body: &[u8],
) -> Result<(Vec<String>, EncodingFormat, ServiceRequest), String> {
    let mut req: ServiceRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid JSON request: {e}"))?;
    let texts = match req.input.take() {
        None => return Err("missing 'input': give a string or an array of strings".into()),
        Some(Input::One(s)) => vec![s],
        Some(Input::Many(v)) => v,
        Some(Input::Other(_)) => {
            return Err(
                "'input' must be a string or an array of strings (token arrays are not supported)"
                    .into(),
            );
        }
    };
    if texts.is_empty() {
        return Err("'input' must not be an empty array".into());
    }
    if texts.len() > state.options.max_inputs_per_request {
        return Err(format!(
            "'input' has {} items; at most {} per request",
            texts.len(),
            state.options.max_inputs_per_request
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(format!(
            "input[{i}] is an empty string; every input must be non-empty"
        ));
    }
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(format!(
                "'encoding_format' must be \"float\" or \"base64\", got {other:?}"
            ));
        }
    };
    Ok((texts, format, req))
}

async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let c = &state.counters;
    c.requests.fetch_add(1, Relaxed);
    let (texts, format, req) = match parse(&state, &body) {
        Ok(parsed) => parsed,
        Err(message) => {
            c.client_errors.fetch_add(1, Relaxed);
            return error(StatusCode::BAD_REQUEST, &message, Some("invalid_request"));
        }
    };
    let result = state.embedder.embed(&texts).await;
    let emb = match result {
        Ok(emb) => emb,
        Err(e) => return embed_error(c, &e),
    };
    if emb.len() != texts.len() {
        c.server_errors.fetch_add(1, Relaxed);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "the model returned {} vectors for {} inputs",
                emb.len(),
                texts.len()
            ),
            Some("model_error"),
        );
    }
    if let Some(d) = req.dimensions
        && d as usize != emb.dim()
    {
        c.client_errors.fetch_add(1, Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "this model returns {} dimensions; 'dimensions' {d} is not supported",
                emb.dim()
            ),
            Some("invalid_dimensions"),
        );
    }
    let emb = if emb.prompt_tokens() == 0 {
        let tokens = texts.iter().map(|t| estimate_tokens(t) as u64).sum();
        let dim = emb.dim();
        crate::provider::Embeddings::from_flat(emb.into_flat(), dim, tokens)
    } else {
        emb
    };
    c.inputs.fetch_add(texts.len() as u64, Relaxed);
    c.ok.fetch_add(1, Relaxed);
    let model = req.model.as_deref().unwrap_or(&state.model);
    json(StatusCode::OK, wire::encode_response(&emb, model, format))
}

fn embed_error(c: &Counters, e: &EmbedError) -> Response {
    let message = e.to_string();
    match e {
        EmbedError::Overloaded { retry_after, .. } => {
            c.busy.fetch_add(1, Relaxed);
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
                Some("overloaded"),
            );
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r.headers_mut().insert(
                "retry-after-ms",
                HeaderValue::from(retry_after.as_millis().max(1) as u64),
            );
            r
        }
        EmbedError::InvalidInput(_) => {
            c.client_errors.fetch_add(1, Relaxed);
            error(StatusCode::BAD_REQUEST, &message, Some("invalid_request"))
        }
        EmbedError::Transport(t) if t.kind == TransportKind::Timeout => {
            c.server_errors.fetch_add(1, Relaxed);
            error(
                StatusCode::GATEWAY_TIMEOUT,
                &message,
                Some("upstream_timeout"),
            )
        }
        EmbedError::Api(_)
        | EmbedError::Transport(_)
        | EmbedError::Decode(_)
        | EmbedError::CircuitOpen { .. } => {
            c.server_errors.fetch_add(1, Relaxed);
            error(StatusCode::BAD_GATEWAY, &message, Some("upstream_error"))
        }
        EmbedError::Cancelled => {
            c.server_errors.fetch_add(1, Relaxed);
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
                Some("shutting_down"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        _ => {
            c.server_errors.fetch_add(1, Relaxed);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &message,
                Some("model_error"),
            )
        }
    }
}
