//! `FaultServer` for Python: the fault-injecting loopback server of `gilkit_embed::testing`, for
//! this package's tests and benchmarks (and yours: see the directive table in the Rust docs or
//! `gilkit_embed.testing`).

use std::time::Duration;

use gilkit_embed::testing::{FaultConfig, FaultServer, expected_embedding};
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

/// A fault-injecting OpenAI-compatible embeddings server on 127.0.0.1 (its own threads).
#[pyclass(name = "FaultServer", module = "gilkit_embed.testing", frozen)]
pub struct PyFaultServer {
    server: Mutex<Option<FaultServer>>,
}

impl PyFaultServer {
    fn with<T>(&self, f: impl FnOnce(&FaultServer) -> T) -> PyResult<T> {
        match self.server.lock().as_ref() {
            Some(s) => Ok(f(s)),
            None => Err(PyRuntimeError::new_err("the FaultServer is closed")),
        }
    }
}

#[pymethods]
impl PyFaultServer {
    /// Starts the server. `latency` and `timeout_sleep` are in seconds; `retry_after` is the
    /// `retry-after` header value sent with `@429`.
    #[new]
    #[pyo3(signature = (*, dim=8, latency=0.0, retry_after="0.01", timeout_sleep=5.0, worker_threads=1))]
    fn new(
        py: Python<'_>,
        dim: usize,
        latency: f64,
        retry_after: &str,
        timeout_sleep: f64,
        worker_threads: usize,
    ) -> PyResult<Self> {
        let config = FaultConfig {
            dim,
            latency: Duration::from_secs_f64(latency.max(0.0)),
            retry_after: retry_after.to_owned(),
            timeout_sleep: Duration::from_secs_f64(timeout_sleep.max(0.0)),
            worker_threads,
        };
        let server = py
            .detach(|| FaultServer::start(config))
            .map_err(|e| PyOSError::new_err(format!("cannot start the fault server: {e}")))?;
        Ok(PyFaultServer {
            server: Mutex::new(Some(server)),
        })
    }

    /// `http://127.0.0.1:PORT/v1`.
    #[getter]
    fn base_url(&self) -> PyResult<String> {
        self.with(FaultServer::base_url)
    }

    /// Requests received so far.
    #[getter]
    fn requests(&self) -> PyResult<u64> {
        self.with(FaultServer::requests)
    }

    /// Distinct client connections seen so far.
    #[getter]
    fn connections(&self) -> PyResult<usize> {
        self.with(FaultServer::connections)
    }

    /// Most requests in progress at once so far.
    #[getter]
    fn max_in_flight(&self) -> PyResult<usize> {
        self.with(FaultServer::max_in_flight)
    }

    /// Requests seen whose first input was exactly `first_input`.
    fn attempts(&self, first_input: &str) -> PyResult<u32> {
        self.with(|s| s.attempts(first_input))
    }

    /// Changes the added latency (seconds) of following requests.
    fn set_latency(&self, latency: f64) -> PyResult<()> {
        self.with(|s| s.set_latency(Duration::from_secs_f64(latency.max(0.0))))
    }

    /// Forgets all counts.
    fn reset(&self) -> PyResult<()> {
        self.with(FaultServer::reset)
    }

    /// Stops the server (GIL released while its threads stop). Idempotent.
    fn close(&self, py: Python<'_>) {
        let server = self.server.lock().take();
        py.detach(move || drop(server));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _exc: Py<PyAny>, _value: Py<PyAny>, _tb: Py<PyAny>) {
        self.close(py);
    }
}

/// The vector the fault server returns for `text`.
#[pyfunction(name = "expected_embedding")]
#[pyo3(signature = (text, dim=8))]
pub fn py_expected_embedding(text: &str, dim: usize) -> Vec<f32> {
    expected_embedding(text, dim)
}
