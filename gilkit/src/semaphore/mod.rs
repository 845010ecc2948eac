//! Calling Python from async Rust: [`GilSemaphore`] bounds who may be inside Python, and
//! [`GilBatcher`](crate::batcher::GilBatcher) (in [`crate::batcher`]) turns many concurrent calls into one GIL acquisition per batch.
//!
//! A tokio server that calls a Python model has to cross from its tasks into the interpreter. Done
//! naively (`spawn_blocking(|| Python::attach(..))` per request), hundreds of blocking threads pile
//! up behind the GIL; done with a `try_lock`, contention turns into errors. The semaphore makes
//! tasks wait in line, asynchronously and in order, for one of a fixed number of permits, and only
//! a task holding a permit goes to the blocking pool and attaches. The batcher goes further for
//! models whose cost is mostly per call (batched ML models): one worker thread takes up to
//! `max_batch` queued requests, calls the model once with all of them, and routes each result back.
//! The guide chapter [`guide::semaphore`](crate::guide::semaphore) explains how to choose between them and how many permits
//! to use on GIL and free-threaded builds.
//!
//! # Lock order and deadlock freedom
//!
//! A permit is a lock, and so is the GIL (or, on a free-threaded build, the stop-the-world pauses
//! of the interpreter). Deadlock is impossible as long as every thread takes them in one order:
//!
//! 1. a permit, waited for **detached** (the async `acquire*` methods never touch the interpreter;
//!    [`GilSemaphore::acquire_py_attached`] detaches before it blocks);
//! 2. then the GIL ([`OwnedGilPermit::attach`], [`GilSemaphore::run`]);
//! 3. then any Rust lock taken while attached, **with the GIL released while blocked**: PyO3's
//!    [`MutexExt::lock_py_attached`](pyo3::sync::MutexExt::lock_py_attached) for `std` locks (and
//!    `parking_lot` ones with PyO3's `parking_lot` feature).
//!
//! The order forbids the reverse too: never wait for a permit while holding a Rust lock that a
//! permit holder may want (with one permit, the holder waits for the lock, the lock's owner for the
//! permit, and no GIL release can help).
//!
//! The lock-order inversion that hung akidb is a thread holding the GIL blocked on a Rust lock (or
//! semaphore) whose holder waits for the GIL; rules 1 and 3 make the blocked thread let go of the
//! GIL, so the holder finishes. `gilkit/tests/semaphore_deadlock.rs` reproduces the inversion 1,000
//! times with these primitives, and shows the naive version hang. gilkit itself takes no lock while
//! attached: statistics are recorded with atomics.
//!
//! # Implementation details
//!
//! Permits and fairness come from [`tokio::sync::Semaphore`] (a FIFO queue of waiters, cancel safe:
//! a waiter dropped from the queue hands any permit it was just assigned to the next one). A
//! [`OwnedGilPermit`] owns one permit taken out of it (`forget`) and puts it back on drop. The queue
//! bound (`queue_bound.rs`) is a counter of tasks inside the wait, incremented with a
//! compare-and-swap that refuses past the bound, and decremented by a guard when the wait ends,
//! however it ends; it is model-checked with loom.
//!
//! # Memory ordering
//!
//! The counters here (tasks waiting, statistics) are `Relaxed`: the bound needs only the atomicity
//! of the read-modify-write on the one counter, and nothing else is published through them. The
//! permits themselves synchronize through tokio's semaphore (a permit handed from one task to the
//! next is a release/acquire pair inside it), so what one permit holder wrote is visible to the
//! next.

pub(crate) mod error;
mod queue_bound;
pub(crate) mod stats;

/// The atomics of `queue_bound`, which `gilkit/tests/loom_queue_bound.rs` swaps for loom's.
mod atomic {
    pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::sync::Semaphore;

pub use error::{AcquireError, InvalidConfig, RunError, TryAcquireError};
pub use stats::{LatencySummary, SemaphoreStats};

use crate::panic::panic_message;
use crate::stats::{DurationHistogram, nanos};
use queue_bound::{QueueBound, QueueSlot};

/// A fair, async semaphore that bounds how many tasks are inside Python (or waiting for the GIL)
/// at once.
///
/// `GilSemaphore` is a handle: cloning it is cheap and every clone shares the same permits. Tasks
/// wait for a permit asynchronously, first come first served; the holder of a [`OwnedGilPermit`]
/// attaches to the interpreter with [`OwnedGilPermit::attach`]. [`run`](GilSemaphore::run) does the
/// whole dance: permit, blocking pool, attach, give back, result.
///
/// On a GIL build the permits bound the crowd in front of the GIL (use 2: one inside, one ready at
/// the door); on a free-threaded build each permit can run Python in parallel (start from the core
/// count). See [`guide::semaphore`](crate::guide::semaphore).
///
/// # Examples
///
/// A tokio task calls a Python function, at most two at a time:
///
/// ```
/// use gilkit::GilSemaphore;
/// use pyo3::prelude::*;
///
/// # Python::initialize();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let sem = GilSemaphore::builder().permits(2).build();
/// let n: usize = sem
///     .run(|py| py.eval(c"len('hello')", None, None)?.extract())
///     .await?;
/// assert_eq!(n, 5);
/// assert_eq!(sem.stats().total_acquired, 1);
/// # Ok::<(), gilkit::semaphore::RunError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct GilSemaphore {
    shared: Arc<Shared>,
}

struct Shared {
    sem: Semaphore,
    permits: usize,
    /// Tasks inside the slow path of an acquire (queued in `sem`, or about to be).
    queue: QueueBound,
    total_acquired: AtomicU64,
    rejected_busy: AtomicU64,
    timed_out: AtomicU64,
    wait: DurationHistogram,
    python_calls: AtomicU64,
    python_ns: AtomicU64,
    attach_wait_ns: AtomicU64,
}

/// Builds a [`GilSemaphore`]; from [`GilSemaphore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct GilSemaphoreBuilder {
    permits: usize,
    max_queue: Option<usize>,
}

impl GilSemaphoreBuilder {
    /// How many permit holders may be inside Python (or waiting to attach) at once. Default 2: on a
    /// GIL build, one runs Python while the next waits at the GIL, so the GIL never idles between
    /// calls (see [`guide::semaphore`](crate::guide::semaphore) for free-threaded builds).
    pub fn permits(mut self, permits: usize) -> Self {
        self.permits = permits;
        self
    }

    /// The most tasks that may wait for a permit; past it, acquiring fails at once with
    /// [`AcquireError::Busy`] instead of queueing. `None` (the default) waits without bound.
    ///
    /// A task that finds a free permit never counts against the bound, so with `Some(n)` an acquire
    /// fails only when every permit is taken *and* `n` tasks already wait. `Some(0)` therefore
    /// behaves like `try_acquire_owned`.
    pub fn max_queue(mut self, max_queue: Option<usize>) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Builds the semaphore.
    ///
    /// # Panics
    ///
    /// Where [`try_build`](Self::try_build) returns an error; use that for values that come
    /// from users (from Python, a configuration file, ...).
    pub fn build(self) -> GilSemaphore {
        self.try_build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds the semaphore, or says why the configuration cannot work.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if `permits` is 0 (nobody could ever enter) or above
    /// [`Semaphore::MAX_PERMITS`].
    pub fn try_build(self) -> Result<GilSemaphore, InvalidConfig> {
        if self.permits == 0 {
            return Err(InvalidConfig::new(
                "a GilSemaphore needs at least 1 permit, got 0",
            ));
        }
        if self.permits > Semaphore::MAX_PERMITS {
            return Err(InvalidConfig::new(format!(
                "a GilSemaphore can have at most {} permits, got {}",
                Semaphore::MAX_PERMITS,
                self.permits
            )));
        }
        Ok(GilSemaphore {
            shared: Arc::new(Shared {
                sem: Semaphore::new(self.permits),
                permits: self.permits,
                queue: QueueBound::new(self.max_queue),
                total_acquired: AtomicU64::new(0),
                rejected_busy: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                wait: DurationHistogram::new(),
                python_calls: AtomicU64::new(0),
                python_ns: AtomicU64::new(0),
                attach_wait_ns: AtomicU64::new(0),
            }),
        })
    }
}

impl GilSemaphore {
    /// A builder: 2 permits and no queue bound unless set.
    pub fn builder() -> GilSemaphoreBuilder {
        GilSemaphoreBuilder {
            permits: 2,
            max_queue: None,
        }
    }

    /// A semaphore with `permits` permits and no queue bound.
    ///
    /// # Panics
    ///
    /// As [`GilSemaphoreBuilder::build`]; [`try_new`](Self::try_new) returns the error instead.
    pub fn new(permits: usize) -> Self {
        Self::builder().permits(permits).build()
    }

    /// A semaphore with `permits` permits and no queue bound, or why `permits` cannot work.
    ///
    /// # Errors
    ///
    /// As [`GilSemaphoreBuilder::try_build`].
    pub fn try_new(permits: usize) -> Result<Self, InvalidConfig> {
        Self::builder().permits(permits).try_build()
    }

    /// Waits in line for a permit, borrowed from this handle.
    ///
    /// Does not touch the interpreter (neither holds nor needs the GIL). Tasks get permits in the
    /// order they started waiting.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Busy`] if the semaphore has a queue bound and it is reached;
    /// [`AcquireError::Closed`] if the semaphore is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future gives up the place in line and leaves no permit taken.
    pub async fn acquire(&self) -> Result<GilPermit<'_>, AcquireError> {
        self.acquire_inner().await?;
        Ok(GilPermit {
            shared: &self.shared,
        })
    }

    /// Waits in line for a permit that owns a handle to the semaphore, so it can be moved to
    /// another thread (e.g. into `spawn_blocking`) or stored.
    ///
    /// Does not touch the interpreter.
    ///
    /// # Examples
    ///
    /// ```
    /// use gilkit::GilSemaphore;
    /// use pyo3::prelude::*;
    ///
    /// # Python::initialize();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let sem = GilSemaphore::new(1);
    /// let permit = sem.acquire_owned().await?;
    /// let version = tokio::task::spawn_blocking(move || {
    ///     permit.attach(|py| py.version_info().major)
    /// })
    /// .await
    /// .unwrap();
    /// assert_eq!(version, 3);
    /// # Ok::<(), gilkit::semaphore::AcquireError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    pub async fn acquire_owned(&self) -> Result<OwnedGilPermit, AcquireError> {
        self.acquire_inner().await?;
        Ok(OwnedGilPermit {
            shared: Arc::clone(&self.shared),
        })
    }

    /// Takes a permit borrowed from this handle if one is free and nobody is waiting, without
    /// waiting (tokio's `try_acquire`); [`try_acquire_owned`](Self::try_acquire_owned) for one
    /// that can move to another thread.
    ///
    /// Never jumps the queue. Does not touch the interpreter.
    ///
    /// # Errors
    ///
    /// As [`try_acquire_owned`](Self::try_acquire_owned).
    pub fn try_acquire(&self) -> Result<GilPermit<'_>, TryAcquireError> {
        let owned = self.try_acquire_owned()?;
        // The owned permit's `Drop` would give the permit back: hand it to the borrowed one.
        std::mem::forget(owned);
        Ok(GilPermit {
            shared: &self.shared,
        })
    }

    /// Takes a permit if one is free and nobody is waiting, without waiting.
    ///
    /// Never jumps the queue: while tasks wait, this fails even if a permit is just being handed
    /// over. Does not touch the interpreter.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] if no permit is free; [`TryAcquireError::Closed`] if the
    /// semaphore is closed.
    pub fn try_acquire_owned(&self) -> Result<OwnedGilPermit, TryAcquireError> {
        match self.shared.sem.try_acquire() {
            Ok(p) => {
                p.forget();
                self.shared.record_acquired(Duration::ZERO);
                Ok(OwnedGilPermit {
                    shared: Arc::clone(&self.shared),
                })
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(TryAcquireError::NoPermits),
            Err(tokio::sync::TryAcquireError::Closed) => Err(TryAcquireError::Closed),
        }
    }

    /// Waits in line for a permit for at most `timeout`.
    ///
    /// Does not touch the interpreter.
    ///
    /// # Errors
    ///
    /// [`AcquireError::TimedOut`] if no permit came in time; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Panics
    ///
    /// If called inside a tokio runtime whose time driver is off; outside any tokio runtime it uses
    /// the timer of gilkit's shared runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<OwnedGilPermit, AcquireError> {
        let timed = {
            // The timer registers with a runtime when created; outside tokio, with gilkit's own.
            let shared = tokio::runtime::Handle::try_current()
                .is_err()
                .then(crate::runtime::handle);
            let _context = shared.as_ref().map(tokio::runtime::Handle::enter);
            tokio::time::timeout(timeout, self.acquire_owned())
        };
        match timed.await {
            Ok(r) => r,
            Err(_) => {
                self.shared.timed_out.fetch_add(1, Relaxed);
                Err(AcquireError::TimedOut { waited: timeout })
            }
        }
    }

    /// Takes a permit from a thread that is attached to Python, **releasing the GIL while it
    /// waits** and re-attaching before it returns.
    ///
    /// This is the semaphore's `lock_py_attached`: blocking on a permit while holding the GIL would
    /// deadlock as soon as the permit holder needs the GIL (the akidb hang). Use it from
    /// `#[pyfunction]`s and other synchronous code; async code uses [`acquire`](Self::acquire).
    /// The wait goes through [`gilkit::block_on`](crate::block_on), so on the main thread Ctrl-C
    /// ends it.
    ///
    /// GIL: released while waiting; held on return.
    ///
    /// # Errors
    ///
    /// The [`AcquireError`] (busy, closed) as a Python exception, or the exception a signal
    /// handler raised while waiting (`KeyboardInterrupt`).
    pub fn acquire_py_attached(&self, py: Python<'_>) -> PyResult<OwnedGilPermit> {
        match self.try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(TryAcquireError::Closed) => return Err(AcquireError::Closed.into()),
            Err(TryAcquireError::NoPermits) => {}
        }
        Ok(crate::block_on(py, self.acquire_owned())??)
    }

    /// Takes a permit, runs `f` attached to the interpreter on tokio's blocking pool, gives the
    /// permit back and returns `f`'s result.
    ///
    /// The calling task waits asynchronously (first for the permit, then for `f`); the blocking
    /// thread attaches for the duration of `f` only. `f` runs on the blocking pool of the current
    /// tokio runtime, or of gilkit's shared runtime when called from another executor.
    ///
    /// GIL: not held by the caller; acquired by the blocking thread around `f`.
    ///
    /// The time `f` takes and the time spent waiting to attach are added to
    /// [`stats`](Self::stats).
    ///
    /// # Errors
    ///
    /// - [`RunError::Acquire`] if no permit was given (busy or closed); `f` did not run;
    /// - [`RunError::Python`] with `f`'s exception, untouched;
    /// - [`RunError::Panicked`] if `f` panicked; the permit is given back all the same;
    /// - [`RunError::InterpreterUnavailable`] if the interpreter is not initialized or is exiting;
    /// - [`RunError::RuntimeShutdown`] if the runtime shut down before `f` could run.
    ///
    /// # Panics
    ///
    /// Only if called outside a tokio runtime and gilkit's shared runtime cannot start (see
    /// [`runtime::handle`](crate::runtime::handle)).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits for a permit is cancel safe: `f` never runs and no permit
    /// is taken. Once `f` has been handed to the blocking pool it cannot be stopped: dropping the
    /// future then lets `f` run to completion, its result is dropped, and the permit is given back
    /// when `f` returns (so the permits keep bounding what is really inside Python).
    pub async fn run<T, F>(&self, f: F) -> Result<T, RunError>
    where
        F: for<'py> FnOnce(Python<'py>) -> PyResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.acquire_owned().await?;
        let call = runtime_handle().spawn_blocking(move || permit.try_attach(f));
        match call.await {
            Ok(Some(Ok(value))) => Ok(value),
            Ok(Some(Err(e))) => Err(RunError::Python(e)),
            Ok(None) => Err(RunError::InterpreterUnavailable),
            Err(e) if e.is_panic() => Err(RunError::Panicked(panic_message(&*e.into_panic()))),
            Err(_) => Err(RunError::RuntimeShutdown),
        }
    }

    /// A snapshot of the semaphore's state and history. Takes no lock; see [`SemaphoreStats`] for
    /// how exact it is while calls are running.
    pub fn stats(&self) -> SemaphoreStats {
        let s = &self.shared;
        let available = s.sem.available_permits();
        SemaphoreStats {
            permits: s.permits,
            in_use: s.permits.saturating_sub(available),
            waiting: s.queue.len(),
            max_queue: s.queue.max(),
            total_acquired: s.total_acquired.load(Relaxed),
            rejected_busy: s.rejected_busy.load(Relaxed),
            timed_out: s.timed_out.load(Relaxed),
            wait: s.wait.summary(),
            python_calls: s.python_calls.load(Relaxed),
            python_time: Duration::from_nanos(s.python_ns.load(Relaxed)),
            attach_wait: Duration::from_nanos(s.attach_wait_ns.load(Relaxed)),
        }
    }

    /// The number of permits the semaphore was built with.
    pub fn permits(&self) -> usize {
        self.shared.permits
    }

    /// Permits free right now.
    pub fn available_permits(&self) -> usize {
        self.shared.sem.available_permits()
    }

    /// Closes the semaphore: every waiting and future acquire fails with [`AcquireError::Closed`].
    /// Permits already held stay valid until dropped. Use it to drain a server on shutdown.
    pub fn close(&self) {
        self.shared.sem.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.sem.is_closed()
    }

    async fn acquire_inner(&self) -> Result<(), AcquireError> {
        let s = &*self.shared;
        let start = Instant::now();
        // Fast path. tokio hands released permits straight to queued waiters, so a permit is only
        // free when nobody waits: this never overtakes the queue.
        match s.sem.try_acquire() {
            Ok(p) => {
                p.forget();
                s.record_acquired(start.elapsed());
                return Ok(());
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(AcquireError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        let _in_line = s.enter_queue()?;
        let permit = s.sem.acquire().await.map_err(|_| AcquireError::Closed)?;
        // No await between here and the return: the permit cannot be lost to a cancellation.
        permit.forget();
        s.record_acquired(start.elapsed());
        Ok(())
    }
}

impl std::fmt::Debug for GilSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GilSemaphore")
            .field("permits", &self.shared.permits)
            .field("available", &self.available_permits())
            .field("waiting", &self.shared.queue.len())
            .field("max_queue", &self.shared.queue.max())
            .finish()
    }
}

impl Shared {
    fn record_acquired(&self, waited: Duration) {
        self.total_acquired.fetch_add(1, Relaxed);
        self.wait.record(waited);
    }

    /// Counts the caller into the wait queue, or refuses with `Busy` when the bound is reached.
    fn enter_queue(&self) -> Result<QueueSlot<'_>, AcquireError> {
        self.queue.enter().map_err(|queue_len| {
            self.rejected_busy.fetch_add(1, Relaxed);
            AcquireError::Busy {
                queue_len,
                // A refusal implies a bound.
                max_queue: self.queue.max().unwrap_or(queue_len),
            }
        })
    }

    /// Attaches and runs `f`, timing the wait to attach and the time inside. `None` when the
    /// interpreter cannot be attached to (not initialized, or finalizing).
    fn try_attach_timed<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
        let asked = Instant::now();
        crate::try_attach(|py| self.timed(asked, py, f))
    }

    fn timed<R>(&self, asked: Instant, py: Python<'_>, f: impl FnOnce(Python<'_>) -> R) -> R {
        let entered = Instant::now();
        // Recorded by a guard so a panicking call is counted too.
        let _timer = PythonTimer {
            shared: self,
            asked,
            entered,
        };
        f(py)
    }
}

struct PythonTimer<'a> {
    shared: &'a Shared,
    asked: Instant,
    entered: Instant,
}

impl Drop for PythonTimer<'_> {
    fn drop(&mut self) {
        let s = self.shared;
        s.python_calls.fetch_add(1, Relaxed);
        s.python_ns
            .fetch_add(nanos(self.entered.elapsed()), Relaxed);
        s.attach_wait_ns
            .fetch_add(nanos(self.entered - self.asked), Relaxed);
    }
}

/// A permit of a [`GilSemaphore`] that owns a handle to it: `Send`, `'static`, movable into
/// `spawn_blocking`. The permit goes back to the semaphore when this is dropped.
///
/// Holding a permit does not hold the GIL; [`attach`](OwnedGilPermit::attach) attaches.
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct OwnedGilPermit {
    shared: Arc<Shared>,
}

impl OwnedGilPermit {
    /// Attaches this thread to the interpreter (acquiring the GIL on a GIL build), runs `f`, and
    /// detaches. Blocks while waiting for the GIL: call it from a blocking thread, not from an
    /// async task. The time inside `f` counts in the semaphore's `python_time` statistic.
    ///
    /// # Panics
    ///
    /// As [`Python::attach`]: if the interpreter is not initialized (and PyO3's `auto-initialize`
    /// feature is off). A panic in `f` propagates; the permit is given back when `self` drops.
    pub fn attach<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        attach_timed(&self.shared, f)
    }

    /// As [`attach`](Self::attach), but returns `None` instead of attaching when the interpreter is
    /// not initialized or is shutting down.
    pub fn try_attach<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
        self.shared.try_attach_timed(f)
    }
}

impl Drop for OwnedGilPermit {
    fn drop(&mut self) {
        self.shared.sem.add_permits(1);
    }
}

impl std::fmt::Debug for OwnedGilPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedGilPermit").finish_non_exhaustive()
    }
}

/// A permit of a [`GilSemaphore`] borrowed from the handle it came from (from
/// [`GilSemaphore::acquire`]); otherwise as [`OwnedGilPermit`].
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct GilPermit<'a> {
    shared: &'a Shared,
}

impl GilPermit<'_> {
    /// As [`OwnedGilPermit::attach`].
    ///
    /// # Panics
    ///
    /// As [`OwnedGilPermit::attach`].
    pub fn attach<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        attach_timed(self.shared, f)
    }

    /// As [`OwnedGilPermit::try_attach`].
    pub fn try_attach<R>(&self, f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
        self.shared.try_attach_timed(f)
    }
}

impl Drop for GilPermit<'_> {
    fn drop(&mut self) {
        self.shared.sem.add_permits(1);
    }
}

impl std::fmt::Debug for GilPermit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GilPermit").finish_non_exhaustive()
    }
}

fn attach_timed<R>(shared: &Shared, f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    let asked = Instant::now();
    Python::attach(|py| shared.timed(asked, py, f))
}

/// The runtime to use for blocking calls and timers: the caller's, else gilkit's shared one.
fn runtime_handle() -> tokio::runtime::Handle {
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| crate::runtime::handle())
}
