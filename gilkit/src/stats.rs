//! gilkit's statistics vocabulary: the one latency histogram, the one summary type, and the
//! one way every stats snapshot becomes a Python object.
//!
//! - [`LatencySummary`]: count, median, 99th percentile, maximum and mean of a set of durations;
//!   every latency gilkit reports is one.
//! - `DurationHistogram` (crate-private): a log-linear histogram of durations whose recording is
//!   lock-free (relaxed atomic buckets), so it can be recorded into from any thread, attached or
//!   not, without a lock that could take part in a lock-order inversion with the GIL (the
//!   semaphore's requirement).
//!
//! # Stats in Python
//!
//! Every stats snapshot (gilkit's and the example packages') converts with PyO3's
//! `#[derive(IntoPyObject)]`: a snapshot becomes a `dict` keyed by its field names, and a
//! `#[pyfunction]` can return it as is. One unit convention holds for every key:
//!
//! - **durations are float seconds, and their key ends in `_s`** (`python_time_s`,
//!   `threshold_s`); a duration field carries
//!   `#[pyo3(item("name_s"), into_py_with = gilkit::stats::seconds)]` (or [`optional_seconds`]
//!   for an `Option<Duration>`, `None` when unknown);
//! - counts are ints, with no suffix;
//! - a latency is a nested `dict`, the [`LatencySummary`]'s own conversion:
//!   `{"count": int, "p50_s": float, "p99_s": float, "max_s": float, "mean_s": float}`
//!   (`stats["wait"]["p99_s"]`).
//!
//! ```
//! use std::time::Duration;
//! use gilkit::stats::LatencySummary;
//! use pyo3::prelude::*;
//!
//! #[derive(IntoPyObject)]
//! struct ParserStats {
//!     records: u64,
//!     #[pyo3(item("parse_time_s"), into_py_with = gilkit::stats::seconds)]
//!     parse_time: Duration,
//!     latency: LatencySummary,
//! }
//!
//! Python::attach(|py| {
//!     let stats = ParserStats {
//!         records: 3,
//!         parse_time: Duration::from_millis(1500),
//!         latency: LatencySummary::default(),
//!     };
//!     let d = stats.into_pyobject(py).unwrap().into_any();
//!     let parse_time: f64 = d.get_item("parse_time_s").unwrap().extract().unwrap();
//!     let p99: f64 = d.get_item("latency").unwrap().get_item("p99_s").unwrap().extract().unwrap();
//!     assert_eq!((parse_time, p99), (1.5, 0.0));
//! });
//! ```
//!
//! # Memory ordering
//! Every counter of the histogram is `Relaxed`: each is an independent tally, nothing is published
//! through them, and a summary taken while others record is a set of individually exact counts
//! read one after another (it may miss the values being recorded meanwhile).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;

/// `d` in whole nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sub-buckets per power of two: 2^3 = 8, so a reported percentile is at most 12.5% above the true
/// value (it reports the upper edge of its bucket, clamped to the exact maximum).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` ns get one exact bucket each; each further power of two gets `SUB` buckets.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// A log-linear histogram of durations (nanosecond resolution, ~12.5% precision), recorded with
/// relaxed atomics from any number of threads.
///
/// The same layout as HdrHistogram with 1 significant binary digit of 3 bits: values are grouped by
/// their highest set bit, and each group is split into 8 equal buckets.
pub(crate) struct DurationHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl DurationHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let ns = nanos(d);
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    /// Records `d` from the histogram's one owner (a batch worker): plain adds through `&mut`,
    /// no atomic read-modify-write.
    #[inline]
    pub(crate) fn record_mut(&mut self, d: Duration) {
        let ns = nanos(d);
        *self.buckets[bucket_of(ns)].get_mut() += 1;
        *self.count.get_mut() += 1;
        let sum = self.sum_ns.get_mut();
        *sum = sum.wrapping_add(ns);
        let max = self.max_ns.get_mut();
        *max = (*max).max(ns);
    }

    /// Adds every value recorded in `other` (the workers' histograms of one batch, merged).
    pub(crate) fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine.get_mut() += theirs.load(Relaxed);
        }
        *self.count.get_mut() += other.count.load(Relaxed);
        let sum = self.sum_ns.get_mut();
        *sum = sum.wrapping_add(other.sum_ns.load(Relaxed));
        let max = self.max_ns.get_mut();
        *max = (*max).max(other.max_ns.load(Relaxed));
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max = self.max_ns.load(Relaxed);
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            // The rank of the q-th value, 1-based: the smallest bucket whose cumulative count reaches
            // it holds the answer.
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(upper_edge(i).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        LatencySummary {
            count,
            p50: quantile(0.50),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
            mean: Duration::from_nanos(self.sum_ns.load(Relaxed).checked_div(count).unwrap_or(0)),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
    let group = (exp - SUB_BITS + 1) as usize;
    let sub = ((ns >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    group * SUB + sub
}

/// The largest value that falls into bucket `i`.
fn upper_edge(i: usize) -> u64 {
    let (group, sub) = (i / SUB, (i % SUB) as u64);
    if group == 0 {
        return sub;
    }
    // The first value of the next bucket, minus one; computed wide, as the last bucket ends at 2^64.
    let next = u128::from(SUB as u64 + sub + 1) << (group - 1);
    u64::try_from(next - 1).unwrap_or(u64::MAX)
}

/// Percentiles of a set of durations (from a histogram: each percentile is within 12.5% above the
/// true value, and never above `max`, which is exact).
///
/// In Python, a `dict`: `{"count": int, "p50_s": float, "p99_s": float, "max_s": float,
/// "mean_s": float}` (seconds; see [Stats in Python](self#stats-in-python)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoPyObject)]
pub struct LatencySummary {
    /// How many durations were recorded.
    pub count: u64,
    /// The median.
    #[pyo3(item("p50_s"), into_py_with = seconds)]
    pub p50: Duration,
    /// The 99th percentile.
    #[pyo3(item("p99_s"), into_py_with = seconds)]
    pub p99: Duration,
    /// The largest recorded duration (exact).
    #[pyo3(item("max_s"), into_py_with = seconds)]
    pub max: Duration,
    /// The arithmetic mean (exact).
    #[pyo3(item("mean_s"), into_py_with = seconds)]
    pub mean: Duration,
}

/// A duration as Python float seconds: the `into_py_with` converter of every duration field of a
/// stats snapshot (`#[pyo3(item("name_s"), into_py_with = gilkit::stats::seconds)]`).
///
/// Holds the GIL (it builds a Python float).
///
/// # Errors
/// Never in practice (a float is always built); the signature is the one `into_py_with` takes.
pub fn seconds<'py>(d: Cow<'_, Duration>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    d.as_secs_f64().into_bound_py_any(py)
}

/// An optional duration as Python float seconds, `None` for `None` (as [`seconds`]).
///
/// # Errors
/// Never in practice; the signature is the one `into_py_with` takes.
pub fn optional_seconds<'py>(
    d: Cow<'_, Option<Duration>>,
    py: Python<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    d.map(|d| d.as_secs_f64()).into_bound_py_any(py)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for ns in (0..5000u64).chain([u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b < BUCKETS);
            assert!(b >= last, "bucket index must not decrease ({ns})");
            assert!(
                upper_edge(b) >= ns,
                "value {ns} above its bucket's upper edge"
            );
            last = b;
        }
    }

    #[test]
    fn percentiles_within_an_eighth() {
        let h = DurationHistogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_micros(1000));
        let p50 = s.p50.as_nanos() as f64;
        let p99 = s.p99.as_nanos() as f64;
        assert!((500_000.0..=500_000.0 * 1.125).contains(&p50), "{p50}");
        assert!((990_000.0..=1_000_000.0).contains(&p99), "{p99}");
        assert_eq!(s.mean, Duration::from_nanos(500_500));
    }

    #[test]
    fn owned_recording_and_merging_match_shared_recording() {
        let shared = DurationHistogram::new();
        let (mut a, mut b) = (DurationHistogram::new(), DurationHistogram::new());
        for us in 1..=1000u64 {
            shared.record(Duration::from_micros(us));
            let owner = if us % 2 == 0 { &mut a } else { &mut b };
            owner.record_mut(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a.summary(), shared.summary());
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let s = DurationHistogram::new().summary();
        assert_eq!(s, LatencySummary::default());
    }

    #[test]
    fn summary_converts_to_a_dict_of_count_and_float_seconds() {
        Python::attach(|py| {
            let s = LatencySummary {
                count: 4,
                p50: Duration::from_millis(1),
                p99: Duration::from_millis(2),
                max: Duration::from_millis(3),
                mean: Duration::from_micros(1500),
            };
            let d = s.into_pyobject(py).unwrap();
            let item = |key: &str| d.get_item(key).unwrap().unwrap();
            let mut keys: Vec<String> = d.keys().extract().unwrap();
            keys.sort();
            assert_eq!(keys, ["count", "max_s", "mean_s", "p50_s", "p99_s"]);
            assert!(item("count").is_exact_instance_of::<pyo3::types::PyInt>());
            assert_eq!(item("p99_s").extract::<f64>().unwrap(), 0.002);
            assert_eq!(item("mean_s").extract::<f64>().unwrap(), 0.0015);
        });
    }
}
