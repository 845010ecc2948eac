//! `#[gilkit::nogil]` in every placement and with every option, for `tests/python/test_nogil.py`
//! and `benches/nogil/`.
//!
//! Placements: above `#[pyfunction]` (the attribute sees the function first), below it (PyO3 sees
//! it first), on a method inside `#[pymethods]`, and on the `#[pymethods]` impl block with the
//! methods marked `#[nogil]`. The functions spin on the CPU with `crate::spin_for`, so the GIL
//! probe can tell a released call from a held one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::spin_for;

/// Spin `micros` µs with the GIL released (attribute above `#[pyfunction]`).
#[gilkit::nogil]
#[pyfunction]
#[pyo3(signature = (micros, /, scale = 1))]
fn nogil_outer(micros: u64, scale: u64) -> u64 {
    spin_for(Duration::from_micros(micros)) * scale
}

/// Spin `micros` µs with the GIL released (attribute below `#[pyfunction]`).
#[pyfunction]
#[gilkit::nogil]
fn nogil_inner(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `micros` µs; the function takes `py` itself, which the release uses.
#[gilkit::nogil]
#[pyfunction]
fn nogil_with_py(py: Python<'_>, micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `micros` µs, released or held as the adaptive policy decides (default threshold).
#[gilkit::nogil(adaptive)]
#[pyfunction]
fn nogil_adaptive(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `micros` µs under the adaptive policy with a 10 ms threshold (tests use it with a wide
/// margin on both sides, so that a descheduled thread cannot flip a decision).
#[gilkit::nogil(adaptive(threshold_us = 10_000))]
#[pyfunction]
fn nogil_adaptive_10ms(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `micros` µs under the adaptive policy with a 1 s threshold: after the first call (which
/// releases, nothing being known), any work shorter than 1 s runs with the GIL held.
#[gilkit::nogil(adaptive(threshold_us = 1_000_000))]
#[pyfunction]
fn nogil_adaptive_high_threshold(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Spin `units × micros_per_unit` µs under the adaptive policy, with `units` as the size hint
/// and a 1 ms threshold.
#[gilkit::nogil(adaptive(hint = units as usize, threshold_us = 1000))]
#[pyfunction]
fn nogil_adaptive_sized(units: u64, micros_per_unit: u64) -> u64 {
    spin_for(Duration::from_micros(units * micros_per_unit))
}

/// Spin up to `micros` µs, stopping early when Ctrl-C cancels the token. Returns the µs spun.
#[gilkit::nogil(interruptible)]
#[pyfunction]
fn nogil_interruptible(micros: u64) -> u64 {
    let start = Instant::now();
    let deadline = start + Duration::from_micros(micros);
    while Instant::now() < deadline && !token.is_cancelled() {
        spin_for(Duration::from_micros(500));
    }
    start.elapsed().as_micros() as u64
}

/// As `nogil_interruptible`, with the token renamed, a `PyResult` return type, and the adaptive
/// policy.
#[gilkit::nogil(interruptible(token = cancel), adaptive)]
#[pyfunction]
fn nogil_interruptible_adaptive(micros: u64) -> PyResult<u64> {
    let start = Instant::now();
    let deadline = start + Duration::from_micros(micros);
    while Instant::now() < deadline {
        cancel
            .check()
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("cancelled"))?;
        spin_for(Duration::from_micros(500));
    }
    Ok(start.elapsed().as_micros() as u64)
}

/// Sleep `ms` on the shared runtime, then spin `micros` µs, all with the GIL released.
#[gilkit::nogil]
#[pyfunction]
async fn nogil_async(ms: u64, micros: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    spin_for(Duration::from_micros(micros))
}

/// An `async fn` that never completes: only Ctrl-C ends it.
#[gilkit::nogil(name = "forever")]
#[pyfunction]
async fn nogil_async_forever() -> PyResult<()> {
    std::future::pending::<()>().await;
    Ok(())
}

/// A counter with the recommended shape for `#[nogil]` methods: frozen, state in atomics.
#[pyclass(frozen)]
struct Worker {
    done: AtomicU64,
}

#[pymethods]
impl Worker {
    #[new]
    fn new() -> Self {
        Worker {
            done: AtomicU64::new(0),
        }
    }

    /// Spin `micros` µs with the GIL released (attribute on a method inside `#[pymethods]`).
    #[gilkit::nogil]
    fn spin(&self, micros: u64) -> u64 {
        self.done.fetch_add(1, Ordering::Relaxed);
        spin_for(Duration::from_micros(micros))
    }

    /// Units of work done so far.
    #[getter]
    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// The same, with the attribute on the impl block (above `#[pymethods]`) and the methods marked.
#[pyclass(frozen)]
struct BlockWorker {
    done: AtomicU64,
}

#[gilkit::nogil]
#[pymethods]
impl BlockWorker {
    #[new]
    fn new() -> Self {
        BlockWorker {
            done: AtomicU64::new(0),
        }
    }

    /// Spin `micros` µs with the GIL released.
    #[nogil]
    #[pyo3(signature = (micros = 1000))]
    fn spin(&self, micros: u64) -> u64 {
        self.done.fetch_add(1, Ordering::Relaxed);
        spin_for(Duration::from_micros(micros))
    }

    /// Spin `micros` µs, released only when the adaptive policy says so.
    #[nogil(adaptive)]
    fn spin_adaptive(&self, micros: u64) -> u64 {
        spin_for(Duration::from_micros(micros))
    }

    /// Spin up to `micros` µs; Ctrl-C stops it.
    #[nogil(interruptible)]
    fn spin_interruptible(&self, micros: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_micros(micros);
        let mut spun = 0;
        while Instant::now() < deadline && !token.is_cancelled() {
            spun += spin_for(Duration::from_micros(500));
        }
        spun
    }

    /// Sleep `ms` on the shared runtime, then spin `micros` µs, with the GIL released.
    #[nogil]
    async fn spin_async(&self, ms: u64, micros: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.done.fetch_add(1, Ordering::Relaxed);
        spin_for(Duration::from_micros(micros))
    }

    /// Units of work done so far (not marked: runs with the GIL held, as usual).
    #[getter]
    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// Benchmark baseline: `nogil_plain` written by hand with `py.detach`.
#[pyfunction]
fn hand_detach(py: Python<'_>, micros: u64) -> u64 {
    py.detach(|| spin_for(Duration::from_micros(micros)))
}

/// Benchmark baseline: `hand_detach` in a function without a `py` parameter, which has to get the
/// token from `Python::attach`, as `nogil_plain`'s wrapper does.
#[pyfunction]
fn hand_detach_attach(micros: u64) -> u64 {
    Python::attach(|py| py.detach(|| spin_for(Duration::from_micros(micros))))
}

/// Benchmark subject: `hand_detach` written with the attribute.
#[gilkit::nogil]
#[pyfunction]
fn nogil_plain(micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// Benchmark subject: `nogil_plain` with a `py` parameter, which the wrapper uses instead of
/// `Python::attach` (the macro's one remaining cost for a function without one).
#[gilkit::nogil]
#[pyfunction]
fn nogil_plain_py(_py: Python<'_>, micros: u64) -> u64 {
    spin_for(Duration::from_micros(micros))
}

/// The cost of one empty call through each release form, in nanoseconds per call (median of
/// `rounds` rounds of `iterations` calls), measured in Rust so that Python's call overhead is
/// left out: `{"hold": no release, "py_detach": Python::detach, "gilkit_detach": gilkit::detach,
/// "callsite_detach": CallSite::detach, "callsite_adaptive_held": CallSite::detach_adaptive
/// holding, "callsite_adaptive_released": the same when it releases}`.
#[pyfunction]
fn release_cost_ns(py: Python<'_>, iterations: u32, rounds: u32) -> Vec<(&'static str, f64)> {
    use std::hint::black_box;
    static SITE: gilkit::callsite::CallSite =
        gilkit::callsite::CallSite::new("release_cost_ns", module_path!(), file!(), line!());
    static HELD: gilkit::callsite::CallSite =
        gilkit::callsite::CallSite::new("release_cost_ns.held", module_path!(), file!(), line!())
            .with_threshold(Duration::from_secs(1));
    static RELEASED: gilkit::callsite::CallSite = gilkit::callsite::CallSite::new(
        "release_cost_ns.released",
        module_path!(),
        file!(),
        line!(),
    )
    .with_threshold(Duration::ZERO);
    let time = |f: &mut dyn FnMut()| -> f64 {
        let mut per_call: Vec<f64> = (0..rounds.max(1))
            .map(|_| {
                let start = Instant::now();
                for _ in 0..iterations {
                    f();
                }
                start.elapsed().as_nanos() as f64 / f64::from(iterations.max(1))
            })
            .collect();
        per_call.sort_by(f64::total_cmp);
        per_call[per_call.len() / 2]
    };
    vec![
        (
            "hold",
            time(&mut || {
                black_box(black_box(1u64) + 1);
            }),
        ),
        (
            "py_detach",
            time(&mut || {
                black_box(py.detach(|| black_box(1u64)));
            }),
        ),
        (
            "gilkit_detach",
            time(&mut || {
                black_box(gilkit::detach(py, || black_box(1u64)));
            }),
        ),
        (
            "callsite_detach",
            time(&mut || {
                black_box(SITE.detach(py, || black_box(1u64)));
            }),
        ),
        (
            "callsite_adaptive_held",
            time(&mut || {
                black_box(HELD.detach_adaptive(py, || black_box(1u64)));
            }),
        ),
        (
            "callsite_adaptive_released",
            time(&mut || {
                black_box(RELEASED.detach_adaptive(py, || black_box(1u64)));
            }),
        ),
    ]
}

/// Adds this module's functions and classes, and `callsite_stats()`, to the test extension.
/// Call `f()` with every work duration a call site measures on this thread counted as `micros`
/// µs (gilkit's `test-hooks` feature), so that the adaptive policy's decisions in a test do not
/// depend on how long the work really took.
#[cfg(feature = "test-hooks")]
#[pyfunction]
fn with_work_taking(micros: u64, f: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    gilkit::callsite::test_hooks::with_work_taking(Duration::from_micros(micros), || {
        f.call0().map(Bound::unbind)
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    gilkit::callsite::add_stats_function(m)?;
    #[cfg(feature = "test-hooks")]
    m.add_function(wrap_pyfunction!(with_work_taking, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_outer, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_inner, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_with_py, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_adaptive, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_adaptive_high_threshold, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_adaptive_10ms, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_adaptive_sized, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_interruptible, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_interruptible_adaptive, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_async, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_async_forever, m)?)?;
    m.add_function(wrap_pyfunction!(hand_detach, m)?)?;
    m.add_function(wrap_pyfunction!(hand_detach_attach, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_plain, m)?)?;
    m.add_function(wrap_pyfunction!(nogil_plain_py, m)?)?;
    m.add_function(wrap_pyfunction!(release_cost_ns, m)?)?;
    m.add_class::<Worker>()?;
    m.add_class::<BlockWorker>()?;
    Ok(())
}
