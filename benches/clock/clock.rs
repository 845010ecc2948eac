//! What the `quanta` feature buys: the cost of the clock reads a timed call site makes, with
//! `quanta::Instant` and with `std::time::Instant` (the fallback without the feature), side by
//! side in one process. A timed call reads the clock three times (before the work, after it, after
//! the GIL is back) and turns two pairs into durations; this times exactly that sequence.
//!
//! Run: `cargo run --release -p gilkit --example bench_clock` (results: benches/results/clock.md).

use std::hint::black_box;
use std::time::Duration;

const READS: u32 = 2_000_000;
const ROUNDS: usize = 9;

/// Nanoseconds per "timed call" (three reads, two differences), median over rounds.
fn per_timed_call<I: Copy>(now: impl Fn() -> I, between: impl Fn(I, I) -> Duration) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = std::time::Instant::now();
            let mut sum = Duration::ZERO;
            for _ in 0..READS {
                let start = now();
                let end = now();
                let back = now();
                sum += between(start, end) + between(end, back);
            }
            black_box(sum);
            t.elapsed().as_nanos() as f64 / f64::from(READS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    // quanta calibrates on first use; not part of a call's cost.
    black_box(quanta::Instant::now());
    let std_ns = per_timed_call(std::time::Instant::now, |a, b| {
        b.saturating_duration_since(a)
    });
    let quanta_ns = per_timed_call(quanta::Instant::now, |a, b| b.saturating_duration_since(a));
    println!("| clock | ns per timed call (3 reads, 2 differences) |");
    println!("|---|---|");
    println!("| std::time::Instant | {std_ns:.1} |");
    println!("| quanta::Instant | {quanta_ns:.1} |");
    println!("ratio std/quanta: {:.2}", std_ns / quanta_ns);
}
