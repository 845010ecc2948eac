//! No spinning: threads of a batch that have nothing to do use no CPU. Measured as CPU time
//! (`getrusage`), not wall time. One test per file: the process-wide figure must not include
//! other tests' work.

use std::time::{Duration, Instant};

use gilkit::batch::{self, BatchOptions};

fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: `getrusage` fills the zeroed struct we own; RUSAGE_SELF / RUSAGE_THREAD are valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(who, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn idle_workers_and_the_waiting_caller_use_no_cpu() {
    // CPU mode: 4 workers, one item blocks for 400 ms, the other 99 are instant. Three workers run
    // out of work at once and one waits in a blocking call: a spinning executor would burn ~1.2 s of
    // CPU across them (or the caller would, polling for the end).
    let items: Vec<u32> = (0..100).collect();
    let options = BatchOptions {
        workers: Some(4),
        ..BatchOptions::default()
    };
    let (process, caller, wall) = measure(|| {
        let report = batch::run_cpu(&items, &options, |&i| {
            if i == 0 {
                std::thread::sleep(Duration::from_millis(400));
            }
            Ok::<_, ()>(i)
        });
        assert!(report.all_ok());
    });
    assert!(wall >= Duration::from_millis(400));
    assert!(
        process < Duration::from_millis(60),
        "the batch used {process:?} of CPU in {wall:?}"
    );
    assert!(
        caller < Duration::from_millis(30),
        "the caller used {caller:?} of CPU"
    );

    // Async mode: 16 futures in flight, all waiting on timers for 400 ms.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = BatchOptions {
        max_concurrency: Some(16),
        ..BatchOptions::default()
    };
    let (process, _, wall) = measure(|| {
        let report = runtime.block_on(batch::run_async(
            (0..16).collect(),
            &options,
            |i| async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok::<_, ()>(i)
            },
        ));
        assert!(report.all_ok());
    });
    assert!(wall >= Duration::from_millis(400));
    assert!(
        process < Duration::from_millis(60),
        "the batch used {process:?} of CPU in {wall:?}"
    );
}

/// (process CPU time, calling thread CPU time, wall time) of `f`.
fn measure(f: impl FnOnce()) -> (Duration, Duration, Duration) {
    let (process, caller, wall) = (
        cpu_time(libc::RUSAGE_SELF),
        cpu_time(libc::RUSAGE_THREAD),
        Instant::now(),
    );
    f();
    (
        cpu_time(libc::RUSAGE_SELF) - process,
        cpu_time(libc::RUSAGE_THREAD) - caller,
        wall.elapsed(),
    )
}
