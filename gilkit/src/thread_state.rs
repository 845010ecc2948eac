//! One Python thread state per gilkit thread, kept for the thread's life.
//!
//! PyO3's `Python::attach` on a thread that has no Python thread state creates one
//! (`PyGILState_Ensure`) and destroys it again when the outermost attach ends
//! (`PyGILState_Release`). On a thread that attaches once per callback, every callback therefore
//! runs in a brand-new thread state: `threading.local` values set by one callback are gone in the
//! next (PyO3 issues #5467, #2495), and each attach pays for creating and clearing a thread state.
//!
//! gilkit's own threads (the pool's helpers, which also run the `Executor`, `GilBatcher`'s worker
//! and the owned interruptible form, and the shared tokio runtime's worker and blocking threads)
//! instead keep one thread state, detached between uses:
//!
//! - [`keep`] (called by the pool before each job and by the runtime when a thread starts) creates
//!   the thread's state once with `PyThreadState_New`, which binds it to the thread as its
//!   "GIL state" thread state with a gilstate counter of 1, *without* attaching: it neither takes
//!   nor waits for the GIL, so a job that never touches Python never waits for the GIL either
//!   (a caller holding the GIL while it waits for pool work cannot deadlock with it). Later, every
//!   `Python::attach` on the thread finds that state through `PyGILState_Ensure` and attaches it
//!   (counter 1 -> 2), and its release detaches it again (2 -> 1) instead of destroying it.
//! - [`release`] (called when a pool helper or a runtime thread ends) re-acquires the GIL with the
//!   kept state (`PyEval_RestoreThread`) and gives up the last gilstate reference
//!   (`PyGILState_Release`, 1 -> 0), which clears the state (running the destructors of its
//!   `threading.local` values) and deletes it, releasing the GIL. It does so only in the process
//!   that created the state and while the interpreter is running and not exiting; otherwise the
//!   state is leaked on purpose (see [Exit and fork](#exit-and-fork)).
//!
//! Neither function holds the GIL when it returns. [`keep`] never touches the GIL; [`release`]
//! waits for it (the thread is ending, and only a thread with a kept state does).
//!
//! # Exit and fork
//! - **Interpreter exit.** Once gilkit's exit hook has marked the interpreter as exiting (see the
//!   `process` module), or once the interpreter is finalizing, no state is created and none is
//!   released: attaching then can hang the thread for good (CPython parks a thread that attaches
//!   during finalization) and the interpreter frees every thread state itself when it is torn down.
//!   Leaking one small allocation per thread at exit is the price of never touching a dying
//!   interpreter.
//! - **Fork.** A forked child has none of the parent's gilkit threads, so their kept states are
//!   only memory CPython's after-fork code deletes; nothing but those threads' own thread-locals
//!   refers to them, so nothing in the child can reach them. The one thread the child has is the
//!   one that forked: its kept state (if it is a gilkit thread) is recorded with the fork
//!   generation it was created in, and a thread whose generation differs leaves the state alone
//!   at its end instead of releasing it (whether CPython kept it depends on how the fork was made).
//! - **Free-threaded builds** have no GIL: "attach" and "detach" are CPython's names for the same
//!   calls there, and the sequence above is the same.
//! - **`abi3` builds** cannot create a thread state without attaching (`PyInterpreterState_Main`
//!   is not in the stable ABI), so there [`keep`] and [`release`] do nothing and gilkit's threads
//!   behave as any Rust thread under PyO3 (a fresh thread state per outermost attach).
//!
//! Measured: `benches/results/pool.md`, section 3 (attach/detach round trip, before and after).

#[cfg(not(any(Py_LIMITED_API, PyPy)))]
mod kept {
    use std::cell::Cell;
    use std::ptr::NonNull;

    use pyo3::ffi;

    use crate::process;

    /// This thread's kept state and the fork generation it was created in.
    #[derive(Clone, Copy)]
    struct Kept {
        tstate: NonNull<ffi::PyThreadState>,
        generation: u64,
    }

    thread_local! {
        /// Only ever touched by its own thread (plain `Cell`): no ordering to justify.
        static KEPT: Cell<Option<Kept>> = const { Cell::new(None) };
    }

    #[cfg(not(Py_3_13))]
    unsafe extern "C" {
        /// CPython 3.9 to 3.12's name for `Py_IsFinalizing` (exported, not in the limited API).
        fn _Py_IsFinalizing() -> std::ffi::c_int;
    }

    /// Whether a thread state may be created or released now: the interpreter runs, is not being
    /// torn down, and gilkit's exit hook has not run.
    fn interpreter_running() -> bool {
        // SAFETY: `Py_IsInitialized` has no preconditions (it may be called before
        // initialization and without an attached thread state).
        if unsafe { ffi::Py_IsInitialized() } == 0 || process::is_exiting() {
            return false;
        }
        // SAFETY: both read a runtime field; no thread state is needed.
        #[cfg(Py_3_13)]
        let finalizing = unsafe { ffi::Py_IsFinalizing() } != 0;
        // SAFETY: as above.
        #[cfg(not(Py_3_13))]
        let finalizing = unsafe { _Py_IsFinalizing() } != 0;
        !finalizing
    }

    pub(crate) fn keep() {
        if KEPT.get().is_none() {
            create();
        }
    }

    #[cold]
    fn create() {
        if !interpreter_running() {
            return;
        }
        // SAFETY: the interpreter is initialized; this reads the calling thread's gilstate slot
        // and needs no attached thread state.
        if !unsafe { ffi::PyGILState_GetThisThreadState() }.is_null() {
            // The thread already has a state it did not get from here (someone else's to manage).
            return;
        }
        // SAFETY: `PyInterpreterState_Main` reads a runtime field (no thread state needed) and the
        // interpreter is initialized, so it is not null. `PyThreadState_New` is documented not to
        // need the GIL; it binds the new state to the calling thread and, as the thread has no
        // gilstate state (checked above), makes it the thread's gilstate state with counter 1,
        // which `PyGILState_Ensure`/`Release` pairs then never take to 0. It does not attach.
        let tstate = unsafe { ffi::PyThreadState_New(ffi::PyInterpreterState_Main()) };
        // Null only when out of memory: the thread then simply runs as before.
        if let Some(tstate) = NonNull::new(tstate) {
            KEPT.set(Some(Kept {
                tstate,
                generation: process::generation(),
            }));
        }
    }

    pub(crate) fn release() {
        let Some(kept) = KEPT.take() else {
            return;
        };
        if kept.generation != process::generation() || !interpreter_running() {
            // Leaked on purpose: see "Exit and fork" in the module doc.
            return;
        }
        // SAFETY: `kept.tstate` was created on this thread in this process and is this thread's
        // gilstate state; the thread is detached (jobs and runtime tasks leave it so: PyO3's
        // attaches are scoped), so attaching it is the one valid way to re-enter. The interpreter
        // was running a moment ago; if finalization starts in between, pyo3-ffi's
        // `PyEval_RestoreThread` parks the thread instead of unwinding through Rust frames.
        // `PyGILState_Release(UNLOCKED)` then gives up the reference `PyThreadState_New` made
        // (counter 1 -> 0): CPython clears the state (running its thread-locals' destructors with
        // the state attached) and deletes it, which also releases the GIL.
        unsafe {
            ffi::PyEval_RestoreThread(kept.tstate.as_ptr());
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_UNLOCKED);
        }
    }

    #[cfg(test)]
    pub(crate) fn is_kept() -> bool {
        KEPT.get().is_some()
    }
}

#[cfg(any(Py_LIMITED_API, PyPy))]
mod kept {
    pub(crate) fn keep() {}
    pub(crate) fn release() {}
    #[cfg(test)]
    pub(crate) fn is_kept() -> bool {
        false
    }
}

/// Gives the calling gilkit-owned thread its own Python thread state, detached, unless it has
/// one already or the interpreter is not running (not initialized yet, finalizing, or exiting).
///
/// Call it on a thread gilkit owns before it runs work that may attach. Does not touch the GIL
/// (never waits for it). Cheap after the first call on a thread: one thread-local read.
pub(crate) fn keep() {
    kept::keep();
}

/// Clears and deletes the calling thread's kept state; call it as the thread's last act.
///
/// Re-acquires the GIL to do so (and releases it again); does nothing if the thread keeps no
/// state, or leaks the state (touching nothing) in a forked child or once the interpreter is
/// exiting or finalizing.
pub(crate) fn release() {
    kept::release();
}

/// Whether the calling thread keeps a Python thread state.
#[cfg(test)]
pub(crate) fn is_kept() -> bool {
    kept::is_kept()
}

#[cfg(all(test, not(any(Py_LIMITED_API, PyPy))))]
mod tests {
    use super::*;
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    /// Runs `f` on a fresh thread that keeps its state, as gilkit's threads do.
    fn on_keeping_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                keep();
                let out = f();
                release();
                out
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn a_kept_state_survives_between_attaches_and_is_released_at_the_end() {
        Python::initialize();
        let (kept, same, dict_survives, after) = on_keeping_thread(|| {
            let kept = is_kept();
            // `PyThreadState_GetDict` is per thread state: a value stored in one attach is still
            // there in the next only if the state was not destroyed in between.
            let first = Python::attach(|py| {
                let dict = thread_dict(py);
                dict.set_item("gilkit-test", 42).unwrap();
                // SAFETY: attached; returns the calling thread's state.
                unsafe { pyo3::ffi::PyThreadState_Get() as usize }
            });
            let (second, value) = Python::attach(|py| {
                let value: Option<i32> = thread_dict(py)
                    .get_item("gilkit-test")
                    .unwrap()
                    .map(|v| v.extract().unwrap());
                // SAFETY: as above.
                (unsafe { pyo3::ffi::PyThreadState_Get() as usize }, value)
            });
            release();
            (kept, first == second, value == Some(42), is_kept())
        });
        assert!(kept, "the thread keeps a state");
        assert!(same, "both attaches used the same thread state");
        assert!(dict_survives, "the thread state's dict survived the detach");
        assert!(!after, "released");
    }

    #[test]
    fn without_keeping_each_attach_gets_a_new_state() {
        // The behaviour gilkit changes, checked so that the test above cannot pass vacuously.
        Python::initialize();
        let survives = std::thread::scope(|s| {
            s.spawn(|| {
                Python::attach(|py| thread_dict(py).set_item("gilkit-test", 1).unwrap());
                Python::attach(|py| thread_dict(py).contains("gilkit-test").unwrap())
            })
            .join()
            .unwrap()
        });
        assert!(!survives);
    }

    #[test]
    fn keep_is_idempotent_and_leaves_the_thread_detached() {
        Python::initialize();
        on_keeping_thread(|| {
            keep();
            keep();
            // SAFETY: no preconditions once initialized; true only if this thread is attached.
            assert_eq!(unsafe { pyo3::ffi::PyGILState_Check() }, 0);
            assert!(is_kept());
        });
    }

    #[test]
    fn a_forked_child_leaves_the_parents_kept_state_alone() {
        Python::initialize();
        on_keeping_thread(|| {
            assert!(is_kept());
            // This thread forks while detached: in the child its kept state belongs to another
            // generation, so release must neither attach nor release it (either could hang or
            // crash in a child whose interpreter was not told about the fork).
            let code = crate::process::testing::in_forked_child(|| {
                // A regression would hang (waiting for a GIL held by a thread that does not exist
                // here): SIGALRM ends the child instead, which fails the assertion below.
                // SAFETY: `alarm` only arms a timer for this (single-threaded) child.
                unsafe { libc::alarm(30) };
                release();
                i32::from(is_kept())
            });
            assert_eq!(code, 0);
            assert!(is_kept(), "the parent's state is untouched");
        });
    }

    fn thread_dict(py: Python<'_>) -> Bound<'_, PyDict> {
        // SAFETY: attached (we hold `py`); the dict is borrowed from the thread state, which
        // outlives the `Bound` made from a new strong reference.
        unsafe {
            Bound::from_borrowed_ptr(py, pyo3::ffi::PyThreadState_GetDict()).cast_into_unchecked()
        }
    }
}
