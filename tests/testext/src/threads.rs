//! Drivers that call back into Python from gilkit's own threads (a pool helper, a runtime worker, a
//! runtime blocking thread), attaching once per call as any extension's callback does, so the
//! tests can see which thread state each call ran in (`threading.local`, `threading.get_ident()`),
//! and the benchmark can time one attach/detach round trip on each kind of thread.

use std::time::{Duration, Instant};

use gilkit::Interruptible;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Calls `callback()` `calls` times in a row, attaching for each call: the pattern of a worker
/// that goes back into Python once per item. Returns the results (an exception ends the run).
fn call_each_attaching(callback: &Py<PyAny>, calls: usize) -> PyResult<Vec<Py<PyAny>>> {
    (0..calls)
        .map(|_| Python::attach(|py| callback.call0(py)))
        .collect()
}

/// Runs `callback()` `calls` times on one helper thread of gilkit's pool (attaching for each call;
/// the calling thread waits with the GIL released). Returns the results.
#[pyfunction]
fn pool_worker_calls(
    py: Python<'_>,
    callback: Py<PyAny>,
    calls: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    // A poll hook makes `run` hand the work to the pool on any calling thread, not only the main one.
    Interruptible::new()
        .on_poll(|_| Ok(()))
        .run(py, |_| call_each_attaching(&callback, calls))?
}

/// Runs `callback()` `calls` times in one task on a worker thread of gilkit's tokio runtime (no
/// `.await` between the calls, so they all run on the same worker). Returns the results.
#[pyfunction]
fn runtime_worker_calls(
    py: Python<'_>,
    callback: Py<PyAny>,
    calls: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    let task =
        gilkit::runtime::handle().spawn(async move { call_each_attaching(&callback, calls) });
    join(py, task)
}

/// Like [`runtime_worker_calls`], on a thread of the runtime's blocking pool (`spawn_blocking`).
#[pyfunction]
fn runtime_blocking_calls(
    py: Python<'_>,
    callback: Py<PyAny>,
    calls: usize,
) -> PyResult<Vec<Py<PyAny>>> {
    let task =
        gilkit::runtime::handle().spawn_blocking(move || call_each_attaching(&callback, calls));
    join(py, task)
}

fn join<T: Send>(py: Python<'_>, task: tokio::task::JoinHandle<PyResult<T>>) -> PyResult<T> {
    py.detach(|| gilkit::runtime::handle().block_on(task))
        .map_err(|err| PyRuntimeError::new_err(format!("the runtime task failed: {err}")))?
}

/// Stops gilkit's shared runtime (GIL released while its threads end); whether it was running.
#[pyfunction]
fn shutdown_runtime(py: Python<'_>) -> bool {
    py.detach(|| gilkit::runtime::shutdown(Duration::from_secs(10)))
}

/// Times attach/detach round trips (`Python::attach` with an empty body, or one that calls
/// `callback()` when given) on each of: a plain Rust thread, as PyO3 leaves it (a new Python
/// thread state per attach), and a helper of gilkit's pool (one kept state). The two alternate in blocks of `per_block` attaches, so
/// the machine's load drifts over both alike. Returns `(plain_ns, pool_ns)`: per block, the mean
/// cost of one attach in nanoseconds.
#[pyfunction]
#[pyo3(signature = (blocks, per_block, callback=None))]
fn attach_round_trip_ns(
    py: Python<'_>,
    blocks: usize,
    per_block: u32,
    callback: Option<Py<PyAny>>,
) -> PyResult<(Vec<f64>, Vec<f64>)> {
    let callback = &callback;
    let time_block = move || {
        let start = Instant::now();
        for _ in 0..per_block {
            Python::attach(|py| {
                if let Some(callback) = callback {
                    // A failing callback is the caller's bug; the timing goes on regardless.
                    let _ = callback.call0(py);
                }
                std::hint::black_box(py);
            });
        }
        start.elapsed().as_nanos() as f64 / f64::from(per_block)
    };
    let mut plain = Vec::with_capacity(blocks);
    let mut pool = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        plain.push(py.detach(|| std::thread::scope(|s| s.spawn(time_block).join().unwrap())));
        // A long poll interval: the waiting caller does not compete for the GIL meanwhile.
        pool.push(
            Interruptible::new()
                .on_poll(|_| Ok(()))
                .poll_interval(Duration::from_secs(1))
                .run(py, |_| time_block())?,
        );
    }
    Ok((plain, pool))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pool_worker_calls, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_worker_calls, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_blocking_calls, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(attach_round_trip_ns, m)?)?;
    Ok(())
}
