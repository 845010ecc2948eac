//! gilkit's threads: the one owner of every thread gilkit starts (tokio's runtime threads aside,
//! which tokio owns; see [`crate::runtime`]).
//!
//! - [`join`] runs work that borrows from the caller's stack on a pooled thread while the caller
//!   waits, and returns only once the work is done. The interruptible forms run their work there
//!   (so that the main thread stays free for signal handlers), and CPU batches their extra workers.
//! - [`spawn`] runs `'static` work on a pooled thread, detached: the owned interruptible form
//!   (whose work may be abandoned), the Python `Executor`'s workers and each `GilBatcher`'s worker.
//!   Long-running work simply keeps its thread until it returns; the pool starts another thread
//!   for the next job meanwhile.
//!
//! # Why a pool
//! Spawning (and joining) a thread per call costs tens of µs, more than many calls' work; handing
//! the work to an idle helper costs a channel send. Helpers are started on demand (one per job in
//! flight, so concurrent jobs never queue behind each other), and a helper idle for
//! [`IDLE_TIMEOUT`] exits. A wake-up costs tens of microseconds on a busy VM, so both sides first
//! look for each other for up to [`SPIN_FOR`] (yielding the CPU between looks) before they sleep:
//! a helper that just finished a job, for the next one, and a caller, for the end of short work.
//! Measured: `benches/results/release.md` in the gilkit source repository (interruptible calls) and `benches/results/batch.md` in the gilkit source repository
//! (CPU batches).
//!
//! # Python thread state
//! Each helper keeps one Python thread state for its whole life, detached between jobs (see the
//! `thread_state` module): a job's `Python::attach` reuses it instead of creating and destroying
//! one, so `threading.local` values survive from one callback to the next on the same helper, and
//! each attach is cheaper. The state is created before the first job that runs while the
//! interpreter is up (without taking the GIL) and released when the helper exits.
//!
//! # Borrowed work
//! The work may borrow from the caller (it is not `'static`), which a pooled thread cannot see in
//! its type. [`join`] erases the lifetime and keeps the one promise that makes this sound: it does
//! not return, nor unwind, before the work has finished and dropped everything it borrowed. The
//! promise lives in [`join`]'s own frame (a guard that waits on drop), not in a handle the caller
//! could `mem::forget`. This is rayon's and crossbeam's scoped-thread argument.
//!
//! # Fork
//! A forked child has none of the parent's helper threads, so the pool would take jobs and never
//! run them. The pool records the fork generation it was built in (see the `process` module); a
//! caller that finds another generation builds a new pool for its process (the old one is leaked:
//! its threads do not exist to be joined).
//!
//! # Memory ordering
//! `Finished::waited` is only ever touched by the waiting caller's thread (`Relaxed`); it is an
//! atomic only so that `&Finished` can cross into `Python::detach`.
//! `POOL` is published with `Release` after the pool is fully built and read with `Acquire`, so a
//! thread that sees the pointer sees the whole pool. `idle` counts helpers waiting for work minus
//! jobs on their way to them; it is only changed by read-modify-writes, whose single modification
//! order is all the counting needs (`Relaxed`): the job itself, and everything it refers to, is
//! handed over by the channel, which synchronises sender and receiver. The job's effects happen
//! before [`join`] returns: the job stores its outcome under a mutex and then drops its completion
//! sender, and the caller observes the disconnection under the channel's own lock.

use std::ffi::{CStr, CString};
use std::io;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::{process, thread_state};

/// How long an idle helper waits for work before it exits.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a helper that just finished a job looks for the next one before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(100);

/// A job for a helper: the lifetime-erased closure built by [`join`].
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The helpers of this process.
struct Pool {
    jobs: Sender<Job>,
    /// Kept so that every helper can be given a clone, and so that `jobs.send` never fails.
    queue: Receiver<Job>,
    /// Helpers waiting for work, minus jobs reserved for them (see [Memory ordering](self)).
    idle: AtomicUsize,
    /// The fork generation the pool was built in: its helpers exist only in that process.
    generation: u64,
}

static POOL: AtomicPtr<Pool> = AtomicPtr::new(ptr::null_mut());

/// The work's completion, as seen by the waiting caller.
pub(crate) struct Finished<'a> {
    done: &'a Receiver<()>,
    /// Whether `wait_timeout` was called before (only the caller's thread reads it).
    waited: AtomicBool,
}

impl Finished<'_> {
    /// Waits up to `timeout` for the work to finish; `true` once it has.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        // The job drops its sender as its last act; a disconnected channel is "finished". Short
        // work is often done within a few microseconds: look for that before sleeping, which
        // would add a wake-up (tens of µs on a busy VM) to every call.
        let start = std::time::Instant::now();
        // Only on the first wait: later ones are for work that has run a whole timeout already.
        let spin = if self.waited.swap(true, Ordering::Relaxed) {
            Duration::ZERO
        } else {
            SPIN_FOR.min(timeout)
        };
        while start.elapsed() < spin {
            if matches!(self.done.try_recv(), Err(TryRecvError::Disconnected)) {
                return true;
            }
            thread::yield_now();
        }
        !matches!(
            self.done
                .recv_timeout(timeout.saturating_sub(start.elapsed())),
            Err(RecvTimeoutError::Timeout)
        )
    }
}

/// Runs `work` on a helper thread and `wait` on the calling thread, and returns once both are done:
/// the work's result (`Err` holds its panic) and `wait`'s.
///
/// `wait` should block on the [`Finished`] it is given (with timeouts, to do other things between
/// them); whatever it does, `join` waits for the work before it returns or unwinds.
///
/// # Errors
/// If no helper was idle and a new one could not be started; `work` has not run then.
pub(crate) fn join<T, R>(
    work: impl FnOnce() -> T + Send,
    wait: impl FnOnce(&Finished<'_>) -> R,
) -> io::Result<(thread::Result<T>, R)>
where
    T: Send,
{
    let outcome: Mutex<Option<thread::Result<T>>> = Mutex::new(None);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let outcome_ref = &outcome;
    let job = move || {
        // `work` is consumed here, so everything it borrowed is dropped before the signal below.
        let result = catch_unwind(AssertUnwindSafe(work));
        *outcome_ref.lock() = Some(result);
        drop(done_tx);
    };
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(job);
    // SAFETY: only the lifetime changes (same layout, same vtable). The job borrows `outcome` and
    // whatever `work` borrows; it touches them last when it drops `done_tx`. `WaitOnDrop` below
    // blocks until `done_tx` is dropped before this frame is left, by return or by unwinding, so
    // those borrows outlive every use the job makes of them. If the job is never run (the helper
    // could not be started), it is dropped inside `submit`, within this frame.
    let job: Job = unsafe { mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    submit(job)?;
    let guard = WaitOnDrop(&done_rx);
    let waited = wait(&Finished {
        done: &done_rx,
        waited: AtomicBool::new(false),
    });
    drop(guard);
    let result = outcome
        .into_inner()
        .expect("a finished job has stored its outcome");
    Ok((result, waited))
}

/// Blocks until the job has finished, when dropped.
struct WaitOnDrop<'a>(&'a Receiver<()>);

impl Drop for WaitOnDrop<'_> {
    fn drop(&mut self) {
        // Nothing is ever sent: this returns when the job drops its sender.
        let _ = self.0.recv();
    }
}

/// Runs `'static` work on a pooled thread, detached: returns once the work is handed over, not
/// when it is done. The work should catch its own panics if anyone needs to know about them; a
/// panic that escapes it is contained (the thread goes back to the pool).
///
/// While the work runs, the thread's OS-level name (as `top -H`, `/proc/<pid>/task/*/comm` and
/// debuggers show it; at most 15 bytes on Linux) is `name`, so a long-running worker says what it
/// is; it is [`THREAD_NAME`] again afterwards.
///
/// # Errors
/// If no helper was idle and a new one could not be started; `work` has not run then (and has been
/// dropped).
pub(crate) fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let name = os_thread_name(name);
    submit(Box::new(move || {
        set_os_thread_name(&name);
        // Restored also if `work` unwinds.
        let _restore = RestoreName;
        work();
    }))
}

/// The name of the pool's threads while they run no named work.
pub(crate) const THREAD_NAME: &str = "gilkit-pool";

/// `name` as the OS accepts it: no NUL, at most 15 bytes (Linux's limit), cut at a char boundary.
fn os_thread_name(name: &str) -> CString {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let bytes: Vec<u8> = name.as_bytes()[..end]
        .iter()
        .copied()
        .filter(|b| *b != 0)
        .collect();
    CString::new(bytes).expect("NUL bytes were removed")
}

fn set_os_thread_name(name: &CStr) {
    #[cfg(target_os = "linux")]
    // SAFETY: `pthread_self` is always a valid handle for the calling thread, and `name` is a
    // NUL-terminated string of at most 15 bytes plus the NUL, as Linux requires. Failure (which
    // the length rules out) would only leave the old name: the result is ignored on purpose.
    unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Gives the thread back its pool name when dropped.
struct RestoreName;

impl Drop for RestoreName {
    fn drop(&mut self) {
        set_os_thread_name(c"gilkit-pool");
    }
}

/// Hands `job` to an idle helper, or starts a new helper for it.
fn submit(job: Job) -> io::Result<()> {
    let pool = pool();
    let reserved = pool
        .idle
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if reserved {
        // Cannot fail: the pool holds a receiver.
        pool.jobs
            .send(job)
            .expect("the pool keeps its queue open for the life of the process");
        return Ok(());
    }
    let queue = pool.queue.clone();
    thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || run_helper(pool, queue, job))
        .map(drop)
}

/// A helper's life: run its first job, then wait for more until idle for [`IDLE_TIMEOUT`]; then
/// give back the Python thread state it kept (see the `thread_state` module).
fn run_helper(pool: &'static Pool, queue: Receiver<Job>, first: Job) {
    serve(pool, &queue, first);
    thread_state::release();
}

fn serve(pool: &'static Pool, queue: &Receiver<Job>, first: Job) {
    run(first);
    loop {
        pool.idle.fetch_add(1, Ordering::Relaxed);
        // Calls often come in quick succession: look for the next job for a moment before
        // sleeping, so that it does not wait for this thread to be woken.
        let spin_until = std::time::Instant::now() + SPIN_FOR;
        let mut early = None;
        while std::time::Instant::now() < spin_until {
            if let Ok(job) = queue.try_recv() {
                early = Some(job);
                break;
            }
            thread::yield_now();
        }
        if let Some(job) = early {
            run(job);
            continue;
        }
        loop {
            match queue.recv_timeout(IDLE_TIMEOUT) {
                // Whoever sent it reserved an idle helper, i.e. took back our increment.
                Ok(job) => {
                    run(job);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Leave only if no job is on its way: a reservation has taken the count to 0.
                    let left = pool
                        .idle
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok();
                    if left {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Runs one job. [`join`]'s jobs catch their own panics; one escaping a [`spawn`]ed job is
/// contained here, so the helper lives on (the panic hook has already reported it).
///
/// First makes sure the thread keeps a Python thread state (created on the first job that runs
/// while the interpreter is up; a thread-local check afterwards), so that the job's attaches all
/// use that one state.
fn run(job: Job) {
    thread_state::keep();
    let _ = catch_unwind(AssertUnwindSafe(job));
}

/// This process's pool, built on first use (and again in a forked child).
fn pool() -> &'static Pool {
    let generation = process::generation();
    let current = POOL.load(Ordering::Acquire);
    // SAFETY: a published pool is leaked, never freed, so the pointer stays valid.
    if let Some(pool) = unsafe { current.as_ref() }
        && pool.generation == generation
    {
        return pool;
    }
    let (jobs, queue) = crossbeam_channel::unbounded();
    let fresh = Box::into_raw(Box::new(Pool {
        jobs,
        queue,
        idle: AtomicUsize::new(0),
        generation,
    }));
    match POOL.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` came from `Box::into_raw` and is now published, hence never freed.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never published, so this thread still owns it.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as for `current` above; the winner was built in this generation (in a
            // child, only threads started after the fork can race here).
            unsafe { &*winner }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn work_borrows_from_the_caller_and_its_result_comes_back() {
        let words = ["a".to_string(), "bb".to_string()];
        let (result, waited) = join(
            || words.iter().map(String::len).sum::<usize>(),
            |finished| {
                while !finished.wait_timeout(Duration::from_millis(10)) {}
                "waited"
            },
        )
        .unwrap();
        assert_eq!((result.unwrap(), waited), (3, "waited"));
    }

    #[test]
    fn a_panic_in_the_work_is_returned_and_the_helper_survives() {
        let (result, ()) = join(|| panic!("boom"), |_| ()).unwrap();
        let payload = result.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        let (again, ()) = join(|| 7, |_| ()).unwrap();
        assert_eq!(again.unwrap(), 7);
    }

    #[test]
    fn join_waits_for_the_work_even_if_wait_returns_at_once() {
        let mut written = 0;
        let (result, ()) = join(
            || {
                thread::sleep(Duration::from_millis(50));
                written = 1;
            },
            |_| (),
        )
        .unwrap();
        result.unwrap();
        // The closure's borrow of `written` has ended: join returned after the work.
        assert_eq!(written, 1);
    }

    #[test]
    fn join_waits_for_the_work_when_wait_panics() {
        let flag = std::sync::atomic::AtomicBool::new(false);
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            join(
                || {
                    thread::sleep(Duration::from_millis(50));
                    flag.store(true, Ordering::SeqCst);
                },
                |_| panic!("the waiter fails"),
            )
        }));
        assert!(unwound.is_err());
        assert!(
            flag.load(Ordering::SeqCst),
            "join unwound before the work ended"
        );
    }

    #[test]
    fn concurrent_calls_run_at_the_same_time() {
        // Four calls whose work waits for all four: they deadlock unless each has its own helper.
        let barrier = Barrier::new(4);
        thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let (result, ()) = join(
                        || {
                            barrier.wait();
                        },
                        |_| (),
                    )
                    .unwrap();
                    result.unwrap();
                });
            }
        });
    }

    #[test]
    fn idle_helpers_are_reused() {
        // Twenty calls in a row. Other tests' helpers may be idle too and take some of them, but
        // only a thread per call would make all twenty ids different.
        let ids: std::collections::HashSet<_> = (0..20)
            .map(|_| join(|| thread::current().id(), |_| ()).unwrap().0.unwrap())
            .collect();
        assert!(
            ids.len() < 20,
            "{} helpers for 20 calls in a row",
            ids.len()
        );
    }

    #[test]
    fn a_forked_child_gets_its_own_helpers() {
        // A helper of this process, idle now: in the child it does not exist, and a job handed to
        // it would never run.
        join(|| (), |_| ()).unwrap().0.unwrap();
        let code = crate::process::testing::in_forked_child(|| {
            let (result, finished) = join(
                || 7,
                // Bounded, so a regression fails instead of hanging the parent's waitpid.
                |finished| finished.wait_timeout(Duration::from_secs(10)),
            )
            .unwrap();
            if finished && result.unwrap() == 7 {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn spawned_work_runs_detached_and_a_panic_spares_the_helper() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        spawn("test-panics", || panic!("contained")).unwrap();
        spawn("test-names-me-too-long", move || {
            let os_name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            tx.send((os_name, thread::current().name().map(str::to_owned)))
                .unwrap();
        })
        .unwrap();
        let (os_name, rust_name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            os_name.trim_end(),
            "test-names-me-t",
            "the OS name, cut to 15 bytes"
        );
        assert_eq!(rust_name.as_deref(), Some(THREAD_NAME));
        // Still usable after the panic.
        assert_eq!(join(|| 5, |_| ()).unwrap().0.unwrap(), 5);
    }
}
