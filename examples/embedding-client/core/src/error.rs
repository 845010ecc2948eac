//! The errors of an embedding call.
//!
//! One type, [`EmbedError`], for everything an embedding call can end in, because callers ask the
//! same questions of all of them: was my input wrong ([`EmbedError::is_invalid_input`]), did the API
//! refuse ([`EmbedError::status`], [`EmbedError::request_id`]), is it worth trying again later
//! ([`EmbedError::is_retryable`]). The variants carry what a person needs to act: the HTTP status,
//! the API's own message and error type, the request id to quote to the provider, and how many
//! attempts were made. Conversion to Python exceptions happens only in the Python package.

use std::fmt;
use std::time::Duration;

/// Why an input was refused before any request was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The list of texts was empty.
    EmptyList,
    /// The text at `index` was the empty string (the API rejects it).
    EmptyText {
        /// Position of the text in the caller's list.
        index: usize,
    },
    /// The text at `index` is estimated to be longer than the per-input token limit.
    TooLong {
        /// Position of the text in the caller's list.
        index: usize,
        /// Estimated tokens (see [`crate::tokens`] for how they are estimated).
        estimated_tokens: usize,
        /// The per-input limit in force.
        limit: usize,
    },
    /// A batch of `embed_batch_parallel` was empty.
    EmptyBatch {
        /// Position of the batch in the caller's list of batches.
        batch: usize,
    },
    /// A configuration value was out of range.
    Config(String),
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidInput::EmptyList => f.write_str("no texts to embed: pass at least one string"),
            InvalidInput::EmptyText { index } => write!(
                f,
                "text at index {index} is empty: the embeddings API rejects empty strings; drop or replace it"
            ),
            InvalidInput::TooLong {
                index,
                estimated_tokens,
                limit,
            } => write!(
                f,
                "text at index {index} is too long: about {estimated_tokens} tokens, over the limit of {limit} \
                 tokens per input; split it into smaller chunks"
            ),
            InvalidInput::EmptyBatch { batch } => {
                write!(
                    f,
                    "batch {batch} is empty: every batch needs at least one string"
                )
            }
            InvalidInput::Config(msg) => write!(f, "invalid configuration: {msg}"),
        }
    }
}

/// An error response of the embeddings API (any status outside 2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The API's `error.message`, or the start of the body when it was not an OpenAI error body.
    pub message: String,
    /// The API's `error.type` (for example `invalid_request_error`), when given.
    pub error_type: Option<String>,
    /// The API's `error.code`, when given.
    pub code: Option<String>,
    /// The `x-request-id` response header, when given: quote it to the provider.
    pub request_id: Option<String>,
    /// Attempts made, including the first.
    pub attempts: u32,
}

/// What went wrong below HTTP semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// Could not connect, or the connection broke before a response arrived.
    Connect,
    /// The request did not finish within the configured timeout.
    Timeout,
    /// The response body broke off (truncated) or could not be read.
    Body,
}

/// A transport-level failure: connection, timeout, or a broken response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// Which stage failed.
    pub kind: TransportKind,
    /// What the HTTP stack said.
    pub message: String,
    /// The `x-request-id` header when the failure came after the response head.
    pub request_id: Option<String>,
    /// Attempts made, including the first.
    pub attempts: u32,
}

/// A 2xx response whose body is not a valid embeddings response (malformed JSON, missing or
/// duplicate indices, wrong count, bad base64, ragged dimensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What is wrong with the body.
    pub message: String,
    /// The HTTP status of the response.
    pub status: u16,
    /// The `x-request-id` response header, when given.
    pub request_id: Option<String>,
}

/// Every way an embedding call can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbedError {
    /// The input was refused before any request was sent.
    InvalidInput(InvalidInput),
    /// The API answered with an error status (after retries, when the status is retryable).
    Api(ApiError),
    /// Connection, timeout or body failure (after retries).
    Transport(TransportError),
    /// The response was not a valid embeddings response; not retried.
    Decode(DecodeError),
    /// The circuit breaker is open: recent requests kept failing, so this one was not sent.
    CircuitOpen {
        /// Consecutive failures that opened the breaker.
        consecutive_failures: u32,
        /// Time until the breaker lets a probe request through.
        retry_in: Duration,
        /// The last failure seen, for the message.
        last_failure: String,
    },
    /// A local provider's queue is full; try again after `retry_after`.
    Overloaded {
        /// Requests waiting when this one was refused.
        queue_len: usize,
        /// A suggested wait before trying again.
        retry_after: Duration,
    },
    /// An in-process provider (a Python callable) failed or returned something unusable.
    Provider(String),
    /// The call was cancelled (Ctrl-C, a dropped future, a closed provider).
    Cancelled,
}

impl EmbedError {
    /// True for input refused before any request.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, EmbedError::InvalidInput(_))
    }

    /// True when the API answered with an error status.
    pub fn is_api(&self) -> bool {
        matches!(self, EmbedError::Api(_))
    }

    /// True for HTTP 429 (rate limited).
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// True for a request that timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, EmbedError::Transport(t) if t.kind == TransportKind::Timeout)
    }

    /// True for connection failures and truncated bodies (not timeouts).
    pub fn is_connection(&self) -> bool {
        matches!(self, EmbedError::Transport(t) if t.kind != TransportKind::Timeout)
    }

    /// True for a malformed 2xx response.
    pub fn is_decode(&self) -> bool {
        matches!(self, EmbedError::Decode(_))
    }

    /// True when the circuit breaker refused the call.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self, EmbedError::CircuitOpen { .. })
    }

    /// True when a local provider's queue was full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, EmbedError::Overloaded { .. })
    }

    /// True when a later call may succeed where this one failed (server-side or transport trouble,
    /// rate limits, an open breaker, a full queue); false for bad input and client errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            EmbedError::Api(a) => crate::retry::status_is_retryable(a.status),
            EmbedError::Transport(_)
            | EmbedError::CircuitOpen { .. }
            | EmbedError::Overloaded { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status, when the failure was an HTTP response.
    pub fn status(&self) -> Option<u16> {
        match self {
            EmbedError::Api(a) => Some(a.status),
            EmbedError::Decode(d) => Some(d.status),
            _ => None,
        }
    }

    /// The provider's request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            EmbedError::Api(a) => a.request_id.as_deref(),
            EmbedError::Transport(t) => t.request_id.as_deref(),
            EmbedError::Decode(d) => d.request_id.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rid = |id: &Option<String>| match id {
            Some(id) => format!(" (request id {id})"),
            None => String::new(),
        };
        let tries = |n: u32| {
            if n > 1 {
                format!(" after {n} attempts")
            } else {
                String::new()
            }
        };
        match self {
            EmbedError::InvalidInput(i) => i.fmt(f),
            EmbedError::Api(a) => {
                write!(f, "embeddings API returned HTTP {}", a.status)?;
                if let Some(t) = &a.error_type {
                    write!(f, " {t}")?;
                }
                write!(
                    f,
                    "{}: {}{}",
                    tries(a.attempts),
                    a.message,
                    rid(&a.request_id)
                )?;
                match a.status {
                    401 | 403 => {
                        f.write_str("; check the API key (OPENAI_API_KEY) and its permissions")
                    }
                    404 => f.write_str("; check base_url and the model name"),
                    429 => f.write_str("; lower the request rate or raise max_retries"),
                    _ => Ok(()),
                }
            }
            EmbedError::Transport(t) => {
                let what = match t.kind {
                    TransportKind::Connect => "could not reach the embeddings API",
                    TransportKind::Timeout => "the embeddings request timed out",
                    TransportKind::Body => "the embeddings response broke off",
                };
                write!(
                    f,
                    "{what}{}: {}{}",
                    tries(t.attempts),
                    t.message,
                    rid(&t.request_id)
                )
            }
            EmbedError::Decode(d) => write!(
                f,
                "the embeddings API sent an invalid response (HTTP {}): {}{}",
                d.status,
                d.message,
                rid(&d.request_id)
            ),
            EmbedError::CircuitOpen {
                consecutive_failures,
                retry_in,
                last_failure,
            } => write!(
                f,
                "circuit breaker open after {consecutive_failures} consecutive failures; request not sent, \
                 next try allowed in {:.1} s (last failure: {last_failure})",
                retry_in.as_secs_f64()
            ),
            EmbedError::Overloaded {
                queue_len,
                retry_after,
            } => write!(
                f,
                "embedding queue is full ({queue_len} waiting); retry after {:.1} s",
                retry_after.as_secs_f64()
            ),
            EmbedError::Provider(msg) => write!(f, "embedding model failed: {msg}"),
            EmbedError::Cancelled => f.write_str("embedding call cancelled"),
        }
    }
}

impl std::error::Error for EmbedError {}

impl From<InvalidInput> for EmbedError {
    fn from(i: InvalidInput) -> Self {
        EmbedError::InvalidInput(i)
    }
}
