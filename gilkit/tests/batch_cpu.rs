//! CPU mode of `gilkit::batch`: order, per-item outcomes, deadline, timeout, cancellation,
//! progress and statistics.

use std::collections::HashSet;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use gilkit::CancelToken;
use gilkit::batch::{self, BatchOptions, Outcome, Progress, StopReason};

/// splitmix64: a deterministic, seedable pseudo-random sequence (no dependency needed for tests).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Busy work of `rounds` steps, kept by the optimiser.
fn spin(rounds: u64) -> u64 {
    (0..rounds).fold(0_u64, |acc, k| {
        std::hint::black_box(acc.wrapping_add(mix(k)))
    })
}

/// Deliberate panics in these tests would flood stderr: keep the default hook for the others.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with("deliberate") {
                default(info);
            }
        }));
    });
}

/// Cancels `token` from another thread after `delay`.
fn cancel_after(token: &CancelToken, delay: Duration) -> thread::JoinHandle<()> {
    let token = token.clone();
    thread::spawn(move || {
        thread::sleep(delay);
        token.cancel();
    })
}

#[test]
fn order_is_preserved_for_100_000_items_with_random_durations() {
    let items: Vec<u64> = (0..100_000).collect();
    // Oversubscribe the 2 CPUs so workers interleave and are preempted mid-item.
    let options = BatchOptions {
        workers: Some(4),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| {
        let r = mix(i);
        if r.is_multiple_of(500) {
            thread::sleep(Duration::from_micros(r % 300));
        } else {
            spin(r % 400);
        }
        Ok::<_, ()>(i * 3 + 1)
    });
    assert_eq!(report.outcomes.len(), items.len());
    for (i, outcome) in report.outcomes.iter().enumerate() {
        assert_eq!(*outcome, Outcome::Ok(i as u64 * 3 + 1), "item {i}");
    }
    assert_eq!(report.stats.succeeded, 100_000);
    assert_eq!(report.stats.concurrency, 4);
    assert!(report.all_ok());
}

#[test]
fn errors_and_panics_stay_at_their_positions() {
    quiet_deliberate_panics();
    let n = 20_000_u64;
    let fails: HashSet<u64> = (0..200).map(|k| mix(k) % n).collect();
    let panics: HashSet<u64> = (0..50)
        .map(|k| mix(k + 1_000) % n)
        .filter(|i| !fails.contains(i))
        .collect();
    let items: Vec<u64> = (0..n).collect();
    let options = BatchOptions {
        workers: Some(3),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| {
        spin(mix(i) % 200);
        if panics.contains(&i) {
            panic!("deliberate panic at {i}");
        }
        if fails.contains(&i) {
            Err(format!("error at {i}"))
        } else {
            Ok(i)
        }
    });
    for (i, outcome) in (0..n).zip(&report.outcomes) {
        let expected = if panics.contains(&i) {
            Outcome::Panicked(format!("deliberate panic at {i}"))
        } else if fails.contains(&i) {
            Outcome::Err(format!("error at {i}"))
        } else {
            Outcome::Ok(i)
        };
        assert_eq!(*outcome, expected, "item {i}");
    }
    let stats = &report.stats;
    assert_eq!(stats.failed, fails.len());
    assert_eq!(stats.panicked, panics.len());
    assert_eq!(stats.succeeded, n as usize - fails.len() - panics.len());
    assert_eq!(stats.stopped, None);
}

#[test]
fn a_panic_with_a_non_string_payload_is_reported() {
    quiet_deliberate_panics();
    let report = batch::run_cpu(&[1, 2], &BatchOptions::default(), |&i| {
        if i == 2 {
            std::panic::panic_any(42_u32);
        }
        Ok::<_, ()>(i)
    });
    assert_eq!(report.outcomes[0], Outcome::Ok(1));
    assert!(report.outcomes[1].is_panicked());
}

#[test]
fn the_deadline_keeps_finished_results_and_times_out_the_rest() {
    let items: Vec<u64> = (0..400).collect();
    let options = BatchOptions {
        workers: Some(2),
        deadline: Some(Instant::now() + Duration::from_millis(500)),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| {
        thread::sleep(Duration::from_millis(10));
        Ok::<_, ()>(i)
    });
    // Every item sleeps at least 10 ms, so 2 workers finish at most 2 × 50 items before the
    // deadline, plus the 2 in their hands when it passes: however slow the machine, most items are
    // timed out (a slower machine only times out more). The first item starts within 500 ms of the
    // options being made.
    let stats = &report.stats;
    assert_eq!(stats.stopped, Some(StopReason::Deadline));
    assert!(stats.succeeded >= 1, "{stats:?}");
    assert!(stats.succeeded <= 102, "{stats:?}");
    assert_eq!(stats.succeeded + stats.timed_out, 400);
    for (i, outcome) in report.outcomes.iter().enumerate() {
        assert!(matches!(outcome, Outcome::Ok(v) if *v == i as u64) || outcome.is_timed_out());
    }
}

#[test]
fn a_deadline_already_passed_runs_nothing() {
    let options = BatchOptions {
        deadline: Some(Instant::now()),
        ..BatchOptions::default()
    };
    let ran = AtomicUsize::new(0);
    let report = batch::run_cpu(&[1, 2, 3], &options, |_| {
        ran.fetch_add(1, Ordering::Relaxed);
        Ok::<_, ()>(())
    });
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    assert_eq!(report.stats.timed_out, 3);
}

#[test]
fn an_item_over_its_timeout_is_timed_out_and_the_others_are_not() {
    let items: Vec<u64> = (0..20).collect();
    // The slow items sleep past the timeout (a sleep never ends early); the others do no work at
    // all, so only a thread descheduled for a whole second could time them out.
    let options = BatchOptions {
        workers: Some(2),
        item_timeout: Some(Duration::from_secs(1)),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| {
        if i % 10 == 3 {
            thread::sleep(Duration::from_millis(1_200));
        }
        Ok::<_, ()>(i)
    });
    for (i, outcome) in report.outcomes.iter().enumerate() {
        if i % 10 == 3 {
            assert!(outcome.is_timed_out(), "item {i}: {outcome:?}");
        } else {
            assert_eq!(*outcome, Outcome::Ok(i as u64), "item {i}");
        }
    }
    assert_eq!(
        report.stats.stopped, None,
        "a slow item does not stop the batch"
    );
}

#[test]
fn cancellation_stops_the_batch_and_keeps_what_finished() {
    let token = CancelToken::new();
    let items: Vec<u64> = (0..1_000).collect();
    let options = BatchOptions {
        workers: Some(2),
        token: Some(token.clone()),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| {
        thread::sleep(Duration::from_micros(200));
        if i == 100 {
            token.cancel();
        }
        Ok::<_, ()>(i)
    });
    // Workers claim runs of at most 64 items (batch/core.rs) and run a run in order, checking the
    // stop reasons before each item and after it. The run holding item 100 (64..128) ran 64 to 99
    // before the cancel; item 100 ended after it, so it counts as cancelled, and so do the rest of
    // its run, never started. What the other worker did meanwhile depends on scheduling.
    let stats = &report.stats;
    assert_eq!(stats.stopped, Some(StopReason::Cancelled));
    assert!(
        report.outcomes[64..100].iter().all(|o| o.is_ok()),
        "{stats:?}"
    );
    assert!(
        report.outcomes[100..128].iter().all(|o| o.is_cancelled()),
        "{stats:?}"
    );
    assert_eq!(stats.succeeded + stats.cancelled, 1_000);
    for (i, outcome) in report.outcomes.iter().enumerate() {
        assert!(matches!(outcome, Outcome::Ok(v) if *v == i as u64) || outcome.is_cancelled());
    }
}

#[test]
fn a_long_item_that_checks_its_context_stops_promptly() {
    let token = CancelToken::new();
    let options = BatchOptions {
        workers: Some(2),
        token: Some(token.clone()),
        ..BatchOptions::default()
    };
    let canceller = cancel_after(&token, Duration::from_millis(30));
    let started = Instant::now();
    let report = batch::run_cpu_with_context(&[0_usize, 1], &options, |_, cx| {
        // Would run forever; the guard turns a broken cancel into a failure, not a hung test.
        while !cx.should_stop() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "never stopped"
            );
            thread::sleep(Duration::from_millis(1));
        }
        Err::<(), _>(cx.index())
    });
    canceller.join().unwrap();
    assert_eq!(report.outcomes, [Outcome::Cancelled, Outcome::Cancelled]);
}

#[test]
fn the_context_knows_the_index_and_the_item_deadline() {
    let options = BatchOptions {
        item_timeout: Some(Duration::from_secs(60)),
        ..BatchOptions::default()
    };
    let before = Instant::now();
    let report = batch::run_cpu_with_context(&["a", "b", "c"], &options, |s, cx| {
        let deadline = cx.deadline().expect("item_timeout gives a deadline");
        assert!(deadline >= before + Duration::from_secs(60));
        assert!(!cx.should_stop());
        Ok::<_, ()>(format!("{s}{}", cx.index()))
    });
    let values: Vec<_> = report.outcomes.into_iter().map(Outcome::ok).collect();
    assert_eq!(
        values,
        [Some("a0".into()), Some("b1".into()), Some("c2".into())]
    );
}

#[test]
fn progress_counts_add_up_and_grow_while_the_batch_runs() {
    let progress = Progress::new();
    let options = BatchOptions {
        workers: Some(2),
        progress: Some(progress.clone()),
        ..BatchOptions::default()
    };
    let items: Vec<u64> = (0..300).collect();
    let samples = thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut samples = vec![];
            while progress.total() == 0 || progress.finished() < 300 {
                samples.push(progress.finished());
                thread::sleep(Duration::from_millis(5));
            }
            samples
        });
        let report = batch::run_cpu(&items, &options, |&i| {
            thread::sleep(Duration::from_micros(500));
            Ok::<_, ()>(i)
        });
        assert!(report.all_ok());
        watcher.join().unwrap()
    });
    assert_eq!((progress.finished(), progress.total()), (300, 300));
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards"
    );
    assert!(
        samples.iter().any(|&n| n > 0 && n < 300),
        "progress was not published while the batch ran: {samples:?}"
    );

    // A second batch with the same Progress adds to it.
    let report = batch::run_cpu(&items[..50], &options, |&i| Ok::<_, ()>(i));
    assert!(report.all_ok());
    assert_eq!((progress.finished(), progress.total()), (350, 350));
}

#[test]
fn statistics_count_every_kind_and_measure_latency() {
    quiet_deliberate_panics();
    let items: Vec<u64> = (0..1_000).collect();
    let options = BatchOptions {
        workers: Some(2),
        // Far above the 200 µs items, so that no descheduled thread times one out; item 13 sleeps
        // past it (a sleep never ends early).
        item_timeout: Some(Duration::from_secs(1)),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&items, &options, |&i| match i {
        7 => panic!("deliberate"),
        13 => {
            thread::sleep(Duration::from_millis(1_200));
            Ok(i)
        }
        i if i % 100 == 1 => Err(i),
        i => {
            thread::sleep(Duration::from_micros(200));
            Ok(i)
        }
    });
    let stats = &report.stats;
    assert_eq!(stats.total, 1_000);
    assert_eq!((stats.panicked, stats.timed_out, stats.failed), (1, 1, 10));
    assert_eq!(stats.succeeded, 988);
    assert_eq!(stats.cancelled, 0);
    // Every item that finished by itself, and only those (not the timed-out one).
    let finished = stats.succeeded + stats.failed + stats.panicked;
    assert_eq!(stats.latency.count, finished as u64);
    let (p50, p99) = (stats.latency.p50, stats.latency.p99);
    // Lower bounds only: most items sleep 200 µs (an upper bound would measure the machine, not
    // the code).
    assert!(p50 >= Duration::from_micros(150), "{p50:?}");
    assert!(p99 >= p50 && stats.latency.max >= p99);
    assert!(stats.throughput > 0.0);
    assert!(stats.duration >= Duration::from_millis(1_200));
}

#[test]
fn an_empty_batch_returns_an_empty_report() {
    let report = batch::run_cpu(&[] as &[u8], &BatchOptions::default(), |_| Ok::<u8, ()>(0));
    assert!(report.outcomes.is_empty());
    assert_eq!(report.stats.total, 0);
    assert_eq!(report.stats.latency.count, 0);
}

#[test]
fn one_worker_runs_on_the_calling_thread() {
    let me = thread::current().id();
    let options = BatchOptions {
        workers: Some(1),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&[1, 2, 3], &options, |_| {
        Ok::<_, ()>(thread::current().id())
    });
    assert!(report.outcomes.iter().all(|o| *o == Outcome::Ok(me)));
}

#[test]
fn workers_are_capped_by_the_item_count() {
    let options = BatchOptions {
        workers: Some(64),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu(&[1, 2, 3], &options, |&i| Ok::<_, ()>(i));
    assert_eq!(report.stats.concurrency, 3);
}

#[test]
#[should_panic(expected = "workers must be at least 1")]
fn zero_workers_is_rejected() {
    let options = BatchOptions {
        workers: Some(0),
        ..BatchOptions::default()
    };
    let _ = batch::run_cpu(&[1], &options, |&i| Ok::<_, ()>(i));
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<BatchOptions>();
    send_sync::<Progress>();
    send_sync::<batch::BatchReport<String, std::io::Error>>();
    send_sync::<batch::BatchStats>();
    send_sync::<Outcome<Vec<u8>, String>>();
    send_sync::<batch::ItemError<String>>();
    send_sync::<batch::ItemContext<'static>>();
}
