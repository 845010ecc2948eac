use pyo3::prelude::*;

#[pyclass(frozen)]
struct Model;

#[gilkit::nogil(adaptive)]
#[pymethods]
impl Model {
    fn score(&self) -> u64 {
        1
    }
}

#[pyclass]
struct Other {
    n: u64,
}

#[gilkit::nogil]
#[pymethods]
impl Other {
    #[nogil(quick)]
    fn a(&self) -> u64 {
        self.n
    }

    #[nogil]
    fn b(&mut self) -> u64 {
        self.n
    }
}

fn main() {}
