//! Every placement of `#[gilkit::nogil]` compiles, keeps its Python signature, runs its body
//! without the GIL (checked inside each body), and runs through its call site.
#![deny(warnings)] // the expansion must not make user code warn

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;

/// Whether this thread holds the GIL right now.
fn gil_held() -> bool {
    // SAFETY: `PyGILState_Check` only reads the thread's state; the interpreter is initialised
    // (every caller runs under `Python::attach` or inside a function it made).
    unsafe { pyo3::ffi::PyGILState_Check() == 1 }
}

/// Above `#[pyfunction]`.
#[gilkit::nogil]
#[pyfunction]
#[pyo3(signature = (n, /, step = 1))]
fn above(n: u64, step: u64) -> u64 {
    assert!(!gil_held());
    (0..n).step_by(step as usize).sum()
}

/// Below `#[pyfunction]`.
#[pyfunction]
#[gilkit::nogil]
fn below(n: u64) -> u64 {
    assert!(!gil_held());
    (0..n).sum()
}

/// With its own `py`, which the release uses.
#[gilkit::nogil(adaptive)]
#[pyfunction]
fn own_py(py: Python<'_>, n: u64) -> u64 {
    assert!(!gil_held()); // the first adaptive call releases
    (0..n).sum()
}

/// A plain Rust function (no PyO3 attribute at all).
#[gilkit::nogil(name = "plain")]
fn plain(data: &[u8]) -> usize {
    assert!(!gil_held());
    data.iter().filter(|&&b| b == b'\n').count()
}

#[pyclass(frozen)]
struct Counter {
    total: AtomicU64,
}

#[pymethods]
impl Counter {
    #[new]
    fn new() -> Self {
        Counter { total: AtomicU64::new(0) }
    }

    /// On a method inside `#[pymethods]`.
    #[gilkit::nogil]
    fn add(&self, n: u64) -> u64 {
        assert!(!gil_held());
        self.total.fetch_add(n, Ordering::Relaxed) + n
    }
}

#[pyclass(frozen)]
struct Block {
    base: u64,
}

/// On the impl block, with the methods marked.
#[gilkit::nogil]
#[pymethods]
impl Block {
    #[new]
    fn new(base: u64) -> Self {
        Block { base }
    }

    #[nogil(adaptive(threshold_us = 50, hint = n as usize))]
    fn scaled(&self, n: u64) -> u64 {
        assert!(!gil_held()); // the first adaptive call releases
        self.base * n
    }

    #[gilkit::nogil(interruptible(token = stop))]
    fn until_stopped(&self, n: u64) -> u64 {
        assert!(!gil_held());
        (0..n).take_while(|_| !stop.is_cancelled()).count() as u64
    }

    #[nogil]
    async fn later(&self, n: u64) -> u64 {
        assert!(!gil_held());
        tokio::task::yield_now().await;
        self.base + n
    }

    fn held(&self) -> u64 {
        assert!(gil_held());
        self.base
    }
}

fn main() {
    Python::attach(|py| {
        let m = PyModule::new(py, "m").unwrap();
        m.add_function(wrap_pyfunction!(above, &m).unwrap()).unwrap();
        m.add_function(wrap_pyfunction!(below, &m).unwrap()).unwrap();
        m.add_function(wrap_pyfunction!(own_py, &m).unwrap()).unwrap();
        m.add_class::<Counter>().unwrap();
        m.add_class::<Block>().unwrap();
        let call = |code: &str| -> u64 {
            let locals = pyo3::types::PyDict::new(py);
            locals.set_item("m", &m).unwrap();
            py.eval(&std::ffi::CString::new(code).unwrap(), None, Some(&locals))
                .unwrap()
                .extract()
                .unwrap()
        };
        assert_eq!(call("m.above(10, step=2)"), 20);
        assert_eq!(call("m.below(10)"), 45);
        assert_eq!(call("m.own_py(10)"), 45);
        assert_eq!(call("m.Counter().add(5)"), 5);
        assert_eq!(call("m.Block(3).scaled(4)"), 12);
        assert_eq!(call("m.Block(3).until_stopped(4)"), 4);
        assert_eq!(call("m.Block(3).later(4)"), 7);
        assert_eq!(call("m.Block(3).held()"), 3);
        assert_eq!(
            call("len(__import__('inspect').signature(m.own_py).parameters)"),
            1,
            "`py` stays invisible to Python"
        );
    });
    assert_eq!(plain(b"a\nb\n"), 2);
    let sites = gilkit::callsite::call_sites();
    for name in ["above", "below", "own_py", "plain", "add", "Block.scaled", "Block.until_stopped", "Block.later"] {
        let site = sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} not registered"));
        assert_eq!(site.calls, 1, "{name}");
    }
}
