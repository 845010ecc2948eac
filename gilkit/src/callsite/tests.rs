//! Unit tests of call sites: every duration is fixed per test ([`with_work_taking`]), so no
//! verdict depends on how long the work took on a shared machine.

use super::adaptive::*;
use super::sampling::*;
use super::test_hooks::with_work_taking;
use super::*;
use std::thread;

fn spin(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

#[test]
fn counts_and_times_released_calls() {
    static SITE: CallSite = CallSite::new("released", module_path!(), file!(), line!());
    Python::attach(|py| {
        for _ in 0..3 {
            SITE.detach(py, || spin(Duration::from_millis(1)));
        }
    });
    let s = SITE.stats();
    assert_eq!((s.calls, s.released, s.adaptive_calls), (3, 3, 0));
    assert!(s.released_time >= Duration::from_millis(3), "{s:?}");
    assert_eq!(s.held_time, Duration::ZERO);
    assert!(
        call_sites()
            .iter()
            .any(|c| c.name == "released" && c.calls == 3)
    );
}

#[test]
fn tiny_released_calls_are_counted_exactly_and_timed_one_in_sample_every() {
    static SITE: CallSite = CallSite::new("tiny-released", module_path!(), file!(), line!());
    with_work_taking(Duration::from_nanos(100), || {
        Python::attach(|py| {
            for i in 0..100u64 {
                assert_eq!(SITE.detach(py, || std::hint::black_box(i)), i);
            }
        })
    });
    let s = SITE.stats();
    assert_eq!((s.calls, s.released), (100, 100));
    // Calls 0, 16, ..., 96 were timed (the work is far below TIME_EVERY_CALL_FROM).
    assert_eq!(s.timed_calls, 100u64.div_ceil(SAMPLE_EVERY));
    assert_eq!(s.average_work, Some(Duration::from_nanos(100)));
    // Call 0 stands for itself, each later timed call for itself and the 15 before it; the
    // 3 calls after call 96 wait for the next timed call.
    assert_eq!(s.released_time, Duration::from_nanos(100 * (1 + 6 * 16)));
}

#[test]
fn a_timed_call_stands_for_the_untimed_ones_and_totals_never_decrease() {
    static SITE: CallSite = CallSite::new("stands-for", module_path!(), file!(), line!());
    Python::attach(|py| {
        with_work_taking(Duration::from_nanos(100), || {
            for _ in 0..100 {
                SITE.detach(py, || std::hint::black_box(1));
            }
        });
        let tiny = SITE.stats();
        assert_eq!(tiny.released_time, Duration::from_nanos(100 * (1 + 6 * 16)));
        // The work changes: 20 calls of 100 µs (calls 100 to 119). Call 112 is the first
        // one timed; it stands for itself and the 15 untimed calls before it (97 to 111).
        // Its sample lifts the average past TIME_EVERY_CALL_FROM, so calls 113 to 119 are
        // all timed.
        with_work_taking(Duration::from_micros(100), || {
            for _ in 0..20 {
                SITE.detach(py, || std::hint::black_box(1));
            }
        });
        let long = SITE.stats();
        assert_eq!(long.timed_calls - tiny.timed_calls, 1 + 7, "{long:?}");
        assert_eq!(
            long.released_time - tiny.released_time,
            Duration::from_micros(100 * (16 + 7))
        );
        assert!(long.reacquire_time >= tiny.reacquire_time);
    });
}

#[test]
fn a_held_call_that_panics_is_not_counted_as_released() {
    static SITE: CallSite = CallSite::new("held-panic", module_path!(), file!(), line!())
        .with_threshold(Duration::from_secs(1));
    Python::attach(|py| {
        SITE.detach_adaptive(py, || ()); // the first call releases: nothing known yet
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SITE.detach_adaptive(py, || panic!("boom"))
        }));
        assert!(panicked.is_err());
    });
    let s = SITE.stats();
    assert_eq!((s.calls, s.released, s.adaptive_released), (2, 1, 1));
}

#[test]
fn adaptive_holds_short_work_and_releases_long_work() {
    static SHORT: CallSite = CallSite::new("short", module_path!(), file!(), line!())
        .with_threshold(Duration::from_millis(100));
    static LONG: CallSite = CallSite::new("long", module_path!(), file!(), line!())
        .with_threshold(Duration::from_micros(200));
    Python::attach(|py| {
        for _ in 0..20 {
            with_work_taking(Duration::from_micros(1), || {
                SHORT.detach_adaptive(py, || std::hint::black_box(1 + 1))
            });
            with_work_taking(Duration::from_millis(1), || {
                LONG.detach_adaptive(py, || std::hint::black_box(1 + 1))
            });
        }
    });
    let short = SHORT.stats();
    assert_eq!((short.adaptive_calls, short.adaptive_released), (20, 1));
    assert_eq!(short.released, 1);
    assert_eq!(short.held_time, Duration::from_micros(19));
    let long = LONG.stats();
    assert_eq!((long.adaptive_calls, long.adaptive_released), (20, 20));
    assert_eq!(long.average_work, Some(Duration::from_millis(1)));
}

#[test]
fn adaptive_measures_real_work() {
    // The one adaptive test on the real clock: a lower bound, which holds however loaded the
    // machine is (the clock is the same one `spin` reads).
    static SITE: CallSite = CallSite::new("adaptive-real", module_path!(), file!(), line!())
        .with_threshold(Duration::from_micros(200));
    Python::attach(|py| {
        for _ in 0..3 {
            SITE.detach_adaptive(py, || spin(Duration::from_millis(1)));
        }
    });
    let s = SITE.stats();
    assert_eq!((s.adaptive_calls, s.adaptive_released), (3, 3));
    assert!(s.average_work.unwrap() >= Duration::from_millis(1), "{s:?}");
    assert!(s.released_time >= Duration::from_millis(3), "{s:?}");
}

#[test]
fn size_hint_decides_per_call() {
    static SITE: CallSite = CallSite::new("sized", module_path!(), file!(), line!())
        .with_threshold(Duration::from_millis(10));
    Python::attach(|py| {
        // Learn 10 µs per unit: 100 µs calls of 10 units (the first sample sets the average).
        with_work_taking(Duration::from_micros(100), || {
            for _ in 0..20 {
                SITE.detach_adaptive_sized(py, 10, || ());
            }
        });
        let before = SITE.stats().adaptive_released;
        // 2 units predict 20 µs: held.
        with_work_taking(Duration::from_micros(20), || {
            SITE.detach_adaptive_sized(py, 2, || ())
        });
        assert_eq!(SITE.stats().adaptive_released, before);
        // 100 000 units predict ~1 s: released (the work itself is short; the estimate moves).
        with_work_taking(Duration::from_micros(20), || {
            SITE.detach_adaptive_sized(py, 100_000, || ())
        });
        assert_eq!(SITE.stats().adaptive_released, before + 1);
    });
}

#[test]
fn interruptible_and_async_forms_are_counted() {
    static HELD: CallSite = CallSite::new("interruptible-held", module_path!(), file!(), line!())
        .with_threshold(Duration::from_secs(1));
    static ASYNC: CallSite = CallSite::new("async", module_path!(), file!(), line!());
    Python::attach(|py| {
        with_work_taking(Duration::from_micros(1), || {
            for _ in 0..5 {
                let not_cancelled =
                    HELD.detach_interruptible_adaptive(py, |token| !token.is_cancelled());
                assert!(not_cancelled.unwrap());
            }
        });
        assert_eq!(ASYNC.block_on(py, async { 7 }).unwrap(), 7);
    });
    let held = HELD.stats();
    // The first call releases (nothing known); the others are short and held.
    assert_eq!(
        (
            held.calls,
            held.adaptive_calls,
            held.adaptive_released,
            held.released
        ),
        (5, 5, 1, 1)
    );
    let asynchronous = ASYNC.stats();
    assert_eq!((asynchronous.calls, asynchronous.released), (1, 1));
    assert_eq!(asynchronous.reacquire_time, Duration::ZERO);
}

#[test]
fn python_dict_has_one_entry_per_call_site() {
    static FIRST: CallSite = CallSite::new("dup", "m", "a.rs", 1);
    static SECOND: CallSite = CallSite::new("dup", "m", "a.rs", 2);
    Python::attach(|py| {
        FIRST.detach(py, || ());
        SECOND.detach(py, || ());
        SECOND.detach(py, || ());
        let all = callsite_stats(py).unwrap();
        let calls = |key: &str| -> u64 {
            let entry = all.get_item(key).unwrap().unwrap();
            entry.get_item("calls").unwrap().extract().unwrap()
        };
        assert_eq!((calls("m::dup"), calls("m::dup@2")), (1, 2));
    });
}

#[test]
fn registers_once_from_many_threads() {
    static SITE: CallSite = CallSite::new("many", module_path!(), file!(), line!());
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| Python::attach(|py| (0..50).for_each(|_| SITE.detach(py, || ()))));
        }
    });
    let registered = call_sites().iter().filter(|c| c.name == "many").count();
    assert_eq!(registered, 1);
    assert_eq!(SITE.stats().calls, 200);
}

#[test]
fn average_tracks_recent_samples() {
    let cell = AtomicU64::new(0);
    update_average(&cell, 800.0);
    assert_eq!(load_f64(&cell), 800.0);
    update_average(&cell, 0.0);
    assert_eq!(load_f64(&cell), 700.0);
}
