//! Test hooks: fix the duration of the work a call site measures, so that tests of the adaptive
//! policy and of sampling get exact verdicts on a shared machine (a thread descheduled for a
//! moment makes a 5 µs call "take" milliseconds and flips a decision).
//!
//! Compiled only for gilkit's own unit tests and with the cargo feature `test-hooks`, which a test
//! extension enables (gilkit's `tests/testext` does); never enable it in a published extension.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// When set, every work duration a call site measures on this thread is this one.
    pub(super) static FIXED_WORK: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Runs `f` with every piece of work that a call site measures on this thread (released or held,
/// plain, adaptive or interruptible) counted as taking `work`, whatever it really takes.
///
/// Only the calling thread is affected, and the previous setting is restored when `f` returns or
/// unwinds. Does not touch the GIL.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyo3::prelude::*;
///
/// Python::attach(|py| {
///     let site = gilkit::callsite!("hooked", threshold = Duration::from_millis(1));
///     gilkit::callsite::test_hooks::with_work_taking(Duration::from_millis(5), || {
///         site.detach_adaptive(py, || ())
///     });
///     // Measured as 5 ms, over the 1 ms threshold: the next call releases.
///     gilkit::callsite::test_hooks::with_work_taking(Duration::from_millis(5), || {
///         site.detach_adaptive(py, || ())
///     });
///     let stats = site.stats();
///     assert_eq!((stats.adaptive_calls, stats.adaptive_released), (2, 2));
/// });
/// ```
pub fn with_work_taking<R>(work: Duration, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Duration>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FIXED_WORK.set(self.0);
        }
    }
    let _restore = Restore(FIXED_WORK.replace(Some(work)));
    f()
}
