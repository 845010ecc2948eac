use pyo3::prelude::*;

/// Counts the primes below `n` with the GIL released.
#[pyfunction]
fn count_primes(py: Python<'_>, n: u64) -> u64 {
    py.detach(|| {
        let is_prime = |k: u64| (2..k).take_while(|d| d * d <= k).all(|d| k % d != 0);
        (2..n).filter(|&k| is_prime(k)).count() as u64
    })
}

/// Waits `ms` milliseconds with the GIL released.
#[pyfunction]
fn wait_ms(py: Python<'_>, ms: u64) -> u64 {
    py.detach(|| std::thread::sleep(std::time::Duration::from_millis(ms)));
    ms
}

#[pymodule]
fn plain(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_primes, m)?)?;
    m.add_function(wrap_pyfunction!(wait_ms, m)?)
}
