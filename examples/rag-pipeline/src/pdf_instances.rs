//! A pool of interchangeable instances of something that must be used by one thread at a time,
//! made on demand up to a limit: how PDFs are read by pdfium on several threads at once.
//!
//! pdfium is not thread-safe: one loaded copy of the library has one global state, and every call
//! into it must come from one thread at a time. But the dynamic loader loads a *second copy* of a
//! library, with its own globals, when the second file is a different file (another inode), even
//! with the same bytes. So `pdf.rs` keeps the library the user configured as the first instance
//! and, when a thread finds every instance busy, makes another: a private copy of the library
//! (written to a temporary folder of its own, loaded, then deleted: the mapping outlives the
//! file). Every instance is the same library, so a file's text does not depend on which thread
//! read it.
//!
//! The pool knows nothing of pdfium: it hands out instances ([`InstancePool::acquire`]), makes a
//! new one with the caller's function when none is idle and fewer than the limit exist, and
//! otherwise waits for one to come back. When making one fails (no writable temporary folder, a
//! `noexec` mount), the pool stops growing and makes do with what it has; that reason is kept
//! for [`InstancePool::growth_stopped`]. At least one instance always exists (given at
//! construction), so a waiter is always woken.
//!
//! After `fork()`, the child has only the thread that forked: instances other threads held at that
//! moment never come back there. The pool records gilkit's fork generation
//! ([`gilkit::fork_generation`]) and, on the first acquire in a child, stops counting them, so the
//! child makes new ones instead of waiting forever; the idle ones are still good (a copy of a
//! library at rest). Not covered: a fork while another thread holds the pool's own lock, which it
//! does only for the few instructions of a push or a pop (covering it would take a fork hook that
//! holds the lock across `fork()`).

use std::ops::Deref;

use parking_lot::{Condvar, Mutex};

/// Instances of `T`, at most `limit` of them, each used by one thread at a time.
pub(crate) struct InstancePool<T> {
    state: Mutex<State<T>>,
    returned: Condvar,
    limit: usize,
}

struct State<T> {
    idle: Vec<T>,
    /// Instances in existence: idle, in use, or being made.
    made: usize,
    /// Why no more instances are made (making one failed).
    growth_stopped: Option<String>,
    /// The fork generation `made` counts in.
    generation: u64,
}

impl<T> InstancePool<T> {
    /// A pool holding `first`, which will grow to at most `limit` instances (at least 1).
    pub(crate) fn new(first: T, limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                idle: vec![first],
                made: 1,
                growth_stopped: None,
                generation: gilkit::fork_generation(),
            }),
            returned: Condvar::new(),
            limit: limit.max(1),
        }
    }

    /// An idle instance; or a new one from `make` (called without the pool's lock) when none is
    /// idle and fewer than the limit exist; or, failing both, the first one returned. Blocks the
    /// calling thread while it waits; the instance goes back to the pool when the guard drops.
    pub(crate) fn acquire(&self, make: impl FnOnce() -> Result<T, String>) -> Instance<'_, T> {
        self.acquire_in(gilkit::fork_generation(), make)
    }

    /// [`Self::acquire`] in the fork generation `generation` (a parameter so that tests can fork
    /// without forking).
    fn acquire_in(
        &self,
        generation: u64,
        make: impl FnOnce() -> Result<T, String>,
    ) -> Instance<'_, T> {
        let mut state = self.state.lock();
        if state.generation != generation {
            // A forked child: only the idle instances exist here.
            state.made = state.idle.len();
            state.generation = generation;
        }
        let mut make = Some(make);
        loop {
            if let Some(instance) = state.idle.pop() {
                return Instance::new(self, instance);
            }
            if state.made < self.limit
                && state.growth_stopped.is_none()
                && let Some(make) = make.take()
            {
                state.made += 1;
                drop(state);
                match make() {
                    Ok(instance) => return Instance::new(self, instance),
                    Err(why) => {
                        state = self.state.lock();
                        state.made -= 1;
                        state.growth_stopped = Some(why);
                        continue;
                    }
                }
            }
            self.returned.wait(&mut state);
        }
    }

    /// Instances made so far (idle or in use).
    pub(crate) fn made(&self) -> usize {
        self.state.lock().made
    }

    /// The most instances the pool makes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Why the pool stopped growing before its limit, if it did.
    pub(crate) fn growth_stopped(&self) -> Option<String> {
        self.state.lock().growth_stopped.clone()
    }

    fn give_back(&self, instance: T) {
        self.state.lock().idle.push(instance);
        self.returned.notify_one();
    }
}

/// An instance taken from an [`InstancePool`], returned to it on drop (also when unwinding).
pub(crate) struct Instance<'a, T> {
    pool: &'a InstancePool<T>,
    instance: Option<T>,
}

impl<'a, T> Instance<'a, T> {
    fn new(pool: &'a InstancePool<T>, instance: T) -> Self {
        Self {
            pool,
            instance: Some(instance),
        }
    }
}

impl<T> Deref for Instance<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.instance.as_ref().expect("present until drop")
    }
}

impl<T> Drop for Instance<'_, T> {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.pool.give_back(instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn an_idle_instance_is_reused_before_a_new_one_is_made() {
        let pool = InstancePool::new(0, 4);
        for _ in 0..3 {
            let first = pool.acquire(|| panic!("must not make one: the first is idle"));
            assert_eq!(*first, 0);
        }
        assert_eq!(pool.made(), 1);
    }

    #[test]
    fn a_new_instance_is_made_while_every_instance_is_busy_up_to_the_limit() {
        let pool = InstancePool::new(0, 3);
        let a = pool.acquire(|| Ok(1));
        let b = pool.acquire(|| Ok(1));
        let c = pool.acquire(|| Ok(2));
        assert_eq!((*a, *b, *c), (0, 1, 2));
        assert_eq!(pool.made(), 3);
        drop((a, b, c));
        // Nothing more is made: three are idle.
        let held: Vec<_> = (0..3).map(|_| pool.acquire(|| panic!("limit"))).collect();
        let mut seen: Vec<i32> = held.iter().map(|i| **i).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn at_the_limit_a_thread_waits_for_an_instance_to_come_back() {
        let pool = InstancePool::new(7, 1);
        let held = pool.acquire(|| panic!("limit is 1"));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let got = pool.acquire(|| panic!("limit is 1"));
                tx.send(*got).unwrap();
            });
            // The waiter cannot have an instance while this one is held. (The timeout only
            // bounds how long the test looks for a wrong answer; no verdict depends on it.)
            assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
            drop(held);
            assert_eq!(rx.recv().unwrap(), 7);
        });
    }

    #[test]
    fn a_failure_to_make_one_stops_growth_and_the_caller_waits_for_an_existing_one() {
        let pool = InstancePool::new(0, 4);
        let held = pool.acquire(|| panic!("the first is idle"));
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let got = pool.acquire(|| Err("no temporary folder".to_owned()));
                tx.send(*got).unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
            drop(held);
            assert_eq!(rx.recv().unwrap(), 0);
        });
        assert_eq!(pool.made(), 1);
        assert_eq!(
            pool.growth_stopped().as_deref(),
            Some("no temporary folder")
        );
        // No further attempt is made.
        let a = pool.acquire(|| panic!("growth stopped"));
        assert_eq!(*a, 0);
    }

    #[test]
    fn in_a_forked_child_instances_held_by_the_parents_threads_are_not_waited_for() {
        let pool = InstancePool::new(0, 2);
        let generation = gilkit::fork_generation();
        let a = pool.acquire_in(generation, || panic!("the first is idle"));
        let b = pool.acquire_in(generation, || Ok(1));
        // Threads of the parent hold both at the fork; in the child they never come back, so
        // the pool makes new ones up to its limit instead of waiting.
        std::mem::forget((a, b));
        let c = pool.acquire_in(generation + 1, || Ok(2));
        let d = pool.acquire_in(generation + 1, || Ok(3));
        assert_eq!((*c, *d), (2, 3));
        assert_eq!(pool.made(), 2);
        drop(c);
        assert_eq!(
            *pool.acquire_in(generation + 1, || panic!("one is idle")),
            2
        );
    }

    #[test]
    fn an_instance_comes_back_when_its_user_panics() {
        let pool = InstancePool::new(0, 1);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = pool.acquire(|| panic!("limit is 1"));
            panic!("the user of the instance fails");
        }));
        assert!(result.is_err());
        assert_eq!(*pool.acquire(|| panic!("limit is 1")), 0);
    }
}
