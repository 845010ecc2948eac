//! Behaviour of the release functions, driven from Rust with an embedded interpreter.
//!
//! Signal handling needs Python's main thread, which a Rust test thread is not; the cancellation
//! paths are exercised through the poll hook instead (it feeds the same machinery).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gilkit::{CancelToken, Interruptible};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CancelToken>();
    send_sync::<gilkit::Cancelled>();
    send_sync::<gilkit::runtime::RuntimeConfig>();
    send_sync::<gilkit::runtime::RuntimeInfo>();
    send_sync::<gilkit::runtime::ConfigureError>();
    fn send<T: Send>() {}
    send::<Interruptible<'static>>();
}

#[test]
fn hook_error_cancels_the_token_and_waits_for_the_work() {
    let saw_cancel = AtomicBool::new(false);
    let result: PyResult<()> = Python::attach(|py| {
        let mut polls = 0;
        Interruptible::new()
            .poll_interval(Duration::from_millis(5))
            .on_poll(move |_py| {
                polls += 1;
                if polls == 3 {
                    Err(PyValueError::new_err("enough"))
                } else {
                    Ok(())
                }
            })
            .run(py, |token| {
                let start = Instant::now();
                while !token.is_cancelled() {
                    // A guard: a broken cancel fails the test instead of hanging it.
                    assert!(
                        start.elapsed() < Duration::from_secs(120),
                        "never cancelled"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                // Borrowed state: the call must not return before this store.
                std::thread::sleep(Duration::from_millis(20));
                saw_cancel.store(true, Ordering::SeqCst);
            })
    });
    let err = result.unwrap_err();
    Python::attach(|py| assert!(err.is_instance_of::<PyValueError>(py)));
    assert!(saw_cancel.load(Ordering::SeqCst));
}

#[test]
fn run_owned_abandons_uncooperative_work_after_the_grace_period() {
    let finished = Arc::new(AtomicBool::new(false));
    let result: PyResult<()> = Python::attach(|py| {
        let finished = Arc::clone(&finished);
        Interruptible::new()
            .poll_interval(Duration::from_millis(5))
            .on_poll(|_py| Err(PyValueError::new_err("interrupt")))
            .grace(Duration::from_millis(50))
            .run_owned(py, move |_token| {
                std::thread::sleep(Duration::from_secs(10));
                finished.store(true, Ordering::SeqCst);
            })
    });
    assert!(result.is_err());
    // Returned before the work could finish: it was abandoned, and is still running.
    assert!(!finished.load(Ordering::SeqCst));
}

#[test]
fn run_owned_returns_the_value_and_calls_the_hook_last() {
    let polls = Arc::new(AtomicUsize::new(0));
    let value = Python::attach(|py| {
        let hook_polls = Arc::clone(&polls);
        let work_polls = Arc::clone(&polls);
        Interruptible::new()
            .poll_interval(Duration::from_millis(2))
            .on_poll(move |_py| {
                hook_polls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .run_owned(py, move |_token| {
                // Finish only after the hook ran once while we were working.
                while work_polls.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                41 + 1
            })
    })
    .unwrap();
    assert_eq!(value, 42);
    assert!(polls.load(Ordering::SeqCst) >= 2, "polled during and after");
}

#[test]
fn an_existing_token_can_cancel_from_elsewhere() {
    let token = CancelToken::new();
    let canceller = token.clone();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let cancelling = std::thread::spawn(move || {
        started_rx.recv().expect("the work starts");
        canceller.cancel();
    });
    let saw_cancel = Python::attach(|py| {
        Interruptible::new().token(token).run(py, |token| {
            started_tx.send(()).unwrap();
            let start = Instant::now();
            while !token.is_cancelled() {
                if start.elapsed() > Duration::from_secs(30) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        })
    })
    .unwrap();
    cancelling.join().unwrap();
    assert!(saw_cancel, "the work never observed the cancellation");
}

#[test]
fn block_on_polls_borrowing_futures_on_the_shared_runtime() {
    let data: Vec<i32> = (1..=3).collect();
    let sum = Python::attach(|py| {
        gilkit::block_on(py, async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            // Spawning works too: the future runs inside the runtime's context.
            let spawned = tokio::spawn(async { 10 }).await.unwrap();
            data.iter().sum::<i32>() + spawned
        })
    })
    .unwrap();
    assert_eq!(sum, 16);
}

#[test]
fn block_on_from_a_worker_of_another_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let value = rt.block_on(async {
        tokio::spawn(async {
            Python::attach(|py| gilkit::block_on(py, async { 5 }))
                .expect("block_on inside a runtime")
        })
        .await
        .unwrap()
    });
    assert_eq!(value, 5);
}

#[test]
fn try_attach_attaches_while_not_exiting() {
    assert_eq!(gilkit::try_attach(|py| py.None().is_none(py)), Some(true));
}
