//! The one place where Rust errors become Python exceptions.
//!
//! Input errors become the built-in `ValueError`; everything else an exception class of
//! `gilkit_embed.errors` (declared once, in Python, so users can import and catch them), carrying
//! the status, the API's message, the request id and the attempt count as attributes.

use gilkit_embed::{EmbedError, TransportKind};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Converts `err` to the matching `gilkit_embed.errors` exception (or `ValueError`).
///
/// GIL: needs it (creates Python objects).
pub(crate) fn to_py(py: Python<'_>, err: &EmbedError) -> PyErr {
    match build(py, err) {
        Ok(e) => e,
        // Only if gilkit_embed.errors cannot be imported (a broken install): still say what failed.
        Err(import_err) => PyRuntimeError::new_err(format!("{err} (and: {import_err})")),
    }
}

fn build(py: Python<'_>, err: &EmbedError) -> PyResult<PyErr> {
    let errors = py.import("gilkit_embed.errors")?;
    let message = err.to_string();
    let kwargs = PyDict::new(py);
    let class = match err {
        EmbedError::InvalidInput(_) => return Ok(PyValueError::new_err(message)),
        EmbedError::Api(api) => {
            kwargs.set_item("status_code", api.status)?;
            kwargs.set_item("api_message", &api.message)?;
            kwargs.set_item("request_id", &api.request_id)?;
            kwargs.set_item("type", &api.error_type)?;
            kwargs.set_item("code", &api.code)?;
            kwargs.set_item("attempts", api.attempts)?;
            if api.status == 429 {
                "RateLimitError"
            } else {
                "APIStatusError"
            }
        }
        EmbedError::Transport(t) => {
            kwargs.set_item("request_id", &t.request_id)?;
            kwargs.set_item("attempts", t.attempts)?;
            if t.kind == TransportKind::Timeout {
                "APITimeoutError"
            } else {
                "APIConnectionError"
            }
        }
        EmbedError::Decode(d) => {
            kwargs.set_item("status_code", d.status)?;
            kwargs.set_item("request_id", &d.request_id)?;
            kwargs.set_item("attempts", 1)?;
            "APIResponseValidationError"
        }
        EmbedError::CircuitOpen { retry_in, .. } => {
            kwargs.set_item("retry_in", retry_in.as_secs_f64())?;
            "CircuitOpenError"
        }
        EmbedError::Overloaded { retry_after, .. } => {
            kwargs.set_item("retry_after", retry_after.as_secs_f64())?;
            "ServiceOverloadedError"
        }
        EmbedError::Provider(_) => "ModelError",
        EmbedError::Cancelled => "EmbeddingError",
        _ => "EmbeddingError",
    };
    let exc = errors.getattr(class)?.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(exc))
}

/// Converts `err` to the exception *object* (for `embed_batch_parallel`'s `errors` list).
pub(crate) fn to_py_value<'py>(py: Python<'py>, err: &EmbedError) -> Bound<'py, PyAny> {
    to_py(py, err).into_value(py).into_bound(py).into_any()
}
