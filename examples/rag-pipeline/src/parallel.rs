//! A parallel map over a slice, in input order, for the pipeline's CPU-bound stages.
//!
//! Workers are scoped threads that claim items through one atomic cursor (no lock on the hot path);
//! each result is written to its input's slot, so the output order is the input order. A panic in
//! `f` is caught per item and reported as `Err(message)` in that item's slot: one bad document can
//! never take down the batch or shift the results.
//!
//! # Memory ordering
//! The cursor is only a ticket dispenser (`fetch_add`, `Relaxed`): each index is handed out once,
//! and results travel back through the scoped threads' join, which synchronizes everything.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::CancelToken;

/// The number of workers to use when the caller does not say: the machine's parallelism.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applies `f` to every item with `workers` threads; `Err` holds the panic message of an item whose
/// `f` panicked. Items not started when `cancel` fires are `None`.
pub(crate) fn map<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    cancel: &CancelToken,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<Option<Result<T, String>>> {
    let workers = workers.clamp(1, items.len().max(1));
    let cursor = AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let i = cursor.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() || cancel.is_cancelled() {
                return done;
            }
            let out = catch_unwind(AssertUnwindSafe(|| f(&items[i]))).map_err(|p| panic_message(&*p));
            done.push((i, out));
        }
    };
    let mut slots: Vec<Option<Result<T, String>>> = (0..items.len()).map(|_| None).collect();
    if workers == 1 {
        for (i, out) in run() {
            slots[i] = Some(out);
        }
        return slots;
    }
    let results = Mutex::new(&mut slots);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                // One lock per worker at the end, not per item.
                let done = run();
                let mut slots = results.lock().unwrap_or_else(|e| e.into_inner());
                for (i, out) in done {
                    slots[i] = Some(out);
                }
            });
        }
    });
    slots
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_and_panics_stay_in_their_slot() {
        let items: Vec<usize> = (0..1000).collect();
        let out = map(&items, 4, &CancelToken::new(), |&i| {
            assert!(i % 97 != 5, "bad item {i}");
            i * 2
        });
        for (i, slot) in out.into_iter().enumerate() {
            match slot.expect("every item ran") {
                Ok(v) => assert_eq!(v, i * 2),
                Err(msg) => {
                    assert_eq!(i % 97, 5);
                    assert!(msg.contains(&format!("bad item {i}")));
                }
            }
        }
    }

    #[test]
    fn cancelled_before_start_runs_nothing() {
        let token = CancelToken::new();
        token.cancel();
        let out = map(&[1, 2, 3], 2, &token, |x| x + 1);
        assert!(out.iter().all(Option::is_none));
    }
}
