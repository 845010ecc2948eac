//! Per-call-site GIL statistics and the adaptive release policy.
//!
//! A [`CallSite`] is a `static` that names one place in the code where work runs with the GIL
//! released: each `#[gilkit::nogil]` function gets one, and [`callsite!`](crate::callsite!) makes
//! one for a hand-written release. Running work through a call site records:
//!
//! - how many calls it saw and how many of them released the GIL,
//! - how long the work ran with the GIL released (measured or estimated, see [Cost](#cost)) and
//!   how long it ran holding it,
//! - how long the thread then waited to re-acquire the GIL (the hidden cost of releasing: when
//!   another Python thread is busy, it keeps the GIL for up to a whole switch interval, 5 ms by
//!   default),
//! - how often the adaptive policy chose to release.
//!
//! Every call site registers itself on first use in a process-wide registry, which
//! [`call_sites`] reads from Rust and [`add_stats_function`] exposes to Python as
//! `callsite_stats()`, a dict per call site.
//!
//! # Layout
//! This file holds the [`CallSite`] type and its plain and interruptible forms; beside it,
//! `sampling.rs` the counters, the timing and the sampling of short calls ([Cost](#cost)),
//! `adaptive.rs` the adaptive policy, `registry.rs` the process-wide registry and the Python
//! view of it.
//!
//! # The adaptive policy
//!
//! Releasing the GIL costs a few tens of nanoseconds when no other thread wants it. When another
//! Python thread is busy, a released call has to wait for that thread to give the GIL back, which
//! it does only at the end of its switch interval (measured: `benches/results/nogil.md` in the gilkit source repository).
//! [`CallSite::detach_adaptive`] therefore releases only when the work is expected to be long
//! enough to be worth it: it keeps an exponentially weighted moving average (weight 1/8) of the
//! work's duration at this call site, and releases when that average reaches the call site's
//! threshold ([`DEFAULT_THRESHOLD`], 250 µs, unless set with [`CallSite::with_threshold`]).
//! [`CallSite::detach_adaptive_sized`] takes a size hint from the caller (bytes, items, ...)
//! instead: it averages the time *per unit* and predicts `average × size`, so a call site whose
//! work varies with its input decides per call. The first call at a call site always releases
//! (nothing is known yet, and holding the GIL through an unexpectedly long call is the worse
//! mistake). The work is timed whether or not the GIL was released, so the average follows the
//! work when it changes.
//!
//! # Cost
//!
//! Counting is exact and nearly free: every call adds one to the call site's counters, which on a
//! GIL build is a plain load and store (see [Memory ordering](#memory-ordering)). Timing is what
//! costs: a timed call reads the clock three times when it releases (before, after the work,
//! after the GIL is back) and twice when it holds (a few tens of ns in all). With the `quanta`
//! cargo feature (on by default) the clock is `quanta`'s: the CPU's time-stamp counter where it
//! is invariant, cheaper to read than `std::time::Instant`, calibrated once per process on first
//! use. Without it, `std::time::Instant` (the fallback: the same results, each clock read costing
//! a little more). Figures: `benches/results/nogil.md` and `benches/results/clock.md` in the
//! gilkit source repository.
//!
//! So that the statistics can stay on for the tiniest calls, [`CallSite::detach`] times every
//! call only while the work is long enough for the clock reads not to matter (an average of at
//! least [`TIME_EVERY_CALL_FROM`]); below that it times one call in
//! [`SAMPLE_EVERY`] (16), the first one included, and each timed call stands for the untimed
//! ones before it: its durations are added once for each. The released and re-acquire times of
//! such a call site are estimates, exact in their count of calls and never decreasing, so the
//! difference of two snapshots means what it says (the untimed calls since the last timed one are
//! added with the next timed one; `timed_calls` in the statistics says how many were measured). The adaptive forms time every call (the policy needs
//! each duration), and so do the interruptible and async forms, whose own cost dwarfs the clock.
//! Registration is a one-time lock. Measured figures are in `benches/results/nogil.md` in the gilkit source repository.
//!
//! The bounds on the work are `Send` (what PyO3's `Ungil` is on stable Rust): the work cannot
//! capture `Python`, `Bound` or `PyRef` values.
//!
//! # Memory ordering
//!
//! Every counter is an independent statistic, updated only by a thread attached to the
//! interpreter (before it releases the GIL or after it has it back: every method takes a
//! `Python<'_>` token). On a GIL build an attached thread holds the GIL, so the updates of all
//! call sites are serialised by it, and the GIL's release and acquisition order each update
//! before the next: a `Relaxed` load and store (`add` below) is then exact, and cheaper than a
//! locked read-modify-write. A free-threaded build (`Py_GIL_DISABLED`) has no such lock, and
//! `add` is a `Relaxed` `fetch_add`. (PyO3 refuses to load an extension into a sub-interpreter,
//! so no second GIL can update the same `static`.)
//!
//! A [`CallSiteStats`] snapshot reads the counters one by one, possibly from a thread that does
//! not hold the GIL, so while calls are in flight it may, for instance, count a call whose time is
//! not added yet; each counter read is a whole value. The moving average is updated with a
//! relaxed load and store: on a free-threaded build two threads finishing at the same moment may
//! lose one sample, which only nudges an estimate. Registration is guarded by the registry's
//! mutex, which orders the push; the `registered` flag read on the fast path only avoids taking
//! the lock and is re-checked under it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pyo3::prelude::*;

/// The clock call sites time work with: `quanta`'s with the `quanta` feature, else std's (the
/// same API for what call sites use: `now`, `saturating_duration_since`, `+ Duration`).
#[cfg(feature = "quanta")]
pub(crate) use quanta::Instant;
#[cfg(not(feature = "quanta"))]
pub(crate) use std::time::Instant;

mod adaptive;
mod registry;
mod sampling;
#[cfg(any(test, feature = "test-hooks"))]
pub mod test_hooks;
#[cfg(test)]
mod tests;

pub use adaptive::DEFAULT_THRESHOLD;
pub use registry::{add_stats_function, call_sites, callsite_stats};
pub use sampling::{CallSiteStats, SAMPLE_EVERY, TIME_EVERY_CALL_FROM};

use adaptive::update_average;
use sampling::{add, load_f64, work_between};

/// One place in the code that runs work with the GIL released, with its statistics.
///
/// Make it a `static` (its methods take `&'static self` so that it can register itself), either
/// with [`callsite!`](crate::callsite!) or with [`CallSite::new`]. `#[gilkit::nogil]` writes one
/// for each function it wraps.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// fn checksum(py: Python<'_>, data: &[u8]) -> u64 {
///     // Always releases; the call is counted and timed under the name "checksum".
///     gilkit::callsite!("checksum").detach(py, || data.iter().map(|&b| u64::from(b)).sum())
/// }
///
/// Python::attach(|py| {
///     assert_eq!(checksum(py, b"abc"), 294);
///     let stats = gilkit::callsite::call_sites()
///         .into_iter()
///         .find(|s| s.name == "checksum")
///         .unwrap();
///     assert_eq!((stats.calls, stats.released), (1, 1));
/// });
/// ```
pub struct CallSite {
    name: &'static str,
    module: &'static str,
    file: &'static str,
    line: u32,
    threshold_ns: u64,
    registered: AtomicBool,
    calls: AtomicU64,
    /// Calls that ran holding the GIL (the adaptive policy held); every other call released it.
    held: AtomicU64,
    /// Released calls whose durations were measured (all but the unsampled plain ones).
    timed: AtomicU64,
    /// Plain released calls not timed since the last timed one: the next timed call stands for
    /// them too.
    untimed: AtomicU64,
    /// Sum over the released calls, each timed call counted for the untimed ones it stands for.
    released_ns: AtomicU64,
    /// As `released_ns`.
    reacquire_ns: AtomicU64,
    held_ns: AtomicU64,
    adaptive_calls: AtomicU64,
    adaptive_released: AtomicU64,
    /// Moving average of the work's duration in nanoseconds, as `f64` bits; 0.0 = no sample yet.
    average_ns: AtomicU64,
    /// Moving average of nanoseconds per unit of size hint, as `f64` bits; 0.0 = no sample yet.
    average_ns_per_unit: AtomicU64,
}

impl CallSite {
    /// Creates a call site; `module`, `file` and `line` locate it in reports.
    ///
    /// Usually written through [`callsite!`](crate::callsite!), which fills in the location.
    #[must_use]
    pub const fn new(
        name: &'static str,
        module: &'static str,
        file: &'static str,
        line: u32,
    ) -> Self {
        CallSite {
            name,
            module,
            file,
            line,
            threshold_ns: DEFAULT_THRESHOLD.as_nanos() as u64,
            registered: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            held: AtomicU64::new(0),
            timed: AtomicU64::new(0),
            untimed: AtomicU64::new(0),
            released_ns: AtomicU64::new(0),
            reacquire_ns: AtomicU64::new(0),
            held_ns: AtomicU64::new(0),
            adaptive_calls: AtomicU64::new(0),
            adaptive_released: AtomicU64::new(0),
            average_ns: AtomicU64::new(0),
            average_ns_per_unit: AtomicU64::new(0),
        }
    }

    /// Sets the expected work duration from which the adaptive policy releases the GIL
    /// (default [`DEFAULT_THRESHOLD`]).
    #[must_use]
    pub const fn with_threshold(mut self, threshold: Duration) -> Self {
        let nanos = threshold.as_nanos();
        self.threshold_ns = if nanos > u64::MAX as u128 {
            u64::MAX
        } else {
            nanos as u64
        };
        self
    }

    /// The call site's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Runs `f` with the GIL released, and records the call.
    ///
    /// Releases the GIL for the duration of `f` and re-acquires it before returning, exactly as
    /// [`Python::detach`]; the time spent re-acquiring it is recorded separately. Work shorter
    /// than [`TIME_EVERY_CALL_FROM`] on average is timed one call in [`SAMPLE_EVERY`] (see
    /// [Cost](mod@crate::callsite#cost)).
    ///
    /// # Panics
    ///
    /// If `f` panics, the panic propagates (with the GIL re-acquired) and the call is counted
    /// but not timed.
    #[inline]
    pub fn detach<T, F>(&'static self, py: Python<'_>, f: F) -> T
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let call = self.enter();
        if call.is_multiple_of(SAMPLE_EVERY)
            || load_f64(&self.average_ns) >= TIME_EVERY_CALL_FROM.as_nanos() as f64
        {
            let (value, work) = self.run_released_timed(py, f);
            update_average(&self.average_ns, work.as_nanos() as f64);
            value
        } else {
            add(&self.untimed, 1);
            py.detach(f)
        }
    }

    /// Counts the call, registers the call site on its first one, and returns the number of calls
    /// before this one.
    #[inline]
    fn enter(&'static self) -> u64 {
        if !self.registered.load(Relaxed) {
            self.register();
        }
        add(&self.calls, 1)
    }
}

/// The forms built on [`crate::detach_interruptible`] and [`crate::block_on`].
impl CallSite {
    /// Drives `fut` to completion with the GIL released through [`crate::block_on`], and
    /// records the call (its whole duration counts as time released).
    ///
    /// # Errors
    ///
    /// As [`crate::block_on`]: the exception raised by a signal handler (Ctrl-C gives
    /// `KeyboardInterrupt`), after which `fut` is dropped.
    pub fn block_on<F>(&'static self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        self.enter();
        self.run_released_whole(|| crate::block_on(py, fut))
    }

    /// Runs `f` with the GIL released through [`crate::detach_interruptible`], and records the
    /// call (its whole duration counts as time released).
    ///
    /// # Errors
    ///
    /// As [`crate::detach_interruptible`]: the exception raised by a signal handler while `f`
    /// ran (Ctrl-C gives `KeyboardInterrupt`).
    pub fn detach_interruptible<T, F>(&'static self, py: Python<'_>, f: F) -> PyResult<T>
    where
        F: FnOnce(&crate::CancelToken) -> T + Send,
        T: Send,
    {
        self.enter();
        self.run_released_whole(|| crate::detach_interruptible(py, f))
    }

    /// [`detach_interruptible`](Self::detach_interruptible) under the adaptive policy: work
    /// expected to be short runs holding the GIL with a token that is never cancelled.
    ///
    /// # Errors
    ///
    /// As [`crate::detach_interruptible`] when the GIL was released; never when it was held.
    pub fn detach_interruptible_adaptive<T, F>(&'static self, py: Python<'_>, f: F) -> PyResult<T>
    where
        F: FnOnce(&crate::CancelToken) -> T + Send,
        T: Send,
    {
        self.enter();
        add(&self.adaptive_calls, 1);
        let start = Instant::now();
        let result = if self.should_release(load_f64(&self.average_ns)) {
            add(&self.adaptive_released, 1);
            self.run_released_whole(|| crate::detach_interruptible(py, f))
        } else {
            Ok(self.run_held(|| f(&crate::CancelToken::new())).0)
        };
        update_average(
            &self.average_ns,
            work_between(start, Instant::now()).as_nanos() as f64,
        );
        result
    }
}

impl fmt::Debug for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stats().fmt(f)
    }
}

/// Makes a `static` [`CallSite`] at this place in the code and evaluates to a `&'static` reference
/// to it.
///
/// `callsite!("name")` uses [`DEFAULT_THRESHOLD`]; `callsite!("name", threshold = duration)`
/// sets the adaptive policy's threshold (a constant expression).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyo3::prelude::*;
///
/// fn parse(py: Python<'_>, text: &str) -> usize {
///     gilkit::callsite!("parse", threshold = Duration::from_micros(100))
///         .detach_adaptive_sized(py, text.len(), || text.split_whitespace().count())
/// }
/// # Python::attach(|py| assert_eq!(parse(py, "a b c"), 3));
/// ```
#[macro_export]
macro_rules! callsite {
    ($name:expr $(,)?) => {{
        static SITE: $crate::callsite::CallSite = $crate::callsite::CallSite::new(
            $name,
            ::core::module_path!(),
            ::core::file!(),
            ::core::line!(),
        );
        &SITE
    }};
    ($name:expr, threshold = $threshold:expr $(,)?) => {{
        static SITE: $crate::callsite::CallSite = $crate::callsite::CallSite::new(
            $name,
            ::core::module_path!(),
            ::core::file!(),
            ::core::line!(),
        )
        .with_threshold($threshold);
        &SITE
    }};
}
