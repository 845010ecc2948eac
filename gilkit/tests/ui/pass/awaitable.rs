//! `#[nogil(awaitable)]`: an `async fn` becomes a function returning an asyncio awaitable, in each
//! placement above `#[pyfunction]` and in `#[pymethods]`, with plain and `Result` return types, owned arguments and a `Py<Self>` receiver; its
//! body runs on gilkit's runtime without the GIL (checked inside each body).
#![deny(warnings)] // the expansion must not make user code warn

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Whether this thread holds the GIL right now.
fn gil_held() -> bool {
    // SAFETY: `PyGILState_Check` only reads the thread's state; the interpreter is initialised.
    unsafe { pyo3::ffi::PyGILState_Check() == 1 }
}

/// Above `#[pyfunction]`, plain return type.
#[gilkit::nogil(awaitable)]
#[pyfunction]
async fn double(n: u64) -> u64 {
    tokio::task::yield_now().await;
    assert!(!gil_held());
    n * 2
}

/// `PyResult` return type and `?` in the body. (Only above `#[pyfunction]`: PyO3 must not see the
/// `async fn` itself.)
#[gilkit::nogil(awaitable, name = "parse_async")]
#[pyfunction]
async fn parse(text: String) -> PyResult<i64> {
    assert!(!gil_held());
    let n: i64 = text.parse().map_err(|_| PyValueError::new_err("not a number"))?;
    Ok(n)
}

/// Unit return type.
#[gilkit::nogil(awaitable)]
#[pyfunction]
async fn nothing() {}

#[pyclass(frozen)]
struct Scale {
    factor: u64,
}

#[gilkit::nogil]
#[pymethods]
impl Scale {
    /// A method: the receiver is `Py<Self>`, read without the GIL through `get()`.
    #[nogil(awaitable)]
    async fn apply(slf: Py<Self>, n: u64) -> u64 {
        assert!(!gil_held());
        slf.get().factor * n
    }
}

fn main() {
    Python::attach(|py| {
        let m = PyModule::new(py, "m").unwrap();
        m.add_function(wrap_pyfunction!(double, &m).unwrap()).unwrap();
        m.add_function(wrap_pyfunction!(parse, &m).unwrap()).unwrap();
        m.add_function(wrap_pyfunction!(nothing, &m).unwrap()).unwrap();
        m.add_class::<Scale>().unwrap();
        let locals = pyo3::types::PyDict::new(py);
        locals.set_item("m", &m).unwrap();
        py.run(
            c"import asyncio
async def main():
    bad = None
    try:
        await m.parse('x')
    except ValueError as e:
        bad = str(e)
    return (await m.double(21), await m.parse('7'), (await m.nothing()) is None, await m.Scale.apply(S, 3), bad)
",
            Some(&locals),
            None,
        )
        .unwrap();
        let scale = Bound::new(py, Scale { factor: 5 }).unwrap();
        locals.set_item("S", scale).unwrap();
        let out: (u64, i64, bool, u64, String) = py
            .eval(c"asyncio.run(main())", Some(&locals), None)
            .unwrap()
            .extract()
            .unwrap();
        assert_eq!(out, (42, 7, true, 15, "not a number".to_owned()));
    });
}
