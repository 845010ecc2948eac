//! Statistics of [`GilSemaphore`](super::GilSemaphore) and [`GilBatcher`](crate::GilBatcher).
//!
//! Recording is lock-free: every figure is a relaxed atomic counter, and wait times go into gilkit's
//! one latency histogram ([`crate::stats`]), whose recording is lock-free too. No lock is ever taken
//! to record, so recording can never take part in a lock-order inversion with the GIL (see the
//! module doc of `semaphore`), and threads attached to Python never block on it.
//!
//! # Memory ordering
//!
//! All counters use `Relaxed`: each is an independent tally, nothing is published through them, and
//! a snapshot ([`GilSemaphore::stats`](super::GilSemaphore::stats)) is a set of individually exact
//! counts read one after another, not one atomic picture. A snapshot taken while calls are running
//! may therefore be off by the calls in flight (e.g. `total_acquired` already counts a permit whose
//! wait time is not yet in the histogram). Counts never go backwards.

use std::borrow::Cow;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

pub use crate::stats::LatencySummary;
use crate::stats::seconds;

/// A snapshot of a [`GilSemaphore`](super::GilSemaphore)'s state and history, from
/// [`GilSemaphore::stats`](super::GilSemaphore::stats).
///
/// Converts into a Python `dict` keyed by the field names (`#[derive(IntoPyObject)]`, gilkit's
/// [one convention](crate::stats#stats-in-python)), so a `#[pyfunction]` can return it directly:
/// `permits`, `in_use`, `waiting`, `max_queue` (`None` when unbounded), `total_acquired`,
/// `rejected_busy`, `timed_out`, `wait` (a latency dict: `count`, `p50_s`, `p99_s`, `max_s`,
/// `mean_s`), `python_calls`, `python_time_s`, `attach_wait_s`. The conversion holds the GIL and
/// takes no lock.
#[derive(Debug, Clone, PartialEq, IntoPyObject)]
#[non_exhaustive]
pub struct SemaphoreStats {
    /// Permits the semaphore was built with.
    pub permits: usize,
    /// Permits held right now.
    pub in_use: usize,
    /// Tasks waiting for a permit right now.
    pub waiting: usize,
    /// The queue bound, if any (see
    /// [`GilSemaphoreBuilder::max_queue`](super::GilSemaphoreBuilder::max_queue)).
    pub max_queue: Option<usize>,
    /// Permits handed out since the semaphore was built.
    pub total_acquired: u64,
    /// Acquisitions refused with [`AcquireError::Busy`](super::AcquireError::Busy).
    pub rejected_busy: u64,
    /// Acquisitions that gave up with [`AcquireError::TimedOut`](super::AcquireError::TimedOut).
    pub timed_out: u64,
    /// Time from asking for a permit to getting it, over every permit handed out.
    pub wait: LatencySummary,
    /// Calls into Python made through a permit ([`OwnedGilPermit::attach`](super::OwnedGilPermit::attach),
    /// [`GilSemaphore::run`](super::GilSemaphore::run)).
    pub python_calls: u64,
    /// Total time spent inside those calls, attached (the wait for the GIL itself excluded).
    #[pyo3(item("python_time_s"), into_py_with = seconds)]
    pub python_time: Duration,
    /// Total time those calls waited to attach (for the GIL, on a GIL build).
    #[pyo3(item("attach_wait_s"), into_py_with = seconds)]
    pub attach_wait: Duration,
}

/// A snapshot of a [`GilBatcher`](crate::GilBatcher)'s state and history, from
/// [`GilBatcher::stats`](crate::GilBatcher::stats).
///
/// Converts into a Python `dict` keyed by the field names (`#[derive(IntoPyObject)]`, gilkit's
/// [one convention](crate::stats#stats-in-python)): `max_batch`, `max_wait_s`, `max_queue`,
/// `queue_len`, `submitted`, `succeeded`, `failed`, `rejected_busy`, `cancelled`, `batches`,
/// `batch_sizes` (a `dict` from size to count, sizes that never occurred left out),
/// `mean_batch_size`, `queue_wait` (a latency dict: `count`, `p50_s`, `p99_s`, `max_s`,
/// `mean_s`), `python_time_s`. The conversion holds the GIL and takes no lock.
#[derive(Debug, Clone, PartialEq, IntoPyObject)]
#[non_exhaustive]
pub struct BatcherStats {
    /// The configured largest batch.
    pub max_batch: usize,
    /// The configured longest wait for a batch to fill.
    #[pyo3(item("max_wait_s"), into_py_with = seconds)]
    pub max_wait: Duration,
    /// The configured queue bound, if any.
    pub max_queue: Option<usize>,
    /// Requests queued right now (not yet taken into a batch).
    pub queue_len: usize,
    /// Requests accepted into the queue since the batcher was built.
    pub submitted: u64,
    /// Requests answered with a value.
    pub succeeded: u64,
    /// Requests answered with an error (a Python exception, a panic, a wrong-length result).
    pub failed: u64,
    /// Requests refused with [`BatchError::Busy`](crate::batcher::BatchError::Busy).
    pub rejected_busy: u64,
    /// Requests whose caller went away (the `submit` future was dropped) before their batch ran;
    /// they were skipped, never passed to the model.
    pub cancelled: u64,
    /// Batches run, i.e. GIL acquisitions.
    pub batches: u64,
    /// `batch_sizes[n - 1]` is how many batches had exactly `n` requests (length `max_batch`).
    #[pyo3(into_py_with = sizes_to_dict)]
    pub batch_sizes: Vec<u64>,
    /// Mean requests per batch (0 before the first batch).
    pub mean_batch_size: f64,
    /// Time from `submit` to the start of the request's batch.
    pub queue_wait: LatencySummary,
    /// Total time spent inside the batch function, attached.
    #[pyo3(item("python_time_s"), into_py_with = seconds)]
    pub python_time: Duration,
}

/// Mean requests per batch from the batch-size histogram (`batch_sizes[n - 1]` batches of `n`)
/// and the number of batches; 0 before the first batch.
pub(crate) fn mean_batch_size(batch_sizes: &[u64], batches: u64) -> f64 {
    let items: u64 = (1..).zip(batch_sizes).map(|(n, c)| n * c).sum();
    if batches == 0 {
        0.0
    } else {
        items as f64 / batches as f64
    }
}

/// `batch_sizes` in Python: `{size: count}` for the sizes that occurred.
#[allow(
    clippy::owned_cow,
    reason = "`into_py_with` passes a `Cow` of the field's own type"
)]
fn sizes_to_dict<'py>(sizes: Cow<'_, Vec<u64>>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    for (n, &c) in (1usize..).zip(sizes.iter()) {
        if c > 0 {
            d.set_item(n, c)?;
        }
    }
    Ok(d.into_any())
}
