//! Parsing ahead: a batch's records are parsed on a worker thread while the caller builds the
//! Python objects of the records already parsed, without the caller ever waiting for work nobody
//! has started.
//!
//! The reader reads and frames a batch of records in one GIL release, as before, copying the
//! framed chunks back to back into one [`Chunks`] buffer and parsing only the first [`PART`] of
//! them there. The rest of the batch is cut into parts of [`PART`] records, *claimed* through one
//! shared cursor over part indices ([`Claims`]): whoever takes a part index from the cursor parses
//! that part, and no one else does.
//!
//! - A [`ParseJob`] on gilkit's blocking pool ([`gilkit::runtime`], fork-aware) claims the next
//!   unclaimed part, parses it and sends it, tagged with its index, down a channel; then the next.
//! - The caller, needing part `k` (all parts before it are handed out), first takes what the
//!   worker has sent. If part `k` is there, it is used. If part `k` is still unclaimed (the
//!   cursor is at `k`), the caller claims it and parses it itself, GIL released, exactly as
//!   without read-ahead. Otherwise the worker is parsing `k` right now: rather than sit idle, the
//!   caller claims and parses later parts (keeping them for when they are reached) until `k`
//!   arrives, and only when no part is left unclaimed does it wait, for `k` alone.
//!
//! So the worker only ever works ahead of the caller, and the caller waits at most for the one part
//! the worker is in the middle of, once nothing else is left to parse: when building records is
//! cheaper than parsing them (counting records, `lazy_fields`), the two threads simply share the
//! parsing; when building is dearer, the worker keeps ahead and the caller never parses. Either way
//! the caller does no more work than without the worker, but for a claim and a channel receive per
//! part, and never waits while something is left to parse. Parsed records are allocated on the
//! worker and freed on the caller, which the extension's allocator (mimalloc, `src/lib.rs`) does
//! without the lock glibc's malloc takes.
//!
//! A worker needs a core of its own to gain anything: on a busy machine it only adds thread
//! switches and moves parsed records between cores' caches. So a batch gets a worker only when
//! the readers reading in this process (this one included, each keeping a thread busy) and the
//! workers running leave a core spare ([`spare_core`]): one reader on two cores gets one, two
//! readers on two cores get none and read exactly as without read-ahead. A worker whose core is
//! taken by a reader starting meanwhile stops claiming parts ([`worker_fits`]); its caller, on
//! finding it gone, parses the rest of the batch in one GIL release.
//!
//! Nothing is read ahead of the consumer: the source is read at the same points as without the
//! worker (when the previous batch is used up), so errors, the file object's position and what a
//! slow stream delivers when are unchanged; only parsing moves. Memory stays one batch.
//!
//! The [`Pipeline`] hands out `(chunk index, outcome)` pairs in record order whichever way they
//! were parsed: on the calling thread, by the worker, or in one go by `read_all`'s threads.
//!
//! # Ending a job
//! Dropping a [`ParseJob`] cancels it (moves the cursor past the last part, so the worker claims
//! nothing more) and waits for the worker to stop, which it does after the part in hand (tens of
//! microseconds), so a reader dropped or closed mid-file leaves no work running. In a child made by
//! `fork()` the worker does not exist: the job is abandoned and every part not yet received,
//! including any the vanished worker had claimed, is parsed on the calling thread.
//!
//! # Memory ordering
//! The claim cursor is only ever changed by read-modify-writes (`fetch_add`, `compare_exchange`,
//! `fetch_max`), which all act on one modification order and each read the value the previous one
//! wrote: two claims never return the same part, whatever the ordering, so `Relaxed` suffices. No
//! data travels through the cursor: the chunks reach the worker through the `Arc` handed to
//! `spawn_blocking` (the spawn happens-before the worker runs), and parsed parts reach the caller
//! through the channel (a send happens-before the receive that returns it). Cancelling needs no
//! stronger ordering either: the worker's next claim, a read-modify-write, reads the cancelled
//! value, and the caller then waits for the channel to disconnect, which orders everything the
//! worker did before the caller goes on.
//!
//! `LIVE_JOBS` is a statistic read by tests and by [`spare_core`]; its updates are ordered with the
//! job's end by the channel (the count is decremented before the worker drops its sender, and the
//! consumer waits for the sender to go), so `Relaxed` suffices. `READING` and `LIVE_JOBS` only
//! inform [`spare_core`]'s guess, which a stale value makes no less correct: `Relaxed`. The test
//! hooks (`WORKER_MODE`, `CORES_FOR_TESTS`, and the lagging worker's plain load of the cursor)
//! carry no data and are `Relaxed` too.

use std::any::Any;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use pyo3::prelude::*;

use super::reader::{Outcome, parse_chunk};
use crate::parse;

/// Records per part: parsed inline at the start of a batch, and the unit claimed and parsed by
/// the worker or the caller after that. Small enough that the caller starts building at once and
/// a cancelled worker stops quickly, large enough that a claim and a message cost nothing next to
/// parsing (about 1 µs a record).
pub(crate) const PART: usize = 64;

/// How long a waiting caller sleeps before running Python's signal handlers (Ctrl-C).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Parse jobs started and not yet ended, in this process.
static LIVE_JOBS: AtomicUsize = AtomicUsize::new(0);

/// Parse jobs running now (started and not yet ended); tests check that it returns to 0.
pub(crate) fn live_jobs() -> usize {
    LIVE_JOBS.load(Ordering::Relaxed)
}

/// Readers reading (between their first batch and their end), in this process.
static READING: AtomicUsize = AtomicUsize::new(0);

/// The number of cores, if a test set it (0: ask the system).
static CORES_FOR_TESTS: AtomicUsize = AtomicUsize::new(0);

/// Makes [`spare_core`] assume `cores` cores (0: as many as the system gives this process); a
/// test hook.
pub(crate) fn set_cores(cores: usize) {
    CORES_FOR_TESTS.store(cores, Ordering::Relaxed);
}

/// Whether a new worker would have a core to itself: the readers reading (each keeps a thread
/// busy, the caller's included) and the workers running are fewer than the cores this process
/// may use.
pub(crate) fn spare_core() -> bool {
    busy_threads() < cores()
}

/// Whether a running worker still has a core to itself (it counts among the busy threads): if a
/// reader started since, it stops claiming parts and leaves the rest to its caller.
fn worker_fits() -> bool {
    busy_threads() <= cores()
}

fn busy_threads() -> usize {
    READING.load(Ordering::Relaxed) + LIVE_JOBS.load(Ordering::Relaxed)
}

/// The cores this process may use (affinity, cgroup quota), or what a test set.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    match CORES_FOR_TESTS.load(Ordering::Relaxed) {
        0 => *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    }
}

/// Counts a reader as reading while it lives (for [`spare_core`]): held by a reader from its
/// first batch until its end.
pub(crate) struct Reading;

impl Reading {
    pub(crate) fn new() -> Self {
        READING.fetch_add(1, Ordering::Relaxed);
        Reading
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How workers behave, for tests that must make them slow without relying on timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum WorkerMode {
    /// Claim and parse parts as fast as possible.
    Normal = 0,
    /// Claim nothing (as if the pool never ran the job): the caller parses every part.
    Idle = 1,
    /// Claim one part, then hold it until every other part is claimed: the caller must parse the
    /// rest and wait for that one.
    Lagging = 2,
}

static WORKER_MODE: AtomicU8 = AtomicU8::new(WorkerMode::Normal as u8);

/// Sets how the workers started from now on behave (a test hook; see [`WorkerMode`]).
pub(crate) fn set_worker_mode(mode: WorkerMode) {
    WORKER_MODE.store(mode as u8, Ordering::Relaxed);
}

fn worker_mode() -> WorkerMode {
    match WORKER_MODE.load(Ordering::Relaxed) {
        1 => WorkerMode::Idle,
        2 => WorkerMode::Lagging,
        _ => WorkerMode::Normal,
    }
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
    pub(crate) fn parse(&self, range: Range<usize>, opts: &parse::Options) -> Vec<Outcome> {
        range.map(|i| parse_chunk(self.get(i), opts)).collect()
    }
}

/// How many workers a consumer started, who parsed the parts after each batch's first, and how
/// often and how long the consumer waited for the worker (GIL released).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorkerStats {
    /// Workers started.
    pub(crate) jobs: u64,
    /// Batches read without read-ahead because no core was spare ([`spare_core`]).
    pub(crate) jobs_skipped: u64,
    /// Parts parsed by the worker and handed out.
    pub(crate) parts_ahead: u64,
    /// Parts parsed on the calling thread because no worker had started them.
    pub(crate) parts_inline: u64,
    /// Times the consumer found the next part in the worker's hands, nothing left to parse
    /// itself, and waited.
    pub(crate) waits: u64,
    /// Time spent in those waits.
    pub(crate) waited: Duration,
}

/// A parsed part, as the worker sends it: its outcomes, or the panic that stopped the parser.
type Part = std::thread::Result<Vec<Outcome>>;

/// A parsed part, as the caller keeps it until its turn.
type Parsed = Result<Vec<Outcome>, Panicked>;

/// The payload of a panic of the parser on the worker, to be resumed on the caller. In a mutex
/// only so that the reader holding it is `Sync` (a `pyclass` must be); it is never locked.
struct Panicked(std::sync::Mutex<Box<dyn Any + Send>>);

/// Keeps part `part` until its turn.
fn store(done: &mut [Option<Parsed>], part: usize, parsed: Part) {
    done[part] = Some(parsed.map_err(|panic| Panicked(std::sync::Mutex::new(panic))));
}

/// The tail of a batch, cut into parts, and the cursor that hands them out (see the module docs).
struct Claims {
    chunks: Arc<Chunks>,
    /// The first chunk of part 0.
    from: usize,
    /// Number of parts.
    count: usize,
    /// The lowest part no one has claimed (may run past `count`).
    cursor: AtomicUsize,
    opts: parse::Options,
}

impl Claims {
    fn new(chunks: Arc<Chunks>, from: usize, opts: parse::Options) -> Self {
        let count = chunks.len().saturating_sub(from).div_ceil(PART);
        Claims {
            chunks,
            from,
            count,
            cursor: AtomicUsize::new(0),
            opts,
        }
    }

    /// The chunks of part `part`.
    fn range(&self, part: usize) -> Range<usize> {
        let start = self.from + part * PART;
        start..self.chunks.len().min(start + PART)
    }

    /// Claims the lowest unclaimed part, if any.
    fn claim_next(&self) -> Option<usize> {
        let part = self.cursor.fetch_add(1, Ordering::Relaxed);
        (part < self.count).then_some(part)
    }

    /// Claims part `part` if it is the lowest unclaimed one.
    fn claim(&self, part: usize) -> bool {
        self.cursor
            .compare_exchange(part, part + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether every part is claimed.
    fn all_claimed(&self) -> bool {
        self.cursor.load(Ordering::Relaxed) >= self.count
    }

    /// Makes every part claimed, so the worker stops after the part in hand.
    fn cancel(&self) {
        self.cursor.fetch_max(self.count, Ordering::Relaxed);
    }

    fn parse(&self, part: usize) -> Vec<Outcome> {
        self.chunks.parse(self.range(part), &self.opts)
    }
}

/// The worker parsing parts of a batch's tail ahead of the caller (see the module docs).
struct ParseJob {
    claims: Arc<Claims>,
    parts: Receiver<(usize, Part)>,
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
    /// Starts a worker claiming and parsing parts of `claims` on gilkit's blocking pool; `None` if
    /// the pool cannot start (the caller then parses every part itself).
    fn spawn(claims: Arc<Claims>, stats: &mut WorkerStats) -> Option<Self> {
        let handle = gilkit::runtime::try_handle().ok()?;
        stats.jobs += 1;
        // Unbounded, but the batch bounds it: at most `claims.count` parts.
        let (sender, parts) = crossbeam_channel::unbounded();
        let live = Live::new();
        let shared = claims.clone();
        drop(handle.spawn_blocking(move || {
            let (sender, live, claims) = (sender, live, shared);
            work(&claims, &sender);
            // In this order: once the consumer sees the channel disconnected, the job no longer
            // counts as live.
            drop(live);
            drop(sender);
        }));
        Some(ParseJob {
            claims,
            parts,
            pid: std::process::id(),
        })
    }
}

/// The worker's loop: claims the next part, parses it and sends it, until every part is claimed,
/// the caller is gone, the parser panics (the panic is sent on), or another reader has taken
/// the core the worker was using ([`worker_fits`]).
fn work(claims: &Claims, sender: &Sender<(usize, Part)>) {
    let mode = worker_mode();
    if mode == WorkerMode::Idle {
        return;
    }
    while worker_fits() {
        let Some(part) = claims.claim_next() else {
            return;
        };
        if mode == WorkerMode::Lagging {
            while !claims.all_claimed() {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let parsed = panic::catch_unwind(AssertUnwindSafe(|| claims.parse(part)));
        let failed = parsed.is_err();
        if sender.send((part, parsed)).is_err() || failed {
            return;
        }
    }
}

impl ParseJob {
    /// Ends a job whose parts have all been received: the worker has nothing left but to return,
    /// so this waits for that, with the GIL released unless it has already returned (a worker
    /// descheduled on a busy machine must not keep the GIL from other threads meanwhile).
    fn finish(self, py: Python<'_>) {
        if !matches!(self.parts.try_recv(), Err(TryRecvError::Disconnected)) {
            py.detach(|| drop(self));
        }
    }
}

impl Drop for ParseJob {
    /// Cancels the worker and waits until it has stopped: at most one part's parse. Holds the GIL
    /// if the caller does (the worker never needs it).
    fn drop(&mut self) {
        self.claims.cancel();
        if self.pid == std::process::id() {
            while self.parts.recv().is_ok() {}
        }
    }
}

/// What [`fetch`] found, with the GIL released.
enum Fetched {
    /// The part asked for is in `done`.
    Ready,
    /// The worker still has it after [`POLL_INTERVAL`]: time to run signal handlers.
    Poll,
    /// The worker is gone without it (a forked child, or it stopped early).
    Abandoned,
}

/// The parts of a batch's tail, taken in order by the caller (see the module docs).
struct Tail {
    claims: Arc<Claims>,
    /// Parts parsed (by either thread) and not yet taken, by part index.
    done: Vec<Option<Parsed>>,
    /// The next part to take.
    next: usize,
    job: Option<ParseJob>,
}

impl Tail {
    /// The parts of `chunks[from..]`, parsed with `opts` by a worker if `ahead`, else by the
    /// caller.
    fn new(
        chunks: Arc<Chunks>,
        from: usize,
        opts: parse::Options,
        ahead: bool,
        stats: &mut WorkerStats,
    ) -> Self {
        let claims = Arc::new(Claims::new(chunks, from, opts));
        let job = (ahead && claims.count > 0)
            .then(|| ParseJob::spawn(claims.clone(), stats))
            .flatten();
        Tail {
            done: (0..claims.count).map(|_| None).collect(),
            claims,
            next: 0,
            job,
        }
    }

    /// The next part's outcomes; `None` once every part is taken.
    ///
    /// GIL: held; released to parse parts here and while waiting for the worker.
    ///
    /// # Errors
    ///
    /// `KeyboardInterrupt` (or another signal handler's exception) while waiting; calling again
    /// resumes.
    ///
    /// # Panics
    ///
    /// A panic of the parser on the worker is resumed here.
    fn take(&mut self, py: Python<'_>, stats: &mut WorkerStats) -> PyResult<Option<Vec<Outcome>>> {
        let part = self.next;
        if part == self.claims.count {
            if let Some(job) = self.job.take() {
                job.finish(py);
            }
            return Ok(None);
        }
        if self.done[part].is_none() {
            self.receive(stats);
        }
        if self.done[part].is_none() {
            self.obtain(py, part, stats)?;
        }
        self.next += 1;
        match self.done[part].take() {
            Some(Ok(outcomes)) => Ok(Some(outcomes)),
            Some(Err(Panicked(panic))) => {
                resume(panic.into_inner().unwrap_or_else(|e| e.into_inner()))
            }
            None => unreachable!("`obtain` fills the part it is asked for"),
        }
    }

    /// Stores the parts the worker has sent so far.
    fn receive(&mut self, stats: &mut WorkerStats) {
        if let Some(job) = &self.job {
            for (part, parsed) in job.parts.try_iter() {
                stats.parts_ahead += 1;
                store(&mut self.done, part, parsed);
            }
        }
    }

    /// Fills `done[part]`: claims and parses it here if no one has, else parses later parts here
    /// while the worker finishes it, and waits only when nothing is left to parse.
    #[cold]
    fn obtain(&mut self, py: Python<'_>, part: usize, stats: &mut WorkerStats) -> PyResult<()> {
        let started = Instant::now();
        let mut waited = false;
        let outcome = loop {
            let Some(job) = &self.job else {
                break Ok(());
            };
            if job.pid != std::process::id() {
                // A forked child: the worker does not exist here.
                self.job = None;
                break Ok(());
            }
            let (claims, done) = (&self.claims, &mut self.done);
            let (fetched, wait) = py.detach(|| fetch(job, claims, done, part, stats));
            waited |= wait;
            match fetched {
                Fetched::Ready => break Ok(()),
                Fetched::Poll => {
                    if let Err(err) = py.check_signals() {
                        break Err(err);
                    }
                }
                Fetched::Abandoned => {
                    self.job = None;
                    break Ok(());
                }
            }
        };
        if waited {
            stats.waits += 1;
            stats.waited += started.elapsed();
        }
        outcome?;
        if self.job.is_none() {
            // No worker (any more): parse every part still missing here, in one GIL release.
            let (claims, done, next) = (&self.claims, &mut self.done, self.next);
            let missing: Vec<usize> = (next..claims.count)
                .filter(|&p| done[p].is_none())
                .collect();
            stats.parts_inline += missing.len() as u64;
            let parsed = py.detach(|| {
                missing
                    .iter()
                    .map(|&p| (p, claims.parse(p)))
                    .collect::<Vec<_>>()
            });
            for (p, outcomes) in parsed {
                done[p] = Some(Ok(outcomes));
            }
        }
        Ok(())
    }
}

/// Stores what the worker has sent; whether it has ended (sent everything it will).
fn worker_gone(job: &ParseJob, done: &mut [Option<Parsed>], stats: &mut WorkerStats) -> bool {
    loop {
        match job.parts.try_recv() {
            Ok((p, parsed)) => {
                store(done, p, parsed);
                stats.parts_ahead += 1;
            }
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
}

/// [`Tail::obtain`]'s work with the GIL released: fills `done[part]` if it can, counting in
/// `stats` the parts parsed here and received; returns how it ended and whether it waited.
fn fetch(
    job: &ParseJob,
    claims: &Claims,
    done: &mut [Option<Parsed>],
    part: usize,
    stats: &mut WorkerStats,
) -> (Fetched, bool) {
    if claims.claim(part) {
        done[part] = Some(Ok(claims.parse(part)));
        stats.parts_inline += 1;
        if worker_gone(job, done, stats) {
            // It stopped early (a reader started elsewhere): parse the rest in this GIL release.
            while let Some(p) = claims.claim_next() {
                done[p] = Some(Ok(claims.parse(p)));
                stats.parts_inline += 1;
            }
        }
        return (Fetched::Ready, false);
    }
    // The worker has `part`: parse later parts meanwhile.
    loop {
        for (p, parsed) in job.parts.try_iter() {
            store(done, p, parsed);
            stats.parts_ahead += 1;
        }
        if done[part].is_some() {
            return (Fetched::Ready, false);
        }
        let Some(p) = claims.claim_next() else {
            break;
        };
        done[p] = Some(Ok(claims.parse(p)));
        stats.parts_inline += 1;
    }
    // Nothing left to parse here: wait for the worker's parts until `part` arrives.
    let deadline = Instant::now() + POLL_INTERVAL;
    loop {
        match job.parts.recv_deadline(deadline) {
            Ok((p, parsed)) => {
                store(done, p, parsed);
                stats.parts_ahead += 1;
                if p == part {
                    return (Fetched::Ready, true);
                }
            }
            Err(RecvTimeoutError::Timeout) => return (Fetched::Poll, true),
            Err(RecvTimeoutError::Disconnected) => return (Fetched::Abandoned, true),
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
    /// The chunks after those, in parts.
    tail: Tail,
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
    /// parsed with `opts` in parts, by a worker ahead of the caller if `ahead` (and there is more
    /// than `parsed`), else on the calling thread when reached.
    pub(crate) fn new(
        chunks: Chunks,
        parsed: Vec<Outcome>,
        opts: parse::Options,
        ahead: bool,
        stats: &mut WorkerStats,
    ) -> Self {
        let chunks = Arc::new(chunks);
        let tail = Tail::new(chunks.clone(), parsed.len(), opts, ahead, stats);
        Pipeline {
            chunks,
            next: 0,
            ready: parsed.into_iter(),
            tail,
        }
    }

    /// The chunks' buffer, emptied, for the next batch (a fresh one if still shared), once every
    /// record is handed out; ends the worker first (GIL released if it has not yet returned).
    pub(crate) fn into_buffer(self, py: Python<'_>) -> Chunks {
        let Pipeline {
            chunks, mut tail, ..
        } = self;
        if let Some(job) = tail.job.take() {
            job.finish(py);
        }
        drop(tail);
        match Arc::try_unwrap(chunks) {
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

    /// The next record's chunk index and outcome; `None` once the batch is used up. Parts parsed
    /// here and time spent waiting for the worker are added to `stats`.
    ///
    /// GIL: held; released to parse a part here (no worker, or the worker has not started it)
    /// and while waiting for the worker.
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
            match self.tail.take(py, stats)? {
                Some(outcomes) => self.ready = outcomes.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// Parses the records not yet handed out again, with `opts` (the reader's options changed).
    pub(crate) fn reparse(&mut self, opts: parse::Options, ahead: bool, stats: &mut WorkerStats) {
        // Stop the worker before starting another.
        self.tail.job = None;
        self.ready = Vec::new().into_iter();
        self.tail = Tail::new(self.chunks.clone(), self.next, opts, ahead, stats);
    }
}

fn resume(panic: Box<dyn Any + Send>) -> ! {
    panic::resume_unwind(panic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(records: usize, from: usize) -> Claims {
        let mut chunks = Chunks::default();
        for _ in 0..records {
            chunks.push(b"00026     2200025   4500\x1e\x1d");
        }
        Claims::new(Arc::new(chunks), from, parse::Options::default())
    }

    #[test]
    fn parts_cover_the_tail() {
        let c = claims(1024, PART);
        assert_eq!(c.count, 15);
        assert_eq!(c.range(0), PART..2 * PART);
        assert_eq!(c.range(14), 15 * PART..1024);
        let c = claims(100, PART);
        assert_eq!((c.count, c.range(0)), (1, PART..100));
        assert_eq!(claims(PART, PART).count, 0);
        assert_eq!(claims(0, 0).count, 0);
    }

    #[test]
    fn a_part_is_claimed_only_at_the_cursor() {
        let c = claims(4 * PART, 0);
        assert!(!c.claim(1), "part 0 is still unclaimed");
        assert!(c.claim(0));
        assert!(!c.claim(0), "claimed twice");
        assert_eq!(c.claim_next(), Some(1));
        assert!(c.claim(2));
        assert!(!c.all_claimed());
        c.cancel();
        assert!(c.all_claimed());
        assert_eq!(c.claim_next(), None);
        assert!(!c.claim(3));
    }

    #[test]
    fn concurrent_claims_take_each_part_once() {
        let c = claims(200 * PART, 0);
        let taken: Vec<Vec<usize>> = std::thread::scope(|s| {
            let worker = s.spawn(|| std::iter::from_fn(|| c.claim_next()).collect());
            // The caller's way: the part it needs next if unclaimed, else whatever is next.
            let mut mine = Vec::new();
            for want in 0..c.count {
                if c.claim(want) {
                    mine.push(want);
                } else if let Some(p) = c.claim_next() {
                    mine.push(p);
                }
            }
            vec![mine, worker.join().unwrap()]
        });
        let mut all: Vec<usize> = taken.concat();
        all.sort_unstable();
        assert_eq!(all, (0..c.count).collect::<Vec<_>>());
    }
}
