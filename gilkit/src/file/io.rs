//! `std::io` adapters: [`PyReader`] (`Read`, `BufRead`, `Seek`) over any [`Source`].
//!
//! For Rust parsers that want a reader (`serde_json::from_reader`, `csv`, a decompressor) rather
//! than framed records. Run the parser inside one GIL release; the reader re-acquires the GIL only
//! to refill its buffer from a Python file object (one `readinto` per refill), and never for paths
//! or memory. A Python exception from the file object travels through `io::Error` and comes back
//! unchanged from `PyErr::from(io_error)`.

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use pyo3::intern;
use pyo3::prelude::*;

use super::reader::{Buffer, ReaderOptions, Storage};
use super::source::{FileObject, Inner, ReadMethod, ReadStep, Source, wait_ready};

/// A buffered `std::io::Read` + `BufRead` + `Seek` over a [`Source`].
///
/// A source built from a regular Python file opened with `open(path, 'rb')` is read through the
/// file object here (not its descriptor), so that the object's position is always right.
///
/// GIL: none needed to create or use it; refilling from a Python file object re-acquires the GIL
/// for one call (so use it inside `py.detach` / `gilkit::detach`, or with the GIL held).
///
/// # Examples
///
/// ```
/// use std::io::BufRead;
/// use gilkit::file::{PyReader, Source};
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let file = py.import("io")?.getattr("BytesIO")?.call1((&b"one\ntwo\n"[..],))?;
///     let reader = PyReader::new(Source::from_py(&file)?);
///     // Parse with the GIL released; each refill re-acquires it briefly.
///     let lines = gilkit::detach(py, || reader.lines().collect::<std::io::Result<Vec<String>>>())?;
///     assert_eq!(lines, ["one", "two"]);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct PyReader {
    source: Source,
    buf: Buffer,
    eof: bool,
    /// The buffer is the whole input.
    memory: bool,
}

impl PyReader {
    /// A reader with the default buffer size ([`ReaderOptions::DEFAULT_BUFFER_SIZE`]).
    pub fn new(source: Source) -> PyReader {
        PyReader::with_capacity(ReaderOptions::DEFAULT_BUFFER_SIZE, source)
    }

    /// A reader that refills `capacity` bytes at a time.
    pub fn with_capacity(capacity: usize, source: Source) -> PyReader {
        let mut source = source;
        let (buf, eof) = match std::mem::replace(&mut source.inner, Inner::Owned(Vec::new())) {
            Inner::Bytes(bytes) => (Buffer::memory(Storage::Bytes(bytes)), true),
            Inner::Owned(vec) => (Buffer::memory(Storage::Vec(vec)), true),
            Inner::Fd(fd) => {
                source.inner = Inner::FileObject(FileObject {
                    obj: fd.obj,
                    method: ReadMethod::ReadInto,
                    fileno: None,
                });
                (Buffer::empty(capacity), false)
            }
            other => {
                source.inner = other;
                (Buffer::empty(capacity), false)
            }
        };
        PyReader {
            source,
            buf,
            eof,
            memory: eof,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        self.buf.start = 0;
        self.buf.end = 0;
        let Storage::Vec(data) = &mut self.buf.storage else {
            unreachable!("memory is never refilled")
        };
        let window = 0..data.len();
        let step = match &self.source.inner {
            Inner::FileObject(file) => Python::attach(|py| -> PyResult<ReadStep> {
                let mut waits = 0;
                loop {
                    match file.read_once(py, data, window.clone())? {
                        ReadStep::WouldBlock => {
                            wait_ready(py, file.fileno, false, waits)?;
                            waits += 1;
                        }
                        step => return Ok(step),
                    }
                }
            })?,
            _ => {
                let mut waits = 0;
                loop {
                    match self.source.read_detached(data)? {
                        // A FIFO or terminal path with no data: wait, letting Ctrl-C through.
                        ReadStep::WouldBlock => {
                            let fd = self.source.stream_fd();
                            Python::attach(|py| wait_ready(py, fd, false, waits))?;
                            waits += 1;
                        }
                        step => break step,
                    }
                }
            }
        };
        match step {
            ReadStep::Data(n) => self.buf.end = n,
            ReadStep::Eof | ReadStep::WouldBlock => self.eof = true,
        }
        Ok(())
    }
}

impl Read for PyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for PyReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buf.start == self.buf.end && !self.eof {
            self.refill()?;
        }
        Ok(&self.buf.as_slice()[self.buf.start..self.buf.end])
    }

    fn consume(&mut self, amount: usize) {
        self.buf.start = (self.buf.start + amount).min(self.buf.end);
    }
}

impl Seek for PyReader {
    /// Seeks like the underlying input; buffered bytes are discarded (except in memory).
    ///
    /// GIL: re-acquired for a Python file object (one `seek` call).
    ///
    /// # Errors
    ///
    /// `Unsupported` for a Rust reader source; the file object's own exception otherwise.
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let buffered = (self.buf.end - self.buf.start) as i64;
        if self.memory {
            let len = self.buf.capacity() as i64;
            let target = match pos {
                SeekFrom::Start(n) => n as i64,
                SeekFrom::Current(n) => self.buf.start as i64 + n,
                SeekFrom::End(n) => len + n,
            };
            if target < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "invalid seek to a negative position",
                ));
            }
            self.buf.start = target.min(len) as usize;
            self.buf.end = len as usize;
            return Ok(target as u64);
        }
        let new_pos = match &mut self.source.inner {
            Inner::Path(file) | Inner::Stream(file) => match pos {
                SeekFrom::Current(n) => file.seek(SeekFrom::Current(n - buffered))?,
                other => file.seek(other)?,
            },
            Inner::FileObject(file) => Python::attach(|py| -> PyResult<u64> {
                let (offset, whence) = match pos {
                    SeekFrom::Start(n) => (n as i64, 0),
                    SeekFrom::Current(n) => (n - buffered, 1),
                    SeekFrom::End(n) => (n, 2),
                };
                file.obj
                    .bind(py)
                    .call_method1(intern!(py, "seek"), (offset, whence))?
                    .extract()
            })?,
            Inner::Reader(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a Rust reader source cannot seek",
                ));
            }
            Inner::Bytes(_) | Inner::Owned(_) | Inner::Fd(_) => unreachable!(),
        };
        self.buf.start = 0;
        self.buf.end = 0;
        self.eof = false;
        Ok(new_pos)
    }
}
