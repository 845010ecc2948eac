//! `MARCReader` and `read_all`: gilkit's three-phase file adapter with pymarc's framing.
//!
//! [`gilkit::file::RecordReader`] does the reading: a path or a regular file is read without the
//! GIL, `bytes` in place, any other binary file object in large `readinto` calls with the GIL.
//! Per batch (one GIL release) it frames records with [`MarcFraming`] (pymarc's rules,
//! [`crate::frame`]) and runs [`parse_chunk`] on each (Rust parser, [`crate::parse`]). Each
//! `__next__` then builds one record's Python objects with the GIL held ([`super::build`]); a
//! record the Rust parser refused goes to the Python decoder (the `Record` class), which gives
//! pymarc's record, warning or exception.
//!
//! In pymarc 5 a record that fails to decode makes the reader yield `None` and set
//! `current_exception` / `current_chunk`, whatever `permissive` says; framing errors
//! (`RecordLengthInvalid`, `TruncatedRecord`, `EndOfRecordNotFound`) do the same and end the
//! iteration. `MARCReader` does exactly that. `read_all(..., permissive=False)` is the strict
//! form: it raises the first such exception instead.

use gilkit::CancelToken;
use gilkit::file::{self, Framing, FramingError, ReaderOptions, RecordReader};
use pyo3::exceptions::{PyException, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::build::{Builder, write_messages};
use crate::frame::{Frame, FrameError, next_frame};
use crate::parse::{self, FileEncoding, Utf8Handling};

/// pymarc's framing for gilkit's reader.
///
/// pymarc rejects some chunks only after reading them (a bad terminator, a short read at the
/// end): those are framed as records too, so the reader consumes exactly the bytes pymarc does,
/// and [`parse_chunk`] turns them into [`Outcome::Broken`] (a chunk decides the same on its own as
/// at the front of the stream: its length prefix covers exactly it). Such an error is fatal in
/// pymarc, so after one the framing stops the reader (a fatal [`FramingError`], returned only if
/// someone asks for more).
#[derive(Default)]
pub(crate) struct MarcFraming {
    stopped: bool,
}

impl Framing for MarcFraming {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<file::Frame, FramingError> {
        if self.stopped {
            return Err(FramingError::new(
                "MARC reading stopped after a fatal record error",
            ));
        }
        Ok(match next_frame(buf, at_eof) {
            Frame::NeedMore => file::Frame::Incomplete {
                // A length below 5 means "to the end of the data" (pymarc reads with a negative size).
                needed: crate::pyint::parse(buf.get(..5).unwrap_or(&[]))
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n >= 5),
            },
            Frame::End => file::Frame::incomplete(),
            Frame::Record(n) => file::Frame::record(n),
            Frame::Broken(n, _) => {
                self.stopped = true;
                file::Frame::record(n)
            }
        })
    }
}

/// Bytes read from files per refill.
const BUFFER_SIZE: usize = 1 << 20;
/// Records framed and parsed per GIL release.
const MAX_BATCH: usize = 1024;

fn reader_options() -> ReaderOptions {
    ReaderOptions::default()
        .buffer_size(BUFFER_SIZE)
        .max_batch(MAX_BATCH)
}

/// What became of one chunk.
pub(crate) enum Outcome {
    /// Parsed in Rust; ready to build.
    Parsed(parse::Record),
    /// Refused by the Rust parser: the Python decoder decides (record, warning or exception).
    Python,
    /// A fatal framing error; nothing follows.
    Broken(FrameError),
}

/// One chunk as pymarc would read it, and what became of it.
pub(crate) struct Item {
    pub(crate) chunk: Box<[u8]>,
    pub(crate) outcome: Outcome,
}

/// Parses one framed chunk (no Python; runs in phase 2).
fn parse_chunk(chunk: &[u8], opts: &parse::Options) -> Item {
    let outcome = match next_frame(chunk, true) {
        Frame::Record(_) => parse::parse(chunk, opts).map_or(Outcome::Python, Outcome::Parsed),
        Frame::Broken(_, e) => Outcome::Broken(e),
        // `MarcFraming` only frames non-empty chunks, which `next_frame` always decides.
        Frame::End | Frame::NeedMore => Outcome::Broken(FrameError::Truncated),
    };
    Item {
        chunk: chunk.into(),
        outcome,
    }
}

/// pymarc's keyword options, as given from Python.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PyOptions {
    pub(crate) to_unicode: bool,
    pub(crate) force_utf8: bool,
    pub(crate) hide_utf8_warnings: bool,
    pub(crate) utf8_handling: String,
    pub(crate) file_encoding: String,
}

impl PyOptions {
    pub(crate) fn new(
        to_unicode: bool,
        force_utf8: bool,
        hide_utf8_warnings: bool,
        utf8_handling: &str,
        file_encoding: &str,
    ) -> Self {
        Self {
            to_unicode,
            force_utf8,
            hide_utf8_warnings,
            utf8_handling: utf8_handling.to_owned(),
            file_encoding: file_encoding.to_owned(),
        }
    }

    /// The parser options; needs the GIL to ask Python's codec registry about `file_encoding`.
    pub(crate) fn resolve(&self, py: Python<'_>) -> parse::Options {
        let utf8_handling = match self.utf8_handling.as_str() {
            "strict" => Utf8Handling::Strict,
            "replace" => Utf8Handling::Replace,
            "ignore" => Utf8Handling::Ignore,
            _ => Utf8Handling::Other,
        };
        // pymarc compares with the literal "iso8859-1" to choose MARC-8; other names go through
        // Python's codec registry.
        let file_encoding = if self.file_encoding == "iso8859-1" {
            FileEncoding::Marc8
        } else {
            let name = py
                .import("codecs")
                .and_then(|codecs| codecs.call_method1("lookup", (&self.file_encoding,)))
                .and_then(|info| info.getattr("name"))
                .and_then(|name| name.extract::<String>());
            match name.as_deref() {
                Ok("utf-8") => FileEncoding::Utf8,
                Ok("iso8859-1") => FileEncoding::Latin1,
                _ => FileEncoding::Other,
            }
        };
        parse::Options {
            to_unicode: self.to_unicode,
            force_utf8: self.force_utf8,
            quiet: self.hide_utf8_warnings,
            utf8_handling,
            file_encoding,
        }
    }

    /// `Record(chunk, **options)`: the Python decoder (pymarc's behaviour, warnings, exceptions).
    fn decode_in_python<'py>(&self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("to_unicode", self.to_unicode)?;
        kwargs.set_item("force_utf8", self.force_utf8)?;
        kwargs.set_item("hide_utf8_warnings", self.hide_utf8_warnings)?;
        kwargs.set_item("utf8_handling", &self.utf8_handling)?;
        kwargs.set_item("file_encoding", &self.file_encoding)?;
        Builder::get(py)?
            .record_class(py)
            .call((PyBytes::new(py, chunk),), Some(&kwargs))
    }

    /// The Python object for one item parsed with `parsed_with` (the resolved `self`): a
    /// `Record`, or the exception pymarc would raise.
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        parsed_with: &parse::Options,
        chunk: &[u8],
        outcome: &Outcome,
    ) -> PyResult<Bound<'py, PyAny>> {
        match outcome {
            Outcome::Parsed(rec) => {
                write_messages(py, &rec.messages)?;
                Builder::get(py)?.record(py, rec, parsed_with.to_unicode, parsed_with.force_utf8)
            }
            // Rust refused the record: the Python decoder gives pymarc's record or exception.
            Outcome::Python => self.decode_in_python(py, chunk),
            Outcome::Broken(e) => Err(frame_error(py, *e)),
        }
    }
}

/// The pymarc exception for a framing error.
pub(crate) fn frame_error(py: Python<'_>, e: FrameError) -> PyErr {
    match py
        .import("gilkit_marc.exceptions")
        .and_then(|m| m.getattr(e.pymarc_name()))
        .and_then(|cls| cls.call0())
    {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// An iterator over the MARC records in a file (pymarc's `MARCReader`).
///
/// `marc_target` is a path, `bytes`-like data, or a binary file object. Iterating yields
/// `Record`s, or `None` for a record that could not be read, with `current_exception` and
/// `current_chunk` telling why, as in pymarc 5. Each reader is for one thread at a time; use one
/// reader per thread to read files in parallel (parsing releases the GIL once per batch).
#[pyclass(module = "gilkit_marc", name = "MARCReader", subclass)]
pub(crate) struct MarcReader {
    reader: RecordReader<MarcFraming>,
    /// The current batch, consumed from the front.
    items: std::vec::IntoIter<Item>,
    /// The options the current batch was parsed with, as given and as resolved.
    batch: (PyOptions, parse::Options),
    // pymarc's options, public and writable as in pymarc; a change applies from the next record.
    #[pyo3(get, set)]
    to_unicode: bool,
    #[pyo3(get, set)]
    force_utf8: bool,
    #[pyo3(get, set)]
    hide_utf8_warnings: bool,
    #[pyo3(get, set)]
    utf8_handling: String,
    #[pyo3(get, set)]
    file_encoding: String,
    /// Kept for pymarc compatibility; pymarc 5 yields `None` for bad records in both modes.
    #[pyo3(get, set)]
    permissive: bool,
    #[pyo3(get)]
    file_handle: Py<PyAny>,
    /// The chunk last read (`Some(empty)` once the data is exhausted, as pymarc's `b""`).
    current_chunk: Option<Box<[u8]>>,
    current_exception: Option<Py<PyAny>>,
    fatal: bool,
    closed: bool,
}

#[pymethods]
impl MarcReader {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (marc_target, to_unicode=true, force_utf8=false, hide_utf8_warnings=false,
                        utf8_handling="strict", file_encoding="iso8859-1",
                        permissive=false))]
    fn new(
        py: Python<'_>,
        marc_target: &Bound<'_, PyAny>,
        to_unicode: bool,
        force_utf8: bool,
        hide_utf8_warnings: bool,
        utf8_handling: &str,
        file_encoding: &str,
        permissive: bool,
    ) -> PyResult<Self> {
        let opts = PyOptions::new(
            to_unicode,
            force_utf8,
            hide_utf8_warnings,
            utf8_handling,
            file_encoding,
        );
        Ok(Self {
            reader: RecordReader::from_py(marc_target, MarcFraming::default(), reader_options())?,
            items: Vec::new().into_iter(),
            batch: (opts.clone(), opts.resolve(py)),
            to_unicode: opts.to_unicode,
            force_utf8: opts.force_utf8,
            hide_utf8_warnings: opts.hide_utf8_warnings,
            utf8_handling: opts.utf8_handling,
            file_encoding: opts.file_encoding,
            permissive,
            file_handle: marc_target.clone().unbind(),
            current_chunk: None,
            current_exception: None,
            fatal: false,
            closed: false,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next record, `None` for a record that could not be read; `StopIteration` at the end.
    ///
    /// Releases the GIL once per batch of records (to read a path, frame and parse them); holds
    /// it to read a Python file object and to build each record's Python objects.
    ///
    /// # Errors
    ///
    /// An exception raised by the file object's `read`, unchanged; `OSError` reading a path;
    /// `ValueError` after `close()`.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.closed {
            return Err(PyValueError::new_err("I/O operation on closed MARCReader"));
        }
        if self.fatal {
            return Err(PyStopIteration::new_err(()));
        }
        self.current_chunk = None;
        self.current_exception = None;
        if !self.options_unchanged() {
            // Options changed: parse what is left of the batch again with the new ones.
            let options = self.options();
            let parsed = options.resolve(py);
            let rest: Vec<Item> = self
                .items
                .by_ref()
                .map(|item| parse_chunk(&item.chunk, &parsed))
                .collect();
            self.items = rest.into_iter();
            self.batch = (options, parsed);
        }
        let item = match self.items.next() {
            Some(item) => item,
            None => {
                let opts = self.batch.1;
                match self
                    .reader
                    .next_batch(py, |chunk| parse_chunk(chunk, &opts))?
                {
                    Some(batch) => {
                        self.items = batch.into_iter();
                        self.items
                            .next()
                            .expect("the reader returns no empty batch")
                    }
                    None => {
                        self.current_chunk = Some(Box::default());
                        return Err(PyStopIteration::new_err(()));
                    }
                }
            }
        };
        let result = self
            .batch
            .0
            .build(py, &self.batch.1, &item.chunk, &item.outcome);
        self.fatal = matches!(item.outcome, Outcome::Broken(_));
        self.current_chunk = Some(item.chunk);
        match result {
            Ok(record) => Ok(record.unbind()),
            Err(err) if err.is_instance_of::<PyException>(py) => {
                self.current_exception = Some(err.into_value(py).into_any());
                Ok(py.None())
            }
            Err(err) => Err(err),
        }
    }

    /// The raw bytes of the record last read (`b""` once the data is exhausted).
    #[getter]
    fn current_chunk<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.current_chunk
            .as_deref()
            .map(|chunk| PyBytes::new(py, chunk))
    }

    /// The exception for the record last read, if it could not be read.
    #[getter]
    fn current_exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current_exception.as_ref().map(|e| e.clone_ref(py))
    }

    /// What the reader did so far (beyond pymarc): `python_calls` into the file object,
    /// `gil_releases`, `batches`, `records`, `bytes_read`, and `released_seconds` spent with the
    /// GIL released (reading paths, framing, parsing). Holds the GIL.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.reader.stats();
        let dict = PyDict::new(py);
        dict.set_item("python_calls", stats.python_calls)?;
        dict.set_item("gil_releases", stats.gil_releases)?;
        dict.set_item("batches", stats.batches)?;
        dict.set_item("records", stats.records)?;
        dict.set_item("bytes_read", stats.bytes_read)?;
        dict.set_item("released_seconds", stats.released.as_secs_f64())?;
        Ok(dict)
    }

    /// Closes the underlying file object (its `close()` is called) and ends reading.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.closed = true;
        let handle = self.file_handle.bind(py);
        if handle.hasattr("close")? {
            handle.call_method0("close")?;
        }
        Ok(())
    }
}

impl MarcReader {
    /// The options as they are now (attributes may have been set since the batch was parsed).
    fn options(&self) -> PyOptions {
        PyOptions {
            to_unicode: self.to_unicode,
            force_utf8: self.force_utf8,
            hide_utf8_warnings: self.hide_utf8_warnings,
            utf8_handling: self.utf8_handling.clone(),
            file_encoding: self.file_encoding.clone(),
        }
    }

    fn options_unchanged(&self) -> bool {
        let o = &self.batch.0;
        o.to_unicode == self.to_unicode
            && o.force_utf8 == self.force_utf8
            && o.hide_utf8_warnings == self.hide_utf8_warnings
            && o.utf8_handling == self.utf8_handling
            && o.file_encoding == self.file_encoding
    }
}

/// Reads every record of `target` (see the Python docstring in `reader.py`).
///
/// Reads (GIL released for paths and regular files, held for other file objects) and frames all
/// records, then releases the GIL once to parse them on `threads` threads (Ctrl-C stops it), then
/// holds it to build the records.
#[pyfunction]
#[pyo3(signature = (target, threads=1, *, permissive=false, to_unicode=true, force_utf8=false,
                    hide_utf8_warnings=false, utf8_handling="strict", file_encoding="iso8859-1"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_all<'py>(
    py: Python<'py>,
    target: &Bound<'py, PyAny>,
    threads: usize,
    permissive: bool,
    to_unicode: bool,
    force_utf8: bool,
    hide_utf8_warnings: bool,
    utf8_handling: &str,
    file_encoding: &str,
) -> PyResult<Bound<'py, PyList>> {
    let opts = PyOptions::new(
        to_unicode,
        force_utf8,
        hide_utf8_warnings,
        utf8_handling,
        file_encoding,
    );
    let parse_opts = opts.resolve(py);
    let framing = MarcFraming::default();
    let mut reader = RecordReader::from_py(target, framing, reader_options().max_batch(1 << 16))?;
    let mut chunks: Vec<Box<[u8]>> = Vec::new();
    while let Some(batch) = reader.next_batch(py, |chunk| Box::<[u8]>::from(chunk))? {
        chunks.extend(batch);
        if reader.framing_mut().stopped {
            // The last chunk is pymarc's fatal error; nothing after it is read.
            break;
        }
    }
    let threads = threads.max(1);
    let items =
        gilkit::detach_interruptible(py, |token| parse_all(&chunks, &parse_opts, threads, token))?;
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        match opts.build(py, &parse_opts, &item.chunk, &item.outcome) {
            Ok(record) => out.push(record),
            Err(err) if permissive && err.is_instance_of::<PyException>(py) => {
                out.push(py.None().into_bound(py))
            }
            Err(err) => return Err(err),
        }
    }
    PyList::new(py, out)
}

/// Parses `chunks` on `threads` threads (no Python). Stops early (with a partial result the
/// caller discards) once `token` is cancelled.
fn parse_all(
    chunks: &[Box<[u8]>],
    opts: &parse::Options,
    threads: usize,
    token: &CancelToken,
) -> Vec<Item> {
    let parse_part = |part: &[Box<[u8]>]| -> Vec<Item> {
        let mut items = Vec::with_capacity(part.len());
        for (i, chunk) in part.iter().enumerate() {
            if i % 256 == 0 && token.is_cancelled() {
                break;
            }
            items.push(parse_chunk(chunk, opts));
        }
        items
    };
    if threads == 1 || chunks.len() < 2 * threads {
        return parse_part(chunks);
    }
    let per_thread = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(per_thread)
            .map(|part| scope.spawn(move || parse_part(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
