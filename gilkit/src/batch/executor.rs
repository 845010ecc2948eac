//! A `concurrent.futures.Executor` for Python whose Rust work runs without the GIL: [`Executor`]
//! and [`NativeFn`].
//!
//! # How it works
//! [`NativeFn`] wraps a Rust function in three phases: its arguments are extracted when it is
//! submitted (GIL held, on the submitting thread), its work runs on a pool thread with the GIL
//! released, and its result is converted and set on the `concurrent.futures.Future` with the GIL
//! re-acquired. Any other callable is run like `ThreadPoolExecutor` runs it, with the GIL held.
//!
//! The executor starts workers lazily, up to `max_workers`, as submissions find no idle worker.
//! A worker is a long-running job on gilkit's thread pool (the `pool` module), holding its thread
//! until the executor shuts down. Idle workers block in a `crossbeam_channel` receive (parked, no
//! spinning). A thread facing a long
//! queue takes its share of it at once, so one GIL acquisition starts many futures and one more
//! settles them. `submit` returns a real
//! `concurrent.futures.Future`, so `as_completed`, `wait`, `asyncio.wrap_future`,
//! `loop.run_in_executor` and tqdm work unchanged; `map` is the standard library's own
//! `Executor.map` running over this `submit`.
//!
//! Workers re-attach with [`try_attach`](crate::try_attach): while the interpreter exits, the
//! tasks they still hold are dropped instead of run.
//!
//! # Fork
//! A child made by `fork()` has none of the parent's workers. The executor records the fork
//! generation its workers were started in (see the `process` module); a submission that finds
//! another generation forgets them and starts workers of its own for the queued tasks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, ThreadId};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use pyo3::BoundObject as _;
use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::panic::panic_message;

/// The detached part of one [`NativeFn`] call: runs without the GIL and returns the part that
/// converts its result with the GIL held.
type Job = Box<dyn FnOnce() -> Finish + Send>;
/// The attached tail of a call: the result as a Python object (or the error).
type Finish = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;
type Prepare = dyn Fn(&Bound<'_, PyTuple>) -> PyResult<Job> + Send + Sync;

/// A Rust function for Python whose work runs with the GIL released, when called directly and when
/// submitted to an [`Executor`].
///
/// Built from a Rust closure over an argument tuple type `A` (extracted from the positional
/// arguments) returning `Result<R, E>`; Python calls it like any function. Add instances to a
/// module as attributes.
///
/// GIL: held while the arguments are extracted and the result converted; released while `work`
/// runs.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
/// use gilkit::batch::NativeFn;
///
/// Python::attach(|py| -> PyResult<()> {
///     let count_primes = NativeFn::new("count_primes", |(n,): (u64,)| {
///         Ok::<_, PyErr>((2..n).filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0)).count())
///     });
///     let f = Bound::new(py, count_primes)?;
///     assert_eq!(f.call1((100,))?.extract::<usize>()?, 25);
///     Ok(())
/// })
/// .unwrap();
/// ```
#[pyclass(module = "gilkit", name = "NativeFn", frozen)]
pub struct NativeFn {
    name: String,
    prepare: Box<Prepare>,
}

impl NativeFn {
    /// Wraps `work`, named `name` in Python's `repr` and error messages.
    pub fn new<A, R, E, W>(name: &str, work: W) -> Self
    where
        A: for<'py> FromPyObjectOwned<'py> + Send + 'static,
        R: for<'py> IntoPyObject<'py> + Send + 'static,
        E: Into<PyErr> + Send + 'static,
        W: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        let label = name.to_owned();
        let prepare = move |args: &Bound<'_, PyTuple>| -> PyResult<Job> {
            let args: A = args.extract().map_err(Into::into).map_err(|e: PyErr| {
                PyTypeError::new_err(format!("{label}(): bad arguments: {e}"))
            })?;
            let work = Arc::clone(&work);
            Ok(Box::new(move || {
                let result = work(args);
                Box::new(move |py: Python<'_>| match result {
                    Ok(value) => value
                        .into_pyobject(py)
                        .map(|v| v.into_any().unbind())
                        .map_err(Into::into),
                    Err(error) => Err(error.into()),
                }) as Finish
            }) as Job)
        };
        Self {
            name: name.to_owned(),
            prepare: Box::new(prepare),
        }
    }
}

#[pymethods]
impl NativeFn {
    /// Call the function: the work runs with the GIL released.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let job = self.prepare_call(args, kwargs)?;
        let finish = py.detach(job);
        finish(py)
    }

    fn __repr__(&self) -> String {
        format!("<gilkit.NativeFn {}>", self.name)
    }

    /// The function's name.
    #[getter]
    fn __name__(&self) -> &str {
        &self.name
    }
}

impl NativeFn {
    fn prepare_call(
        &self,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Job> {
        if kwargs.is_some_and(|k| !k.is_empty()) {
            return Err(PyTypeError::new_err(format!(
                "{}() takes positional arguments only",
                self.name
            )));
        }
        (self.prepare)(args)
    }
}

/// One submission: its future and what to run.
struct Task {
    future: Py<PyAny>,
    work: Work,
}

enum Work {
    Native(Job),
    Python {
        function: Py<PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    },
}

/// A `concurrent.futures.Executor` for Python that runs [`NativeFn`] work with the GIL released on a
/// pool of threads (and other callables with the GIL held, like `ThreadPoolExecutor`).
///
/// From Python: `Executor(max_workers=None)`; `submit(fn, /, *args, **kwargs)` returns a
/// `concurrent.futures.Future`; `map(fn, *iterables, timeout=None, chunksize=1)`;
/// `shutdown(wait=True, *, cancel_futures=False)`; a context manager that shuts down (waiting) on
/// exit. Add it to a module with [`add_executor_classes`].
///
/// GIL: `submit` holds it (it extracts the arguments); pool threads release it for native work and
/// re-acquire it to set results; `shutdown(wait=True)` releases it while joining.
#[pyclass(module = "gilkit", name = "Executor", frozen)]
pub struct Executor {
    queue: Mutex<Option<Sender<Task>>>,
    tasks: Receiver<Task>,
    workers: Arc<Workers>,
    /// Idle-thread tokens, as `ThreadPoolExecutor`'s idle semaphore: a thread adds one per task it
    /// finishes, a submission takes one instead of starting a thread. A plain "threads waiting"
    /// count would let two quick submissions both count on the same idle thread.
    idle: Arc<AtomicUsize>,
    max_workers: usize,
}

#[pymethods]
impl Executor {
    /// Create an executor of at most `max_workers` threads (default: one per CPU).
    #[new]
    #[pyo3(signature = (max_workers=None))]
    fn py_new(py: Python<'_>, max_workers: Option<usize>) -> PyResult<Self> {
        // Pool threads re-attach through `try_attach`, which the exit hook makes safe at exit.
        crate::python::ensure_exit_hook(py);
        let max_workers = match max_workers {
            Some(0) => return Err(PyValueError::new_err("max_workers must be greater than 0")),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, usize::from),
        };
        let (sender, receiver) = crossbeam_channel::unbounded();
        Ok(Self {
            queue: Mutex::new(Some(sender)),
            tasks: receiver,
            workers: Arc::new(Workers {
                state: Mutex::new(WorkerState {
                    generation: crate::process::generation(),
                    started: 0,
                    running: Vec::new(),
                }),
                ended: Condvar::new(),
            }),
            idle: Arc::new(AtomicUsize::new(0)),
            max_workers,
        })
    }

    /// Schedule `fn(*args, **kwargs)`; return a `concurrent.futures.Future` for its result.
    #[pyo3(signature = (r#fn, /, *args, **kwargs))]
    fn submit(
        &self,
        py: Python<'_>,
        r#fn: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        if self.queue.lock().is_none() {
            return Err(after_shutdown());
        }
        let future = future_class(py)?.call0()?;
        let work = match r#fn.cast::<NativeFn>() {
            Ok(native) => match native.get().prepare_call(args, kwargs) {
                Ok(job) => Work::Native(job),
                Err(error) => {
                    // As ThreadPoolExecutor: a call that fails is a future that fails.
                    future.call_method1("set_exception", (error.into_value(py),))?;
                    return Ok(future.unbind());
                }
            },
            Err(_) => Work::Python {
                function: r#fn.clone().unbind(),
                args: args.clone().unbind(),
                kwargs: kwargs.map(|k| k.clone().unbind()),
            },
        };
        let queue = self.queue.lock();
        // Checked again: another thread may have shut the executor down meanwhile.
        let Some(sender) = queue.as_ref() else {
            return Err(after_shutdown());
        };
        self.adjust_threads()?;
        let task = Task {
            future: future.clone().unbind(),
            work,
        };
        sender.send(task).map_err(|_| after_shutdown())?;
        Ok(future.unbind())
    }

    /// Return an iterator of `fn(*args)` over the iterables, in order (the standard library's
    /// `Executor.map` over this executor's `submit`).
    #[pyo3(signature = (r#fn, *iterables, timeout=None, chunksize=1))]
    fn map<'py>(
        slf: &Bound<'py, Self>,
        r#fn: &Bound<'py, PyAny>,
        iterables: &Bound<'py, PyTuple>,
        timeout: Option<f64>,
        chunksize: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let map = executor_base(py)?.getattr("map")?;
        let mut args = vec![slf.clone().into_any(), r#fn.clone()];
        args.extend(iterables.iter());
        let kwargs = PyDict::new(py);
        kwargs.set_item("timeout", timeout)?;
        kwargs.set_item("chunksize", chunksize)?;
        map.call(PyTuple::new(py, args)?, Some(&kwargs))
    }

    /// Stop accepting work; with `cancel_futures`, cancel what has not started; with `wait`, wait
    /// for the running work to finish (GIL released while waiting).
    #[pyo3(signature = (wait=true, *, cancel_futures=false))]
    fn shutdown(&self, py: Python<'_>, wait: bool, cancel_futures: bool) -> PyResult<()> {
        // Dropping the sender lets the threads exit once the queue is empty.
        drop(self.queue.lock().take());
        if cancel_futures {
            while let Ok(task) = self.tasks.try_recv() {
                task.future.call_method0(py, "cancel")?;
            }
        }
        if wait {
            py.detach(|| self.workers.wait_for_all());
        }
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.shutdown(py, true, false)?;
        Ok(false)
    }

    /// The most threads this executor runs.
    #[getter]
    fn max_workers(&self) -> usize {
        self.max_workers
    }

    fn __repr__(&self) -> String {
        format!(
            "<gilkit.Executor max_workers={} threads={}>",
            self.max_workers,
            self.workers.state.lock().started
        )
    }
}

/// The executor's workers: how many were started, which threads run them now, and the fork
/// generation they were started in.
struct Workers {
    state: Mutex<WorkerState>,
    /// Notified whenever a worker ends.
    ended: Condvar,
}

struct WorkerState {
    generation: u64,
    /// Workers handed to the pool and not yet ended (some may not have started running).
    started: usize,
    /// The threads running a worker now.
    running: Vec<ThreadId>,
}

impl Workers {
    /// Waits until every worker has ended, except the calling thread's own (a task that shuts its
    /// own executor down cannot wait for itself).
    fn wait_for_all(&self) {
        let me = thread::current().id();
        let mut state = self.state.lock();
        if state.generation != crate::process::generation() {
            return; // a forked child: the workers started in the parent do not exist here
        }
        loop {
            let mine = usize::from(state.running.contains(&me));
            if state.started <= mine {
                return;
            }
            self.ended.wait(&mut state);
        }
    }
}

/// A worker's registration, undone when it ends (by returning or unwinding).
struct Running<'a> {
    workers: &'a Workers,
    me: ThreadId,
}

impl<'a> Running<'a> {
    fn enter(workers: &'a Workers) -> Self {
        let me = thread::current().id();
        workers.state.lock().running.push(me);
        Self { workers, me }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut state = self.workers.state.lock();
        state.running.retain(|id| *id != self.me);
        state.started -= 1;
        drop(state);
        self.workers.ended.notify_all();
    }
}

impl Executor {
    /// Starts a worker for a new task unless an idle worker's token can be taken or the executor
    /// is at `max_workers`.
    fn adjust_threads(&self) -> PyResult<()> {
        let mut state = self.workers.state.lock();
        let generation = crate::process::generation();
        if state.generation != generation {
            // A forked child: the parent's workers (and their idle tokens) do not exist here.
            *state = WorkerState {
                generation,
                started: 0,
                running: Vec::new(),
            };
            self.idle.store(0, Ordering::Relaxed);
        }
        // Relaxed: the tokens are a hint for starting workers; tasks travel through the channel.
        let took_idle = self
            .idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if took_idle || state.started >= self.max_workers {
            return Ok(());
        }
        let tasks = self.tasks.clone();
        let idle = Arc::clone(&self.idle);
        let workers = Arc::clone(&self.workers);
        let max_workers = self.max_workers;
        let name = format!("gilkit-executor-{}", state.started);
        crate::pool::spawn(&name, move || {
            let _running = Running::enter(&workers);
            worker(&tasks, &idle, max_workers);
        })
        .map_err(|e| {
            PyRuntimeError::new_err(format!("gilkit.Executor could not start a thread: {e}"))
        })?;
        state.started += 1;
        Ok(())
    }
}

/// The most tasks a worker takes from the queue at once.
const MAX_TAKE: usize = 64;

/// One worker: take tasks (parked while there are none), run them, repeat until shutdown.
///
/// A worker takes its fair share of a long queue at once (up to [`MAX_TAKE`]), so that one GIL
/// acquisition starts all of them and one more settles their futures: tiny tasks would otherwise
/// spend their time queueing for the GIL, twice each. With a short queue it takes one task at a
/// time, so long tasks spread over all threads.
fn worker(tasks: &Receiver<Task>, idle: &AtomicUsize, max_workers: usize) {
    let mut taken = Vec::with_capacity(MAX_TAKE);
    loop {
        let Ok(first) = tasks.recv() else {
            return; // the executor shut down and the queue is empty
        };
        taken.push(first);
        let share = (tasks.len() / max_workers).min(MAX_TAKE - 1);
        taken.extend(tasks.try_iter().take(share));
        let count = taken.len();
        run_tasks(&mut taken);
        // One token per finished task, as ThreadPoolExecutor's idle semaphore.
        idle.fetch_add(count, Ordering::Relaxed);
    }
}

/// Runs `tasks` (emptying it): starts every future and runs the Python callables with the GIL
/// held, runs the native jobs with it released, then settles their futures with it held again.
fn run_tasks(tasks: &mut Vec<Task>) {
    let mut jobs = Vec::with_capacity(tasks.len());
    let attached = crate::try_attach(|py| {
        for Task { future, work } in tasks.drain(..) {
            if !set_running(py, &future) {
                continue; // cancelled before it started
            }
            match work {
                Work::Native(job) => jobs.push((future, job)),
                Work::Python {
                    function,
                    args,
                    kwargs,
                } => {
                    let result = function
                        .bind(py)
                        .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))
                        .map(Bound::unbind);
                    settle(py, &future, result);
                }
            }
        }
    });
    if attached.is_none() {
        tasks.clear(); // the interpreter is exiting: drop the work
        return;
    }
    let finished: Vec<_> = jobs
        .into_iter()
        .map(|(future, job)| (future, catch_unwind(AssertUnwindSafe(job))))
        .collect();
    if finished.is_empty() {
        return;
    }
    crate::try_attach(|py| {
        for (future, finish) in finished {
            let result = match finish {
                Ok(finish) => finish(py),
                Err(payload) => Err(PanicException::new_err(panic_message(&*payload))),
            };
            settle(py, &future, result);
        }
    });
}

/// `future.set_running_or_notify_cancel()`: `false` when the future was cancelled before it ran.
fn set_running(py: Python<'_>, future: &Py<PyAny>) -> bool {
    future
        .call_method0(py, "set_running_or_notify_cancel")
        .and_then(|r| r.extract::<bool>(py))
        .unwrap_or(false)
}

fn settle(py: Python<'_>, future: &Py<PyAny>, result: PyResult<Py<PyAny>>) {
    let set = match result {
        Ok(value) => future.call_method1(py, "set_result", (value,)),
        Err(error) => future.call_method1(py, "set_exception", (error.into_value(py),)),
    };
    if let Err(error) = set {
        // Only a broken future object fails here; say so rather than lose it silently.
        error.write_unraisable(py, Some(future.bind(py)));
    }
}

fn after_shutdown() -> PyErr {
    PyRuntimeError::new_err("cannot schedule new futures after shutdown")
}

fn future_class(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS.import(py, "concurrent.futures", "Future")
}

fn executor_base(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static CLASS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    CLASS.import(py, "concurrent.futures", "Executor")
}

/// Adds the classes `Executor` and `NativeFn` to module `m`.
///
/// GIL: holds it (module initialisation).
///
/// # Errors
/// If the classes cannot be added.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
///
/// #[pymodule]
/// fn my_extension(m: &Bound<'_, PyModule>) -> PyResult<()> {
///     gilkit::batch::add_executor_classes(m)
/// }
/// # fn main() {}
/// ```
pub fn add_executor_classes(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Executor>()?;
    m.add_class::<NativeFn>()?;
    Ok(())
}
