//! The native side of the distributed engine (`gilkit_rag.ray_engine`): `StagedWriter`, the
//! driver's handle on the database (plan, commit staged segments), and `build_shard`, a worker's
//! step. Plans, shard files and staged segments cross to Python as JSON strings, so that they
//! travel through Ray (pickle) as plain data. See [`crate::shard`] for the protocol.
//!
//! # GIL
//! Every method releases the GIL while it touches the disk; `build_shard` releases it for the whole
//! shard (through [`gilkit::Interruptible`], re-attaching every 100 ms for signals and the progress
//! callback), and a Python model's `GilBatcher` worker re-acquires it once per model call.

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    ModelMismatchError, PyHttpEmbedder, PyInProcessEmbedder, checked_retry_backoff, load_limits,
    run_with_progress, splitter_config, store_err,
};
use crate::embed::Embedder;
use crate::load::Filter;
use crate::pipeline::{IngestOptions, Progress};
use crate::shard::{self, ShardFile};
use crate::store::{FileState, OpenMode, StagedSegment, Store, StoreError};

fn json_err(what: &str, e: serde_json::Error) -> PyErr {
    PyValueError::new_err(format!(
        "{what}: not what this version of gilkit_rag writes ({e})"
    ))
}

/// The driver's handle on a database: holds the writer's lock from creation to `close()`.
#[pyclass(module = "gilkit_rag._native", frozen)]
pub(super) struct StagedWriter {
    store: Mutex<Option<Store>>,
}

impl StagedWriter {
    fn with<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send,
    ) -> PyResult<T>
    where
        T: Send,
    {
        py.detach(|| {
            let mut guard = self.store.lock();
            let store = guard
                .as_mut()
                .ok_or_else(|| PyRuntimeError::new_err("the writer is closed"))?;
            f(store).map_err(store_err)
        })
    }
}

#[pymethods]
impl StagedWriter {
    /// Opens (or creates) the database for writing. Raises `DatabaseLockedError` if another
    /// process writes to it.
    #[new]
    fn new(py: Python<'_>, db_dir: PathBuf) -> PyResult<Self> {
        let store = py
            .detach(|| Store::open(&db_dir, OpenMode::ReadWrite))
            .map_err(store_err)?;
        Ok(StagedWriter {
            store: Mutex::new(Some(store)),
        })
    }

    /// Raises `ModelMismatchError` if the database holds another model's vectors.
    fn check_model(&self, py: Python<'_>, model_id: &str) -> PyResult<()> {
        let stored = self.with(py, |s| Ok(s.model().map(|(m, d)| (m.to_owned(), d))))?;
        match stored {
            Some((m, d)) if m != model_id => Err(ModelMismatchError::new_err(
                StoreError::ModelMismatch {
                    stored: (m, d),
                    given: (model_id.to_owned(), d),
                }
                .to_string(),
            )),
            _ => Ok(()),
        }
    }

    /// Walks `paths` and decides the work: `{files, unchanged, work: [json], removed, failures}`.
    #[pyo3(signature = (paths, *, include=Vec::new(), exclude=Vec::new(), prune=true))]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
        include: Vec<String>,
        exclude: Vec<String>,
        prune: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = IngestOptions {
            filter: Filter::new(&include, &exclude)
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            prune,
            ..IngestOptions::default()
        };
        let plan = self.with(py, |s| Ok(shard::plan(s, &paths, &opts)))?;
        let work = plan
            .work
            .iter()
            .map(|f| serde_json::to_string(f).expect("a shard file serializes"))
            .collect::<Vec<_>>();
        let d = PyDict::new(py);
        d.set_item("files", plan.files)?;
        d.set_item("unchanged", plan.unchanged)?;
        d.set_item("work", work)?;
        d.set_item("removed", plan.removed)?;
        d.set_item("failures", plan.failures)?;
        Ok(d)
    }

    /// Records the new state of files found unchanged by hash (`touched`, as `build_shard`
    /// returns them) and removes the documents of deleted files. One atomic commit each.
    fn apply(&self, py: Python<'_>, touched: Vec<String>, removed: Vec<String>) -> PyResult<()> {
        let touched = touched
            .iter()
            .map(|t| serde_json::from_str::<(String, FileState)>(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| json_err("a touched file", e))?;
        self.with(py, |s| {
            if !touched.is_empty() {
                s.touch(&touched)?;
            }
            if !removed.is_empty() {
                s.remove(&removed)?;
            }
            Ok(())
        })
    }

    /// Commits staged segments (JSON, as `build_shard` returns them) atomically; returns their
    /// new segment ids. Raises `CorruptDatabaseError` for a file that does not match its
    /// description, `ModelMismatchError` for another model's vectors (nothing committed then).
    fn commit(&self, py: Python<'_>, segments: Vec<String>) -> PyResult<Vec<u64>> {
        let segments = segments
            .iter()
            .map(|s| serde_json::from_str::<StagedSegment>(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| json_err("a staged segment", e))?;
        self.with(py, |s| s.commit_staged(&segments))
    }

    /// Compacts if dead rows outnumber live ones. Returns whether it did.
    fn compact(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |s| s.compact(false))
    }

    /// Gives up the writer's lock. Idempotent.
    fn close(&self, py: Python<'_>) {
        let store = py.detach(|| self.store.lock().take());
        drop(store);
    }
}

/// The embedder behind a native embedder object.
fn native_embedder(embedder: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Embedder>> {
    if let Ok(http) = embedder.cast::<PyHttpEmbedder>() {
        Ok(http.get().inner.clone())
    } else if let Ok(local) = embedder.cast::<PyInProcessEmbedder>() {
        Ok(local.get().inner.clone())
    } else {
        Err(PyTypeError::new_err(
            "the embedder must be an OpenAIEmbedder or an InProcessEmbedder",
        ))
    }
}

/// A worker's step: loads, splits and embeds `files` (JSON, from `StagedWriter.plan`) and writes
/// the documents stored to a staged segment at `out` (which must not exist). Returns
/// `{segment: json | None, touched: [json], report: {...}}`. Releases the GIL.
#[pyfunction]
#[pyo3(signature = (embedder, files, out, *, splitter="recursive", chunk_size=800, chunk_overlap=100,
    workers=None, embed_batch=32, embed_concurrency=1, retries=2, retry_backoff=0.2, commit_every=256,
    max_file_bytes=256 << 20, max_decompressed_bytes=64 << 20, max_text_bytes=16 << 20,
    max_chunks_per_document=25_000, progress=None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn build_shard<'py>(
    py: Python<'py>,
    embedder: Bound<'py, PyAny>,
    files: Vec<String>,
    out: PathBuf,
    splitter: &str,
    chunk_size: usize,
    chunk_overlap: usize,
    workers: Option<usize>,
    embed_batch: usize,
    embed_concurrency: usize,
    retries: u32,
    retry_backoff: f64,
    commit_every: usize,
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
    let embedder = native_embedder(&embedder)?;
    let files = files
        .iter()
        .map(|f| serde_json::from_str::<ShardFile>(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| json_err("a shard file", e))?;
    if embed_batch == 0 || embed_concurrency == 0 || workers == Some(0) {
        return Err(PyValueError::new_err(
            "workers, embed_batch and embed_concurrency must be at least 1",
        ));
    }
    let opts = IngestOptions {
        splitter: splitter_config(splitter, chunk_size, chunk_overlap)?,
        workers: workers.unwrap_or_else(crate::parallel::default_workers),
        embed_batch,
        embed_concurrency,
        retries,
        retry_backoff: checked_retry_backoff(retry_backoff)?,
        commit_every,
        limits,
        ..IngestOptions::default()
    };
    let counters = Progress::default();
    let progress = progress.map(Bound::unbind);
    let outcome = run_with_progress(py, &counters, progress.as_ref(), |token| {
        shard::build_shard(&*embedder, &files, &opts, &out, &counters, token)
    })?;
    if let Some(cb) = &progress {
        cb.bind(py).call1(counters.snapshot())?;
    }
    let d = PyDict::new(py);
    let segment = outcome
        .segment
        .as_ref()
        .map(|s| serde_json::to_string(s).expect("a staged segment serializes"));
    d.set_item("segment", segment)?;
    let touched = outcome
        .touched
        .iter()
        .map(|t| serde_json::to_string(t).expect("a file state serializes"))
        .collect::<Vec<_>>();
    d.set_item("touched", touched)?;
    d.set_item("report", outcome.report)?;
    Ok(d)
}
