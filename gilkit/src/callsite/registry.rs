//! The process-wide registry of call sites, and its view from Python (`callsite_stats()`).
//!
//! A call site registers itself on its first call, under the registry's mutex (a one-time cost);
//! the `registered` flag read on the fast path only avoids taking the lock and is re-checked under
//! it.

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::Ordering::Relaxed;

use super::{CallSite, CallSiteStats};

/// All call sites that ran at least once, in order of first use.
static REGISTRY: Mutex<Vec<&'static CallSite>> = Mutex::new(Vec::new());

impl CallSite {
    #[cold]
    pub(super) fn register(&'static self) {
        let mut registry = REGISTRY.lock();
        if !self.registered.swap(true, Relaxed) {
            registry.push(self);
        }
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
        let mut key = stats.qualified_name();
        if all.contains(&key)? {
            key = format!("{key}@{}", stats.line);
        }
        all.set_item(key, stats)?;
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
