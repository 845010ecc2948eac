//! The bridge between gilkit's runtime threads and one asyncio event loop.
//!
//! One [`Bridge`] per event loop (per thread that runs one, found through a thread-local cache).
//! Runtime threads never touch Python: they push a [`Message`] on the bridge's queue and, if the
//! loop has not been woken since its last drain, write one byte to a socket pair whose read end is
//! registered with the loop (`loop.add_reader`). The loop then calls [`Drain`] on its own thread,
//! where the GIL is held anyway: it empties the socket, takes every queued message at once, converts
//! results and resolves futures. So results cost no GIL acquisition on a runtime thread, and a burst
//! of completions costs one wake-up.
//!
//! The loop-side `table` maps a key to what the loop thread needs: a weak reference to the asyncio
//! future (so that a future the program dropped can be collected, which cancels its task), the
//! task's abort handle and the caller's `contextvars` context; or a Python task that a Rust future
//! awaits (cancelled on request from the runtime side).
//!
//! # Lifetime
//! The loop's reader registration holds the only strong reference to the [`Drain`] object. When the
//! loop closes (or is collected), the registration goes, the `Drain` is dropped and the bridge is
//! *retired*: every task still running for it is aborted, queued results are dropped, and later
//! results are dropped by their tasks. Nothing is raised anywhere.
//!
//! # Fork
//! A bridge records the fork generation it was made in. In a forked child, a bridge of the parent is
//! left alone: its tasks belong to the parent's runtime, whose threads do not exist here, so aborting
//! them could block on locks held by those threads; they are leaked instead, and reading its socket
//! could steal the parent's wake-ups.
//!
//! # Memory ordering
//! A producer pushes under the queue's mutex, then sets `signalled` with `AcqRel` and writes a byte
//! only if it was clear. The loop reads the socket, clears `signalled` with `Release`, then takes
//! the queue under the mutex. A push that the take misses comes after the take in the mutex's order,
//! so the clear happens-before the producer's swap, which therefore sees `false` (and writes a byte)
//! or another producer's `true` (whose byte is still to be read): no message is ever left without a
//! wake-up. `retired` is set with `Release` before the queue is emptied and read with `Acquire`; a
//! producer that misses it pushes into a queue that is dropped with the bridge.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyWeakrefReference;
use tokio::task::AbortHandle;

use crate::runtime;

/// Converts a finished future's output into the Python value, on the loop thread (GIL held).
pub(super) type Deliver = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// Delivers a Python task's outcome to the Rust future that awaits it, on the loop thread.
pub(super) type Resolve = Box<dyn FnOnce(Python<'_>, PyResult<Bound<'_, PyAny>>) + Send>;

/// What runtime threads send to the loop thread.
pub(super) enum Message {
    /// A Rust future finished: its output, or the message of its panic.
    Done {
        key: u64,
        outcome: Result<Deliver, String>,
    },
    /// A Rust future wants `awaitable` run as a task of the loop, in the context of awaitable `parent`.
    Start {
        key: u64,
        parent: Option<u64>,
        awaitable: Py<PyAny>,
        resolve: Resolve,
    },
    /// The Rust future awaiting task `key` was dropped: cancel the task.
    Cancel { key: u64 },
}

/// What the loop thread keeps about each key.
enum Entry {
    /// An asyncio future fed by a Rust task.
    Awaitable {
        future: FutureRef,
        abort: AbortHandle,
        context: Py<PyAny>,
    },
    /// A Python task a Rust future awaits (`None` until the loop has started it).
    Task(Option<Py<PyAny>>),
}

/// The asyncio future, weakly when its type allows (so the program can drop it).
enum FutureRef {
    Weak(Py<PyWeakrefReference>),
    Strong(Py<PyAny>),
}

impl FutureRef {
    fn new(future: &Bound<'_, PyAny>) -> Self {
        match PyWeakrefReference::new(future) {
            Ok(weak) => Self::Weak(weak.unbind()),
            Err(_) => Self::Strong(future.clone().unbind()),
        }
    }

    fn get<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        match self {
            Self::Weak(weak) => weak.bind(py).upgrade(),
            Self::Strong(future) => Some(future.bind(py).clone()),
        }
    }
}

#[derive(Default)]
struct Table {
    next_key: u64,
    entries: HashMap<u64, Entry>,
}

/// The shared state of one event loop's bridge (see the module doc).
pub(super) struct Bridge {
    queue: Mutex<Vec<Message>>,
    signalled: AtomicBool,
    retired: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    generation: u64,
    /// Touched with the GIL held only (on the loop thread, or where a callback object is dropped).
    table: Mutex<Table>,
}

impl Bridge {
    /// Whether this bridge belongs to this process (not to a parent before a fork).
    fn is_current(&self) -> bool {
        self.generation == crate::process::generation()
    }

    /// Whether the bridge can still take new work: its loop is alive and it is this process's.
    pub(super) fn is_usable(&self) -> bool {
        !self.retired.load(Ordering::Acquire) && self.is_current()
    }

    /// Sends `message` to the loop thread. Never touches Python; never blocks for long (one
    /// uncontended mutex, at most one non-blocking `write`).
    pub(super) fn send(&self, message: Message) {
        if !self.is_usable() {
            // The loop is gone (drop the message, and the result in it, here), or this is a
            // parent's bridge in a forked child (its socket would wake the parent's loop).
            return;
        }
        self.queue.lock().push(message);
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // `WouldBlock` means bytes are already waiting (a wake-up is pending); any other error
            // means the loop side is gone. Either way there is nothing more to do.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// A new key for the loop-side table.
    pub(super) fn next_key(&self) -> u64 {
        let mut table = self.table.lock();
        table.next_key += 1;
        table.next_key
    }

    /// Records a future fed by a Rust task. GIL held.
    pub(super) fn register_awaitable(
        &self,
        key: u64,
        future: &Bound<'_, PyAny>,
        abort: AbortHandle,
        context: Py<PyAny>,
    ) {
        let entry = Entry::Awaitable {
            future: FutureRef::new(future),
            abort,
            context,
        };
        self.table.lock().entries.insert(key, entry);
    }

    /// Records a Python task a Rust future is about to await (started later on the loop).
    pub(super) fn register_task(&self, key: u64) {
        self.table.lock().entries.insert(key, Entry::Task(None));
    }

    /// The future of `key` is done or gone: abort its Rust task (a no-op if it finished). GIL held.
    pub(super) fn forget(&self, key: u64) {
        let entry = self.table.lock().entries.remove(&key);
        match entry {
            Some(Entry::Awaitable { abort, .. }) if self.is_current() => abort.abort(),
            // A parent's task: its runtime is gone, so leave it alone (see the module doc).
            Some(entry) if !self.is_current() => std::mem::forget(entry),
            _ => {}
        }
    }

    /// The loop closed or was collected: abort what still runs for it and drop what is queued.
    /// GIL held (called from `Drain`'s destructor).
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let entries = std::mem::take(&mut self.table.lock().entries);
        let queued = std::mem::take(&mut *self.queue.lock());
        if !self.is_current() {
            std::mem::forget((entries, queued));
            return;
        }
        for entry in entries.values() {
            if let Entry::Awaitable { abort, .. } = entry {
                abort.abort();
            }
        }
        Python::attach(|py| {
            for message in queued {
                if let Message::Start { awaitable, .. } = message {
                    // Never started: close a coroutine so Python does not warn it was never awaited.
                    let _ = awaitable.call_method0(py, "close");
                }
            }
        });
    }

    /// Runs on the loop thread when the socket is readable: delivers everything queued.
    fn drain(self: &Arc<Self>, py: Python<'_>) {
        if !self.is_current() {
            return; // the parent's bridge: its socket and queue are the parent's (module doc)
        }
        let mut sink = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        self.signalled.store(false, Ordering::Release);
        let messages = std::mem::take(&mut *self.queue.lock());
        for message in messages {
            match message {
                Message::Done { key, outcome } => self.deliver(py, key, outcome),
                Message::Start {
                    key,
                    parent,
                    awaitable,
                    resolve,
                } => self.start(py, key, parent, awaitable, resolve),
                Message::Cancel { key } => {
                    let entry = self.table.lock().entries.remove(&key);
                    if let Some(Entry::Task(Some(task))) = entry {
                        let _ = task.call_method0(py, "cancel");
                    }
                }
            }
        }
    }

    fn deliver(&self, py: Python<'_>, key: u64, outcome: Result<Deliver, String>) {
        let entry = self.table.lock().entries.remove(&key);
        let Some(Entry::Awaitable { future, .. }) = entry else {
            return; // cancelled or collected meanwhile: the result is dropped here
        };
        let Some(future) = future.get(py) else {
            return;
        };
        if future
            .call_method0("done")
            .and_then(|d| d.is_truthy())
            .unwrap_or(true)
        {
            return;
        }
        let value = match outcome {
            Ok(deliver) => super::panic::catch(|| deliver(py)).unwrap_or_else(|message| {
                Err(PanicException::new_err(format!(
                    "converting the result of a Rust future panicked: {message}"
                )))
            }),
            Err(message) => Err(PanicException::new_err(format!(
                "a Rust future panicked: {message}"
            ))),
        };
        let set = match value {
            Ok(value) => future.call_method1("set_result", (value,)),
            Err(err) => future.call_method1("set_exception", (err.into_value(py),)),
        };
        if let Err(err) = set {
            err.write_unraisable(py, Some(&future));
        }
    }

    pub(super) fn start(
        self: &Arc<Self>,
        py: Python<'_>,
        key: u64,
        parent: Option<u64>,
        awaitable: Py<PyAny>,
        resolve: Resolve,
    ) {
        let context = {
            let table = self.table.lock();
            if !table.entries.contains_key(&key) {
                return; // the Rust future was dropped before the loop got to it
            }
            match parent.and_then(|p| table.entries.get(&p)) {
                Some(Entry::Awaitable { context, .. }) => Some(context.clone_ref(py)),
                _ => None,
            }
        };
        let started = start_task(py, awaitable.bind(py), context.as_ref());
        match started {
            Ok(task) => {
                let callback = ResolveOnDone {
                    resolve: Mutex::new(Some(resolve)),
                    bridge: Arc::clone(self),
                    key,
                };
                if let Err(err) = task.call_method1("add_done_callback", (callback,)) {
                    err.write_unraisable(py, Some(&task));
                }
                if let Some(Entry::Task(slot)) = self.table.lock().entries.get_mut(&key) {
                    *slot = Some(task.unbind());
                }
            }
            Err(err) => {
                self.table.lock().entries.remove(&key);
                resolve(py, Err(err));
            }
        }
    }
}

/// `asyncio.ensure_future(awaitable)` on the running loop, inside `context` if given.
pub(super) fn start_task<'py>(
    py: Python<'py>,
    awaitable: &Bound<'py, PyAny>,
    context: Option<&Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    static ENSURE_FUTURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let ensure_future = ENSURE_FUTURE.import(py, "asyncio", "ensure_future")?;
    match context {
        Some(context) => context
            .bind(py)
            .call_method1("run", (ensure_future, awaitable)),
        None => ensure_future.call1((awaitable,)),
    }
}

/// The done callback of a Python task a Rust future awaits: hands its outcome over once and
/// forgets the task.
#[pyclass(frozen)]
struct ResolveOnDone {
    resolve: Mutex<Option<Resolve>>,
    bridge: Arc<Bridge>,
    key: u64,
}

#[pymethods]
impl ResolveOnDone {
    fn __call__(&self, task: &Bound<'_, PyAny>) {
        let entry = self.bridge.table.lock().entries.remove(&self.key);
        drop(entry);
        let Some(resolve) = self.resolve.lock().take() else {
            return;
        };
        let py = task.py();
        let outcome = (|| {
            if task.call_method0("cancelled")?.is_truthy()? {
                return Err(pyo3::exceptions::asyncio::CancelledError::new_err(
                    "the Python awaitable was cancelled",
                ));
            }
            task.call_method0("result")
        })();
        resolve(py, outcome);
    }
}

/// The loop's reader callback; its destructor retires the bridge (see the module doc).
#[pyclass(frozen)]
struct Drain(Arc<Bridge>);

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        self.0.drain(py);
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        // Dropped by Python (the loop's registration went away), so the thread is attached.
        Python::attach(|_py| self.0.retire());
    }
}

/// The done callback of an asyncio future fed by a Rust task. Called when the future is done
/// (resolved or cancelled), or dropped with it when the program lets the future go: either way
/// the Rust task is aborted (a no-op once it finished) and its table entry removed.
#[pyclass(frozen)]
pub(super) struct AbortOnDone {
    bridge: Arc<Bridge>,
    key: u64,
}

impl AbortOnDone {
    pub(super) fn new(bridge: Arc<Bridge>, key: u64) -> Self {
        Self { bridge, key }
    }
}

#[pymethods]
impl AbortOnDone {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.bridge.forget(self.key);
    }
}

impl Drop for AbortOnDone {
    fn drop(&mut self) {
        Python::attach(|_py| self.bridge.forget(self.key));
    }
}

/// One cache entry: a loop of this thread and its bridge.
struct Cached {
    event_loop: FutureRef,
    bridge: Arc<Bridge>,
}

thread_local! {
    /// The bridges of the loops this thread ran. Usually one entry; retired ones are pruned.
    static BRIDGES: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

/// The running event loop of this thread and its bridge (made and registered on first use).
///
/// # Errors
/// `RuntimeError` when no event loop runs in this thread; `NotImplementedError`-based
/// `RuntimeError` when the loop cannot watch a file descriptor (`add_reader`).
pub(super) fn running<'py>(py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Arc<Bridge>)> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
        .map_err(|_| {
            PyRuntimeError::new_err(
                "no running asyncio event loop in this thread: call this from a coroutine (e.g. \
                 inside `asyncio.run(...)`), and await the result there",
            )
        })?;
    let found = BRIDGES.with_borrow_mut(|cached| {
        cached.retain(|c| {
            let keep = c.bridge.is_usable();
            if !c.bridge.is_current() {
                // A parent's bridge in a forked child: leak it untouched (module doc).
                std::mem::forget(Arc::clone(&c.bridge));
            }
            keep
        });
        cached
            .iter()
            .find(|c| c.event_loop.get(py).is_some_and(|l| l.is(&event_loop)))
            .map(|c| Arc::clone(&c.bridge))
    });
    if let Some(bridge) = found {
        return Ok((event_loop, bridge));
    }
    let bridge = register(&event_loop)?;
    BRIDGES.with_borrow_mut(|cached| {
        cached.push(Cached {
            event_loop: FutureRef::new(&event_loop),
            bridge: Arc::clone(&bridge),
        });
    });
    Ok((event_loop, bridge))
}

/// Makes a bridge for `event_loop` and registers its socket with it. GIL held, on the loop thread.
fn register(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Bridge>> {
    let py = event_loop.py();
    // Starting the runtime first installs the fork handlers, which keep the generation.
    runtime::try_handle().map_err(|err| PyRuntimeError::new_err(err.to_string()))?;
    let socket_error = |err: std::io::Error| {
        PyRuntimeError::new_err(format!(
            "gilkit could not create the socket pair that wakes the event loop: {err}"
        ))
    };
    let (wake_rx, wake_tx) = UnixStream::pair().map_err(socket_error)?;
    wake_rx.set_nonblocking(true).map_err(socket_error)?;
    wake_tx.set_nonblocking(true).map_err(socket_error)?;
    let fd = wake_rx.as_raw_fd();
    let bridge = Arc::new(Bridge {
        queue: Mutex::new(Vec::new()),
        signalled: AtomicBool::new(false),
        retired: AtomicBool::new(false),
        wake_tx,
        wake_rx,
        generation: crate::process::generation(),
        table: Mutex::new(Table::default()),
    });
    let drain = Bound::new(py, Drain(Arc::clone(&bridge)))?;
    event_loop
        .call_method1("add_reader", (fd, drain))
        .map_err(|err| {
            if err.is_instance_of::<PyNotImplementedError>(py) {
                PyRuntimeError::new_err(
                    "this event loop cannot watch file descriptors (`add_reader`), which \
                     gilkit::asyncio needs to receive results; use the default selector loop or \
                     uvloop",
                )
            } else {
                err
            }
        })?;
    Ok(bridge)
}
