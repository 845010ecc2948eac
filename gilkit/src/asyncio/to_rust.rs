//! Awaitable -> Rust future: [`into_future`] and [`PyFuture`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::sync::oneshot;

use super::bridge::{self, Bridge, Message, Resolve};

/// Runs a Python awaitable (coroutine, task, future) as a task of an asyncio event loop and returns
/// a Rust future of its result, extracted as `T` on the loop thread.
///
/// Which loop: inside a future given to [`future_into_py`](super::future_into_py), the loop that
/// awaits that future, and the task runs in the caller's `contextvars` context (so context
/// variables the Python caller set are visible to the callback). Otherwise the running loop of the
/// calling thread, in the current context.
///
/// Cancellation goes both ways: dropping the [`PyFuture`] cancels the Python task; a Python task
/// that is cancelled makes the `PyFuture` return `asyncio.CancelledError`.
///
/// GIL: held by the caller (it holds `awaitable`); the returned future needs no GIL to be awaited,
/// and the result is extracted on the loop thread, so awaiting it never waits for the GIL.
///
/// # Errors
/// `RuntimeError` when there is no event loop to run the awaitable on (neither inside a
/// `future_into_py` future nor on a thread running a loop), or when it cannot be started.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// /// `await call_async(callback)`: awaits `callback()` (an `async def`) from Rust, adds one.
/// #[pyfunction]
/// fn call_async<'py>(py: Python<'py>, callback: Py<PyAny>) -> PyResult<Bound<'py, PyAny>> {
///     gilkit::asyncio::future_into_py(py, async move {
///         // Calling Python needs the GIL: attach briefly (try_attach: not during exit).
///         let awaited = gilkit::try_attach(|py| {
///             gilkit::asyncio::into_future::<u64>(callback.bind(py).call0()?.as_any())
///         });
///         let n = awaited.ok_or_else(|| {
///             pyo3::exceptions::PyRuntimeError::new_err("the interpreter is exiting")
///         })??;
///         Ok::<_, PyErr>(n.await? + 1)
///     })
/// }
/// # Python::attach(|py| {
/// #     let f = wrap_pyfunction!(call_async, py).unwrap();
/// #     let locals = pyo3::types::PyDict::new(py);
/// #     locals.set_item("f", f).unwrap();
/// #     py.run(c"import asyncio\nasync def cb():\n    return 41\nasync def main():\n    return await f(cb)\nr = asyncio.run(main())", Some(&locals), None).unwrap();
/// #     assert_eq!(locals.get_item("r").unwrap().unwrap().extract::<u64>().unwrap(), 42);
/// # });
/// ```
pub fn into_future<T>(awaitable: &Bound<'_, PyAny>) -> PyResult<PyFuture<T>>
where
    T: for<'py> FromPyObjectOwned<'py> + Send + 'static,
{
    let py = awaitable.py();
    let (tx, rx) = oneshot::channel::<PyResult<T>>();
    let resolve: Resolve = Box::new(move |_py, outcome| {
        let value = outcome.and_then(|v| v.extract::<T>().map_err(Into::into));
        // The Rust side may have given up (dropped its `PyFuture`): then the value is dropped.
        let _ = tx.send(value);
    });
    if let Some((bridge, parent)) = super::current() {
        if !bridge.is_usable() {
            return Err(PyRuntimeError::new_err(
                "the asyncio event loop that awaits this Rust future has closed; the Python \
                 awaitable was not started",
            ));
        }
        let key = bridge.next_key();
        bridge.register_task(key);
        bridge.send(Message::Start {
            key,
            parent: Some(parent),
            awaitable: awaitable.clone().unbind(),
            resolve,
        });
        return Ok(PyFuture::new(rx, bridge, key));
    }
    let (_event_loop, bridge) = bridge::running(py).map_err(|_| {
        PyRuntimeError::new_err(
            "gilkit::asyncio::into_future needs an event loop: call it inside a future given to \
             gilkit::asyncio::future_into_py, or on a thread that runs an asyncio event loop",
        )
    })?;
    let key = bridge.next_key();
    bridge.register_task(key);
    bridge.start(py, key, None, awaitable.clone().unbind(), resolve);
    Ok(PyFuture::new(rx, bridge, key))
}

/// A Python awaitable running as a task of an asyncio loop, awaited from Rust: made by
/// [`into_future`]. Resolves to the task's result extracted as `T`, or its exception.
///
/// Needs no GIL and no particular runtime to be awaited.
///
/// # Cancel safety
/// Dropping it before it completes cancels the Python task (on the loop's thread, soon after).
#[must_use = "a PyFuture does nothing unless awaited; dropping it cancels the Python task"]
pub struct PyFuture<T> {
    rx: oneshot::Receiver<PyResult<T>>,
    /// Where to send the cancellation when dropped early; `None` once complete.
    cancel: Option<(Arc<Bridge>, u64)>,
    _output: PhantomData<fn() -> T>,
}

impl<T> PyFuture<T> {
    fn new(rx: oneshot::Receiver<PyResult<T>>, bridge: Arc<Bridge>, key: u64) -> Self {
        Self {
            rx,
            cancel: Some((bridge, key)),
            _output: PhantomData,
        }
    }
}

impl<T> Future for PyFuture<T> {
    type Output = PyResult<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        let Poll::Ready(received) = polled else {
            return Poll::Pending;
        };
        self.cancel = None;
        Poll::Ready(received.unwrap_or_else(|_| {
            Err(PyRuntimeError::new_err(
                "the asyncio event loop closed before the Python awaitable finished",
            ))
        }))
    }
}

impl<T> Drop for PyFuture<T> {
    fn drop(&mut self) {
        if let Some((bridge, key)) = self.cancel.take() {
            bridge.send(Message::Cancel { key });
        }
    }
}

impl<T> std::fmt::Debug for PyFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyFuture")
            .field("done", &self.cancel.is_none())
            .finish()
    }
}
