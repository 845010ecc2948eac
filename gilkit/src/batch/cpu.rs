//! CPU mode: a fixed set of threads (the caller's and pooled helpers, see the `pool` module)
//! claims items from the [`Board`]'s cursor, runs them and writes each outcome into the item's
//! slot.
//!
//! A worker stops when the cursor runs out, or at its next item once the batch is stopped (deadline
//! or cancellation); it never waits for work, so there is nothing to spin or park on. The calling
//! thread, after its own share, waits until the others are done (`pool::join` returns only
//! then, also when unwinding, which is what lets the helpers borrow the items).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use super::core::Board;
use super::report::Latency;
use super::{BatchOptions, BatchReport, BatchStats, Outcome, StopReason};
use crate::CancelToken;
use crate::panic::panic_message;
use crate::pool;

/// How often a worker publishes its finished-item count to [`Progress`](super::Progress).
const PUBLISH_EVERY: Duration = Duration::from_millis(1);

/// What the work of one item can ask about itself, passed by
/// [`run_cpu_with_context`](super::run_cpu_with_context).
///
/// A running closure cannot be pre-empted; long items that check
/// [`should_stop`](Self::should_stop) now and then let a deadline, a timeout or a cancellation
/// (Ctrl-C from Python) stop the batch promptly. Whatever such an item returns once stopped is
/// reported as [`Outcome::TimedOut`] or [`Outcome::Cancelled`].
#[derive(Debug)]
pub struct ItemContext<'a> {
    index: usize,
    deadline: Option<Instant>,
    token: Option<&'a CancelToken>,
}

impl ItemContext<'_> {
    /// The item's position in the input.
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// When this item must be done: the earlier of the batch deadline and the item's start plus
    /// `item_timeout`.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Returns `true` once the batch is cancelled or this item's deadline has passed: the item
    /// should return (any value) as soon as it can. One atomic load, plus reading the clock when
    /// there is a deadline.
    #[must_use]
    pub fn should_stop(&self) -> bool {
        self.token.is_some_and(CancelToken::is_cancelled)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Shared by the workers of one batch.
struct Run<'a, I, F> {
    items: &'a [I],
    options: &'a BatchOptions,
    work: &'a F,
    /// The first reason any worker saw to stop: `RUNNING` or a `StopReason` code.
    stop: AtomicU8,
}

const RUNNING: u8 = 0;
const STOP_DEADLINE: u8 = 1;
const STOP_CANCELLED: u8 = 2;

pub(crate) fn run<I, T, E, F>(items: &[I], options: &BatchOptions, work: F) -> BatchReport<T, E>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I, &ItemContext<'_>) -> Result<T, E> + Sync,
{
    let options = options.validated();
    let started = Instant::now();
    let workers = options.cpu_workers(items.len());
    if let Some(progress) = &options.progress {
        progress.add_total(items.len());
    }
    let board = Board::new(items.len(), workers);
    let run = Run {
        items,
        options,
        work: &work,
        stop: AtomicU8::new(RUNNING),
    };
    let (latency, workers) = run_workers(workers, &|| run.work(&board));
    let stopped = run.stopped();
    let outcomes: Vec<_> = board
        .into_slots()
        .into_iter()
        .map(|slot| {
            debug_assert!(slot.is_some() || stopped.is_some(), "an item was skipped");
            // Only a stopped batch leaves items unclaimed or unstarted.
            slot.unwrap_or_else(|| stopped.map_or(Outcome::TimedOut, stopped_outcome))
        })
        .collect();
    let stats = BatchStats::new(&outcomes, stopped, started.elapsed(), workers, &latency);
    BatchReport { outcomes, stats }
}

/// Runs `work` on `workers` threads, the caller's and pooled helpers (see the `pool` module),
/// and returns their merged latencies and how many threads ran. If a helper cannot be started,
/// the batch runs on the threads it got (at least the caller).
fn run_workers(workers: usize, work: &(dyn Fn() -> Latency + Sync)) -> (Latency, usize) {
    if workers <= 1 {
        return (work(), 1);
    }
    match pool::join(work, |_| run_workers(workers - 1, work)) {
        Ok((theirs, (mut latency, ran))) => {
            // `work` catches the items' panics; a panic here is a bug in gilkit: pass it on.
            let theirs = theirs.unwrap_or_else(|payload| std::panic::resume_unwind(payload));
            latency.merge(&theirs);
            (latency, ran + 1)
        }
        Err(_) => (work(), 1),
    }
}

impl<I, F> Run<'_, I, F> {
    /// One worker: claim, run, write, until the board is empty or the batch stops.
    fn work<T, E>(&self, board: &Board<Outcome<T, E>>) -> Latency
    where
        F: Fn(&I, &ItemContext<'_>) -> Result<T, E>,
    {
        let mut latency = Latency::new();
        let progress = self.options.progress.as_ref();
        let mut unpublished = 0;
        // One clock read per item (~50 ns on a VM, the largest part of the per-item cost): an
        // item starts when the previous one ended.
        let mut now = Instant::now();
        let mut published_at = now;
        'claims: while let Some(claim) = board.claim() {
            for (index, slot) in claim {
                let start = now;
                if self.check_stop(start).is_some() {
                    break 'claims;
                }
                let timeout_at = self.options.item_timeout.map(|t| start + t);
                let context = ItemContext {
                    index,
                    deadline: earliest(self.options.deadline, timeout_at),
                    token: self.options.token.as_ref(),
                };
                let result = catch_unwind(AssertUnwindSafe(|| {
                    (self.work)(&self.items[index], &context)
                }));
                let end = Instant::now();
                now = end;
                let outcome = if let Some(reason) = self.check_stop(end) {
                    stopped_outcome(reason)
                } else if timeout_at.is_some_and(|t| end > t) {
                    Outcome::TimedOut
                } else {
                    latency.record(end - start);
                    match result {
                        Ok(Ok(value)) => Outcome::Ok(value),
                        Ok(Err(error)) => Outcome::Err(error),
                        Err(payload) => Outcome::Panicked(panic_message(&*payload)),
                    }
                };
                slot.write(outcome);
                unpublished += 1;
                if end - published_at >= PUBLISH_EVERY {
                    if let Some(progress) = progress {
                        progress.add_finished(unpublished);
                    }
                    unpublished = 0;
                    published_at = end;
                }
            }
        }
        if let Some(progress) = progress {
            progress.add_finished(unpublished);
        }
        latency
    }

    /// The reason to stop, if there is one by `now`. The first reason seen sticks, so every
    /// worker reports the same one.
    #[inline]
    fn check_stop(&self, now: Instant) -> Option<StopReason> {
        let seen = match self.stop.load(Ordering::Relaxed) {
            RUNNING if self.options.is_cancelled() => STOP_CANCELLED,
            RUNNING if self.options.deadline.is_some_and(|d| now >= d) => STOP_DEADLINE,
            RUNNING => return None,
            code => return decode(code),
        };
        // Relaxed: the code is the only data; the results travel through the thread join.
        let first =
            match self
                .stop
                .compare_exchange(RUNNING, seen, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => seen,
                Err(code) => code,
            };
        decode(first)
    }

    fn stopped(&self) -> Option<StopReason> {
        decode(self.stop.load(Ordering::Relaxed))
    }
}

fn decode(code: u8) -> Option<StopReason> {
    match code {
        STOP_DEADLINE => Some(StopReason::Deadline),
        STOP_CANCELLED => Some(StopReason::Cancelled),
        _ => None,
    }
}

pub(crate) fn stopped_outcome<T, E>(reason: StopReason) -> Outcome<T, E> {
    match reason {
        StopReason::Deadline => Outcome::TimedOut,
        StopReason::Cancelled => Outcome::Cancelled,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
