//! Python-facing drivers for `GilSemaphore` and `GilBatcher`: each runs many concurrent tokio tasks
//! on gilkit's shared runtime (the calling thread waits in `gilkit::block_on`, GIL released) and
//! hands back every answer, every exception object and the statistics `dict`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gilkit::batcher::{BatchError, BatcherConfig, BatcherStats};
use gilkit::semaphore::{RunError, SemaphoreStats};
use gilkit::{GilBatcher, GilSemaphore};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

/// `(results, errors)`: position `i` holds the value or the exception object of request `i`.
type Answers = (Vec<Option<Py<PyAny>>>, Vec<Option<Py<PyAny>>>);

/// `(results, errors, stats)` as returned to Python.
type Report<S> = (Vec<Option<Py<PyAny>>>, Vec<Option<Py<PyAny>>>, S);

fn split_answers<E: Into<PyErr>>(py: Python<'_>, answers: Vec<Result<Py<PyAny>, E>>) -> Answers {
    answers
        .into_iter()
        .map(|a| match a {
            Ok(value) => (Some(value), None),
            Err(e) => (None, Some(e.into().into_value(py).into_any())),
        })
        .unzip()
}

/// Starts `call(input)` for every input, each in its own task on gilkit's shared runtime, all at
/// once, and waits for them with the GIL released; the answers come back in input order (a task
/// that panicked as `panicked(message)`).
fn call_all_at_once<I, E, Fut>(
    py: Python<'_>,
    inputs: Vec<I>,
    call: impl Fn(I) -> Fut + Send,
    panicked: impl Fn(String) -> E + Send,
) -> PyResult<Vec<Result<Py<PyAny>, E>>>
where
    I: Send,
    E: Send + 'static,
    Fut: Future<Output = Result<Py<PyAny>, E>> + Send + 'static,
{
    gilkit::block_on(py, async move {
        let runtime = gilkit::runtime::handle();
        let tasks: Vec<_> = inputs.into_iter().map(|i| runtime.spawn(call(i))).collect();
        let mut answers = Vec::with_capacity(tasks.len());
        for t in tasks {
            answers.push(t.await.unwrap_or_else(|e| Err(panicked(e.to_string()))));
        }
        answers
    })
}

/// Calls every callable in `callables` (no arguments) from its own tokio task through one
/// `GilSemaphore(permits, max_queue)`, all at once. Returns `(results, errors, stats)`.
#[pyfunction]
#[pyo3(signature = (callables, permits = 2, max_queue = None))]
fn semaphore_call_all(
    py: Python<'_>,
    callables: Vec<Py<PyAny>>,
    permits: usize,
    max_queue: Option<usize>,
) -> PyResult<Report<SemaphoreStats>> {
    let sem = GilSemaphore::builder()
        .permits(permits)
        .max_queue(max_queue)
        .try_build()?;
    let answers = call_all_at_once(
        py,
        callables,
        |f| {
            let sem = sem.clone();
            async move { sem.run(move |py| f.call0(py)).await }
        },
        RunError::Panicked,
    )?;
    let (results, errors) = split_answers(py, answers);
    Ok((results, errors, sem.stats()))
}

/// Submits every item of `items` from its own tokio task to one `GilBatcher` whose batch function
/// is `model(list_of_items) -> list_of_results`, all at once. Returns `(results, errors, stats)`.
#[pyfunction]
#[pyo3(signature = (model, items, max_batch = 64, max_wait_ms = 2.0, max_queue = None))]
fn batcher_call_all(
    py: Python<'_>,
    model: Py<PyAny>,
    items: Vec<Py<PyAny>>,
    max_batch: usize,
    max_wait_ms: f64,
    max_queue: Option<usize>,
) -> PyResult<Report<BatcherStats>> {
    let config = BatcherConfig {
        max_batch,
        max_wait: Duration::from_secs_f64(max_wait_ms / 1e3),
        max_queue,
    };
    let batcher = GilBatcher::try_new(config, move |py, batch: Vec<Py<PyAny>>| {
        model.call1(py, (batch,))?.extract::<Vec<Py<PyAny>>>(py)
    })?;
    let answers = call_all_at_once(
        py,
        items,
        |item| {
            let batcher = batcher.clone();
            async move { batcher.submit(item).await }
        },
        BatchError::Panicked,
    )?;
    let (results, errors) = split_answers(py, answers);
    Ok((results, errors, batcher.stats()))
}

/// Forces the akidb lock-order inversion `rounds` times: this thread holds the GIL and wants a
/// mutex that a helper thread holds while it waits for the GIL. With `naive=False` the mutex is
/// taken with `lock_py_attached` (GIL released while blocked); with `naive=True` with a plain
/// `lock()`, which hangs forever: run that only in a subprocess you can kill. Returns the rounds
/// the helper completed.
#[pyfunction]
#[pyo3(signature = (rounds, naive = false))]
fn lock_inversion_rounds(py: Python<'_>, rounds: usize, naive: bool) -> PyResult<u64> {
    let shared = Arc::new(Mutex::new(0u64));
    let (go_tx, go_rx) = std::sync::mpsc::sync_channel::<()>(0);
    let (locked_tx, locked_rx) = std::sync::mpsc::sync_channel::<()>(0);
    let helper_state = Arc::clone(&shared);
    let helper = std::thread::spawn(move || {
        while go_rx.recv().is_ok() {
            let mut guard = helper_state.lock().unwrap();
            locked_tx.send(()).unwrap();
            // Wants the GIL while holding the mutex, as a callback or a decref would.
            gilkit::try_attach(|py| py.None());
            *guard += 1;
        }
    });
    for _ in 0..rounds {
        go_tx.send(()).unwrap();
        locked_rx.recv().unwrap();
        let guard = if naive {
            shared.lock()
        } else {
            shared.lock_py_attached(py)
        };
        drop(guard.unwrap());
    }
    drop(go_tx);
    py.detach(|| helper.join())
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the helper thread panicked"))?;
    Ok(*shared.lock_py_attached(py).unwrap())
}

/// Waits for the only permit of a `GilSemaphore` while another thread holds it for `hold_ms`
/// (without the GIL). With `naive=False` through `acquire_py_attached` (GIL released while
/// waiting); with `naive=True` by spinning on `try_acquire` while attached (the control: GIL held
/// throughout). Returns the seconds waited.
#[pyfunction]
#[pyo3(signature = (hold_ms, naive = false))]
fn wait_for_held_permit(py: Python<'_>, hold_ms: u64, naive: bool) -> PyResult<f64> {
    let sem = GilSemaphore::new(1);
    let held = sem.try_acquire_owned()?;
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(hold_ms));
        drop(held);
    });
    let start = std::time::Instant::now();
    let permit = if naive {
        loop {
            if let Ok(p) = sem.try_acquire_owned() {
                break p;
            }
            std::hint::spin_loop();
        }
    } else {
        sem.acquire_py_attached(py)?
    };
    let waited = start.elapsed().as_secs_f64();
    drop(permit);
    // Joined attached on purpose (the holder never needs the GIL and is already done): detaching
    // here would let the probe's ticker run and spoil the naive control.
    holder
        .join()
        .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the holder thread panicked"))?;
    Ok(waited)
}

/// Registers this module's functions on the test extension.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(semaphore_call_all, m)?)?;
    m.add_function(wrap_pyfunction!(batcher_call_all, m)?)?;
    m.add_function(wrap_pyfunction!(lock_inversion_rounds, m)?)?;
    m.add_function(wrap_pyfunction!(wait_for_held_permit, m)?)?;
    Ok(())
}
