//! gilkit-embed: an OpenAI-compatible embedding client and embedding service core.
//!
//! The client side: [`EmbeddingClient`] validates a call, splits it into requests within the API's
//! limits ([`tokens`]), runs them concurrently over one pooled HTTP client with the openai client's
//! retry rules ([`retry`]), optional rate limits ([`ratelimit`]) and a circuit breaker
//! ([`breaker`]), and reassembles the vectors in input order. Providers implement [`Embedder`]:
//! [`OpenAiEmbedder`] for any OpenAI-compatible endpoint, and (feature `python`)
//! [`python::PyCallableEmbedder`] for a Python callable called in-process through gilkit's
//! `GilBatcher`.
//!
//! The service side: [`service`] serves any [`Embedder`] over an OpenAI-compatible HTTP API
//! (axum). [`testing::FaultServer`] is a loopback server that injects faults, for tests and
//! benchmarks.
//!
//! Everything here is async Rust on tokio and never touches the GIL, except the `python` module,
//! whose docs say where it attaches. The Python package (`gilkit_embed`) wraps this crate.
//!
//! # Examples
//!
//! ```
//! use gilkit_embed::testing::{FaultConfig, FaultServer, expected_embedding};
//! use gilkit_embed::{EmbeddingClient, EmbeddingConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let server = FaultServer::start(FaultConfig::default()).unwrap();
//! let client = EmbeddingClient::new(EmbeddingConfig {
//!     base_url: server.base_url(),
//!     ..EmbeddingConfig::openai("test-key")
//! })
//! .unwrap();
//! let texts = vec!["a cat".to_string(), "a dog".to_string()];
//! let vectors = client.embed_many(&texts).await.unwrap();
//! assert_eq!(vectors.row(1), expected_embedding("a dog", 8).as_slice());
//! # });
//! ```

pub mod breaker;
mod client;
mod config;
mod error;
mod listener;
pub mod metrics;
mod openai;
mod provider;
#[cfg(feature = "python")]
pub mod python;
pub mod ratelimit;
pub mod retry;
pub mod service;
pub mod testing;
pub mod tokens;
pub mod wire;

pub use client::{BatchResults, BatchStats, ClientOptions, EmbeddingClient};
pub use config::{DEFAULT_MODEL, EmbeddingConfig, OPENAI_BASE_URL};
pub use error::{ApiError, DecodeError, EmbedError, InvalidInput, TransportError, TransportKind};
pub use openai::{OpenAiEmbedder, ProviderStats};
pub use provider::{BoxFuture, Embedder, Embeddings};
