//! The embedding service: any [`Embedder`] behind an OpenAI-compatible HTTP API (axum).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/embeddings` (also `/embeddings`) | `{"object": "list", "data": [...], "model", "usage"}`, vectors as `float` (default) or `base64` |
//! | `GET /v1/models` | the one model served |
//! | `GET /health` | `{"status": "ok", ...}` with request counters |
//! | `GET /metrics` | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /openapi.json` | the OpenAPI 3 document of this API |
//! | anything else | 404 / 405 with an OpenAI-style error body |
//!
//! Every error body has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
//! bad request (with what is wrong and how to fix it; `context_length_exceeded` for an input over
//! the per-input token limit), 404 `model_not_found` for a model this service does not serve, 408
//! when the body does not arrive within the body timeout, 413 for a body over the size limit
//! (refused from `Content-Length` before reading when the client sends one), 500 when the model
//! fails or returns a non-finite or misshapen vector, 503 with `Retry-After` when the provider's
//! queue is full (so clients back off instead of piling up), 502/504 when an upstream HTTP
//! provider fails.
//!
//! # Limits and fairness
//! Connections: header, body and idle timeouts and a connection bound ([`ConnectionLimits`], in
//! the service's accept loop). Inputs: every input is at most `max_tokens_per_input` estimated tokens and
//! a request at most `max_tokens_per_request` ([`crate::tokens`] estimates, the client's rule),
//! refused with 400 before the model sees them. Sharing the model: a request's texts go to the
//! model in *fair shares* of at most `fair_share_tokens` estimated tokens, the next share only once
//! the previous one is embedded. The model's queue is first come, first served, so while a large
//! request holds one share in it, requests that arrive meanwhile queue right behind that share
//! instead of behind the whole request: a small request waits for at most one share of each large
//! request in progress, not for the large requests themselves.
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
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::watch;

use crate::error::{EmbedError, TransportKind};
pub use crate::listener::ConnectionLimits;
use crate::metrics::{self, Metrics};
use crate::provider::{Embedder, Embeddings};
use crate::tokens::{self, Limits, estimate_tokens};
use crate::wire::{self, EncodingFormat, Input, ServiceRequest};

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Model name reported by `/v1/models` and in responses (default: the embedder's). Requests
    /// that name another model get 404 `model_not_found`; requests that name none are served.
    pub model_name: Option<String>,
    /// Most inputs accepted in one request (default 2,048, OpenAI's).
    pub max_inputs_per_request: usize,
    /// Most estimated tokens in one input (default 8,192, OpenAI's; see [`crate::tokens`]).
    pub max_tokens_per_input: usize,
    /// Most estimated tokens in one request (default 300,000, OpenAI's).
    pub max_tokens_per_request: usize,
    /// Most estimated tokens of one request queued for the model at once (default 1,024); `None`
    /// hands the model a whole request at once (no fairness between requests; the baseline).
    pub fair_share_tokens: Option<usize>,
    /// Largest request body accepted, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// Timeouts and the connection bound (used by [`start`]; a [`router`] embedded elsewhere
    /// gets only the body timeout).
    pub connections: ConnectionLimits,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            model_name: None,
            max_inputs_per_request: Limits::OPENAI.max_inputs_per_request,
            max_tokens_per_input: Limits::OPENAI.max_tokens_per_input,
            max_tokens_per_request: Limits::OPENAI.max_tokens_per_request,
            fair_share_tokens: Some(DEFAULT_FAIR_SHARE_TOKENS),
            max_body_bytes: 16 << 20,
            connections: ConnectionLimits::default(),
        }
    }
}

/// The default of [`ServiceOptions::fair_share_tokens`].
pub const DEFAULT_FAIR_SHARE_TOKENS: usize = 1024;

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
    /// Texts accepted and not yet embedded.
    pub queue_depth: u64,
    /// HTTP connections open now.
    pub open_connections: u64,
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
    metrics: Arc<Metrics>,
    /// `GET /openapi.json`'s body.
    openapi: String,
}

/// Marks a 503 that means "the queue is full" (counted as busy, not as a server error).
#[derive(Clone, Copy)]
struct Busy;

/// A handle to a running service: its address, counters, and a way to stop it.
///
/// Shareable between threads (`&self` methods): one thread may wait while another stops it.
pub struct ServiceHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
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

/// Builds the axum router serving `embedder` (to embed the service in a larger app). The
/// connection limits of [`ServiceOptions::connections`] other than the body timeout are the
/// embedding server's job then.
pub fn router(embedder: Arc<dyn Embedder>, options: ServiceOptions) -> Router {
    router_with_state(new_state(embedder, options))
}

fn new_state(embedder: Arc<dyn Embedder>, options: ServiceOptions) -> Arc<AppState> {
    let model = options
        .model_name
        .clone()
        .unwrap_or_else(|| embedder.model().to_owned());
    let openapi = openapi_document(&model, &options);
    Arc::new(AppState {
        openapi,
        embedder,
        model,
        options,
        counters: Counters::default(),
        metrics: Arc::new(Metrics::new()),
    })
}

fn router_with_state(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Binds `addr` and serves `embedder` on the current tokio runtime until the handle is stopped
/// or dropped, with the connection limits of `options.connections`.
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
    let limits = options.connections;
    let state = new_state(embedder, options);
    let app = router_with_state(state.clone());
    let (stop, stopped) = watch::channel(false);
    let (finished, done) = watch::channel(false);
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        crate::listener::serve(listener, app, limits, metrics, stopped).await;
        let _ = finished.send(true);
    });
    Ok(ServiceHandle {
        addr,
        state,
        stop,
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
        stats_of(&self.state)
    }

    /// The service's metrics (the same as `GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Asks the server to stop accepting connections; in-flight requests finish. Idempotent.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
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

fn stats_of(state: &AppState) -> ServiceStats {
    let c = &state.counters;
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    ServiceStats {
        requests: c.requests.load(Relaxed),
        inputs: c.inputs.load(Relaxed),
        ok: c.ok.load(Relaxed),
        client_errors: c.client_errors.load(Relaxed),
        server_errors: c.server_errors.load(Relaxed),
        busy: c.busy.load(Relaxed),
        queue_depth: non_negative(state.metrics.queue_depth()),
        open_connections: non_negative(state.metrics.connections_open()),
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An OpenAI-style error response.
fn error(status: StatusCode, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    let error_type = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json(status, wire::error_body(message, error_type, param, code))
}

/// Counts every answered request in the metrics, by route (the router's path, never the raw one).
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown route: use POST /v1/embeddings, GET /v1/models, GET /health, GET /metrics or GET /openapi.json",
        None,
        Some("not_found"),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route: embeddings are POST /v1/embeddings",
        None,
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
    let s = stats_of(&state);
    let body = serde_json::json!({
        "status": "ok",
        "model": state.model,
        "requests": s.requests,
        "inputs": s.inputs,
        "ok": s.ok,
        "client_errors": s.client_errors,
        "server_errors": s.server_errors,
        "busy": s.busy,
        "queue_depth": s.queue_depth,
        "open_connections": s.open_connections,
    });
    json(
        StatusCode::OK,
        serde_json::to_vec(&body).expect("JSON values serialize"),
    )
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// The OpenAPI 3 document of this API, with placeholders for the running service's limits
/// (`GET /openapi.json` serves it filled in by [`openapi_document`]).
pub const OPENAPI_TEMPLATE: &str = include_str!("openapi.json");

/// The OpenAPI document of a service with `model` and `options`: the template with the model's
/// name as the only accepted `model` and the input count limit filled in.
pub fn openapi_document(model: &str, options: &ServiceOptions) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(OPENAPI_TEMPLATE).expect("the bundled OpenAPI document is JSON");
    let request = &mut doc["components"]["schemas"]["EmbeddingRequest"]["properties"];
    // `null` is listed too: OpenAPI 3.0's `nullable` does not extend an `enum`.
    request["model"]["enum"] = serde_json::json!([model, null]);
    request["input"]["oneOf"][1]["maxItems"] = options.max_inputs_per_request.into();
    serde_json::to_string_pretty(&doc).expect("JSON values serialize")
}

async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// A refusal before the model sees the request: status, message, `param`, `code`.
struct Refusal {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: &'static str,
}

impl Refusal {
    fn bad(message: String, param: Option<&'static str>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message,
            param,
            code: "invalid_request",
        }
    }

    fn into_response(self) -> Response {
        let mut response = error(self.status, &self.message, self.param, Some(self.code));
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // The rest of the body is not read: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Reads the body within the size limit and the body timeout; refuses a `Content-Length` over
/// the limit before reading anything.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Refusal> {
    let limit = state.options.max_body_bytes;
    let too_large = |size: String| Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the request body is {size}; this service accepts at most {limit} bytes: send fewer or shorter inputs per request"
        ),
        param: None,
        code: "request_too_large",
    };
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|l| l.parse::<u128>().ok()) {
            Some(n) if n > limit as u128 => return Err(too_large(format!("{n} bytes"))),
            Some(_) => {}
            None => {
                return Err(Refusal::bad(
                    "the Content-Length header is not a number".into(),
                    None,
                ));
            }
        }
    }
    let timeout = state.options.connections.body_timeout;
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(too_large(format!("over {limit} bytes")))
        }
        Ok(Err(e)) => Err(Refusal::bad(
            format!("could not read the request body: {e}"),
            None,
        )),
        Err(_) => Err(Refusal {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
            param: None,
            code: "request_timeout",
        }),
    }
}

/// A parsed, checked request: texts, their token estimates, the encoding and the request.
struct Parsed {
    texts: Vec<String>,
    estimates: Vec<usize>,
    format: EncodingFormat,
    request: ServiceRequest,
}

/// What is wrong with a request, before the model sees it.
fn parse(state: &AppState, body: &[u8]) -> Result<Parsed, Refusal> {
    let mut req: ServiceRequest = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let message = if text.contains("surrogate") || text.contains("hex escape") {
            format!(
                "the body has an invalid \\u escape ({text}): a lone UTF-16 surrogate such as \\ud800 is not text; \
                 send valid UTF-8 or a complete surrogate pair"
            )
        } else {
            format!("the body is not a valid JSON request: {text}")
        };
        Refusal::bad(message, None)
    })?;
    if let Some(model) = &req.model
        && *model != state.model
    {
        return Err(Refusal {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{model}` does not exist here: this service serves `{}` (GET /v1/models)",
                state.model
            ),
            param: Some("model"),
            code: "model_not_found",
        });
    }
    let texts = match req.input.take() {
        None => {
            return Err(Refusal::bad(
                "missing 'input': give a string or an array of strings".into(),
                Some("input"),
            ));
        }
        Some(Input::One(s)) => vec![s],
        Some(Input::Many(v)) => v,
        Some(Input::Other(_)) => {
            return Err(Refusal::bad(
                "'input' must be a string or an array of strings (token arrays are not supported)"
                    .into(),
                Some("input"),
            ));
        }
    };
    let options = &state.options;
    if texts.is_empty() {
        return Err(Refusal::bad(
            "'input' must not be an empty array".into(),
            Some("input"),
        ));
    }
    if texts.len() > options.max_inputs_per_request {
        return Err(Refusal::bad(
            format!(
                "'input' has {} items; at most {} per request",
                texts.len(),
                options.max_inputs_per_request
            ),
            Some("input"),
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(Refusal::bad(
            format!("input[{i}] is an empty string; every input must be non-empty"),
            Some("input"),
        ));
    }
    let estimates: Vec<usize> = texts.iter().map(|t| estimate_tokens(t)).collect();
    if let Some((i, &n)) = estimates
        .iter()
        .enumerate()
        .find(|&(_, &n)| n > options.max_tokens_per_input)
    {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "input[{i}] is about {n} tokens; this model accepts at most {} tokens per input: \
                 split it into smaller chunks",
                options.max_tokens_per_input
            ),
            param: Some("input"),
            code: "context_length_exceeded",
        });
    }
    let total: usize = estimates.iter().sum();
    if total > options.max_tokens_per_request {
        return Err(Refusal::bad(
            format!(
                "the request is about {total} tokens; at most {} per request: send fewer inputs per request",
                options.max_tokens_per_request
            ),
            Some("input"),
        ));
    }
    let format = match req.encoding_format.as_deref() {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(Refusal::bad(
                format!("'encoding_format' must be \"float\" or \"base64\", got {other:?}"),
                Some("encoding_format"),
            ));
        }
    };
    if req.dimensions == Some(0) {
        return Err(Refusal::bad(
            "'dimensions' must be at least 1".into(),
            Some("dimensions"),
        ));
    }
    Ok(Parsed {
        texts,
        estimates,
        format,
        request: req,
    })
}

/// Takes texts off the queue-depth gauge as they are answered, and the rest when dropped (an
/// error, or the client went away).
struct Queued<'a> {
    metrics: &'a Metrics,
    left: usize,
}

impl Queued<'_> {
    fn done(&mut self, texts: usize) {
        let texts = texts.min(self.left);
        self.left -= texts;
        self.metrics.queued(-(texts as i64));
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.metrics.queued(-(self.left as i64));
    }
}

/// Embeds `texts` in fair shares (see the module doc), one share in the model's queue at a time.
async fn embed_fairly(
    state: &AppState,
    texts: &[String],
    estimates: &[usize],
) -> Result<Embeddings, EmbedError> {
    let share = state.options.fair_share_tokens.unwrap_or(usize::MAX);
    let limits = Limits {
        max_inputs_per_request: usize::MAX,
        max_tokens_per_request: share,
        max_tokens_per_input: usize::MAX,
    };
    let plan = tokens::plan_requests(estimates, &limits, usize::MAX);
    state.metrics.queued(texts.len() as i64);
    let mut queued = Queued {
        metrics: &state.metrics,
        left: texts.len(),
    };
    let mut parts = Vec::with_capacity(plan.len());
    for range in plan {
        let started = Instant::now();
        let part = state.embedder.embed(&texts[range.clone()]).await?;
        state.metrics.model_call(range.len(), started.elapsed());
        queued.done(range.len());
        if part.len() != range.len() {
            return Err(EmbedError::Provider(format!(
                "the model returned {} vectors for {} inputs",
                part.len(),
                range.len()
            )));
        }
        if let Some(bad) = part.first_non_finite() {
            return Err(EmbedError::Provider(format!(
                "the model returned a non-finite value (NaN or infinity) for input[{}]",
                range.start + bad
            )));
        }
        parts.push(part);
    }
    Embeddings::concat(parts).map_err(EmbedError::Provider)
}

async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let c = &state.counters;
    c.requests.fetch_add(1, Relaxed);
    let response = answer(&state, &headers, body).await;
    let status = response.status();
    if status.is_success() {
        c.ok.fetch_add(1, Relaxed);
    } else if response.extensions().get::<Busy>().is_some() {
        c.busy.fetch_add(1, Relaxed);
    } else if status.is_client_error() {
        c.client_errors.fetch_add(1, Relaxed);
    } else {
        c.server_errors.fetch_add(1, Relaxed);
    }
    state.metrics.request_duration(started.elapsed());
    response
}

async fn answer(state: &AppState, headers: &HeaderMap, body: Body) -> Response {
    let body = match read_body(state, headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let Parsed {
        texts,
        estimates,
        format,
        request,
    } = match parse(state, &body) {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal.into_response(),
    };
    drop(body);
    let emb = match embed_fairly(state, &texts, &estimates).await {
        Ok(emb) => emb,
        Err(e) => return embed_error(&e),
    };
    if let Some(d) = request.dimensions
        && d as usize != emb.dim()
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "this model returns {} dimensions; 'dimensions' {d} is not supported",
                emb.dim()
            ),
            Some("dimensions"),
            Some("invalid_dimensions"),
        );
    }
    let emb = if emb.prompt_tokens() == 0 {
        let tokens = estimates.iter().map(|&t| t as u64).sum();
        let dim = emb.dim();
        Embeddings::from_flat(emb.into_flat(), dim, tokens)
    } else {
        emb
    };
    state.counters.inputs.fetch_add(texts.len() as u64, Relaxed);
    state.metrics.embedded(texts.len(), emb.prompt_tokens());
    let model = request.model.as_deref().unwrap_or(&state.model);
    json(StatusCode::OK, wire::encode_response(&emb, model, format))
}

fn embed_error(e: &EmbedError) -> Response {
    let message = e.to_string();
    match e {
        EmbedError::Overloaded { retry_after, .. } => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
                None,
                Some("overloaded"),
            );
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r.headers_mut().insert(
                "retry-after-ms",
                HeaderValue::from(retry_after.as_millis().max(1) as u64),
            );
            r.extensions_mut().insert(Busy);
            r
        }
        EmbedError::InvalidInput(_) => error(
            StatusCode::BAD_REQUEST,
            &message,
            Some("input"),
            Some("invalid_request"),
        ),
        EmbedError::Transport(t) if t.kind == TransportKind::Timeout => error(
            StatusCode::GATEWAY_TIMEOUT,
            &message,
            None,
            Some("upstream_timeout"),
        ),
        EmbedError::Api(_)
        | EmbedError::Transport(_)
        | EmbedError::Decode(_)
        | EmbedError::CircuitOpen { .. } => error(
            StatusCode::BAD_GATEWAY,
            &message,
            None,
            Some("upstream_error"),
        ),
        EmbedError::Cancelled => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &message,
                None,
                Some("shutting_down"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &message,
            None,
            Some("model_error"),
        ),
    }
}
