//! Model-checks the semaphore's queue bound with loom: the interleavings of three tasks entering and
//! leaving a bounded (and an unbounded) queue.
//!
//! This compiles `gilkit/src/semaphore/queue_bound.rs` itself against loom's atomics (the module
//! takes its atomics from `super::atomic`), so no `--cfg loom` build of gilkit and its dependencies
//! is needed, and the model runs with the ordinary test suite.

#[path = "../src/semaphore/queue_bound.rs"]
#[allow(dead_code)]
mod queue_bound;

mod atomic {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};
}

use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use loom::sync::atomic::Ordering::SeqCst;
use loom::thread;
use queue_bound::QueueBound;

/// One task: enter, check the invariant while inside, leave. Returns whether it was admitted.
fn task(bound: &QueueBound, inside: &AtomicUsize) -> bool {
    match bound.enter() {
        Ok(slot) => {
            let now = inside.fetch_add(1, SeqCst) + 1;
            if let Some(max) = bound.max() {
                assert!(now <= max, "{now} tasks inside a queue bounded at {max}");
            }
            inside.fetch_sub(1, SeqCst);
            drop(slot);
            true
        }
        Err(queue_len) => {
            assert_eq!(Some(queue_len), bound.max(), "refused below the bound");
            false
        }
    }
}

/// Three tasks (two spawned threads and the model's own), every interleaving with up to two
/// preemptions (exhaustive within that bound, which already catches a check-then-increment race).
fn run_model(max: Option<usize>) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let bound = Arc::new(QueueBound::new(max));
        // Tasks holding a slot right now, counted independently of the bound's own counter.
        let inside = Arc::new(AtomicUsize::new(0));
        let spawned: Vec<_> = (0..2)
            .map(|_| {
                let (bound, inside) = (Arc::clone(&bound), Arc::clone(&inside));
                thread::spawn(move || task(&bound, &inside))
            })
            .collect();
        let mut admitted = usize::from(task(&bound, &inside));
        for t in spawned {
            admitted += usize::from(t.join().unwrap());
        }
        assert!(admitted >= 1, "somebody always gets in");
        if max.is_none() {
            assert_eq!(admitted, 3, "an unbounded queue refuses nobody");
        }
        assert_eq!(bound.len(), 0, "every slot was given back");
    });
}

#[test]
fn a_bounded_queue_never_holds_more_than_its_bound_and_empties() {
    run_model(Some(2));
}

#[test]
fn a_bound_of_one_admits_one_at_a_time() {
    run_model(Some(1));
}

#[test]
fn an_unbounded_queue_admits_everyone_and_empties() {
    run_model(None);
}
