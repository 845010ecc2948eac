use pyo3::prelude::*;

#[gilkit::nogil]
#[pyfunction]
fn sum_list(py: Python<'_>, n: u64) -> u64 {
    let _none = py.None();
    (0..n).sum()
}

fn main() {}
