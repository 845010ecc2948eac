//! [`GilBatcher`]: many concurrent requests, one GIL acquisition per batch.
//!
//! The batcher's sibling, [`GilSemaphore`](crate::GilSemaphore), bounds who waits for the GIL
//! instead; the guide chapter on both says when to use which. The batcher's error and statistics
//! types are defined beside the semaphore's (they share the latency histogram) and exported here.
//!
//! # How it works
//!
//! Each batcher runs one worker (a long-running job on gilkit's thread pool) and owns a channel of requests (bounded when a queue bound is
//! set). [`GilBatcher::submit`] puts the request and a one-shot reply slot on the channel and waits
//! for the reply. The worker, detached, blocks for the first request, then keeps taking requests
//! until it has `max_batch` of them or `max_wait` has passed since the first one was submitted. It
//! drops requests whose caller has gone away, attaches once, calls the batch function with the
//! whole batch, detaches, and sends result `i` to request `i`. If the function raises, every
//! request of the batch gets the exception (the same Python object), and nothing else is affected;
//! a panic is caught the same way, and the worker carries on.
//!
//! The worker holds no lock while attached, and the batch function is only ever called by that one
//! thread, so it may be `FnMut` and needs no `Sync`.
//!
//! # Memory ordering
//!
//! Statistics are `Relaxed` counters (see the `stats` module); requests and replies are handed over
//! through the channels, which synchronize.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::panic::panic_message;
pub use crate::semaphore::error::{BatchError, InvalidConfig};
pub use crate::semaphore::stats::BatcherStats;
use crate::stats::{DurationHistogram, nanos};

/// How a [`GilBatcher`] groups requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// The most requests in one call of the batch function. Must be at least 1.
    pub max_batch: usize,
    /// The longest a request waits for its batch to fill, counted from its submission. A batch
    /// starts as soon as it is full or its first request has waited this long; `Duration::ZERO`
    /// (the default) starts it with whatever is queued.
    pub max_wait: Duration,
    /// The most requests that may be queued (submitted, not yet taken into a batch); past it,
    /// `submit` fails at once with [`BatchError::Busy`]. `None` queues without bound.
    pub max_queue: Option<usize>,
}

impl Default for BatcherConfig {
    /// 64 requests, no wait (`max_wait` 0: take what is queued), no queue bound.
    ///
    /// Why no wait: the worker calls the model one batch at a time, so under load requests queue
    /// while a batch runs and the next batch fills by itself; a wait only delays lone requests
    /// (`benches/results/semaphore.md` in the gilkit source repository: at 1 and 10 concurrent tasks a 1 ms wait halved throughput,
    /// at 100 it changed nothing).
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::ZERO,
            max_queue: None,
        }
    }
}

/// Micro-batches calls into Python: concurrent [`submit`](GilBatcher::submit)s are grouped and the
/// batch function is called once per group, with the GIL acquired once.
///
/// Worth it when the model's cost is mostly per call rather than per item (batched ML models,
/// vectorized numpy): 100 concurrent requests then cost about one call, not 100. `GilBatcher` is a
/// handle: clones share the worker thread, which stops (dropping the batch function) once the last
/// handle is dropped; a pending `submit` borrows a handle, so no request is ever left unanswered.
///
/// # Examples
///
/// Squares computed by a Python function that takes a list:
///
/// ```
/// use gilkit::GilBatcher;
/// use gilkit::batcher::BatcherConfig;
/// use pyo3::prelude::*;
/// use std::time::Duration;
///
/// # Python::initialize();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let square = Python::attach(|py| -> PyResult<Py<PyAny>> {
///     Ok(py.eval(c"lambda xs: [x * x for x in xs]", None, None)?.unbind())
/// })?;
/// let config = BatcherConfig {
///     max_batch: 16,
///     max_wait: Duration::from_millis(1),
///     max_queue: Some(1024),
/// };
/// let batcher = GilBatcher::new(config, move |py, xs: Vec<i64>| {
///     square.call1(py, (xs,))?.extract(py)
/// });
///
/// let answers = futures_join(&batcher, 1..=10).await;
/// assert_eq!(answers, (1..=10).map(|x| x * x).collect::<Vec<i64>>());
/// assert!(batcher.stats().batches <= 10);
/// # Ok::<(), PyErr>(())
/// # }).unwrap();
///
/// async fn futures_join(b: &GilBatcher<i64, i64>, xs: impl Iterator<Item = i64>) -> Vec<i64> {
///     let tasks: Vec<_> = xs
///         .map(|x| {
///             let b = b.clone();
///             tokio::spawn(async move { b.submit(x).await })
///         })
///         .collect();
///     let mut out = Vec::new();
///     for t in tasks { out.push(t.await.unwrap().unwrap()); }
///     out
/// }
/// ```
pub struct GilBatcher<Req, Resp> {
    queue: Sender<Job<Req, Resp>>,
    shared: Arc<BatchShared>,
}

impl<Req, Resp> Clone for GilBatcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Job<Req, Resp> {
    request: Req,
    reply: oneshot::Sender<Result<Resp, BatchError>>,
    submitted: Instant,
}

struct BatchShared {
    config: BatcherConfig,
    /// The fork generation that started the worker: a child made by `fork()` has no worker thread.
    generation: u64,
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    rejected_busy: AtomicU64,
    cancelled: AtomicU64,
    batches: AtomicU64,
    /// `batch_sizes[n - 1]`: batches of `n` requests.
    batch_sizes: Box<[AtomicU64]>,
    queue_wait: DurationHistogram,
    python_ns: AtomicU64,
}

impl<Req, Resp> GilBatcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts a batcher whose worker thread calls `batch_fn` attached, once per batch, with the
    /// requests in submission order. `batch_fn` must return exactly one result per request, in the
    /// same order ([`BatchError::LengthMismatch`] otherwise).
    ///
    /// Needs no tokio runtime: the worker runs on a thread of gilkit's pool (named `gilkit-batcher`
    /// while it does),
    /// detached except while `batch_fn` runs, and gives the thread back once every handle is
    /// dropped.
    ///
    /// # Panics
    ///
    /// Where [`try_new`](Self::try_new) returns an error (use that for values that come from
    /// users), or if the worker thread cannot be spawned.
    pub fn new<F>(config: BatcherConfig, batch_fn: F) -> Self
    where
        F: for<'py> FnMut(Python<'py>, Vec<Req>) -> PyResult<Vec<Resp>> + Send + 'static,
    {
        Self::try_new(config, batch_fn).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`new`](Self::new), or says why `config` cannot work.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`] if `config.max_batch` is 0 or `config.max_queue` is `Some(0)` (nothing
    /// could ever be queued).
    ///
    /// # Panics
    ///
    /// If the worker thread cannot be spawned.
    pub fn try_new<F>(config: BatcherConfig, batch_fn: F) -> Result<Self, InvalidConfig>
    where
        F: for<'py> FnMut(Python<'py>, Vec<Req>) -> PyResult<Vec<Resp>> + Send + 'static,
    {
        if config.max_batch == 0 {
            return Err(InvalidConfig::new(
                "BatcherConfig::max_batch must be at least 1, got 0",
            ));
        }
        if config.max_queue == Some(0) {
            return Err(InvalidConfig::new(
                "BatcherConfig::max_queue must be at least 1 (or None for no bound), got 0",
            ));
        }
        let (queue, requests) = match config.max_queue {
            Some(n) => crossbeam_channel::bounded(n),
            None => crossbeam_channel::unbounded(),
        };
        let shared = Arc::new(BatchShared {
            batch_sizes: (0..config.max_batch).map(|_| AtomicU64::new(0)).collect(),
            config,
            generation: crate::process::generation(),
            submitted: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected_busy: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            queue_wait: DurationHistogram::new(),
            python_ns: AtomicU64::new(0),
        });
        let worker = Worker {
            shared: Arc::clone(&shared),
            requests,
            batch_fn,
        };
        crate::pool::spawn("gilkit-batcher", move || worker.run())
            .expect("failed to start the GilBatcher's worker thread");
        Ok(Self { queue, shared })
    }
}

impl<Req, Resp> GilBatcher<Req, Resp> {
    /// Queues `request` and waits for its result.
    ///
    /// Does not touch the interpreter on the calling task; the worker thread attaches once per
    /// batch. Works on any async executor.
    ///
    /// # Errors
    ///
    /// - [`BatchError::Busy`] at once if the queue bound is reached (the request is dropped, not
    ///   queued);
    /// - [`BatchError::Python`] if the batch function raised for this request's batch (every
    ///   request of the batch gets the exception);
    /// - [`BatchError::Panicked`], [`BatchError::LengthMismatch`],
    ///   [`BatchError::InterpreterUnavailable`] for a batch that could not produce results;
    /// - [`BatchError::Closed`] if the worker has stopped;
    /// - [`BatchError::Forked`] in a child process made by `fork()` after the batcher was created
    ///   (the worker thread stayed in the parent; without this check the request would wait
    ///   forever).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A request whose future is dropped while it is queued is skipped: it never
    /// reaches the batch function (counted in `cancelled`). Once its batch has started, the result
    /// is dropped.
    pub async fn submit(&self, request: Req) -> Result<Resp, BatchError> {
        if crate::process::generation() != self.shared.generation {
            return Err(BatchError::Forked);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            reply,
            submitted: Instant::now(),
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                self.shared.submitted.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.shared.rejected_busy.fetch_add(1, Relaxed);
                return Err(BatchError::Busy {
                    queue_len: self.queue.len(),
                    max_queue: self.shared.config.max_queue.unwrap_or(usize::MAX),
                });
            }
            Err(TrySendError::Disconnected(_)) => return Err(BatchError::Closed),
        }
        answer.await.unwrap_or(Err(BatchError::Closed))
    }

    /// A snapshot of the batcher's state and history; takes no lock.
    pub fn stats(&self) -> BatcherStats {
        let s = &self.shared;
        let batch_sizes: Vec<u64> = s.batch_sizes.iter().map(|c| c.load(Relaxed)).collect();
        let batches = s.batches.load(Relaxed);
        BatcherStats {
            max_batch: s.config.max_batch,
            max_wait: s.config.max_wait,
            max_queue: s.config.max_queue,
            queue_len: self.queue.len(),
            submitted: s.submitted.load(Relaxed),
            succeeded: s.succeeded.load(Relaxed),
            failed: s.failed.load(Relaxed),
            rejected_busy: s.rejected_busy.load(Relaxed),
            cancelled: s.cancelled.load(Relaxed),
            batches,
            mean_batch_size: crate::semaphore::stats::mean_batch_size(&batch_sizes, batches),
            batch_sizes,
            queue_wait: s.queue_wait.summary(),
            python_time: Duration::from_nanos(s.python_ns.load(Relaxed)),
        }
    }

    /// The configuration the batcher was started with.
    pub fn config(&self) -> &BatcherConfig {
        &self.shared.config
    }
}

impl<Req, Resp> std::fmt::Debug for GilBatcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GilBatcher")
            .field("config", &self.shared.config)
            .field("queue_len", &self.queue.len())
            .finish()
    }
}

struct Worker<Req, Resp, F> {
    shared: Arc<BatchShared>,
    requests: Receiver<Job<Req, Resp>>,
    batch_fn: F,
}

impl<Req, Resp, F> Worker<Req, Resp, F>
where
    F: for<'py> FnMut(Python<'py>, Vec<Req>) -> PyResult<Vec<Resp>>,
{
    /// Runs batches until every handle is dropped.
    fn run(mut self) {
        while let Ok(first) = self.requests.recv() {
            let batch = self.fill(first);
            self.run_batch(batch);
        }
    }

    /// Collects up to `max_batch` requests, waiting until `max_wait` after the first one's
    /// submission (not after the worker saw it: a request that queued behind the previous batch
    /// has already waited).
    fn fill(&self, first: Job<Req, Resp>) -> Vec<Job<Req, Resp>> {
        let deadline = first.submitted + self.shared.config.max_wait;
        let mut batch = Vec::with_capacity(self.shared.config.max_batch);
        batch.push(first);
        while batch.len() < self.shared.config.max_batch {
            // Take what is already queued even when the deadline has passed.
            let next = match self.requests.try_recv() {
                Ok(job) => Ok(job),
                Err(_) => self.requests.recv_deadline(deadline),
            };
            match next {
                Ok(job) => batch.push(job),
                Err(_) => break, // deadline passed, or every handle dropped
            }
        }
        batch
    }

    fn run_batch(&mut self, batch: Vec<Job<Req, Resp>>) {
        let s = &*self.shared;
        let started = Instant::now();
        let mut requests = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            if job.reply.is_closed() {
                s.cancelled.fetch_add(1, Relaxed);
                continue;
            }
            s.queue_wait
                .record(started.saturating_duration_since(job.submitted));
            requests.push(job.request);
            replies.push(job.reply);
        }
        let n = requests.len();
        if n == 0 {
            return;
        }
        s.batches.fetch_add(1, Relaxed);
        s.batch_sizes[n - 1].fetch_add(1, Relaxed);

        let batch_fn = &mut self.batch_fn;
        let called = catch_unwind(AssertUnwindSafe(|| {
            crate::try_attach(|py| {
                let entered = Instant::now();
                let result = batch_fn(py, requests);
                s.python_ns.fetch_add(nanos(entered.elapsed()), Relaxed);
                match result {
                    Ok(values) if values.len() == n => Ok(values),
                    Ok(values) => Err(vec_of(n, || BatchError::LengthMismatch {
                        expected: n,
                        got: values.len(),
                    })),
                    // Each requester gets its own reference to the one exception object; cloning
                    // a reference needs the GIL, hence here.
                    Err(e) => Err(vec_of(n, || BatchError::Python(e.clone_ref(py)))),
                }
            })
        }));
        let outcome = match called {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Err(vec_of(n, || BatchError::InterpreterUnavailable)),
            Err(payload) => {
                let msg = panic_message(&*payload);
                Err(vec_of(n, || BatchError::Panicked(msg.clone())))
            }
        };
        match outcome {
            Ok(values) => {
                s.succeeded.fetch_add(n as u64, Relaxed);
                for (reply, value) in replies.into_iter().zip(values) {
                    // An error means the caller went away after the batch started: drop the value.
                    let _ = reply.send(Ok(value));
                }
            }
            Err(errors) => {
                s.failed.fetch_add(n as u64, Relaxed);
                for (reply, error) in replies.into_iter().zip(errors) {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

fn vec_of<T>(n: usize, mut make: impl FnMut() -> T) -> Vec<T> {
    (0..n).map(|_| make()).collect()
}
