//! [`block_on`]: wait for a future from Python code, with the GIL released and Ctrl-C working.
//!
//! # How it works
//! The future is polled on the calling thread, inside the shared runtime's context
//! ([`tokio::runtime::Handle::enter`]): its timers and sockets are driven by the runtime's worker
//! threads, and wake the calling thread, which sleeps in `park` with the GIL released. Polling on the
//! caller (rather than spawning a task) is what lets the future borrow from the caller, and it avoids
//! tokio's `Handle::block_on`, which panics with "Cannot start a runtime from within a runtime" when
//! the caller is itself a runtime thread (a Python callback invoked from async Rust, say). On the
//! main thread the park is bounded by the poll interval, after which the thread re-attaches to run
//! Python's signal handlers; if one raises, the future is dropped (its cancellation) and the exception
//! returned.
//!
//! # Interpreter exit
//! A daemon thread may still be inside `block_on` when the interpreter exits. The exit hook
//! ([`crate::python`]) first closes the *poll gate* ([`close_gate`]): every future polled here is
//! wrapped in [`Gated`], which from then on answers `Pending` without touching the future, so no
//! future is polled against a runtime that is shutting down (tokio's timers panic with "A Tokio 1.x
//! context was found, but it is being shutdown" when polled then). The hook waits (bounded) for polls
//! already running to end, then shuts the runtime down. A thread caught inside `block_on` keeps
//! waiting with the GIL released until the process ends: returning would re-attach during
//! finalization, which ends the thread inside Rust frames. A `block_on` that *starts* after the gate
//! closed (say in a later `atexit` handler) raises `RuntimeError` at once.
//!
//! # Memory ordering
//! The gate is a Dekker handshake between a polling thread (increment `POLLING`, then read
//! `CLOSED`) and the exit hook (set `CLOSED`, then read `POLLING`): all four accesses are `SeqCst`,
//! so at least one side sees the other's write: either the poll sees the gate closed and does not
//! poll, or the hook sees the poll and waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::release::{DEFAULT_POLL_INTERVAL, is_main_thread};
use crate::runtime;

/// Runs `fut` to completion on the calling thread in the shared runtime's context, with the GIL
/// released; Ctrl-C cancels it.
///
/// Works from any thread, including a thread that is already inside a tokio runtime. The future may
/// borrow from the caller. On the main thread the GIL is re-acquired at most every 50 ms to run
/// signal handlers; if one raises (`KeyboardInterrupt` for Ctrl-C), the future is dropped, which
/// cancels it, and the exception is returned.
///
/// GIL: released while the future runs; re-acquired briefly every 50 ms on the main thread; held on
/// return.
///
/// # Errors
/// The exception raised by a signal handler; `RuntimeError` if the shared runtime cannot start or
/// the interpreter is exiting (see the module doc: a call caught in flight by the exit waits until
/// the process ends instead).
///
/// # Panics
/// A panic while polling the future propagates to the caller (with the GIL re-acquired).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let answer = gilkit::block_on(py, async {
///         tokio::time::sleep(Duration::from_millis(5)).await;
///         42
///     })?;
///     assert_eq!(answer, 42);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn block_on<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    if gate_closed() {
        return Err(exiting_error());
    }
    let handle = runtime::try_handle().map_err(|err| PyRuntimeError::new_err(err.to_string()))?;
    crate::python::ensure_exit_hook(py);
    let on_main = is_main_thread(py);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    // Boxed so that it can be dropped (cancelled) before this function returns.
    let mut fut: Pin<Box<Gated<F>>> = Box::pin(Gated(fut));
    loop {
        let polled = py.detach(|| {
            let _context = handle.enter();
            let mut cx = Context::from_waker(&waker);
            let deadline = on_main.then(|| Instant::now() + DEFAULT_POLL_INTERVAL);
            loop {
                if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
                    return Some(value);
                }
                match deadline {
                    None => thread::park(),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return None;
                        }
                        thread::park_timeout(deadline - now);
                    }
                }
            }
        });
        if let Some(value) = polled {
            return Ok(value);
        }
        if let Err(interrupt) = py.check_signals() {
            // Drop (cancel) the future off the GIL and inside the runtime context: its destructors
            // may deregister timers or sockets, or block.
            py.detach(|| {
                let _context = handle.enter();
                drop(fut);
            });
            return Err(interrupt);
        }
    }
}

/// Wakes the thread that polls the future. Spurious wake-ups only cost one extra poll.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Threads inside a [`Gated::poll`] right now.
static POLLING: AtomicUsize = AtomicUsize::new(0);
/// Set once by the exit hook; never cleared (the interpreter does not come back from exiting).
static CLOSED: AtomicBool = AtomicBool::new(false);

/// A future that is polled only while the poll gate is open; once [`close_gate`] ran it stays
/// `Pending` forever without touching (or dropping) the inner future.
pub(crate) struct Gated<F>(pub(crate) F);

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _inside = PollingGuard::enter();
        if CLOSED.load(SeqCst) {
            return Poll::Pending;
        }
        // SAFETY: structural pinning of the only field: `Gated` never moves `F` out, has no `Drop`
        // impl and is not `Unpin` unless `F` is.
        unsafe { self.map_unchecked_mut(|gated| &mut gated.0) }.poll(cx)
    }
}

/// Counts a thread in `POLLING` for its lifetime (also when the poll panics).
struct PollingGuard;

impl PollingGuard {
    fn enter() -> Self {
        POLLING.fetch_add(1, SeqCst);
        PollingGuard
    }
}

impl Drop for PollingGuard {
    fn drop(&mut self) {
        POLLING.fetch_sub(1, SeqCst);
    }
}

/// Whether the exit hook closed the poll gate.
pub(crate) fn gate_closed() -> bool {
    CLOSED.load(SeqCst)
}

/// The error of a call that starts after the poll gate closed.
pub(crate) fn exiting_error() -> PyErr {
    PyRuntimeError::new_err(
        "gilkit's runtime has stopped because the Python interpreter is exiting; \
         nothing can be awaited from now on",
    )
}

/// Closes the poll gate, then waits at most `timeout` for the polls running now to end. Called by
/// the exit hook, with the GIL released, before the runtime shuts down. Returns whether they ended.
pub(crate) fn close_gate(timeout: Duration) -> bool {
    CLOSED.store(true, SeqCst);
    let deadline = Instant::now() + timeout;
    while POLLING.load(SeqCst) != 0 {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}
