use pyo3::prelude::*;

#[pyclass]
struct Counter {
    n: u64,
}

#[pymethods]
impl Counter {
    #[gilkit::nogil]
    fn bump(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

fn main() {}
