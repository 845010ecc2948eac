//! The HTTP embedder: any OpenAI-compatible `/v1/embeddings` endpoint, through `gilkit-embed`.
//!
//! [`HttpEmbedder`] adapts [`gilkit_embed::EmbeddingClient`] (one pooled HTTP client; requests split
//! to the API's limits and reassembled in order; the official client's retry rules; rate limits; a
//! circuit breaker) to the pipeline's synchronous [`Embedder`] trait: each call drives the client's
//! future on gilkit's shared tokio runtime from the calling worker thread. No Python is involved,
//! so an ingest through it never takes the GIL to embed.

use gilkit_embed::{EmbeddingClient, EmbeddingConfig};

use crate::embed::{EmbedError, Embedder};

/// An [`Embedder`] over an OpenAI-compatible HTTP endpoint.
#[derive(Debug)]
pub struct HttpEmbedder {
    client: EmbeddingClient,
    model_id: String,
}

impl HttpEmbedder {
    /// A client for `config` (endpoint, model, key, retries, dimensions, ...). Its model id is
    /// `openai/MODEL`, with `@DIMENSIONS` when dimensions are requested.
    ///
    /// # Errors
    /// [`EmbedError`] (permanent) for an invalid configuration.
    pub fn new(config: EmbeddingConfig) -> Result<Self, EmbedError> {
        let model_id = match config.dimensions {
            Some(d) => format!("openai/{}@{d}", config.model),
            None => format!("openai/{}", config.model),
        };
        let client =
            EmbeddingClient::new(config).map_err(|e| EmbedError::permanent(e.to_string()))?;
        Ok(HttpEmbedder { client, model_id })
    }

    fn run(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Called from the pipeline's worker threads (never from inside a runtime), so blocking on
        // the shared runtime's handle is allowed here.
        let result = gilkit::runtime::handle().block_on(self.client.embed_many(&texts));
        match result {
            Ok(embeddings) => Ok(embeddings.rows().map(<[f32]>::to_vec).collect()),
            Err(e) if e.is_retryable() => Err(EmbedError::transient(e.to_string())),
            Err(e) => Err(EmbedError::permanent(e.to_string())),
        }
    }
}

impl Embedder for HttpEmbedder {
    fn model_id(&self) -> String {
        self.model_id.clone()
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(texts.iter().map(|t| (*t).to_owned()).collect())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut rows = self.run(vec![text.to_owned()])?;
        rows.pop()
            .ok_or_else(|| EmbedError::permanent("the endpoint returned no vector"))
    }
}
