//! Parsing ahead: a batch's records are parsed on a worker thread while the caller builds the
//! Python objects of the records already parsed.
//!
//! The reader reads and frames a batch of records in one GIL release, as before, copying the
//! framed chunks back to back into one [`Chunks`] buffer and parsing only the first
//! [`PART`] of them there. A [`ParseJob`] on gilkit's blocking pool
//! ([`gilkit::runtime`], fork-aware) then parses the rest in parts of [`PART`] records and sends
//! each part down a channel, while the caller, holding the GIL, builds the records it already has.
//! One thread's time per batch so approaches max(parse, build) instead of their sum.
//!
//! Nothing is read ahead of the consumer: the source is read at the same points as without the
//! worker (when the previous batch is used up), so errors, the file object's position and what a
//! slow stream delivers when are unchanged; only parsing moves. Memory stays one batch.
//!
//! The [`Pipeline`] hands out `(chunk index, outcome)` pairs in record order whichever way they
//! were parsed: on the calling thread (no worker, or the worker gone), by the worker, or in one
//! go by `read_all`'s threads.
//!
//! # Ending a job
//! Dropping a [`ParseJob`] cancels it and waits for the worker to stop, which it does at the next
//! part boundary (tens of microseconds), so a reader dropped or closed mid-file leaves no work
//! running. In a child made by `fork()` the worker does not exist: the job is abandoned and the
//! rest of the batch parsed on the calling thread.
//!
//! # Memory ordering
//! `LIVE_JOBS` is a statistic read by tests; its updates are ordered with the job's end by the
//! channel (the count is decremented before the worker drops its sender, and the consumer waits
//! for the sender to go), so `Relaxed` suffices.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use gilkit::CancelToken;
use pyo3::prelude::*;

use super::reader::{Outcome, parse_chunk};
use crate::parse;

/// Records per part: parsed inline at the start of a batch, and per message from the worker.
/// Small enough that the caller starts building at once and a cancelled worker stops quickly,
/// large enough that the channel costs nothing next to parsing (about 1 µs a record).
pub(crate) const PART: usize = 64;

/// How long a waiting caller sleeps before running Python's signal handlers (Ctrl-C).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Parse jobs started and not yet ended, in this process.
static LIVE_JOBS: AtomicUsize = AtomicUsize::new(0);

/// Parse jobs running now (started and not yet ended); tests check that it returns to 0.
pub(crate) fn live_jobs() -> usize {
    LIVE_JOBS.load(Ordering::Relaxed)
}

/// A batch's framed chunks, back to back in one buffer (one allocation per batch, not per record).
#[derive(Default)]
pub(crate) struct Chunks {
    data: Vec<u8>,
    /// `ends[i]` is where chunk `i` ends in `data`.
    ends: Vec<usize>,
}

impl Chunks {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(self.data.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empties the buffer, keeping its memory for the next batch.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Chunk `i`.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Parses chunks `range` with `opts` (no Python).
    pub(crate) fn parse(
        &self,
        range: std::ops::Range<usize>,
        opts: &parse::Options,
    ) -> Vec<Outcome> {
        range.map(|i| parse_chunk(self.get(i), opts)).collect()
    }
}

/// How many workers a consumer started, and how often and how long it waited for them (GIL
/// released).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorkerStats {
    /// Workers started.
    pub(crate) jobs: u64,
    /// Times the consumer found no parsed record ready and waited.
    pub(crate) waits: u64,
    /// Time spent in those waits.
    pub(crate) waited: Duration,
}

/// One part from the worker: its outcomes, or the panic that stopped it.
type Part = std::thread::Result<Vec<Outcome>>;

/// The worker parsing the tail of a batch (see the module docs).
struct ParseJob {
    parts: Receiver<Part>,
    cancel: CancelToken,
    /// The process that started the worker: after `fork()` the child has no such thread.
    pid: u32,
}

/// Counts a job as live from its start until dropped (also when the pool drops it unrun).
struct Live;

impl Live {
    fn new() -> Self {
        LIVE_JOBS.fetch_add(1, Ordering::Relaxed);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_JOBS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ParseJob {
    /// Starts parsing `chunks[from..]` with `opts` on gilkit's blocking pool; `None` if the pool
    /// cannot start (the caller then parses on its own thread).
    fn spawn(
        chunks: Arc<Chunks>,
        from: usize,
        opts: parse::Options,
        stats: &mut WorkerStats,
    ) -> Option<Self> {
        let handle = gilkit::runtime::try_handle().ok()?;
        stats.jobs += 1;
        // Unbounded, but the batch bounds it: at most `chunks.len() / PART` parts.
        let (sender, parts) = crossbeam_channel::unbounded();
        let cancel = CancelToken::new();
        let token = cancel.clone();
        let live = Live::new();
        drop(handle.spawn_blocking(move || {
            let (sender, live) = (sender, live);
            let mut at = from;
            while at < chunks.len() && !token.is_cancelled() {
                let end = chunks.len().min(at + PART);
                let part = panic::catch_unwind(AssertUnwindSafe(|| chunks.parse(at..end, &opts)));
                let failed = part.is_err();
                if sender.send(part).is_err() || failed {
                    break;
                }
                at = end;
            }
            // In this order: once the consumer sees the channel disconnected, the job no longer
            // counts as live.
            drop(live);
            drop(sender);
        }));
        Some(ParseJob {
            parts,
            cancel,
            pid: std::process::id(),
        })
    }

    /// The next part; `None` once the worker has ended. Waits with the GIL released, running
    /// signal handlers every [`POLL_INTERVAL`] on the main thread.
    ///
    /// # Errors
    ///
    /// The exception raised by a signal handler (`KeyboardInterrupt`); the job is kept, so
    /// calling again resumes.
    fn recv(&self, py: Python<'_>, stats: &mut WorkerStats) -> PyResult<Option<Part>> {
        match self.parts.try_recv() {
            Ok(part) => return Ok(Some(part)),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(TryRecvError::Empty) => {}
        }
        let started = Instant::now();
        stats.waits += 1;
        let _add_time = OnDrop(|| stats.waited += started.elapsed());
        loop {
            if self.pid != std::process::id() {
                return Ok(None);
            }
            match py.detach(|| self.parts.recv_timeout(POLL_INTERVAL)) {
                Ok(part) => return Ok(Some(part)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            }
        }
    }
}

impl Drop for ParseJob {
    /// Cancels the worker and waits until it has stopped: at most one part's parse. Holds the GIL
    /// if the caller does (the worker never needs it).
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.pid == std::process::id() {
            while self.parts.recv().is_ok() {}
        }
    }
}

/// A batch's records in order, each with its parse outcome, parsed on the calling thread or ahead
/// on a worker (see the module docs).
pub(crate) struct Pipeline {
    chunks: Arc<Chunks>,
    /// Index of the next chunk to hand out.
    next: usize,
    /// Outcomes of chunks `next..next + ready.len()`.
    ready: std::vec::IntoIter<Outcome>,
    /// Parses the chunks after those, if running.
    job: Option<ParseJob>,
    /// What parsing the rest uses, on the worker or here.
    opts: parse::Options,
}

impl Pipeline {
    /// A pipeline with no records (before the first batch).
    pub(crate) fn empty(opts: parse::Options) -> Self {
        Self::new(
            Chunks::default(),
            Vec::new(),
            opts,
            false,
            &mut WorkerStats::default(),
        )
    }

    /// A pipeline over `chunks`, whose first `parsed.len()` outcomes are `parsed`; the rest is
    /// parsed with `opts` by a worker if `ahead` (and there is more than `parsed`), else on the
    /// calling thread when reached.
    pub(crate) fn new(
        chunks: Chunks,
        parsed: Vec<Outcome>,
        opts: parse::Options,
        ahead: bool,
        stats: &mut WorkerStats,
    ) -> Self {
        let chunks = Arc::new(chunks);
        let job = (ahead && parsed.len() < chunks.len())
            .then(|| ParseJob::spawn(chunks.clone(), parsed.len(), opts, stats))
            .flatten();
        Pipeline {
            chunks,
            next: 0,
            ready: parsed.into_iter(),
            job,
            opts,
        }
    }

    /// The chunks' buffer, emptied, for the next batch (a fresh one if still shared); stops the
    /// worker first.
    pub(crate) fn into_buffer(mut self) -> Chunks {
        self.job = None;
        match Arc::try_unwrap(self.chunks) {
            Ok(mut chunks) => {
                chunks.clear();
                chunks
            }
            Err(_) => Chunks::default(),
        }
    }

    /// The batch's chunks (to keep the current one alive after the pipeline moves on).
    pub(crate) fn chunks(&self) -> &Arc<Chunks> {
        &self.chunks
    }

    /// Whether every record of the batch has been handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.next == self.chunks.len()
    }

    /// The next record's chunk index and outcome; `None` once the batch is used up. Time spent
    /// waiting for the worker is added to `stats`.
    ///
    /// GIL: held; released while waiting for the worker, or once to parse the rest here when
    /// there is no worker.
    ///
    /// # Errors
    ///
    /// `KeyboardInterrupt` (or another signal handler's exception) while waiting; calling again
    /// resumes.
    ///
    /// # Panics
    ///
    /// A panic of the parser on the worker is resumed here.
    pub(crate) fn next(
        &mut self,
        py: Python<'_>,
        stats: &mut WorkerStats,
    ) -> PyResult<Option<(usize, Outcome)>> {
        loop {
            if let Some(outcome) = self.ready.next() {
                let index = self.next;
                self.next += 1;
                return Ok(Some((index, outcome)));
            }
            if self.is_done() {
                self.job = None;
                return Ok(None);
            }
            let part = match &self.job {
                Some(job) => job.recv(py, stats)?,
                None => None,
            };
            self.ready = match part {
                Some(Ok(outcomes)) => outcomes.into_iter(),
                Some(Err(panic)) => resume(panic),
                None => {
                    // No worker, or it ended early (in a forked child): parse the rest here.
                    self.job = None;
                    let (chunks, from, opts) = (&self.chunks, self.next, &self.opts);
                    py.detach(|| chunks.parse(from..chunks.len(), opts))
                        .into_iter()
                }
            };
        }
    }

    /// Parses the records not yet handed out again, with `opts` (the reader's options changed).
    pub(crate) fn reparse(&mut self, opts: parse::Options, ahead: bool, stats: &mut WorkerStats) {
        self.job = None;
        self.ready = Vec::new().into_iter();
        self.opts = opts;
        if ahead && !self.is_done() {
            self.job = ParseJob::spawn(self.chunks.clone(), self.next, opts, stats);
        }
    }
}

/// Runs a closure when dropped (on every way out of a function).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn resume(panic: Box<dyn Any + Send>) -> ! {
    panic::resume_unwind(panic)
}
