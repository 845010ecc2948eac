//! Conversions at the Python boundary: texts in (with `TypeError`s that name the culprit), vectors
//! out (lists of floats, or one 2-D `float32` numpy array that takes the Rust buffer without a copy).
//!
//! GIL: every function here needs it (they read or create Python objects).

use gilkit_embed::Embeddings;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// Reads a sequence of `str` (list, tuple or any iterable) into owned strings.
///
/// # Errors
///
/// `TypeError` for a lone `str`/`bytes` (a common slip: it would embed each character) or for an
/// item that is not a `str`, naming its index and type.
pub(crate) fn texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of strings, not a single str; use embed() for one text"
        )));
    }
    if obj.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of strings, not bytes; decode it first"
        )));
    }
    let item = |i: usize, x: Bound<'_, PyAny>| -> PyResult<String> {
        match x.cast::<PyString>() {
            Ok(s) => Ok(s.to_str()?.to_owned()),
            Err(_) => Err(PyTypeError::new_err(format!(
                "{what}[{i}] must be str, got {}",
                x.get_type().name()?
            ))),
        }
    };
    if let Ok(list) = obj.cast::<PyList>() {
        return list.iter().enumerate().map(|(i, x)| item(i, x)).collect();
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple.iter().enumerate().map(|(i, x)| item(i, x)).collect();
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a list of strings, got {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    iter.enumerate().map(|(i, x)| item(i, x?)).collect()
}

/// Reads one `str`.
///
/// # Errors
///
/// `TypeError` when `obj` is not a `str`.
pub(crate) fn text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_str()?.to_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "text must be str, got {}; use embed_many() for a list",
            obj.get_type().name()?
        ))),
    }
}

/// Reads a sequence of batches (each a sequence of `str`).
pub(crate) fn batches(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<String>>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "texts_batch must be a list of lists of strings, not a str",
        ));
    }
    obj.try_iter()
        .map_err(|_| PyTypeError::new_err("texts_batch must be a list of lists of strings"))?
        .enumerate()
        .map(|(i, b)| texts(&b?, &format!("texts_batch[{i}]")))
        .collect()
}

/// The vectors as a list of lists of floats, or as a `(n, dim)` `float32` numpy array.
pub(crate) fn vectors<'py>(
    py: Python<'py>,
    emb: Embeddings,
    numpy: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if numpy {
        let (rows, dim) = (emb.len(), emb.dim());
        // `from_vec` hands the Vec's buffer to numpy: no copy.
        let flat = PyArray1::from_vec(py, emb.into_flat());
        return Ok(flat.reshape([rows, dim])?.into_any());
    }
    let list = PyList::empty(py);
    for row in emb.rows() {
        list.append(PyList::new(py, row)?)?;
    }
    Ok(list.into_any())
}

/// One vector as a list of floats (or a 1-D numpy array).
pub(crate) fn vector<'py>(
    py: Python<'py>,
    emb: Embeddings,
    numpy: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if numpy {
        return Ok(PyArray1::from_vec(py, emb.into_flat()).into_any());
    }
    Ok(PyList::new(py, emb.as_flat())?.into_any())
}

/// An integer argument that must be at least `min`, as a `usize`, with a message that names it
/// (instead of "can't convert negative int to unsigned").
///
/// # Errors
///
/// `ValueError` naming `name` when `value < min`.
pub(crate) fn count(name: &str, value: i64, min: usize) -> PyResult<usize> {
    match usize::try_from(value) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be an integer >= {min}, got {value}"
        ))),
    }
}

/// [`count`] for an optional argument (`None` stays `None`).
///
/// # Errors
///
/// As [`count`].
pub(crate) fn opt_count(name: &str, value: Option<i64>, min: usize) -> PyResult<Option<usize>> {
    value.map(|v| count(name, v, min)).transpose()
}

/// A `u32` argument of at least `min`, named in the error.
///
/// # Errors
///
/// `ValueError` naming `name` when `value` is below `min` or above `u32::MAX`.
pub(crate) fn count_u32(name: &str, value: i64, min: u32) -> PyResult<u32> {
    match u32::try_from(value) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be an integer from {min} to {}, got {value}",
            u32::MAX
        ))),
    }
}

/// A duration argument given in `unit` ("seconds" or "milliseconds"): finite and positive.
///
/// # Errors
///
/// `ValueError` naming `name` and echoing the value as given.
pub(crate) fn duration(name: &str, value: f64, unit: &str) -> PyResult<std::time::Duration> {
    let scale = if unit == "milliseconds" { 1e-3 } else { 1.0 };
    if !value.is_finite() || value <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of {unit}, got {value}"
        )));
    }
    std::time::Duration::try_from_secs_f64(value * scale)
        .map_err(|_| PyValueError::new_err(format!("{name} is too large: {value} {unit}")))
}
