//! `gilkit::batch` from Python: batch functions for `tests/python/test_batch.py` and
//! `benches/batch/`, the `Executor` and `NativeFn` classes, and a few `NativeFn` instances.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use gilkit::batch::{self, BatchOptions, BatchReport, ItemContext, NativeFn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::spin_for;

/// Batch options from the keyword arguments every function here takes (seconds as floats).
fn options(
    workers: Option<usize>,
    max_concurrency: Option<usize>,
    timeout: Option<f64>,
    item_timeout: Option<f64>,
) -> PyResult<BatchOptions> {
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            PyValueError::new_err(format!("{what} must be a non-negative number of seconds"))
        })
    };
    let options = BatchOptions {
        workers,
        max_concurrency,
        deadline: timeout
            .map(|s| seconds(s, "timeout").map(|d| Instant::now() + d))
            .transpose()?,
        item_timeout: item_timeout
            .map(|s| seconds(s, "item_timeout"))
            .transpose()?,
        ..BatchOptions::default()
    };
    options.validate()?;
    Ok(options)
}

/// `(results, stats)`: results in input order with exceptions in place of failures.
fn to_python<'py, T>(
    py: Python<'py>,
    report: Result<BatchReport<T, PyErr>, batch::BatchInterrupted<T, PyErr>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)>
where
    T: for<'a> IntoPyObject<'a>,
{
    let report = report.map_err(|interrupted| interrupted.into_pyerr_with_results(py))?;
    let stats = report.stats.clone().into_pyobject(py)?;
    Ok((batch::results_to_python(py, report)?, stats))
}

/// Sleep `ms` in 1 ms slices, stopping early when the item should stop.
fn sleep_cooperatively(ms: u64, cx: &ItemContext<'_>) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until && !cx.should_stop() {
        std::thread::sleep(Duration::from_millis(1).min(until - Instant::now()));
    }
}

/// CPU mode: square each item after sleeping `sleep_ms` (cooperatively); raise ValueError at the
/// positions in `fail_at`, panic at those in `panic_at`. Returns `(results, stats)`.
#[pyfunction]
#[pyo3(signature = (items, *, workers=None, timeout=None, item_timeout=None, sleep_ms=0, fail_at=HashSet::new(), panic_at=HashSet::new(), progress=None))]
#[allow(clippy::too_many_arguments)]
fn batch_square<'py>(
    py: Python<'py>,
    items: Vec<i64>,
    workers: Option<usize>,
    timeout: Option<f64>,
    item_timeout: Option<f64>,
    sleep_ms: u64,
    fail_at: HashSet<usize>,
    panic_at: HashSet<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let options = options(workers, None, timeout, item_timeout)?;
    let report = batch::run_cpu_from_python(py, &items, &options, progress.as_ref(), |&x, cx| {
        if sleep_ms > 0 {
            sleep_cooperatively(sleep_ms, cx);
        }
        if panic_at.contains(&cx.index()) {
            panic!("deliberate panic at {}", cx.index());
        }
        if fail_at.contains(&cx.index()) {
            return Err(PyValueError::new_err(format!(
                "bad item {x} at {}",
                cx.index()
            )));
        }
        Ok(x * x)
    });
    to_python(py, report)
}

/// Async mode: each item sleeps `delays_ms[i]` on the shared runtime's timers and returns it.
/// Returns `(results, stats)`.
#[pyfunction]
#[pyo3(signature = (delays_ms, *, max_concurrency=None, timeout=None, item_timeout=None, progress=None))]
fn batch_sleep_async<'py>(
    py: Python<'py>,
    delays_ms: Vec<u64>,
    max_concurrency: Option<usize>,
    timeout: Option<f64>,
    item_timeout: Option<f64>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let options = options(None, max_concurrency, timeout, item_timeout)?;
    let report = batch::block_on_batch_from_python(
        py,
        delays_ms,
        &options,
        progress.as_ref(),
        |ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, PyErr>(ms)
        },
    );
    to_python(py, report)
}

/// Benchmark: `n` trivial items (`i * 2`) in CPU (`mode="cpu"`) or async (`mode="async"`) mode,
/// with the GIL released. Returns the batch's stats.
#[pyfunction]
#[pyo3(signature = (n, *, mode="cpu", workers=None, max_concurrency=None))]
fn batch_trivial<'py>(
    py: Python<'py>,
    n: u64,
    mode: &str,
    workers: Option<usize>,
    max_concurrency: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = options(workers, max_concurrency, None, None)?;
    let items: Vec<u64> = (0..n).collect();
    let stats = match mode {
        "cpu" => batch::run_cpu_from_python(py, &items, &options, None, |&i, _| {
            Ok::<_, ()>(std::hint::black_box(i * 2))
        })
        .map(|r| r.stats),
        "async" => batch::block_on_batch_from_python(py, items, &options, None, |i| async move {
            Ok::<_, ()>(std::hint::black_box(i * 2))
        })
        .map(|r| r.stats),
        other => {
            return Err(PyValueError::new_err(format!(
                "mode must be 'cpu' or 'async', not {other:?}"
            )));
        }
    }?;
    assert_eq!(stats.succeeded as u64, n);
    stats.clone().into_pyobject(py)
}

/// Benchmark: `n` items of `micros` µs of CPU work each on `workers` threads, GIL released.
/// Returns the batch's stats.
#[pyfunction]
#[pyo3(signature = (n, micros, *, workers=None))]
fn batch_spin<'py>(
    py: Python<'py>,
    n: usize,
    micros: u64,
    workers: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = options(workers, None, None, None)?;
    let items = vec![micros; n];
    let report = batch::run_cpu_from_python(py, &items, &options, None, |&us, _| {
        Ok::<_, ()>(spin_for(Duration::from_micros(us)))
    })?;
    report.stats.clone().into_pyobject(py)
}

/// A fixed amount of CPU work: `iterations` dependent multiply-adds (unlike a spin on the clock, it
/// takes longer, not shorter, when the thread is descheduled, so ratios stay fair on a busy machine).
fn busy(iterations: u64) -> u64 {
    (0..iterations).fold(0_u64, |x, i| {
        std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i))
    })
}

/// Benchmark: iterations of `busy` per millisecond on this machine (best of 7 runs, GIL released).
#[pyfunction]
fn busy_iterations_per_ms(py: Python<'_>) -> u64 {
    const PROBE: u64 = 2_000_000;
    let best = py.detach(|| {
        (0..7)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(busy(PROBE));
                start.elapsed()
            })
            .min()
            .expect("7 runs")
    });
    (PROBE as f64 / (best.as_secs_f64() * 1e3)) as u64
}

/// Benchmark: `busy(iterations)` with the GIL released (the baseline's unit of work).
#[pyfunction]
fn busy_released(py: Python<'_>, iterations: u64) -> u64 {
    py.detach(|| busy(iterations))
}

/// Benchmark: `n` items of `busy(iterations)` on `workers` threads, GIL released. Returns the
/// batch's stats.
#[pyfunction]
#[pyo3(signature = (n, iterations, *, workers=None))]
fn batch_busy(
    py: Python<'_>,
    n: usize,
    iterations: u64,
    workers: Option<usize>,
) -> PyResult<Bound<'_, PyDict>> {
    let options = options(workers, None, None, None)?;
    let items = vec![iterations; n];
    let report =
        batch::run_cpu_from_python(py, &items, &options, None, |&k, _| Ok::<_, ()>(busy(k)))?;
    report.stats.clone().into_pyobject(py)
}

/// Benchmark: `n` HTTP/1.1 GETs of `http://127.0.0.1:{port}/` with at most `max_concurrency` in
/// flight (async mode, one connection per request). Returns the batch's stats.
#[pyfunction]
#[pyo3(signature = (port, n, *, max_concurrency=64))]
fn batch_http_get(
    py: Python<'_>,
    port: u16,
    n: usize,
    max_concurrency: usize,
) -> PyResult<Bound<'_, PyDict>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = options(None, Some(max_concurrency), None, None)?;
    let report =
        batch::block_on_batch_from_python(py, (0..n).collect(), &options, None, |_| async move {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut response = Vec::with_capacity(256);
            stream.read_to_end(&mut response).await?;
            if response.starts_with(b"HTTP/1.1 200") {
                Ok(response.len())
            } else {
                Err(std::io::Error::other("not a 200 response"))
            }
        })?;
    if report.stats.succeeded != n {
        return Err(PyValueError::new_err(format!(
            "{} of {n} requests failed",
            n - report.stats.succeeded
        )));
    }
    report.stats.clone().into_pyobject(py)
}

/// Benchmark: start a loopback HTTP/1.1 server on the shared runtime that answers every `GET` with
/// `200 ok` after `delay_ms` (keep-alive supported). Returns its port; it runs until the process
/// exits.
#[pyfunction]
fn start_delay_server(py: Python<'_>, delay_ms: u64) -> PyResult<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = gilkit::block_on(py, tokio::net::TcpListener::bind("127.0.0.1:0"))??;
    let port = listener.local_addr()?.port();
    gilkit::runtime::handle().spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::with_capacity(1024);
                let mut chunk = [0_u8; 1024];
                loop {
                    // One request: everything up to the blank line (GET has no body).
                    let end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let close = buffer[..end]
                        .windows(17)
                        .any(|w| w.eq_ignore_ascii_case(b"connection: close"));
                    buffer.drain(..end);
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    let response: &[u8] = if close {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if stream.write_all(response).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// Registers this module's functions, the executor classes and the native functions.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(batch_square, m)?)?;
    m.add_function(wrap_pyfunction!(batch_sleep_async, m)?)?;
    m.add_function(wrap_pyfunction!(batch_trivial, m)?)?;
    m.add_function(wrap_pyfunction!(batch_spin, m)?)?;
    m.add_function(wrap_pyfunction!(batch_busy, m)?)?;
    m.add_function(wrap_pyfunction!(busy_released, m)?)?;
    m.add_function(wrap_pyfunction!(busy_iterations_per_ms, m)?)?;
    m.add_function(wrap_pyfunction!(batch_http_get, m)?)?;
    m.add_function(wrap_pyfunction!(start_delay_server, m)?)?;
    batch::add_executor_classes(m)?;
    m.add(
        "native_spin",
        NativeFn::new("native_spin", |(micros,): (u64,)| {
            Ok::<_, PyErr>(spin_for(Duration::from_micros(micros)))
        }),
    )?;
    m.add(
        "native_sleep",
        NativeFn::new("native_sleep", |(ms, value): (u64, i64)| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, PyErr>(value)
        }),
    )?;
    m.add(
        "native_fail",
        NativeFn::new("native_fail", |(message,): (String,)| {
            Err::<(), _>(PyValueError::new_err(message))
        }),
    )?;
    m.add(
        "native_panic",
        NativeFn::new("native_panic", |(message,): (String,)| -> PyResult<()> {
            panic!("{message}")
        }),
    )?;
    m.add(
        "native_double",
        NativeFn::new("native_double", |(x,): (i64,)| Ok::<_, PyErr>(x * 2)),
    )?;
    Ok(())
}
