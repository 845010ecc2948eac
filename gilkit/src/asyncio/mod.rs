//! Rust futures as asyncio awaitables, and Python awaitables as Rust futures.
//!
//! [`future_into_py`] runs a Rust future on gilkit's shared runtime and returns an `asyncio.Future`
//! of the running event loop that resolves to its output; [`into_future`] goes the other way, for
//! Rust code that awaits async Python (a callback, say). `#[gilkit::nogil(awaitable)]` on an
//! `async fn` writes the first for you. The guide chapter is [`guide::asyncio`](crate::guide::asyncio).
//!
//! # How it works (and where the GIL is)
//! 1. **Call** (loop thread, GIL held): find this loop's bridge (a socket pair registered once with
//!    `loop.add_reader`), `loop.create_future()`, `contextvars.copy_context()`, spawn the future on
//!    the shared runtime, add a done callback to the asyncio future. Microseconds.
//! 2. **Run** (runtime worker, GIL released): the future runs like any tokio task.
//! 3. **Finish** (runtime worker, *no GIL*): the output, still a Rust value, is pushed on the
//!    bridge's queue and, if the loop was not woken yet since its last drain, one byte is written to
//!    the socket. No runtime thread ever waits for the GIL: a burst of completions costs one wake-up.
//! 4. **Deliver** (loop thread, GIL held): the loop calls the bridge, which takes every queued output,
//!    converts each into a Python value and calls `set_result` (or `set_exception`).
//!
//! # Cancellation and shutdown
//! - Cancelling the awaitable (`task.cancel()`, `asyncio.wait_for` timing out, ...) aborts the tokio
//!   task: the Rust future is dropped at its next `.await`, which stops its I/O.
//! - An awaitable the program drops before it completes is collected, and that aborts its task too
//!   (the done callback, owned by the asyncio future, aborts in its destructor). [`live_tasks`]
//!   counts the tasks still alive.
//! - A Rust error becomes the awaitable's exception (through `Into<PyErr>`, on the loop thread); a
//!   panic becomes `pyo3_runtime.PanicException` with the panic's message, and prints nothing.
//! - When the loop closes (or is collected) with awaitables pending, their tasks are aborted and
//!   their results, if any arrive, dropped: nothing is raised on any thread. At interpreter exit the
//!   runtime is shut down (see [`crate::python`]); since finishing tasks never attach to Python,
//!   nothing can crash or print there either.
//! - In a forked child the parent's tasks do not exist: its awaitables stay pending forever and
//!   are never touched; new awaitables (on a new loop, e.g. `asyncio.run` in the child) work.
//!
//! Unix only (the bridge wakes the loop through `add_reader`; Windows' proactor loop lacks it).

mod bridge;
mod panic;
mod to_rust;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::runtime;
use bridge::{AbortOnDone, Bridge, Deliver, Message};

pub use to_rust::{PyFuture, into_future};

/// Runs `fut` on gilkit's shared runtime and returns an `asyncio.Future` of the running event loop
/// that resolves to its output, converted with [`IntoPyObject`]; an `Err` becomes the future's
/// exception.
///
/// Call it from code running in an event loop's thread (a `#[pyfunction]` called from a coroutine);
/// await the result there. See the [module doc](self) for what happens at each step, cancellation
/// and shutdown.
///
/// GIL: held to set up (microseconds); released while `fut` runs, which happens on the runtime's
/// threads (so `fut` must be `Send + 'static` and cannot hold Python values); held on the loop
/// thread, briefly, to convert and deliver the output. Never acquired by a runtime thread.
///
/// # Errors
/// `RuntimeError` when no event loop runs in this thread, when the loop cannot watch a file
/// descriptor, or when the runtime cannot start.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyo3::prelude::*;
///
/// /// `await sleep_then_double(n)`: sleeps 1 ms without blocking the event loop.
/// #[pyfunction]
/// fn sleep_then_double(py: Python<'_>, n: u64) -> PyResult<Bound<'_, PyAny>> {
///     gilkit::asyncio::future_into_py(py, async move {
///         tokio::time::sleep(Duration::from_millis(1)).await;
///         Ok::<_, PyErr>(n * 2)
///     })
/// }
/// # Python::attach(|py| {
/// #     let f = wrap_pyfunction!(sleep_then_double, py).unwrap();
/// #     let locals = pyo3::types::PyDict::new(py);
/// #     locals.set_item("f", f).unwrap();
/// #     py.run(c"import asyncio\nasync def main():\n    return await asyncio.gather(f(1), f(2))\nr = asyncio.run(main())", Some(&locals), None).unwrap();
/// #     assert_eq!(locals.get_item("r").unwrap().unwrap().extract::<Vec<u64>>().unwrap(), [2, 4]);
/// # });
/// ```
pub fn future_into_py<'py, F, T, E>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    E: Into<PyErr> + Send + 'static,
{
    future_into_py_with(py, fut, |py, output| {
        output.map_err(Into::into).and_then(|v| v.into_py_any(py))
    })
}

/// Like [`future_into_py`], with the conversion written by the caller: `convert` runs on the loop
/// thread with the GIL held and turns the future's output into the Python value (or exception).
///
/// Use it when the output is not [`IntoPyObject`] as it stands, for example to build a numpy array
/// or to map a Rust error type to one of your extension's exceptions.
///
/// GIL: as [`future_into_py`]; `convert` runs with it held, on the loop thread.
///
/// # Errors
/// As [`future_into_py`].
pub fn future_into_py_with<'py, F, C>(
    py: Python<'py>,
    fut: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    C: FnOnce(Python<'_>, F::Output) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let (event_loop, bridge) = bridge::running(py)?;
    let handle = runtime::try_handle().map_err(|err| PyRuntimeError::new_err(err.to_string()))?;
    crate::python::ensure_exit_hook(py);
    let future = event_loop.call_method0("create_future")?;
    let context = copy_context(py)?;
    let key = bridge.next_key();
    let current = Current {
        bridge: Arc::clone(&bridge),
        key,
    };
    let live = LiveTask::new();
    let task = handle.spawn(async move {
        let _live = live;
        let bridge = Arc::clone(&current.bridge);
        let scoped = CURRENT.scope(current, fut);
        let outcome = panic::CatchUnwind(Box::pin(scoped)).await;
        let outcome = outcome.map(|output| -> Deliver { Box::new(move |py| convert(py, output)) });
        bridge.send(Message::Done { key, outcome });
    });
    bridge.register_awaitable(key, &future, task.abort_handle(), context);
    let on_done = AbortOnDone::new(Arc::clone(&bridge), key);
    if let Err(err) = future.call_method1("add_done_callback", (on_done,)) {
        bridge.forget(key);
        return Err(err);
    }
    Ok(future)
}

/// Rust futures started by [`future_into_py`] in this process that are still alive: not finished
/// and not dropped (cancelled). Zero when nothing is in flight: a way for tests and monitoring to
/// see that cancelled or abandoned awaitables released their Rust side.
///
/// Does not touch the GIL. A forked child starts from zero.
#[must_use]
pub fn live_tasks() -> usize {
    sync_generation();
    LIVE.load(Ordering::Relaxed)
}

/// The caller's `contextvars.copy_context()`.
fn copy_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(COPY_CONTEXT
        .import(py, "contextvars", "copy_context")?
        .call0()?
        .unbind())
}

/// The awaitable a runtime task feeds, for [`into_future`] called inside it.
#[derive(Clone)]
struct Current {
    bridge: Arc<Bridge>,
    key: u64,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// Inside a future given to [`future_into_py`]: its bridge and key.
fn current() -> Option<(Arc<Bridge>, u64)> {
    CURRENT.try_with(|c| (Arc::clone(&c.bridge), c.key)).ok()
}

// The live-task counter. `LIVE` is a statistic (`Relaxed`). In a forked child the parent's tasks
// never finish, so the count restarts at zero: the first use in a new fork generation resets it
// under `RESET`, then publishes the generation with `Release`; a reader that sees the generation
// (`Acquire`) sees the reset, and only then counts.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIVE_GENERATION: AtomicU64 = AtomicU64::new(0);
static RESET: Mutex<()> = Mutex::new(());

fn sync_generation() {
    let generation = crate::process::generation();
    if LIVE_GENERATION.load(Ordering::Acquire) != generation {
        let _reset = RESET.lock();
        if LIVE_GENERATION.load(Ordering::Relaxed) != generation {
            LIVE.store(0, Ordering::Relaxed);
            LIVE_GENERATION.store(generation, Ordering::Release);
        }
    }
}

/// Counts one task in [`LIVE`] from creation until dropped.
struct LiveTask;

impl LiveTask {
    fn new() -> Self {
        sync_generation();
        LIVE.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}
