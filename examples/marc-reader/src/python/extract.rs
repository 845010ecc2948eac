//! `extract`: columns of field values computed in Rust, in parallel, returned as an Arrow table.
//!
//! The object API (`MARCReader`) must build pymarc-shaped Python objects for every record, which
//! needs the GIL, so its threads cannot scale on CPython with a GIL. `extract` keeps the whole job
//! in Rust and takes the GIL once, at the end:
//!
//! - **Sources Rust reads** (a path to a regular file, `bytes` and other buffers, a regular file
//!   opened `'rb'`): one GIL release for the whole input, on `gilkit::batch`
//!   ([`batch::run_cpu_from_python`]: Ctrl-C stops it). `threads` workers share one [`Framer`]:
//!   a worker takes the next *part* (up to [`PART_ROWS`] framed records, which point into a
//!   shared read block, no copy) under a lock held only to frame it, then parses its records
//!   ([`crate::parse`]) and appends each column's values ([`crate::columns`]) to arrow-rs list
//!   builders, giving one Arrow `RecordBatch` per part. The next block is read ahead outside that
//!   lock by one worker while the others parse. So framing (the only serial step, ~1.5% of the
//!   instructions) and reading overlap with parsing, and no step waits for a whole round. A file
//!   opened `'rb'` is read with `pread` on a duplicate of its descriptor and sought to the end of
//!   the records at the end.
//! - **Other sources** (Python file objects, FIFOs and devices by path): read in rounds of
//!   [`ROUND_ROWS`] records by gilkit's reader ([`RecordReader`]), which needs the GIL to read a
//!   file object and to let Ctrl-C through while a FIFO waits; each round is parsed by parts on
//!   the threads with the GIL released.
//!
//! Either way, nothing else touches Python before the end: the rare records only Python decodes
//! exactly (a warning about indicators, a non-ASCII subfield code, a Python codec:
//! [`parse::ParseError::NeedsPython`]) are left null by their part, with their raw bytes kept;
//! MARC-8 messages pymarc writes to `sys.stderr` are kept with their row. With the GIL taken once
//! at the end ([`Extractor::finish`]), the parts are walked in row order: each message is written
//! and each kept record decoded by the Python decoder in record order, as pymarc would, and the
//! decoded values are put in place ([`patch`]). The table is the parts' batches, in order;
//! Python gets it through the Arrow PyCapsule interface (`__arrow_c_stream__`), which pyarrow,
//! polars and DuckDB import without copying.
//!
//! One row per record slot, as pymarc's `MARCReader` yields them: a record pymarc cannot decode
//! is a null row (or, with `permissive=False`, its exception is raised).
//!
//! GIL: released for everything but the final step (and, for file objects, their reads; for a
//! FIFO, between rounds); the calling thread re-attaches every 50 ms only to run signal handlers.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use arrow_array::builder::{BinaryBuilder, ListBuilder, StringBuilder};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{
    Array, ArrayRef, BinaryArray, ListArray, RecordBatch, RecordBatchIterator, RecordBatchOptions,
    StringArray,
};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use gilkit::batch::{self, BatchOptions, ItemContext, Outcome as ItemOutcome};
use gilkit::file::{PyReader, ReaderOptions, RecordReader, Source, SourceKind};
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList, PyString};

use super::reader::{MarcFraming, PyOptions, frame_error};
use crate::columns::{ColumnSpec, Select};
use crate::frame::{Frame, FrameError, next_frame};
use crate::parse;

/// Records per part: the unit a thread claims. Large enough that a claim costs nothing next to
/// parsing them (about a microsecond each), small enough that two threads share the work evenly.
pub(crate) const PART_ROWS: usize = 2048;
/// Records read per round (sources read with the GIL); bounds the raw records held at once.
pub(crate) const ROUND_ROWS: usize = 32_768;
/// Bytes read per refill of the source.
const BUFFER_SIZE: usize = 4 << 20;
/// Read blocks kept for reuse by a [`Framer`]: a block is reused once the parts pointing into it
/// are parsed, so its pages are faulted in once, not once per refill.
const SPARE_BLOCKS: usize = 4;

/// Framed records back to back: record `i` is `data[bounds[i]..bounds[i + 1]]`.
#[derive(Clone, Copy)]
pub(crate) struct Framed<'a> {
    data: &'a [u8],
    bounds: &'a [usize],
}

impl Framed<'_> {
    fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.bounds[i]..self.bounds[i + 1]]
    }
}

/// One round's framed records, back to back (sources read with the GIL).
pub(crate) struct Round {
    data: Vec<u8>,
    bounds: Vec<usize>,
}

impl Default for Round {
    fn default() -> Round {
        Round {
            data: Vec::new(),
            bounds: vec![0],
        }
    }
}

impl Round {
    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.bounds.push(self.data.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The records `rows`.
    fn framed(&self, rows: Range<usize>) -> Framed<'_> {
        Framed {
            data: &self.data,
            bounds: &self.bounds[rows.start..=rows.end],
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.bounds.truncate(1);
    }
}

/// The MARC reader of a source, tuned for rounds.
pub(crate) fn open_source(source: &Bound<'_, PyAny>) -> PyResult<RecordReader<MarcFraming>> {
    Ok(reader_of(Source::from_py(source)?))
}

fn reader_of(source: Source) -> RecordReader<MarcFraming> {
    let options = ReaderOptions::default()
        .buffer_size(BUFFER_SIZE)
        .max_batch(ROUND_ROWS);
    RecordReader::new(source, MarcFraming::default(), options)
}

/// Reads the next round (at least [`ROUND_ROWS`] records unless the data ends) into `round`;
/// returns whether more may follow. After a fatal framing error (the last chunk is pymarc's
/// error) nothing more is read, as in pymarc.
///
/// GIL: held; released by the reader to read a path and frame.
pub(crate) fn read_round(
    py: Python<'_>,
    reader: &mut RecordReader<MarcFraming>,
    round: &mut Round,
) -> PyResult<bool> {
    round.clear();
    while round.len() < ROUND_ROWS {
        if reader.framing_mut().stopped() {
            return Ok(false);
        }
        if reader.next_batch(py, |chunk| round.push(chunk))?.is_none() {
            return Ok(false);
        }
    }
    Ok(!reader.framing_mut().stopped())
}

/// A source Rust reads without the GIL, and what to do with its file object at the end.
struct Detached {
    input: Box<dyn Read + Send>,
    /// A file opened `'rb'` and where reading started: sought past the records at the end.
    file: Option<(Py<PyAny>, u64)>,
}

/// How a source is read.
enum Input {
    /// Whole, in one GIL release ([`Extractor::run_detached`]).
    Detached(Detached),
    /// In rounds by gilkit's reader, GIL held to read ([`read_round`]). Boxed: the reader is
    /// large next to the other variant.
    Rounds(Box<RecordReader<MarcFraming>>),
}

/// Chooses how to read `source`. GIL held (the checks and errors are the reader's own).
fn open_input(source: &Bound<'_, PyAny>) -> PyResult<Input> {
    let opened = Source::from_py(source)?;
    match opened.kind() {
        SourceKind::Memory => Ok(Input::Detached(Detached {
            input: Box::new(PyReader::with_capacity(BUFFER_SIZE, opened)),
            file: None,
        })),
        SourceKind::Path => {
            // A FIFO or device must be waited on with Ctrl-C let through: the reader does that.
            let path: PathBuf = source.extract()?;
            match File::open(&path) {
                Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                    Ok(Input::Detached(Detached {
                        input: Box::new(Pread { file, at: 0 }),
                        file: None,
                    }))
                }
                _ => Ok(Input::Rounds(Box::new(reader_of(opened)))),
            }
        }
        SourceKind::FileDescriptor => {
            let fd: RawFd = source.call_method0("fileno")?.extract()?;
            let at: u64 = source.call_method0("tell")?.extract()?;
            // SAFETY: `fd` belongs to `source`, a file object that stays open while we hold the
            // GIL here; the duplicate made from it is ours and independent of it.
            let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
            Ok(Input::Detached(Detached {
                input: Box::new(Pread {
                    file: File::from(owned),
                    at,
                }),
                file: Some((source.clone().unbind(), at)),
            }))
        }
        _ => Ok(Input::Rounds(Box::new(reader_of(opened)))),
    }
}

/// Reads a file from `at` on with `pread`, so a descriptor shared with a Python file object keeps
/// its own offset.
struct Pread {
    file: File,
    at: u64,
}

impl Read for Pread {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Parts of framed records, read from a [`Detached`] source, shared by the workers.
///
/// Framing is the serial step (one worker at a time, under [`Framer::state`]'s lock; about 1.5%
/// of the instructions of a run). Reading is kept out of that lock: when a worker takes a part
/// and no block is read ahead, it claims the read of the next block, does it with only the
/// input's lock held (never contended: one read is claimed at a time), and stores the block; the
/// others go on framing and parsing the current block meanwhile. A block is read after
/// [`HEADROOM`] spare bytes, where the unframed tail of the block before it (a record cut by the
/// block's end, at most 99,999 bytes) is copied when the new block takes over; only a longer
/// tail (a length below 5 reads to the end of the stream, as in pymarc) is copied whole.
struct Framer {
    input: Mutex<Box<dyn Read + Send>>,
    state: Mutex<FrameState>,
    /// Signalled when a block read ahead is stored (or the read failed).
    stored: Condvar,
}

/// Bytes kept free before the data of each read block, for the tail of the block before it.
const HEADROOM: usize = 100_000;

struct FrameState {
    /// The block being framed: bytes `at..end` are read and not yet framed.
    block: Arc<Vec<u8>>,
    at: usize,
    end: usize,
    /// The next block, read ahead: its data is `HEADROOM..HEADROOM + len`.
    next: Option<(Arc<Vec<u8>>, usize)>,
    /// A worker is reading the next block.
    reading: bool,
    /// The input has ended (the last read returned no more data).
    input_done: bool,
    /// A fatal framing error or a read error ended the input.
    stopped: bool,
    /// Bytes framed so far.
    consumed: u64,
    /// Parts handed out so far (the next part's index).
    parts: usize,
    spare: Vec<Arc<Vec<u8>>>,
}

/// Up to [`PART_ROWS`] framed records pointing into a read block.
struct Slab {
    index: usize,
    block: Arc<Vec<u8>>,
    bounds: Vec<usize>,
}

impl Slab {
    fn framed(&self) -> Framed<'_> {
        Framed {
            data: &self.block,
            bounds: &self.bounds,
        }
    }
}

/// What a worker should do after looking at the framer.
enum Step {
    Part(Slab),
    /// Read the next block into this one, then come back.
    Read(Arc<Vec<u8>>),
    Wait,
    Done,
}

impl Framer {
    fn new(input: Box<dyn Read + Send>) -> Framer {
        Framer {
            input: Mutex::new(input),
            state: Mutex::new(FrameState {
                block: Arc::new(Vec::new()),
                at: 0,
                end: 0,
                next: None,
                reading: false,
                input_done: false,
                stopped: false,
                consumed: 0,
                parts: 0,
                spare: Vec::new(),
            }),
            stored: Condvar::new(),
        }
    }

    /// The next part, framed as pymarc frames (after a fatal framing error, nothing more);
    /// `None` at the end. Called by any number of workers at once; the caller may read the next
    /// block first (without the framing lock) and parse its part only after.
    ///
    /// # Errors
    ///
    /// A read error (to the worker that read; the input then ends for all).
    fn next_part(&self) -> io::Result<Option<Slab>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match state.step() {
                Step::Part(slab) => {
                    // Read ahead while the others parse: claim the next block's read if none is
                    // read or being read, and do it before parsing this part.
                    let ahead = state.claim_read();
                    drop(state);
                    if let Some(block) = ahead {
                        self.read_block(block)?;
                    }
                    return Ok(Some(slab));
                }
                Step::Read(block) => {
                    drop(state);
                    self.read_block(block)?;
                    state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                }
                Step::Wait => {
                    state = self
                        .stored
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Step::Done => return Ok(None),
            }
        }
    }

    /// Reads into `block` (claimed with [`FrameState::claim_read`]) until it is full or the input
    /// ends, without the framing lock, and stores it as the next block.
    fn read_block(&self, mut block: Arc<Vec<u8>>) -> io::Result<()> {
        let read = {
            let data = Arc::get_mut(&mut block).expect("a claimed block is no part's any more");
            let mut input = self.input.lock().unwrap_or_else(PoisonError::into_inner);
            let mut len = 0;
            loop {
                let window = &mut data[HEADROOM + len..];
                if window.is_empty() {
                    break Ok((len, false));
                }
                match input.read(window) {
                    Ok(0) => break Ok((len, true)),
                    Ok(n) => len += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => break Err(err),
                }
            }
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.reading = false;
        let result = match read {
            Ok((len, ended)) => {
                state.input_done = ended;
                state.next = Some((block, len));
                Ok(())
            }
            Err(err) => {
                state.stopped = true;
                Err(err)
            }
        };
        drop(state);
        self.stored.notify_all();
        result
    }

    /// Bytes framed (once the workers are done).
    fn consumed(self) -> u64 {
        self.state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .consumed
    }
}

impl FrameState {
    /// Whether the data in hand is all there will be.
    fn at_eof(&self) -> bool {
        self.input_done && self.next.is_none() && !self.reading
    }

    fn step(&mut self) -> Step {
        loop {
            if self.stopped {
                return Step::Done;
            }
            let eof = self.at_eof();
            let mut bounds = vec![self.at];
            while bounds.len() <= PART_ROWS {
                match next_frame(&self.block[self.at..self.end], eof) {
                    Frame::Record(n) => self.at += n,
                    Frame::Broken(n, _) => {
                        self.at += n;
                        self.stopped = true;
                    }
                    Frame::NeedMore | Frame::End => break,
                }
                bounds.push(self.at);
                if self.stopped {
                    break;
                }
            }
            if bounds.len() > 1 {
                self.consumed += (self.at - bounds[0]) as u64;
                self.parts += 1;
                return Step::Part(Slab {
                    index: self.parts - 1,
                    block: self.block.clone(),
                    bounds,
                });
            }
            if eof {
                return Step::Done;
            }
            if let Some((next, len)) = self.next.take() {
                self.take_over(next, len);
                continue;
            }
            if self.reading {
                return Step::Wait;
            }
            return match self.claim_read() {
                Some(block) => Step::Read(block),
                None => Step::Done,
            };
        }
    }

    /// Claims the read of the next block, if none is read or being read and the input goes on:
    /// returns the block to read into.
    fn claim_read(&mut self) -> Option<Arc<Vec<u8>>> {
        if self.reading || self.next.is_some() || self.input_done || self.stopped {
            return None;
        }
        self.reading = true;
        let size = HEADROOM + BUFFER_SIZE;
        Some(
            match self
                .spare
                .iter()
                .position(|b| Arc::strong_count(b) == 1 && b.len() == size)
            {
                Some(i) => self.spare.swap_remove(i),
                None => Arc::new(vec![0; size]),
            },
        )
    }

    /// Makes the block read ahead the current one, with the unframed tail of the current one in
    /// front of its data.
    fn take_over(&mut self, next: Arc<Vec<u8>>, len: usize) {
        let tail = self.end - self.at;
        let done = if tail <= HEADROOM {
            let mut next = next;
            let data = Arc::get_mut(&mut next).expect("a block read ahead is no part's yet");
            data[HEADROOM - tail..HEADROOM].copy_from_slice(&self.block[self.at..self.end]);
            self.at = HEADROOM - tail;
            self.end = HEADROOM + len;
            std::mem::replace(&mut self.block, next)
        } else {
            let mut joined = Vec::with_capacity(tail + len);
            joined.extend_from_slice(&self.block[self.at..self.end]);
            joined.extend_from_slice(&next[HEADROOM..HEADROOM + len]);
            self.block = Arc::new(joined);
            self.at = 0;
            self.end = tail + len;
            next
        };
        self.spare_block(done);
    }

    fn spare_block(&mut self, block: Arc<Vec<u8>>) {
        if block.len() == HEADROOM + BUFFER_SIZE && self.spare.len() < SPARE_BLOCKS {
            self.spare.push(block);
        }
    }
}

/// A column under construction: lists of strings, or of bytes without `to_unicode`.
enum Column {
    Text(ListBuilder<StringBuilder>),
    Bytes(ListBuilder<BinaryBuilder>),
}

impl Column {
    fn new(item: &FieldRef, capacity: usize) -> Column {
        if item.data_type() == &DataType::Utf8 {
            Column::Text(
                ListBuilder::with_capacity(StringBuilder::new(), capacity).with_field(item.clone()),
            )
        } else {
            Column::Bytes(
                ListBuilder::with_capacity(BinaryBuilder::new(), capacity).with_field(item.clone()),
            )
        }
    }

    fn push_value(&mut self, value: &[u8]) {
        match self {
            // The parser only produces UTF-8 text with `to_unicode`; lossy never allocates then.
            Column::Text(list) => list.values().append_value(String::from_utf8_lossy(value)),
            Column::Bytes(list) => list.values().append_value(value),
        }
    }

    /// Ends a row: a list (`valid`) or null.
    fn end_row(&mut self, valid: bool) {
        match self {
            Column::Text(list) => list.append(valid),
            Column::Bytes(list) => list.append(valid),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Text(list) => Arc::new(list.finish()),
            Column::Bytes(list) => Arc::new(list.finish()),
        }
    }
}

/// Why a row was left null by its part.
#[derive(Debug, Clone, Copy)]
enum Special {
    /// pymarc decodes it, but only Python reproduces that exactly.
    Python,
    /// pymarc raises for it (the Python decoder gives the exception, for `permissive=False`).
    Invalid,
    /// A fatal framing error (pymarc's `RecordLengthInvalid`, `TruncatedRecord`, ...).
    Broken(FrameError),
}

/// A part's result, built without Python: its batch, the rows it left null for Python to decide
/// (with their raw records), and the MARC-8 messages of its records, each with its row.
pub(crate) struct Part {
    batch: RecordBatch,
    specials: Vec<(usize, Special, Vec<u8>)>,
    messages: Vec<(usize, String)>,
}

/// Everything a round needs, shared by the threads (no Python inside).
pub(crate) struct Extractor {
    specs: Vec<ColumnSpec>,
    options: PyOptions,
    parsed: parse::Options,
    schema: SchemaRef,
    item: FieldRef,
    permissive: bool,
    threads: Option<usize>,
}

impl Extractor {
    /// Checks the specs and options. GIL held (resolving `file_encoding` asks Python's codecs).
    ///
    /// # Errors
    ///
    /// `ValueError` for a bad spec, no spec, or `threads=0`; `TypeError` when `fields` is not a
    /// string or a sequence of strings.
    pub(crate) fn new(
        py: Python<'_>,
        fields: &Bound<'_, PyAny>,
        options: PyOptions,
        permissive: bool,
        threads: Option<usize>,
    ) -> PyResult<Extractor> {
        let names: Vec<String> = if let Ok(one) = fields.cast::<PyString>() {
            vec![one.to_str()?.to_owned()]
        } else {
            fields.extract().map_err(|_| {
                PyTypeError::new_err(
                    "fields must be a field spec or a list of them, such as [\"001\", \"245$a\"]",
                )
            })?
        };
        if names.is_empty() {
            return Err(PyValueError::new_err(
                "no fields: give at least one field spec, such as \"245$a\"",
            ));
        }
        if threads == Some(0) {
            return Err(PyValueError::new_err(
                "threads must be at least 1 (None: one per CPU)",
            ));
        }
        let specs = names
            .iter()
            .map(|name| ColumnSpec::parse(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let parsed = options.resolve(py);
        let value_type = if parsed.to_unicode {
            DataType::Utf8
        } else {
            DataType::Binary
        };
        let item: FieldRef = Arc::new(Field::new_list_field(value_type, true));
        let schema = Arc::new(Schema::new(
            specs
                .iter()
                .map(|spec| Field::new(&spec.name, DataType::List(item.clone()), true))
                .collect::<Vec<_>>(),
        ));
        Ok(Extractor {
            specs,
            options,
            parsed,
            schema,
            item,
            permissive,
            threads,
        })
    }

    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Whether values are text (`to_unicode`) or bytes.
    pub(crate) fn is_text(&self) -> bool {
        self.parsed.to_unicode
    }

    /// Worker threads: `threads`, or one per CPU.
    fn workers(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Parses `records` and builds their columns (no Python).
    fn build_part(&self, records: Framed<'_>) -> Part {
        let rows = records.len();
        let text = self.parsed.to_unicode;
        let mut columns: Vec<Column> = self
            .specs
            .iter()
            .map(|_| Column::new(&self.item, rows))
            .collect();
        let mut record = parse::Record::default();
        let mut scratch = Vec::new();
        let mut specials = Vec::new();
        let mut messages = Vec::new();
        for row in 0..rows {
            let chunk = records.get(row);
            let special = match next_frame(chunk, true) {
                Frame::Record(_) => match parse::parse_into(chunk, &self.parsed, &mut record) {
                    Ok(()) => {
                        messages.extend(record.messages.drain(..).map(|m| (row, m)));
                        for (spec, column) in self.specs.iter().zip(&mut columns) {
                            spec.for_each_value(&record, text, &mut scratch, |v| {
                                column.push_value(v)
                            });
                            column.end_row(true);
                        }
                        None
                    }
                    Err(e) if e.is_accepted_by_pymarc() => Some(Special::Python),
                    Err(_) => Some(Special::Invalid),
                },
                Frame::Broken(_, e) => Some(Special::Broken(e)),
                // Chunks are framed by `next_frame` (the framer's or the reader's framing).
                Frame::End | Frame::NeedMore => Some(Special::Broken(FrameError::Truncated)),
            };
            if let Some(special) = special {
                columns.iter_mut().for_each(|c| c.end_row(false));
                specials.push((row, special, chunk.to_vec()));
            }
        }
        let arrays = columns.iter_mut().map(Column::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .expect("the columns are built for this schema, one row per record");
        Part {
            batch,
            specials,
            messages,
        }
    }

    /// Parses and builds a round on the threads, GIL released; returns its parts in order.
    ///
    /// # Errors
    ///
    /// `KeyboardInterrupt` (Ctrl-C stops the threads at their next part); `RuntimeError` if the
    /// parser panicked (a bug).
    pub(crate) fn run_round(&self, py: Python<'_>, round: &Round) -> PyResult<Vec<Part>> {
        let n = round.len();
        let parts: Vec<Range<usize>> = (0..n)
            .step_by(PART_ROWS)
            .map(|start| start..n.min(start + PART_ROWS))
            .collect();
        let options = BatchOptions {
            workers: self.threads,
            ..BatchOptions::default()
        };
        let report = batch::run_cpu_from_python(py, &parts, &options, None, |rows, _| {
            Ok::<_, std::convert::Infallible>(self.build_part(round.framed(rows.clone())))
        })?;
        report
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                ItemOutcome::Ok(part) => Ok(part),
                _ => Err(internal_error()),
            })
            .collect()
    }

    /// Reads, frames, parses and builds the whole of a [`Detached`] source in one GIL release:
    /// each of the workers takes the next part from the shared [`Framer`] (the lock is held only
    /// to frame it, and to read when a block is used up), builds it, and goes back for more.
    /// Returns the parts in order and the bytes framed.
    ///
    /// GIL: released throughout (the calling thread re-attaches every 50 ms to run signal
    /// handlers, nothing else).
    ///
    /// # Errors
    ///
    /// The read error; `KeyboardInterrupt` (the workers stop at their next part); `RuntimeError`
    /// if the parser panicked (a bug).
    fn run_detached(
        &self,
        py: Python<'_>,
        input: Box<dyn Read + Send>,
    ) -> PyResult<(Vec<Part>, u64)> {
        let framer = Framer::new(input);
        let workers: Vec<usize> = (0..self.workers()).collect();
        let options = BatchOptions {
            workers: Some(workers.len()),
            ..BatchOptions::default()
        };
        let work = |_: &usize, cx: &ItemContext<'_>| -> io::Result<Vec<(usize, Part)>> {
            let mut built = Vec::new();
            while !cx.should_stop() {
                let Some(slab) = framer.next_part()? else {
                    break;
                };
                built.push((slab.index, self.build_part(slab.framed())));
            }
            Ok(built)
        };
        let report = batch::run_cpu_from_python(py, &workers, &options, None, work)?;
        let mut parts = Vec::new();
        for outcome in report.outcomes {
            match outcome {
                ItemOutcome::Ok(built) => parts.extend(built),
                ItemOutcome::Err(err) => return Err(err.into()),
                _ => return Err(internal_error()),
            }
        }
        parts.sort_unstable_by_key(|(index, _)| *index);
        let consumed = framer.consumed();
        Ok((parts.into_iter().map(|(_, part)| part).collect(), consumed))
    }

    /// The one step with the GIL: walks the parts' rows in order, writing each MARC-8 message and
    /// decoding each record only Python decodes (or, with `permissive=False`, raising the
    /// exception of the first record pymarc cannot read) in record order, as pymarc does; puts the
    /// decoded values in place and returns the batches.
    pub(crate) fn finish(&self, py: Python<'_>, parts: Vec<Part>) -> PyResult<Vec<RecordBatch>> {
        parts
            .into_iter()
            .map(|part| self.finish_part(py, part))
            .collect()
    }

    fn finish_part(&self, py: Python<'_>, part: Part) -> PyResult<RecordBatch> {
        let mut messages = part.messages.into_iter().peekable();
        let mut write_until = |row: usize| -> PyResult<()> {
            let mut due = Vec::new();
            while let Some((_, message)) = messages.next_if(|(r, _)| *r < row) {
                due.push(message);
            }
            super::build::write_messages(py, &due)
        };
        let mut replaced: HashMap<usize, Vec<Vec<Vec<u8>>>> = HashMap::new();
        for (row, special, chunk) in &part.specials {
            write_until(*row)?;
            let decoded = match special {
                Special::Broken(_) if self.permissive => continue,
                Special::Broken(e) => return Err(frame_error(py, *e)),
                Special::Invalid if self.permissive => continue,
                Special::Invalid | Special::Python => self.options.decode_in_python(py, chunk),
            };
            match decoded {
                Ok(record) => {
                    replaced.insert(*row, self.values_in_python(py, &record)?);
                }
                Err(err) if self.permissive && err.is_instance_of::<PyException>(py) => {}
                Err(err) => return Err(err),
            }
        }
        write_until(usize::MAX)?;
        if replaced.is_empty() {
            return Ok(part.batch);
        }
        let columns = (0..self.specs.len())
            .map(|c| patch(part.batch.column(c), &replaced, c, &self.item))
            .collect();
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| PyRuntimeError::new_err(format!("internal error in gilkit_marc: {e}")))
    }

    /// The column values of a record the Python decoder built (`gilkit_marc.extract._values`).
    fn values_in_python(
        &self,
        py: Python<'_>,
        record: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Vec<Vec<u8>>>> {
        let specs = PyList::empty(py);
        for spec in &self.specs {
            let item = match &spec.select {
                Select::Leader => ("leader", String::new(), String::new()),
                Select::Field(tag) => ("field", tag_str(tag), String::new()),
                Select::Subfields(tag, codes) => (
                    "subfields",
                    tag_str(tag),
                    String::from_utf8_lossy(codes).into_owned(),
                ),
            };
            specs.append(item)?;
        }
        let values = py
            .import("gilkit_marc.extract")?
            .getattr("_values")?
            .call1((record, specs, self.parsed.to_unicode))?;
        let mut out = Vec::new();
        for column in values.cast::<PyList>()?.iter() {
            let mut items = Vec::new();
            for value in column.cast::<PyList>()?.iter() {
                items.push(if let Ok(s) = value.cast::<PyString>() {
                    s.to_str()?.as_bytes().to_vec()
                } else {
                    value.cast::<PyBytes>()?.as_bytes().to_vec()
                });
            }
            out.push(items);
        }
        Ok(out)
    }
}

fn internal_error() -> PyErr {
    PyRuntimeError::new_err(
        "internal error in gilkit_marc while extracting columns (a bug: please report it with \
         the input file)",
    )
}

fn tag_str(tag: &[u8; 3]) -> String {
    String::from_utf8_lossy(tag).into_owned()
}

/// Column `c` of a part with the rows in `replaced` set to their values (GIL not needed; the
/// rows are few, so copying the column once is fine).
fn patch(
    column: &ArrayRef,
    replaced: &HashMap<usize, Vec<Vec<Vec<u8>>>>,
    c: usize,
    item: &FieldRef,
) -> ArrayRef {
    let list = column
        .as_any()
        .downcast_ref::<ListArray>()
        .expect("extract builds list columns");
    let mut out = Column::new(item, list.len());
    for row in 0..list.len() {
        if let Some(values) = replaced.get(&row) {
            values[c].iter().for_each(|v| out.push_value(v));
            out.end_row(true);
        } else if list.is_null(row) {
            out.end_row(false);
        } else {
            for_each_item(&list.value(row), |v| out.push_value(v));
            out.end_row(true);
        }
    }
    out.finish()
}

/// Calls `f` with each item of a list's values (strings as UTF-8 bytes, or bytes).
pub(crate) fn for_each_item(values: &ArrayRef, mut f: impl FnMut(&[u8])) {
    if let Some(strings) = values.as_any().downcast_ref::<StringArray>() {
        (0..strings.len()).for_each(|j| f(strings.value(j).as_bytes()));
    } else if let Some(bytes) = values.as_any().downcast_ref::<BinaryArray>() {
        (0..bytes.len()).for_each(|j| f(bytes.value(j)));
    }
}

/// The table `extract` returns: Arrow record batches, one column per field spec, exported
/// through the Arrow PyCapsule interface.
#[pyclass(module = "gilkit_marc", name = "Table", frozen)]
pub(crate) struct Table {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[pymethods]
impl Table {
    /// The table as an Arrow C stream (`pyarrow.table(t)`, `polars.DataFrame(t)`,
    /// `duckdb.sql("... from t")`): the columns are shared, not copied. `requested_schema` is
    /// accepted and ignored (the stream has the table's own schema; consumers cast). Can be
    /// called any number of times. Holds the GIL (no data is copied).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let batches: Vec<_> = self.batches.iter().cloned().map(Ok).collect();
        let reader = RecordBatchIterator::new(batches, self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    /// Rows: one per record slot of the source.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    /// The column names: the field specs as given.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// `{name: [list of values, or None, per row]}` as Python objects (no pyarrow needed).
    /// Holds the GIL.
    fn to_pydict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (c, field) in self.schema.fields().iter().enumerate() {
            let rows = PyList::empty(py);
            for batch in &self.batches {
                let list = batch
                    .column(c)
                    .as_any()
                    .downcast_ref::<ListArray>()
                    .expect("extract builds list columns");
                for row in 0..list.len() {
                    if list.is_null(row) {
                        rows.append(py.None())?;
                        continue;
                    }
                    let values = PyList::empty(py);
                    let items = list.value(row);
                    if let Some(strings) = items.as_any().downcast_ref::<StringArray>() {
                        for j in 0..strings.len() {
                            values.append(strings.value(j))?;
                        }
                    } else {
                        let mut err = Ok(());
                        for_each_item(&items, |v| {
                            if err.is_ok() {
                                err = values.append(PyBytes::new(py, v));
                            }
                        });
                        err?;
                    }
                    rows.append(values)?;
                }
            }
            dict.set_item(field.name(), rows)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!(
            "<gilkit_marc.Table: {} rows, columns {:?}>",
            self.num_rows(),
            self.column_names()
        )
    }
}

/// `gilkit_marc.extract` (see `python/gilkit_marc/extract.py` for the user documentation).
///
/// GIL: released for reading (paths, regular files, memory), parsing and column building, and
/// taken once at the end (messages, the records only Python decodes); for Python file objects and
/// FIFOs, also held to read each round (see the module documentation).
#[pyfunction]
#[pyo3(signature = (source, fields, *, threads=None, permissive=true, to_unicode=true,
                    force_utf8=false, utf8_handling="strict", hide_utf8_warnings=false,
                    file_encoding="iso8859-1"))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    fields: &Bound<'_, PyAny>,
    threads: Option<usize>,
    permissive: bool,
    to_unicode: bool,
    force_utf8: bool,
    utf8_handling: &str,
    hide_utf8_warnings: bool,
    file_encoding: &str,
) -> PyResult<Table> {
    let options = PyOptions::new(
        to_unicode,
        force_utf8,
        hide_utf8_warnings,
        utf8_handling,
        file_encoding,
    );
    let extractor = Extractor::new(py, fields, options, permissive, threads)?;
    let parts = match open_input(source)? {
        Input::Detached(Detached { input, file }) => {
            let (parts, consumed) = extractor.run_detached(py, input)?;
            if let Some((file, start)) = file {
                // Where pymarc's reader would be after the last record.
                file.bind(py).call_method1("seek", (start + consumed,))?;
            }
            parts
        }
        Input::Rounds(mut reader) => {
            let mut round = Round::default();
            let mut parts = Vec::new();
            loop {
                let more = read_round(py, &mut reader, &mut round)?;
                if round.len() > 0 {
                    parts.extend(extractor.run_round(py, &round)?);
                }
                if !more {
                    break;
                }
            }
            parts
        }
    };
    let batches = extractor.finish(py, parts)?;
    Ok(Table {
        schema: extractor.schema(),
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks `next_frame` cuts from the whole input at once: what the framer must give.
    fn framed_at_once(data: &[u8]) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        let mut at = 0;
        loop {
            match next_frame(&data[at..], true) {
                Frame::Record(n) => chunks.push(&data[at..at + n]),
                Frame::Broken(n, _) => {
                    chunks.push(&data[at..at + n]);
                    return chunks;
                }
                Frame::End | Frame::NeedMore => return chunks,
            }
            at += chunks.last().map_or(0, |c| c.len());
        }
    }

    fn framed_by_framer(data: &[u8]) -> Vec<Vec<u8>> {
        let framer = Framer::new(Box::new(io::Cursor::new(data.to_vec())));
        let mut chunks = Vec::new();
        let mut index = 0;
        while let Some(slab) = framer.next_part().unwrap() {
            assert_eq!(slab.index, index);
            index += 1;
            let records = slab.framed();
            chunks.extend((0..records.len()).map(|i| records.get(i).to_vec()));
        }
        assert_eq!(
            framer.consumed(),
            chunks.iter().map(|c| c.len() as u64).sum::<u64>()
        );
        chunks
    }

    fn record(body_len: usize) -> Vec<u8> {
        let len = body_len + 6;
        let mut r = format!("{len:05}").into_bytes();
        r.extend(std::iter::repeat_n(b'a', body_len));
        r.push(END_OF_RECORD);
        r
    }

    const END_OF_RECORD: u8 = 0x1D;

    #[test]
    fn the_framer_cuts_blocks_as_pymarc_cuts_the_stream() {
        // Records of many sizes across several read blocks (records cut by a block's end, up to
        // 99,999 bytes), then a length below 5: the rest of the stream, longer than a block.
        let mut data = Vec::new();
        let mut size = 17;
        while data.len() < 3 * BUFFER_SIZE {
            data.extend(record(size));
            size = (size * 7 + 13) % 99_990;
        }
        data.extend(b"00003");
        data.extend(std::iter::repeat_n(b'x', BUFFER_SIZE + HEADROOM + 5));
        data.push(END_OF_RECORD);
        let expected = framed_at_once(&data);
        assert!(expected.len() > 100);
        assert_eq!(framed_by_framer(&data), expected);
        // A fatal error stops the framing after its chunk, as in pymarc.
        let mut broken = data[..BUFFER_SIZE + 10].to_vec();
        broken.extend(b"12x45");
        broken.extend(record(10));
        let expected = framed_at_once(&broken);
        assert_eq!(framed_by_framer(&broken), expected);
        assert_eq!(framed_by_framer(b""), Vec::<Vec<u8>>::new());
    }
}
