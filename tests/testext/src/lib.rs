//! `gilkit_testext`: a small extension module whose functions exercise gilkit from Python, for the
//! pytest suite in `tests/python/` and the benchmarks in `benches/`.
//!
//! Each function does one thing the tests need to observe: spin on the CPU with the GIL held or
//! released, wait interruptibly, block on a future, run inside another runtime, spawn tasks that
//! re-attach at exit. Feature areas add their own submodule and register it below.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

mod asyncio;
mod batch;
mod file;
mod nogil;
mod semaphore;
mod threads;

/// Busy CPU work for `micros` microseconds (a spin on the clock: no sleeping, no syscalls to
/// speak of), returning the number of iterations so it cannot be optimised away.
fn spin_for(duration: Duration) -> u64 {
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            iterations = black_box(iterations.wrapping_add(1));
        }
    }
    iterations
}

/// Spin `micros` µs with the GIL held throughout.
#[pyfunction]
fn spin_held(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `micros` µs with the GIL released by `gilkit::detach`.
#[pyfunction]
fn spin_released(py: Python<'_>, micros: u64) -> u64 {
    gilkit::detach(py, || spin_for(Duration::from_micros(micros)))
}

/// Spin `micros` µs with the GIL released by a bare `Python::detach` (benchmark baseline).
#[pyfunction]
fn spin_bare_detach(py: Python<'_>, micros: u64) -> u64 {
    py.detach(|| spin_for(Duration::from_micros(micros)))
}

/// Spin `micros` µs through `detach_interruptible`, checking the token every ~1 ms. Returns the
/// iterations, or raises what a signal handler raised.
#[pyfunction]
fn spin_interruptible(py: Python<'_>, micros: u64) -> PyResult<u64> {
    gilkit::detach_interruptible(py, |token| {
        let deadline = Instant::now() + Duration::from_micros(micros);
        let mut iterations = 0;
        while Instant::now() < deadline && !token.is_cancelled() {
            iterations += spin_for(Duration::from_micros(micros.min(1_000)));
        }
        iterations
    })
}

/// Sleep `secs` seconds in work that never looks at its token, through
/// `detach_interruptible_owned` with a grace period of `grace_ms`.
#[pyfunction]
fn sleep_uncooperative(py: Python<'_>, secs: f64, grace_ms: u64) -> PyResult<()> {
    gilkit::detach_interruptible_owned(py, Duration::from_millis(grace_ms), move |_token| {
        std::thread::sleep(Duration::from_secs_f64(secs));
    })
}

/// Run `steps` steps of `step_ms` each through `Interruptible` with a poll hook that calls
/// `callback(done_so_far)` with the GIL held. Returns the number of steps done.
#[pyfunction]
fn run_with_progress(
    py: Python<'_>,
    steps: usize,
    step_ms: u64,
    callback: Bound<'_, PyAny>,
) -> PyResult<usize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let done = AtomicUsize::new(0);
    let callback = callback.unbind();
    gilkit::Interruptible::new()
        .poll_interval(Duration::from_millis(10))
        .on_poll(|py| {
            callback.call1(py, (done.load(Ordering::Relaxed),))?;
            Ok(())
        })
        .run(py, |token| {
            for _ in 0..steps {
                if token.is_cancelled() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(step_ms));
                done.fetch_add(1, Ordering::Relaxed);
            }
        })?;
    Ok(done.load(Ordering::Relaxed))
}

/// Panic inside `detach_interruptible` (the panic must reach Python as PanicException).
#[pyfunction]
fn panic_interruptible(py: Python<'_>) -> PyResult<()> {
    gilkit::detach_interruptible(py, |_token| -> () { panic!("boom from the work") })
}

/// `block_on` a tokio sleep of `ms` milliseconds; returns the milliseconds actually slept.
#[pyfunction]
fn block_on_sleep(py: Python<'_>, ms: u64) -> PyResult<f64> {
    gilkit::block_on(py, async move {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        start.elapsed().as_secs_f64() * 1e3
    })
}

/// `block_on` a future that never completes (only Ctrl-C ends it).
#[pyfunction]
fn block_on_forever(py: Python<'_>) -> PyResult<()> {
    gilkit::block_on(py, std::future::pending::<()>())
}

/// Spin `micros` µs inside `block_on` (GIL-release proof for block_on).
#[pyfunction]
fn block_on_spin(py: Python<'_>, micros: u64) -> PyResult<u64> {
    gilkit::block_on(py, async move { spin_for(Duration::from_micros(micros)) })
}

/// From a thread that is inside a separate (user) tokio runtime, re-enter Python and call
/// `gilkit::block_on` there, as a Python callback invoked from async Rust would. Returns the result.
#[pyfunction]
fn block_on_inside_other_runtime(py: Python<'_>) -> PyResult<u64> {
    let user_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    py.detach(|| {
        user_runtime.block_on(async {
            // Inside a runtime now: tokio's own Handle::block_on would panic here.
            Python::attach(|py| {
                gilkit::block_on(py, async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    7u64
                })
            })
        })
    })
}

/// Spawn `count` tasks on the shared runtime that sleep `delay_ms`, then re-attach with
/// `gilkit::try_attach` and call `callback()`. Used to exit the interpreter with tasks in flight.
#[pyfunction]
fn spawn_attaching_tasks(count: usize, delay_ms: u64, callback: Py<PyAny>) {
    let handle = gilkit::runtime::handle();
    for _ in 0..count {
        let callback = Python::attach(|py| callback.clone_ref(py));
        handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            gilkit::try_attach(|py| {
                let _ = callback.call0(py);
            });
        });
        handle.spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            gilkit::try_attach(|_py| ());
        });
    }
}

#[pymodule]
fn gilkit_testext(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gilkit::python::add_runtime_functions(m)?;
    nogil::register(m)?;
    asyncio::register(m)?;
    batch::register(m)?;
    semaphore::register(m)?;
    threads::register(m)?;
    m.add_function(wrap_pyfunction!(spin_held, m)?)?;
    m.add_function(wrap_pyfunction!(spin_released, m)?)?;
    m.add_function(wrap_pyfunction!(spin_bare_detach, m)?)?;
    m.add_function(wrap_pyfunction!(spin_interruptible, m)?)?;
    m.add_function(wrap_pyfunction!(sleep_uncooperative, m)?)?;
    m.add_function(wrap_pyfunction!(run_with_progress, m)?)?;
    m.add_function(wrap_pyfunction!(panic_interruptible, m)?)?;
    m.add_function(wrap_pyfunction!(block_on_sleep, m)?)?;
    m.add_function(wrap_pyfunction!(block_on_forever, m)?)?;
    m.add_function(wrap_pyfunction!(block_on_spin, m)?)?;
    m.add_function(wrap_pyfunction!(block_on_inside_other_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(spawn_attaching_tasks, m)?)?;
    file::register(m)?;
    Ok(())
}
