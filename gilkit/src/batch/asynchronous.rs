//! Async mode: a window of at most `max_concurrency` item futures, refilled from the input as
//! items finish, polled by the task that awaits the batch.
//!
//! No task is spawned per item: futures are created lazily when a window place frees up and live in
//! a `FuturesUnordered`, so memory stays proportional to the window, not to the batch. Each item
//! future is wrapped to catch its panic and to race its `item_timeout`; the window itself races the
//! batch deadline and the cancellation token, and stopping drops (cancels) every in-flight future.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use super::cpu::stopped_outcome;
use super::report::Latency;
use super::{BatchOptions, BatchReport, BatchStats, Outcome, StopReason};
use crate::panic::panic_message;

pub(crate) async fn run<I, T, E, F, Fut>(
    items: Vec<I>,
    options: &BatchOptions,
    mut work: F,
) -> BatchReport<T, E>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let options = options.validated();
    let started = Instant::now();
    let total = items.len();
    let window = options.async_window(total);
    let progress = options.progress.as_ref();
    if let Some(progress) = progress {
        progress.add_total(total);
    }
    let item_timeout = options.item_timeout;
    let mut slots: Vec<Option<Outcome<T, E>>> = (0..total).map(|_| None).collect();
    let mut latency = Latency::new();
    let mut inputs = items.into_iter().enumerate();
    let mut in_flight = FuturesUnordered::new();

    let cancelled = async {
        match &options.token {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        match options.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    let mut cancelled = std::pin::pin!(cancelled);
    let mut deadline = std::pin::pin!(deadline);

    // One clock read per item: a finished item's end is the start of the items that refill its
    // window place.
    let mut now = Instant::now();
    let stopped = loop {
        while in_flight.len() < window {
            let Some((index, item)) = inputs.next() else {
                break;
            };
            // Creating the future runs user code too: a panic there is this item's outcome.
            match catch_unwind(AssertUnwindSafe(|| work(item))) {
                Ok(future) => in_flight.push(run_item(index, now, future, item_timeout)),
                Err(payload) => {
                    slots[index] = Some(Outcome::Panicked(panic_message(&*payload)));
                    if let Some(progress) = progress {
                        progress.add_finished(1);
                    }
                }
            }
        }
        if in_flight.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            () = &mut cancelled => break Some(StopReason::Cancelled),
            () = &mut deadline => break Some(StopReason::Deadline),
            Some(finished) = in_flight.next() => {
                let (index, outcome, started) = finished;
                now = Instant::now();
                if let Some(started) = started {
                    latency.record(now - started);
                }
                slots[index] = Some(outcome);
                if let Some(progress) = progress {
                    progress.add_finished(1);
                }
            }
        }
        // Futures that finish at once would keep this loop from ever returning `Pending`; taking
        // part in tokio's cooperative budget lets the rest of the runtime's tasks run meanwhile.
        tokio::task::coop::consume_budget().await;
    };
    // Dropping the window cancels the futures still in it.
    drop(in_flight);

    let outcomes: Vec<_> = slots
        .into_iter()
        .map(|slot| slot.unwrap_or_else(|| stopped.map_or(Outcome::TimedOut, stopped_outcome)))
        .collect();
    let stats = BatchStats::new(&outcomes, stopped, started.elapsed(), window, &latency);
    BatchReport { outcomes, stats }
}

/// One item: its outcome, and its start when it finished by itself (for its latency).
async fn run_item<T, E>(
    index: usize,
    start: Instant,
    future: impl Future<Output = Result<T, E>>,
    timeout: Option<Duration>,
) -> (usize, Outcome<T, E>, Option<Instant>) {
    let caught = AssertUnwindSafe(future).catch_unwind();
    let result = match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, caught).await {
            Ok(result) => result,
            Err(_elapsed) => return (index, Outcome::TimedOut, None),
        },
        None => caught.await,
    };
    let outcome = match result {
        Ok(Ok(value)) => Outcome::Ok(value),
        Ok(Err(error)) => Outcome::Err(error),
        Err(payload) => Outcome::Panicked(panic_message(&*payload)),
    };
    (index, outcome, Some(start))
}
