//! Where the reader's bytes come from: a path, an in-memory buffer, or a Python binary file.
//!
//! Deliberately minimal: gilkit's file adapter (`gilkit::file`, issue 4) is the general answer and
//! replaces this module once it lands. Until then:
//! - a path (`str` / `os.PathLike`) is read by Rust with the GIL released;
//! - `bytes`, `bytearray`, `memoryview` and other buffers are copied once, up front;
//! - anything else with `read` is a binary file object, read in large chunks with the GIL held
//!   (one Python call per chunk, not per record); a text-mode file is a `TypeError`.

use std::fs::File;
use std::io::Read;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

/// Bytes read per refill from a file.
pub(crate) const CHUNK: usize = 1 << 20;

pub(crate) enum Source {
    /// Everything is already in the reader's buffer.
    Memory,
    /// A file opened by path, read without the GIL.
    File(File),
    /// A Python binary file object.
    Python(Py<PyAny>),
}

impl Source {
    /// Opens `target`, putting in-memory data straight into `buf`.
    ///
    /// Holds the GIL; a path is opened (not read) here.
    ///
    /// # Errors
    ///
    /// `OSError` if a path cannot be opened; `TypeError` for an object that is neither a path, a
    /// buffer nor a binary file.
    pub(crate) fn open(target: &Bound<'_, PyAny>, buf: &mut Vec<u8>) -> PyResult<Self> {
        let py = target.py();
        if let Ok(bytes) = target.cast::<PyBytes>() {
            buf.extend_from_slice(bytes.as_bytes());
            return Ok(Source::Memory);
        }
        if let Ok(array) = target.cast::<PyByteArray>() {
            buf.extend_from_slice(&array.to_vec());
            return Ok(Source::Memory);
        }
        if target.is_instance_of::<PyString>() || target.hasattr("__fspath__")? {
            let path: std::path::PathBuf = target.extract()?;
            let file = File::open(&path).map_err(PyErr::from)?;
            return Ok(Source::File(file));
        }
        if target.hasattr("read")? {
            return Ok(Source::Python(target.clone().unbind()));
        }
        if let Ok(buffer) = PyBuffer::<u8>::get(target) {
            buf.extend_from_slice(&buffer.to_vec(py)?);
            return Ok(Source::Memory);
        }
        Err(PyTypeError::new_err(format!(
            "MARCReader needs a path, bytes or a binary file object, not {}",
            target.get_type().name()?
        )))
    }

    /// Appends up to [`CHUNK`] bytes to `buf`; returns `false` at the end of the data.
    ///
    /// Releases the GIL for a path; holds it to call a Python file's `read`.
    ///
    /// # Errors
    ///
    /// I/O errors as `OSError`; an exception raised by the file object's `read`, unchanged;
    /// `TypeError` if `read` returns text.
    pub(crate) fn fill(&mut self, py: Python<'_>, buf: &mut Vec<u8>) -> PyResult<bool> {
        match self {
            Source::Memory => Ok(false),
            Source::File(file) => {
                let start = buf.len();
                buf.resize(start + CHUNK, 0);
                match gilkit::detach(py, || read_full(file, &mut buf[start..])) {
                    Ok(n) => {
                        buf.truncate(start + n);
                        Ok(n > 0)
                    }
                    Err(e) => {
                        buf.truncate(start);
                        Err(e.into())
                    }
                }
            }
            Source::Python(file) => {
                let data = file.bind(py).call_method1("read", (CHUNK,))?;
                if data.is_none() {
                    // pymarc treats a `None` read as the end of the data.
                    return Ok(false);
                }
                if data.is_instance_of::<PyString>() {
                    return Err(PyTypeError::new_err(
                        "MARCReader needs a binary file: open the file with 'rb', not 'r'",
                    ));
                }
                let bytes = data.cast::<PyBytes>().map_err(|_| {
                    PyTypeError::new_err("the file object's read() must return bytes")
                })?;
                buf.extend_from_slice(bytes.as_bytes());
                Ok(!bytes.as_bytes().is_empty())
            }
        }
    }

    /// The Python file object, if the source is one.
    pub(crate) fn python_file(&self) -> Option<&Py<PyAny>> {
        match self {
            Source::Python(f) => Some(f),
            _ => None,
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
