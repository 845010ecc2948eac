//! The OpenAI-compatible HTTP provider: one request, with retries, rate limits and a breaker.
//!
//! One `reqwest::Client` (rustls, keep-alive pool) per provider, shared by every call and thread, so
//! connections are reused. Each request's JSON body is serialised once and resent as is on retries.
//! An attempt goes: breaker admits → rate limiter waits → a concurrency permit is taken → POST →
//! the whole body is read → decoded. See [`crate::retry`] for what is retried and
//! [`crate::breaker`] for what counts against the endpoint.
//!
//! # Memory ordering
//!
//! The counters in [`ProviderStats`] are independent statistics: `Relaxed` everywhere, and a
//! snapshot is not a consistent cut across counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::breaker::CircuitBreaker;
use crate::config::EmbeddingConfig;
use crate::error::{ApiError, DecodeError, EmbedError, TransportError, TransportKind};
use crate::provider::{BoxFuture, Embedder, Embeddings};
use crate::ratelimit::RateLimiter;
use crate::tokens::{Limits, estimate_tokens};
use crate::wire::{self, EmbeddingRequest};

/// Counters of one provider since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// HTTP attempts sent (including retries).
    pub attempts: u64,
    /// Retries (attempts after a failed one).
    pub retries: u64,
    /// Requests that ended in success.
    pub succeeded: u64,
    /// Requests that ended in an error (after retries).
    pub failed: u64,
    /// Prompt tokens reported by the server.
    pub prompt_tokens: u64,
    /// Total time spent waiting for the client-side rate limiter, in milliseconds.
    pub rate_limited_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    rate_limited_ms: AtomicU64,
}

/// Embeddings from any OpenAI-compatible `POST /embeddings` endpoint.
///
/// Usually used through [`crate::EmbeddingClient::new`], which adds validation and splitting.
#[derive(Debug)]
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    config: EmbeddingConfig,
    in_flight: Semaphore,
    breaker: Option<CircuitBreaker>,
    limiter: RateLimiter,
    counters: Counters,
}

/// How one attempt failed, and what that means for the next.
struct Failure {
    error: EmbedError,
    retryable: bool,
    /// Counts against the endpoint's health (breaker).
    unhealthy: bool,
    headers: Option<HeaderMap>,
}

impl OpenAiEmbedder {
    /// A provider for `config`, with its own connection pool.
    ///
    /// # Errors
    ///
    /// [`EmbedError::InvalidInput`] for a bad configuration (see [`EmbeddingConfig::validate`]).
    pub fn new(config: EmbeddingConfig) -> Result<Self, EmbedError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        if !config.api_key.is_empty() {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", config.api_key)).map_err(|_| {
                    crate::error::InvalidInput::Config(
                        "the API key contains characters not allowed in a header".into(),
                    )
                })?;
            v.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, v);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .user_agent(concat!("gilkit-embed/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                crate::error::InvalidInput::Config(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(OpenAiEmbedder {
            http,
            url: config.embeddings_url(),
            in_flight: Semaphore::new(config.max_concurrency),
            breaker: config.breaker.map(CircuitBreaker::new),
            limiter: RateLimiter::new(config.rate_limit),
            counters: Counters::default(),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProviderStats {
        let c = &self.counters;
        ProviderStats {
            attempts: c.attempts.load(Relaxed),
            retries: c.retries.load(Relaxed),
            succeeded: c.succeeded.load(Relaxed),
            failed: c.failed.load(Relaxed),
            prompt_tokens: c.prompt_tokens.load(Relaxed),
            rate_limited_ms: c.rate_limited_ms.load(Relaxed),
        }
    }

    /// True while the circuit breaker refuses requests.
    pub fn circuit_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(CircuitBreaker::is_open)
    }

    /// Sends one request for `texts`, retrying as configured.
    ///
    /// # Errors
    ///
    /// See [`EmbedError`]; retried failures report the number of attempts made.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request and frees its connection slot.
    pub async fn embed_request(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        let body = Bytes::from(
            serde_json::to_vec(&EmbeddingRequest {
                model: &self.config.model,
                input: texts,
                encoding_format: self.config.encoding_format,
                dimensions: self.config.dimensions,
            })
            .expect("strings serialize"),
        );
        let tokens: usize = texts.iter().map(|t| estimate_tokens(t)).sum();
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            if let Some(b) = &self.breaker
                && let Err(e) = b.admit()
            {
                break Err(e);
            }
            let waited = self.limiter.acquire(tokens).await;
            if !waited.is_zero() {
                self.counters
                    .rate_limited_ms
                    .fetch_add(waited.as_millis() as u64, Relaxed);
            }
            self.counters.attempts.fetch_add(1, Relaxed);
            match self.attempt(body.clone(), texts.len()).await {
                Ok(emb) => {
                    if let Some(b) = &self.breaker {
                        b.on_success();
                    }
                    break Ok(emb);
                }
                Err(f) => {
                    if let Some(b) = &self.breaker {
                        if f.unhealthy {
                            b.on_failure(&f.error.to_string());
                        } else {
                            b.on_neutral();
                        }
                    }
                    if f.retryable && attempt <= self.config.retry.max_retries {
                        self.counters.retries.fetch_add(1, Relaxed);
                        tokio::time::sleep(self.config.retry.delay(attempt, f.headers.as_ref()))
                            .await;
                        continue;
                    }
                    break Err(with_attempts(f.error, attempt));
                }
            }
        };
        match &result {
            Ok(e) => {
                self.counters.succeeded.fetch_add(1, Relaxed);
                self.counters
                    .prompt_tokens
                    .fetch_add(e.prompt_tokens(), Relaxed);
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Relaxed);
            }
        }
        result
    }

    async fn attempt(&self, body: Bytes, n: usize) -> Result<Embeddings, Failure> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let transport =
            |e: reqwest::Error, request_id: Option<String>, kind: TransportKind| Failure {
                error: EmbedError::Transport(TransportError {
                    kind: if e.is_timeout() {
                        TransportKind::Timeout
                    } else {
                        kind
                    },
                    message: error_chain(&e),
                    request_id,
                    attempts: 1,
                }),
                retryable: true,
                unhealthy: true,
                headers: None,
            };
        let resp = self
            .http
            .post(&self.url)
            .body(body)
            .send()
            .await
            .map_err(|e| transport(e, None, TransportKind::Connect))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.limiter.observe(&headers);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport(e, request_id.clone(), TransportKind::Body))?;
        if (200..300).contains(&status) {
            return wire::decode_response(&bytes, n).map_err(|message| Failure {
                error: EmbedError::Decode(DecodeError {
                    message,
                    status,
                    request_id,
                }),
                retryable: false,
                unhealthy: false,
                headers: None,
            });
        }
        let fields = wire::parse_error_body(&bytes);
        let message = fields.message.unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.trim();
            if text.is_empty() {
                "(empty body)".to_owned()
            } else {
                text.chars().take(300).collect()
            }
        });
        Err(Failure {
            error: EmbedError::Api(ApiError {
                status,
                message,
                error_type: fields.error_type,
                code: fields.code,
                request_id,
                attempts: 1,
            }),
            retryable: self.config.retry.should_retry_response(status, &headers),
            unhealthy: status >= 500 || status == 408,
            headers: Some(headers),
        })
    }
}

impl Embedder for OpenAiEmbedder {
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, EmbedError>> {
        Box::pin(self.embed_request(texts))
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn limits(&self) -> Limits {
        self.config.limits
    }

    fn dimensions(&self) -> Option<usize> {
        self.config.dimensions.map(|d| d as usize)
    }
}

fn with_attempts(mut e: EmbedError, attempts: u32) -> EmbedError {
    match &mut e {
        EmbedError::Api(a) => a.attempts = attempts,
        EmbedError::Transport(t) => t.attempts = attempts,
        _ => {}
    }
    e
}

/// `e` and its sources, joined: reqwest's top-level message alone ("error sending request") hides
/// the useful part ("connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}
