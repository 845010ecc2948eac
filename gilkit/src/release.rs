//! Running Rust work with the GIL released: [`detach`], the interruptible forms
//! ([`detach_interruptible`], [`detach_interruptible_owned`], [`Interruptible`]) and
//! [`try_attach`] for going back into Python from gilkit's threads.
//!
//! # Why interruptible forms exist
//! CPython runs signal handlers only on the main thread, and only between bytecodes. While the main
//! thread is inside a long Rust call, Ctrl-C sets a flag and nothing else happens: the user gets
//! `KeyboardInterrupt` seconds later, when the call returns, or never. [`detach_interruptible`] runs
//! the work on a helper thread, and the calling thread waits with the GIL released, re-attaching at
//! most every 50 ms (the poll interval) to run the signal handlers. When a handler raises, the
//! [`CancelToken`] given to the work is cancelled, and the call returns the exception as soon as the
//! work notices and returns.
//!
//! # What it costs
//! On the main thread (or when a poll hook is set) the work moves to a helper thread, taken from a
//! small pool that starts one on demand and lets it go after 10 s idle (see the `pool` module),
//! far cheaper than a thread spawned and joined per call (figures: `benches/results/release.md` in the gilkit source repository).
//! Elsewhere no signal can be delivered to the caller, so the work runs inline, exactly like [`detach`]. [`detach_interruptible_owned`]
//! runs its work on the same pool, detached: work it abandons after an interrupt keeps its pooled
//! thread until it returns, and the pool starts another thread for the next call meanwhile.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::marker::Ungil;
use pyo3::prelude::*;

use crate::CancelToken;
use crate::pool;
use crate::process;

/// How often a waiting caller re-attaches to run signal handlers and the poll hook, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs `f` with the GIL released and returns its result; the GIL is re-acquired before returning,
/// also when `f` panics.
///
/// This is [`Python::detach`] under gilkit's name, so that code written against gilkit reads
/// uniformly. For per-call-site statistics and the adaptive policy, use a named call site
/// (see the `callsite` module); this plain form adds no bookkeeping at all.
///
/// `f` cannot capture GIL-bound values (`Python`, `Bound`, `PyRef`): they are not [`Ungil`].
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// Python::attach(|py| {
///     let total: u64 = gilkit::detach(py, || (1..=1_000u64).sum());
///     assert_eq!(total, 500_500);
/// });
/// ```
#[inline]
pub fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Ungil + FnOnce() -> T,
    T: Ungil,
{
    py.detach(f)
}

/// Runs `f` with the GIL released, letting Ctrl-C (any Python signal handler that raises) stop it.
///
/// `f` receives a [`CancelToken`] and should check [`CancelToken::is_cancelled`] now and then (every
/// few milliseconds of work). When called on the main thread, the caller waits with the GIL released
/// and re-attaches at most every 50 ms to run Python's signal handlers; when one raises, the token is
/// cancelled and, once `f` returns, the call returns that exception (its result is dropped). On other
/// threads no signal can reach the caller, so `f` runs inline as with [`detach`].
///
/// `f` may borrow from the caller: the call always waits for `f` to return. Work that may never check
/// the token should use [`detach_interruptible_owned`], which can give up on it.
///
/// GIL: released while `f` runs; re-acquired briefly every poll interval on the main thread; held on
/// return.
///
/// # Errors
/// The exception raised by a signal handler (`KeyboardInterrupt` for Ctrl-C), or a `RuntimeError` if
/// the helper thread cannot be started.
///
/// # Panics
/// A panic in `f` is resumed on the calling thread.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let data = vec![1u64; 1_000_000];
///     let sum = gilkit::detach_interruptible(py, |token| {
///         let mut sum = 0;
///         for chunk in data.chunks(10_000) {
///             if token.is_cancelled() {
///                 break; // the caller returns KeyboardInterrupt
///             }
///             sum += chunk.iter().sum::<u64>();
///         }
///         sum
///     })?;
///     assert_eq!(sum, 1_000_000);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn detach_interruptible<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce(&CancelToken) -> T + Send,
    T: Send,
{
    Interruptible::new().run(py, f)
}

/// Like [`detach_interruptible`] for `'static` work, with a way out for work that never checks the
/// token: after a signal handler raises, the caller waits at most `grace` for `f` to return, then
/// returns the exception anyway.
///
/// **What happens to abandoned work:** it keeps its thread of gilkit's pool until it returns (Rust
/// cannot stop a thread from outside); its result is then dropped on that thread. It holds no GIL
/// while running. A second Ctrl-C during the grace period abandons the work at once.
///
/// GIL: as [`detach_interruptible`].
///
/// # Errors
/// As [`detach_interruptible`].
///
/// # Panics
/// A panic in `f` is resumed on the calling thread, unless the work was abandoned.
pub fn detach_interruptible_owned<T, F>(py: Python<'_>, grace: Duration, f: F) -> PyResult<T>
where
    F: FnOnce(&CancelToken) -> T + Send + 'static,
    T: Send + 'static,
{
    Interruptible::new().grace(grace).run_owned(py, f)
}

type PollHook<'a> = Box<dyn FnMut(Python<'_>) -> PyResult<()> + Send + 'a>;

/// The configurable form of [`detach_interruptible`]: poll interval, a hook run with the GIL
/// every interval (progress reporting, custom cancellation), an existing token, a grace period.
///
/// With a hook, the work runs on a helper thread even off the main thread, so the hook can run on
/// the calling thread while the work proceeds. The hook runs every interval while the work runs and
/// once more after it finishes (so a progress hook sees every item); an error from the hook cancels
/// the token and becomes the call's error.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use pyo3::prelude::*;
///
/// let done = AtomicUsize::new(0);
/// let mut reported = 0;
/// Python::attach(|py| -> PyResult<()> {
///     gilkit::Interruptible::new()
///         .poll_interval(Duration::from_millis(10))
///         .on_poll(|_py| {
///             reported = done.load(Ordering::Relaxed); // e.g. call tqdm's update here
///             Ok(())
///         })
///         .run(py, |token| {
///             for _ in 0..20 {
///                 if token.is_cancelled() {
///                     return;
///                 }
///                 std::thread::sleep(Duration::from_millis(2));
///                 done.fetch_add(1, Ordering::Relaxed);
///             }
///         })
/// })
/// .unwrap();
/// assert_eq!(reported, 20);
/// ```
#[must_use = "an Interruptible does nothing until `run` or `run_owned` is called"]
pub struct Interruptible<'a> {
    interval: Duration,
    hook: Option<PollHook<'a>>,
    token: CancelToken,
    grace: Duration,
}

impl Default for Interruptible<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Interruptible<'a> {
    /// The defaults: 50 ms poll interval, no hook, a fresh token, no grace period.
    pub fn new() -> Self {
        Self {
            interval: DEFAULT_POLL_INTERVAL,
            hook: None,
            token: CancelToken::new(),
            grace: Duration::ZERO,
        }
    }

    /// How often the waiting caller re-attaches (signals, hook). Clamped to at least 1 ms.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// A hook run with the GIL held on the calling thread every poll interval and once at the end.
    pub fn on_poll(mut self, hook: impl FnMut(Python<'_>) -> PyResult<()> + Send + 'a) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Uses `token` instead of a fresh one, so other code can cancel the work too.
    pub fn token(mut self, token: CancelToken) -> Self {
        self.token = token;
        self
    }

    /// For [`run_owned`](Self::run_owned): how long to wait for the work after an interrupt before
    /// abandoning it.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs `f` with the GIL released, polling as configured; see [`detach_interruptible`].
    ///
    /// # Errors
    /// The exception raised by a signal handler or by the hook; `RuntimeError` if the helper thread
    /// cannot be started.
    ///
    /// # Panics
    /// A panic in `f` is resumed on the calling thread.
    pub fn run<T, F>(self, py: Python<'_>, f: F) -> PyResult<T>
    where
        F: FnOnce(&CancelToken) -> T + Send,
        T: Send,
    {
        let Self {
            interval,
            mut hook,
            token,
            ..
        } = self;
        let on_main = is_main_thread(py);
        if hook.is_none() && !on_main {
            return Ok(py.detach(|| f(&token)));
        }
        let worker_token = token.clone();
        let (outcome, poller) = pool::join(
            move || f(&worker_token),
            |finished| {
                let mut poller = Poller::new(on_main, hook.as_mut());
                while !py.detach(|| finished.wait_timeout(interval)) {
                    if let Err(err) = poller.poll(py) {
                        token.cancel();
                        poller.failure = Some(err);
                    }
                }
                poller
            },
        )
        .map_err(spawn_error)?;
        let value = outcome.unwrap_or_else(|panic| resume_unwind(panic));
        poller.finish(py)?;
        Ok(value)
    }

    /// Runs `'static` work with the GIL released, polling as configured; after an interrupt, waits at
    /// most the grace period for the work, then abandons it. See [`detach_interruptible_owned`].
    ///
    /// # Errors
    /// As [`run`](Self::run).
    ///
    /// # Panics
    /// A panic in `f` is resumed on the calling thread, unless the work was abandoned.
    pub fn run_owned<T, F>(self, py: Python<'_>, f: F) -> PyResult<T>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let Self {
            interval,
            mut hook,
            token,
            grace,
        } = self;
        let on_main = is_main_thread(py);
        if hook.is_none() && !on_main {
            return Ok(py.detach(|| f(&token)));
        }
        let (result_tx, result_rx) = crossbeam_channel::bounded::<thread::Result<T>>(1);
        let worker_token = token.clone();
        pool::spawn("gilkit-owned", move || {
            let result = catch_unwind(AssertUnwindSafe(|| f(&worker_token)));
            // If the caller gave up, nobody receives: the result is dropped here.
            let _ = result_tx.send(result);
        })
        .map_err(spawn_error)?;
        let mut poller = Poller::new(on_main, hook.as_mut());
        let mut give_up_at: Option<Instant> = None;
        loop {
            let wait = give_up_at.map_or(interval, |at| {
                interval.min(at.saturating_duration_since(Instant::now()))
            });
            match py.detach(|| result_rx.recv_timeout(wait)) {
                Ok(Ok(value)) => {
                    poller.finish(py)?;
                    return Ok(value);
                }
                Ok(Err(panic)) => resume_unwind(panic),
                Err(RecvTimeoutError::Disconnected) => {
                    // The job always sends; it can only have been dropped unrun, which `spawn`
                    // reports as an error instead.
                    return Err(PyRuntimeError::new_err(
                        "gilkit's interruptible work ended without a result",
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if give_up_at.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            let already_failed = poller.failure.is_some();
            if let Err(err) = poller.poll_signals_always(py) {
                token.cancel();
                if already_failed {
                    break; // a second interrupt: stop waiting at once
                }
                poller.failure = Some(err);
                give_up_at = Some(Instant::now() + grace);
            }
        }
        // Abandoned: the work runs on, detached, on its pooled thread.
        Err(poller
            .failure
            .take()
            .expect("only an interrupt abandons the work"))
    }
}

/// The attached part of the waiting loop: signal handlers (main thread only) and the hook.
struct Poller<'h, 'a> {
    on_main: bool,
    hook: Option<&'h mut PollHook<'a>>,
    failure: Option<PyErr>,
}

impl<'h, 'a> Poller<'h, 'a> {
    fn new(on_main: bool, hook: Option<&'h mut PollHook<'a>>) -> Self {
        Self {
            on_main,
            hook,
            failure: None,
        }
    }

    /// One poll, until the first failure; afterwards the work is winding down and is left alone.
    fn poll(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.failure.is_some() {
            return Ok(());
        }
        self.poll_signals_always(py)
    }

    fn poll_signals_always(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.on_main {
            py.check_signals()?;
        }
        if self.failure.is_none()
            && let Some(hook) = self.hook.as_mut()
        {
            hook(py)?;
        }
        Ok(())
    }

    /// After the work returned: the recorded failure, else one last hook call.
    fn finish(mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(err) = self.failure.take() {
            return Err(err);
        }
        match self.hook.as_mut() {
            Some(hook) => hook(py),
            None => Ok(()),
        }
    }
}

fn spawn_error(err: std::io::Error) -> PyErr {
    PyRuntimeError::new_err(format!(
        "gilkit could not start a helper thread for interruptible work: {err}"
    ))
}

/// Re-acquires the GIL and runs `f`, unless the interpreter is exiting or cannot be attached to,
/// in which case `f` does not run and `None` is returned.
///
/// Use this, not [`Python::attach`], from threads gilkit runs (runtime tasks, batch workers): during
/// interpreter exit, attaching from such a thread crashes or hangs the process.
///
/// GIL: re-acquires it for the duration of `f` (blocking until it is available).
///
/// # Examples
///
/// ```
/// # pyo3::Python::initialize();
/// let answer = gilkit::try_attach(|py| py.version_info().major);
/// assert_eq!(answer, Some(3));
/// ```
pub fn try_attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if process::is_exiting() {
        return None;
    }
    Python::try_attach(f)
}

/// Python's main thread, as `PyThread_get_thread_ident` sees it, and the fork generation it was
/// looked up in (the thread that forks becomes the child's main thread). `MAIN_THREAD_GENERATION`
/// is `u64::MAX` while unknown.
///
/// Ordering: the ident is stored before the generation (`Release`), and read after it
/// (`Acquire`), so a reader that sees the current generation sees the ident looked up in it.
/// Two racing lookups in one process store the same values.
static MAIN_THREAD_IDENT: AtomicU64 = AtomicU64::new(0);
static MAIN_THREAD_GENERATION: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether the calling thread is Python's main thread, the only one that runs signal handlers.
pub(crate) fn is_main_thread(py: Python<'_>) -> bool {
    // `c_ulong` is 32 bits on some platforms, so the conversion is not useless everywhere.
    #[allow(clippy::useless_conversion)]
    // SAFETY: PyThread_get_thread_ident has no preconditions; it returns the OS thread id.
    let me = u64::from(unsafe { pyo3::ffi::PyThread_get_thread_ident() });
    let generation = process::generation();
    if MAIN_THREAD_GENERATION.load(Ordering::Acquire) == generation {
        return me == MAIN_THREAD_IDENT.load(Ordering::Relaxed);
    }
    let looked_up = py
        .import("threading")
        .and_then(|threading| threading.call_method0("main_thread"))
        .and_then(|thread| thread.getattr("ident"))
        .and_then(|ident| ident.extract::<u64>());
    let main = match looked_up {
        Ok(ident) => ident,
        Err(err) => {
            // `threading.main_thread()` is Python code, so a pending signal's handler runs in it: a
            // Ctrl-C that arrived just before fails the lookup with KeyboardInterrupt. Swallowing
            // it would lose the Ctrl-C, and caching a failure would stop every later interruptible
            // call on the main thread from checking signals. So: re-arm SIGINT for the caller's
            // next signal check, cache nothing (look up again next time), and answer "main"
            // (checking signals off the main thread is a no-op anyway).
            if err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                // SAFETY: called with the GIL held; it only marks SIGINT as pending.
                unsafe { pyo3::ffi::PyErr_SetInterrupt() };
            }
            return true;
        }
    };
    MAIN_THREAD_IDENT.store(main, Ordering::Relaxed);
    MAIN_THREAD_GENERATION.store(generation, Ordering::Release);
    me == main
}
