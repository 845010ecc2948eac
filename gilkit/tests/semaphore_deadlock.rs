//! The akidb lock-order inversion, reproduced: thread A holds the GIL and wants a lock; thread B
//! holds that lock and wants the GIL.
//!
//! Each round is forced into the inversion, not left to chance: A attaches first, then lets B take
//! the lock, and only once B holds it (and is on its way to attach) does A ask for the lock. With
//! gilkit's primitives A lets go of the GIL while it waits, so B finishes and the round completes;
//! 1,000 rounds run for each kind of lock (a `std` mutex through PyO3's `lock_py_attached`, a
//! `GilSemaphore` permit through `acquire_py_attached`). The naive versions, which wait while
//! attached, are shown to deadlock: their wait is bounded by a timeout (a spin on `try_lock` that
//! never detaches, the same as a blocking lock except that it gives up), so the suite cannot hang,
//! and the test fails if the naive version ever completes.
//!
//! On a GIL-less (free-threaded) build there is no GIL to invert with, so the naive checks are
//! skipped there (and say so); the gilkit rounds still run.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gilkit::{GilSemaphore, OwnedGilPermit};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

const ROUNDS: usize = 1000;
const NAIVE_TIMEOUT: Duration = Duration::from_millis(500);

fn gil_enabled() -> bool {
    Python::initialize();
    Python::attach(|py| {
        let disabled = py
            .import("sysconfig")
            .and_then(|m| m.call_method1("get_config_var", ("Py_GIL_DISABLED",)))
            .and_then(|v| v.extract::<Option<i64>>())
            .unwrap();
        disabled.unwrap_or(0) == 0
    })
}

/// Thread B for the mutex rounds: on each `go`, lock the mutex, report it, then attach (the
/// inversion) and bump the counter before unlocking.
fn mutex_holder(
    shared: Arc<Mutex<u64>>,
    go: Receiver<()>,
    locked: SyncSender<()>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while go.recv().is_ok() {
            let mut guard = shared.lock().unwrap();
            locked.send(()).unwrap();
            Python::attach(|py| {
                // Something that needs the interpreter, as a callback or a decref would.
                py.eval(c"1 + 1", None, None).unwrap();
            });
            *guard += 1;
        }
    })
}

#[test]
fn mutex_taken_with_lock_py_attached_survives_the_inversion_1000_times() {
    Python::initialize();
    let shared = Arc::new(Mutex::new(0u64));
    let (go_tx, go_rx) = sync_channel(0);
    let (locked_tx, locked_rx) = sync_channel(0);
    let holder = mutex_holder(Arc::clone(&shared), go_rx, locked_tx);
    let sem = GilSemaphore::new(1);
    for round in 0..ROUNDS {
        let permit = sem.try_acquire_owned().unwrap();
        permit.attach(|py| {
            go_tx.send(()).unwrap();
            locked_rx.recv().unwrap(); // B now holds the mutex and wants the GIL we hold
            let guard = shared.lock_py_attached(py).unwrap();
            assert_eq!(
                *guard,
                round as u64 + 1,
                "B finished its round before we got the lock"
            );
        });
    }
    drop(go_tx);
    holder.join().unwrap();
    assert_eq!(*shared.lock().unwrap(), ROUNDS as u64);
}

/// Waits while attached without ever detaching, as a blocking `lock()` would, retrying `attempt`
/// every millisecond, but gives up after `timeout` instead of hanging the test suite.
fn naive_wait<T>(timeout: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(got) = attempt() {
            return Some(got);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(1)); // a Rust sleep: the GIL stays held
    }
}

#[test]
fn a_naive_mutex_lock_while_attached_deadlocks() {
    if !gil_enabled() {
        eprintln!("free-threaded build: no GIL, no inversion to show");
        return;
    }
    let shared = Arc::new(Mutex::new(0u64));
    let (go_tx, go_rx) = sync_channel(0);
    let (locked_tx, locked_rx) = sync_channel(0);
    let holder = mutex_holder(Arc::clone(&shared), go_rx, locked_tx);
    for _ in 0..3 {
        let got = Python::attach(|_py| {
            go_tx.send(()).unwrap();
            locked_rx.recv().unwrap();
            naive_wait(NAIVE_TIMEOUT, || shared.try_lock().ok()).is_some()
        });
        assert!(
            !got,
            "the naive lock completed: the inversion was not reproduced"
        );
        // Detached now: B gets the GIL, finishes and unlocks, so the next round starts clean.
        drop(shared.lock().unwrap());
    }
    drop(go_tx);
    holder.join().unwrap();
    assert_eq!(
        *shared.lock().unwrap(),
        3,
        "B completed each round once A let go"
    );
}

/// Thread B for the permit rounds: on each `go`, take the (only) permit, report it, then attach
/// while holding it.
fn permit_holder(
    sem: GilSemaphore,
    go: Receiver<()>,
    holding: SyncSender<()>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut rounds = 0;
        while go.recv().is_ok() {
            let permit: OwnedGilPermit = sem
                .try_acquire_owned()
                .expect("the permit is free between rounds");
            holding.send(()).unwrap();
            permit.attach(|py| py.eval(c"1 + 1", None, None).unwrap().unbind());
            rounds += 1;
        }
        rounds
    })
}

#[test]
fn semaphore_acquired_while_attached_survives_the_inversion_1000_times() {
    Python::initialize();
    let sem = GilSemaphore::new(1);
    let (go_tx, go_rx) = sync_channel(0);
    let (holding_tx, holding_rx) = sync_channel(0);
    let holder = permit_holder(sem.clone(), go_rx, holding_tx);
    for _ in 0..ROUNDS {
        let permit = Python::attach(|py| {
            go_tx.send(()).unwrap();
            holding_rx.recv().unwrap(); // B holds the permit and wants the GIL we hold
            sem.acquire_py_attached(py).unwrap()
        });
        drop(permit);
    }
    drop(go_tx);
    assert_eq!(holder.join().unwrap(), ROUNDS as u64);
    let stats = sem.stats();
    assert_eq!(stats.total_acquired, 2 * ROUNDS as u64);
    assert_eq!(stats.in_use, 0);
}

#[test]
fn a_naive_permit_wait_while_attached_deadlocks() {
    if !gil_enabled() {
        eprintln!("free-threaded build: no GIL, no inversion to show");
        return;
    }
    let sem = GilSemaphore::new(1);
    let (go_tx, go_rx) = sync_channel(0);
    let (holding_tx, holding_rx) = sync_channel(0);
    let holder = permit_holder(sem.clone(), go_rx, holding_tx);
    for _ in 0..3 {
        let got = Python::attach(|_py| {
            go_tx.send(()).unwrap();
            holding_rx.recv().unwrap();
            // What akidb's semaphore did: wait for the permit without letting go of the GIL.
            naive_wait(NAIVE_TIMEOUT, || sem.try_acquire_owned().ok())
        });
        assert!(
            got.is_none(),
            "the naive wait got the permit: the inversion was not reproduced"
        );
        // Detached now: B attaches, finishes and gives the permit back.
        let start = Instant::now();
        while sem.available_permits() == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "B never finished"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
    drop(go_tx);
    assert_eq!(holder.join().unwrap(), 3);
}
