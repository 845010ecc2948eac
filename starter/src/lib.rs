use pyo3::prelude::*;

/// Counts the primes below `n`. The body runs with the GIL released: other Python threads run
/// meanwhile.
#[gilkit::nogil]
#[pyfunction]
fn count_primes(n: u64) -> u64 {
    let is_prime = |k: u64| (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0);
    (2..n).filter(|&k| is_prime(k)).count() as u64
}

/// Waits `ms` milliseconds on gilkit's tokio runtime, GIL released; Python sees a plain function.
#[gilkit::nogil]
#[pyfunction]
async fn wait_ms(ms: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    ms
}

#[pymodule]
fn starter(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_primes, m)?)?;
    m.add_function(wrap_pyfunction!(wait_ms, m)?)?;
    // `starter.callsite_stats()`: how often each `#[nogil]` function released the GIL.
    gilkit::callsite::add_stats_function(m)
}
