//! # gilkit: real parallelism for PyO3 extensions
//!
//! Python's GIL serialises threads. An extension releases it by hand and gets it wrong in the same
//! few ways: the GIL is held across blocking calls, Ctrl-C is ignored for seconds, Rust locks and the
//! GIL deadlock, hundreds of blocking threads queue for the GIL, a file object forces the GIL on every
//! read, and "parallel" batch helpers busy-poll, drop results or lose order. gilkit fixes these with
//! a few small pieces:
//!
//! | need | gilkit |
//! |---|---|
//! | release the GIL around Rust work | [`detach`] |
//! | ... and let Ctrl-C stop it | [`detach_interruptible`], [`detach_interruptible_owned`], [`Interruptible`] |
//! | await a future from Python code | [`block_on`] (works inside another runtime) |
//! | one tokio runtime, configurable, fork-safe, clean at exit | [`runtime`] |
//! | go back into Python from gilkit's threads safely | [`try_attach`] |
//! | expose runtime configuration to Python in one line | [`python::add_runtime_functions`] |
//!
//! Every function says in its docs whether it holds, releases or re-acquires the GIL.
//!
//! # Example
//!
//! ```
//! use pyo3::prelude::*;
//!
//! /// Counts primes below `n` with the GIL released, so other Python threads run meanwhile,
//! /// and Ctrl-C stops it within ~50 ms.
//! #[pyfunction]
//! fn count_primes(py: Python<'_>, n: u64) -> PyResult<u64> {
//!     gilkit::detach_interruptible(py, |token| {
//!         let mut count = 0;
//!         for k in 2..n {
//!             if k % 4096 == 0 && token.is_cancelled() {
//!                 break;
//!             }
//!             if (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0) {
//!                 count += 1;
//!             }
//!         }
//!         count
//!     })
//! }
//! # Python::attach(|py| {
//! #     let f = wrap_pyfunction!(count_primes, py).unwrap();
//! #     assert_eq!(f.call1((100,)).unwrap().extract::<u64>().unwrap(), 25);
//! # });
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod batch;
mod block_on;
mod cancel;
mod release;

pub mod python;
pub mod runtime;

pub use block_on::block_on;
pub use cancel::{CancelToken, Cancelled};
pub use release::{
    DEFAULT_POLL_INTERVAL, Interruptible, detach, detach_interruptible, detach_interruptible_owned,
    try_attach,
};

/// The guide's chapters, compiled as doctests so their code stays true.
#[cfg(doctest)]
mod guide {
    #[doc = include_str!("../../docs/release.md")]
    struct Release;
    #[doc = include_str!("../../docs/runtime.md")]
    struct Runtime;
    #[doc = include_str!("../../docs/batch.md")]
    struct Batch;
}
