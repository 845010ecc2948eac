//! In-process models: the settings of `EmbeddingConfig.local` and the batcher's statistics.

use std::sync::Arc;
use std::time::Duration;

use gilkit_embed::python::{PyCallableEmbedder, PyModelConfig};
use gilkit_embed::{ClientOptions, EmbeddingClient};
use pyo3::exceptions::PyValueError;

use crate::convert::{count, opt_count};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A model callable and how to call it.
#[derive(Clone)]
pub(crate) struct LocalConfig {
    pub(crate) model: Arc<Py<PyAny>>,
    pub(crate) name: String,
    pub(crate) model_config: PyModelConfig,
    pub(crate) options: ClientOptions,
}

/// Validated batcher settings.
pub(crate) fn model_config(
    max_batch: i64,
    max_wait_ms: f64,
    max_queue: Option<i64>,
    batching: bool,
) -> PyResult<PyModelConfig> {
    let max_batch = count("max_batch", max_batch, 1)?;
    let max_queue = opt_count("max_queue (None for no bound)", max_queue, 1)?;
    if !max_wait_ms.is_finite() || max_wait_ms < 0.0 {
        return Err(PyValueError::new_err(format!(
            "max_wait_ms must be a non-negative number of milliseconds, got {max_wait_ms}"
        )));
    }
    Ok(PyModelConfig {
        max_batch,
        max_wait: Duration::from_secs_f64(max_wait_ms / 1e3),
        max_queue,
        batching,
        ..PyModelConfig::default()
    })
}

impl LocalConfig {
    pub(crate) fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        name: Option<String>,
        model_config: PyModelConfig,
        options: ClientOptions,
    ) -> PyResult<Self> {
        let (model, resolved) = gilkit_embed::python::resolve_model(py, model)?;
        Ok(LocalConfig {
            model: Arc::new(model),
            name: name.unwrap_or(resolved),
            model_config,
            options,
        })
    }

    /// A new embedder (with its own batcher thread) for this model.
    pub(crate) fn embedder(&self, py: Python<'_>) -> Arc<PyCallableEmbedder> {
        Arc::new(PyCallableEmbedder::new(
            self.model.clone_ref(py),
            self.name.clone(),
            self.model_config.clone(),
        ))
    }

    pub(crate) fn client(&self, embedder: Arc<PyCallableEmbedder>) -> EmbeddingClient {
        EmbeddingClient::with_embedder(embedder, self.options)
    }

    pub(crate) fn describe(&self, d: &Bound<'_, PyDict>) -> PyResult<()> {
        d.set_item("max_batch", self.model_config.max_batch)?;
        d.set_item(
            "max_wait_ms",
            self.model_config.max_wait.as_secs_f64() * 1e3,
        )?;
        d.set_item("max_queue", self.model_config.max_queue)?;
        d.set_item("batching", self.model_config.batching)?;
        d.set_item("max_batch_size", self.options.max_batch_size)?;
        d.set_item("max_concurrency", self.options.max_concurrency)?;
        Ok(())
    }
}
