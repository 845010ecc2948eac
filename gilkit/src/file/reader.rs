//! The three-phase record reader.
//!
//! Each call of [`RecordReader::next_batch`]:
//!
//! 1. **Phase 1, GIL held** (Python file objects only): refill the buffer with `readinto` calls
//!    into Rust-owned memory, as many as it takes to fill it (usually one).
//! 2. **Phase 2, GIL released** (one release): for paths, descriptors and Rust readers, refill the
//!    buffer here instead; then run the [`Framing`] over the buffer and the caller's parser over
//!    every complete record found (up to `max_batch`).
//! 3. **Phase 3, GIL held**: the batch is returned to the caller, who converts it to Python objects.
//!
//! The buffer keeps the unconsumed tail (a record cut by the chunk edge) and moves it to the front
//! before the next refill; it grows when one record does not fit, and shrinks back afterwards.
//!
//! Errors keep their place in the stream: records framed before an error are returned first and
//! the error comes with the next call. After a recoverable error (a Python exception from `read`,
//! a recoverable framing error) the following call goes on reading; after truncated input or a
//! fatal framing error the reader is finished.

use std::error::Error;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyEOFError, PyValueError};
use pyo3::prelude::*;
use sync_wrapper::SyncWrapper;

use super::framing::{Frame, Framing, FramingError};
use super::source::{Inner, ReadStep, Source, wait_ready};

/// Tuning for a [`RecordReader`].
///
/// # Examples
///
/// ```
/// use gilkit::file::ReaderOptions;
///
/// let opts = ReaderOptions::default().buffer_size(1 << 20).max_batch(1000);
/// assert_eq!(opts.get_buffer_size(), 1 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct ReaderOptions {
    buffer_size: usize,
    max_batch: usize,
    max_record_size: usize,
}

impl ReaderOptions {
    /// The default buffer size, chosen by `benches/file` (see `benches/results/file.md` in the gilkit source repository).
    pub const DEFAULT_BUFFER_SIZE: usize = 256 * 1024;

    /// Bytes read per refill (default [`DEFAULT_BUFFER_SIZE`](Self::DEFAULT_BUFFER_SIZE);
    /// at least 1).
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(1);
        self
    }

    /// The most records parsed per batch (default 4096; at least 1).
    #[must_use]
    pub fn max_batch(mut self, records: usize) -> Self {
        self.max_batch = records.max(1);
        self
    }

    /// The largest record the buffer grows to hold (default 1 GiB); a longer one is an error.
    #[must_use]
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes.max(1);
        self
    }

    /// The buffer size set.
    pub fn get_buffer_size(&self) -> usize {
        self.buffer_size
    }
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            buffer_size: Self::DEFAULT_BUFFER_SIZE,
            max_batch: 4096,
            max_record_size: 1 << 30,
        }
    }
}

/// Counters of what a [`RecordReader`] did, for benchmarks and tuning. Converts into a Python
/// `dict` keyed by the field names (`released_s` in float seconds; [the
/// convention](crate::stats#stats-in-python)).
#[derive(Clone, Debug, Default, PartialEq, Eq, IntoPyObject)]
#[non_exhaustive]
pub struct ReaderStats {
    /// Calls into the Python file object (`readinto`, `read`, `seek`).
    pub python_calls: u64,
    /// Times the GIL was released and taken again.
    pub gil_releases: u64,
    /// Batches returned.
    pub batches: u64,
    /// Records parsed.
    pub records: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Time spent with the GIL released (phase 2, and waits for non-blocking sources).
    #[pyo3(item("released_s"), into_py_with = crate::stats::seconds)]
    pub released: Duration,
    /// The buffer's current size in bytes.
    pub buffer_capacity: usize,
}

/// A failure while reading records, with the byte offset (from where the reader started) at
/// which it happened.
///
/// Converting it into a [`PyErr`] (at the Python boundary) gives: the file object's own exception,
/// unchanged, for [`is_python`](Self::is_python); `OSError` (and subclasses) for
/// [`is_io`](Self::is_io); `EOFError` for [`is_truncated`](Self::is_truncated); `ValueError` for
/// framing errors and oversized records.
#[derive(Debug)]
pub struct ReadError {
    repr: Repr,
    offset: u64,
}

#[derive(Debug)]
enum Repr {
    Python(PyErr),
    Io(io::Error),
    Truncated(Vec<u8>),
    Framing(FramingError),
    TooLarge { limit: usize },
}

impl ReadError {
    pub(crate) fn python(err: PyErr, offset: u64) -> Self {
        ReadError {
            repr: Repr::Python(err),
            offset,
        }
    }

    pub(crate) fn io(err: io::Error, offset: u64) -> Self {
        ReadError {
            repr: Repr::Io(err),
            offset,
        }
    }

    /// The byte offset of the problem, counted from where reading started. For truncated input
    /// and framing errors it is the offset just after the last complete record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file object's `read`/`readinto`/`seek` raised (see [`python_error`](Self::python_error)).
    pub fn is_python(&self) -> bool {
        matches!(self.repr, Repr::Python(_))
    }

    /// Reading a path, descriptor or Rust reader failed.
    pub fn is_io(&self) -> bool {
        matches!(self.repr, Repr::Io(_))
    }

    /// The input ended inside a record (see [`remainder`](Self::remainder)).
    pub fn is_truncated(&self) -> bool {
        matches!(self.repr, Repr::Truncated(_))
    }

    /// The framing found malformed input (see [`framing_error`](Self::framing_error)).
    pub fn is_framing(&self) -> bool {
        matches!(self.repr, Repr::Framing(_))
    }

    /// A record was larger than [`ReaderOptions::max_record_size`].
    pub fn is_too_large(&self) -> bool {
        matches!(self.repr, Repr::TooLarge { .. })
    }

    /// The Python exception, for [`is_python`](Self::is_python).
    pub fn python_error(&self) -> Option<&PyErr> {
        match &self.repr {
            Repr::Python(err) => Some(err),
            _ => None,
        }
    }

    /// The framing's error, for [`is_framing`](Self::is_framing).
    pub fn framing_error(&self) -> Option<&FramingError> {
        match &self.repr {
            Repr::Framing(err) => Some(err),
            _ => None,
        }
    }

    /// The bytes of the incomplete last record, for [`is_truncated`](Self::is_truncated).
    pub fn remainder(&self) -> Option<&[u8]> {
        match &self.repr {
            Repr::Truncated(rest) => Some(rest),
            _ => None,
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.offset;
        match &self.repr {
            Repr::Python(err) => write!(f, "the file object raised {err}"),
            Repr::Io(err) => write!(f, "reading failed after byte offset {offset}: {err}"),
            Repr::Truncated(rest) => write!(
                f,
                "the input ends inside a record: the last {} bytes, from byte offset {offset} \
                 (just after the last complete record), are not a complete record; \
                 the file may be truncated",
                rest.len()
            ),
            Repr::Framing(err) => {
                write!(f, "malformed input at byte offset {offset}: {err}")?;
                match err.skip() {
                    Some(skip) => write!(f, " ({skip} bytes skipped, reading goes on)"),
                    None => write!(f, " (reading stops)"),
                }
            }
            Repr::TooLarge { limit } => write!(
                f,
                "the record at byte offset {offset} is larger than the {limit}-byte limit; \
                 raise ReaderOptions::max_record_size if the input is right"
            ),
        }
    }
}

impl Error for ReadError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.repr {
            Repr::Python(err) => Some(err),
            Repr::Io(err) => Some(err),
            Repr::Framing(err) => Some(err),
            Repr::Truncated(_) | Repr::TooLarge { .. } => None,
        }
    }
}

impl From<ReadError> for PyErr {
    fn from(err: ReadError) -> PyErr {
        let message = err.to_string();
        match err.repr {
            Repr::Python(err) => err,
            Repr::Io(io) => {
                let py_err = PyErr::from(io);
                Python::attach(|py| add_note(py, &py_err, message));
                py_err
            }
            Repr::Truncated(_) => PyEOFError::new_err(message),
            Repr::Framing(_) | Repr::TooLarge { .. } => PyValueError::new_err(message),
        }
    }
}

/// Appends `note` to the exception's `__notes__` (PEP 678), as `BaseException.add_note` does.
///
/// Written by hand rather than with `PyErr::add_note` (Python 3.11+ only) so that every supported
/// version gets the note: Python 3.11+ prints it under the traceback; 3.9 and 3.10 keep it in
/// `__notes__` without printing it. Best effort: a failure leaves the exception without its note.
fn add_note(py: Python<'_>, err: &PyErr, note: String) {
    let value = err.value(py);
    let notes = match value.getattr(pyo3::intern!(py, "__notes__")) {
        Ok(notes) => notes,
        Err(_) => {
            let notes = pyo3::types::PyList::empty(py).into_any();
            if value
                .setattr(pyo3::intern!(py, "__notes__"), &notes)
                .is_err()
            {
                return;
            }
            notes
        }
    };
    notes
        .call_method1(pyo3::intern!(py, "append"), (note,))
        .ok();
}

/// Reads records from a [`Source`] in batches: read with the GIL, frame and parse without it,
/// convert with it.
///
/// # Examples
///
/// ```
/// use gilkit::file::{Lines, ReaderOptions, RecordReader, Source};
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let file = py.import("io")?.getattr("BytesIO")?.call1((&b"3\n1\n4\n"[..],))?;
///     let mut reader = RecordReader::new(Source::from_py(&file)?, Lines::new(), ReaderOptions::default());
///     let mut total = 0;
///     // The parser runs with the GIL released, once per record of the batch.
///     while let Some(batch) = reader.next_batch(py, |line| std::str::from_utf8(line).unwrap().parse::<u32>().unwrap())? {
///         total += batch.iter().sum::<u32>();
///     }
///     assert_eq!(total, 8);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct RecordReader<Fr> {
    source: Source,
    /// Used only through `&mut self`: the reader is `Sync` (as `#[pyclass]` needs) even when the
    /// framing is not.
    framing: SyncWrapper<Fr>,
    buf: Buffer,
    opts: ReaderOptions,
    /// No more input will come.
    eof: bool,
    /// The last framing pass ended on an incomplete record: refill before framing again.
    need_input: bool,
    /// The size the incomplete record said it needs, if known.
    needed: Option<usize>,
    /// No more records or errors.
    done: bool,
    /// A read failure not yet reported: reported once the buffered records are delivered.
    read_error: Option<ReadError>,
    /// An error to return from the next call (records before it were returned first).
    deferred: Option<ReadError>,
    /// Stream offset of `buf.start`.
    offset: u64,
    /// The last read of a polled path (a FIFO) found no data: wait before reading again.
    starved: bool,
    /// Waits in a row for a polled path (the wait grows from 1 ms to 50 ms).
    stream_waits: u32,
    stats: ReaderStats,
}

impl<Fr: Framing> RecordReader<Fr> {
    /// A reader of `source`'s records as delimited by `framing`.
    pub fn new(source: Source, framing: Fr, opts: ReaderOptions) -> Self {
        let mut source = source;
        let (buf, eof) = match std::mem::replace(&mut source.inner, Inner::Owned(Vec::new())) {
            Inner::Bytes(bytes) => (Buffer::memory(Storage::Bytes(bytes)), true),
            Inner::Owned(vec) => (Buffer::memory(Storage::Vec(vec)), true),
            other => {
                source.inner = other;
                (Buffer::empty(opts.buffer_size), false)
            }
        };
        let stats = ReaderStats {
            buffer_capacity: buf.capacity(),
            ..ReaderStats::default()
        };
        RecordReader {
            source,
            framing: SyncWrapper::new(framing),
            buf,
            opts,
            eof,
            need_input: !eof,
            needed: None,
            done: false,
            read_error: None,
            deferred: None,
            offset: 0,
            starved: false,
            stream_waits: 0,
            stats,
        }
    }

    /// Builds the reader straight from a Python object (see [`Source::from_py`]).
    ///
    /// GIL: held.
    ///
    /// # Errors
    ///
    /// As [`Source::from_py`].
    pub fn from_py(obj: &Bound<'_, PyAny>, framing: Fr, opts: ReaderOptions) -> PyResult<Self> {
        Ok(Self::new(Source::from_py(obj)?, framing, opts))
    }

    /// Reads the next batch of records and parses each with `parse`; `None` at the end.
    ///
    /// GIL: held on entry and on return; released once in between, for reading (unless the source
    /// is a Python file object, read just before with the GIL held), framing and all the
    /// `parse` calls of the batch. A non-blocking file object with no data is waited on with the
    /// GIL released too.
    ///
    /// # Errors
    ///
    /// See [`ReadError`]. Records framed before an error are returned first; the error comes from
    /// the next call. After a Python exception from the file object or a recoverable framing
    /// error, calling again goes on; after truncated input or a fatal error it returns `Ok(None)`.
    ///
    /// # Panics
    ///
    /// If the framing breaks its contract (a record or skip of 0 bytes, or longer than the input
    /// it was given), or `parse` panics (the panic passes through; the reader should then be
    /// dropped).
    pub fn next_batch<T, P>(
        &mut self,
        py: Python<'_>,
        mut parse: P,
    ) -> Result<Option<Vec<T>>, ReadError>
    where
        T: Send,
        P: FnMut(&[u8]) -> T + Send,
    {
        if let Some(err) = self.deferred.take() {
            return Err(err);
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let refill = self.need_input && !self.eof && self.read_error.is_none();
            if refill {
                self.make_room()?;
            }
            if refill && std::mem::take(&mut self.starved) {
                // A FIFO or terminal path with no data: wait for it with the GIL released, and
                // run signal handlers (Ctrl-C) between waits, as for a non-blocking file object.
                let started = Instant::now();
                wait_ready(py, self.source.stream_fd(), false, self.stream_waits)
                    .map_err(|err| ReadError::python(err, self.read_offset()))?;
                self.stats.released += started.elapsed();
                self.stats.gil_releases += 1;
                self.stream_waits += 1;
            }
            if refill
                && self.source.needs_gil()
                && let Err(err) = self.fill_attached(py)
            {
                self.read_error = Some(err);
            }
            let started = Instant::now();
            let detached_refill = refill && !self.source.needs_gil();
            let pass = crate::detach(py, || {
                if detached_refill && let Err(err) = self.fill_detached() {
                    self.read_error = Some(err);
                }
                self.frame_and_parse(&mut parse)
            });
            self.stats.released += started.elapsed();
            self.stats.gil_releases += 1;
            if detached_refill {
                match self.source.sync_position(py) {
                    Ok(true) => self.stats.python_calls += 1,
                    Ok(false) => {}
                    Err(err) => {
                        self.read_error
                            .get_or_insert(ReadError::python(err, self.read_offset()));
                    }
                }
            }
            let error = self.after_pass(pass.stop);
            let records = pass.records;
            if records.is_empty() {
                match error {
                    Some(err) => return Err(err),
                    None => continue,
                }
            }
            self.deferred = error;
            self.stats.batches += 1;
            self.stats.records += records.len() as u64;
            return Ok(Some(records));
        }
    }

    /// Reads and parses records (as [`next_batch`](Self::next_batch): parsing with the GIL
    /// released, one batch at a time) and hands each to `each`, in order, with the GIL held, until
    /// the input ends, `each` stops the read or `each` fails it.
    ///
    /// `each` returns `Ok(ControlFlow::Continue(()))` to go on, `Ok(ControlFlow::Break(b))` to stop
    /// (this returns `Ok(Some(b))`), or `Err(e)` to fail the read (this returns `Err(e)`). A parse
    /// that can fail returns a `Result` as its `T`, and `each` passes its error on with `?`. A
    /// [`ReadError`] becomes `E` through `From` (`PyErr` has that conversion).
    ///
    /// Stopping takes effect between records, but parsing runs a batch ahead: the rest of the batch
    /// the stopping record came from (at most [`ReaderOptions::max_batch`] records) was parsed and
    /// is dropped, and the reader's [`offset`](Self::offset) is past that batch. Returns `Ok(None)`
    /// at the end of the input.
    ///
    /// GIL: released while reading from a path or buffer and while parsing; held for `each` and
    /// for a Python file object's reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use gilkit::file::{Lines, ReaderOptions, RecordReader, Source};
    /// use pyo3::prelude::*;
    ///
    /// Python::attach(|py| -> PyResult<()> {
    ///     let input = b"1\n2\nx\n4\n".to_vec();
    ///     let mut reader = RecordReader::new(Source::from_vec(input), Lines::new(), ReaderOptions::default());
    ///     let mut sum = 0;
    ///     // The first record that is not a number fails the read, with the records before it kept.
    ///     let err = reader
    ///         .try_for_each(py, |rec| std::str::from_utf8(rec).ok()?.trim().parse::<u64>().ok(), |_py, n| {
    ///             sum += n.ok_or_else(|| pyo3::exceptions::PyValueError::new_err("not a number"))?;
    ///             Ok::<_, PyErr>(ControlFlow::<()>::Continue(()))
    ///         })
    ///         .unwrap_err();
    ///     assert_eq!(sum, 3);
    ///     assert!(err.to_string().contains("not a number"));
    ///     Ok(())
    /// }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// `each`'s error, or a [`ReadError`] converted into `E`.
    ///
    /// # Panics
    ///
    /// As [`next_batch`](Self::next_batch).
    pub fn try_for_each<T, P, B, E, F>(
        &mut self,
        py: Python<'_>,
        mut parse: P,
        mut each: F,
    ) -> Result<Option<B>, E>
    where
        T: Send,
        P: FnMut(&[u8]) -> T + Send,
        E: From<ReadError>,
        F: FnMut(Python<'_>, T) -> Result<std::ops::ControlFlow<B>, E>,
    {
        while let Some(batch) = self.next_batch(py, &mut parse)? {
            for record in batch {
                if let std::ops::ControlFlow::Break(b) = each(py, record)? {
                    return Ok(Some(b));
                }
            }
        }
        Ok(None)
    }

    /// Turns the reader into a record-at-a-time iterator that parses with `parse` (one batch per
    /// GIL release, as [`next_batch`](Self::next_batch)).
    pub fn records<T, P>(self, parse: P) -> Records<Fr, T, P>
    where
        T: Send,
        P: FnMut(&[u8]) -> T + Send,
    {
        Records {
            reader: self,
            parse: SyncWrapper::new(parse),
            ready: SyncWrapper::new(Vec::new().into_iter()),
        }
    }

    /// What the reader did so far.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            buffer_capacity: self.buf.capacity(),
            ..self.stats.clone()
        }
    }

    /// The byte offset (from where reading started) of the first byte not yet consumed as part of
    /// a record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The framing, e.g. to read state a custom framing collected.
    pub fn framing_mut(&mut self) -> &mut Fr {
        self.framing.get_mut()
    }

    /// Offset just after the last byte read from the source.
    fn read_offset(&self) -> u64 {
        self.offset + (self.buf.end - self.buf.start) as u64
    }

    /// Makes room for a refill: moves the unconsumed tail to the front, grows the buffer when the
    /// tail fills it (one record larger than the buffer), shrinks it back after such a record.
    fn make_room(&mut self) -> Result<(), ReadError> {
        self.buf.compact();
        let pending = self.buf.end;
        let capacity = self.buf.capacity();
        let mut want = capacity;
        if pending == capacity {
            want = capacity.saturating_mul(2);
        }
        if let Some(needed) = self.needed {
            want = want.max(needed);
        }
        if want > capacity {
            let limit = self.opts.max_record_size;
            if want > limit {
                if pending >= limit || self.needed.is_some_and(|n| n > limit) {
                    self.done = true;
                    return Err(ReadError {
                        repr: Repr::TooLarge { limit },
                        offset: self.offset,
                    });
                }
                want = limit;
            }
            self.buf.resize(want);
        } else if capacity > self.opts.buffer_size.saturating_mul(4)
            && pending <= self.opts.buffer_size
        {
            self.buf
                .resize(self.opts.buffer_size.max(self.needed.unwrap_or(0)));
        }
        Ok(())
    }

    /// Phase 1 for Python file objects: `readinto` until the buffer is full, EOF, or a
    /// non-blocking source has nothing more right now (after at least some bytes).
    fn fill_attached(&mut self, py: Python<'_>) -> Result<(), ReadError> {
        let Inner::FileObject(file) = &self.source.inner else {
            unreachable!("fill_attached on a source read without the GIL")
        };
        let Storage::Vec(data) = &mut self.buf.storage else {
            unreachable!("memory sources are never refilled")
        };
        let before = self.buf.end;
        let mut waits = 0;
        while self.buf.end < data.len() {
            let window = self.buf.end..data.len();
            self.stats.python_calls += 1;
            let step = file
                .read_once(py, data, window)
                .map_err(|err| ReadError::python(err, self.offset + self.buf.end as u64))?;
            match step {
                ReadStep::Data(n) => {
                    self.buf.end += n;
                    self.stats.bytes_read += n as u64;
                    waits = 0;
                }
                ReadStep::Eof => {
                    self.eof = true;
                    break;
                }
                ReadStep::WouldBlock if self.buf.end > before => break,
                ReadStep::WouldBlock => {
                    let started = Instant::now();
                    wait_ready(py, file.fileno, false, waits)
                        .map_err(|err| ReadError::python(err, self.offset + self.buf.end as u64))?;
                    self.stats.released += started.elapsed();
                    self.stats.gil_releases += 1;
                    waits += 1;
                }
            }
        }
        Ok(())
    }

    /// The refill of phase 2, for sources read by Rust: read until full or EOF.
    fn fill_detached(&mut self) -> Result<(), ReadError> {
        let Storage::Vec(data) = &mut self.buf.storage else {
            unreachable!("memory sources are never refilled")
        };
        let before = self.buf.end;
        while self.buf.end < data.len() {
            match self.source.read_detached(&mut data[self.buf.end..]) {
                Ok(ReadStep::Data(n)) => {
                    self.buf.end += n;
                    self.stats.bytes_read += n as u64;
                    self.stream_waits = 0;
                }
                Ok(ReadStep::Eof) => {
                    self.eof = true;
                    break;
                }
                // A polled path with nothing more now: frame what came; wait only if nothing did.
                Ok(ReadStep::WouldBlock) => {
                    self.starved = self.buf.end == before;
                    break;
                }
                Err(err) => return Err(ReadError::io(err, self.offset + self.buf.end as u64)),
            }
        }
        Ok(())
    }

    /// Phase 2: frame and parse up to `max_batch` records from the buffer.
    fn frame_and_parse<T, P: FnMut(&[u8]) -> T>(&mut self, parse: &mut P) -> Pass<T> {
        let data = self.buf.as_slice();
        let end = self.buf.end;
        let mut at = self.buf.start;
        let mut records = Vec::new();
        let stop = loop {
            if records.len() >= self.opts.max_batch {
                break Stop::BatchFull;
            }
            let rest = &data[at..end];
            if rest.is_empty() {
                break Stop::Incomplete(None);
            }
            match self.framing.get_mut().next_record(rest, self.eof) {
                Ok(Frame::Record { consumed, record }) => {
                    assert!(
                        consumed > 0
                            && consumed <= rest.len()
                            && record.end <= consumed
                            && record.start <= record.end,
                        "Framing::next_record returned Record {{ consumed: {consumed}, record: {record:?} }} \
                         for {} bytes of input",
                        rest.len()
                    );
                    records.push(parse(&rest[record]));
                    at += consumed;
                }
                Ok(Frame::Skip(skip)) => {
                    assert!(
                        skip > 0 && skip <= rest.len(),
                        "Framing::next_record returned Skip({skip}) for {} bytes of input",
                        rest.len()
                    );
                    at += skip;
                }
                Ok(Frame::Incomplete { needed }) => break Stop::Incomplete(needed),
                Err(err) => break Stop::Framing(err),
            }
        };
        self.offset += (at - self.buf.start) as u64;
        self.buf.start = at;
        Pass { records, stop }
    }

    /// Updates the state after a framing pass; returns the error to report, if any.
    fn after_pass(&mut self, stop: Stop) -> Option<ReadError> {
        match stop {
            Stop::BatchFull => {
                self.need_input = false;
                None
            }
            Stop::Incomplete(needed) => {
                self.need_input = true;
                self.needed = needed;
                if let Some(err) = self.read_error.take() {
                    Some(err)
                } else if self.eof {
                    self.done = true;
                    let rest = &self.buf.as_slice()[self.buf.start..self.buf.end];
                    (!rest.is_empty()).then(|| ReadError {
                        repr: Repr::Truncated(rest.to_vec()),
                        offset: self.offset,
                    })
                } else {
                    None
                }
            }
            Stop::Framing(err) => {
                let offset = self.offset;
                match err.skip() {
                    Some(skip) => {
                        let skip = skip.min(self.buf.end - self.buf.start);
                        self.buf.start += skip;
                        self.offset += skip as u64;
                        self.need_input = false;
                    }
                    None => self.done = true,
                }
                Some(ReadError {
                    repr: Repr::Framing(err),
                    offset,
                })
            }
        }
    }
}

impl<Fr> fmt::Debug for RecordReader<Fr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordReader")
            .field("source", &self.source.kind())
            .field("offset", &self.offset)
            .field("eof", &self.eof)
            .field("done", &self.done)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A record-at-a-time view of a [`RecordReader`], for `__next__` methods: it parses a batch per
/// GIL release and hands the records out one by one.
///
/// # Examples
///
/// ```
/// use gilkit::file::{Lines, ReaderOptions, RecordReader, Source};
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let reader = RecordReader::new(Source::from_vec(b"a\nbb\n".to_vec()), Lines::new(), ReaderOptions::default());
///     let mut lengths = reader.records(|line: &[u8]| line.len());
///     assert_eq!(lengths.next(py)?, Some(1));
///     assert_eq!(lengths.next(py)?, Some(2));
///     assert_eq!(lengths.next(py)?, None);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct Records<Fr, T, P> {
    reader: RecordReader<Fr>,
    /// `SyncWrapper`s: only used through `&mut self`, so `Records` is `Sync` for `#[pyclass]`.
    parse: SyncWrapper<P>,
    ready: SyncWrapper<std::vec::IntoIter<T>>,
}

impl<Fr: Framing, T: Send, P: FnMut(&[u8]) -> T + Send> Records<Fr, T, P> {
    /// The next record; `None` at the end.
    ///
    /// GIL: held; released once per batch (see [`RecordReader::next_batch`]).
    ///
    /// # Errors
    ///
    /// As [`RecordReader::next_batch`]: an error comes after every record before it.
    pub fn next(&mut self, py: Python<'_>) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(record) = self.ready.get_mut().next() {
                return Ok(Some(record));
            }
            match self.reader.next_batch(py, self.parse.get_mut())? {
                Some(batch) => *self.ready.get_mut() = batch.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// The reader underneath (offset, stats).
    pub fn reader(&self) -> &RecordReader<Fr> {
        &self.reader
    }
}

struct Pass<T> {
    records: Vec<T>,
    stop: Stop,
}

enum Stop {
    BatchFull,
    Incomplete(Option<usize>),
    Framing(FramingError),
}

/// The reader's bytes: `storage[start..end]` is read but not yet consumed.
pub(crate) struct Buffer {
    pub(crate) storage: Storage,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) enum Storage {
    /// Rust-owned, fully initialised (Python may be shown any part of it); refilled.
    Vec(Vec<u8>),
    /// A Python `bytes` object, read in place; never refilled.
    Bytes(super::source::BytesRef),
}

impl Buffer {
    pub(crate) fn empty(capacity: usize) -> Buffer {
        Buffer {
            storage: Storage::Vec(vec![0; capacity.max(1)]),
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn memory(storage: Storage) -> Buffer {
        let end = match &storage {
            Storage::Vec(vec) => vec.len(),
            Storage::Bytes(bytes) => bytes.as_slice().len(),
        };
        Buffer {
            storage,
            start: 0,
            end,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.storage {
            Storage::Vec(vec) => vec,
            Storage::Bytes(bytes) => bytes.as_slice(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.as_slice().len()
    }

    /// Moves `start..end` to the front.
    pub(crate) fn compact(&mut self) {
        if let Storage::Vec(vec) = &mut self.storage
            && self.start > 0
        {
            vec.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Resizes a compacted buffer (never below its content).
    pub(crate) fn resize(&mut self, capacity: usize) {
        if let Storage::Vec(vec) = &mut self.storage {
            let capacity = capacity.max(self.end).max(1);
            vec.resize(capacity, 0);
            vec.shrink_to_fit();
        }
    }
}
