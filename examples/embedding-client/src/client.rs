//! `EmbeddingConfig` and `EmbeddingClient` for Python.
//!
//! The client is a frozen pyclass over an `Arc` of the Rust client, so any number of Python threads
//! call it at once without a borrow flag or lock; each call extracts its texts with the GIL, then
//! runs with the GIL released (`gilkit::block_on`: Ctrl-C drops the call and its requests), then
//! converts the vectors with the GIL. The `a*` variants return asyncio awaitables instead
//! (`gilkit::asyncio::future_into_py_with`: the request runs on gilkit's runtime, the vectors are
//! converted on the event loop's thread, and cancelling the awaitable drops the request).

use std::sync::Arc;
use std::time::Duration;

use gilkit_embed::breaker::BreakerConfig;
use gilkit_embed::python::PyCallableEmbedder;
use gilkit_embed::ratelimit::RateLimitConfig;
use gilkit_embed::retry::RetryPolicy;
use gilkit_embed::tokens::Limits;
use gilkit_embed::wire::EncodingFormat;
use gilkit_embed::{
    BatchResults, ClientOptions, EmbedError, EmbeddingClient, EmbeddingConfig, Embeddings,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{count, count_u32, opt_count};
use crate::{convert, errors, local};

/// Which provider a config describes.
#[derive(Clone)]
pub(crate) enum Provider {
    Http(EmbeddingConfig),
    Local(local::LocalConfig),
}

/// How to reach an embedding model: an OpenAI-compatible HTTP endpoint
/// (`EmbeddingConfig.openai(...)`) or a Python callable run in-process (`EmbeddingConfig.local(...)`).
#[pyclass(name = "EmbeddingConfig", module = "gilkit_embed", frozen)]
#[derive(Clone)]
pub struct PyEmbeddingConfig {
    pub(crate) provider: Provider,
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    convert::duration(name, s, "seconds")
}

#[pymethods]
impl PyEmbeddingConfig {
    /// An OpenAI-compatible endpoint. `api_key=None` reads `OPENAI_API_KEY` (and `base_url=None`
    /// reads `OPENAI_BASE_URL`, else the OpenAI API); pass `api_key=""` for servers that need none.
    #[staticmethod]
    #[pyo3(signature = (
        api_key=None, model=None, base_url=None, timeout=60.0, max_retries=2, dimensions=None, *,
        encoding_format="base64", max_batch_size=2048, max_concurrency=64, connect_timeout=5.0,
        requests_per_minute=None, tokens_per_minute=None, rate_limits_from_headers=false,
        circuit_breaker_threshold=Some(10), circuit_breaker_cooldown=10.0, initial_retry_delay=0.5,
        max_tokens_per_input=8192, max_tokens_per_request=300_000,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn openai(
        api_key: Option<String>,
        model: Option<String>,
        base_url: Option<String>,
        timeout: f64,
        max_retries: i64,
        dimensions: Option<i64>,
        encoding_format: &str,
        max_batch_size: i64,
        max_concurrency: i64,
        connect_timeout: f64,
        requests_per_minute: Option<i64>,
        tokens_per_minute: Option<i64>,
        rate_limits_from_headers: bool,
        circuit_breaker_threshold: Option<i64>,
        circuit_breaker_cooldown: f64,
        initial_retry_delay: f64,
        max_tokens_per_input: i64,
        max_tokens_per_request: i64,
    ) -> PyResult<Self> {
        let max_retries = count_u32("max_retries", max_retries, 0)?;
        let dimensions = dimensions
            .map(|d| count_u32("dimensions", d, 1))
            .transpose()?;
        let max_batch_size = count("max_batch_size", max_batch_size, 1)?;
        let max_concurrency = count("max_concurrency", max_concurrency, 1)?;
        let requests_per_minute = requests_per_minute
            .map(|n| count_u32("requests_per_minute", n, 1))
            .transpose()?;
        let tokens_per_minute = tokens_per_minute
            .map(|n| count_u32("tokens_per_minute", n, 1))
            .transpose()?;
        let circuit_breaker_threshold = circuit_breaker_threshold
            .map(|n| count_u32("circuit_breaker_threshold", n, 1))
            .transpose()?;
        if !circuit_breaker_cooldown.is_finite() || circuit_breaker_cooldown < 0.0 {
            return Err(PyValueError::new_err(format!(
                "circuit_breaker_cooldown must be a non-negative number of seconds, got {circuit_breaker_cooldown}"
            )));
        }
        let max_tokens_per_input = count("max_tokens_per_input", max_tokens_per_input, 1)?;
        let max_tokens_per_request = count("max_tokens_per_request", max_tokens_per_request, 1)?;
        let mut config = match api_key {
            Some(key) => EmbeddingConfig::openai(key),
            None => {
                EmbeddingConfig::from_env().map_err(|e| PyValueError::new_err(e.to_string()))?
            }
        };
        if let Some(url) = base_url {
            config.base_url = url;
        }
        if let Some(model) = model {
            config.model = model;
        }
        config.timeout = seconds("timeout", timeout)?;
        config.connect_timeout = seconds("connect_timeout", connect_timeout)?;
        config.retry = RetryPolicy {
            max_retries,
            initial_delay: seconds("initial_retry_delay", initial_retry_delay)?,
            ..RetryPolicy::default()
        };
        config.dimensions = dimensions;
        config.encoding_format = match encoding_format {
            "float" => EncodingFormat::Float,
            "base64" => EncodingFormat::Base64,
            other => {
                return Err(PyValueError::new_err(format!(
                    "encoding_format must be 'float' or 'base64', got {other:?}"
                )));
            }
        };
        config.max_batch_size = max_batch_size;
        config.max_concurrency = max_concurrency;
        config.rate_limit = RateLimitConfig {
            requests_per_minute,
            tokens_per_minute,
            from_headers: rate_limits_from_headers,
        };
        config.breaker = circuit_breaker_threshold.map(|threshold| BreakerConfig {
            threshold,
            cooldown: Duration::from_secs_f64(circuit_breaker_cooldown.max(0.0)),
        });
        config.limits = Limits {
            max_tokens_per_input,
            max_tokens_per_request,
            ..Limits::OPENAI
        };
        config
            .validate()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyEmbeddingConfig {
            provider: Provider::Http(config),
        })
    }

    /// A Python callable (or `"module:callable"`) that takes a list of strings and returns one
    /// vector per string (a 2-D array or a list of lists), run in-process: concurrent calls are
    /// micro-batched into one call of the model per GIL acquisition (`max_batch` texts at most,
    /// waiting at most `max_wait_ms` for a batch to fill; 0 takes what is queued). `max_queue`
    /// bounds waiting texts.
    #[staticmethod]
    #[pyo3(signature = (
        model, *, name=None, max_batch=64, max_wait_ms=0.0, max_queue=Some(1024), batching=true,
        max_batch_size=256, max_concurrency=16,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn local(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        name: Option<String>,
        max_batch: i64,
        max_wait_ms: f64,
        max_queue: Option<i64>,
        batching: bool,
        max_batch_size: i64,
        max_concurrency: i64,
    ) -> PyResult<Self> {
        let model_config = local::model_config(max_batch, max_wait_ms, max_queue, batching)?;
        let options = ClientOptions {
            max_batch_size: count("max_batch_size", max_batch_size, 1)?,
            max_concurrency: count("max_concurrency", max_concurrency, 1)?,
        };
        let config = local::LocalConfig::new(py, model, name, model_config, options)?;
        Ok(PyEmbeddingConfig {
            provider: Provider::Local(config),
        })
    }

    /// `"openai"` or `"local"`.
    #[getter]
    fn provider(&self) -> &'static str {
        match self.provider {
            Provider::Http(_) => "openai",
            Provider::Local(_) => "local",
        }
    }

    /// The model name.
    #[getter]
    fn model(&self) -> String {
        match &self.provider {
            Provider::Http(c) => c.model.clone(),
            Provider::Local(l) => l.name.clone(),
        }
    }

    /// The base URL (`None` for a local model).
    #[getter]
    fn base_url(&self) -> Option<String> {
        match &self.provider {
            Provider::Http(c) => Some(c.base_url.clone()),
            Provider::Local(_) => None,
        }
    }

    /// Every setting as a dict (the API key masked).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("provider", self.provider())?;
        d.set_item("model", self.model())?;
        match &self.provider {
            Provider::Http(c) => {
                d.set_item("base_url", &c.base_url)?;
                d.set_item("api_key_set", !c.api_key.is_empty())?;
                d.set_item("timeout", c.timeout.as_secs_f64())?;
                d.set_item("connect_timeout", c.connect_timeout.as_secs_f64())?;
                d.set_item("max_retries", c.retry.max_retries)?;
                d.set_item("initial_retry_delay", c.retry.initial_delay.as_secs_f64())?;
                d.set_item("dimensions", c.dimensions)?;
                d.set_item("encoding_format", c.encoding_format.as_str())?;
                d.set_item("max_batch_size", c.max_batch_size)?;
                d.set_item("max_concurrency", c.max_concurrency)?;
                d.set_item("requests_per_minute", c.rate_limit.requests_per_minute)?;
                d.set_item("tokens_per_minute", c.rate_limit.tokens_per_minute)?;
                d.set_item("rate_limits_from_headers", c.rate_limit.from_headers)?;
                d.set_item("circuit_breaker_threshold", c.breaker.map(|b| b.threshold))?;
                d.set_item(
                    "circuit_breaker_cooldown",
                    c.breaker.map(|b| b.cooldown.as_secs_f64()),
                )?;
                d.set_item("max_tokens_per_input", c.limits.max_tokens_per_input)?;
                d.set_item("max_tokens_per_request", c.limits.max_tokens_per_request)?;
                d.set_item("max_inputs_per_request", c.limits.max_inputs_per_request)?;
            }
            Provider::Local(l) => l.describe(&d)?,
        }
        Ok(d)
    }

    /// Pickles as its settings, so that a config can be sent to another process (multiprocessing,
    /// Ray) and a client made there: an endpoint's settings with its API key, a local model's
    /// callable (which must pickle itself; by reference for a module-level function) and its
    /// batcher settings. Rebuilt through `EmbeddingConfig.openai`/`.local`, so they are checked
    /// again.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let restore = py.import("gilkit_embed._pickle")?;
        let kw = PyDict::new(py);
        match &self.provider {
            Provider::Http(c) => {
                kw.set_item("api_key", &c.api_key)?;
                kw.set_item("model", &c.model)?;
                kw.set_item("base_url", &c.base_url)?;
                kw.set_item("timeout", c.timeout.as_secs_f64())?;
                kw.set_item("connect_timeout", c.connect_timeout.as_secs_f64())?;
                kw.set_item("max_retries", c.retry.max_retries)?;
                kw.set_item("initial_retry_delay", c.retry.initial_delay.as_secs_f64())?;
                kw.set_item("dimensions", c.dimensions)?;
                kw.set_item("encoding_format", c.encoding_format.as_str())?;
                kw.set_item("max_batch_size", c.max_batch_size)?;
                kw.set_item("max_concurrency", c.max_concurrency)?;
                kw.set_item("requests_per_minute", c.rate_limit.requests_per_minute)?;
                kw.set_item("tokens_per_minute", c.rate_limit.tokens_per_minute)?;
                kw.set_item("rate_limits_from_headers", c.rate_limit.from_headers)?;
                kw.set_item("circuit_breaker_threshold", c.breaker.map(|b| b.threshold))?;
                if let Some(b) = c.breaker {
                    kw.set_item("circuit_breaker_cooldown", b.cooldown.as_secs_f64())?;
                }
                kw.set_item("max_tokens_per_input", c.limits.max_tokens_per_input)?;
                kw.set_item("max_tokens_per_request", c.limits.max_tokens_per_request)?;
                (restore.getattr("restore_openai")?, (kw,))
                    .into_pyobject(py)
                    .map(Bound::into_any)
            }
            Provider::Local(l) => {
                l.describe(&kw)?;
                kw.set_item("name", &l.name)?;
                let model = l.model.clone_ref(py);
                (restore.getattr("restore_local")?, (model, kw))
                    .into_pyobject(py)
                    .map(Bound::into_any)
            }
        }
    }

    fn __repr__(&self) -> String {
        match &self.provider {
            Provider::Http(c) => format!(
                "EmbeddingConfig.openai(model={:?}, base_url={:?}, api_key={}, timeout={}, max_retries={})",
                c.model,
                c.base_url,
                if c.api_key.is_empty() { "''" } else { "'***'" },
                c.timeout.as_secs_f64(),
                c.retry.max_retries
            ),
            Provider::Local(l) => format!("EmbeddingConfig.local(name={:?})", l.name),
        }
    }
}

/// An embedding client: one connection pool (or one local model batcher) shared by all threads.
#[pyclass(name = "EmbeddingClient", module = "gilkit_embed", frozen)]
pub struct PyEmbeddingClient {
    inner: Arc<EmbeddingClient>,
    config: Py<PyEmbeddingConfig>,
    /// The in-process model's embedder, for its batcher statistics.
    local: Option<Arc<PyCallableEmbedder>>,
}

type Vectors = Result<Embeddings, EmbedError>;

fn vectors_to_py(numpy: bool) -> fn(Python<'_>, Vectors) -> PyResult<Py<PyAny>> {
    if numpy {
        |py, r| Ok(convert::vectors(py, r.map_err(|e| errors::to_py(py, &e))?, true)?.unbind())
    } else {
        |py, r| Ok(convert::vectors(py, r.map_err(|e| errors::to_py(py, &e))?, false)?.unbind())
    }
}

fn vector_to_py(numpy: bool) -> fn(Python<'_>, Vectors) -> PyResult<Py<PyAny>> {
    if numpy {
        |py, r| Ok(convert::vector(py, r.map_err(|e| errors::to_py(py, &e))?, true)?.unbind())
    } else {
        |py, r| Ok(convert::vector(py, r.map_err(|e| errors::to_py(py, &e))?, false)?.unbind())
    }
}

fn batch_to_py(
    numpy: bool,
) -> fn(Python<'_>, Result<BatchResults, EmbedError>) -> PyResult<Py<PyAny>> {
    if numpy {
        |py, r| batch_results(py, r.map_err(|e| errors::to_py(py, &e))?, true)
    } else {
        |py, r| batch_results(py, r.map_err(|e| errors::to_py(py, &e))?, false)
    }
}

/// GraphBit's result shape, aligned: `embeddings[i]` and `errors[i]` describe input batch `i`.
fn batch_results(py: Python<'_>, out: BatchResults, numpy: bool) -> PyResult<Py<PyAny>> {
    let embeddings = PyList::empty(py);
    let errs = PyList::empty(py);
    for r in out.results {
        match r {
            Ok(e) => {
                embeddings.append(convert::vectors(py, e, numpy)?)?;
                errs.append(py.None())?;
            }
            Err(e) => {
                embeddings.append(py.None())?;
                errs.append(errors::to_py_value(py, &e))?;
            }
        }
    }
    let s = &out.stats;
    let run = BatchRun {
        embeddings,
        errors: errs,
        stats: BatchRunStats {
            total_batches: s.succeeded + s.failed,
            successful_batches: s.succeeded,
            failed_batches: s.failed,
            total_embeddings: s.embeddings,
            prompt_tokens: s.prompt_tokens,
            latency: s.latency,
        },
        duration: s.duration,
    };
    Ok(run.into_pyobject(py)?.into_any().unbind())
}

/// What `embed_batch_parallel` returns: `{"embeddings", "errors", "stats", "duration_s"}`
/// (gilkit's stats convention: durations in float seconds under keys ending in `_s`).
#[derive(IntoPyObject)]
struct BatchRun<'py> {
    embeddings: Bound<'py, PyList>,
    errors: Bound<'py, PyList>,
    stats: BatchRunStats,
    /// Wall time of the whole run.
    #[pyo3(item("duration_s"), into_py_with = gilkit::stats::seconds)]
    duration: Duration,
}

/// The `stats` of an `embed_batch_parallel` result.
#[derive(IntoPyObject)]
struct BatchRunStats {
    total_batches: usize,
    successful_batches: usize,
    failed_batches: usize,
    total_embeddings: usize,
    prompt_tokens: u64,
    /// Time from a batch's start to its end (a latency dict: `count`, `p50_s`, `p99_s`, `max_s`,
    /// `mean_s`; count 0 when no batch finished).
    latency: gilkit::stats::LatencySummary,
}

/// `EmbeddingClient.stats()`: the provider's counters, by kind of provider.
#[derive(IntoPyObject)]
enum ClientStats {
    /// An OpenAI-compatible HTTP provider.
    Http {
        model: String,
        attempts: u64,
        retries: u64,
        succeeded_requests: u64,
        failed_requests: u64,
        prompt_tokens: u64,
        /// Time spent waiting for the client-side rate limiter.
        #[pyo3(item("rate_limited_s"), into_py_with = gilkit::stats::seconds)]
        rate_limited: Duration,
        circuit_open: bool,
    },
    /// A Python callable in this process: its batcher's statistics (`None` without batching).
    Local {
        model: String,
        batcher: Option<gilkit::batcher::BatcherStats>,
    },
    /// Any other provider: its model only.
    Other { model: String },
}

fn timeout_from_ms(timeout_ms: Option<f64>) -> PyResult<Option<Duration>> {
    timeout_ms
        .map(|ms| convert::duration("timeout_ms", ms, "milliseconds"))
        .transpose()
}

fn concurrency(max_concurrency: Option<i64>) -> PyResult<Option<usize>> {
    opt_count("max_concurrency", max_concurrency, 1)
}

impl PyEmbeddingClient {
    /// `RuntimeError` when called from inside this client's own model (on its batcher thread),
    /// where waiting would deadlock.
    fn refuse_reentry(&self) -> PyResult<()> {
        match &self.local {
            Some(embedder) if embedder.is_model_thread() => Err(PyRuntimeError::new_err(
                embedder.reentry_error().to_string(),
            )),
            _ => Ok(()),
        }
    }
}

#[pymethods]
impl PyEmbeddingClient {
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let config = config.cast::<PyEmbeddingConfig>().map_err(|_| {
            PyTypeError::new_err(
                "EmbeddingClient(config) needs an EmbeddingConfig, e.g. EmbeddingConfig.openai(...)",
            )
        })?;
        let (inner, local) = match &config.get().provider {
            Provider::Http(c) => (
                EmbeddingClient::new(c.clone()).map_err(|e| errors::to_py(py, &e))?,
                None,
            ),
            Provider::Local(l) => {
                let embedder = l.embedder(py);
                (l.client(embedder.clone()), Some(embedder))
            }
        };
        Ok(PyEmbeddingClient {
            inner: Arc::new(inner),
            config: config.clone().unbind(),
            local,
        })
    }

    /// The configuration this client was made with.
    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyEmbeddingConfig> {
        self.config.clone_ref(py)
    }

    /// Embeds one text. GIL released while waiting.
    #[pyo3(signature = (text, *, numpy=false))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let text = [convert::text(text)?];
        self.refuse_reentry()?;
        let r = gilkit::block_on(py, self.inner.embed_many(&text))?;
        Ok(vector_to_py(numpy)(py, r)?.into_bound(py))
    }

    /// Embeds a list of texts: one vector per text, in order. GIL released while waiting.
    #[pyo3(signature = (texts, *, numpy=false))]
    fn embed_many<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let texts = convert::texts(texts, "texts")?;
        self.refuse_reentry()?;
        let r = gilkit::block_on(py, self.inner.embed_many(&texts))?;
        Ok(vectors_to_py(numpy)(py, r)?.into_bound(py))
    }

    /// Embeds many batches concurrently on gilkit's batch executor; returns `{"embeddings",
    /// "errors", "stats", "duration_s"}` with one entry per input batch (`None` in `embeddings`
    /// where that batch failed, and the exception in `errors`). `progress(n)` is called (at most
    /// every 100 ms, and at the end) with the number of batches finished since its last call.
    /// GIL released while waiting; Ctrl-C cancels the batches still running.
    #[pyo3(signature = (texts_batch, max_concurrency=None, timeout_ms=None, *, numpy=false, progress=None))]
    fn embed_batch_parallel<'py>(
        &self,
        py: Python<'py>,
        texts_batch: &Bound<'py, PyAny>,
        max_concurrency: Option<i64>,
        timeout_ms: Option<f64>,
        numpy: bool,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batches = convert::batches(texts_batch)?;
        let (conc, timeout) = (concurrency(max_concurrency)?, timeout_from_ms(timeout_ms)?);
        if let Some(p) = progress
            && !p.is_callable()
        {
            return Err(PyTypeError::new_err(
                "progress must be callable, e.g. tqdm(...).update",
            ));
        }
        let client = &*self.inner;
        client
            .validate_batches(&batches)
            .map_err(|e| errors::to_py(py, &e))?;
        let options = client.batch_options(conc, timeout);
        let batches = &batches;
        self.refuse_reentry()?;
        let report = match gilkit::batch::block_on_batch_from_python(
            py,
            (0..batches.len()).collect(),
            &options,
            progress,
            |i| client.embed_many(&batches[i]),
        ) {
            Ok(report) => report,
            Err(interrupted) => {
                // Ctrl-C (or `progress` raised): keep what finished, aligned like a normal result
                // (`None` and a cancelled error for the batches that did not finish).
                let gilkit::batch::BatchInterrupted { error, report } = interrupted;
                let partial = BatchResults::from_report(*report, timeout);
                if let Ok(value) = batch_to_py(numpy)(py, Ok(partial)) {
                    // An exception that refuses attributes is still the right one to raise.
                    let _ = error.value(py).setattr("partial_results", value);
                }
                return Err(error);
            }
        };
        let out = BatchResults::from_report(report, timeout);
        Ok(batch_to_py(numpy)(py, Ok(out))?.into_bound(py))
    }

    /// `await client.aembed(text)`: like `embed`, for asyncio.
    #[pyo3(signature = (text, *, numpy=false))]
    fn aembed<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let texts = vec![convert::text(text)?];
        let client = self.inner.clone();
        gilkit::asyncio::future_into_py_with(
            py,
            async move { client.embed_many(&texts).await },
            vector_to_py(numpy),
        )
    }

    /// `await client.aembed_many(texts)`: like `embed_many`, for asyncio.
    #[pyo3(signature = (texts, *, numpy=false))]
    fn aembed_many<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let texts = convert::texts(texts, "texts")?;
        let client = self.inner.clone();
        gilkit::asyncio::future_into_py_with(
            py,
            async move { client.embed_many(&texts).await },
            vectors_to_py(numpy),
        )
    }

    /// `await client.aembed_batch_parallel(texts_batch)`: like `embed_batch_parallel`, for asyncio.
    #[pyo3(signature = (texts_batch, max_concurrency=None, timeout_ms=None, *, numpy=false))]
    fn aembed_batch_parallel<'py>(
        &self,
        py: Python<'py>,
        texts_batch: &Bound<'py, PyAny>,
        max_concurrency: Option<i64>,
        timeout_ms: Option<f64>,
        numpy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batches = convert::batches(texts_batch)?;
        let (conc, timeout) = (concurrency(max_concurrency)?, timeout_from_ms(timeout_ms)?);
        let client = self.inner.clone();
        gilkit::asyncio::future_into_py_with(
            py,
            async move { client.embed_batches(&batches, conc, timeout).await },
            batch_to_py(numpy),
        )
    }

    /// Counters of this client's provider, as a dict: for HTTP `model`, `attempts`, `retries`,
    /// `succeeded_requests`, `failed_requests`, `prompt_tokens`, `rate_limited_s`,
    /// `circuit_open`; for a local model `model` and `batcher` (the `GilBatcher`'s statistics, or
    /// `None` without batching).
    fn stats(&self) -> ClientStats {
        let model = self.inner.embedder().model().to_owned();
        if let Some(http) = self.inner.http() {
            let s = http.stats();
            ClientStats::Http {
                model,
                attempts: s.attempts,
                retries: s.retries,
                succeeded_requests: s.succeeded,
                failed_requests: s.failed,
                prompt_tokens: s.prompt_tokens,
                rate_limited: Duration::from_millis(s.rate_limited_ms),
                circuit_open: http.circuit_open(),
            }
        } else if let Some(embedder) = &self.local {
            ClientStats::Local {
                model,
                batcher: embedder.batcher_stats(),
            }
        } else {
            ClientStats::Other { model }
        }
    }

    fn __repr__(&self) -> String {
        format!("EmbeddingClient(model={:?})", self.inner.embedder().model())
    }
}
