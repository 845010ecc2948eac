use pyo3::prelude::*;
use pyo3::types::PyList;

#[gilkit::nogil]
#[pyfunction]
fn length(items: Bound<'_, PyList>, extra: u64) -> u64 {
    let n = items.len() as u64;
    let again = Python::attach(|py| PyList::empty(py).len()) as u64;
    n + extra + again
}

#[pyclass]
struct Data {
    n: u64,
}

#[pymethods]
impl Data {
    #[gilkit::nogil]
    fn get(slf: PyRef<'_, Self>) -> u64 {
        slf.n
    }
}

fn main() {}
