//! One-line Python exposure of gilkit's runtime, and the interpreter exit hook.
//!
//! `add_runtime_functions(m)` in an extension's `#[pymodule]` gives Python
//! `configure_runtime(...)` and `runtime_info()`. The first use of the runtime from Python (or this
//! call) registers an `atexit` hook that marks the interpreter as exiting, so
//! [`try_attach`](crate::try_attach) stops attaching from gilkit's threads, and then shuts the runtime
//! down with the GIL released, so tasks still running at exit never crash the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCFunction;

use crate::runtime::{self, ConfigureError, RuntimeConfig};

/// How long the exit hook waits for runtime threads before letting the interpreter finish.
pub const EXIT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Adds `configure_runtime(*, worker_threads=None, max_blocking_threads=None,
/// thread_stack_size=None, thread_name=None)` and `runtime_info() -> dict` to module `m`, and
/// registers the exit hook.
///
/// GIL: holds it (it is module initialisation).
///
/// # Errors
/// If the functions cannot be added to the module.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// #[pymodule]
/// fn my_extension(m: &Bound<'_, PyModule>) -> PyResult<()> {
///     gilkit::python::add_runtime_functions(m)
/// }
/// # fn main() {}
/// ```
pub fn add_runtime_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(configure_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_info, m)?)?;
    ensure_exit_hook(m.py());
    Ok(())
}

/// Configure gilkit's shared runtime; call before anything uses it.
///
/// Raises RuntimeError if the runtime already runs, ValueError for a zero value.
#[pyfunction]
#[pyo3(signature = (*, worker_threads=None, max_blocking_threads=None, thread_stack_size=None, thread_name=None))]
fn configure_runtime(
    worker_threads: Option<usize>,
    max_blocking_threads: Option<usize>,
    thread_stack_size: Option<usize>,
    thread_name: Option<String>,
) -> PyResult<()> {
    runtime::configure(RuntimeConfig {
        worker_threads,
        max_blocking_threads,
        thread_stack_size,
        thread_name,
    })
    .map_err(configure_error_to_py)
}

/// Measured facts about gilkit's shared runtime, as a dict ([`runtime::RuntimeInfo`]'s fields).
#[pyfunction]
fn runtime_info() -> runtime::RuntimeInfo {
    runtime::info()
}

/// Converts a [`ConfigureError`] to the Python exception a user expects.
pub fn configure_error_to_py(err: ConfigureError) -> PyErr {
    if err.is_already_started() {
        PyRuntimeError::new_err(err.to_string())
    } else {
        PyValueError::new_err(err.to_string())
    }
}

static EXIT_HOOK: AtomicBool = AtomicBool::new(false);

/// Registers the `atexit` hook once per process (a forked child inherits the registration).
pub(crate) fn ensure_exit_hook(py: Python<'_>) {
    if EXIT_HOOK.swap(true, Ordering::AcqRel) {
        return;
    }
    let registered = PyCFunction::new_closure(
        py,
        Some(c"_gilkit_exit_hook"),
        Some(c"Stops gilkit's runtime at interpreter exit."),
        |args, _kwargs| -> PyResult<()> {
            runtime::mark_exiting();
            args.py().detach(|| {
                // No future may be polled against a runtime that is shutting down (tokio panics).
                crate::poll_gate::close_gate(EXIT_SHUTDOWN_TIMEOUT);
                runtime::shutdown(EXIT_SHUTDOWN_TIMEOUT)
            });
            Ok(())
        },
    )
    .and_then(|hook| py.import("atexit")?.call_method1("register", (hook,)));
    if let Err(err) = registered {
        // Without the hook, exit is merely less graceful; say so instead of failing the caller.
        EXIT_HOOK.store(false, Ordering::Release);
        err.write_unraisable(py, None);
    }
}
