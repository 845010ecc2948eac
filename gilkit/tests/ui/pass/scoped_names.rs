//! Names the body binds itself are its own: a closure's `py`, a `let`, a `match` arm, an `if let`
//! or a `for` pattern shadow the GIL-bound name of the same spelling, and `#[nogil]` accepts them.
//! The pattern `docs/semaphore.md` teaches (`sem.run(move |py| ...)` inside a `#[nogil] async fn`)
//! is the first case.
#![deny(warnings)]

use gilkit::GilSemaphore;
use pyo3::prelude::*;

#[pyclass(frozen)]
struct Scorer {
    sem: GilSemaphore,
    model: std::sync::Arc<Py<PyAny>>,
}

#[gilkit::nogil]
#[pymethods]
impl Scorer {
    /// A permit holder calls the model with its own `py`; the method itself runs released.
    #[nogil]
    async fn score(&self, text: String) -> PyResult<usize> {
        let model = self.model.clone();
        let words = self
            .sem
            .run(move |py| model.call1(py, (text,))?.extract::<usize>(py))
            .await
            .map_err(PyErr::from)?;
        Ok(words)
    }
}

/// `py` is a parameter, and the body binds its own `py`s and `obj`s.
#[gilkit::nogil]
#[pyfunction]
fn shadows(py: Python<'_>, items: Vec<u64>, maybe: Option<u64>) -> u64 {
    let total: u64 = items.iter().map(|py| py * 2).sum();
    let first = match items.first() {
        Some(&py) => py,
        None => 0,
    };
    let extra = if let Some(py) = maybe { py } else { 0 };
    let mut last = 0;
    for py in &items {
        last = *py;
    }
    let py = total + first + extra + last;
    py
}

fn main() {
    Python::attach(|py| {
        let model = py
            .eval(c"lambda text: len(text.split())", None, None)
            .unwrap()
            .unbind();
        let scorer = Bound::new(
            py,
            Scorer {
                sem: GilSemaphore::new(1),
                model: std::sync::Arc::new(model),
            },
        )
        .unwrap();
        let n: usize = scorer
            .call_method1("score", ("one two three",))
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(n, 3);
        let f = wrap_pyfunction!(shadows, py).unwrap();
        let n: u64 = f.call1((vec![1u64, 2], Some(5u64))).unwrap().extract().unwrap();
        assert_eq!(n, 6 + 1 + 5 + 2);
    });
}
