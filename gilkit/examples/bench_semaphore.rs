//! Calling a Python model from 1, 10 and 100 concurrent tokio tasks, five ways, side by side.
//!
//! Strategies (each request is one item):
//! - `naive`: `spawn_blocking` + `Python::attach` per request, unbounded;
//! - `try_lock`: like akidb's provider, a mutex around the model taken with `try_lock`; contention
//!   is an error;
//! - `semaphore`, `semaphore2`: `GilSemaphore::run` with 1 and 2 permits;
//! - `batcher`: `GilBatcher` with `max_batch` 64, `max_wait` 1 ms;
//! - `batcher0`: the same with `max_wait` 0 (take what is queued, never wait).
//!
//! Models (pure Python, GIL held throughout):
//! - `fixed`: mostly fixed cost per call (~1 ms) plus a little per item, as batched ML models are;
//! - `per_item`: cost proportional to the items (~0.3 ms each), where batching saves little.
//!
//! Each cell runs closed-loop for `--secs` seconds: every task sends a request, waits for the answer,
//! sends the next. Rounds are interleaved (every cell once per round) and the medians over rounds are
//! reported, with throughput as a ratio to `naive` in the same model and concurrency.
//!
//! Run: `cargo run --release -p gilkit --example bench_semaphore -- --rounds 3 --secs 1`
//! (or `bash benches/semaphore/run.sh`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gilkit::batcher::BatcherConfig;
use gilkit::{GilBatcher, GilSemaphore};
use pyo3::prelude::*;
use pyo3::types::PyDict;

const MODELS: &std::ffi::CStr = c"
def _spin(n):
    s = 0
    for i in range(n):
        s += i
    return s

def fixed(xs):
    _spin(25_000)                      # the per-call part: ~1 ms
    return [x + _spin(200) for x in xs]  # the per-item part: ~10 us

def per_item(xs):
    return [x + _spin(8_000) for x in xs]  # ~0.3 ms per item
";

const STRATEGIES: [&str; 6] = [
    "naive",
    "try_lock",
    "semaphore",
    "semaphore2",
    "batcher",
    "batcher0",
];
const CONCURRENCY: [usize; 3] = [1, 10, 100];

#[derive(Default, Clone)]
struct Cell {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    mean_batch: Option<f64>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

type Call = Arc<
    dyn Fn(i64) -> std::pin::Pin<Box<dyn Future<Output = Result<i64, String>> + Send>>
        + Send
        + Sync,
>;

fn strategy(name: &str, model: Py<PyAny>) -> (Call, Option<GilBatcher<i64, i64>>) {
    let model = Arc::new(model);
    let call_one = |model: &Py<PyAny>, py: Python<'_>, x: i64| -> PyResult<i64> {
        let out: Vec<i64> = model.call1(py, (vec![x],))?.extract(py)?;
        Ok(out[0])
    };
    match name {
        "naive" => (
            Arc::new(move |x| {
                let model = Arc::clone(&model);
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || {
                        Python::attach(|py| call_one(&model, py, x))
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
                })
            }),
            None,
        ),
        "try_lock" => {
            let lock = Arc::new(Mutex::new(()));
            (
                Arc::new(move |x| {
                    let (model, lock) = (Arc::clone(&model), Arc::clone(&lock));
                    Box::pin(async move {
                        tokio::task::spawn_blocking(move || {
                            let _guard = lock.try_lock().map_err(|_| "model busy".to_owned())?;
                            Python::attach(|py| call_one(&model, py, x)).map_err(|e| e.to_string())
                        })
                        .await
                        .map_err(|e| e.to_string())?
                    })
                }),
                None,
            )
        }
        "semaphore" | "semaphore2" => {
            let sem = GilSemaphore::new(if name == "semaphore" { 1 } else { 2 });
            (
                Arc::new(move |x| {
                    let (model, sem) = (Arc::clone(&model), sem.clone());
                    Box::pin(async move {
                        sem.run(move |py| call_one(&model, py, x))
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
                None,
            )
        }
        "batcher" | "batcher0" => {
            let config = BatcherConfig {
                max_batch: 64,
                max_wait: if name == "batcher" {
                    Duration::from_millis(1)
                } else {
                    Duration::ZERO
                },
                max_queue: None,
            };
            let batcher = GilBatcher::new(config, move |py, xs: Vec<i64>| {
                model.call1(py, (xs,))?.extract(py)
            });
            let handle = batcher.clone();
            (
                Arc::new(move |x| {
                    let b = batcher.clone();
                    Box::pin(async move { b.submit(x).await.map_err(|e| e.to_string()) })
                }),
                Some(handle),
            )
        }
        other => unreachable!("unknown strategy {other}"),
    }
}

async fn run_cell(call: Call, concurrency: usize, secs: f64) -> Cell {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let call = Arc::clone(&call);
            tokio::spawn(async move {
                let mut cell = Cell::default();
                let mut x = (t as i64) << 32;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match call(x).await {
                        Ok(y) => {
                            // Every answer must belong to its request.
                            assert!(y >= x, "request {x} got answer {y}");
                            cell.ok += 1;
                            cell.latencies.push(sent.elapsed());
                        }
                        Err(_) => cell.errors += 1,
                    }
                    x += 1;
                }
                cell
            })
        })
        .collect();
    let mut total = Cell::default();
    for t in tasks {
        let c = t.await.unwrap();
        total.ok += c.ok;
        total.errors += c.errors;
        total.latencies.extend(c.latencies);
    }
    total.elapsed = start.elapsed();
    total
}

fn main() {
    let mut rounds = 3;
    let mut secs = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).expect("--secs S"),
            other => panic!("unknown argument {other}; use --rounds N --secs S"),
        }
    }
    Python::initialize();
    let (models, single_call) = Python::attach(|py| {
        let ns = PyDict::new(py);
        py.run(MODELS, Some(&ns), None).unwrap();
        let mut models = BTreeMap::new();
        let mut single = BTreeMap::new();
        for name in ["fixed", "per_item"] {
            let f = ns.get_item(name).unwrap().unwrap();
            let t = Instant::now();
            for _ in 0..20 {
                f.call1((vec![1i64],)).unwrap();
            }
            single.insert(name, t.elapsed() / 20);
            let t = Instant::now();
            f.call1(((0..64i64).collect::<Vec<_>>(),)).unwrap();
            single.insert(
                if name == "fixed" {
                    "fixed64"
                } else {
                    "per_item64"
                },
                t.elapsed(),
            );
            models.insert(name, f.unbind());
        }
        (models, single)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // (model, concurrency, strategy) -> per-round cells
    let mut results: BTreeMap<(&str, usize, &str), Vec<Cell>> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (&model_name, model) in &models {
            for &c in &CONCURRENCY {
                for &s in &STRATEGIES {
                    let model = Python::attach(|py| model.clone_ref(py));
                    let (call, batcher) = strategy(s, model);
                    let mut cell = runtime.block_on(run_cell(call, c, secs));
                    cell.mean_batch = batcher.map(|b| b.stats().mean_batch_size);
                    results.entry((model_name, c, s)).or_default().push(cell);
                }
            }
        }
    }

    println!(
        "Single call, 1 item: fixed {:?}, per_item {:?}; 64 items: fixed {:?}, per_item {:?}\n",
        single_call["fixed"],
        single_call["per_item"],
        single_call["fixed64"],
        single_call["per_item64"]
    );
    println!(
        "| model | tasks | strategy | req/s | vs naive | p50 ms | p99 ms | errors | mean batch |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for &model_name in models.keys() {
        for &c in &CONCURRENCY {
            let throughput = |s: &str| {
                median(
                    results[&(model_name, c, s)]
                        .iter()
                        .map(|r| r.ok as f64 / r.elapsed.as_secs_f64())
                        .collect(),
                )
            };
            let naive = throughput("naive");
            for &s in &STRATEGIES {
                let cells = &results[&(model_name, c, s)];
                let tp = throughput(s);
                let lat = |q: f64| {
                    median(
                        cells
                            .iter()
                            .map(|r| {
                                let mut l = r.latencies.clone();
                                l.sort();
                                percentile(&l, q).as_secs_f64() * 1e3
                            })
                            .collect(),
                    )
                };
                let err = median(
                    cells
                        .iter()
                        .map(|r| {
                            let n = r.ok + r.errors;
                            if n == 0 {
                                0.0
                            } else {
                                100.0 * r.errors as f64 / n as f64
                            }
                        })
                        .collect(),
                );
                let batch = cells[0]
                    .mean_batch
                    .map(|_| median(cells.iter().filter_map(|r| r.mean_batch).collect()));
                println!(
                    "| {model_name} | {c} | {s} | {tp:.0} | {:.2}x | {:.2} | {:.2} | {err:.2}% | {} |",
                    tp / naive,
                    lat(0.5),
                    lat(0.99),
                    batch.map_or("".to_owned(), |b| format!("{b:.1}")),
                );
            }
        }
    }
}
