//! The optional bound on how many tasks may wait for a permit.
//!
//! A counter of tasks inside the wait. [`QueueBound::enter`] increments it with a compare-and-swap
//! that refuses to go past the bound; the returned [`QueueSlot`] decrements it when dropped, however
//! the wait ends (permit obtained, error, or the future dropped). The invariant, checked under loom
//! by `gilkit/tests/loom_queue_bound.rs` (which compiles this very file against loom's atomics):
//! the number of live slots never exceeds the bound, equals the counter, and a refusal reports a
//! queue length at the bound.
//!
//! # Memory ordering
//!
//! `Relaxed` throughout: the bound relies only on each read-modify-write of the one counter being
//! atomic (all of them are totally ordered in its modification order), and nothing else is
//! published through the counter.

use super::atomic::{AtomicUsize, Ordering::Relaxed};

pub(crate) struct QueueBound {
    waiting: AtomicUsize,
    max: Option<usize>,
}

impl QueueBound {
    pub(crate) fn new(max: Option<usize>) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            max,
        }
    }

    /// Counts the caller in, or refuses with the queue length seen when the bound is reached.
    pub(crate) fn enter(&self) -> Result<QueueSlot<'_>, usize> {
        let mut queued = self.waiting.load(Relaxed);
        loop {
            if let Some(max) = self.max
                && queued >= max
            {
                return Err(queued);
            }
            match self
                .waiting
                .compare_exchange_weak(queued, queued + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(QueueSlot { bound: self }),
                Err(now) => queued = now,
            }
        }
    }

    /// Tasks waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// The bound, if any.
    pub(crate) fn max(&self) -> Option<usize> {
        self.max
    }
}

/// One task's place in the queue, given up on drop.
pub(crate) struct QueueSlot<'a> {
    bound: &'a QueueBound,
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.bound.waiting.fetch_sub(1, Relaxed);
    }
}
