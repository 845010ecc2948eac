//! `gilkit_embed._native`: the Python bindings of the `gilkit-embed` crate.
//!
//! | Python | here |
//! |---|---|
//! | `EmbeddingConfig`, `EmbeddingClient` (`embed`, `embed_many`, `embed_batch_parallel`, `a*`) | `client` |
//! | exceptions (declared in `gilkit_embed/errors.py`) | `errors` |
//! | texts in, lists / numpy out | `convert` |
//! | asyncio awaitables | `gilkit::asyncio`, from `client` |
//! | `EmbeddingConfig.local(...)` (in-process Python model) | `local` |
//! | `EmbeddingService` (`python -m gilkit_embed serve`) | `service` |
//! | `gilkit_embed.testing.FaultServer` | `testing` |
//! | `system_info()`, `configure_runtime()`, `runtime_info()` | below and `gilkit::python` |

use pyo3::prelude::*;
use pyo3::types::PyDict;

mod client;
mod convert;
mod errors;
mod local;
mod service;
mod testing;

/// Facts about this build and gilkit's runtime, as a dict.
#[pyfunction]
fn system_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let info = gilkit::runtime::info();
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item(
        "build_profile",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    d.set_item(
        "http_client",
        "reqwest (rustls, connection pool per client)",
    )?;
    d.set_item("cpu_count", info.cpu_count)?;
    d.set_item("runtime_started", info.started)?;
    d.set_item("runtime_worker_threads", info.worker_threads)?;
    d.set_item("runtime_blocking_threads", info.blocking_threads)?;
    d.set_item("runtime_uptime_s", info.uptime.as_secs_f64())?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyEmbeddingConfig>()?;
    m.add_class::<client::PyEmbeddingClient>()?;
    m.add_class::<service::PyEmbeddingService>()?;
    m.add_class::<testing::PyFaultServer>()?;
    m.add_function(wrap_pyfunction!(testing::py_expected_embedding, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    gilkit::python::add_runtime_functions(m)?;
    Ok(())
}
