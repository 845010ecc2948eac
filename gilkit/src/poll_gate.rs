//! The poll gate: no future is polled against gilkit's runtime once the interpreter's exit hook
//! has started shutting it down.
//!
//! Every future gilkit polls from a Python thread ([`crate::block_on`], async batches) is wrapped in
//! [`Gated`]. The exit hook ([`crate::python`]) calls [`close_gate`] before it shuts the runtime
//! down: from then on a gated future answers `Pending` without touching (or dropping) the inner
//! future, because tokio's timers panic when polled against a runtime that is shutting down. The
//! hook waits (bounded) for polls already running to end. A call that starts after the gate closed
//! gets [`exiting_error`]. This module imports nothing from the rest of gilkit, so both the exit
//! hook and the pollers can depend on it.
//!
//! # Memory ordering
//! The gate is a Dekker handshake between a polling thread (increment `POLLING`, then read
//! `CLOSED`) and the exit hook (set `CLOSED`, then read `POLLING`): all four accesses are `SeqCst`,
//! so at least one side sees the other's write: either the poll sees the gate closed and does not
//! poll, or the hook sees the poll and waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use pyo3::PyErr;
use pyo3::exceptions::PyRuntimeError;

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
