//! Behaviour of `GilBatcher`: answers routed to their requests under load, a failing batch fails only
//! its own requests, cancellation while queued, panics, the queue bound, the batch-size histogram.
//!
//! Most tests control the batch composition with a gate: a request carrying `GATE` makes the batch
//! function wait (detached) until the test opens the gate, so the test can queue requests in a known
//! order behind it.

mod sem_support;
use sem_support::{block_on_without_tokio, until};

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gilkit::GilBatcher;
use gilkit::batcher::{BatchError, BatcherConfig};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

const GATE: i64 = -1;
const POISON: i64 = -2;

fn config(max_batch: usize, max_queue: Option<usize>) -> BatcherConfig {
    BatcherConfig {
        max_batch,
        max_wait: Duration::from_millis(5),
        max_queue,
    }
}

type Seen = Arc<Mutex<Vec<Vec<i64>>>>;

/// A batcher whose Python model answers `x * 10`, raises `KeyError` for a batch holding `POISON`,
/// and waits for the gate on `GATE`. Records every batch it is called with.
fn gated_batcher(cfg: BatcherConfig) -> (GilBatcher<i64, i64>, mpsc::Sender<()>, Seen) {
    Python::initialize();
    let model = Python::attach(|py| {
        py.eval(
            c"lambda xs: [x * 10 for x in xs] if -2 not in xs else {}['poisoned batch']",
            None,
            None,
        )
        .unwrap()
        .unbind()
    });
    let (open, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate); // `detach` needs a `Sync` receiver
    let seen: Seen = Arc::default();
    let seen2 = Arc::clone(&seen);
    let batcher = GilBatcher::new(cfg, move |py, xs: Vec<i64>| {
        seen2.lock().unwrap().push(xs.clone());
        if xs.contains(&GATE) {
            py.detach(|| gate.lock().unwrap().recv().unwrap());
        }
        model.call1(py, (xs,))?.extract(py)
    });
    (batcher, open, seen)
}

fn spawn_submit(
    b: &GilBatcher<i64, i64>,
    x: i64,
) -> tokio::task::JoinHandle<Result<i64, BatchError>> {
    let b = b.clone();
    tokio::spawn(async move { b.submit(x).await })
}

/// Occupies the worker with a gate batch, then queues `xs` in this exact order behind it.
async fn queue_behind_gate(
    b: &GilBatcher<i64, i64>,
    seen: &Seen,
    xs: &[i64],
) -> (
    tokio::task::JoinHandle<Result<i64, BatchError>>,
    Vec<tokio::task::JoinHandle<Result<i64, BatchError>>>,
) {
    let gate = spawn_submit(b, GATE);
    until("the gate batch starts", || !seen.lock().unwrap().is_empty()).await;
    let mut tasks = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        tasks.push(spawn_submit(b, x));
        until("the request queues", || b.stats().queue_len == i + 1).await;
    }
    (gate, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_each_get_their_own_answer() {
    let (batcher, _open, _seen) = gated_batcher(config(64, Some(2048)));
    let tasks: Vec<_> = (0..1000).map(|x| (x, spawn_submit(&batcher, x))).collect();
    for (x, t) in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            x * 10,
            "request {x} got another request's answer"
        );
    }
    let stats = batcher.stats();
    assert_eq!(
        (stats.submitted, stats.succeeded, stats.failed),
        (1000, 1000, 0)
    );
    let items: u64 = (1..).zip(&stats.batch_sizes).map(|(n, c)| n * c).sum();
    assert_eq!(items, 1000, "the histogram accounts for every request");
    assert_eq!(stats.batch_sizes.iter().sum::<u64>(), stats.batches);
    assert!(
        stats.batches < 1000,
        "requests were batched ({} batches)",
        stats.batches
    );
    assert_eq!(stats.queue_wait.count, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_fails_exactly_the_requests_of_its_batch() {
    let (batcher, open, seen) = gated_batcher(config(4, None));
    let (gate, tasks) = queue_behind_gate(&batcher, &seen, &[1, POISON, 2, 3, 4, 5, 6, 7]).await;
    open.send(()).unwrap();
    assert_eq!(gate.await.unwrap().unwrap(), GATE * 10);
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    // Batches of 4 in queue order: [1, POISON, 2, 3] fails, [4, 5, 6, 7] succeeds.
    assert_eq!(
        seen.lock().unwrap()[1..],
        [vec![1, POISON, 2, 3], vec![4, 5, 6, 7]]
    );
    let errors: Vec<PyErr> = answers
        .drain(..4)
        .map(|a| match a {
            Err(BatchError::Python(e)) => e,
            other => panic!("expected the batch's exception, got {other:?}"),
        })
        .collect();
    Python::attach(|py| {
        for e in &errors {
            assert!(e.is_instance_of::<PyKeyError>(py));
            // Every request of the batch holds the very same exception object.
            assert!(e.value(py).is(errors[0].value(py)));
        }
    });
    let rest: Vec<i64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(rest, [40, 50, 60, 70]);
    let stats = batcher.stats();
    assert_eq!((stats.succeeded, stats.failed), (5, 4));
    assert_eq!(stats.batch_sizes[..4], [1, 0, 0, 2]);
    assert_eq!(stats.mean_batch_size, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_queued_never_reaches_the_model() {
    let (batcher, open, seen) = gated_batcher(config(8, None));
    let (gate, mut tasks) = queue_behind_gate(&batcher, &seen, &[1, 2, 3]).await;
    let cancelled = tasks.remove(1);
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    open.send(()).unwrap();
    gate.await.unwrap().unwrap();
    assert_eq!(tasks.remove(0).await.unwrap().unwrap(), 10);
    assert_eq!(tasks.remove(0).await.unwrap().unwrap(), 30);
    assert_eq!(seen.lock().unwrap()[1..], [vec![1, 3]]);
    assert_eq!(batcher.stats().cancelled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_with_its_length() {
    let (batcher, open, seen) = gated_batcher(config(8, Some(2)));
    let (gate, tasks) = queue_behind_gate(&batcher, &seen, &[1, 2]).await;
    let err = batcher.submit(3).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::Busy {
                queue_len: 2,
                max_queue: 2
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.queue_len(), Some(2));
    assert_eq!(batcher.stats().rejected_busy, 1);
    open.send(()).unwrap();
    gate.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(batcher.submit(3).await.unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_its_batch_and_the_worker_carries_on() {
    Python::initialize();
    let batcher = GilBatcher::new(config(8, None), |_py, xs: Vec<i64>| {
        if xs.contains(&POISON) {
            panic!("model panicked on {xs:?}");
        }
        Ok(xs)
    });
    let err = batcher.submit(POISON).await.unwrap_err();
    assert!(
        matches!(&err, BatchError::Panicked(m) if m.contains("model panicked")),
        "{err:?}"
    );
    assert_eq!(batcher.submit(4).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_the_wrong_length_is_an_error_not_a_misroute() {
    Python::initialize();
    let batcher = GilBatcher::new(config(8, None), |_py, mut xs: Vec<i64>| {
        xs.pop();
        Ok(xs)
    });
    let err = batcher.submit(1).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::LengthMismatch {
                expected: 1,
                got: 0
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("exactly one result per request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_stops_after_the_last_handle_is_dropped() {
    Python::initialize();
    let token = Arc::new(());
    let held_by_worker = Arc::clone(&token);
    let batcher = GilBatcher::new(config(8, None), move |_py, xs: Vec<i64>| {
        let _ = &held_by_worker;
        Ok(xs)
    });
    let clone = batcher.clone();
    assert_eq!(clone.submit(1).await.unwrap(), 1);
    drop(batcher);
    assert_eq!(
        clone.submit(2).await.unwrap(),
        2,
        "a clone keeps the worker alive"
    );
    drop(clone);
    // The worker thread returns and drops the batch function with what it captured.
    until("the worker drops the batch function", || {
        Arc::strong_count(&token) == 1
    })
    .await;
}

#[test]
fn submit_works_from_an_executor_that_is_not_tokio() {
    Python::initialize();
    let batcher = GilBatcher::new(config(8, None), |_py, xs: Vec<i64>| Ok(xs));
    assert_eq!(block_on_without_tokio(batcher.submit(5)).unwrap(), 5);
}

#[test]
fn stats_convert_to_a_python_dict_with_the_histogram() {
    Python::initialize();
    let batcher = GilBatcher::new(config(4, Some(16)), |_py, xs: Vec<i64>| Ok(xs));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(batcher.submit(1))
        .unwrap();
    Python::attach(|py| {
        let d = batcher.stats().into_pyobject(py).unwrap();
        let sizes = d.get_item("batch_sizes").unwrap().unwrap();
        assert_eq!(sizes.get_item(1).unwrap().extract::<u64>().unwrap(), 1);
        assert_eq!(
            d.get_item("batches")
                .unwrap()
                .unwrap()
                .extract::<u64>()
                .unwrap(),
            1
        );
        assert_eq!(
            d.get_item("max_queue")
                .unwrap()
                .unwrap()
                .extract::<u64>()
                .unwrap(),
            16
        );
        let queue_wait = d.get_item("queue_wait").unwrap().unwrap();
        assert_eq!(
            queue_wait
                .get_item("count")
                .unwrap()
                .extract::<u64>()
                .unwrap(),
            1
        );
    });
}

#[test]
fn in_a_forked_child_submit_fails_at_once_instead_of_waiting_forever() {
    Python::initialize();
    let batcher = GilBatcher::new(config(8, None), |_py, xs: Vec<i64>| Ok(xs));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(batcher.submit(1)).unwrap(), 1);
    // SAFETY: the child only runs Rust code that allocates (glibc's allocator is fork-safe) and
    // exits with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Never unwind into the copy of the test harness: any panic is exit code 3.
        let code = std::panic::catch_unwind(|| {
            let child_runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            // Bounded, so a regression fails (exit code 2) instead of hanging the parent's waitpid.
            let outcome = child_runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), batcher.submit(2)).await
            });
            match outcome {
                Ok(Err(BatchError::Forked)) => 0,
                Ok(_) => 1,
                Err(_) => 2,
            }
        })
        .unwrap_or(3);
        // SAFETY: `_exit` ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    // The parent's batcher is unaffected.
    assert_eq!(runtime.block_on(batcher.submit(3)).unwrap(), 3);
}

#[test]
fn configurations_that_cannot_work_are_errors_not_panics() {
    let no_batch = BatcherConfig {
        max_batch: 0,
        ..BatcherConfig::default()
    };
    let err = GilBatcher::<u32, u32>::try_new(no_batch, |_py, b| Ok(b)).unwrap_err();
    assert!(err.to_string().contains("max_batch"), "{err}");
    let no_queue = BatcherConfig {
        max_queue: Some(0),
        ..BatcherConfig::default()
    };
    let err = GilBatcher::<u32, u32>::try_new(no_queue, |_py, b| Ok(b)).unwrap_err();
    assert!(err.to_string().contains("max_queue"), "{err}");
    pyo3::Python::initialize();
    pyo3::Python::attach(|py| {
        let py_err = pyo3::PyErr::from(err);
        assert!(py_err.is_instance_of::<pyo3::exceptions::PyValueError>(py));
    });
}
