//! The counters, the timing and the sampling of a [`CallSite`] (see
//! [Cost](mod@crate::callsite#cost) and [Memory ordering](mod@crate::callsite#memory-ordering)), and the
//! snapshot they make, [`CallSiteStats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Instant;
use pyo3::prelude::*;

use super::CallSite;
use crate::stats::nanos;

/// [`CallSite::detach`] times one call in this many while the work is shorter than
/// [`TIME_EVERY_CALL_FROM`] (see [Cost](mod@crate::callsite#cost)). A power of two, so the test is a mask.
pub const SAMPLE_EVERY: u64 = 16;

/// From this average work duration on, [`CallSite::detach`] times every call: the few tens of ns of
/// clock reads are then at most 1% of the call.
pub const TIME_EVERY_CALL_FROM: Duration = Duration::from_micros(2);

impl CallSite {
    /// A snapshot of this call site's statistics.
    ///
    /// Released and re-acquire times are estimates where some calls were not timed (see
    /// [Cost](mod@crate::callsite#cost)).
    pub fn stats(&self) -> CallSiteStats {
        let average = load_f64(&self.average_ns);
        let calls = self.calls.load(Relaxed);
        CallSiteStats {
            name: self.name,
            module: self.module,
            file: self.file,
            line: self.line,
            calls,
            released: calls.saturating_sub(self.held.load(Relaxed)),
            timed_calls: self.timed.load(Relaxed),
            released_time: Duration::from_nanos(self.released_ns.load(Relaxed)),
            reacquire_time: Duration::from_nanos(self.reacquire_ns.load(Relaxed)),
            held_time: Duration::from_nanos(self.held_ns.load(Relaxed)),
            adaptive_calls: self.adaptive_calls.load(Relaxed),
            adaptive_released: self.adaptive_released.load(Relaxed),
            average_work: (average > 0.0).then(|| Duration::from_nanos(average as u64)),
            threshold: Duration::from_nanos(self.threshold_ns),
        }
    }

    /// Runs a form that releases and re-acquires by itself (interruptible, async): its whole
    /// duration counts as released.
    pub(super) fn run_released_whole<R>(&self, run: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let result = run();
        add(&self.timed, 1);
        add(
            &self.released_ns,
            nanos(work_between(start, Instant::now())),
        );
        result
    }

    /// Runs `f` detached; returns its value and the work's duration.
    #[inline]
    pub(super) fn run_released_timed<T, F>(&self, py: Python<'_>, f: F) -> (T, Duration)
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let start = Instant::now();
        let (value, done) = py.detach(move || {
            let value = f();
            (value, Instant::now())
        });
        let back = Instant::now();
        let work = work_between(start, done);
        // This call and the untimed ones it stands for.
        let weight = 1 + take(&self.untimed);
        add(&self.timed, 1);
        add(&self.released_ns, nanos(work).saturating_mul(weight));
        add(
            &self.reacquire_ns,
            nanos(back.saturating_duration_since(done)).saturating_mul(weight),
        );
        (value, work)
    }

    /// Runs `f` holding the GIL; returns its value and duration.
    #[inline]
    pub(super) fn run_held<T, F: FnOnce() -> T>(&self, f: F) -> (T, Duration) {
        // Counted before the work runs, so that a call that panics is not taken for a release.
        add(&self.held, 1);
        let start = Instant::now();
        let value = f();
        let work = work_between(start, Instant::now());
        add(&self.held_ns, nanos(work));
        (value, work)
    }
}

/// A snapshot of one call site's statistics (see [`CallSite::stats`] and [`call_sites`](super::call_sites)).
///
/// Converts into a Python `dict` keyed by the field names (`#[derive(IntoPyObject)]`, gilkit's
/// [one convention](crate::stats#stats-in-python)): `name`, `module`, `file`, `line`, `calls`,
/// `released`, `timed_calls`, `released_s`, `reacquire_s`, `held_s`, `adaptive_calls`,
/// `adaptive_released`, `average_work_s` (`None` until known), `threshold_s`.
#[derive(Clone, Debug, PartialEq, IntoPyObject)]
#[non_exhaustive]
pub struct CallSiteStats {
    /// The call site's name: the function's name for `#[nogil]` (`Type.method` when the
    /// attribute sits on the impl block), the given name for [`callsite!`](crate::callsite!).
    pub name: &'static str,
    /// The module path where the call site is defined.
    pub module: &'static str,
    /// The source file where the call site is defined.
    pub file: &'static str,
    /// The source line where the call site is defined.
    pub line: u32,
    /// Calls made.
    pub calls: u64,
    /// Calls that released the GIL.
    pub released: u64,
    /// Released calls whose durations were measured; where this is less than `released`, each
    /// stands for the untimed calls before it in the times below (see [Cost](mod@crate::callsite#cost)).
    pub timed_calls: u64,
    /// Time the work ran with the GIL released.
    #[pyo3(item("released_s"), into_py_with = crate::stats::seconds)]
    pub released_time: Duration,
    /// Time spent re-acquiring the GIL after released work (0 for interruptible and async
    /// calls, whose re-acquisitions are part of their released time).
    #[pyo3(item("reacquire_s"), into_py_with = crate::stats::seconds)]
    pub reacquire_time: Duration,
    /// Time the work ran holding the GIL (adaptive calls that did not release).
    #[pyo3(item("held_s"), into_py_with = crate::stats::seconds)]
    pub held_time: Duration,
    /// Calls decided by the adaptive policy.
    pub adaptive_calls: u64,
    /// Adaptive calls that released the GIL.
    pub adaptive_released: u64,
    /// The moving average of the work's duration, once known (unsized adaptive calls only).
    #[pyo3(item("average_work_s"), into_py_with = crate::stats::optional_seconds)]
    pub average_work: Option<Duration>,
    /// The adaptive policy's threshold at this call site.
    #[pyo3(item("threshold_s"), into_py_with = crate::stats::seconds)]
    pub threshold: Duration,
}

impl CallSiteStats {
    /// The name under which [`callsite_stats`](super::callsite_stats) reports this call site: `module::name`.
    pub fn qualified_name(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// Adds `n` to a counter; returns its value before. See [Memory ordering](mod@crate::callsite#memory-ordering):
/// the caller is attached to the interpreter, which on a GIL build means it holds the GIL.
#[inline]
pub(super) fn add(counter: &AtomicU64, n: u64) -> u64 {
    #[cfg(not(Py_GIL_DISABLED))]
    {
        let old = counter.load(Relaxed);
        counter.store(old.wrapping_add(n), Relaxed);
        old
    }
    #[cfg(Py_GIL_DISABLED)]
    {
        counter.fetch_add(n, Relaxed)
    }
}

/// Takes a counter's value, leaving 0; same reasoning as [`add`].
#[inline]
pub(super) fn take(counter: &AtomicU64) -> u64 {
    #[cfg(not(Py_GIL_DISABLED))]
    {
        let old = counter.load(Relaxed);
        counter.store(0, Relaxed);
        old
    }
    #[cfg(Py_GIL_DISABLED)]
    {
        counter.swap(0, Relaxed)
    }
}

/// The duration of work between two clock readings.
///
/// Every duration the policy and the statistics depend on goes through here, so that unit tests
/// can substitute a fixed one (`test_hooks::with_work_taking`, for gilkit's unit tests and
/// behind the `test-hooks` feature for test extensions): a verdict about sampling or the
/// adaptive policy must not depend on how long the work took on a shared machine (a thread
/// descheduled for a moment makes a 100 ns call "take" milliseconds).
#[inline]
pub(super) fn work_between(start: Instant, end: Instant) -> Duration {
    #[cfg(any(test, feature = "test-hooks"))]
    if let Some(fixed) = super::test_hooks::FIXED_WORK.get() {
        return fixed;
    }
    end.saturating_duration_since(start)
}

/// Reads a moving average stored as `f64` bits (0.0: no sample yet).
#[inline]
pub(super) fn load_f64(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Relaxed))
}
