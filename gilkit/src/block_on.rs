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
//! ([`crate::python`]) first closes the *poll gate* ([`crate::poll_gate`]): every future polled here
//! is wrapped in [`Gated`], which from then on answers `Pending` without touching the future, so no
//! future is polled against a runtime that is shutting down (tokio's timers panic with "A Tokio 1.x
//! context was found, but it is being shutdown" when polled then). The hook waits (bounded) for polls
//! already running to end, then shuts the runtime down. A thread caught inside `block_on` keeps
//! waiting with the GIL released until the process ends: returning would re-attach during
//! finalization, which ends the thread inside Rust frames. A `block_on` that *starts* after the gate
//! closed (say in a later `atexit` handler) raises `RuntimeError` at once.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::poll_gate::{Gated, exiting_error, gate_closed};
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
    let waker = this_thread_waker();
    // In an `Option` so that it can be dropped (cancelled) in place before this function returns.
    let mut fut = pin!(Some(Gated(fut)));
    loop {
        let polled = py.detach(|| {
            let _context = handle.enter();
            let mut cx = Context::from_waker(&waker);
            let deadline = on_main.then(|| Instant::now() + DEFAULT_POLL_INTERVAL);
            let mut gated = fut
                .as_mut()
                .as_pin_mut()
                .expect("polled only before it is dropped");
            loop {
                if let Poll::Ready(value) = gated.as_mut().poll(&mut cx) {
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
                fut.set(None);
            });
            return Err(interrupt);
        }
    }
}

/// Wakes the thread that polls the future. Spurious wake-ups only cost one extra poll.
struct ThreadWaker(Thread);

thread_local! {
    /// This thread's waker, made once per thread rather than once per call (an allocation and two
    /// reference counts saved a call, which pays for the poll gate).
    static THIS_THREAD_WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
}

/// A waker that unparks the calling thread. A waker kept by a future of an earlier call on this
/// thread may wake a later one: a spurious wake-up, one extra poll.
fn this_thread_waker() -> Waker {
    THIS_THREAD_WAKER
        .try_with(Waker::clone)
        // During thread teardown the cached one is gone: make one for this call.
        .unwrap_or_else(|_| Waker::from(Arc::new(ThreadWaker(thread::current()))))
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}
