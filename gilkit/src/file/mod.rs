//! The three-phase adapter for Python file objects: read with the GIL, parse without it, convert
//! with it.
//!
//! Reading a Python file object from Rust means calling its `read` with the GIL held. Doing that
//! per record (as `pyo3-file`-style adapters do) holds the GIL for most of the work, so threads
//! gain nothing. This module reads in large chunks into Rust-owned memory, finds complete records
//! across chunk edges with a [`Framing`], and runs the caller's parser over a whole batch of
//! records in one GIL release:
//!
//! ```text
//!   GIL held            GIL released                         GIL held
//! ┌──────────────┐    ┌────────────────────────────────┐    ┌─────────────────────┐
//! │ 1. readinto  │ ─▶ │ 2. frame records across chunk  │ ─▶ │ 3. convert the batch │
//! │ 256 KiB into │    │    edges, parse all of them    │    │ to Python objects    │
//! │ a Rust Vec   │    │    (paths/fds are read here)   │    │ (caller)             │
//! └──────────────┘    └────────────────────────────────┘    └─────────────────────┘
//! ```
//!
//! - [`Source`]: any Python object (path, bytes, buffer, binary file object) or Rust input.
//! - [`Framing`] and the ready-made [`Delimited`], [`Lines`], [`LengthPrefixed`].
//! - [`RecordReader`]: the three-phase reader ([`RecordReader::next_batch`], [`Records`]).
//! - [`PyReader`]: `std::io::Read` + `BufRead` + `Seek` over a [`Source`], for Rust parsers that
//!   want a reader; it re-acquires the GIL once per buffer refill.
//! - [`PyWriter`]: a buffered `std::io::Write` to a Python file object: serialize without the
//!   GIL, write large chunks with it.
//!
//! The guide chapter [`guide::file_adapter`](crate::guide::file_adapter) explains when to use
//! which, with measurements.
//!
//! # Threads
//!
//! Readers and writers are `Send + Sync`, so they can be stored in a `#[pyclass]`; each Python
//! thread uses its own, and their phase 2 work runs in parallel. While a reader reads a file object,
//! nothing else should read from or seek that object. The module uses no locks and no atomics.

mod framing;
mod io;
mod lend;
mod reader;
mod source;
mod writer;

pub use framing::{
    Delimited, Frame, Framing, FramingError, FromFn, InvalidLength, LengthEncoding, LengthPrefixed,
    Lines, from_fn,
};
pub use io::PyReader;
pub use reader::{ReadError, ReaderOptions, ReaderStats, RecordReader, Records};
pub use source::{Source, SourceKind};
pub use writer::{PyWriter, WriterStats};
