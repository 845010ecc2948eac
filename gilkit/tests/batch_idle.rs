//! No spinning: threads of a batch that have nothing to do use no CPU. Measured as CPU time
//! (`getrusage`), not wall time. One test per file: the process-wide figure must not include
//! other tests' work.
//!
//! The verdict must not depend on how fast the machine is, so each mode runs the same batch twice,
//! once with its blocking item waiting 200 ms and once 1.2 s: the work is the same, only the
//! waiting differs. A waiting thread that sleeps costs no CPU for the extra second however slow
//! the machine; one that spins or polls costs about a second per thread. The bound is a tenth of
//! what a single spinning thread would burn.

use std::time::Duration;

use gilkit::batch::{self, BatchOptions};

const SHORT_WAIT: Duration = Duration::from_millis(200);
const LONG_WAIT: Duration = Duration::from_millis(1_200);
/// A tenth of the CPU one thread spinning through the extra second would use.
const BOUND: Duration = Duration::from_millis(100);

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

/// (process CPU time, calling thread CPU time) used by `f`.
fn measure(f: impl FnOnce()) -> (Duration, Duration) {
    let (process, caller) = (cpu_time(libc::RUSAGE_SELF), cpu_time(libc::RUSAGE_THREAD));
    f();
    (
        cpu_time(libc::RUSAGE_SELF) - process,
        cpu_time(libc::RUSAGE_THREAD) - caller,
    )
}

/// CPU mode: 4 workers, one item blocks for `wait`, the other 99 are instant. Three workers run
/// out of work at once and one waits in a blocking call; the caller waits for the end.
fn cpu_batch(wait: Duration) -> (Duration, Duration) {
    let items: Vec<u32> = (0..100).collect();
    let options = BatchOptions {
        workers: Some(4),
        ..BatchOptions::default()
    };
    measure(|| {
        let report = batch::run_cpu(&items, &options, |&i| {
            if i == 0 {
                std::thread::sleep(wait);
            }
            Ok::<_, ()>(i)
        });
        assert!(report.all_ok());
    })
}

/// Async mode: 16 futures in flight, all waiting on timers for `wait`.
fn async_batch(runtime: &tokio::runtime::Runtime, wait: Duration) -> Duration {
    let options = BatchOptions {
        max_concurrency: Some(16),
        ..BatchOptions::default()
    };
    measure(|| {
        let report = runtime.block_on(batch::run_async(
            (0..16).collect(),
            &options,
            |i| async move {
                tokio::time::sleep(wait).await;
                Ok::<_, ()>(i)
            },
        ));
        assert!(report.all_ok());
    })
    .0
}

#[test]
fn idle_workers_and_the_waiting_caller_use_no_cpu() {
    // Warm up: the first batch starts the pooled workers.
    cpu_batch(Duration::ZERO);
    let (short_process, short_caller) = cpu_batch(SHORT_WAIT);
    let (long_process, long_caller) = cpu_batch(LONG_WAIT);
    let extra = long_process.saturating_sub(short_process);
    assert!(
        extra < BOUND,
        "waiting 1 s longer cost the batch {extra:?} of CPU ({short_process:?} -> {long_process:?})"
    );
    let extra = long_caller.saturating_sub(short_caller);
    assert!(
        extra < BOUND,
        "waiting 1 s longer cost the caller {extra:?} of CPU ({short_caller:?} -> {long_caller:?})"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    async_batch(&runtime, Duration::ZERO);
    let short = async_batch(&runtime, SHORT_WAIT);
    let long = async_batch(&runtime, LONG_WAIT);
    let extra = long.saturating_sub(short);
    assert!(
        extra < BOUND,
        "waiting 1 s longer cost the async batch {extra:?} of CPU ({short:?} -> {long:?})"
    );
}
