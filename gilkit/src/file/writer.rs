//! [`PyWriter`]: a buffered writer to a Python file object (or a path, written by Rust).
//!
//! Bytes are collected in a Rust buffer without the GIL (by `std::io::Write` or by a serializer run
//! in one GIL release with [`PyWriter::serialize`]) and handed to the file object's `write` in
//! large chunks, lent without a copy. The file object's `write` may write less than it was given
//! (a raw or non-blocking stream); the rest is written again, never dropped.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;

use pyo3::exceptions::{PyBlockingIOError, PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::lend;
use super::reader::ReaderOptions;
use super::source::{os_error, text_mode_error, type_name, wait_ready};

/// Counters of what a [`PyWriter`] did. Converts into a Python `dict` keyed by the field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, IntoPyObject)]
#[non_exhaustive]
pub struct WriterStats {
    /// Calls of the file object's `write`, `flush` and `close`.
    pub python_calls: u64,
    /// Bytes handed over to the file object (or file).
    pub bytes_written: u64,
    /// Times the GIL was released and re-acquired by [`PyWriter::serialize`] and waits.
    pub gil_releases: u64,
}

/// A buffered writer to a Python binary file object, or to a path (written by Rust without the
/// GIL), with `flush` and `close` like `io.BufferedWriter`.
///
/// GIL: [`serialize`](Self::serialize) releases it once for the serializer, then holds it to
/// write; the `std::io::Write` impl needs no GIL to buffer and re-acquires it to write a full
/// buffer to a Python file object. Dropping the writer writes what is buffered (re-acquiring the
/// GIL; a failure then goes to `sys.unraisablehook`) but does not close the file object; call
/// [`close`](Self::close) or [`flush_py`](Self::flush_py) to see errors. After a write error the
/// unwritten bytes stay buffered, and a later flush tries them again.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use gilkit::file::PyWriter;
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let out = py.import("io")?.getattr("BytesIO")?.call0()?;
///     let mut writer = PyWriter::from_py(&out)?;
///     let numbers: Vec<u32> = (0..3).collect();
///     // Serialize with the GIL released; write with it.
///     writer.serialize(py, |buf| {
///         for n in &numbers {
///             writeln!(buf, "{n}").unwrap();
///         }
///     })?;
///     writer.flush_py(py)?;
///     assert_eq!(out.call_method0("getvalue")?.extract::<Vec<u8>>()?, b"0\n1\n2\n");
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct PyWriter {
    sink: Sink,
    buf: Vec<u8>,
    capacity: usize,
    closed: bool,
    /// The last write out failed and the caller got that error.
    failed: bool,
    stats: WriterStats,
}

enum Sink {
    Python {
        obj: Py<PyAny>,
        fileno: Option<RawFd>,
        /// `io.RawIOBase`: `write` returning `None` means "would block".
        raw: bool,
    },
    /// A file opened by path; `None` once closed.
    File(Option<File>),
}

impl PyWriter {
    /// A writer to `obj`: a path (`str`/`os.PathLike`, created or truncated, written by Rust) or a
    /// binary file object with `write`.
    ///
    /// GIL: held; a path is opened with it released.
    ///
    /// # Errors
    ///
    /// `TypeError` for a text-mode file or an object without `write`; `OSError` when the path
    /// cannot be created.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<PyWriter> {
        let py = obj.py();
        let sink = if obj.is_instance_of::<PyString>() || obj.hasattr(intern!(py, "__fspath__"))? {
            let path: PathBuf = py
                .import(intern!(py, "os"))?
                .call_method1(intern!(py, "fspath"), (obj,))?
                .extract()?;
            Sink::File(Some(
                crate::detach(py, || File::create(&path)).map_err(|err| os_error(err, &path))?,
            ))
        } else {
            let io = py.import(intern!(py, "io"))?;
            if obj.is_instance(&io.getattr(intern!(py, "TextIOBase"))?)? {
                return Err(text_mode_error(obj));
            }
            if !obj.hasattr(intern!(py, "write"))? {
                return Err(PyTypeError::new_err(format!(
                    "expected a path or a binary file object with write(), got {}",
                    type_name(obj)
                )));
            }
            Sink::Python {
                obj: obj.clone().unbind(),
                fileno: obj
                    .call_method0(intern!(py, "fileno"))
                    .and_then(|fd| fd.extract())
                    .ok(),
                raw: obj.is_instance(&io.getattr(intern!(py, "RawIOBase"))?)?,
            }
        };
        Ok(PyWriter {
            sink,
            buf: Vec::new(),
            capacity: ReaderOptions::DEFAULT_BUFFER_SIZE,
            closed: false,
            failed: false,
            stats: WriterStats::default(),
        })
    }

    /// Sets the buffer size: bytes are handed to the file object once this many are buffered.
    #[must_use]
    pub fn with_capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes.max(1);
        self
    }

    /// Runs `serialize` on the buffer with the GIL released, then writes out the buffer if it is
    /// full.
    ///
    /// GIL: held on entry and return; released once for `serialize`.
    ///
    /// # Errors
    ///
    /// A closed writer gives `ValueError`; the file object's own exception from `write`. What was
    /// not written stays buffered.
    pub fn serialize<R: Send>(
        &mut self,
        py: Python<'_>,
        serialize: impl FnOnce(&mut Vec<u8>) -> R + Send,
    ) -> PyResult<R> {
        self.check_open()?;
        let buf = &mut self.buf;
        let result = crate::detach(py, || serialize(buf));
        self.stats.gil_releases += 1;
        if self.buf.len() >= self.capacity {
            self.write_out(py)?;
        }
        Ok(result)
    }

    /// Writes out the buffer and calls the file object's `flush()`.
    ///
    /// GIL: held.
    ///
    /// # Errors
    ///
    /// `ValueError` if closed; the file object's own exception.
    pub fn flush_py(&mut self, py: Python<'_>) -> PyResult<()> {
        self.check_open()?;
        self.write_out(py)?;
        match &mut self.sink {
            Sink::Python { obj, .. } => {
                self.stats.python_calls += 1;
                obj.bind(py).call_method0(intern!(py, "flush"))?;
            }
            Sink::File(file) => {
                if let Some(file) = file {
                    crate::detach(py, || file.flush())?;
                }
            }
        }
        Ok(())
    }

    /// Flushes, then closes the file object (or file), like `io.BufferedWriter.close()`: the file
    /// object is closed even if flushing fails, and that error is raised. Closing twice does
    /// nothing.
    ///
    /// GIL: held.
    ///
    /// # Errors
    ///
    /// The flush or close error (the close error is chained as the flush error's context).
    pub fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.flush_py(py);
        self.closed = true;
        let closed = match &mut self.sink {
            Sink::Python { obj, .. } => {
                self.stats.python_calls += 1;
                obj.bind(py).call_method0(intern!(py, "close")).map(drop)
            }
            // Dropping the file closes it (like `io.FileIO.close`, without an fsync).
            Sink::File(file) => {
                file.take();
                Ok(())
            }
        };
        match (flushed, closed) {
            (Err(flush), Err(close)) => {
                flush.set_cause(py, Some(close));
                Err(flush)
            }
            (Err(err), Ok(())) | (Ok(()), Err(err)) => Err(err),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes buffered, not yet handed to the file object.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// What the writer did so far.
    pub fn stats(&self) -> WriterStats {
        self.stats.clone()
    }

    fn check_open(&self) -> PyResult<()> {
        if self.closed {
            Err(closed_error())
        } else {
            Ok(())
        }
    }

    /// Hands the whole buffer to the sink, retrying short writes; GIL held. On failure the
    /// unwritten bytes stay buffered.
    fn write_out(&mut self, py: Python<'_>) -> PyResult<()> {
        let result = self.write_out_inner(py);
        self.failed = result.is_err();
        result
    }

    fn write_out_inner(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::File(file) => {
                let file = file.as_mut().ok_or_else(closed_error)?;
                let buf = &self.buf;
                crate::detach(py, || file.write_all(buf))?;
                self.stats.bytes_written += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Sink::Python { obj, fileno, raw } => {
                let obj = obj.bind(py);
                let mut waits = 0;
                while !self.buf.is_empty() {
                    let len = self.buf.len();
                    self.stats.python_calls += 1;
                    let result = lend::with_lent(py, &mut self.buf, 0..len, false, |view| {
                        obj.call_method1(intern!(py, "write"), (view,))
                    });
                    let written = match result {
                        Ok(n) if n.is_none() && *raw => None,
                        Ok(n) if n.is_none() => Some(len),
                        Ok(n) => Some(n.extract::<usize>().map_err(|_| {
                            PyTypeError::new_err(format!(
                                "{}.write() returned {}, expected the number of bytes written",
                                type_name(obj),
                                type_name(&n)
                            ))
                        })?),
                        Err(err) if err.is_instance_of::<PyBlockingIOError>(py) => {
                            // A buffered non-blocking stream: some bytes may have gone in.
                            let partial = err
                                .value(py)
                                .getattr(intern!(py, "characters_written"))
                                .and_then(|n| n.extract::<usize>())
                                .unwrap_or(0);
                            (partial > 0).then_some(partial)
                        }
                        Err(err) => return Err(err),
                    };
                    match written {
                        Some(n) if n > len => {
                            return Err(PyValueError::new_err(format!(
                                "{}.write() returned {n} for {len} bytes",
                                type_name(obj)
                            )));
                        }
                        Some(0) => {
                            return Err(PyOSError::new_err(format!(
                                "{}.write() wrote 0 of {len} bytes; the stream makes no progress",
                                type_name(obj)
                            )));
                        }
                        Some(n) => {
                            self.buf.drain(..n);
                            self.stats.bytes_written += n as u64;
                            waits = 0;
                        }
                        None => {
                            wait_ready(py, *fileno, true, waits)?;
                            self.stats.gil_releases += 1;
                            waits += 1;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// What `io` raises for an operation on a closed file.
fn closed_error() -> PyErr {
    PyValueError::new_err("I/O operation on closed file.")
}

impl Write for PyWriter {
    /// Buffers `data`; a full buffer is written out (re-acquiring the GIL for a file object).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::other(closed_error()));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.capacity {
            Python::attach(|py| self.write_out(py))?;
        }
        Ok(data.len())
    }

    /// Writes out the buffer and flushes the file object (re-acquiring the GIL).
    fn flush(&mut self) -> io::Result<()> {
        Python::attach(|py| self.flush_py(py))?;
        Ok(())
    }
}

impl Drop for PyWriter {
    fn drop(&mut self) {
        // After a failed write the caller already has the error; retrying here would only
        // report it a second time.
        if self.closed || self.failed || self.buf.is_empty() {
            return;
        }
        if let Sink::File(file) = &mut self.sink {
            // Nothing to report to: the same as a dropped BufWriter.
            if let Some(file) = file {
                let _ = file.write_all(&self.buf);
            }
            return;
        }
        let _ = Python::try_attach(|py| {
            if let Err(err) = self.write_out(py) {
                err.write_unraisable(py, None);
            }
        });
    }
}
