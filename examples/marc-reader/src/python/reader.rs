//! `MARCReader` and `read_all`: gilkit's three-phase file adapter with pymarc's framing.
//!
//! [`gilkit::file::RecordReader`] does the reading: a path or a regular file is read without the
//! GIL, `bytes` in place, any other binary file object in large `readinto` calls with the GIL.
//! Per batch (one GIL release) it frames records with [`MarcFraming`] (pymarc's rules,
//! [`crate::frame`]), copies them into one buffer and runs [`parse_chunk`] (Rust parser,
//! [`crate::parse`]) on all of them, or with `readahead` on the first [`PART`] only, the rest
//! going to [`gilkit::batch::ordered`] in parts of [`PART`]: a pooled worker parses ahead of the
//! records being built (when a core is spare), and this thread parses whatever the worker has not
//! started when it gets there. Nothing is read ahead of the consumer: the source is read at the
//! same points as without the worker, so errors, the file object's position and what a slow
//! stream delivers when are unchanged; only parsing moves. Each `__next__` then builds one record's
//! Python objects with the GIL held ([`super::build`]; with `lazy_fields`, a `LazyRecord` whose
//! fields are built on first use, [`super::lazy`]); a record the Rust parser refused goes to the
//! Python decoder (the `Record` class), which gives pymarc's record, warning or exception.
//!
//! In pymarc 5 a record that fails to decode makes the reader yield `None` and set
//! `current_exception` / `current_chunk`, whatever `permissive` says; framing errors
//! (`RecordLengthInvalid`, `TruncatedRecord`, `EndOfRecordNotFound`) do the same and end the
//! iteration. `MARCReader` does exactly that. `read_all(..., permissive=False)` is the strict
//! form: it raises the first such exception instead.

use gilkit::batch::ordered::{self, Consumer, Parts, spare_core};
use gilkit::batch::{self, BatchOptions, Outcome as PartOutcome};
use gilkit::file::{self, Framing, FramingError, ReaderOptions, RecordReader, Source};
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::build::{Builder, write_messages};
use super::position::Position;
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

impl MarcFraming {
    /// Whether a fatal record error stopped the reading (the last chunk framed was that record).
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }
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

/// Records per part: parsed while reading at the start of a batch with read-ahead, and the unit
/// claimed and parsed by the worker or this thread after that. Small enough that building starts
/// at once and a cancelled worker stops quickly, large enough that a claim and a message cost
/// nothing next to parsing (about 1 µs a record).
const PART: usize = 64;

/// A batch's framed chunks, back to back in one buffer (one allocation per batch, not per record).
#[derive(Default)]
pub(crate) struct Chunks {
    data: Vec<u8>,
    /// `ends[i]` is where chunk `i` ends in `data`.
    ends: Vec<usize>,
}

impl Chunks {
    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(self.data.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Chunk `i`; panics if `i >= self.len()`.
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Parses chunks `range` with `opts` (no Python).
    fn parse(&self, range: Range<usize>, opts: &parse::Options) -> Vec<Outcome> {
        range.map(|i| parse_chunk(self.get(i), opts)).collect()
    }
}

/// The records of a batch, in parts of [`PART`] records from `from` on.
type Tail = Parts<Vec<Outcome>, Infallible>;

/// A batch's records in order, each with its parse outcome: the first parsed while reading, the
/// rest by [`gilkit::batch::ordered`], ahead on a worker or on this thread when reached.
struct Pipeline {
    chunks: Arc<Chunks>,
    /// Index of the next chunk to hand out.
    next: usize,
    /// Outcomes of chunks `next..next + ready.len()`.
    ready: std::vec::IntoIter<Outcome>,
    tail: Tail,
}

impl Pipeline {
    /// A pipeline with no records (before the first batch).
    fn empty(opts: parse::Options) -> Self {
        Self::new(
            Chunks::default(),
            Vec::new(),
            opts,
            false,
            &mut ordered::Stats::default(),
        )
    }

    /// A pipeline over `chunks`, whose first `parsed.len()` outcomes are `parsed`; the rest is
    /// parsed with `opts` in parts, by a worker ahead of the caller if `ahead`, else on the calling
    /// thread when reached.
    fn new(
        chunks: Chunks,
        parsed: Vec<Outcome>,
        opts: parse::Options,
        ahead: bool,
        stats: &mut ordered::Stats,
    ) -> Self {
        let chunks = Arc::new(chunks);
        Pipeline {
            tail: tail(&chunks, parsed.len(), opts, ahead, stats),
            chunks,
            next: 0,
            ready: parsed.into_iter(),
        }
    }

    /// The chunks' buffer, emptied, for the next batch (a fresh one if still shared); ends the
    /// worker first (GIL released if it has not yet returned).
    fn into_buffer(self, py: Python<'_>) -> Chunks {
        self.tail.finish(py);
        match Arc::try_unwrap(self.chunks) {
            Ok(mut chunks) => {
                chunks.data.clear();
                chunks.ends.clear();
                chunks
            }
            Err(_) => Chunks::default(),
        }
    }

    fn is_done(&self) -> bool {
        self.next == self.chunks.len()
    }

    /// The next record's chunk index and outcome; `None` once the batch is used up.
    ///
    /// GIL: held; released to parse a part here and while waiting for the worker.
    ///
    /// # Errors
    /// `KeyboardInterrupt` (or another signal handler's exception) while waiting; calling again
    /// resumes. `RuntimeError` if the parser panicked (a bug).
    fn next(
        &mut self,
        py: Python<'_>,
        stats: &mut ordered::Stats,
    ) -> PyResult<Option<(usize, Outcome)>> {
        loop {
            if let Some(outcome) = self.ready.next() {
                self.next += 1;
                return Ok(Some((self.next - 1, outcome)));
            }
            match self.tail.next(py, stats)? {
                Some(part) => self.ready = parsed_part(part)?.into_iter(),
                None => return Ok(None),
            }
        }
    }

    /// Parses the records not yet handed out again, with `opts` (the reader's options changed).
    fn reparse(&mut self, opts: parse::Options, ahead: bool, stats: &mut ordered::Stats) {
        self.ready = Vec::new().into_iter();
        // The old worker stops before another starts (it would count as busy).
        self.tail = tail(&Arc::default(), 0, opts, false, stats);
        self.tail = tail(&self.chunks, self.next, opts, ahead, stats);
    }
}

/// The parts of `chunks[from..]`.
fn tail(
    chunks: &Arc<Chunks>,
    from: usize,
    opts: parse::Options,
    ahead: bool,
    stats: &mut ordered::Stats,
) -> Tail {
    let count = chunks.len().saturating_sub(from).div_ceil(PART);
    let chunks = chunks.clone();
    Parts::new(count, ahead, stats, move |part| {
        let start = from + part * PART;
        Ok(chunks.parse(start..chunks.len().min(start + PART), &opts))
    })
}

/// A part's outcomes, or the error for a panic of the parser (a bug; its text is not for users).
fn parsed_part(part: PartOutcome<Vec<Outcome>, Infallible>) -> PyResult<Vec<Outcome>> {
    match part {
        PartOutcome::Ok(outcomes) => Ok(outcomes),
        PartOutcome::Panicked(_) => Err(PyRuntimeError::new_err(
            "gilkit_marc's parser failed on this data (a bug: please report it with the file)",
        )),
        _ => Err(PyRuntimeError::new_err("gilkit_marc's parsing was stopped")),
    }
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

/// Parses one framed chunk (no Python; runs with the GIL released).
pub(crate) fn parse_chunk(chunk: &[u8], opts: &parse::Options) -> Outcome {
    match next_frame(chunk, true) {
        Frame::Record(_) => parse::parse(chunk, opts).map_or(Outcome::Python, Outcome::Parsed),
        Frame::Broken(_, e) => Outcome::Broken(e),
        // `MarcFraming` only frames non-empty chunks, which `next_frame` always decides.
        Frame::End | Frame::NeedMore => Outcome::Broken(FrameError::Truncated),
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
    pub(crate) fn decode_in_python<'py>(
        &self,
        py: Python<'py>,
        chunk: &[u8],
    ) -> PyResult<Bound<'py, PyAny>> {
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
    /// `Record` (with `lazy_fields`, its fields built on first use), or the exception pymarc would
    /// raise.
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        parsed_with: &parse::Options,
        chunk: &[u8],
        outcome: Outcome,
        lazy_fields: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        match outcome {
            Outcome::Parsed(rec) => {
                write_messages(py, &rec.messages)?;
                Builder::get(py)?.record(
                    py,
                    rec,
                    parsed_with.to_unicode,
                    parsed_with.force_utf8,
                    lazy_fields,
                )
            }
            // Rust refused the record: the Python decoder gives pymarc's record or exception.
            Outcome::Python => self.decode_in_python(py, chunk),
            Outcome::Broken(e) => Err(frame_error(py, e)),
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
/// reader per thread to read files in parallel (reading and framing release the GIL once per
/// batch). With `readahead` (the default) a worker parses each batch ahead of the caller, who
/// builds the records already parsed and parses what the worker has not started (see
/// [`gilkit::batch::ordered`]).
#[pyclass(module = "gilkit_marc", name = "MARCReader", subclass)]
pub(crate) struct MarcReader {
    reader: RecordReader<MarcFraming>,
    /// The current batch, handed out in order.
    pipeline: Pipeline,
    /// The options the current batch is parsed with, as given and as resolved.
    batch: (PyOptions, parse::Options),
    /// Parse each batch on a worker while records are built.
    #[pyo3(get)]
    readahead: bool,
    /// Build each record's fields when first used.
    #[pyo3(get)]
    lazy_fields: bool,
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
    /// The chunk last read.
    current_chunk: Option<Current>,
    current_exception: Option<Py<PyAny>>,
    /// What read-ahead did.
    worker_stats: ordered::Stats,
    /// Batches read without read-ahead because no core was spare.
    jobs_skipped: u64,
    /// Keeps the file object's position just after the record last read, as pymarc's.
    position: Position,
    /// Counts this reader as consuming (read-ahead's core budget), from its first batch to its end.
    reading: Option<Consumer>,
    fatal: bool,
    closed: bool,
}

/// The chunk last read: one of a batch's, or the end of the data (pymarc's `b""`).
enum Current {
    Chunk(Arc<Chunks>, usize),
    End,
}

#[pymethods]
impl MarcReader {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (marc_target, to_unicode=true, force_utf8=false, hide_utf8_warnings=false,
                        utf8_handling="strict", file_encoding="iso8859-1",
                        permissive=false, *, readahead=true, lazy_fields=false))]
    fn new(
        py: Python<'_>,
        marc_target: &Bound<'_, PyAny>,
        to_unicode: bool,
        force_utf8: bool,
        hide_utf8_warnings: bool,
        utf8_handling: &str,
        file_encoding: &str,
        permissive: bool,
        readahead: bool,
        lazy_fields: bool,
    ) -> PyResult<Self> {
        let opts = PyOptions::new(
            to_unicode,
            force_utf8,
            hide_utf8_warnings,
            utf8_handling,
            file_encoding,
        );
        let parsed = opts.resolve(py);
        let source = Source::from_py(marc_target)?;
        let position = Position::new(marc_target, source.kind())?;
        Ok(Self {
            reader: RecordReader::new(source, MarcFraming::default(), reader_options()),
            position,
            pipeline: Pipeline::empty(parsed),
            batch: (opts.clone(), parsed),
            readahead,
            lazy_fields,
            to_unicode: opts.to_unicode,
            force_utf8: opts.force_utf8,
            hide_utf8_warnings: opts.hide_utf8_warnings,
            utf8_handling: opts.utf8_handling,
            file_encoding: opts.file_encoding,
            permissive,
            file_handle: marc_target.clone().unbind(),
            current_chunk: None,
            current_exception: None,
            worker_stats: ordered::Stats::default(),
            jobs_skipped: 0,
            reading: None,
            fatal: false,
            closed: false,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next record, `None` for a record that could not be read; `StopIteration` at the end.
    ///
    /// Releases the GIL once per batch of records (to read a path, frame them, and parse the
    /// first few; the worker parses the rest), to parse parts the worker has not started, and
    /// while waiting for the worker to finish one it has; holds it to read
    /// a Python file object and to build each record's Python objects.
    ///
    /// # Errors
    ///
    /// An exception raised by the file object's `read` or `seek`, unchanged; `OSError` reading a path;
    /// `ValueError` after `close()`; `KeyboardInterrupt` while waiting for the worker (calling
    /// again resumes).
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.closed {
            return Err(PyValueError::new_err("I/O operation on closed MARCReader"));
        }
        if self.fatal {
            return Err(PyStopIteration::new_err(()));
        }
        self.current_chunk = None;
        self.current_exception = None;
        if self.pipeline.is_done() {
            self.position.before_read(py)?;
            if !self.read_batch(py)? {
                self.current_chunk = Some(Current::End);
                return Err(PyStopIteration::new_err(()));
            }
        }
        if !self.options_unchanged() {
            // Options changed: parse what is left of the batch again with the new ones.
            let options = self.options();
            let parsed = options.resolve(py);
            self.pipeline
                .reparse(parsed, self.readahead, &mut self.worker_stats);
            self.batch = (options, parsed);
        }
        let (index, outcome) = self
            .pipeline
            .next(py, &mut self.worker_stats)?
            .expect("a batch that is not done has a next record");
        let chunks = self.pipeline.chunks.clone();
        self.fatal = matches!(outcome, Outcome::Broken(_));
        if self.fatal {
            self.reading = None;
        }
        let result = self.batch.0.build(
            py,
            &self.batch.1,
            chunks.get(index),
            outcome,
            self.lazy_fields,
        );
        self.position.record_read(py, chunks.get(index).len())?;
        self.current_chunk = Some(Current::Chunk(chunks, index));
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
        self.current_chunk.as_ref().map(|current| match current {
            Current::Chunk(chunks, index) => PyBytes::new(py, chunks.get(*index)),
            Current::End => PyBytes::new(py, b""),
        })
    }

    /// The exception for the record last read, if it could not be read.
    #[getter]
    fn current_exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.current_exception.as_ref().map(|e| e.clone_ref(py))
    }

    /// What the reader did so far (beyond pymarc), as a dict ([`MarcReaderStats`]'s fields;
    /// durations in float seconds, keys ending in `_s`). Holds the GIL.
    fn stats(&self) -> MarcReaderStats {
        let stats = self.reader.stats();
        let ahead = &self.worker_stats;
        MarcReaderStats {
            python_calls: stats.python_calls,
            gil_releases: stats.gil_releases,
            batches: stats.batches,
            records: stats.records,
            bytes_read: stats.bytes_read,
            released: stats.released,
            parse_jobs: ahead.workers,
            parse_jobs_skipped: self.jobs_skipped,
            parts_parsed_ahead: ahead.parts_ahead,
            parts_parsed_inline: ahead.parts_inline,
            parse_waits: ahead.waits,
            parse_wait: ahead.waited,
        }
    }

    /// Closes the underlying file object (its `close()` is called) and ends reading; stops the
    /// worker first. Holds the GIL (stopping the worker takes at most one part's parse).
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        self.closed = true;
        self.pipeline = Pipeline::empty(self.batch.1);
        self.reading = None;
        let handle = self.file_handle.bind(py);
        if handle.hasattr("close")? {
            handle.call_method0("close")?;
        }
        Ok(())
    }
}

impl MarcReader {
    /// Reads and frames the next batch, parsing its first records (all of them without
    /// `readahead`) in the same GIL release and starting the worker on the rest; `false` at the
    /// end of the data.
    fn read_batch(&mut self, py: Python<'_>) -> PyResult<bool> {
        let opts = self.batch.1;
        self.reading.get_or_insert_with(Consumer::enter);
        // Reusing the last batch's buffer saves growing a fresh one (and its page faults). Its
        // worker ends first, so that it is not counted as busy below.
        let mut chunks =
            std::mem::replace(&mut self.pipeline, Pipeline::empty(opts)).into_buffer(py);
        // Without a spare core for a worker, read exactly as without read-ahead.
        let ahead = self.readahead && spare_core();
        let parsed = self.reader.next_batch(py, |chunk| {
            chunks.push(chunk);
            (!ahead || chunks.len() <= PART).then(|| parse_chunk(chunk, &opts))
        })?;
        let Some(parsed) = parsed else {
            self.reading = None;
            return Ok(false);
        };
        if self.readahead && !ahead && chunks.len() > PART {
            self.jobs_skipped += 1;
        }
        let parsed = parsed.into_iter().map_while(|outcome| outcome).collect();
        self.pipeline = Pipeline::new(chunks, parsed, opts, ahead, &mut self.worker_stats);
        Ok(true)
    }

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
/// records, then builds them with the GIL held. With `threads > 1` the GIL is first released once
/// to parse everything on `threads` threads (Ctrl-C stops it); otherwise, with `readahead`, a
/// worker parses while records are built, and without it, parsing happens in that one release.
#[pyfunction]
#[pyo3(signature = (target, threads=1, *, permissive=false, to_unicode=true, force_utf8=false,
                    hide_utf8_warnings=false, utf8_handling="strict", file_encoding="iso8859-1",
                    readahead=true, lazy_fields=false))]
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
    readahead: bool,
    lazy_fields: bool,
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
    let mut chunks = Chunks::default();
    while reader.next_batch(py, |chunk| chunks.push(chunk))?.is_some() {
        if reader.framing_mut().stopped {
            // The last chunk is pymarc's fatal error; nothing after it is read.
            break;
        }
    }
    let threads = threads.max(1);
    let mut stats = ordered::Stats::default();
    let _consuming = Consumer::enter();
    let mut pipeline = if threads > 1 || !readahead || !spare_core() {
        let parsed = parse_all(py, &chunks, &parse_opts, threads)?;
        Pipeline::new(chunks, parsed, parse_opts, false, &mut stats)
    } else {
        Pipeline::new(chunks, Vec::new(), parse_opts, true, &mut stats)
    };
    let mut out = Vec::new();
    while let Some((index, outcome)) = pipeline.next(py, &mut stats)? {
        let chunk = pipeline.chunks.get(index);
        match opts.build(py, &parse_opts, chunk, outcome, lazy_fields) {
            Ok(record) => out.push(record),
            Err(err) if permissive && err.is_instance_of::<PyException>(py) => {
                out.push(py.None().into_bound(py))
            }
            Err(err) => return Err(err),
        }
    }
    PyList::new(py, out)
}

/// Parses `chunks` on `threads` threads with [`gilkit::batch`], in parts of [`PART`] records, GIL
/// released (Ctrl-C stops it: `KeyboardInterrupt`).
fn parse_all(
    py: Python<'_>,
    chunks: &Chunks,
    opts: &parse::Options,
    threads: usize,
) -> PyResult<Vec<Outcome>> {
    let n = chunks.len();
    let parts: Vec<Range<usize>> = (0..n).step_by(PART).map(|s| s..n.min(s + PART)).collect();
    let options = BatchOptions {
        workers: Some(threads),
        ..BatchOptions::default()
    };
    let report = batch::run_cpu_from_python(py, &parts, &options, None, |range, _| {
        Ok::<_, Infallible>(chunks.parse(range.clone(), opts))
    })?;
    let mut outcomes = Vec::with_capacity(n);
    for part in report.outcomes {
        outcomes.extend(parsed_part(part)?);
    }
    Ok(outcomes)
}

/// `MARCReader.stats()`: what a reader did so far, as a Python `dict` keyed by the field names
/// (gilkit's convention: durations in float seconds with an `_s` suffix, counts as ints).
#[derive(IntoPyObject)]
pub(crate) struct MarcReaderStats {
    /// Calls into the Python file object.
    python_calls: u64,
    /// Times the GIL was released and taken again.
    gil_releases: u64,
    /// Batches read.
    batches: u64,
    /// Records framed.
    records: u64,
    /// Bytes read from the source.
    bytes_read: u64,
    /// Time spent with the GIL released reading paths, framing and parsing (all parsing without
    /// `readahead`, the first records of each batch with it).
    #[pyo3(item("released_s"), into_py_with = gilkit::stats::seconds)]
    released: Duration,
    /// Read-ahead workers started.
    parse_jobs: u64,
    /// Batches that got no worker because no core was spare.
    parse_jobs_skipped: u64,
    /// Parts of 64 records after each batch's first that the worker parsed.
    parts_parsed_ahead: u64,
    /// Such parts this thread parsed itself.
    parts_parsed_inline: u64,
    /// How often `__next__` waited for the worker (GIL released).
    parse_waits: u64,
    /// How long it waited in all.
    #[pyo3(item("parse_wait_s"), into_py_with = gilkit::stats::seconds)]
    parse_wait: Duration,
}
