//! A refused `async fn` shows the attribute's error only: no error from PyO3 about its
//! `experimental-async` feature (the fallback the attribute emits is not an `async fn`), and no
//! error about `Send` from a release that was not written.
use pyo3::prelude::*;

#[gilkit::nogil]
#[pyfunction]
async fn fetch(py: Python<'_>, n: u64) -> u64 {
    let _none = py.None();
    n
}

#[pyclass(frozen)]
struct Client;

#[gilkit::nogil]
#[pymethods]
impl Client {
    #[nogil]
    async fn get(&self, items: Bound<'_, pyo3::types::PyList>) -> usize {
        items.len()
    }
}

fn main() {
    // The rest of the crate still sees the functions, with the signature the rewrite gives them.
    let _: fn(Python<'_>, u64) -> PyResult<u64> = fetch;
}
