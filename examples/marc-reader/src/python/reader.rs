//! `MARCReader` and `read_all`: the three phases, batch by batch.
//!
//! 1. **Read** (GIL held for a Python file, released for a path): fill the buffer in large chunks.
//! 2. **Frame and parse** (GIL released once per batch): find up to [`MAX_BATCH`] records with
//!    pymarc's framing rules ([`crate::frame`]) and parse each ([`crate::parse`]).
//! 3. **Build** (GIL held): each `__next__` turns one parsed record into Python objects
//!    ([`super::build`]); a record the Rust parser refused is handed to the Python decoder (the
//!    `Record` class), which produces pymarc's record, warning or exception.
//!
//! In pymarc 5 a record that fails to decode makes the reader yield `None` and set
//! `current_exception` / `current_chunk`, whatever `permissive` says; framing errors
//! (`RecordLengthInvalid`, `TruncatedRecord`, `EndOfRecordNotFound`) do the same and end the
//! iteration. `MARCReader` does exactly that. `read_all(..., permissive=False)` is the strict
//! form: it raises the first such exception instead.

use std::ops::Range;

use gilkit::CancelToken;
use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::build::{Builder, write_messages};
use super::source::Source;
use crate::frame::{Frame, FrameError, next_frame};
use crate::parse::{self, FileEncoding, Utf8Handling};

/// Records framed and parsed per GIL release.
pub(crate) const MAX_BATCH: usize = 1024;

/// What became of one chunk.
pub(crate) enum Outcome {
    /// Parsed in Rust; ready to build.
    Parsed(parse::Record),
    /// Refused by the Rust parser: the Python decoder decides (record, warning or exception).
    Python,
    /// A fatal framing error; nothing follows.
    Broken(FrameError),
}

pub(crate) struct Item {
    /// The chunk's bytes in the stream buffer.
    pub(crate) chunk: Range<usize>,
    pub(crate) outcome: Outcome,
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

/// Frames and parses up to `max` records of `data` (no Python). Returns the items (chunk ranges
/// offset by `base`), the bytes consumed, and whether the stream is over (end or fatal error).
pub(crate) fn frame_and_parse(
    data: &[u8],
    at_eof: bool,
    opts: &parse::Options,
    max: usize,
    base: usize,
) -> (Vec<Item>, usize, bool) {
    let mut items = Vec::new();
    let mut pos = 0;
    while items.len() < max {
        match next_frame(&data[pos..], at_eof) {
            Frame::NeedMore => return (items, pos, false),
            Frame::End => return (items, pos, true),
            Frame::Record(n) => {
                let outcome = match parse::parse(&data[pos..pos + n], opts) {
                    Ok(rec) => Outcome::Parsed(rec),
                    Err(_) => Outcome::Python,
                };
                items.push(Item {
                    chunk: base + pos..base + pos + n,
                    outcome,
                });
                pos += n;
            }
            Frame::Broken(n, e) => {
                items.push(Item {
                    chunk: base + pos..base + pos + n,
                    outcome: Outcome::Broken(e),
                });
                return (items, pos + n, true);
            }
        }
    }
    (items, pos, false)
}

/// A buffered stream of chunks from a [`Source`].
pub(crate) struct Stream {
    source: Source,
    pub(crate) buf: Vec<u8>,
    start: usize,
    eof: bool,
    finished: bool,
}

impl Stream {
    pub(crate) fn open(target: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut buf = Vec::new();
        let source = Source::open(target, &mut buf)?;
        let eof = matches!(source, Source::Memory);
        Ok(Self {
            source,
            buf,
            start: 0,
            eof,
            finished: false,
        })
    }

    /// The next batch of items (empty at the end). Invalidates the previous batch's ranges.
    ///
    /// Holds the GIL to read a Python file; releases it once to frame and parse the batch.
    pub(crate) fn next_batch(
        &mut self,
        py: Python<'_>,
        opts: &parse::Options,
        max: usize,
    ) -> PyResult<Vec<Item>> {
        if self.finished {
            return Ok(Vec::new());
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        loop {
            let (data, eof, start) = (&self.buf[self.start..], self.eof, self.start);
            let (items, consumed, over) =
                gilkit::detach(py, || frame_and_parse(data, eof, opts, max, start));
            self.start += consumed;
            self.finished = over;
            if !items.is_empty() || over {
                return Ok(items);
            }
            if !self.source.fill(py, &mut self.buf)? {
                self.eof = true;
            }
        }
    }

    /// Reads everything that is left into the buffer (GIL held for Python files).
    pub(crate) fn read_to_end(&mut self, py: Python<'_>) -> PyResult<()> {
        while !self.eof {
            if !self.source.fill(py, &mut self.buf)? {
                self.eof = true;
            }
        }
        Ok(())
    }

    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(file) = self.source.python_file() {
            file.bind(py).call_method0("close")?;
        }
        self.source = Source::Memory;
        self.finished = true;
        Ok(())
    }
}

enum Chunk {
    None,
    Range(Range<usize>),
    Empty,
}

/// An iterator over the MARC records in a file (pymarc's `MARCReader`).
///
/// `marc_target` is a path, `bytes`-like data, or a binary file object. Iterating yields
/// `Record`s, or `None` for a record that could not be read, with `current_exception` and
/// `current_chunk` telling why, as in pymarc 5. Each reader is for one thread at a time; use one
/// reader per thread to read files in parallel (parsing releases the GIL once per batch).
#[pyclass(module = "gilkit_marc", name = "MARCReader", subclass)]
pub(crate) struct MarcReader {
    stream: Stream,
    items: Vec<Item>,
    next: usize,
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
    current_chunk: Chunk,
    current_exception: Option<Py<PyAny>>,
    fatal: bool,
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
        let opts = PyOptions {
            to_unicode,
            force_utf8,
            hide_utf8_warnings,
            utf8_handling: utf8_handling.to_owned(),
            file_encoding: file_encoding.to_owned(),
        };
        Ok(Self {
            stream: Stream::open(marc_target)?,
            items: Vec::new(),
            next: 0,
            batch: (opts.clone(), opts.resolve(py)),
            to_unicode: opts.to_unicode,
            force_utf8: opts.force_utf8,
            hide_utf8_warnings: opts.hide_utf8_warnings,
            utf8_handling: opts.utf8_handling,
            file_encoding: opts.file_encoding,
            permissive,
            file_handle: marc_target.clone().unbind(),
            current_chunk: Chunk::None,
            current_exception: None,
            fatal: false,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next record, `None` for a record that could not be read; `StopIteration` at the end.
    ///
    /// Releases the GIL once per batch of records (to frame and parse them); holds it to build
    /// each record's Python objects.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.fatal {
            return Err(PyStopIteration::new_err(()));
        }
        self.current_chunk = Chunk::None;
        self.current_exception = None;
        if !self.options_unchanged() {
            // Options changed: parse what is left of the batch again with the new ones.
            let options = self.options();
            let parsed = options.resolve(py);
            for item in &mut self.items[self.next..] {
                if !matches!(item.outcome, Outcome::Broken(_)) {
                    let chunk = &self.stream.buf[item.chunk.clone()];
                    item.outcome =
                        parse::parse(chunk, &parsed).map_or(Outcome::Python, Outcome::Parsed);
                }
            }
            self.batch = (options, parsed);
        }
        if self.next >= self.items.len() {
            self.items = Vec::new();
            self.items = self.stream.next_batch(py, &self.batch.1, MAX_BATCH)?;
            self.next = 0;
            if self.items.is_empty() {
                self.current_chunk = Chunk::Empty;
                return Err(PyStopIteration::new_err(()));
            }
        }
        let item = &self.items[self.next];
        self.next += 1;
        self.current_chunk = Chunk::Range(item.chunk.clone());
        let chunk = &self.stream.buf[item.chunk.clone()];
        match self.batch.0.build(py, &self.batch.1, chunk, &item.outcome) {
            Ok(record) => Ok(record.unbind()),
            Err(err) if err.is_instance_of::<PyException>(py) => {
                self.fatal = matches!(item.outcome, Outcome::Broken(_));
                self.current_exception = Some(err.into_value(py).into_any());
                Ok(py.None())
            }
            Err(err) => Err(err),
        }
    }

    /// The raw bytes of the record last read (`b""` once the data is exhausted).
    #[getter]
    fn current_chunk(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.current_chunk {
            Chunk::None => None,
            Chunk::Empty => Some(PyBytes::new(py, b"").into_any().unbind()),
            Chunk::Range(r) => Some(
                PyBytes::new(py, &self.stream.buf[r.clone()])
                    .into_any()
                    .unbind(),
            ),
        }
    }

    /// The exception for the record last read, if it could not be read.
    #[getter]
    fn current_exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current_exception.as_ref().map(|e| e.clone_ref(py))
    }

    /// Closes the underlying file (a file object's `close()` is called).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.stream.close(py)
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

/// Reads every record of `target` (see the Python docstring in `__init__.pyi`).
///
/// Holds the GIL to read a Python file object; releases it once to frame everything and parse it
/// on `threads` threads; holds it to build the records.
#[pyfunction]
#[pyo3(signature = (target, threads=1, *, permissive=false, to_unicode=true, force_utf8=false,
                    hide_utf8_warnings=false, utf8_handling="strict",
                    file_encoding="iso8859-1"))]
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
    let opts = PyOptions {
        to_unicode,
        force_utf8,
        hide_utf8_warnings,
        utf8_handling: utf8_handling.to_owned(),
        file_encoding: file_encoding.to_owned(),
    };
    let parse_opts = opts.resolve(py);
    let mut stream = Stream::open(target)?;
    stream.read_to_end(py)?;
    let threads = threads.max(1);
    let data = &stream.buf[..];
    // Long inputs: Ctrl-C stops the parse (the threads check the token every few records).
    let items =
        gilkit::detach_interruptible(py, |token| parse_all(data, &parse_opts, threads, token))?;
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        match opts.build(py, &parse_opts, &data[item.chunk.clone()], &item.outcome) {
            Ok(record) => out.push(record),
            Err(err) if permissive && err.is_instance_of::<PyException>(py) => {
                out.push(py.None().into_bound(py))
            }
            Err(err) => return Err(err),
        }
    }
    PyList::new(py, out)
}

/// Frames all of `data`, then parses the records on `threads` threads (no Python). Stops early
/// (with a partial result the caller discards) once `token` is cancelled.
fn parse_all(data: &[u8], opts: &parse::Options, threads: usize, token: &CancelToken) -> Vec<Item> {
    // Framing is a walk over the length prefixes, cheap next to parsing: do it first, alone.
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        match next_frame(&data[pos..], true) {
            Frame::Record(n) => {
                frames.push((pos..pos + n, None));
                pos += n;
            }
            Frame::Broken(n, e) => {
                frames.push((pos..pos + n, Some(e)));
                break;
            }
            Frame::End | Frame::NeedMore => break,
        }
    }
    let parse_one = |(chunk, broken): &(Range<usize>, Option<FrameError>)| Item {
        chunk: chunk.clone(),
        outcome: match broken {
            Some(e) => Outcome::Broken(*e),
            None => match parse::parse(&data[chunk.clone()], opts) {
                Ok(rec) => Outcome::Parsed(rec),
                Err(_) => Outcome::Python,
            },
        },
    };
    let parse_part = |part: &[(Range<usize>, Option<FrameError>)]| -> Vec<Item> {
        let mut items = Vec::with_capacity(part.len());
        for (i, frame) in part.iter().enumerate() {
            if i % 256 == 0 && token.is_cancelled() {
                break;
            }
            items.push(parse_one(frame));
        }
        items
    };
    if threads == 1 || frames.len() < 2 * threads {
        return parse_part(&frames);
    }
    let per_thread = frames.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = frames
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
