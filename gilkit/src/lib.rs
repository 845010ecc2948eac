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
//! | ... with one attribute on a `#[pyfunction]` or method, checked at compile time | [`nogil`] |
//! | ... only when the work is long enough to be worth it | [`callsite::CallSite::detach_adaptive`], `#[nogil(adaptive)]` |
//! | see, per call site, how often and how long the GIL was released | [`mod@callsite`] (`callsite_stats()` in Python) |
//! | await a future from Python code | [`block_on`] (works inside another runtime) |
//! | return a Rust future to asyncio as an awaitable; await a Python coroutine from Rust | [`asyncio::future_into_py`], `#[nogil(awaitable)]`, [`asyncio::into_future`] |
//! | one tokio runtime, configurable, fork-safe, clean at exit | [`runtime`] |
//! | go back into Python from gilkit's threads safely | [`try_attach`] |
//! | expose runtime configuration to Python in one line | [`python::add_runtime_functions`] |
//! | call Python from async Rust without a pile-up, errors or deadlocks | [`GilSemaphore`], [`GilBatcher`] |
//! | read records from any Python file object, parse them off the GIL; write back in big chunks | [`file`](mod@file) |
//! | run one function over many items in parallel: ordered per-item outcomes, deadlines, Ctrl-C, progress; a `concurrent.futures` executor | [`batch`] |
//!
//! Every function says in its docs whether it holds, releases or re-acquires the GIL.
//!
//! # Getting started
//!
//! Add `gilkit = "0.1"` beside `pyo3 = "0.30"` in a `cdylib` crate, put `#[gilkit::nogil]` above a
//! `#[pyfunction]`, build with `maturin develop`: the [first chapter of the guide](guide::getting_started)
//! does it step by step, with a test that proves the GIL is released. The rest of the [guide]
//! has one chapter per concept.
//!
//! # Python versions
//!
//! | CPython | compiles | tests run |
//! |---|---|---|
//! | 3.11 | yes | every Rust and Python test |
//! | 3.13 | yes | every Python test (Debian 13's python3.13, the newest stable Debian's `python3`) |
//! | 3.9, 3.10, 3.12, 3.14, 3.15 | yes (checked against a PyO3 config file for each) | no |
//! | 3.14t, 3.15t (free-threaded) | yes (checked the same way) | **never run**: only the build is verified |
//! | `abi3` from 3.9, and from 3.11 | yes | no |
//! | 3.13t | no: PyO3 0.30 does not build for it | |
//!
//! Fallbacks: read errors of [`file`](mod@file) carry their PEP 678 note on every version (3.9
//! and 3.10 keep it in `__notes__` without printing it); with `abi3` below 3.11, where the buffer
//! protocol is not in the stable ABI, [`file`](mod@file) copies each chunk once more through a
//! `bytearray`.
//!
//! # Versioning
//!
//! 0.x: a release that breaks the API raises the minor version (0.1 -> 0.2) and lists every
//! rename with its old name in the changelog; patch releases never break code. The minimum
//! supported Rust version is 1.95, the toolchain the tests run on.
//!
//! # Cargo features
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `quanta` | on | call sites ([`nogil`], [`callsite!`]) time work with the CPU's time-stamp counter through the `quanta` crate, about 2.6 times cheaper per timed call than `std::time::Instant` on the machine measured (`benches/results/clock.md` in the gilkit source repository), for 3 more crates to compile. Off (`default-features = false`): `std::time::Instant`, the same statistics. |
//! | `test-hooks` | off | for test extensions only: fixes the work duration call sites measure (`callsite::test_hooks`, see [`callsite`](mod@crate::callsite)); never in a published extension. |
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

mod block_on;
mod cancel;
mod panic;
mod poll_gate;
mod pool;
mod process;
mod release;
mod thread_state;

pub mod asyncio;
pub mod batch;
pub mod batcher;
pub mod callsite;
pub mod file;
pub mod python;
pub mod runtime;
pub mod semaphore;
pub mod stats;

#[doc(hidden)]
pub mod __private;

pub use batcher::GilBatcher;
pub use block_on::block_on;
pub use cancel::{CancelToken, Cancelled};
/// This process's fork generation: 0 in the process that loaded gilkit, one more in each `fork()`
/// child than in its parent. Record it with per-process state (threads, pools of things threads
/// hold) and compare it later: a different value means a forked child, where the threads of the
/// recorded generation do not exist. Holds nothing and does not touch the GIL.
pub use process::generation as fork_generation;
pub use release::{
    DEFAULT_POLL_INTERVAL, Interruptible, detach, detach_interruptible, detach_interruptible_owned,
    try_attach,
};
pub use semaphore::{GilPermit, GilSemaphore, OwnedGilPermit};

/// Runs a function's body with the GIL released: the attribute form of [`detach`].
///
/// Put it on a `#[pyfunction]` (above or below `#[pyfunction]`), on a method inside
/// `#[pymethods]`, or on the `#[pymethods]` impl block itself (above `#[pymethods]`) with the
/// methods to release marked `#[nogil]`. The Python signature, text signature and docstring stay
/// as written: only the body changes. Each function gets a [`callsite::CallSite`] named after it,
/// so its calls show in [`callsite::call_sites`] and `callsite_stats()`.
///
/// | option | effect |
/// |---|---|
/// | (none) | the body runs with the GIL released ([`callsite::CallSite::detach`]) |
/// | `adaptive` | released only when the work is expected to take at least 250 µs ([the adaptive policy](mod@callsite#the-adaptive-policy)) |
/// | `adaptive(threshold_us = N)` | ... at least `N` µs |
/// | `adaptive(hint = expr)` | predicts the duration from a size (`usize`) the work follows |
/// | `interruptible` | Ctrl-C stops the call: the body sees a `token: &CancelToken` to check ([`detach_interruptible`]) |
/// | `interruptible(token = name)` | the same, with the token named `name` |
/// | `name = "..."` | the call site's name in the statistics |
/// | `awaitable` (on an `async fn`) | the function returns an asyncio awaitable of its future instead of blocking ([`asyncio::future_into_py`]) |
///
/// An `async fn` becomes a plain function that drives its body with [`block_on`] (GIL released,
/// Ctrl-C drops the future); for methods this needs the impl-block form, and for functions the
/// attribute above `#[pyfunction]`, because PyO3 must not see the `async fn` itself.
/// With `interruptible` or on an `async fn`, a return type that is not a `Result` becomes
/// `PyResult<_>` (the call can raise `KeyboardInterrupt`); Python sees no difference.
///
/// **Event loops:** that blocking form blocks the calling thread until the future completes. Called
/// from a coroutine, it stalls the whole asyncio event loop (every other task waits) for as long.
/// For functions meant to be awaited, write `#[nogil(awaitable)]`: the function then returns an
/// `asyncio.Future` at once (`PyResult<Py<PyAny>>` in Rust), the body runs on gilkit's runtime,
/// and Python writes `await f(...)`. Its arguments must be owned (the future outlives the call);
/// a method takes `slf: Py<Self>` on a frozen class. Awaitable calls are not counted in the call
/// site statistics. Why blocking stays the default: see the guide chapter [`guide::asyncio`].
///
/// The body must not touch Python: the attribute rejects, at compile time and at the offending
/// token, `py` and parameters whose type mentions `Python`, `Bound`, `Borrowed`, `PyRef` or
/// `PyRefMut` where the body uses them (names the body binds itself, such as the `py` of
/// `sem.run(move |py| ...)`, are its own), those type names in the body outside a closure, and a
/// `&mut self` receiver (other threads would get `Already borrowed`: use a frozen class with
/// interior mutability).
///
/// GIL: released for the body (or held, when the adaptive policy says so); held on return.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// /// Sums the bytes; other Python threads run meanwhile.
/// #[gilkit::nogil]
/// #[pyfunction]
/// fn checksum(data: Vec<u8>) -> u64 {
///     data.iter().map(|&b| u64::from(b)).sum()
/// }
///
/// #[pyclass(frozen)]
/// struct Model {
///     weights: Vec<f32>,
/// }
///
/// #[gilkit::nogil]
/// #[pymethods]
/// impl Model {
///     /// Scores `x`; released only when scoring is slow enough to be worth it.
///     #[nogil(adaptive)]
///     fn score(&self, x: Vec<f32>) -> f32 {
///         self.weights.iter().zip(&x).map(|(w, v)| w * v).sum()
///     }
/// }
/// # Python::attach(|py| {
/// #     let f = wrap_pyfunction!(checksum, py).unwrap();
/// #     assert_eq!(f.call1((vec![1u8, 2, 3],)).unwrap().extract::<u64>().unwrap(), 6);
/// # });
/// ```
///
/// See the guide chapter [`guide::nogil`] for what the attribute writes and how to choose a policy.
pub use gilkit_macros::nogil;

/// The guide: one chapter per concept, each example compiled and run as a doctest.
///
/// Start with [`getting_started`](crate::guide::getting_started): a first extension, built with
/// `maturin develop`, and a test that proves the GIL is released.
pub mod guide {
    #[doc = include_str!("../docs/getting-started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../docs/release.md")]
    pub mod release {}
    #[doc = include_str!("../docs/runtime.md")]
    pub mod runtime {}
    #[doc = include_str!("../docs/nogil.md")]
    pub mod nogil {}
    #[doc = include_str!("../docs/semaphore.md")]
    pub mod semaphore {}
    #[doc = include_str!("../docs/file-adapter.md")]
    pub mod file_adapter {}
    #[doc = include_str!("../docs/batch.md")]
    pub mod batch {}
    #[doc = include_str!("../docs/asyncio.md")]
    pub mod asyncio {}
    #[doc = include_str!("../docs/processes.md")]
    pub mod processes {}
}
