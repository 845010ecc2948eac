//! Ordered streaming (`gilkit::batch::ordered`) with workers made slow by the test hooks, so what
//! the consumer does when the worker is slow is checked without relying on timing; and the
//! spare-core rule with a set number of cores. Needs `--features test-hooks` (the workspace build
//! has it through `tests/testext`).
#![cfg(feature = "test-hooks")]

use std::convert::Infallible;
use std::sync::Mutex;

use gilkit::batch::Outcome;
use gilkit::batch::ordered::test_hooks::{self, WorkerMode};
use gilkit::batch::ordered::{self, Consumer, Parts, Stats};
use pyo3::prelude::*;

/// The hooks are process-wide: one test at a time.
static HOOKS: Mutex<()> = Mutex::new(());

/// Reads a stream of `count` parts (part `k` is `k`) with workers in `mode`, `cores` assumed;
/// checks the order, and returns the stats.
fn read(count: usize, mode: WorkerMode, cores: usize) -> Stats {
    test_hooks::set_worker_mode(mode);
    test_hooks::set_cores(cores);
    let _consuming = Consumer::enter();
    let mut stats = Stats::default();
    let ahead = ordered::spare_core();
    let mut parts = Parts::new(count, ahead, &mut stats, Ok::<_, Infallible>);
    let taken: Vec<_> =
        Python::attach(|py| std::iter::from_fn(|| parts.next(py, &mut stats).unwrap()).collect());
    drop(parts);
    test_hooks::set_worker_mode(WorkerMode::Normal);
    test_hooks::set_cores(0);
    assert_eq!(taken, (0..count).map(Outcome::Ok).collect::<Vec<_>>());
    assert_eq!(stats.parts_ahead + stats.parts_inline, count as u64);
    stats
}

#[test]
fn the_caller_makes_every_part_no_worker_started_and_never_waits() {
    let _hooks = HOOKS.lock().unwrap();
    let stats = read(500, WorkerMode::Idle, 64);
    assert_eq!(stats.workers, 1);
    assert_eq!((stats.parts_ahead, stats.parts_inline), (0, 500));
    assert_eq!((stats.waits, stats.waited), (0, std::time::Duration::ZERO));
}

#[test]
fn the_caller_waits_only_for_the_part_the_worker_holds() {
    let _hooks = HOOKS.lock().unwrap();
    // The lagging worker claims one part and holds it until every other is claimed: the caller
    // makes all the others (also those after the held one) and waits once, for that one.
    let stats = read(500, WorkerMode::Lagging, 64);
    assert_eq!(stats.workers, 1);
    assert!(stats.parts_ahead <= 1, "{stats:?}");
    assert_eq!(stats.parts_inline, 500 - stats.parts_ahead);
    assert!(stats.waits <= stats.parts_ahead, "{stats:?}");
}

#[test]
fn a_stream_dropped_with_a_slow_worker_leaves_none_running() {
    let _hooks = HOOKS.lock().unwrap();
    for mode in [WorkerMode::Idle, WorkerMode::Lagging, WorkerMode::Normal] {
        test_hooks::set_worker_mode(mode);
        let mut stats = Stats::default();
        let mut parts = Parts::new(10_000, true, &mut stats, Ok::<_, Infallible>);
        let first = Python::attach(|py| parts.next(py, &mut stats).unwrap());
        assert_eq!(first, Some(Outcome::Ok(0)));
        drop(parts);
        assert_eq!(ordered::workers_running(), 0, "{mode:?}");
    }
    test_hooks::set_worker_mode(WorkerMode::Normal);
}

#[test]
fn a_worker_starts_only_when_a_core_is_spare() {
    let _hooks = HOOKS.lock().unwrap();
    test_hooks::set_cores(2);
    let one = Consumer::enter();
    assert!(
        ordered::spare_core(),
        "one consumer on two cores leaves one"
    );
    let two = Consumer::enter();
    assert!(
        !ordered::spare_core(),
        "two consumers on two cores leave none"
    );
    drop(two);
    drop(one);
    test_hooks::set_cores(0);
    // Without a spare core the caller asks for no worker, and makes every part in one release.
    let stats = read(300, WorkerMode::Normal, 1);
    assert_eq!(
        (stats.workers, stats.parts_inline, stats.waits),
        (0, 300, 0)
    );
}
