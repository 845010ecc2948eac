//! `EmbeddingService` for Python: a Python model served over the OpenAI API by axum on gilkit's
//! runtime, the model called through the batcher (see `gilkit_embed::python`).
//!
//! Starting binds the port and returns at once (the server runs on gilkit's runtime threads, not
//! on the caller's); `serve_forever()` waits with the GIL released until Ctrl-C or `stop()`.

use std::net::SocketAddr;
use std::sync::Arc;

use gilkit_embed::python::PyCallableEmbedder;
use gilkit_embed::service::{self, ConnectionLimits, ServiceHandle, ServiceOptions};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::convert::{count, duration, opt_count};
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
    /// free one). Returns once the port is bound. See the package README for every limit.
    #[new]
    #[pyo3(signature = (
        model, *, host="127.0.0.1", port=8000, name=None, max_batch=64, max_wait_ms=0.0,
        max_queue=Some(1024), batching=true, max_inputs_per_request=2048,
        max_tokens_per_input=8192, max_tokens_per_request=300_000,
        fair_share_tokens=Some(service::DEFAULT_FAIR_SHARE_TOKENS as i64),
        max_body_bytes=16 << 20, header_timeout=10.0, body_timeout=30.0, idle_timeout=5.0,
        max_connections=1024,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        host: &str,
        port: i64,
        name: Option<String>,
        max_batch: i64,
        max_wait_ms: f64,
        max_queue: Option<i64>,
        batching: bool,
        max_inputs_per_request: i64,
        max_tokens_per_input: i64,
        max_tokens_per_request: i64,
        fair_share_tokens: Option<i64>,
        max_body_bytes: i64,
        header_timeout: f64,
        body_timeout: f64,
        idle_timeout: f64,
        max_connections: i64,
    ) -> PyResult<Self> {
        let port = u16::try_from(port).map_err(|_| {
            PyValueError::new_err(format!("port must be from 0 to 65535, got {port}"))
        })?;
        let config = local::model_config(max_batch, max_wait_ms, max_queue, batching)?;
        let options = ServiceOptions {
            model_name: None,
            max_inputs_per_request: count("max_inputs_per_request", max_inputs_per_request, 1)?,
            max_tokens_per_input: count("max_tokens_per_input", max_tokens_per_input, 1)?,
            max_tokens_per_request: count("max_tokens_per_request", max_tokens_per_request, 1)?,
            fair_share_tokens: opt_count("fair_share_tokens", fair_share_tokens, 1)?,
            max_body_bytes: count("max_body_bytes", max_body_bytes, 1)?,
            connections: ConnectionLimits {
                header_timeout: duration("header_timeout", header_timeout, "seconds")?,
                body_timeout: duration("body_timeout", body_timeout, "seconds")?,
                idle_timeout: duration("idle_timeout", idle_timeout, "seconds")?,
                max_connections: count("max_connections", max_connections, 1)?,
            },
        };
        let ip: std::net::IpAddr = if host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse().map_err(|_| {
                PyValueError::new_err(format!("host must be an IP address, got {host:?}"))
            })?
        };
        let (callable, resolved) = gilkit_embed::python::resolve_model(py, model)?;
        let model_name = name.unwrap_or(resolved);
        let embedder = Arc::new(PyCallableEmbedder::new(
            callable,
            model_name.clone(),
            config,
        ));
        let options = ServiceOptions {
            model_name: Some(model_name.clone()),
            ..options
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

    /// Request counters and the batcher's statistics, as a dict: `requests`, `inputs`, `ok`,
    /// `client_errors`, `server_errors`, `busy`, `queue_depth`, `open_connections`, and `batcher`
    /// (the `GilBatcher`'s statistics, `None` without batching).
    fn stats(&self) -> ServiceStatsPy {
        let s = self.handle.stats();
        ServiceStatsPy {
            requests: s.requests,
            inputs: s.inputs,
            ok: s.ok,
            client_errors: s.client_errors,
            server_errors: s.server_errors,
            busy: s.busy,
            queue_depth: s.queue_depth,
            open_connections: s.open_connections,
            batcher: self.embedder.batcher_stats(),
        }
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

/// `EmbeddingService.stats()` (gilkit's stats convention; see `gilkit::stats`).
#[derive(IntoPyObject)]
struct ServiceStatsPy {
    requests: u64,
    inputs: u64,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    busy: u64,
    queue_depth: u64,
    open_connections: u64,
    batcher: Option<gilkit::batcher::BatcherStats>,
}
