//! Awaitables for asyncio: run a Rust future on gilkit's runtime, resolve an asyncio future.
//!
//! `spawn` creates a future on the running event loop, spawns the Rust future on gilkit's shared
//! runtime, and when it finishes attaches briefly (via `gilkit::try_attach`, so nothing happens
//! while the interpreter exits) to convert the result and hand it to the loop with
//! `call_soon_threadsafe`. The loop thread never blocks and never holds the GIL for the I/O.
//! Cancelling the asyncio future aborts the Rust task, which drops its future and so its requests.

use std::future::Future;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::task::AbortHandle;

/// Aborts the Rust task when the asyncio future it feeds is cancelled (a done callback).
#[pyclass(frozen)]
struct AbortOnCancel(AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

/// Returns an asyncio future (of the running loop) that resolves to `convert(fut.await)`.
///
/// GIL: held to set up; the future then runs on gilkit's runtime without it; re-acquired once at
/// the end to convert and deliver the result.
///
/// # Errors
///
/// `RuntimeError` when no event loop is running in this thread, or gilkit's runtime cannot start.
pub(crate) fn spawn<'py, F, T>(
    py: Python<'py>,
    fut: F,
    convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let event_loop = py
        .import("asyncio")?
        .call_method0("get_running_loop")
        .map_err(|_| {
            PyRuntimeError::new_err(
                "the a* methods must be awaited inside a running asyncio event loop",
            )
        })?;
    let py_fut = event_loop.call_method0("create_future")?;
    let resolve = py.import("gilkit_embed._aio")?.getattr("resolve")?.unbind();
    let handle =
        gilkit::runtime::try_handle().map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let loop_ref = event_loop.unbind();
    let fut_ref = py_fut.clone().unbind();
    let task = handle.spawn(async move {
        let out = fut.await;
        gilkit::try_attach(|py| {
            let (ok, value) = match convert(py, out) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // The loop may have closed meanwhile: then there is nobody to deliver to.
            let _ =
                loop_ref.call_method1(py, "call_soon_threadsafe", (resolve, fut_ref, ok, value));
        });
    });
    py_fut.call_method1("add_done_callback", (AbortOnCancel(task.abort_handle()),))?;
    Ok(py_fut)
}
