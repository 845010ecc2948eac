//! `EmbeddingService` for Python: a Python model served over the OpenAI API by axum on gilkit's
//! runtime, the model called through the batcher (see `gilkit_embed::python`).
//!
//! Starting binds the port and returns at once (the server runs on gilkit's runtime threads, not
//! on the caller's); `serve_forever()` waits with the GIL released until Ctrl-C or `stop()`.

use std::net::SocketAddr;
use std::sync::Arc;

use gilkit_embed::python::PyCallableEmbedder;
use gilkit_embed::service::{self, ServiceHandle, ServiceOptions};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::local;

/// An OpenAI-compatible embeddings server for a Python embedding callable.
#[pyclass(name = "EmbeddingService", module = "gilkit_embed", frozen)]
pub struct PyEmbeddingService {
    handle: ServiceHandle,
    addr: SocketAddr,
    model: String,
    embedder: Arc<PyCallableEmbedder>,
}

#[pymethods]
impl PyEmbeddingService {
    /// Starts serving `model` (a callable or `"module:callable"`) on `host:port` (port 0 picks a
    /// free one). Returns once the port is bound.
    #[new]
    #[pyo3(signature = (
        model, *, host="127.0.0.1", port=8000, name=None, max_batch=64, max_wait_ms=0.0,
        max_queue=Some(1024), batching=true, max_inputs_per_request=2048,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        host: &str,
        port: u16,
        name: Option<String>,
        max_batch: usize,
        max_wait_ms: f64,
        max_queue: Option<usize>,
        batching: bool,
        max_inputs_per_request: usize,
    ) -> PyResult<Self> {
        let (callable, resolved) = gilkit_embed::python::resolve_model(py, model)?;
        let model_name = name.unwrap_or(resolved);
        let config = local::model_config(max_batch, max_wait_ms, max_queue, batching)?;
        if max_inputs_per_request == 0 {
            return Err(PyValueError::new_err(
                "max_inputs_per_request must be at least 1",
            ));
        }
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse().map_err(|_| {
                PyValueError::new_err(format!("host must be an IP address, got {host:?}"))
            })?
        };
        let embedder = Arc::new(PyCallableEmbedder::new(
            callable,
            model_name.clone(),
            config,
        ));
        let options = ServiceOptions {
            model_name: Some(model_name.clone()),
            max_inputs_per_request,
            ..ServiceOptions::default()
        };
        let handle = gilkit::block_on(
            py,
            service::start(SocketAddr::new(ip, port), embedder.clone(), options),
        )?
        .map_err(|e| PyOSError::new_err(format!("cannot serve on {host}:{port}: {e}")))?;
        Ok(PyEmbeddingService {
            addr: handle.addr(),
            handle,
            model: model_name,
            embedder,
        })
    }

    /// `http://HOST:PORT/v1`, the base URL for clients.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bound host.
    #[getter]
    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The model name served.
    #[getter]
    fn model(&self) -> &str {
        &self.model
    }

    /// True until the server has stopped.
    #[getter]
    fn running(&self) -> bool {
        !self.handle.is_stopped()
    }

    /// Request counters and the batcher's statistics.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let s = self.handle.stats();
        d.set_item("requests", s.requests)?;
        d.set_item("inputs", s.inputs)?;
        d.set_item("ok", s.ok)?;
        d.set_item("client_errors", s.client_errors)?;
        d.set_item("server_errors", s.server_errors)?;
        d.set_item("busy", s.busy)?;
        let batcher = PyDict::new(py);
        local::batcher_stats(&self.embedder, &batcher)?;
        d.set_item("batcher", batcher)?;
        Ok(d)
    }

    /// Waits (GIL released) until `stop()` is called from another thread or Ctrl-C, then stops.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let waited = gilkit::block_on(py, self.handle.wait());
        // Ended by Ctrl-C: shut down before the KeyboardInterrupt propagates.
        if waited.is_err() {
            self.handle.request_stop();
            gilkit::block_on(py, self.handle.wait())?;
        }
        waited
    }

    /// Stops accepting connections and waits for in-flight requests (GIL released). Idempotent.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        gilkit::block_on(py, self.handle.stop())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc: Py<PyAny>,
        _value: Py<PyAny>,
        _tb: Py<PyAny>,
    ) -> PyResult<()> {
        self.stop(py)
    }

    fn __repr__(&self) -> String {
        format!(
            "EmbeddingService(model={:?}, url={:?})",
            self.model,
            self.url()
        )
    }
}
