//! What `#[gilkit::nogil]` expansions call. Not a public API: names and signatures here change
//! with the macro, never to be used by hand.

use std::future::Future;
use std::time::Duration;

pub use crate::callsite::CallSite;
use pyo3::{Bound, IntoPyObject, PyErr, Python};
pub use pyo3::{Py, PyAny, PyResult};

/// The `Python` token for a function without a `py` parameter. Called from Python, the thread is
/// attached already and this is one thread-local read; called from Rust without the GIL, it
/// attaches first.
#[inline(always)]
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    Python::attach(f)
}

/// The body of a function whose `#[nogil]` reported errors: type-checks the original body (a
/// closure or an `async` block, never run) so that only the attribute's errors show.
/// `const` so that a refused `const fn` gets no second error about calling it.
#[inline(always)]
pub const fn not_expanded<B>(body: B) -> ! {
    std::mem::forget(body);
    panic!("a function whose #[nogil] failed to expand does not compile")
}

/// Merges the exception of an interrupted call into the function's own `Result`.
#[inline(always)]
pub fn flatten<T, E: From<PyErr>>(result: PyResult<Result<T, E>>) -> Result<T, E> {
    match result {
        Ok(inner) => inner,
        Err(e) => Err(E::from(e)),
    }
}

/// Fixes an `async` block's output type, so that `?` in the body knows what to convert into.
#[inline(always)]
pub fn future_of<T, F: Future<Output = T>>(fut: F) -> F {
    fut
}

/// `adaptive(threshold_us = N)`: a call through a function keeps lints about `Duration`
/// constructors (`clippy::duration_suboptimal_units`) off the user's literal.
#[inline(always)]
pub const fn micros(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// `#[nogil(awaitable)]` with a return type that is not a `Result`.
#[inline(always)]
pub async fn infallible<F: Future>(fut: F) -> PyResult<F::Output> {
    Ok(fut.await)
}

/// `#[nogil(awaitable)]`: the function's awaitable (see [`crate::asyncio::future_into_py`]).
#[inline(always)]
pub fn awaitable<F, T, E>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    E: Into<PyErr> + Send + 'static,
{
    crate::asyncio::future_into_py(py, fut).map(Bound::unbind)
}

/// `#[nogil(awaitable)]` for a function returning `()` or `Result<(), E>`: resolves to `None`, as
/// the blocking form returns `None` (a bare `()` would become an empty tuple).
#[inline(always)]
pub fn awaitable_unit<F, E>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<PyErr> + Send + 'static,
{
    crate::asyncio::future_into_py_with(py, fut, |py, output| {
        output.map_err(Into::into).map(|()| py.None())
    })
    .map(Bound::unbind)
}
