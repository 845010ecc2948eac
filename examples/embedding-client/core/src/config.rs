//! Configuration of an OpenAI-compatible embedding client.

use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::error::InvalidInput;
use crate::ratelimit::RateLimitConfig;
use crate::retry::RetryPolicy;
use crate::tokens::Limits;
use crate::wire::EncodingFormat;

/// The OpenAI API's base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The default model.
pub const DEFAULT_MODEL: &str = "text-embedding-3-small";

/// Everything an [`crate::OpenAiEmbedder`] and its [`crate::EmbeddingClient`] need.
///
/// Fields are public; start from [`EmbeddingConfig::openai`] and change what you need.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gilkit_embed::EmbeddingConfig;
///
/// let config = EmbeddingConfig {
///     base_url: "http://127.0.0.1:8000/v1".into(),
///     timeout: Duration::from_secs(10),
///     ..EmbeddingConfig::openai("not-needed")
/// };
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingConfig {
    /// The API key, sent as `Authorization: Bearer`; empty sends no header (local servers).
    pub api_key: String,
    /// Model name sent with each request.
    pub model: String,
    /// Base URL up to and including `/v1`; `/embeddings` is appended.
    pub base_url: String,
    /// Timeout of one attempt (connect, send, and read the whole body).
    pub timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// `dimensions` sent with each request (models that can shorten vectors).
    pub dimensions: Option<u32>,
    /// The encoding asked of the server (base64 by default, like the openai client).
    pub encoding_format: EncodingFormat,
    /// Client-side request and token rate limits.
    pub rate_limit: RateLimitConfig,
    /// The circuit breaker; `None` disables it.
    pub breaker: Option<BreakerConfig>,
    /// Limits requests are split to.
    pub limits: Limits,
    /// Most inputs per request (at most `limits.max_inputs_per_request`); lower it to spread one
    /// large call over more concurrent requests.
    pub max_batch_size: usize,
    /// Most requests in flight at once for this client, across all calls and threads.
    pub max_concurrency: usize,
}

impl EmbeddingConfig {
    /// The OpenAI API with `api_key` and the defaults of the official client (2 retries, base64).
    pub fn openai(api_key: impl Into<String>) -> Self {
        EmbeddingConfig {
            api_key: api_key.into(),
            model: DEFAULT_MODEL.into(),
            base_url: OPENAI_BASE_URL.into(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            dimensions: None,
            encoding_format: EncodingFormat::Base64,
            rate_limit: RateLimitConfig::default(),
            breaker: Some(BreakerConfig::default()),
            limits: Limits::OPENAI,
            max_batch_size: Limits::OPENAI.max_inputs_per_request,
            max_concurrency: 64,
        }
    }

    /// Like [`EmbeddingConfig::openai`] with the key from the `OPENAI_API_KEY` environment variable
    /// and, when set, the base URL from `OPENAI_BASE_URL`.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::Config`] when `OPENAI_API_KEY` is unset.
    pub fn from_env() -> Result<Self, InvalidInput> {
        let key = std::env::var("OPENAI_API_KEY").map_err(|_| {
            InvalidInput::Config(
                "no API key: pass api_key=... or set the OPENAI_API_KEY environment variable"
                    .into(),
            )
        })?;
        let mut c = EmbeddingConfig::openai(key);
        if let Ok(url) = std::env::var("OPENAI_BASE_URL") {
            c.base_url = url;
        }
        Ok(c)
    }

    /// The full embeddings URL.
    pub fn embeddings_url(&self) -> String {
        format!("{}/embeddings", self.base_url.trim_end_matches('/'))
    }

    /// Checks that every value is usable.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::Config`] naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let bad = |m: String| Err(InvalidInput::Config(m));
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad(format!(
                "base_url must start with http:// or https://, got {:?}",
                self.base_url
            ));
        }
        if self.model.is_empty() {
            return bad("model must not be empty".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive".into());
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be at least 1".into());
        }
        if self.max_batch_size == 0 {
            return bad("max_batch_size must be at least 1".into());
        }
        if self.dimensions == Some(0) {
            return bad("dimensions must be positive".into());
        }
        if let Some(b) = self.breaker
            && b.threshold == 0
        {
            return bad("the circuit breaker threshold must be at least 1".into());
        }
        if self.limits.max_inputs_per_request == 0
            || self.limits.max_tokens_per_request == 0
            || self.limits.max_tokens_per_input == 0
        {
            return bad("limits must be positive".into());
        }
        Ok(())
    }
}
