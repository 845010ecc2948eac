//! Bodies keep their control flow: `?`, early `return`, `Result` types, and the return types
//! that `interruptible` and `async fn` turn into `PyResult`.
#![deny(warnings)] // the expansion must not make user code warn

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[gilkit::nogil]
fn parse(text: String) -> PyResult<u32> {
    if text.is_empty() {
        return Ok(0);
    }
    let n: u32 = text.trim().parse().map_err(|e| PyValueError::new_err(format!("{e}")))?;
    Ok(n * 2)
}

#[derive(Debug)]
struct MyError(String);

impl From<PyErr> for MyError {
    fn from(e: PyErr) -> Self {
        MyError(e.to_string())
    }
}

/// A `Result` with the caller's own error type: `interruptible` merges `PyErr` into it.
#[gilkit::nogil(interruptible)]
fn checked(n: u64) -> Result<u64, MyError> {
    if token.is_cancelled() {
        return Err(MyError("cancelled".into()));
    }
    Ok(n + 1)
}

/// Not a `Result`: `interruptible` makes it `PyResult<u64>`.
#[gilkit::nogil(interruptible, adaptive)]
fn counted(n: u64) -> u64 {
    (0..n).take_while(|_| !token.is_cancelled()).count() as u64
}

/// Returns nothing: `async fn` makes it `PyResult<()>`.
#[gilkit::nogil]
async fn nothing() {
    tokio::task::yield_now().await;
}

/// Borrowed input and output (no closure return annotation is written for it).
#[gilkit::nogil(adaptive)]
fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

fn main() {
    assert_eq!(parse("21".into()).unwrap(), 42);
    assert_eq!(parse(String::new()).unwrap(), 0);
    assert!(parse("x".into()).is_err());
    assert_eq!(checked(1).unwrap(), 2);
    let n: PyResult<u64> = counted(3);
    assert_eq!(n.unwrap(), 3);
    let unit: PyResult<()> = nothing();
    unit.unwrap();
    assert_eq!(first_word("hello world"), "hello");
}
