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

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

pub use crate::stats::LatencySummary;

/// A snapshot of a [`GilSemaphore`](super::GilSemaphore)'s state and history, from
/// [`GilSemaphore::stats`](super::GilSemaphore::stats).
///
/// Converts into a Python `dict` (flat keys, durations as float seconds with an `_s` suffix), so a
/// `#[pyfunction]` can return it directly; see [`SemaphoreStats::to_dict`].
#[derive(Debug, Clone, PartialEq)]
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
    pub python_time: Duration,
    /// Total time those calls waited to attach (for the GIL, on a GIL build).
    pub attach_wait: Duration,
}

impl SemaphoreStats {
    /// The snapshot as a Python `dict`: `permits`, `in_use`, `waiting`, `max_queue` (`None` when
    /// unbounded), `total_acquired`, `rejected_busy`, `timed_out`, `wait_count`, `wait_p50_s`,
    /// `wait_p99_s`, `wait_max_s`, `wait_mean_s`, `python_calls`, `python_time_s`, `attach_wait_s`.
    ///
    /// Holds the GIL (it builds Python objects); takes no lock.
    pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("permits", self.permits)?;
        d.set_item("in_use", self.in_use)?;
        d.set_item("waiting", self.waiting)?;
        d.set_item("max_queue", self.max_queue)?;
        d.set_item("total_acquired", self.total_acquired)?;
        d.set_item("rejected_busy", self.rejected_busy)?;
        d.set_item("timed_out", self.timed_out)?;
        self.wait.add_to_dict(&d, "wait")?;
        d.set_item("python_calls", self.python_calls)?;
        d.set_item("python_time_s", self.python_time.as_secs_f64())?;
        d.set_item("attach_wait_s", self.attach_wait.as_secs_f64())?;
        Ok(d)
    }
}

impl<'py> IntoPyObject<'py> for SemaphoreStats {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.to_dict(py)
    }
}

/// A snapshot of a [`GilBatcher`](crate::GilBatcher)'s state and history, from
/// [`GilBatcher::stats`](crate::GilBatcher::stats).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatcherStats {
    /// The configured largest batch.
    pub max_batch: usize,
    /// The configured longest wait for a batch to fill.
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
    pub batch_sizes: Vec<u64>,
    /// Time from `submit` to the start of the request's batch.
    pub queue_wait: LatencySummary,
    /// Total time spent inside the batch function, attached.
    pub python_time: Duration,
}

impl BatcherStats {
    /// Mean requests per batch (0 before the first batch).
    pub fn mean_batch_size(&self) -> f64 {
        let items: u64 = (1..).zip(&self.batch_sizes).map(|(n, c)| n * c).sum();
        if self.batches == 0 {
            0.0
        } else {
            items as f64 / self.batches as f64
        }
    }

    /// The snapshot as a Python `dict`: the fields by name (durations as float seconds with an `_s`
    /// suffix; `queue_wait` flattened to `queue_wait_p50_s` etc.), `batch_sizes` as a `dict` from
    /// size to count (sizes that never occurred left out) and `mean_batch_size`.
    ///
    /// Holds the GIL (it builds Python objects); takes no lock.
    pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("max_batch", self.max_batch)?;
        d.set_item("max_wait_s", self.max_wait.as_secs_f64())?;
        d.set_item("max_queue", self.max_queue)?;
        d.set_item("queue_len", self.queue_len)?;
        d.set_item("submitted", self.submitted)?;
        d.set_item("succeeded", self.succeeded)?;
        d.set_item("failed", self.failed)?;
        d.set_item("rejected_busy", self.rejected_busy)?;
        d.set_item("cancelled", self.cancelled)?;
        d.set_item("batches", self.batches)?;
        let sizes = PyDict::new(py);
        for (n, &c) in (1usize..).zip(&self.batch_sizes) {
            if c > 0 {
                sizes.set_item(n, c)?;
            }
        }
        d.set_item("batch_sizes", sizes)?;
        d.set_item("mean_batch_size", self.mean_batch_size())?;
        self.queue_wait.add_to_dict(&d, "queue_wait")?;
        d.set_item("python_time_s", self.python_time.as_secs_f64())?;
        Ok(d)
    }
}

impl<'py> IntoPyObject<'py> for BatcherStats {
    type Target = PyDict;
    type Output = Bound<'py, PyDict>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.to_dict(py)
    }
}
