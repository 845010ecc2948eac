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
//! # The adaptive policy
//!
//! Releasing the GIL costs a few tens of nanoseconds when no other thread wants it. When another
//! Python thread is busy, a released call has to wait for that thread to give the GIL back, which
//! it does only at the end of its switch interval (measured here: 250 µs on average after 100 µs
//! of work, 2 ms after 1 ms, one call in five over a millisecond; see `benches/results/nogil.md`).
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
//! after the GIL is back) and twice when it holds, ~20 ns in all. The clock is [`quanta`]'s (the
//! CPU's time-stamp counter where it is invariant, ~14 ns a read here against ~35 ns for
//! `std::time::Instant`), calibrated once per process on first use (~0.6 ms).
//!
//! So that the statistics can stay on for the tiniest calls, [`CallSite::detach`] times every
//! call only while the work is long enough for ~20 ns not to matter (an average of at least
//! [`TIME_EVERY_CALL_FROM`], 2 µs, where it is at most 1%); below that it times one call in
//! [`SAMPLE_EVERY`] (16), the first one included, and each timed call stands for the untimed
//! ones before it: its durations are added once for each. The released and re-acquire times of
//! such a call site are estimates, exact in their count of calls and never decreasing, so the
//! difference of two snapshots means what it says (the untimed calls since the last timed one are
//! added with the next timed one; `timed_calls` in the statistics says how many were measured). The adaptive forms time every call (the policy needs
//! each duration), and so do the interruptible and async forms, whose own cost dwarfs the clock.
//! Registration is a one-time lock. Measured figures are in `benches/results/nogil.md`.
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

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use quanta::Instant;

use crate::stats::nanos;

/// The work duration from which [`CallSite::detach_adaptive`] releases the GIL, unless the call
/// site sets its own with [`CallSite::with_threshold`].
///
/// 250 µs is 1/20 of Python's default switch interval (5 ms), the longest a busy Python thread
/// may make a released call wait to get the GIL back. Holding the GIL through shorter work costs
/// the other threads at most 1/20 of a switch interval, while releasing it could cost the caller a
/// whole one; above it, what the other threads gain grows with the work while the caller's cost
/// stays bounded. See the guide's "choosing a policy" section and `benches/results/nogil.md`.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_micros(250);

/// The weight of a new sample in the moving average of work durations (1/8, as TCP's RTT estimate).
const AVERAGE_WEIGHT: f64 = 1.0 / 8.0;

/// [`CallSite::detach`] times one call in this many while the work is shorter than
/// [`TIME_EVERY_CALL_FROM`] (see [Cost](self#cost)). A power of two, so the test is a mask.
pub const SAMPLE_EVERY: u64 = 16;

/// From this average work duration on, [`CallSite::detach`] times every call: the ~20 ns of
/// clock reads are then at most 1% of the call.
pub const TIME_EVERY_CALL_FROM: Duration = Duration::from_micros(2);

/// All call sites that ran at least once, in order of first use.
static REGISTRY: Mutex<Vec<&'static CallSite>> = Mutex::new(Vec::new());

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
    /// [Cost](self#cost)).
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

    /// Runs `f` with the GIL released only if it is expected to take at least the call site's
    /// threshold (see [the adaptive policy](self#the-adaptive-policy)); otherwise runs it holding
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

    /// A snapshot of this call site's statistics.
    ///
    /// Released and re-acquire times are estimates where some calls were not timed (see
    /// [Cost](self#cost)).
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

    /// Counts the call, registers the call site on its first one, and returns the number of calls
    /// before this one.
    #[inline]
    fn enter(&'static self) -> u64 {
        if !self.registered.load(Relaxed) {
            self.register();
        }
        add(&self.calls, 1)
    }

    #[cold]
    fn register(&'static self) {
        let mut registry = REGISTRY.lock();
        if !self.registered.swap(true, Relaxed) {
            registry.push(self);
        }
    }

    #[inline]
    fn should_release(&self, predicted_ns: f64) -> bool {
        // 0.0 is "no sample yet": release (see the module doc).
        predicted_ns == 0.0 || predicted_ns >= self.threshold_ns as f64
    }

    /// The adaptive policy: predicts the work's duration as `average × units`, releases or holds,
    /// and feeds the measured duration per unit back into `average`.
    #[inline]
    fn run_adaptive<T, F>(&'static self, py: Python<'_>, average: &AtomicU64, units: f64, f: F) -> T
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

    /// Runs a form that releases and re-acquires by itself (interruptible, async): its whole
    /// duration counts as released.
    fn run_released_whole<R>(&self, run: impl FnOnce() -> R) -> R {
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
    fn run_released_timed<T, F>(&self, py: Python<'_>, f: F) -> (T, Duration)
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
    fn run_held<T, F: FnOnce() -> T>(&self, f: F) -> (T, Duration) {
        // Counted before the work runs, so that a call that panics is not taken for a release.
        add(&self.held, 1);
        let start = Instant::now();
        let value = f();
        let work = work_between(start, Instant::now());
        add(&self.held_ns, nanos(work));
        (value, work)
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

/// A snapshot of one call site's statistics (see [`CallSite::stats`] and [`call_sites`]).
#[derive(Clone, Debug, PartialEq)]
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
    /// stands for the untimed calls before it in the times below (see [Cost](self#cost)).
    pub timed_calls: u64,
    /// Time the work ran with the GIL released.
    pub released_time: Duration,
    /// Time spent re-acquiring the GIL after released work (0 for interruptible and async
    /// calls, whose re-acquisitions are part of their released time).
    pub reacquire_time: Duration,
    /// Time the work ran holding the GIL (adaptive calls that did not release).
    pub held_time: Duration,
    /// Calls decided by the adaptive policy.
    pub adaptive_calls: u64,
    /// Adaptive calls that released the GIL.
    pub adaptive_released: u64,
    /// The moving average of the work's duration, once known (unsized adaptive calls only).
    pub average_work: Option<Duration>,
    /// The adaptive policy's threshold at this call site.
    pub threshold: Duration,
}

impl CallSiteStats {
    /// The name under which [`callsite_stats`] reports this call site: `module::name`.
    pub fn qualified_name(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// Snapshots of every call site that ran at least once, in order of first use.
pub fn call_sites() -> Vec<CallSiteStats> {
    REGISTRY.lock().iter().map(|site| site.stats()).collect()
}

/// Returns `{qualified name: {statistic: value}}` for every call site that ran at least once.
///
/// Times are in seconds (floats). Two call sites with the same qualified name (two classes of
/// one module with a method of the same name) are told apart by a `@line` suffix on the later
/// one. Holds the GIL.
#[pyfunction]
pub fn callsite_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let all = PyDict::new(py);
    for stats in call_sites() {
        let entry = PyDict::new(py);
        entry.set_item("name", stats.name)?;
        entry.set_item("module", stats.module)?;
        entry.set_item("file", stats.file)?;
        entry.set_item("line", stats.line)?;
        entry.set_item("calls", stats.calls)?;
        entry.set_item("released", stats.released)?;
        entry.set_item("timed_calls", stats.timed_calls)?;
        entry.set_item("released_s", stats.released_time.as_secs_f64())?;
        entry.set_item("reacquire_s", stats.reacquire_time.as_secs_f64())?;
        entry.set_item("held_s", stats.held_time.as_secs_f64())?;
        entry.set_item("adaptive_calls", stats.adaptive_calls)?;
        entry.set_item("adaptive_released", stats.adaptive_released)?;
        entry.set_item(
            "average_work_s",
            stats.average_work.map(|d| d.as_secs_f64()),
        )?;
        entry.set_item("threshold_s", stats.threshold.as_secs_f64())?;
        let mut key = stats.qualified_name();
        if all.contains(&key)? {
            key = format!("{key}@{}", stats.line);
        }
        all.set_item(key, entry)?;
    }
    Ok(all)
}

/// Adds `callsite_stats()` (see [`callsite_stats`]) to a Python module: the one line that exposes
/// gilkit's GIL statistics to Python.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// #[pymodule]
/// fn my_ext(m: &Bound<'_, PyModule>) -> PyResult<()> {
///     gilkit::callsite::add_stats_function(m)
/// }
/// ```
///
/// # Errors
///
/// If the module refuses the new attribute.
pub fn add_stats_function(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(callsite_stats, m)?)
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

/// Adds `n` to a counter; returns its value before. See [Memory ordering](self#memory-ordering):
/// the caller is attached to the interpreter, which on a GIL build means it holds the GIL.
#[inline]
fn add(counter: &AtomicU64, n: u64) -> u64 {
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
fn take(counter: &AtomicU64) -> u64 {
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
/// can substitute a fixed one (`tests::with_work_taking`): a verdict about sampling or the
/// adaptive policy must not depend on how long the work took on a shared machine (a thread
/// descheduled for a moment makes a 100 ns call "take" milliseconds).
#[inline]
fn work_between(start: Instant, end: Instant) -> Duration {
    #[cfg(test)]
    if let Some(fixed) = tests::FIXED_WORK.get() {
        return fixed;
    }
    end.saturating_duration_since(start)
}

#[inline]
fn load_f64(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Relaxed))
}

#[inline]
fn update_average(cell: &AtomicU64, sample: f64) {
    let old = load_f64(cell);
    let new = if old == 0.0 {
        sample
    } else {
        old + (sample - old) * AVERAGE_WEIGHT
    };
    // A sample of exactly 0 would read back as "no sample yet"; keep the smallest positive.
    cell.store(new.max(f64::MIN_POSITIVE).to_bits(), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::thread;

    thread_local! {
        /// When set, [`work_between`] returns this instead of reading the clock (this thread only).
        pub(super) static FIXED_WORK: Cell<Option<Duration>> = const { Cell::new(None) };
    }

    /// Runs `f` with every piece of work on this thread measured as `work`, so that the policy's
    /// decisions and the sampled totals are exact, whatever the machine is doing meanwhile.
    pub(super) fn with_work_taking<R>(work: Duration, f: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                FIXED_WORK.set(None);
            }
        }
        FIXED_WORK.set(Some(work));
        let _reset = Reset;
        f()
    }

    fn spin(d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn counts_and_times_released_calls() {
        static SITE: CallSite = CallSite::new("released", module_path!(), file!(), line!());
        Python::attach(|py| {
            for _ in 0..3 {
                SITE.detach(py, || spin(Duration::from_millis(1)));
            }
        });
        let s = SITE.stats();
        assert_eq!((s.calls, s.released, s.adaptive_calls), (3, 3, 0));
        assert!(s.released_time >= Duration::from_millis(3), "{s:?}");
        assert_eq!(s.held_time, Duration::ZERO);
        assert!(
            call_sites()
                .iter()
                .any(|c| c.name == "released" && c.calls == 3)
        );
    }

    #[test]
    fn tiny_released_calls_are_counted_exactly_and_timed_one_in_sample_every() {
        static SITE: CallSite = CallSite::new("tiny-released", module_path!(), file!(), line!());
        with_work_taking(Duration::from_nanos(100), || {
            Python::attach(|py| {
                for i in 0..100u64 {
                    assert_eq!(SITE.detach(py, || std::hint::black_box(i)), i);
                }
            })
        });
        let s = SITE.stats();
        assert_eq!((s.calls, s.released), (100, 100));
        // Calls 0, 16, ..., 96 were timed (the work is far below TIME_EVERY_CALL_FROM).
        assert_eq!(s.timed_calls, 100u64.div_ceil(SAMPLE_EVERY));
        assert_eq!(s.average_work, Some(Duration::from_nanos(100)));
        // Call 0 stands for itself, each later timed call for itself and the 15 before it; the
        // 3 calls after call 96 wait for the next timed call.
        assert_eq!(s.released_time, Duration::from_nanos(100 * (1 + 6 * 16)));
    }

    #[test]
    fn a_timed_call_stands_for_the_untimed_ones_and_totals_never_decrease() {
        static SITE: CallSite = CallSite::new("stands-for", module_path!(), file!(), line!());
        Python::attach(|py| {
            with_work_taking(Duration::from_nanos(100), || {
                for _ in 0..100 {
                    SITE.detach(py, || std::hint::black_box(1));
                }
            });
            let tiny = SITE.stats();
            assert_eq!(tiny.released_time, Duration::from_nanos(100 * (1 + 6 * 16)));
            // The work changes: 20 calls of 100 µs (calls 100 to 119). Call 112 is the first
            // one timed; it stands for itself and the 15 untimed calls before it (97 to 111).
            // Its sample lifts the average past TIME_EVERY_CALL_FROM, so calls 113 to 119 are
            // all timed.
            with_work_taking(Duration::from_micros(100), || {
                for _ in 0..20 {
                    SITE.detach(py, || std::hint::black_box(1));
                }
            });
            let long = SITE.stats();
            assert_eq!(long.timed_calls - tiny.timed_calls, 1 + 7, "{long:?}");
            assert_eq!(
                long.released_time - tiny.released_time,
                Duration::from_micros(100 * (16 + 7))
            );
            assert!(long.reacquire_time >= tiny.reacquire_time);
        });
    }

    #[test]
    fn a_held_call_that_panics_is_not_counted_as_released() {
        static SITE: CallSite = CallSite::new("held-panic", module_path!(), file!(), line!())
            .with_threshold(Duration::from_secs(1));
        Python::attach(|py| {
            SITE.detach_adaptive(py, || ()); // the first call releases: nothing known yet
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                SITE.detach_adaptive(py, || panic!("boom"))
            }));
            assert!(panicked.is_err());
        });
        let s = SITE.stats();
        assert_eq!((s.calls, s.released, s.adaptive_released), (2, 1, 1));
    }

    #[test]
    fn adaptive_holds_short_work_and_releases_long_work() {
        static SHORT: CallSite = CallSite::new("short", module_path!(), file!(), line!())
            .with_threshold(Duration::from_millis(100));
        static LONG: CallSite = CallSite::new("long", module_path!(), file!(), line!())
            .with_threshold(Duration::from_micros(200));
        Python::attach(|py| {
            for _ in 0..20 {
                with_work_taking(Duration::from_micros(1), || {
                    SHORT.detach_adaptive(py, || std::hint::black_box(1 + 1))
                });
                with_work_taking(Duration::from_millis(1), || {
                    LONG.detach_adaptive(py, || std::hint::black_box(1 + 1))
                });
            }
        });
        let short = SHORT.stats();
        assert_eq!((short.adaptive_calls, short.adaptive_released), (20, 1));
        assert_eq!(short.released, 1);
        assert_eq!(short.held_time, Duration::from_micros(19));
        let long = LONG.stats();
        assert_eq!((long.adaptive_calls, long.adaptive_released), (20, 20));
        assert_eq!(long.average_work, Some(Duration::from_millis(1)));
    }

    #[test]
    fn adaptive_measures_real_work() {
        // The one adaptive test on the real clock: a lower bound, which holds however loaded the
        // machine is (the clock is the same one `spin` reads).
        static SITE: CallSite = CallSite::new("adaptive-real", module_path!(), file!(), line!())
            .with_threshold(Duration::from_micros(200));
        Python::attach(|py| {
            for _ in 0..3 {
                SITE.detach_adaptive(py, || spin(Duration::from_millis(1)));
            }
        });
        let s = SITE.stats();
        assert_eq!((s.adaptive_calls, s.adaptive_released), (3, 3));
        assert!(s.average_work.unwrap() >= Duration::from_millis(1), "{s:?}");
        assert!(s.released_time >= Duration::from_millis(3), "{s:?}");
    }

    #[test]
    fn size_hint_decides_per_call() {
        static SITE: CallSite = CallSite::new("sized", module_path!(), file!(), line!())
            .with_threshold(Duration::from_millis(10));
        Python::attach(|py| {
            // Learn 10 µs per unit: 100 µs calls of 10 units (the first sample sets the average).
            with_work_taking(Duration::from_micros(100), || {
                for _ in 0..20 {
                    SITE.detach_adaptive_sized(py, 10, || ());
                }
            });
            let before = SITE.stats().adaptive_released;
            // 2 units predict 20 µs: held.
            with_work_taking(Duration::from_micros(20), || {
                SITE.detach_adaptive_sized(py, 2, || ())
            });
            assert_eq!(SITE.stats().adaptive_released, before);
            // 100 000 units predict ~1 s: released (the work itself is short; the estimate moves).
            with_work_taking(Duration::from_micros(20), || {
                SITE.detach_adaptive_sized(py, 100_000, || ())
            });
            assert_eq!(SITE.stats().adaptive_released, before + 1);
        });
    }

    #[test]
    fn interruptible_and_async_forms_are_counted() {
        static HELD: CallSite =
            CallSite::new("interruptible-held", module_path!(), file!(), line!())
                .with_threshold(Duration::from_secs(1));
        static ASYNC: CallSite = CallSite::new("async", module_path!(), file!(), line!());
        Python::attach(|py| {
            with_work_taking(Duration::from_micros(1), || {
                for _ in 0..5 {
                    let not_cancelled =
                        HELD.detach_interruptible_adaptive(py, |token| !token.is_cancelled());
                    assert!(not_cancelled.unwrap());
                }
            });
            assert_eq!(ASYNC.block_on(py, async { 7 }).unwrap(), 7);
        });
        let held = HELD.stats();
        // The first call releases (nothing known); the others are short and held.
        assert_eq!(
            (
                held.calls,
                held.adaptive_calls,
                held.adaptive_released,
                held.released
            ),
            (5, 5, 1, 1)
        );
        let asynchronous = ASYNC.stats();
        assert_eq!((asynchronous.calls, asynchronous.released), (1, 1));
        assert_eq!(asynchronous.reacquire_time, Duration::ZERO);
    }

    #[test]
    fn python_dict_has_one_entry_per_call_site() {
        static FIRST: CallSite = CallSite::new("dup", "m", "a.rs", 1);
        static SECOND: CallSite = CallSite::new("dup", "m", "a.rs", 2);
        Python::attach(|py| {
            FIRST.detach(py, || ());
            SECOND.detach(py, || ());
            SECOND.detach(py, || ());
            let all = callsite_stats(py).unwrap();
            let calls = |key: &str| -> u64 {
                let entry = all.get_item(key).unwrap().unwrap();
                entry.get_item("calls").unwrap().extract().unwrap()
            };
            assert_eq!((calls("m::dup"), calls("m::dup@2")), (1, 2));
        });
    }

    #[test]
    fn registers_once_from_many_threads() {
        static SITE: CallSite = CallSite::new("many", module_path!(), file!(), line!());
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| Python::attach(|py| (0..50).for_each(|_| SITE.detach(py, || ()))));
            }
        });
        let registered = call_sites().iter().filter(|c| c.name == "many").count();
        assert_eq!(registered, 1);
        assert_eq!(SITE.stats().calls, 200);
    }

    #[test]
    fn average_tracks_recent_samples() {
        let cell = AtomicU64::new(0);
        update_average(&cell, 800.0);
        assert_eq!(load_f64(&cell), 800.0);
        update_average(&cell, 0.0);
        assert_eq!(load_f64(&cell), 700.0);
    }
}
