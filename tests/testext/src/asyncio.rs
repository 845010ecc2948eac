//! `gilkit::asyncio` from Python, for `tests/python/test_asyncio.py` and `benches/asyncio/`.
//!
//! Each function returns an awaitable of the running loop: ready at once, after a tokio sleep,
//! never, with an error, with a panic; one awaits a Python callback from Rust; two are written
//! with `#[gilkit::nogil(awaitable)]`. `asyncio_live_tasks()` counts the Rust futures still alive.

use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// `await asyncio_ready(value)`: returns `value` (a Rust future that is ready at once).
#[pyfunction]
fn asyncio_ready(py: Python<'_>, value: u64) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move { Ok::<_, PyErr>(value) })
}

/// `await asyncio_sleep(ms, value)`: a tokio sleep of `ms` milliseconds, then `value`.
#[pyfunction]
fn asyncio_sleep(py: Python<'_>, ms: u64, value: u64) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, PyErr>(value)
    })
}

/// `await asyncio_spin(micros)`: busy CPU work of `micros` µs on a runtime thread.
#[pyfunction]
fn asyncio_spin(py: Python<'_>, micros: u64) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        Ok::<_, PyErr>(crate::spin_for(Duration::from_micros(micros)))
    })
}

/// `await asyncio_where(ms)`: `(ran_on_the_calling_thread, converted_on_the_calling_thread)`
/// for a future sleeping `ms`: where the future ran, and where its output was converted.
#[pyfunction]
fn asyncio_where(py: Python<'_>, ms: u64) -> PyResult<Bound<'_, PyAny>> {
    let caller = std::thread::current().id();
    gilkit::asyncio::future_into_py_with(
        py,
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::thread::current().id() == caller
        },
        move |py, ran_here| {
            let converted_here = std::thread::current().id() == caller;
            Ok((ran_here, converted_here)
                .into_pyobject(py)?
                .into_any()
                .unbind())
        },
    )
}

/// `await asyncio_forever()`: never completes (only cancellation ends it).
#[pyfunction]
fn asyncio_forever(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async {
        std::future::pending::<()>().await;
        Ok::<_, PyErr>(())
    })
}

/// `await asyncio_error(message)`: raises `ValueError(message)` after a yield to the runtime.
#[pyfunction]
fn asyncio_error(py: Python<'_>, message: String) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        tokio::task::yield_now().await;
        Err::<(), _>(PyValueError::new_err(message))
    })
}

/// `await asyncio_panic(message)`: the Rust future panics with `message`.
#[pyfunction]
fn asyncio_panic(py: Python<'_>, message: String) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        tokio::task::yield_now().await;
        if !message.is_empty() {
            panic!("{message}");
        }
        Ok::<_, PyErr>(())
    })
}

/// `await asyncio_call(callback, add)`: awaits `callback()` (a coroutine function returning an
/// int) from Rust, through `gilkit::asyncio::into_future`, and returns its result plus `add`.
#[pyfunction]
fn asyncio_call(py: Python<'_>, callback: Py<PyAny>, add: u64) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        tokio::task::yield_now().await; // on a runtime thread from here on
        let awaited = gilkit::try_attach(|py| {
            gilkit::asyncio::into_future::<u64>(callback.bind(py).call0()?.as_any())
        })
        .ok_or_else(|| PyRuntimeError::new_err("the interpreter is exiting"))??;
        Ok::<_, PyErr>(awaited.await? + add)
    })
}

/// `await asyncio_call_with_timeout(callback, ms)`: awaits `callback()` from Rust for at most `ms`
/// milliseconds; on timeout the `PyFuture` is dropped (which cancels the Python task) and `None`
/// is returned.
#[pyfunction]
fn asyncio_call_with_timeout(
    py: Python<'_>,
    callback: Py<PyAny>,
    ms: u64,
) -> PyResult<Bound<'_, PyAny>> {
    gilkit::asyncio::future_into_py(py, async move {
        tokio::task::yield_now().await;
        let awaited = gilkit::try_attach(|py| {
            gilkit::asyncio::into_future::<u64>(callback.bind(py).call0()?.as_any())
        })
        .ok_or_else(|| PyRuntimeError::new_err("the interpreter is exiting"))??;
        match tokio::time::timeout(Duration::from_millis(ms), awaited).await {
            Ok(result) => result.map(Some),
            Err(_elapsed) => Ok(None),
        }
    })
}

/// `await asyncio_await_here(awaitable)`: `into_future` called on the loop thread (outside any
/// `future_into_py` future), its `PyFuture` then awaited by a runtime task.
#[pyfunction]
fn asyncio_await_here<'py>(
    py: Python<'py>,
    awaitable: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let fut = gilkit::asyncio::into_future::<u64>(awaitable)?;
    gilkit::asyncio::future_into_py(py, fut)
}

/// Rust futures started by `future_into_py` that are still alive.
#[pyfunction]
fn asyncio_live_tasks() -> usize {
    gilkit::asyncio::live_tasks()
}

/// `await nogil_async_sleep(ms, value)`: written as an `async fn` with `#[nogil(awaitable)]`.
#[gilkit::nogil(awaitable)]
#[pyfunction]
async fn nogil_async_sleep(ms: u64, value: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    value
}

/// `await nogil_async_parse(text)`: `#[nogil(awaitable)]` with a `Result` return type.
#[gilkit::nogil(awaitable)]
#[pyfunction]
async fn nogil_async_parse(text: String) -> PyResult<i64> {
    tokio::task::yield_now().await;
    text.trim()
        .parse()
        .map_err(|e| PyValueError::new_err(format!("not an integer: {text:?} ({e})")))
}

/// The benchmark's baseline: the same functions through pyo3-async-runtimes' `future_into_py`.
#[cfg(feature = "bench-pyo3-async-runtimes")]
mod baseline {
    use std::time::Duration;

    use pyo3::prelude::*;

    /// `await par_ready(value)`.
    #[pyfunction]
    pub(super) fn par_ready(py: Python<'_>, value: u64) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(value) })
    }

    /// `await par_sleep(ms, value)`.
    #[pyfunction]
    pub(super) fn par_sleep(py: Python<'_>, ms: u64, value: u64) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(value)
        })
    }

    /// `await par_forever()`.
    #[pyfunction]
    pub(super) fn par_forever(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async {
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(feature = "bench-pyo3-async-runtimes")]
    {
        m.add_function(wrap_pyfunction!(baseline::par_ready, m)?)?;
        m.add_function(wrap_pyfunction!(baseline::par_sleep, m)?)?;
        m.add_function(wrap_pyfunction!(baseline::par_forever, m)?)?;
    }
    m.add_function(wrap_pyfunction!(asyncio_ready, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_sleep, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_spin, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_where, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_forever, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_error, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_panic, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_call, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_call_with_timeout, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_await_here, m)?)?;
    m.add_function(wrap_pyfunction!(asyncio_live_tasks, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_async_sleep, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_async_parse, m)?)?;
    Ok(())
}
