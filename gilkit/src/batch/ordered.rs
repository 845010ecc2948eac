//! Ordered streaming: parts `0..count`, each made by `work(k)`, handed to one consumer in order,
//! a pooled worker making parts ahead of the consumer when a core is spare.
//!
//! For a consumer that does something with the GIL held for each part (builds Python objects)
//! while making a part needs no GIL (parsing): the worker parses ahead while the consumer builds.
//! [`Parts::next`] returns the next part's [`Outcome`]: one the worker made, or, if no one has
//! started that part, one made right there on the calling thread with the GIL released, exactly
//! as without a worker. If the worker has that part in hand, the caller makes later parts meanwhile
//! and waits only once nothing is left to make, for that one part. So the worker only ever works
//! ahead, and the caller does no more work than alone but for a claim and a channel receive per
//! part. Without a worker (`ahead` false, or the pool could not start one), the first
//! [`Parts::next`] makes every part in one GIL release.
//!
//! A worker needs a core of its own to gain anything. [`spare_core`] says whether one is free: the
//! consumers registered with [`Consumer::enter`] (each keeps a thread busy) and the workers
//! running are fewer than the cores this process may use. A worker whose core is taken by a
//! consumer that entered since stops claiming parts, and its caller makes the rest.
//!
//! The protocol, on the executor's claim cursor, and its memory ordering are narrated in
//! `README.md` beside this file ("Ordered streaming").
//!
//! # GIL
//! [`Parts::new`] does not touch it (the worker goes to gilkit's pool). [`Parts::next`] holds it
//! on return and releases it to make parts on the calling thread and while waiting for the
//! worker, re-attaching every [`DEFAULT_POLL_INTERVAL`] to run
//! signal handlers (Ctrl-C: `KeyboardInterrupt`; calling again resumes). [`Parts::finish`]
//! releases it while the worker returns. Dropping [`Parts`] cancels the worker and waits for it
//! (at most the part in hand) with the GIL as the caller has it: the worker never needs it.
//!
//! # Fork
//! In a child made by `fork()` the worker does not exist (gilkit's fork generation tells): every
//! part not yet received, including one the vanished worker had claimed, is made on the calling
//! thread.
//!
//! # Examples
//!
//! ```
//! use std::convert::Infallible;
//! use gilkit::batch::Outcome;
//! use gilkit::batch::ordered::{Consumer, Parts, Stats, spare_core};
//! use pyo3::prelude::*;
//!
//! # Python::attach(|py| -> PyResult<()> {
//! let lines: Vec<String> = (0..1000).map(|n| format!("{n},{}", n * 2)).collect();
//! let _consuming = Consumer::enter();
//! let mut stats = Stats::default();
//! // Part k: the sums of lines 100 k .. 100 (k + 1), made on the pool or here.
//! let mut parts = Parts::new(10, spare_core(), &mut stats, move |k| {
//!     let sums = lines[100 * k..100 * (k + 1)].iter().map(|line| {
//!         line.split(',').map(|n| n.parse::<u64>().unwrap()).sum::<u64>()
//!     });
//!     Ok::<_, Infallible>(sums.collect::<Vec<_>>())
//! });
//! let mut all = Vec::new();
//! while let Some(outcome) = parts.next(py, &mut stats)? {
//!     all.extend(outcome.ok().unwrap()); // built with the GIL held, in order
//! }
//! assert_eq!(all[999], 999 * 3);
//! assert_eq!(stats.parts_ahead + stats.parts_inline, 10);
//! # Ok(()) }).unwrap();
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use pyo3::prelude::*;

use super::Outcome;
use super::core::Cursor;
use crate::panic::panic_message;
use crate::{DEFAULT_POLL_INTERVAL, pool, process};

/// What makes part `k`.
type Work<T, E> = dyn Fn(usize) -> Result<T, E> + Send + Sync;

/// What the consumer and the worker share: the claim cursor over the parts, and the work.
struct Shared<T, E> {
    cursor: Cursor,
    work: Box<Work<T, E>>,
}

impl<T, E> Shared<T, E> {
    /// Makes part `part`; a panic becomes [`Outcome::Panicked`] (the other parts go on).
    fn make(&self, part: usize) -> Outcome<T, E> {
        match catch_unwind(AssertUnwindSafe(|| (self.work)(part))) {
            Ok(Ok(value)) => Outcome::Ok(value),
            Ok(Err(error)) => Outcome::Err(error),
            Err(payload) => Outcome::Panicked(panic_message(&*payload)),
        }
    }

    /// Makes part `part` on the calling thread, into `done`.
    fn make_here(&self, part: usize, done: &mut Done<T, E>, stats: &mut Stats) {
        done[part] = Some(self.make(part));
        stats.parts_inline += 1;
    }
}

/// Parts made and not yet taken, by index.
type Done<T, E> = [Option<Outcome<T, E>>];

/// The parts `0..count` of one stream, taken in order by one consumer (see the
/// [module docs](self)).
pub struct Parts<T, E> {
    shared: Arc<Shared<T, E>>,
    done: Vec<Option<Outcome<T, E>>>,
    /// The next part to take.
    next: usize,
    worker: Option<Worker<T, E>>,
}

/// What one or more streams did, added up by [`Parts::new`] and [`Parts::next`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Workers started.
    pub workers: u64,
    /// Parts the worker made and handed out.
    pub parts_ahead: u64,
    /// Parts made on the calling thread because no worker had started them.
    pub parts_inline: u64,
    /// Times the consumer found the next part in the worker's hands, nothing left to make itself,
    /// and waited.
    pub waits: u64,
    /// Time spent in those waits (GIL released).
    pub waited: Duration,
}

impl<T: Send + 'static, E: Send + 'static> Parts<T, E> {
    /// The parts `0..count`, part `k` made by `work(k)`; by a worker on gilkit's pool ahead of the
    /// consumer if `ahead` (pass [`spare_core()`], and your own switch), else on the calling
    /// thread when first asked for. Does not touch the GIL.
    pub fn new(
        count: usize,
        ahead: bool,
        stats: &mut Stats,
        work: impl Fn(usize) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            cursor: Cursor::new(count),
            work: Box::new(work),
        });
        let worker = (ahead && count > 0)
            .then(|| Worker::start(&shared))
            .flatten();
        stats.workers += u64::from(worker.is_some());
        Parts {
            done: (0..count).map(|_| None).collect(),
            shared,
            next: 0,
            worker,
        }
    }

    /// The next part's outcome; `None` once every part is taken (the worker has then ended).
    ///
    /// GIL: held; released to make parts here and while waiting for the worker.
    ///
    /// # Errors
    /// `KeyboardInterrupt` (or another signal handler's exception) while waiting; calling again
    /// resumes.
    pub fn next(&mut self, py: Python<'_>, stats: &mut Stats) -> PyResult<Option<Outcome<T, E>>> {
        let part = self.next;
        if part == self.done.len() {
            self.end_worker(py);
            return Ok(None);
        }
        if self.done[part].is_none()
            && let Some(worker) = &self.worker
        {
            worker.receive(&mut self.done, stats);
        }
        if self.done[part].is_none() {
            self.obtain(py, part, stats)?;
        }
        self.next += 1;
        Ok(self.done[part].take())
    }

    /// Ends the stream: cancels the worker and waits for it, GIL released unless it has already
    /// returned (a worker descheduled on a busy machine must not keep the GIL from other threads).
    pub fn finish(mut self, py: Python<'_>) {
        self.end_worker(py);
    }

    fn end_worker(&mut self, py: Python<'_>) {
        self.shared.cursor.close();
        if let Some(worker) = self.worker.take()
            && !worker.has_ended()
        {
            py.detach(|| worker.wait_until_ended());
        }
    }

    /// Fills `done[part]`: makes it here if no one has claimed it, else makes later parts here
    /// while the worker finishes it, and waits only when nothing is left to make.
    #[cold]
    fn obtain(&mut self, py: Python<'_>, part: usize, stats: &mut Stats) -> PyResult<()> {
        let started = Instant::now();
        let mut waited = false;
        let outcome = loop {
            let Some(worker) = &self.worker else {
                break Ok(());
            };
            if worker.generation != process::generation() {
                // A forked child: the worker does not exist here.
                self.worker = None;
                break Ok(());
            }
            let (shared, done) = (&*self.shared, &mut self.done);
            let (fetched, wait) = py.detach(|| fetch(worker, shared, done, part, stats));
            waited |= wait;
            match fetched {
                Fetched::Ready => break Ok(()),
                Fetched::Poll => {
                    if let Err(err) = py.check_signals() {
                        break Err(err);
                    }
                }
                Fetched::Abandoned => {
                    self.worker = None;
                    break Ok(());
                }
            }
        };
        if waited {
            stats.waits += 1;
            stats.waited += started.elapsed();
        }
        outcome?;
        if self.worker.is_none() {
            // No worker (any more): make every part still missing here, in one GIL release.
            let (shared, done, next) = (&*self.shared, &mut self.done, self.next);
            py.detach(|| {
                for p in next..done.len() {
                    if done[p].is_none() {
                        shared.make_here(p, done, stats);
                    }
                }
            });
        }
        Ok(())
    }
}

impl<T, E> Drop for Parts<T, E> {
    /// Cancels the worker and waits until it has stopped: at most one part's work. Holds the GIL
    /// if the caller does (the worker never needs it); [`Parts::finish`] releases it.
    fn drop(&mut self) {
        self.shared.cursor.close();
        if let Some(worker) = &self.worker {
            worker.wait_until_ended();
        }
    }
}

/// What [`fetch`] found, with the GIL released.
enum Fetched {
    /// The part asked for is in `done`.
    Ready,
    /// The worker still has it after the poll interval: time to run signal handlers.
    Poll,
    /// The worker is gone without it (it stopped early).
    Abandoned,
}

/// [`Parts::obtain`]'s work with the GIL released: fills `done[part]` if it can; returns how it
/// ended and whether it waited.
fn fetch<T, E>(
    worker: &Worker<T, E>,
    shared: &Shared<T, E>,
    done: &mut Done<T, E>,
    part: usize,
    stats: &mut Stats,
) -> (Fetched, bool) {
    if shared.cursor.claim_at(part) {
        shared.make_here(part, done, stats);
        if worker.receive(done, stats) {
            // It stopped early (a consumer entered elsewhere): make the rest in this release.
            while let Some(p) = shared.cursor.claim_next() {
                shared.make_here(p, done, stats);
            }
        }
        return (Fetched::Ready, false);
    }
    // The worker has `part`: make later parts meanwhile.
    loop {
        worker.receive(done, stats);
        if done[part].is_some() {
            return (Fetched::Ready, false);
        }
        let Some(p) = shared.cursor.claim_next() else {
            break;
        };
        shared.make_here(p, done, stats);
    }
    // Nothing left to make here: wait for the worker's parts until `part` arrives.
    let deadline = Instant::now() + DEFAULT_POLL_INTERVAL;
    loop {
        match worker.parts.recv_deadline(deadline) {
            Ok((p, outcome)) => {
                done[p] = Some(outcome);
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

/// The consumer's end of a worker making parts ahead.
struct Worker<T, E> {
    /// Parts the worker made, with their indices; disconnected once it has returned.
    parts: Receiver<(usize, Outcome<T, E>)>,
    /// The fork generation it started in: in a forked child it does not exist.
    generation: u64,
}

impl<T: Send + 'static, E: Send + 'static> Worker<T, E> {
    /// Starts a worker on gilkit's pool; `None` if the pool cannot (the caller makes every part).
    fn start(shared: &Arc<Shared<T, E>>) -> Option<Self> {
        // Unbounded, but the stream bounds it: at most `count` parts.
        let (sender, parts) = crossbeam_channel::unbounded();
        let running = Running::new();
        let shared = shared.clone();
        pool::spawn("gilkit-ahead", move || {
            let (sender, running, shared) = (sender, running, shared);
            make_ahead(&shared, &sender);
            // In this order: once the consumer sees the channel disconnected, the worker holds
            // nothing of the stream's (its memory can go) and no longer counts as running.
            drop(shared);
            drop(running);
            drop(sender);
        })
        .ok()?;
        Some(Worker {
            parts,
            generation: process::generation(),
        })
    }
}

impl<T, E> Worker<T, E> {
    /// Stores the parts sent so far; whether the worker has returned (sent all it will).
    fn receive(&self, done: &mut Done<T, E>, stats: &mut Stats) -> bool {
        loop {
            match self.parts.try_recv() {
                Ok((p, outcome)) => {
                    done[p] = Some(outcome);
                    stats.parts_ahead += 1;
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    /// Whether the worker has returned; only once every part is received (a part still sent
    /// would be dropped).
    fn has_ended(&self) -> bool {
        matches!(self.parts.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Waits until the worker has returned (the cursor is closed: at most the part in hand),
    /// dropping what it still sends; at once in a forked child, where it does not exist.
    fn wait_until_ended(&self) {
        if self.generation == process::generation() {
            while self.parts.recv().is_ok() {}
        }
    }
}

/// The worker's loop: claims the next part, makes it and sends it, until every part is claimed,
/// the consumer is gone, or a consumer that entered since has taken its core ([`worker_fits`]).
fn make_ahead<T, E>(shared: &Shared<T, E>, sender: &Sender<(usize, Outcome<T, E>)>) {
    let mode = WORKER_MODE.load(Ordering::Relaxed);
    if mode == IDLE {
        return;
    }
    while worker_fits() {
        let Some(part) = shared.cursor.claim_next() else {
            return;
        };
        if mode == LAGGING {
            while !shared.cursor.is_exhausted() {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        if sender.send((part, shared.make(part))).is_err() {
            return;
        }
    }
}

/// Consumers registered in this process ([`Consumer`]).
static CONSUMERS: AtomicUsize = AtomicUsize::new(0);
/// Workers started and not yet returned (or dropped unrun), in this process.
static WORKERS: AtomicUsize = AtomicUsize::new(0);
/// Cores set by [`test_hooks::set_cores`] (0: ask the system).
static CORES_SET: AtomicUsize = AtomicUsize::new(0);
/// How workers behave ([`test_hooks::set_worker_mode`]): one of the codes below.
static WORKER_MODE: AtomicU8 = AtomicU8::new(NORMAL);
const NORMAL: u8 = 0;
const IDLE: u8 = 1;
const LAGGING: u8 = 2;

/// Counts a thread as consuming (for [`spare_core`]) while it lives: hold one from a consumer's
/// first part until its end, across its streams.
#[derive(Debug)]
#[must_use = "the thread counts as consuming only while this lives"]
pub struct Consumer(());

impl Consumer {
    /// Registers the calling thread as a consumer.
    pub fn enter() -> Self {
        CONSUMERS.fetch_add(1, Ordering::Relaxed);
        Consumer(())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        CONSUMERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a new worker would have a core to itself: the consumers (each keeps a thread busy, the
/// caller's included) and the workers running are fewer than the cores this process may use
/// (affinity, cgroup quota). A guess, exact when nothing enters or leaves meanwhile.
#[must_use]
pub fn spare_core() -> bool {
    busy_threads() < cores()
}

/// Workers running now in this process (tests check that a dropped stream leaves none).
#[must_use]
pub fn workers_running() -> usize {
    WORKERS.load(Ordering::Relaxed)
}

/// Whether a running worker, which counts among the busy threads, still has its core.
fn worker_fits() -> bool {
    busy_threads() <= cores()
}

fn busy_threads() -> usize {
    CONSUMERS.load(Ordering::Relaxed) + WORKERS.load(Ordering::Relaxed)
}

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    match CORES_SET.load(Ordering::Relaxed) {
        0 => *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        n => n,
    }
}

/// Counts a worker as running from its start until dropped (also when the pool drops it unrun).
struct Running;

impl Running {
    fn new() -> Self {
        WORKERS.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        WORKERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hooks for tests (cargo feature `test-hooks`, never in a published extension): slow workers
/// without relying on timing, and a set number of cores. Process-wide: tests that use them must
/// not run concurrently with other streams' tests.
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use super::{CORES_SET, IDLE, LAGGING, NORMAL, Ordering, WORKER_MODE};

    /// How workers started from now on behave.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum WorkerMode {
        /// Claim and make parts as fast as possible.
        Normal,
        /// Claim nothing (as if the pool never ran the worker): the caller makes every part.
        Idle,
        /// Claim one part, then hold it until every other part is claimed: the caller must make
        /// the rest and wait for that one.
        Lagging,
    }

    /// Sets how the workers started from now on behave.
    pub fn set_worker_mode(mode: WorkerMode) {
        let code = match mode {
            WorkerMode::Normal => NORMAL,
            WorkerMode::Idle => IDLE,
            WorkerMode::Lagging => LAGGING,
        };
        WORKER_MODE.store(code, Ordering::Relaxed);
    }

    /// Makes [`spare_core`](super::spare_core) assume `cores` cores (0: as many as the system
    /// gives this process).
    pub fn set_cores(cores: usize) {
        CORES_SET.store(cores, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Takes every part of `parts` in order.
    fn take_all<T: Send + 'static, E: Send + 'static>(
        mut parts: Parts<T, E>,
        stats: &mut Stats,
    ) -> Vec<Outcome<T, E>> {
        Python::attach(|py| std::iter::from_fn(|| parts.next(py, stats).unwrap()).collect())
    }

    /// Part `k`: `k` squared, after a few microseconds' work (so the worker and the caller share).
    fn square(k: usize) -> Result<usize, String> {
        for i in 0..2_000 {
            std::hint::black_box(i);
        }
        Ok(k * k)
    }

    #[test]
    fn parts_come_in_order_each_made_once_with_or_without_a_worker() {
        for ahead in [true, false] {
            let mut stats = Stats::default();
            let outcomes = take_all(Parts::new(300, ahead, &mut stats, square), &mut stats);
            let expected: Vec<_> = (0..300).map(|k| Outcome::Ok(k * k)).collect();
            assert_eq!(outcomes, expected);
            assert_eq!(stats.parts_ahead + stats.parts_inline, 300);
            if !ahead {
                assert_eq!(
                    (stats.workers, stats.parts_inline, stats.waits),
                    (0, 300, 0)
                );
            }
        }
    }

    #[test]
    fn panics_and_errors_are_outcomes_and_the_other_parts_go_on() {
        for ahead in [true, false] {
            let mut stats = Stats::default();
            let parts = Parts::new(200, ahead, &mut stats, |k| match k {
                7 | 150 => panic!("part {k} is bad"),
                9 => Err("nine"),
                k => Ok(k),
            });
            let outcomes = take_all(parts, &mut stats);
            assert_eq!(outcomes[7], Outcome::Panicked("part 7 is bad".into()));
            assert_eq!(outcomes[150], Outcome::Panicked("part 150 is bad".into()));
            assert_eq!(outcomes[9], Outcome::Err("nine"));
            assert_eq!(outcomes[199], Outcome::Ok(199));
        }
    }

    #[test]
    fn dropping_mid_stream_stops_the_worker_and_frees_what_it_held() {
        let held = Arc::new(());
        let started = Arc::new(AtomicBool::new(false));
        let mut stats = Stats::default();
        let mut parts = {
            let (held, started) = (held.clone(), started.clone());
            Parts::new(100_000, true, &mut stats, move |k| {
                let _keep = &held;
                started.store(true, Ordering::Relaxed);
                square(k)
            })
        };
        Python::attach(|py| parts.next(py, &mut stats).unwrap());
        drop(parts);
        // The worker has returned and dropped its share of the work (and what it captured).
        assert_eq!(Arc::strong_count(&held), 1);
        assert!(started.load(Ordering::Relaxed));
    }

    #[test]
    fn finish_ends_the_worker_and_an_empty_stream_has_none() {
        let mut stats = Stats::default();
        let parts = Parts::new(0, true, &mut stats, square);
        assert!(take_all(parts, &mut stats).is_empty() && stats.workers == 0);
        let held = Arc::new(());
        let parts = {
            let held = held.clone();
            Parts::new(1_000, true, &mut stats, move |k| {
                let _keep = &held;
                square(k)
            })
        };
        Python::attach(|py| parts.finish(py));
        assert_eq!(Arc::strong_count(&held), 1);
    }

    #[test]
    fn a_forked_child_makes_the_parts_itself() {
        let mut stats = Stats::default();
        let mut parts = Parts::new(2_000, true, &mut stats, square);
        let first = Python::attach(|py| parts.next(py, &mut stats).unwrap());
        assert_eq!(first, Some(Outcome::Ok(0)));
        let code = crate::process::testing::in_forked_child(|| {
            let mut stats = Stats::default();
            // No Python in the child: the parts the parent's worker had not sent are made here
            // without releasing anything; `obtain`'s GIL release needs an attached thread, so
            // this checks the Rust side: the worker is recognised as gone.
            let gone = parts
                .worker
                .as_ref()
                .is_some_and(|w| w.generation != process::generation());
            let mut done: Vec<Option<Outcome<usize, String>>> = (0..2).map(|_| None).collect();
            parts.shared.make_here(1, &mut done, &mut stats);
            i32::from(!(gone && done[1] == Some(Outcome::Ok(1))))
        });
        assert_eq!(code, 0);
        // The parent's worker is still its own: the rest comes in order.
        let rest = take_all(parts, &mut stats);
        assert_eq!(
            rest,
            (1..2_000).map(|k| Outcome::Ok(k * k)).collect::<Vec<_>>()
        );
    }
}
