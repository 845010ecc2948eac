//! `extract`: columns of field values computed in Rust, in parallel, returned as an Arrow table.
//!
//! The object API (`MARCReader`) must build pymarc-shaped Python objects for every record, which
//! needs the GIL, so its threads cannot scale on CPython with a GIL. `extract` keeps the whole job
//! in Rust: the source is read and framed by gilkit's reader ([`RecordReader`], GIL released for
//! paths and regular files) in *rounds* of [`ROUND_ROWS`] records; each round is cut into parts of
//! [`PART_ROWS`] records that `gilkit::batch` runs on `threads` threads with the GIL released
//! ([`batch::run_cpu_from_python`]: Ctrl-C stops it). A part parses its records ([`crate::parse`])
//! and appends each column's values ([`crate::columns`]) to arrow-rs list builders, giving one
//! Arrow `RecordBatch` per part. The table is those batches, in order; Python gets it through the
//! Arrow PyCapsule interface (`__arrow_c_stream__`), which pyarrow, polars and DuckDB import
//! without copying.
//!
//! One row per record slot, as pymarc's `MARCReader` yields them: a record pymarc cannot decode
//! is a null row (or, with `permissive=False`, its exception is raised). The rare records only
//! Python decodes exactly (a warning about indicators, a non-ASCII subfield code, a Python codec:
//! [`parse::ParseError::NeedsPython`]) are left null by the part and decoded after the round, GIL
//! held, by the Python decoder; their values are then put in place ([`patch`]). MARC-8 messages
//! pymarc writes to `sys.stderr` are written after each round, in record order.
//!
//! GIL: held to read a Python file object and between rounds (writing messages, the rare Python
//! records); released to read paths, and for all parsing and column building.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, ListBuilder, StringBuilder};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{
    Array, ArrayRef, BinaryArray, ListArray, RecordBatch, RecordBatchIterator, RecordBatchOptions,
    StringArray,
};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use gilkit::batch::{self, BatchOptions, Outcome as ItemOutcome};
use gilkit::file::{ReaderOptions, RecordReader, Source};
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict, PyList, PyString};

use super::reader::{MarcFraming, PyOptions, frame_error};
use crate::columns::{ColumnSpec, Select};
use crate::frame::{Frame, FrameError, next_frame};
use crate::parse;

/// Records per part: the unit a thread claims. Large enough that a claim costs nothing next to
/// parsing them (about a microsecond each), small enough that two threads share a round evenly.
pub(crate) const PART_ROWS: usize = 2048;
/// Records read per round; bounds the memory of the raw records held at once.
pub(crate) const ROUND_ROWS: usize = 32_768;
/// Bytes read per refill of the source.
const BUFFER_SIZE: usize = 4 << 20;

/// One round's framed records, back to back.
#[derive(Default)]
pub(crate) struct Round {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Round {
    fn push(&mut self, chunk: &[u8]) {
        self.data.extend_from_slice(chunk);
        self.ends.push(self.data.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

/// The MARC reader of a source, tuned for rounds.
pub(crate) fn open_source(source: &Bound<'_, PyAny>) -> PyResult<RecordReader<MarcFraming>> {
    let options = ReaderOptions::default()
        .buffer_size(BUFFER_SIZE)
        .max_batch(ROUND_ROWS);
    Ok(RecordReader::new(
        Source::from_py(source)?,
        MarcFraming::default(),
        options,
    ))
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

/// A part's result: its batch, the rows it left null for Python to decide, and the MARC-8
/// messages of its records.
pub(crate) struct Part {
    batch: RecordBatch,
    specials: Vec<(usize, Special, Vec<u8>)>,
    messages: Vec<String>,
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

    /// Parses the records `rows` of `round` and builds their columns (no Python).
    fn build_part(&self, round: &Round, rows: Range<usize>) -> Part {
        let text = self.parsed.to_unicode;
        let mut columns: Vec<Column> = self
            .specs
            .iter()
            .map(|_| Column::new(&self.item, rows.len()))
            .collect();
        let mut record = parse::Record::default();
        let mut scratch = Vec::new();
        let mut specials = Vec::new();
        let mut messages = Vec::new();
        for i in rows.clone() {
            let chunk = round.get(i);
            let special = match next_frame(chunk, true) {
                Frame::Record(_) => match parse::parse_into(chunk, &self.parsed, &mut record) {
                    Ok(()) => {
                        messages.append(&mut record.messages);
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
                // The framing hands out only chunks `next_frame` decides.
                Frame::End | Frame::NeedMore => Some(Special::Broken(FrameError::Truncated)),
            };
            if let Some(special) = special {
                columns.iter_mut().for_each(|c| c.end_row(false));
                specials.push((i - rows.start, special, chunk.to_vec()));
            }
        }
        let arrays = columns.iter_mut().map(Column::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .expect("the columns are built for this schema, one row per record");
        Part {
            batch,
            specials,
            messages,
        }
    }

    /// Parses and builds a round on `threads` threads, GIL released; returns its parts in order.
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
            Ok::<_, std::convert::Infallible>(self.build_part(round, rows.clone()))
        })?;
        report
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                ItemOutcome::Ok(part) => Ok(part),
                _ => Err(PyRuntimeError::new_err(
                    "internal error in gilkit_marc while extracting columns (a bug: please \
                     report it with the input file)",
                )),
            })
            .collect()
    }

    /// Finishes a part with the GIL: writes its MARC-8 messages, decodes the records only Python
    /// decodes and puts their values in place; with `permissive=False`, raises the exception of
    /// the first record pymarc cannot read.
    pub(crate) fn finish_part(&self, py: Python<'_>, part: Part) -> PyResult<RecordBatch> {
        super::build::write_messages(py, &part.messages)?;
        let mut replaced: HashMap<usize, Vec<Vec<Vec<u8>>>> = HashMap::new();
        for (row, special, chunk) in &part.specials {
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
/// GIL: released to read paths and regular files and for all parsing and column building (per
/// round of 32,768 records); held between rounds and to read other file objects.
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
    let mut reader = open_source(source)?;
    let mut round = Round::default();
    let mut batches = Vec::new();
    loop {
        let more = read_round(py, &mut reader, &mut round)?;
        if round.len() > 0 {
            for part in extractor.run_round(py, &round)? {
                batches.push(extractor.finish_part(py, part)?);
            }
        }
        if !more {
            break;
        }
    }
    Ok(Table {
        schema: extractor.schema(),
        batches,
    })
}
