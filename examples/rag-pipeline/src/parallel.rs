//! The pipeline's parallel map, in input order, over gilkit's batch executor.
//!
//! [`gilkit::batch::run_cpu`] does the work: workers claim items through an atomic cursor, each
//! result lands in its input's slot, a panic is caught per item. This module only adapts its
//! per-item [`Outcome`] to what the pipeline needs: the value, the panic message of an item that
//! panicked (one bad document never takes down the batch or shifts the results), or `None` for an
//! item that did not run because the ingest was cancelled.

use std::convert::Infallible;

use gilkit::batch::{self, BatchOptions, Outcome};

use crate::CancelToken;

/// The number of workers to use when the caller does not say: the machine's parallelism.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applies `f` to every item with `workers` threads (the caller's included); `Err` holds the panic
/// message of an item whose `f` panicked. Items not finished when `cancel` fires are `None`.
pub(crate) fn map<I: Sync, T: Send>(
    items: &[I],
    workers: usize,
    cancel: &CancelToken,
    f: impl Fn(&I) -> T + Sync,
) -> Vec<Option<Result<T, String>>> {
    let options = BatchOptions {
        workers: Some(workers.max(1)),
        token: Some(cancel.clone()),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(items, &options, |item| Ok::<T, Infallible>(f(item)));
    report.outcomes.into_iter().map(settle).collect()
}

/// One item's executor outcome as [`map`] reports it (also for the embed stage's async batches):
/// the value, the panic message, or `None` if it did not run because of cancellation.
pub(crate) fn settle<T>(outcome: Outcome<T, Infallible>) -> Option<Result<T, String>> {
    match outcome {
        Outcome::Ok(value) => Some(Ok(value)),
        Outcome::Panicked(message) => Some(Err(message)),
        Outcome::Err(never) => match never {},
        // No deadline or item timeout is set: only cancellation leaves items undone.
        Outcome::TimedOut | Outcome::Cancelled => None,
    }
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
