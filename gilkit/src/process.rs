//! The process layer: which process this is (the fork generation), what must happen around
//! `fork()` (registered hooks), and whether the interpreter is exiting.
//!
//! Everything in gilkit that keeps threads or per-process state asks this module, and this module
//! asks nothing of the rest of gilkit (it imports no other gilkit module), so there is exactly one
//! fork mechanism and no import cycle around it.
//!
//! # How it works
//! - **Fork generation.** [`generation`] is a counter bumped by the one `pthread_atfork` child
//!   handler of the process. An owner of threads records the generation when it starts them; when
//!   it later finds a different generation, it is in a forked child, where those threads do not
//!   exist (only the thread that called `fork()` is copied), and it starts afresh. Nobody resets
//!   anybody else's statics: each owner answers "am I in a forked child?" for itself with one
//!   comparison. The handler is installed by the first call to [`generation`] (or to
//!   [`register_fork_hooks`]), that is, before any owner can have recorded a generation.
//! - **Fork hooks.** The few owners that must act *around* `fork()` itself (holding a lock across
//!   it so that the child does not inherit it locked by a thread that does not exist there)
//!   register [`ForkHooks`]. `prepare` hooks run in the parent before the fork, in reverse
//!   registration order (as `pthread_atfork` does: the last registered lock is taken first);
//!   `parent` and `child` hooks after it, in registration order. The hook list's own lock is held
//!   from `prepare` until after the hooks in parent and child, so no registration races a fork.
//!   A hook must not register hooks or fork.
//! - **Interpreter exit.** [`mark_exiting`] is called by the Python exit hook before the runtime
//!   shuts down; [`is_exiting`] is how gilkit's threads know not to attach any more.
//!
//! # Memory ordering
//! `GENERATION` is written only by the child handler, while the child has a single thread, with
//! `Release`, and read with `Acquire`. In the child, the only thread is the one that ran the
//! handler, so program order alone makes the new value visible to it; `Release`/`Acquire` only
//! matters for threads the child starts afterwards, which thread creation already synchronises, so
//! the pair is a belt-and-braces choice that costs nothing on x86 and little elsewhere. What a
//! reader does with the answer never depends on other memory written by the handler.
//! `EXITING` is set with `Release` by the exit hook and read with `Acquire`, so a thread that sees
//! it also sees everything the exit hook did before setting it (the interpreter is finalizing).
//! The hook list is behind a mutex.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Functions to run around `fork()`; see the [module doc](self).
///
/// Each is a plain function (no captures): it runs inside `fork()`, where only async-signal-safe
/// work is strictly allowed, so hooks should do no more than take or release a lock and store a
/// value.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ForkHooks {
    /// In the parent, before the fork.
    pub(crate) prepare: Option<fn()>,
    /// In the parent, after the fork.
    pub(crate) parent: Option<fn()>,
    /// In the child, after the fork (the generation is already bumped).
    pub(crate) child: Option<fn()>,
}

static GENERATION: AtomicU64 = AtomicU64::new(0);
static EXITING: AtomicBool = AtomicBool::new(false);
static HOOKS: Mutex<Vec<ForkHooks>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// This process's fork generation: 0 in the process that loaded gilkit, one more in each
/// `fork()` child than in its parent. Compare it with a recorded value to know whether threads
/// started then exist in this process.
///
/// Exported as [`crate::fork_generation`] for extensions' own per-process state.
///
/// Does not touch the GIL. Cheap: a `Once` check and one atomic load.
#[inline]
#[must_use]
pub fn generation() -> u64 {
    install();
    GENERATION.load(Ordering::Acquire)
}

/// Registers hooks to run around every later `fork()` of this process.
///
/// Registered hooks stay for the life of the process (a child inherits them too).
pub(crate) fn register_fork_hooks(hooks: ForkHooks) {
    install();
    HOOKS.lock().push(hooks);
}

/// Marks the interpreter as exiting: from now on [`crate::try_attach`] returns `None`.
/// The Python exit hook calls this before the runtime shuts down.
pub fn mark_exiting() {
    EXITING.store(true, Ordering::Release);
}

/// Whether the interpreter is exiting (see [`mark_exiting`]).
#[inline]
#[must_use]
pub fn is_exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` with no arguments, as pthread_atfork
        // requires, and stay valid for the life of the process (they are plain functions).
        let rc = unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
        // Without the handlers a forked child could hang; that is worth knowing at once.
        assert_eq!(rc, 0, "pthread_atfork failed with {rc}");
    });
}

extern "C" fn before_fork() {
    // Held across fork() (released in the after-fork handlers): no registration races a fork,
    // and the child does not inherit the list locked by a thread that does not exist there.
    let hooks = HOOKS.lock();
    for hook in hooks.iter().rev().filter_map(|h| h.prepare) {
        hook();
    }
    std::mem::forget(hooks);
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: `before_fork` locked HOOKS on this very thread and forgot the guard; nothing else
    // can have released it since. The guard made here is dropped below, releasing it.
    let hooks = unsafe { HOOKS.make_guard_unchecked() };
    for hook in hooks.iter().filter_map(|h| h.parent) {
        hook();
    }
}

extern "C" fn after_fork_in_child() {
    // The child has a single thread (this one): nothing else reads the counter meanwhile.
    GENERATION.fetch_add(1, Ordering::Release);
    // SAFETY: `before_fork` locked HOOKS on the thread that forked, which is this thread in the
    // child, and forgot the guard. The guard made here is dropped below, releasing it.
    let hooks = unsafe { HOOKS.make_guard_unchecked() };
    for hook in hooks.iter().filter_map(|h| h.child) {
        hook();
    }
}

/// Test support: forking from a unit test.
#[cfg(test)]
pub(crate) mod testing {
    /// Forks; the child runs `child` and exits with its code. Returns the child's exit code.
    pub(crate) fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs Rust code that reads atomics and allocates (glibc's
        // allocator is fork-safe) and leaves with `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
            // SAFETY: `_exit` ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status}");
        libc::WEXITSTATUS(status)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::in_forked_child;
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static PREPARED: AtomicUsize = AtomicUsize::new(0);
    static IN_PARENT: AtomicUsize = AtomicUsize::new(0);
    static IN_CHILD: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_child_has_the_next_generation_and_runs_the_hooks() {
        register_fork_hooks(ForkHooks {
            prepare: Some(|| {
                PREPARED.fetch_add(1, Ordering::Relaxed);
            }),
            parent: Some(|| {
                IN_PARENT.fetch_add(1, Ordering::Relaxed);
            }),
            child: Some(|| {
                IN_CHILD.fetch_add(1, Ordering::Relaxed);
            }),
        });
        let before = generation();
        let prepared = PREPARED.load(Ordering::Relaxed);
        let in_parent = IN_PARENT.load(Ordering::Relaxed);
        let in_child = IN_CHILD.load(Ordering::Relaxed);
        let code = in_forked_child(|| {
            let ok = generation() == before + 1
                && IN_CHILD.load(Ordering::Relaxed) == in_child + 1
                && IN_PARENT.load(Ordering::Relaxed) == in_parent;
            // A grandchild is one generation further, and hooks still run (the lock was released).
            let nested = in_forked_child(|| i32::from(generation() != before + 2));
            if ok && nested == 0 { 0 } else { 1 }
        });
        assert_eq!(code, 0);
        // Other tests may fork meanwhile, so "at least".
        assert!(PREPARED.load(Ordering::Relaxed) > prepared);
        assert!(IN_PARENT.load(Ordering::Relaxed) > in_parent);
        assert_eq!(generation(), before, "the parent keeps its generation");
        // The list lock was released in the parent: registering again does not deadlock.
        register_fork_hooks(ForkHooks::default());
    }

    #[test]
    fn exiting_is_sticky() {
        // Only checked in a child: marking the test process as exiting would affect other tests.
        let code = in_forked_child(|| {
            let before = is_exiting();
            mark_exiting();
            i32::from(before || !is_exiting())
        });
        assert_eq!(code, 0);
    }
}
