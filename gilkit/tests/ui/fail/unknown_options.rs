use pyo3::prelude::*;

#[gilkit::nogil(fast, adaptive(threshold = 5), interruptible(cancel))]
#[pyfunction]
fn work(n: u64) -> u64 {
    n
}

#[gilkit::nogil(adaptive, adaptive, name = 5)]
#[pyfunction]
fn twice(n: u64) -> u64 {
    n
}

fn main() {}
