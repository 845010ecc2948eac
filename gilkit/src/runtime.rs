//! The shared tokio runtime: one lazily started multi-thread runtime for all of gilkit.
//!
//! Everything in gilkit that needs tokio (`block_on`, the semaphore, the batch executor, the example
//! packages) runs on this one runtime, so an extension never starts a runtime per call or per object.
//!
//! # How it works
//! - **Lazily started.** [`handle`] builds the runtime on first use from the configuration given to
//!   [`configure`] (or the defaults). After that, `configure` returns
//!   [`ConfigureError::AlreadyStarted`]: a late configuration is an error, never a silent no-op.
//! - **Cheap to reach.** The started runtime lives in a leaked, immutable `Started` record behind one
//!   `AtomicPtr`; [`handle`] is one atomic load and an `Arc` clone.
//! - **Fork-safe.** A child made by `fork()` (Python's `os.fork()`, `multiprocessing` with the fork
//!   start method) has none of the parent's runtime threads, so the parent's runtime is useless there
//!   and would hang the first `block_on`. The `Started` record keeps the fork generation it was
//!   built in (see the `process` module); in a child the generation differs, the record is ignored
//!   (leaked: dropping it would wait for threads that do not exist), and the child's first use
//!   starts a fresh runtime. Fork hooks registered with the process layer hold the start lock across
//!   `fork()` so a child never inherits it locked by a thread that does not exist there.
//! - **Clean exit.** [`shutdown`] stops the runtime with a timeout; the Python helpers register it
//!   with `atexit` (see [`crate::python`]), and mark the interpreter as exiting first so that
//!   [`crate::try_attach`] refuses to attach from a runtime thread during finalization (attaching then
//!   would crash or hang the process).
//! - **One Python thread state per thread.** Each runtime thread (worker or blocking) keeps one
//!   Python thread state from its start to its end, detached between uses, so `threading.local`
//!   values set by Python code it calls survive from one attach to the next (see the
//!   `thread_state` module). A thread that ends while the interpreter is exiting leaves its state
//!   to the interpreter's teardown instead of re-attaching.
//! - **Measured facts.** [`info`] reports thread counts counted by the runtime's own thread start and
//!   stop hooks, tokio's live task count and the real uptime, not the configuration echoed back.
//!
//! # Memory ordering
//! `CURRENT` is written with `Release` after the `Started` record is fully built and read with
//! `Acquire`, so a reader that sees the pointer sees the whole record (its generation included).
//! Writers are serialised by `START_LOCK`. The thread counters are statistics only and use
//! `Relaxed`. The exiting flag lives in the process layer, which justifies its ordering.

use std::fmt;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

use crate::process::{self, ForkHooks};
pub use crate::process::{is_exiting, mark_exiting};
use crate::thread_state;

/// How the shared runtime is built. `None` fields take tokio's (or gilkit's) defaults.
///
/// # Examples
///
/// ```
/// use gilkit::runtime::RuntimeConfig;
///
/// let config = RuntimeConfig {
///     worker_threads: Some(2),
///     thread_name: Some("my-ext-worker".into()),
///     ..RuntimeConfig::default()
/// };
/// assert_eq!(config.max_blocking_threads, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, pyo3::IntoPyObject)]
pub struct RuntimeConfig {
    /// Worker threads that run async tasks. Default: one per CPU.
    pub worker_threads: Option<usize>,
    /// Upper bound on threads of the blocking pool (`spawn_blocking`). Default: tokio's (512).
    pub max_blocking_threads: Option<usize>,
    /// Stack size of every runtime thread, in bytes. Default: tokio's (2 MiB).
    pub thread_stack_size: Option<usize>,
    /// Name of the runtime's threads, as shown by `top -H` or a debugger. Default: `gilkit-runtime`.
    pub thread_name: Option<String>,
}

const DEFAULT_THREAD_NAME: &str = "gilkit-runtime";

/// The error of [`configure`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigureError {
    /// The runtime is already running; its configuration can no longer change.
    AlreadyStarted {
        /// Worker threads of the running runtime.
        worker_threads: usize,
    },
    /// A field has a value the runtime cannot use.
    Invalid {
        /// The field's name.
        field: &'static str,
        /// Why the value is refused.
        reason: &'static str,
    },
}

impl ConfigureError {
    /// Whether the runtime had already started.
    #[must_use]
    pub fn is_already_started(&self) -> bool {
        matches!(self, Self::AlreadyStarted { .. })
    }
}

impl fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyStarted { worker_threads } => write!(
                f,
                "gilkit's runtime is already running (with {worker_threads} worker threads), so its \
                 configuration can no longer change; configure it before the first call that uses \
                 it, for example right after importing the extension"
            ),
            Self::Invalid { field, reason } => write!(f, "invalid runtime {field}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigureError {}

/// The error of [`try_handle`]: the runtime could not be started.
#[derive(Debug)]
pub struct StartError(std::io::Error);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gilkit could not start its tokio runtime: {}", self.0)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Facts about the shared runtime, measured when [`info`] is called. Converts into a Python `dict`
/// keyed by the field names (`uptime_s` in float seconds; [the convention](crate::stats#stats-in-python)).
#[derive(Debug, Clone, PartialEq, Eq, pyo3::IntoPyObject)]
pub struct RuntimeInfo {
    /// Whether the runtime is running in this process.
    pub started: bool,
    /// Worker threads alive now (0 if not started).
    pub worker_threads: usize,
    /// Blocking-pool threads alive now (idle ones included; 0 if not started).
    pub blocking_threads: usize,
    /// CPUs available to this process.
    pub cpu_count: usize,
    /// Time since the runtime started (zero if not started).
    #[pyo3(item("uptime_s"), into_py_with = crate::stats::seconds)]
    pub uptime: Duration,
    /// Tasks spawned on the runtime that have not finished.
    pub tasks_alive: usize,
    /// The configuration the runtime was (or will be) built from.
    pub config: RuntimeConfig,
}

/// A started runtime. Leaked on purpose (see the module doc), so `&'static` references stay valid.
struct Started {
    handle: Handle,
    /// Taken by [`shutdown`]; `None` afterwards.
    runtime: Mutex<Option<Runtime>>,
    config: RuntimeConfig,
    started_at: Instant,
    threads: Arc<AtomicUsize>,
    /// The fork generation it was started in: its threads exist only in that process.
    generation: u64,
}

static CURRENT: AtomicPtr<Started> = AtomicPtr::new(ptr::null_mut());
/// Serialises starting, configuring and shutting down; also held across `fork()`.
static START_LOCK: Mutex<Option<RuntimeConfig>> = Mutex::new(None);
static FORK_HOOKS: std::sync::Once = std::sync::Once::new();

/// Takes the start lock, first registering the hooks that hold it across `fork()`.
fn lock_start() -> parking_lot::MutexGuard<'static, Option<RuntimeConfig>> {
    FORK_HOOKS.call_once(|| {
        process::register_fork_hooks(ForkHooks {
            prepare: Some(before_fork),
            parent: Some(after_fork),
            child: Some(after_fork),
        });
    });
    START_LOCK.lock()
}

/// Sets how the shared runtime will be built. Call it before anything uses the runtime.
///
/// Does not touch the GIL.
///
/// # Errors
/// [`ConfigureError::AlreadyStarted`] once the runtime runs (reconfiguring it would silently do
/// nothing); [`ConfigureError::Invalid`] for a zero thread count or stack size.
///
/// # Examples
///
/// ```
/// use gilkit::runtime::{self, RuntimeConfig};
///
/// runtime::configure(RuntimeConfig { worker_threads: Some(2), ..Default::default() }).unwrap();
/// let _handle = runtime::handle(); // starts the runtime
/// let err = runtime::configure(RuntimeConfig::default()).unwrap_err();
/// assert!(err.is_already_started());
/// ```
pub fn configure(config: RuntimeConfig) -> Result<(), ConfigureError> {
    validate(&config)?;
    let mut pending = lock_start();
    if let Some(started) = current() {
        return Err(ConfigureError::AlreadyStarted {
            worker_threads: started.handle.metrics().num_workers(),
        });
    }
    *pending = Some(config);
    Ok(())
}

fn validate(config: &RuntimeConfig) -> Result<(), ConfigureError> {
    let zero = |field| ConfigureError::Invalid {
        field,
        reason: "must be at least 1",
    };
    if config.worker_threads == Some(0) {
        return Err(zero("worker_threads"));
    }
    if config.max_blocking_threads == Some(0) {
        return Err(zero("max_blocking_threads"));
    }
    if config.thread_stack_size == Some(0) {
        return Err(zero("thread_stack_size"));
    }
    Ok(())
}

/// Returns a handle to the shared runtime, starting it on first use.
///
/// Does not touch the GIL. Cheap: one atomic load and an `Arc` clone once started.
///
/// # Panics
/// If the runtime cannot be started (the OS refused to create its threads); use [`try_handle`] to
/// get that as an error instead.
#[must_use]
pub fn handle() -> Handle {
    match try_handle() {
        Ok(handle) => handle,
        Err(err) => panic!("{err}"),
    }
}

/// Like [`handle`], but returns an error when the runtime cannot be started.
///
/// # Errors
/// [`StartError`] when tokio cannot build the runtime (for example, no more threads).
pub fn try_handle() -> Result<Handle, StartError> {
    if let Some(started) = current() {
        return Ok(started.handle.clone());
    }
    start().map(|started| started.handle.clone())
}

#[inline]
fn current() -> Option<&'static Started> {
    let ptr = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null `CURRENT` points to a `Started` that was leaked with `Box::leak`, is never
    // freed, and is never mutated except through its own `Mutex`, so a shared `'static` reference is
    // valid.
    let started = unsafe { ptr.as_ref() }?;
    // In a forked child the parent's runtime threads do not exist: as if nothing had started.
    (started.generation == process::generation()).then_some(started)
}

#[cold]
fn start() -> Result<&'static Started, StartError> {
    let mut pending = lock_start();
    if let Some(started) = current() {
        return Ok(started);
    }
    let config = pending.clone().unwrap_or_default();
    let threads = Arc::new(AtomicUsize::new(0));
    let mut builder = Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_name(
            config
                .thread_name
                .clone()
                .unwrap_or_else(|| DEFAULT_THREAD_NAME.to_owned()),
        )
        .on_thread_start({
            let threads = Arc::clone(&threads);
            move || {
                threads.fetch_add(1, Ordering::Relaxed);
                thread_state::keep();
            }
        })
        .on_thread_stop({
            let threads = Arc::clone(&threads);
            move || {
                thread_state::release();
                threads.fetch_sub(1, Ordering::Relaxed);
            }
        });
    if let Some(n) = config.worker_threads {
        builder.worker_threads(n);
    }
    if let Some(n) = config.max_blocking_threads {
        builder.max_blocking_threads(n);
    }
    if let Some(n) = config.thread_stack_size {
        builder.thread_stack_size(n);
    }
    let runtime = builder.build().map_err(StartError)?;
    let started: &'static Started = Box::leak(Box::new(Started {
        handle: runtime.handle().clone(),
        runtime: Mutex::new(Some(runtime)),
        config,
        started_at: Instant::now(),
        threads,
        generation: process::generation(),
    }));
    CURRENT.store(ptr::from_ref(started).cast_mut(), Ordering::Release);
    *pending = None;
    Ok(started)
}

/// Reports measured facts about the shared runtime. Does not start it; does not touch the GIL.
#[must_use]
pub fn info() -> RuntimeInfo {
    let cpu_count = std::thread::available_parallelism().map_or(1, usize::from);
    match current() {
        Some(started) => {
            let metrics = started.handle.metrics();
            let workers = metrics.num_workers();
            let alive = started.threads.load(Ordering::Relaxed);
            RuntimeInfo {
                started: true,
                worker_threads: workers,
                blocking_threads: alive.saturating_sub(workers),
                cpu_count,
                uptime: started.started_at.elapsed(),
                tasks_alive: metrics.num_alive_tasks(),
                config: started.config.clone(),
            }
        }
        None => RuntimeInfo {
            started: false,
            worker_threads: 0,
            blocking_threads: 0,
            cpu_count,
            uptime: Duration::ZERO,
            tasks_alive: 0,
            config: lock_start().clone().unwrap_or_default(),
        },
    }
}

/// Stops the shared runtime, waiting at most `timeout` for its threads to finish.
///
/// Tasks are dropped at their next `.await`; blocking tasks still running after `timeout` are left to
/// finish on their own (their threads are detached). A later [`handle`] starts a fresh runtime.
/// Returns whether a runtime was running.
///
/// Call it with the GIL released (the Python exit hook does): tasks may want the GIL, and each
/// runtime thread that kept a Python thread state re-acquires the GIL as it ends, to clear that
/// state (unless the interpreter is exiting). With the GIL held, the call waits the whole
/// `timeout` and those threads end once the GIL is released.
pub fn shutdown(timeout: Duration) -> bool {
    let _start = lock_start();
    let Some(started) = current() else {
        return false;
    };
    CURRENT.store(ptr::null_mut(), Ordering::Release);
    let runtime = started.runtime.lock().take();
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(timeout);
    }
    true
}

fn before_fork() {
    // Hold the start lock across fork() so the child cannot inherit it locked by another thread.
    std::mem::forget(START_LOCK.lock());
}

/// In the parent and in the child: release the lock `before_fork` took. In the child, the
/// parent's runtime is ignored from now on because the fork generation changed (see [`current`]).
fn after_fork() {
    // SAFETY: `before_fork` locked START_LOCK on the thread that forked (in the child: the only
    // thread, this one) and forgot the guard; nothing else can have released it since.
    unsafe { START_LOCK.force_unlock() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_zero() {
        let err = validate(&RuntimeConfig {
            worker_threads: Some(0),
            ..RuntimeConfig::default()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigureError::Invalid {
                field: "worker_threads",
                ..
            }
        ));
        assert!(!err.is_already_started());
    }

    #[test]
    fn a_forked_child_starts_its_own_runtime() {
        let parent = handle();
        assert_eq!(parent.block_on(async { 1 }), 1);
        let code = crate::process::testing::in_forked_child(|| {
            // The parent's runtime threads do not exist here: a task spawned on it would never
            // run. Bounded by a plain channel timeout, so a regression fails instead of hanging.
            let (tx, rx) = std::sync::mpsc::channel();
            handle().spawn(async move { tx.send(3).unwrap() });
            let ran = rx.recv_timeout(Duration::from_secs(10)) == Ok(3);
            let fresh = info().uptime < Duration::from_secs(10);
            if ran && fresh && shutdown(Duration::from_secs(1)) {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
        assert_eq!(
            handle().block_on(async { 2 }),
            2,
            "the parent's runtime still works"
        );
    }
}
