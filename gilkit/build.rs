//! Sets `cfg(Py_GIL_DISABLED)` when building for a free-threaded interpreter, as PyO3 does for
//! itself: `gilkit::callsite` counts with plain loads and stores under the GIL, and with atomic
//! read-modify-writes where there is no GIL (see its "Memory ordering" section).

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
