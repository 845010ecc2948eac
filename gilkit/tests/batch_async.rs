//! Async mode of `gilkit::batch`: order, the in-flight bound, lazy creation, per-item outcomes,
//! deadline and cancellation (in-flight futures dropped), progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gilkit::CancelToken;
use gilkit::batch::{self, BatchOptions, Outcome, Progress, StopReason};

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts futures alive now, and the most ever alive at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    dropped_unfinished: AtomicUsize,
}

struct Guard<'a> {
    counter: &'a InFlight,
    finished: bool,
}

impl<'a> Guard<'a> {
    fn new(counter: &'a InFlight) -> Self {
        let now = counter.now.fetch_add(1, Ordering::SeqCst) + 1;
        counter.most.fetch_max(now, Ordering::SeqCst);
        Self {
            counter,
            finished: false,
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.counter.now.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.counter
                .dropped_unfinished
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn order_is_preserved_for_100_000_futures_with_random_durations() {
    let items: Vec<u64> = (0..100_000).collect();
    let options = BatchOptions {
        max_concurrency: Some(1_000),
        ..BatchOptions::default()
    };
    let report = runtime().block_on(batch::run_async(items, &options, |i| async move {
        match mix(i) % 8 {
            0 => tokio::time::sleep(Duration::from_micros(mix(i) % 3_000)).await,
            1 | 2 => tokio::task::yield_now().await,
            _ => {}
        }
        Ok::<_, ()>(i * 7)
    }));
    for (i, outcome) in report.outcomes.iter().enumerate() {
        assert_eq!(*outcome, Outcome::Ok(i as u64 * 7), "item {i}");
    }
    assert_eq!(report.stats.succeeded, 100_000);
    assert_eq!(report.stats.concurrency, 1_000);
}

#[test]
fn at_most_max_concurrency_futures_exist_and_the_window_is_used() {
    let counter = InFlight::default();
    let created = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let options = BatchOptions {
        max_concurrency: Some(16),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..400).collect();
    let report = runtime().block_on(batch::run_async(items, &options, |i| {
        // Futures are made lazily: never more than the window ahead of the finished ones.
        let made = created.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            made <= finished.load(Ordering::SeqCst) + 16,
            "created {made} up front"
        );
        let counter = &counter;
        let finished = &finished;
        async move {
            let mut guard = Guard::new(counter);
            tokio::time::sleep(Duration::from_micros(200 + mix(i) % 800)).await;
            guard.finished = true;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(i)
        }
    }));
    assert!(report.all_ok());
    assert_eq!(counter.most.load(Ordering::SeqCst), 16);
    assert_eq!(counter.dropped_unfinished.load(Ordering::SeqCst), 0);
}

#[test]
fn errors_and_panics_stay_at_their_positions() {
    let items: Vec<u64> = (0..2_000).collect();
    let options = BatchOptions {
        max_concurrency: Some(50),
        ..BatchOptions::default()
    };
    // Deliberate panics print through the default hook; there are only two.
    let report = runtime().block_on(batch::run_async(items, &options, |i| {
        if i == 1_500 {
            panic!("deliberate panic making the future of {i}");
        }
        async move {
            tokio::time::sleep(Duration::from_micros(mix(i) % 500)).await;
            match i {
                777 => panic!("deliberate panic in the future of {i}"),
                i if mix(i).is_multiple_of(97) => Err(format!("error at {i}")),
                i => Ok(i),
            }
        }
    }));
    for (i, outcome) in (0..2_000_u64).zip(&report.outcomes) {
        let expected = match i {
            1_500 => Outcome::Panicked(format!("deliberate panic making the future of {i}")),
            777 => Outcome::Panicked(format!("deliberate panic in the future of {i}")),
            i if mix(i).is_multiple_of(97) => Outcome::Err(format!("error at {i}")),
            i => Outcome::Ok(i),
        };
        assert_eq!(*outcome, expected, "item {i}");
    }
    assert_eq!(report.stats.panicked, 2);
    assert!(report.stats.failed > 5);
}

#[test]
fn the_deadline_keeps_finished_results_and_drops_in_flight_futures() {
    let counter = InFlight::default();
    let options = BatchOptions {
        max_concurrency: Some(8),
        deadline: Some(Instant::now() + Duration::from_millis(500)),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..200).collect();
    let report = runtime().block_on(batch::run_async(items, &options, |i| {
        let counter = &counter;
        async move {
            let mut guard = Guard::new(counter);
            // Even items finish at once; odd ones would sleep for two minutes.
            if i % 2 == 1 {
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            guard.finished = true;
            Ok::<_, ()>(i)
        }
    }));
    let stats = &report.stats;
    assert_eq!(stats.stopped, Some(StopReason::Deadline));
    assert!(stats.succeeded >= 1, "{stats:?}");
    assert_eq!(stats.succeeded + stats.timed_out, 200);
    for (i, outcome) in report.outcomes.iter().enumerate() {
        assert!(matches!(outcome, Outcome::Ok(v) if *v == i as u64) || outcome.is_timed_out());
    }
    // The window filled with sleepers; the deadline dropped all of them (had the executor waited
    // for them, the test would not end, and they would have finished).
    assert_eq!(counter.now.load(Ordering::SeqCst), 0);
    assert_eq!(counter.dropped_unfinished.load(Ordering::SeqCst), 8);
}

#[test]
fn an_item_over_its_timeout_is_timed_out_and_the_others_are_not() {
    let options = BatchOptions {
        max_concurrency: Some(4),
        item_timeout: Some(Duration::from_secs(1)),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..20).collect();
    // The slow items would sleep far past the timeout; the others only yield once, so only a
    // runtime stalled for a whole second could time one of them out.
    let report = runtime().block_on(batch::run_async(items, &options, |i| async move {
        if i % 5 == 2 {
            tokio::time::sleep(Duration::from_secs(120)).await;
        } else {
            tokio::task::yield_now().await;
        }
        Ok::<_, ()>(i)
    }));
    for (i, outcome) in report.outcomes.iter().enumerate() {
        if i % 5 == 2 {
            assert!(outcome.is_timed_out(), "item {i}");
        } else {
            assert_eq!(*outcome, Outcome::Ok(i as u64));
        }
    }
    assert_eq!(report.stats.stopped, None);
}

#[test]
fn cancellation_drops_in_flight_futures_and_keeps_what_finished() {
    let counter = InFlight::default();
    let token = CancelToken::new();
    let options = BatchOptions {
        max_concurrency: Some(10),
        token: Some(token.clone()),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..1_000).collect();
    let report = runtime().block_on(batch::run_async(items, &options, |i| {
        let (counter, token) = (&counter, &token);
        async move {
            let mut guard = Guard::new(counter);
            if i == 100 {
                // Claimed once 91 items have finished, with the window of 10 full.
                token.cancel();
            }
            tokio::time::sleep(Duration::from_millis(5 + mix(i) % 10)).await;
            guard.finished = true;
            Ok::<_, ()>(i)
        }
    }));
    let stats = &report.stats;
    assert_eq!(stats.stopped, Some(StopReason::Cancelled));
    // At least the 91 that finished before item 100 was claimed; at most those claimed before it.
    assert!((91..=109).contains(&stats.succeeded), "{stats:?}");
    assert_eq!(stats.succeeded + stats.cancelled, 1_000);
    assert_eq!(counter.now.load(Ordering::SeqCst), 0);
    // The window was full when the token fired: its futures were dropped unfinished. (One may be
    // fresh from a refill and never polled, so it never made its guard: 9 or 10.)
    let dropped = counter.dropped_unfinished.load(Ordering::SeqCst);
    assert!((9..=10).contains(&dropped), "{dropped} futures dropped");
}

#[test]
fn an_already_cancelled_token_starts_nothing() {
    let token = CancelToken::new();
    token.cancel();
    let options = BatchOptions {
        token: Some(token),
        ..BatchOptions::default()
    };
    let report = runtime().block_on(batch::run_async(vec![1, 2, 3], &options, |i| async move {
        Ok::<_, ()>(i)
    }));
    assert_eq!(report.stats.cancelled, 3);
}

#[test]
fn progress_counts_add_up() {
    let progress = Progress::new();
    let options = BatchOptions {
        max_concurrency: Some(32),
        progress: Some(progress.clone()),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..5_000).collect();
    let watched = Arc::new(AtomicUsize::new(0));
    let report = runtime().block_on(batch::run_async(items, &options, |i| {
        let progress = progress.clone();
        let watched = watched.clone();
        async move {
            // Progress never runs ahead of the futures that finished.
            assert!(progress.finished() <= i as usize);
            watched.fetch_max(progress.finished(), Ordering::Relaxed);
            tokio::task::yield_now().await;
            Ok::<_, ()>(i)
        }
    }));
    assert!(report.all_ok());
    assert_eq!((progress.finished(), progress.total()), (5_000, 5_000));
    assert!(watched.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_batch_future_is_send_when_its_parts_are() {
    fn send<T: Send>(_: &T) {}
    let options = BatchOptions::default();
    let future = batch::run_async(vec![1_u32], &options, |i| async move { Ok::<_, ()>(i) });
    send(&future);
}

#[test]
fn a_batch_of_instant_futures_lets_other_tasks_run() {
    // One thread: another task can only run when the batch's task yields.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let progress = Progress::new();
    let options = BatchOptions {
        progress: Some(progress.clone()),
        ..BatchOptions::default()
    };
    let seen_at = runtime.block_on(async {
        let watcher = {
            let progress = progress.clone();
            tokio::spawn(async move { progress.finished() })
        };
        let report = batch::run_async((0..100_000).collect(), &options, |i: u64| async move {
            Ok::<_, ()>(i)
        })
        .await;
        assert!(report.all_ok());
        watcher.await.unwrap()
    });
    assert!(seen_at < 100_000, "the batch never yielded to the runtime");
}
