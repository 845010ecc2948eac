//! What `#[gilkit::nogil]` writes, by hand, annotated. Run with
//! `cargo run -p gilkit --example nogil-expanded`.
//!
//! The source:
//!
//! ```ignore
//! #[gilkit::nogil]
//! #[pyfunction]
//! fn checksum(data: Vec<u8>) -> u64 {
//!     data.iter().map(|&b| u64::from(b)).sum()
//! }
//!
//! #[gilkit::nogil(adaptive(hint = data.len()))]
//! #[pyfunction]
//! fn count_lines(data: Vec<u8>) -> usize {
//!     data.iter().filter(|&&b| b == b'\n').count()
//! }
//!
//! #[gilkit::nogil(interruptible)]
//! #[pyfunction]
//! fn count_primes(n: u64) -> u64 {
//!     (2..n).take_while(|_| !token.is_cancelled()).filter(|&k| is_prime(k)).count() as u64
//! }
//!
//! #[gilkit::nogil]
//! #[pyfunction]
//! async fn wait_ms(ms: u64) -> u64 {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     ms
//! }
//!
//! #[gilkit::nogil(awaitable)]
//! #[pyfunction]
//! async fn wait_ms_awaitable(ms: u64) -> u64 {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     ms
//! }
//! ```
//!
//! The expansion below is what the attribute produces (its private names, which are hygienic in
//! the real expansion, are spelled out). `#[pyfunction]` then sees these functions: their
//! parameters are unchanged, so the Python signature, text signature and docstring are too.

use std::time::Duration;

use pyo3::prelude::*;

fn is_prime(k: u64) -> bool {
    (2..k)
        .take_while(|d| d * d <= k)
        .all(|d| !k.is_multiple_of(d))
}

/// The plain form: the body moves into a closure run by the function's own call site.
#[pyfunction]
fn checksum(data: Vec<u8>) -> u64 {
    // One `static` call site per function: its name, where it is, and its statistics. It registers
    // itself on its first call.
    static __GILKIT_CALL_SITE: ::gilkit::__private::CallSite = ::gilkit::__private::CallSite::new(
        "checksum",
        ::core::module_path!(),
        ::core::file!(),
        ::core::line!(),
    );
    // The function has no `py` parameter, so the token comes from `Python::attach`: called from
    // Python the thread is attached already, and this is one thread-local read. (A function with a
    // `py: Python<'_>` parameter uses it instead.) The closure is `move`, so the arguments go into
    // it; its return type is the function's, so `?` and `return` in the body mean what they did.
    ::gilkit::__private::attach(|__gilkit_py| {
        __GILKIT_CALL_SITE.detach(__gilkit_py, move || -> u64 {
            data.iter().map(|&b| u64::from(b)).sum()
        })
    })
}

/// `adaptive(hint = ...)`: the hint is evaluated first, with the GIL held, then the call site
/// predicts the duration from it and releases only if that reaches its threshold.
#[pyfunction]
fn count_lines(data: Vec<u8>) -> usize {
    static __GILKIT_CALL_SITE: ::gilkit::__private::CallSite = ::gilkit::__private::CallSite::new(
        "count_lines",
        ::core::module_path!(),
        ::core::file!(),
        ::core::line!(),
    );
    ::gilkit::__private::attach(|__gilkit_py| {
        let __gilkit_size: usize = data.len();
        __GILKIT_CALL_SITE.detach_adaptive_sized(__gilkit_py, __gilkit_size, move || -> usize {
            data.iter().filter(|&&b| b == b'\n').count()
        })
    })
}

/// `interruptible`: the body becomes a closure taking the cancel token under the name `token`,
/// and the return type becomes `PyResult<_>` (a `Result` return type is kept, and the
/// `KeyboardInterrupt` is converted into its error type).
#[pyfunction]
fn count_primes(n: u64) -> ::gilkit::__private::PyResult<u64> {
    static __GILKIT_CALL_SITE: ::gilkit::__private::CallSite = ::gilkit::__private::CallSite::new(
        "count_primes",
        ::core::module_path!(),
        ::core::file!(),
        ::core::line!(),
    );
    ::gilkit::__private::attach(|__gilkit_py| {
        __GILKIT_CALL_SITE.detach_interruptible(
            __gilkit_py,
            move |token: &::gilkit::CancelToken| -> u64 {
                (2..n)
                    .take_while(|_| !token.is_cancelled())
                    .filter(|&k| is_prime(k))
                    .count() as u64
            },
        )
    })
}

/// `async fn`: no longer `async` (PyO3 never sees a coroutine); the body becomes an `async move`
/// block driven by `gilkit::block_on` with the GIL released. `future_of` only pins the block's
/// output type, so that `?` inside it knows what to convert into.
#[pyfunction]
fn wait_ms(ms: u64) -> ::gilkit::__private::PyResult<u64> {
    static __GILKIT_CALL_SITE: ::gilkit::__private::CallSite = ::gilkit::__private::CallSite::new(
        "wait_ms",
        ::core::module_path!(),
        ::core::file!(),
        ::core::line!(),
    );
    ::gilkit::__private::attach(|__gilkit_py| {
        __GILKIT_CALL_SITE.block_on(
            __gilkit_py,
            ::gilkit::__private::future_of::<u64, _>(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            }),
        )
    })
}

/// `awaitable`: the function returns the asyncio future at once; the body runs on gilkit's
/// runtime (see `gilkit::asyncio::future_into_py`). A return type that is not a `Result` is made
/// one by `infallible`; `()` (or `Result<(), E>`) goes through `awaitable_unit`, which resolves to
/// `None`. No call site: the work does not run inside the call.
#[pyfunction]
fn wait_ms_awaitable(
    ms: u64,
) -> ::gilkit::__private::PyResult<::gilkit::__private::Py<::gilkit::__private::PyAny>> {
    ::gilkit::__private::attach(|__gilkit_py| {
        ::gilkit::__private::awaitable(
            __gilkit_py,
            ::gilkit::__private::infallible(::gilkit::__private::future_of::<u64, _>(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ms
            })),
        )
    })
}

fn main() -> PyResult<()> {
    Python::attach(|py| -> PyResult<()> {
        let m = PyModule::new(py, "expanded")?;
        m.add_function(wrap_pyfunction!(checksum, &m)?)?;
        m.add_function(wrap_pyfunction!(count_lines, &m)?)?;
        m.add_function(wrap_pyfunction!(count_primes, &m)?)?;
        m.add_function(wrap_pyfunction!(wait_ms, &m)?)?;
        m.add_function(wrap_pyfunction!(wait_ms_awaitable, &m)?)?;
        let checksum: u64 = m
            .getattr("checksum")?
            .call1((vec![1u8, 2, 3],))?
            .extract()?;
        let lines: usize = m
            .getattr("count_lines")?
            .call1((b"a\nb\n".to_vec(),))?
            .extract()?;
        let primes: u64 = m.getattr("count_primes")?.call1((100,))?.extract()?;
        let waited: u64 = m.getattr("wait_ms")?.call1((5,))?.extract()?;
        assert_eq!((checksum, lines, primes, waited), (6, 2, 25, 5));
        let locals = pyo3::types::PyDict::new(py);
        locals.set_item("m", &m)?;
        py.run(
            c"import asyncio\nasync def main():\n    return await m.wait_ms_awaitable(5)\nr = asyncio.run(main())",
            Some(&locals),
            None,
        )?;
        let awaited: u64 = locals
            .get_item("r")?
            .expect("set by the script")
            .extract()?;
        assert_eq!(awaited, 5);
        Ok(())
    })?;
    for site in gilkit::callsite::call_sites() {
        println!(
            "{:<12} calls {} released {} in {:?}",
            site.name, site.calls, site.released, site.released_time
        );
    }
    Ok(())
}
