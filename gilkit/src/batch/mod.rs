//! The batch executor: run one function over many items in parallel and get one [`Outcome`] per
//! item back, in input order, even when items fail, panic, time out or the batch is cancelled.
//!
//! | work | function | runs on |
//! |---|---|---|
//! | CPU-bound, `Fn(&I) -> Result<T, E>` | [`run_cpu`], [`run_cpu_with_context`] | the caller's thread and pooled helpers |
//! | I/O-bound, `FnMut(I) -> impl Future` | [`run_async`] | the task that awaits it, at most `max_concurrency` futures in flight |
//! | either, from a `#[pyfunction]` / `#[pymethods]` with the GIL released, progress callback, Ctrl-C | [`run_cpu_from_python`], [`block_on_batch_from_python`] | as above |
//! | a `concurrent.futures.Executor` for Python | [`Executor`], [`NativeFn`] | a pool of parked threads |
//! | parts handed to one consumer in order, made ahead of it while it uses the previous ones | [`ordered::Parts`] | the caller's thread and, when a core is spare, one pooled worker |
//!
//! Every item gets its own [`Outcome`]: `Ok`, `Err`, `Panicked` (the panic is caught; the other
//! items run on), `TimedOut` (its `item_timeout` ran out, or the batch deadline passed before it
//! finished) or `Cancelled` (the [`CancelToken`](crate::CancelToken) was cancelled before it
//! finished). Finished results are always kept. [`BatchStats`] counts each kind and measures
//! duration, throughput and per-item latency (p50, p99, max). A [`Progress`] counts finished items
//! live for a progress bar.
//!
//! # Examples
//!
//! ```
//! use gilkit::batch::{self, BatchOptions, Outcome};
//!
//! let numbers: Vec<u64> = (0..10_000).collect();
//! let options = BatchOptions { workers: Some(2), ..BatchOptions::default() };
//! let report = batch::run_cpu(&numbers, &options, |&n| {
//!     if n == 1234 { panic!("bad input") }
//!     if n % 1000 == 7 { return Err(format!("{n} is unlucky")) }
//!     Ok(n * n)
//! });
//! assert_eq!(report.outcomes[3], Outcome::Ok(9));
//! assert_eq!(report.outcomes[1007], Outcome::Err("1007 is unlucky".to_string()));
//! assert_eq!(report.outcomes[1234], Outcome::Panicked("bad input".to_string()));
//! assert_eq!((report.stats.succeeded, report.stats.failed, report.stats.panicked), (9989, 10, 1));
//! ```
//!
//! # How it works
//! **CPU mode.** `workers` threads (one per CPU by default, the calling thread being one of them,
//! the rest pooled helper threads, see below) share an atomic cursor over the
//! input. A worker claims a run of indices with one `fetch_add` (long runs while much remains, single
//! items at the end: guided self-scheduling, at most 64), runs each item under `catch_unwind` and
//! writes its outcome straight into the item's result slot, which only the claimer of that index
//! can write. No lock is taken on this path. Workers never wait for work: when the cursor is
//! exhausted they return, and the caller sleeps until the last one has, so no thread spins. The
//! helpers come from gilkit's small pool of helper threads (also used by
//! [`crate::detach_interruptible`]): started on demand, kept for 10 s when idle, so a batch costs a
//! few microseconds to start rather than a thread spawn per worker. Between items a worker checks the token and the deadline; once either fires, every worker
//! stops at its next item, and the items that did not finish get `Cancelled` or `TimedOut`. The
//! claim/complete core and its correctness argument are in `src/batch/README.md` (shipped in the crate's source package).
//!
//! **Async mode.** The input is consumed lazily into a window (a `FuturesUnordered`) of at most
//! `max_concurrency` futures; each finished future frees a place for the next item, and its outcome
//! goes to its input position. No task is spawned per item. The window races the deadline and the
//! token: when one fires, the in-flight futures are dropped, which cancels them.
//!
//! # Memory ordering
//! What a user can rely on: every result written by a worker is visible to the caller when
//! `run_cpu` returns, and [`Progress`] counts are eventually exact (exact once the batch returns)
//! but not a synchronisation point: they say how many items finished, not which.
//!
//! Inside: the cursor's `fetch_add` is `Relaxed` (uniqueness comes from the atomicity of
//! read-modify-writes, not from ordering), and results travel from workers to the caller through
//! the helpers' completion signal (a channel disconnection observed under the channel's lock), which
//! synchronises. The stop code (deadline or cancelled, first one
//! wins by `compare_exchange`) and the progress counters carry no other data and are `Relaxed`.
//! The cancellation token has its own `Acquire`/`Release` pair (see [`crate::CancelToken`]).
//! The [`Executor`]'s idle-thread count is a `Relaxed` hint for starting threads; its tasks and
//! results travel through a channel and the GIL, which synchronise. [`ordered`] streaming claims
//! on the same `Relaxed` cursor and hands parts over a channel; its counters are `Relaxed` hints
//! (each ordering is justified in `src/batch/README.md`).
//!
//! # Compared with
//! The per-item cost of both modes, measured side by side with `ThreadPoolExecutor.map` and
//! `asyncio.gather` (both driven from Python), is in `benches/results/batch.md` in the gilkit source repository;
//! most of gilkit's cost is the one clock read per item that feeds the latency statistics. GraphBit's
//! "lock-free" batch, the motivating example, spins on a CAS with `yield_now`, loses finished
//! results at the timeout and never returns a slot when a task panics.

mod asynchronous;
mod core;
mod cpu;
mod executor;
mod options;
pub mod ordered;
mod outcome;
mod python;
mod report;

use std::future::Future;

pub use cpu::ItemContext;
pub use executor::{Executor, NativeFn, add_executor_classes};
pub use options::{BatchOptions, DEFAULT_MAX_CONCURRENCY, OptionsError, Progress};
pub use outcome::{ItemError, Outcome};
pub use python::{
    BatchInterrupted, PROGRESS_INTERVAL, block_on_batch_from_python, results_to_python,
    run_cpu_from_python, run_cpu_from_python_extracted,
};
pub use report::{BatchReport, BatchStats, StopReason};

/// Runs `work` over every item on a fixed set of threads and returns one outcome per item, in
/// input order. Blocks the calling thread until the batch is done or stopped (it does not touch the
/// GIL: from Python, use [`run_cpu_from_python`], which releases it).
///
/// Uses `options.workers` threads including the calling one, `options.deadline`,
/// `options.item_timeout`, `options.token` and `options.progress`; `max_concurrency` is for
/// [`run_async`]. An item's closure cannot be interrupted: when the batch is stopped, items not yet
/// started are not started, and whatever items in flight return is reported as `TimedOut` or
/// `Cancelled`; the call returns once they return. For long items that should notice a stop, use
/// [`run_cpu_with_context`].
///
/// # Examples
///
/// ```
/// use gilkit::batch::{self, BatchOptions};
///
/// let lines = vec!["1,2".to_string(), "3,x".to_string(), "5,6".to_string()];
/// let report = batch::run_cpu(&lines, &BatchOptions::default(), |line| {
///     line.split(',').map(str::parse::<i64>).sum::<Result<i64, _>>()
/// });
/// let sums: Vec<_> = report.outcomes.into_iter().map(|o| o.ok()).collect();
/// assert_eq!(sums, [Some(3), None, Some(11)]);
/// ```
///
/// Items are shared between threads, so they must be `Sync`; an `Rc` is refused at compile time:
///
/// ```compile_fail
/// use gilkit::batch::{self, BatchOptions};
///
/// let items = vec![std::rc::Rc::new(1)];
/// let _ = batch::run_cpu(&items, &BatchOptions::default(), |n| Ok::<_, ()>(**n + 1));
/// ```
///
/// # Panics
/// Panics of `work` are caught and become [`Outcome::Panicked`]. `run_cpu` itself panics only for
/// options that [`BatchOptions::validate`] rejects.
pub fn run_cpu<I, T, E, F>(items: &[I], options: &BatchOptions, work: F) -> BatchReport<T, E>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I) -> Result<T, E> + Sync,
{
    cpu::run(items, options, |item, _| work(item))
}

/// [`run_cpu`] for work that wants to know about its item: its index, its deadline, and whether it
/// should stop early ([`ItemContext::should_stop`]) because the batch was cancelled or its time ran
/// out.
///
/// # Examples
///
/// A long computation that gives up when Ctrl-C (or any cancellation) arrives:
///
/// ```
/// use gilkit::CancelToken;
/// use gilkit::batch::{self, BatchOptions, Outcome};
///
/// let token = CancelToken::new();
/// token.cancel(); // as if Ctrl-C had arrived at once
/// let options = BatchOptions { token: Some(token), ..BatchOptions::default() };
/// let report = batch::run_cpu_with_context(&[10_u64.pow(12)], &options, |&n, cx| {
///     let mut sum = 0_u64;
///     for k in 0..n {
///         if k % 65_536 == 0 && cx.should_stop() {
///             return Err("stopped");
///         }
///         sum = sum.wrapping_add(k);
///     }
///     Ok(sum)
/// });
/// assert_eq!(report.outcomes, [Outcome::Cancelled]);
/// ```
///
/// # Panics
/// As [`run_cpu`].
pub fn run_cpu_with_context<I, T, E, F>(
    items: &[I],
    options: &BatchOptions,
    work: F,
) -> BatchReport<T, E>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I, &ItemContext<'_>) -> Result<T, E> + Sync,
{
    cpu::run(items, options, work)
}

/// Runs the futures `work(item)` with at most `options.max_concurrency` in flight and returns one
/// outcome per item, in input order.
///
/// Futures are created lazily, one when a place in the window frees up, and polled by the task
/// that awaits this function; no task is spawned per item. Uses `options.max_concurrency`,
/// `options.deadline`, `options.item_timeout` (each future races its own timeout), `options.token`
/// and `options.progress`; `workers` is for [`run_cpu`]. When the deadline passes or the token is
/// cancelled, the futures in flight are dropped.
///
/// Must be awaited inside a tokio runtime (timers): the shared one ([`crate::runtime`]) when driven
/// by [`crate::block_on`] or [`block_on_batch_from_python`]. It does not touch the GIL.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gilkit::batch::{self, BatchOptions, Outcome};
///
/// # gilkit::runtime::handle().block_on(async {
/// let delays = vec![30_u64, 10, 2_000, 20];
/// let options = BatchOptions {
///     max_concurrency: Some(2),
///     item_timeout: Some(Duration::from_millis(500)),
///     ..BatchOptions::default()
/// };
/// let report = batch::run_async(delays, &options, |ms| async move {
///     tokio::time::sleep(Duration::from_millis(ms)).await;
///     Ok::<_, String>(ms)
/// })
/// .await;
/// assert_eq!(report.outcomes[..2], [Outcome::Ok(30), Outcome::Ok(10)]);
/// assert!(report.outcomes[2].is_timed_out());
/// assert_eq!(report.outcomes[3], Outcome::Ok(20));
/// # });
/// ```
///
/// # Panics
/// Panics of `work` or of its futures are caught and become [`Outcome::Panicked`]. Panics outside a
/// tokio runtime with timers enabled, and for options that [`BatchOptions::validate`] rejects.
///
/// # Cancel safety
/// Dropping the returned future drops every in-flight item future and loses the outcomes gathered
/// so far; to stop a batch and keep them, cancel `options.token` instead.
pub async fn run_async<I, T, E, F, Fut>(
    items: Vec<I>,
    options: &BatchOptions,
    work: F,
) -> BatchReport<T, E>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    asynchronous::run(items, options, work).await
}
