//! Conversions at the Python boundary: texts in (with `TypeError`s that name the culprit), vectors
//! out (lists of floats, or one 2-D `float32` numpy array that takes the Rust buffer without a copy).
//!
//! GIL: every function here needs it (they read or create Python objects).

use gilkit_embed::Embeddings;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
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
