//! What a batch returns: [`BatchReport`] (one [`Outcome`] per item, in input order) and
//! [`BatchStats`].

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;

use super::{ItemError, Outcome};
use crate::stats::{DurationHistogram, LatencySummary, seconds};

/// The result of a batch: one outcome per input item, in input order, and statistics.
///
/// # Examples
///
/// ```
/// use gilkit::batch::{self, BatchOptions};
///
/// let words = ["7", "x", "35"];
/// let report = batch::run_cpu(&words, &BatchOptions::default(), |w| w.parse::<u32>());
/// assert_eq!(report.stats.succeeded, 2);
/// let results = report.into_results();
/// assert_eq!(results[2], Ok(35));
/// assert!(results[1].as_ref().unwrap_err().is_failed());
/// ```
#[derive(Debug, Clone)]
#[must_use = "a report holds the batch's results and errors"]
pub struct BatchReport<T, E> {
    /// One outcome per input item, at the item's position.
    pub outcomes: Vec<Outcome<T, E>>,
    /// Counts, duration, throughput and latency.
    pub stats: BatchStats,
}

impl<T, E> BatchReport<T, E> {
    /// The outcomes as `Result`s, in input order.
    pub fn into_results(self) -> Vec<Result<T, ItemError<E>>> {
        self.outcomes
            .into_iter()
            .map(Outcome::into_result)
            .collect()
    }

    /// Returns `true` when every item succeeded.
    #[must_use]
    pub fn all_ok(&self) -> bool {
        self.stats.succeeded == self.stats.total
    }
}

/// Why a batch stopped before every item ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// [`BatchOptions::deadline`](super::BatchOptions::deadline) passed.
    Deadline,
    /// [`BatchOptions::token`](super::BatchOptions::token) was cancelled.
    Cancelled,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Deadline => "the batch deadline passed",
            Self::Cancelled => "the batch was cancelled",
        })
    }
}

/// Statistics of one batch. The five outcome counts add up to `total`.
///
/// Converts into a Python `dict` keyed by the field names (`#[derive(IntoPyObject)]`, gilkit's
/// [one convention](crate::stats#stats-in-python)): `total`, `succeeded`, `failed`, `panicked`,
/// `timed_out`, `cancelled`, `stopped` (`None`, `"deadline"` or `"cancelled"`), `duration_s`,
/// `throughput`, `concurrency`, `latency` (a latency dict: `count`, `p50_s`, `p99_s`, `max_s`,
/// `mean_s`; count 0 and zeros when no item finished). The conversion holds the GIL.
#[derive(Debug, Clone, Default, PartialEq, IntoPyObject)]
pub struct BatchStats {
    /// Items in the batch.
    pub total: usize,
    /// Items whose work returned `Ok`.
    pub succeeded: usize,
    /// Items whose work returned `Err`.
    pub failed: usize,
    /// Items whose work panicked.
    pub panicked: usize,
    /// Items over their timeout or unfinished at the deadline.
    pub timed_out: usize,
    /// Items unfinished when the batch was cancelled.
    pub cancelled: usize,
    /// Why the batch stopped early, if it did.
    #[pyo3(into_py_with = stop_reason_name)]
    pub stopped: Option<StopReason>,
    /// Wall time of the whole batch.
    #[pyo3(item("duration_s"), into_py_with = seconds)]
    pub duration: Duration,
    /// Items that finished by themselves (`Ok`, `Err` or `Panicked`) per second of the batch
    /// (0 for a batch that took no measurable time).
    pub throughput: f64,
    /// CPU workers (`run_cpu`) or futures in flight at most (`run_async`).
    pub concurrency: usize,
    /// Latency of the items that finished by themselves (`Ok`, `Err`, `Panicked`), from the
    /// item's start to its end: count, median, 99th percentile, maximum and mean (`count` 0 and
    /// zeros when no item finished; percentiles within 12.5% above the true value, maximum and
    /// mean exact).
    pub latency: LatencySummary,
}

impl BatchStats {
    pub(crate) fn new<T, E>(
        outcomes: &[Outcome<T, E>],
        stopped: Option<StopReason>,
        duration: Duration,
        concurrency: usize,
        latency: &Latency,
    ) -> Self {
        let mut stats = Self {
            total: outcomes.len(),
            stopped,
            duration,
            concurrency,
            ..Self::default()
        };
        for outcome in outcomes {
            match outcome {
                Outcome::Ok(_) => stats.succeeded += 1,
                Outcome::Err(_) => stats.failed += 1,
                Outcome::Panicked(_) => stats.panicked += 1,
                Outcome::TimedOut => stats.timed_out += 1,
                Outcome::Cancelled => stats.cancelled += 1,
            }
        }
        stats.latency = latency.histogram.summary();
        let seconds = duration.as_secs_f64();
        if seconds > 0.0 {
            stats.throughput = (stats.succeeded + stats.failed + stats.panicked) as f64 / seconds;
        }
        stats
    }
}

/// `stopped` in Python: `None`, `"deadline"` or `"cancelled"`.
fn stop_reason_name<'py>(
    reason: Cow<'_, Option<StopReason>>,
    py: Python<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    reason
        .map(|reason| match reason {
            StopReason::Deadline => "deadline",
            StopReason::Cancelled => "cancelled",
        })
        .into_bound_py_any(py)
}

/// Per-item latencies of one worker, merged at the end: gilkit's one latency histogram
/// ([`crate::stats`]), recorded through `&mut` by its one owner; memory stays bounded whatever
/// the batch size.
pub(crate) struct Latency {
    histogram: DurationHistogram,
}

impl Latency {
    pub(crate) fn new() -> Self {
        Self {
            histogram: DurationHistogram::new(),
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, latency: Duration) {
        self.histogram.record_mut(latency);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.histogram.merge(&other.histogram);
    }
}
