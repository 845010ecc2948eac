//! Per-item overhead of `gilkit::batch` against rayon's `par_iter` and a plain loop, in Rust, for
//! 100,000 trivial items. Prints one `name ns_per_item` line per contender (median of the rounds).
//!
//! Run: `cargo bench -p gilkit --bench batch -- [rounds]` (benches/batch/bench.py runs it and puts its
//! figures beside the Python ones).

use std::hint::black_box;
use std::time::Instant;

use gilkit::batch::{self, BatchOptions};
use rayon::prelude::*;

const ITEMS: u64 = 100_000;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median nanoseconds per item of `run` over `rounds` rounds (after one warm-up).
fn per_item(rounds: usize, mut run: impl FnMut() -> u64) -> f64 {
    black_box(run());
    median(
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                let checksum = run();
                let took = start.elapsed();
                assert_eq!(checksum, ITEMS * (ITEMS - 1), "wrong results");
                took.as_nanos() as f64 / ITEMS as f64
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; the optional number is the round count.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    let items: Vec<u64> = (0..ITEMS).collect();
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let double = |x: &u64| black_box(*x) * 2;

    let sequential = per_item(rounds, || {
        items.iter().map(double).collect::<Vec<_>>().iter().sum()
    });
    let rayon = per_item(rounds, || {
        items
            .par_iter()
            .map(double)
            .collect::<Vec<_>>()
            .iter()
            .sum()
    });
    let options = BatchOptions {
        workers: Some(workers),
        ..BatchOptions::default()
    };
    let cpu = per_item(rounds, || {
        let report = batch::run_cpu(&items, &options, |x| Ok::<_, ()>(double(x)));
        report.outcomes.into_iter().map(|o| o.ok().unwrap()).sum()
    });
    let one = BatchOptions {
        workers: Some(1),
        ..BatchOptions::default()
    };
    let cpu_one = per_item(rounds, || {
        let report = batch::run_cpu(&items, &one, |x| Ok::<_, ()>(double(x)));
        report.outcomes.into_iter().map(|o| o.ok().unwrap()).sum()
    });
    let runtime = gilkit::runtime::handle();
    let async_options = BatchOptions {
        max_concurrency: Some(64),
        ..BatchOptions::default()
    };
    let async_mode = per_item(rounds, || {
        let report = runtime.block_on(batch::run_async(
            items.clone(),
            &async_options,
            |x| async move { Ok::<_, ()>(double(&x)) },
        ));
        report.outcomes.into_iter().map(|o| o.ok().unwrap()).sum()
    });
    println!("rust_sequential_loop {sequential:.1}");
    println!("rayon_par_iter {rayon:.1}");
    println!("gilkit_run_cpu {cpu:.1}");
    println!("gilkit_run_cpu_1_worker {cpu_one:.1}");
    println!("gilkit_run_async {async_mode:.1}");
}
