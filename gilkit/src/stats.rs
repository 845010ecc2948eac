//! gilkit's statistics vocabulary: the one latency histogram, the one summary type, and the
//! conventions every stats snapshot follows.
//!
//! - [`LatencySummary`]: count, median, 99th percentile, maximum and mean of a set of durations;
//!   every latency gilkit reports is one.
//! - `DurationHistogram` (crate-private): a log-linear histogram of durations whose recording is
//!   lock-free (relaxed atomic buckets), so it can be recorded into from any thread, attached or
//!   not, without a lock that could take part in a lock-order inversion with the GIL (the
//!   semaphore's requirement).
//! - Python: a snapshot becomes a flat `dict` whose duration keys end in `_s` and hold float
//!   seconds (`LatencySummary::add_to_dict` writes a summary under a prefix); counts are ints.
//!
//! # Memory ordering
//! Every counter of the histogram is `Relaxed`: each is an independent tally, nothing is published
//! through them, and a summary taken while others record is a set of individually exact counts
//! read one after another (it may miss the values being recorded meanwhile).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many durations were recorded.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest recorded duration (exact).
    pub max: Duration,
    /// The arithmetic mean (exact).
    pub mean: Duration,
}

impl LatencySummary {
    /// Adds the summary to `d` as `{prefix}_count` and `{prefix}_p50_s`, `_p99_s`, `_max_s`,
    /// `_mean_s` (float seconds): the one way gilkit's stats put a latency into Python.
    pub(crate) fn add_to_dict(&self, d: &Bound<'_, PyDict>, prefix: &str) -> PyResult<()> {
        d.set_item(format!("{prefix}_count"), self.count)?;
        d.set_item(format!("{prefix}_p50_s"), self.p50.as_secs_f64())?;
        d.set_item(format!("{prefix}_p99_s"), self.p99.as_secs_f64())?;
        d.set_item(format!("{prefix}_max_s"), self.max.as_secs_f64())?;
        d.set_item(format!("{prefix}_mean_s"), self.mean.as_secs_f64())?;
        Ok(())
    }
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
}
