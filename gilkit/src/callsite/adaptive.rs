//! The adaptive policy of a [`CallSite`]: release only when the work is expected to be long
//! enough (see [the module doc](mod@crate::callsite#the-adaptive-policy)).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::prelude::*;

use super::CallSite;
use super::sampling::{add, load_f64};

/// The work duration from which [`CallSite::detach_adaptive`] releases the GIL, unless the call
/// site sets its own with [`CallSite::with_threshold`].
///
/// 250 µs is 1/20 of Python's default switch interval (5 ms), the longest a busy Python thread
/// may make a released call wait to get the GIL back. Holding the GIL through shorter work costs
/// the other threads at most 1/20 of a switch interval, while releasing it could cost the caller a
/// whole one; above it, what the other threads gain grows with the work while the caller's cost
/// stays bounded. See the guide's "choosing a policy" section and `benches/results/nogil.md` in the gilkit source repository.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_micros(250);

/// The weight of a new sample in the moving average of work durations (1/8, as TCP's RTT estimate).
const AVERAGE_WEIGHT: f64 = 1.0 / 8.0;

impl CallSite {
    /// Runs `f` with the GIL released only if it is expected to take at least the call site's
    /// threshold (see [the adaptive policy](mod@crate::callsite#the-adaptive-policy)); otherwise runs it holding
    /// the GIL.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pyo3::prelude::*;
    ///
    /// fn tiny(py: Python<'_>, x: u64) -> u64 {
    ///     // A generous threshold, so that this example holds even on a loaded machine.
    ///     let site = gilkit::callsite!("tiny", threshold = Duration::from_millis(50));
    ///     site.detach_adaptive(py, || x + 1)
    /// }
    ///
    /// Python::attach(|py| {
    ///     for _ in 0..10 {
    ///         tiny(py, 1);
    ///     }
    /// });
    /// let stats = gilkit::callsite::call_sites().into_iter().find(|s| s.name == "tiny").unwrap();
    /// // Only the first call, with nothing known yet, released the GIL.
    /// assert_eq!((stats.adaptive_calls, stats.adaptive_released), (10, 1));
    /// ```
    ///
    /// # Panics
    ///
    /// If `f` panics, the panic propagates (with the GIL held) and the call is not timed.
    #[inline]
    pub fn detach_adaptive<T, F>(&'static self, py: Python<'_>, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.run_adaptive(py, &self.average_ns, 1.0, f)
    }

    /// Like [`detach_adaptive`](Self::detach_adaptive), with a size hint from the caller (bytes,
    /// items, ...): predicts the duration as the call site's average time per unit times `size`.
    ///
    /// Choose this form when the work's duration follows its input: one call site then releases
    /// for a large input and holds for a small one.
    ///
    /// # Panics
    ///
    /// If `f` panics, the panic propagates (with the GIL held) and the call is not timed.
    #[inline]
    pub fn detach_adaptive_sized<T, F>(&'static self, py: Python<'_>, size: usize, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.run_adaptive(py, &self.average_ns_per_unit, size.max(1) as f64, f)
    }

    #[inline]
    pub(super) fn should_release(&self, predicted_ns: f64) -> bool {
        // 0.0 is "no sample yet": release (see the module doc).
        predicted_ns == 0.0 || predicted_ns >= self.threshold_ns as f64
    }

    /// The adaptive policy: predicts the work's duration as `average × units`, releases or holds,
    /// and feeds the measured duration per unit back into `average`.
    #[inline]
    pub(super) fn run_adaptive<T, F>(
        &'static self,
        py: Python<'_>,
        average: &AtomicU64,
        units: f64,
        f: F,
    ) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.enter();
        add(&self.adaptive_calls, 1);
        let (value, elapsed) = if self.should_release(load_f64(average) * units) {
            add(&self.adaptive_released, 1);
            self.run_released_timed(py, f)
        } else {
            self.run_held(f)
        };
        update_average(average, elapsed.as_nanos() as f64 / units);
        value
    }
}

#[inline]
pub(super) fn update_average(cell: &AtomicU64, sample: f64) {
    let old = load_f64(cell);
    let new = if old == 0.0 {
        sample
    } else {
        old + (sample - old) * AVERAGE_WEIGHT
    };
    // A sample of exactly 0 would read back as "no sample yet"; keep the smallest positive.
    cell.store(new.max(f64::MIN_POSITIVE).to_bits(), Relaxed);
}
