//! How a batch runs ([`BatchOptions`]) and how to watch it run ([`Progress`]).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::CancelToken;

/// In-flight futures of [`run_async`](super::run_async) when
/// [`BatchOptions::max_concurrency`] is `None`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// How a batch runs. Every field is optional; [`BatchOptions::default()`] runs on every CPU with no
/// deadline, no timeout and no cancellation.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use gilkit::CancelToken;
/// use gilkit::batch::{BatchOptions, Progress};
///
/// let progress = Progress::new();
/// let options = BatchOptions {
///     workers: Some(2),
///     deadline: Some(Instant::now() + Duration::from_secs(30)),
///     item_timeout: Some(Duration::from_secs(1)),
///     token: Some(CancelToken::new()),
///     progress: Some(progress.clone()),
///     ..BatchOptions::default()
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    /// Threads of [`run_cpu`](super::run_cpu), the calling thread included. `None`: one per CPU
    /// (`std::thread::available_parallelism`). Never more than the number of items.
    pub workers: Option<usize>,
    /// Futures of [`run_async`](super::run_async) in flight at once. `None`:
    /// [`DEFAULT_MAX_CONCURRENCY`].
    pub max_concurrency: Option<usize>,
    /// When the whole batch must stop. Items not finished by then are
    /// [`Outcome::TimedOut`](super::Outcome::TimedOut); finished ones keep their results.
    pub deadline: Option<Instant>,
    /// How long one item may take, from its start. An item over it is
    /// [`Outcome::TimedOut`](super::Outcome::TimedOut).
    pub item_timeout: Option<Duration>,
    /// Cancels the batch: items not finished when it is cancelled are
    /// [`Outcome::Cancelled`](super::Outcome::Cancelled).
    pub token: Option<CancelToken>,
    /// Counts finished items while the batch runs, for a progress bar.
    pub progress: Option<Progress>,
}

impl BatchOptions {
    /// Checks the options; the run functions panic on what this rejects, the Python helpers raise
    /// `ValueError`.
    ///
    /// # Errors
    /// [`OptionsError`] when `workers` or `max_concurrency` is `Some(0)` or `item_timeout` is zero.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.workers == Some(0) {
            return Err(OptionsError::ZeroWorkers);
        }
        if self.max_concurrency == Some(0) {
            return Err(OptionsError::ZeroConcurrency);
        }
        if self.item_timeout == Some(Duration::ZERO) {
            return Err(OptionsError::ZeroItemTimeout);
        }
        Ok(())
    }

    pub(crate) fn validated(&self) -> &Self {
        if let Err(error) = self.validate() {
            panic!("invalid gilkit::batch::BatchOptions: {error}");
        }
        self
    }

    /// The number of CPU workers for `items` items: at least 1, at most `items`.
    pub(crate) fn cpu_workers(&self, items: usize) -> usize {
        let wanted = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
        wanted.min(items).max(1)
    }

    /// The async window for `items` items: at least 1, at most `items`.
    pub(crate) fn async_window(&self, items: usize) -> usize {
        self.max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY)
            .min(items)
            .max(1)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.token.as_ref().is_some_and(CancelToken::is_cancelled)
    }
}

/// The error of [`BatchOptions::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    /// `workers` was `Some(0)`.
    ZeroWorkers,
    /// `max_concurrency` was `Some(0)`.
    ZeroConcurrency,
    /// `item_timeout` was zero.
    ZeroItemTimeout,
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroWorkers => "workers must be at least 1 (or None for one per CPU)",
            Self::ZeroConcurrency => {
                "max_concurrency must be at least 1 (or None for the default of 64)"
            }
            Self::ZeroItemTimeout => "item_timeout must be positive (or None for no timeout)",
        })
    }
}

impl std::error::Error for OptionsError {}

/// A live count of finished items, readable from any thread while batches run.
///
/// Clones share the count. Pass one in [`BatchOptions::progress`]; every batch run with it adds its
/// item count to [`total`](Self::total) when it starts and each finished item to
/// [`finished`](Self::finished), so one `Progress` can follow several batches. Workers publish
/// their counts at least every millisecond and when they stop, not per item, so reading is always
/// cheap and never slows the workers. After a batch returns, its every item that ran is counted;
/// items that never started (the batch was cancelled or timed out first) are not.
///
/// # Examples
///
/// ```
/// use gilkit::batch::{self, BatchOptions, Progress};
///
/// let progress = Progress::new();
/// let options = BatchOptions { progress: Some(progress.clone()), ..BatchOptions::default() };
/// let items: Vec<u64> = (0..1000).collect();
/// batch::run_cpu(&items, &options, |&n| Ok::<_, ()>(n * n));
/// assert_eq!((progress.finished(), progress.total()), (1000, 1000));
/// ```
#[derive(Clone, Default)]
pub struct Progress {
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    finished: AtomicUsize,
    total: AtomicUsize,
}

impl Progress {
    /// A count at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Items finished so far, over every batch run with this `Progress`.
    #[must_use]
    pub fn finished(&self) -> usize {
        self.counts.finished.load(Ordering::Relaxed)
    }

    /// Items of every batch started with this `Progress`.
    #[must_use]
    pub fn total(&self) -> usize {
        self.counts.total.load(Ordering::Relaxed)
    }

    pub(crate) fn add_total(&self, items: usize) {
        self.counts.total.fetch_add(items, Ordering::Relaxed);
    }

    pub(crate) fn add_finished(&self, items: usize) {
        if items > 0 {
            self.counts.finished.fetch_add(items, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("finished", &self.finished())
            .field("total", &self.total())
            .finish()
    }
}
