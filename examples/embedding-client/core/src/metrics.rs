//! The service's Prometheus metrics (`GET /metrics`), built with `prometheus-client` (the
//! Prometheus project's Rust client), in the OpenMetrics text format.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `gilkit_embed_requests_total{route,status}` | counter | every answered request, by route and status code |
//! | `gilkit_embed_request_duration_seconds` | histogram | `POST /v1/embeddings` from handler start to response |
//! | `gilkit_embed_queue_depth` | gauge | texts accepted and not yet embedded |
//! | `gilkit_embed_batch_size` | histogram | texts per call into the model (one fair share of a request) |
//! | `gilkit_embed_model_duration_seconds` | histogram | time of each call into the model |
//! | `gilkit_embed_inputs_total`, `gilkit_embed_prompt_tokens_total` | counter | texts embedded, and their tokens (the provider's count, else our estimate) |
//! | `gilkit_embed_connections_open` / `_connections_total` | gauge / counter | HTTP connections |
//!
//! Routes are the router's paths, never the request's raw path (an attacker could otherwise grow
//! the label set without bound); unknown paths count as `other`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// The service's metrics. Updating one is an atomic add or two; nothing here touches the GIL.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histogram,
    queue_depth: Gauge,
    batch_size: Histogram,
    model_duration: Histogram,
    inputs: Counter,
    prompt_tokens: Counter,
    connections_open: Gauge,
    connections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gilkit_embed");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status code",
            requests.clone(),
        );
        // 1 ms to ~33 s.
        let request_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Latency of POST /v1/embeddings, from handler start to response",
            request_duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Texts accepted and not yet embedded",
            queue_depth.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "batch_size",
            "Texts per call into the model",
            batch_size.clone(),
        );
        let model_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "model_duration_seconds",
            "Time of each call into the model",
            model_duration.clone(),
        );
        let inputs = Counter::default();
        registry.register("inputs", "Texts embedded", inputs.clone());
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Tokens of the texts embedded (the provider's count, else the estimate)",
            prompt_tokens.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "HTTP connections accepted",
            connections.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            queue_depth,
            batch_size,
            model_duration,
            inputs,
            prompt_tokens,
            connections_open,
            connections,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Records the latency of one embeddings request.
    pub fn request_duration(&self, elapsed: Duration) {
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// `texts` more texts wait for the model (negative: that many were answered).
    pub fn queued(&self, texts: i64) {
        self.queue_depth.inc_by(texts);
    }

    /// Records one call into the model.
    pub fn model_call(&self, texts: usize, elapsed: Duration) {
        self.batch_size.observe(texts as f64);
        self.model_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts texts embedded and their tokens.
    pub fn embedded(&self, inputs: usize, tokens: u64) {
        self.inputs.inc_by(inputs as u64);
        self.prompt_tokens.inc_by(tokens);
    }

    /// Texts waiting for the model now.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    /// HTTP connections open now.
    pub fn connections_open(&self) -> i64 {
        self.connections_open.get()
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
        self.connections_open.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
