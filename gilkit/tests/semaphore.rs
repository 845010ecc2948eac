//! Behaviour of `GilSemaphore`: answers under load, FIFO order, cancellation, the queue bound,
//! timeouts, Python exceptions and panics, statistics.

mod sem_support;
use sem_support::{block_on_without_tokio, until};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gilkit::semaphore::{AcquireError, GilPermit, RunError, TryAcquireError};
use gilkit::{GilBatcher, GilSemaphore, OwnedGilPermit};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn python_fn(src: &std::ffi::CStr) -> Py<PyAny> {
    Python::initialize();
    Python::attach(|py| py.eval(src, None, None).unwrap().unbind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_runs_are_all_answered_by_their_own_call() {
    let f = Arc::new(python_fn(c"lambda i: i * i + 1"));
    let sem = GilSemaphore::builder().permits(2).build();
    let tasks: Vec<_> = (0..1000u64)
        .map(|i| {
            let (sem, f) = (sem.clone(), Arc::clone(&f));
            tokio::spawn(async move {
                (
                    i,
                    sem.run(move |py| f.call1(py, (i,))?.extract::<u64>(py))
                        .await,
                )
            })
        })
        .collect();
    for t in tasks {
        let (i, answer) = t.await.unwrap();
        assert_eq!(
            answer.unwrap(),
            i * i + 1,
            "request {i} got another request's answer"
        );
    }
    let stats = sem.stats();
    assert_eq!(stats.total_acquired, 1000);
    assert_eq!(stats.python_calls, 1000);
    assert_eq!((stats.in_use, stats.waiting), (0, 0));
    assert_eq!(stats.wait.count, 1000);
    assert!(stats.wait.p50 <= stats.wait.p99 && stats.wait.p99 <= stats.wait.max);
    assert!(stats.python_time > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_are_handed_out_first_come_first_served() {
    let sem = GilSemaphore::new(1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = sem.acquire_owned().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (sem2, order2) = (sem.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let _permit = sem2.acquire().await.unwrap();
            order2.lock().unwrap().push(i);
        }));
        // Each task is in line before the next one starts.
        until("the task queues", || sem.stats().waiting == i + 1).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_while_queued_leaves_no_permit_taken() {
    let sem = GilSemaphore::new(1);
    let held = sem.acquire_owned().await.unwrap();
    let waiter = tokio::spawn({
        let sem = sem.clone();
        async move { sem.acquire_owned().await.map(drop) }
    });
    until("the waiter queues", || sem.stats().waiting == 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(sem.stats().waiting, 0);
    drop(held);
    assert_eq!(sem.available_permits(), 1);
    // And a waiter cancelled *while being handed a permit* gives it on (tokio's guarantee): the
    // permit comes back after many racing cancellations.
    for _ in 0..200 {
        let held = sem.acquire_owned().await.unwrap();
        let racer = tokio::spawn({
            let sem = sem.clone();
            async move { sem.acquire_owned().await.map(drop) }
        });
        until("the racer queues", || sem.stats().waiting == 1).await;
        drop(held);
        racer.abort();
        let _ = racer.await;
        until("the permit comes back", || sem.available_permits() == 1).await;
    }
    assert_eq!(sem.stats().in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_with_its_length_and_no_bound_never_does() {
    let sem = GilSemaphore::builder()
        .permits(1)
        .max_queue(Some(2))
        .build();
    let held = sem.acquire_owned().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let sem = sem.clone();
            tokio::spawn(async move { sem.acquire_owned().await.map(drop) })
        })
        .collect();
    until("two waiters queue", || sem.stats().waiting == 2).await;
    let err = sem.acquire().await.unwrap_err();
    assert_eq!(
        err,
        AcquireError::Busy {
            queue_len: 2,
            max_queue: 2
        }
    );
    assert!(err.is_busy() && err.queue_len() == Some(2));
    assert!(err.to_string().contains("2 tasks already waiting"), "{err}");
    assert_eq!(sem.stats().rejected_busy, 1);
    drop(held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    // Past the bound the queue drains and accepts again.
    drop(sem.acquire().await.unwrap());

    let unbounded = GilSemaphore::new(1);
    let held = unbounded.acquire_owned().await.unwrap();
    let waiters: Vec<_> = (0..300)
        .map(|_| {
            let sem = unbounded.clone();
            tokio::spawn(async move { sem.acquire_owned().await.map(drop) })
        })
        .collect();
    until("300 waiters queue", || unbounded.stats().waiting == 300).await;
    drop(held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(unbounded.stats().rejected_busy, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_never_jumps_the_queue() {
    let sem = GilSemaphore::new(1);
    let held = sem.try_acquire_owned().unwrap();
    assert_eq!(
        sem.try_acquire_owned().unwrap_err(),
        TryAcquireError::NoPermits
    );
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let waiter = tokio::spawn({
        let sem = sem.clone();
        async move {
            let _p = sem.acquire().await.unwrap();
            wait.await.unwrap();
        }
    });
    until("the waiter queues", || sem.stats().waiting == 1).await;
    drop(held);
    // The released permit went to the waiter, not to us.
    assert!(sem.try_acquire_owned().unwrap_err().is_no_permits());
    go.send(()).unwrap();
    waiter.await.unwrap();
    assert!(sem.try_acquire_owned().is_ok());
}

#[test]
fn try_acquire_borrows_a_permit_and_gives_it_back_on_drop() {
    let sem = GilSemaphore::new(1);
    let permit = sem.try_acquire().unwrap();
    assert!(sem.try_acquire().unwrap_err().is_no_permits());
    assert_eq!(sem.stats().in_use, 1);
    drop(permit);
    assert_eq!(sem.stats().in_use, 0);
    sem.close();
    assert!(sem.try_acquire().unwrap_err().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_gives_up_and_leaves_the_queue() {
    let sem = GilSemaphore::new(1);
    let held = sem.acquire_owned().await.unwrap();
    let err = sem
        .acquire_timeout(Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(err.is_timed_out(), "{err:?}");
    let stats = sem.stats();
    assert_eq!((stats.timed_out, stats.waiting), (1, 0));
    drop(held);
    drop(sem.acquire_timeout(Duration::from_secs(60)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_exception_comes_back_intact_and_returns_the_permit() {
    Python::initialize();
    let sem = GilSemaphore::new(2);
    let err = sem
        .run(|py| {
            py.run(
                c"def model(x):\n    raise ValueError(f'bad input {x}')\nmodel(7)",
                None,
                None,
            )
        })
        .await
        .unwrap_err();
    assert!(err.is_python());
    let err = err.into_pyerr();
    Python::attach(|py| {
        assert!(err.is_instance_of::<PyValueError>(py));
        assert_eq!(err.value(py).to_string(), "bad input 7");
        // The traceback reaches into the Python function that raised.
        let tb = err.traceback(py).expect("the traceback is kept");
        assert!(tb.format().unwrap().contains("in model"));
    });
    assert_eq!(sem.available_permits(), 2);
    assert_eq!(sem.stats().python_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_comes_back_as_an_error_and_returns_the_permit() {
    Python::initialize();
    let sem = GilSemaphore::new(1);
    let err = sem
        .run(|_py| -> PyResult<()> { panic!("model exploded on item 3") })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RunError::Panicked(msg) if msg == "model exploded on item 3"),
        "{err:?}"
    );
    assert_eq!(sem.available_permits(), 1);
    // The panic became a PanicException at the Python boundary.
    Python::attach(|py| {
        let e = PyErr::from(err);
        assert!(
            e.get_type(py)
                .name()
                .unwrap()
                .to_string()
                .contains("PanicException")
        );
    });
    assert_eq!(sem.run(|_py| Ok(5)).await.unwrap(), 5);
    assert_eq!(
        sem.stats().python_calls,
        2,
        "the panicking call is timed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_fails_waiters_but_not_holders() {
    Python::initialize();
    let sem = GilSemaphore::builder().permits(1).build();
    let held = sem.acquire_owned().await.unwrap();
    let waiter = tokio::spawn({
        let sem = sem.clone();
        async move { sem.run(|_py| Ok(())).await }
    });
    until("the waiter queues", || sem.stats().waiting == 1).await;
    sem.close();
    assert!(sem.is_closed());
    let err = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(err, RunError::Acquire(AcquireError::Closed)),
        "{err:?}"
    );
    assert_eq!(held.attach(|py| py.version_info().major), 3);
    assert_eq!(
        sem.try_acquire_owned().unwrap_err(),
        TryAcquireError::Closed
    );
}

#[test]
fn run_and_timeouts_work_from_an_executor_that_is_not_tokio() {
    Python::initialize();
    let sem = GilSemaphore::new(1);
    // `run` falls back to the blocking pool of gilkit's shared runtime.
    let answer =
        block_on_without_tokio(sem.run(|py| py.eval(c"6 * 7", None, None)?.extract::<i64>()));
    assert_eq!(answer.unwrap(), 42);
    // `acquire_timeout` falls back to the shared runtime's timer.
    let held = sem.try_acquire_owned().unwrap();
    let err = block_on_without_tokio(sem.acquire_timeout(Duration::from_millis(10))).unwrap_err();
    assert!(err.is_timed_out(), "{err:?}");
    drop(held);
    drop(block_on_without_tokio(sem.acquire_timeout(Duration::from_secs(60))).unwrap());
}

#[test]
fn acquire_py_attached_releases_the_gil_while_it_waits() {
    Python::initialize();
    let sem = GilSemaphore::new(1);
    let held = sem.try_acquire_owned().unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        locked_rx.recv().unwrap();
        // Needs the GIL while holding the permit the other thread is waiting for.
        held.attach(|py| py.version_info().major)
    });
    let permit = Python::attach(|py| {
        locked_tx.send(()).unwrap();
        sem.acquire_py_attached(py).unwrap()
    });
    assert_eq!(holder.join().unwrap(), 3);
    drop(permit);
    assert_eq!(sem.available_permits(), 1);
}

#[test]
fn stats_convert_to_a_python_dict() {
    Python::initialize();
    let sem = GilSemaphore::builder()
        .permits(3)
        .max_queue(Some(8))
        .build();
    let _p = sem.try_acquire_owned().unwrap();
    Python::attach(|py| {
        let d = sem.stats().into_pyobject(py).unwrap();
        let get = |k: &str| {
            d.get_item(k)
                .unwrap()
                .unwrap_or_else(|| panic!("no key {k}"))
        };
        assert_eq!(get("permits").extract::<usize>().unwrap(), 3);
        assert_eq!(get("in_use").extract::<usize>().unwrap(), 1);
        assert_eq!(get("max_queue").extract::<usize>().unwrap(), 8);
        assert_eq!(get("total_acquired").extract::<u64>().unwrap(), 1);
        assert_eq!(
            get("wait")
                .get_item("count")
                .unwrap()
                .extract::<u64>()
                .unwrap(),
            1
        );
        for key in ["waiting", "python_time_s"] {
            get(key);
        }
    });
}

#[test]
fn public_types_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let sem = GilSemaphore::new(1);
    send_sync(&sem);
    send(&sem.acquire());
    send(&sem.acquire_owned());
    send(&sem.acquire_timeout(Duration::from_secs(1)));
    send(&sem.run(|_py| Ok(())));
    let permit: OwnedGilPermit = sem.try_acquire_owned().unwrap();
    send_sync(&permit);
    fn permit_ref_is_send_sync<'a>() -> Option<GilPermit<'a>> {
        None
    }
    send_sync(&permit_ref_is_send_sync());
    let batcher = GilBatcher::new(Default::default(), |_py, xs: Vec<u8>| Ok(xs));
    send_sync(&batcher);
    send(&batcher.submit(1));
}

#[test]
fn zero_permits_is_an_error_not_a_panic() {
    let err = GilSemaphore::try_new(0).unwrap_err();
    assert!(err.to_string().contains("at least 1 permit"), "{err}");
    let err = GilSemaphore::builder().permits(0).try_build().unwrap_err();
    assert!(err.to_string().contains("got 0"), "{err}");
    assert!(GilSemaphore::try_new(3).is_ok());
}
