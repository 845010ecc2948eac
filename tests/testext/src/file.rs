//! Functions that exercise `gilkit::file` from Python, for `tests/python/test_file_adapter.py` and
//! `benches/file/`.
//!
//! - `file_read(source, framing, ...)`: every record as `bytes` (optionally with CPU work per record
//!   in phase 2, or the same work with the GIL held, for the GIL probe).
//! - `FileRecords`: a record-at-a-time iterator (one GIL release per batch) with `stats()`.
//! - `file_read_meeting(source, meeting)`: proves that threads are in phase 2 at the same time.
//! - `file_write(target, records, ...)`: the buffered writer.
//! - `file_bench_marc(source, mode, ...)`: the benchmark's MARC parse through the three-phase reader
//!   and through the baselines (per-read attach, `read()` everything first).

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use gilkit::file::{
    Delimited, Frame, Framing, LengthPrefixed, Lines, PyReader, PyWriter, ReaderOptions,
    RecordReader, Records, Source, SourceKind,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// `"lines"`, `"marc"` (5 ASCII digits at offset 0), `"u32be"` (4-byte payload length), or
/// `"delim:<hex byte>"`.
fn framing(name: &str) -> PyResult<Box<dyn Framing>> {
    Ok(match name {
        "lines" => Box::new(Lines::new()),
        "marc" => Box::new(LengthPrefixed::ascii(0, 5)),
        "u32be" => Box::new(LengthPrefixed::big_endian(0, 4).length_excludes_header(true)),
        other => match other
            .strip_prefix("delim:")
            .map(|hex| u8::from_str_radix(hex, 16))
        {
            Some(Ok(byte)) => Box::new(Delimited::new([byte])),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown framing {other:?}: use 'lines', 'marc', 'u32be' or 'delim:<hex>'"
                )));
            }
        },
    })
}

fn options(buffer_size: Option<usize>, max_batch: Option<usize>) -> ReaderOptions {
    let mut opts = ReaderOptions::default();
    if let Some(size) = buffer_size {
        opts = opts.buffer_size(size);
    }
    if let Some(n) = max_batch {
        opts = opts.max_batch(n);
    }
    opts
}

fn source(obj: &Bound<'_, PyAny>, no_fd: bool) -> PyResult<Source> {
    if no_fd {
        Source::from_py_no_fd(obj)
    } else {
        Source::from_py(obj)
    }
}

/// Busy CPU work for `nanos` nanoseconds.
fn spin(nanos: u64) {
    if nanos == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_nanos(nanos);
    while Instant::now() < until {
        black_box(0);
    }
}

/// Which kind of source `obj` becomes: "path", "memory", "fd", "file_object".
#[pyfunction]
#[pyo3(signature = (obj, no_fd = false))]
fn file_source_kind(obj: &Bound<'_, PyAny>, no_fd: bool) -> PyResult<&'static str> {
    Ok(match source(obj, no_fd)?.kind() {
        SourceKind::Path => "path",
        SourceKind::Memory => "memory",
        SourceKind::FileDescriptor => "fd",
        SourceKind::FileObject => "file_object",
        SourceKind::Reader => "reader",
        _ => "other",
    })
}

/// Reads every record of `obj` as `bytes`; returns `(records, stats)`.
///
/// `spin_ns` of CPU work per record runs in phase 2 (GIL released); with `hold_gil` (the probe's
/// control case) the same reading, framing and work run with the GIL held throughout.
#[pyfunction]
#[pyo3(signature = (obj, framing_name = "lines", buffer_size = None, max_batch = None, spin_ns = 0, hold_gil = false, no_fd = false))]
#[allow(clippy::too_many_arguments)]
fn file_read<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    framing_name: &str,
    buffer_size: Option<usize>,
    max_batch: Option<usize>,
    spin_ns: u64,
    hold_gil: bool,
    no_fd: bool,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let out = PyList::empty(py);
    if hold_gil {
        // The control: read, frame and parse with the GIL held throughout (PyReader re-attaches,
        // which is a no-op on an attached thread).
        let mut data = Vec::new();
        PyReader::new(source(obj, no_fd)?).read_to_end(&mut data)?;
        let mut framing = framing(framing_name)?;
        let mut rest = &data[..];
        while !rest.is_empty() {
            match framing.next_record(rest, true) {
                Ok(Frame::Record { consumed, record }) => {
                    spin(spin_ns);
                    out.append(PyBytes::new(py, &rest[record]))?;
                    rest = &rest[consumed..];
                }
                Ok(Frame::Skip(n)) => rest = &rest[n..],
                Ok(Frame::Incomplete { .. }) | Err(_) => break,
            }
        }
        return Ok((out, PyDict::new(py)));
    }
    let mut reader = RecordReader::new(
        source(obj, no_fd)?,
        framing(framing_name)?,
        options(buffer_size, max_batch),
    );
    while let Some(batch) = reader.next_batch(py, |record| {
        spin(spin_ns);
        record.to_vec()
    })? {
        for record in batch {
            out.append(PyBytes::new(py, &record))?;
        }
    }
    Ok((out, reader.stats().into_pyobject(py)?))
}

type BoxedRecords = Records<Box<dyn Framing>, Vec<u8>, fn(&[u8]) -> Vec<u8>>;

/// Iterates over the records of a source, one `bytes` per `__next__`, one GIL release per batch.
#[pyclass(module = "gilkit_testext")]
struct FileRecords {
    records: BoxedRecords,
}

#[pymethods]
impl FileRecords {
    #[new]
    #[pyo3(signature = (obj, framing_name = "lines", buffer_size = None, max_batch = None, no_fd = false))]
    fn new(
        obj: &Bound<'_, PyAny>,
        framing_name: &str,
        buffer_size: Option<usize>,
        max_batch: Option<usize>,
        no_fd: bool,
    ) -> PyResult<Self> {
        let reader = RecordReader::new(
            source(obj, no_fd)?,
            framing(framing_name)?,
            options(buffer_size, max_batch),
        );
        Ok(FileRecords {
            records: reader.records(<[u8]>::to_vec as fn(&[u8]) -> Vec<u8>),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self
            .records
            .next(py)?
            .map(|record| PyBytes::new(py, &record)))
    }

    /// The reader's counters (`python_calls`, `gil_releases`, `batches`, `records`, ...).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.records.reader().stats().into_pyobject(py)
    }

    /// Byte offset after the last consumed record.
    fn offset(&self) -> u64 {
        self.records.reader().offset()
    }
}

/// A meeting point for `parties` threads, checked without the GIL.
#[pyclass(module = "gilkit_testext", frozen)]
struct Meeting {
    parties: usize,
    arrived: Mutex<usize>,
    all_here: Condvar,
}

#[pymethods]
impl Meeting {
    #[new]
    fn new(parties: usize) -> Self {
        Meeting {
            parties,
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
        }
    }
}

impl Meeting {
    /// Arrives and waits up to `timeout` for all parties; true if all arrived.
    fn arrive_and_wait(&self, timeout: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, _) = self
            .all_here
            .wait_timeout_while(arrived, timeout, |n| *n < self.parties)
            .unwrap();
        *arrived >= self.parties
    }
}

/// Reads `obj`'s records; while parsing the first record (phase 2, GIL released) waits for every
/// party of `meeting` to be parsing too. Returns `(met, record count)`: `met` is true only if all
/// threads were inside phase 2 at the same time, which is impossible if phase 2 held the GIL.
#[pyfunction]
#[pyo3(signature = (obj, meeting, framing_name = "lines", timeout_s = 10.0))]
fn file_read_meeting(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    meeting: &Bound<'_, Meeting>,
    framing_name: &str,
    timeout_s: f64,
) -> PyResult<(bool, usize)> {
    let meeting = meeting.get();
    let mut reader = RecordReader::new(
        Source::from_py(obj)?,
        framing(framing_name)?,
        ReaderOptions::default(),
    );
    let mut met = None;
    let mut count = 0;
    while let Some(batch) = reader.next_batch(py, |record| {
        if met.is_none() {
            met = Some(meeting.arrive_and_wait(Duration::from_secs_f64(timeout_s)));
        }
        record.len()
    })? {
        count += batch.len();
    }
    Ok((met.unwrap_or(false), count))
}

/// Writes `records`, each followed by `terminator`, to `target` through a `PyWriter` of
/// `capacity` bytes (serialized in batches of `batch` records with the GIL released, with `spin_ns`
/// of CPU work per record); flushes, and closes if `close`. Returns `(python_calls, bytes_written)`.
#[pyfunction]
#[pyo3(signature = (target, records, terminator = b"\n".as_slice(), capacity = 65536, batch = 100, close = false, spin_ns = 0))]
#[allow(clippy::too_many_arguments)]
fn file_write(
    py: Python<'_>,
    target: &Bound<'_, PyAny>,
    records: Vec<Vec<u8>>,
    terminator: &[u8],
    capacity: usize,
    batch: usize,
    close: bool,
    spin_ns: u64,
) -> PyResult<(u64, u64)> {
    let mut writer = PyWriter::from_py(target)?.with_capacity(capacity);
    for chunk in records.chunks(batch.max(1)) {
        writer.serialize(py, |buf| {
            for record in chunk {
                spin(spin_ns);
                buf.extend_from_slice(record);
                buf.extend_from_slice(terminator);
            }
        })?;
    }
    if close {
        writer.close(py)?;
    } else {
        writer.flush_py(py)?;
    }
    let stats = writer.stats();
    Ok((stats.python_calls, stats.bytes_written))
}

/// What the benchmark's parser extracts from a MARC record.
struct MarcSummary {
    fields: u32,
    /// Subfields of the data fields (tags 010 and up).
    subfields: u32,
}

/// A field as a real parser would build it: tag, indicators, owned subfield strings.
struct ParsedField {
    tag: [u8; 3],
    subfields: Vec<(u8, String)>,
}

/// A real MARC 21 parse, as a reader would do before conversion: leader and directory checked,
/// every field located, split into subfields, decoded as UTF-8 into owned strings.
fn parse_marc(record: &[u8]) -> Option<MarcSummary> {
    if record.len() < 25 || record.last() != Some(&0x1d) {
        return None;
    }
    let base: usize = std::str::from_utf8(&record[12..17]).ok()?.parse().ok()?;
    if base < 25 || base > record.len() {
        return None;
    }
    let directory = &record[24..base - 1];
    let mut fields = Vec::with_capacity(directory.len() / 12);
    for entry in directory.chunks_exact(12) {
        let len: usize = std::str::from_utf8(&entry[3..7]).ok()?.parse().ok()?;
        let start: usize = std::str::from_utf8(&entry[7..12]).ok()?.parse().ok()?;
        let data = record.get(base + start..base + start + len)?;
        let data = data.strip_suffix(&[0x1e]).unwrap_or(data);
        let tag = [entry[0], entry[1], entry[2]];
        let subfields = if tag < *b"010" {
            vec![(0, String::from_utf8_lossy(data).into_owned())]
        } else {
            data.split(|&b| b == 0x1f)
                .skip(1)
                .filter(|sub| !sub.is_empty())
                .map(|sub| (sub[0], String::from_utf8_lossy(&sub[1..]).into_owned()))
                .collect()
        };
        fields.push(ParsedField { tag, subfields });
    }
    let fields = black_box(fields);
    Some(MarcSummary {
        fields: fields.len() as u32,
        subfields: fields
            .iter()
            .filter(|f| f.tag >= *b"010")
            .map(|f| f.subfields.len() as u32)
            .sum(),
    })
}

/// `pyo3-file`-style input: every `read` attaches and calls the file object's `read(n)`.
struct PerReadAttach {
    obj: Py<PyAny>,
    calls: u64,
}

impl Read for PerReadAttach {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        Python::attach(|py| -> PyResult<usize> {
            let data = self.obj.bind(py).call_method1("read", (out.len(),))?;
            let data = data.cast::<PyBytes>()?.as_bytes();
            out[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .map_err(std::io::Error::other)
    }
}

/// Reads length-prefixed MARC records from any `BufRead`.
fn next_marc_record(input: &mut impl BufRead, record: &mut Vec<u8>) -> std::io::Result<bool> {
    record.clear();
    record.resize(5, 0);
    match input.read_exact(&mut record[..5]) {
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        other => other?,
    }
    let len: usize = std::str::from_utf8(&record[..5])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad length"))?;
    record.resize(len.max(5), 0);
    input.read_exact(&mut record[5..])?;
    Ok(true)
}

/// The benchmark: MARC records of `obj` parsed by `mode`:
///
/// - `"three_phase"`: `RecordReader` (one release per batch);
/// - `"per_read"`: a `pyo3-file`-style reader (attach per `read`, 8 KiB `BufReader`) inside one
///   release;
/// - `"held"`: the same `pyo3-file`-style reader with the GIL held throughout (no release at all);
/// - `"read_all"`: `obj.read()` first, then one release to parse everything.
///
/// Returns `{records, fields, subfields, python_calls, gil_acquisitions, released_s, wall_s}`.
/// With `convert`, each record also becomes a Python int (its field count) in phase 3.
#[pyfunction]
#[pyo3(signature = (obj, mode, buffer_size = None, max_batch = None, convert = true, no_fd = false))]
fn file_bench_marc<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    mode: &str,
    buffer_size: Option<usize>,
    max_batch: Option<usize>,
    convert: bool,
    no_fd: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let started = Instant::now();
    let mut records = 0u64;
    let mut fields = 0u64;
    let mut subfields = 0u64;
    let python_calls;
    let gil_acquisitions;
    let mut released = Duration::ZERO;
    let converted = PyList::empty(py);
    let mut tally = |summary: &MarcSummary| {
        records += 1;
        fields += u64::from(summary.fields);
        subfields += u64::from(summary.subfields);
    };
    match mode {
        "three_phase" => {
            let mut reader = RecordReader::new(
                source(obj, no_fd)?,
                LengthPrefixed::ascii(0, 5),
                options(buffer_size, max_batch),
            );
            while let Some(batch) = reader.next_batch(py, parse_marc)? {
                for summary in batch.iter().flatten() {
                    tally(summary);
                    if convert {
                        converted.append(summary.fields)?;
                    }
                }
            }
            let stats = reader.stats();
            python_calls = stats.python_calls;
            gil_acquisitions = stats.gil_releases;
            released = stats.released;
        }
        "per_read" | "held" => {
            let file = PerReadAttach {
                obj: obj.clone().unbind(),
                calls: 0,
            };
            let mut input = BufReader::with_capacity(8192, file);
            let mut parse_all = || -> std::io::Result<Vec<MarcSummary>> {
                let mut record = Vec::new();
                let mut out = Vec::new();
                while next_marc_record(&mut input, &mut record)? {
                    out.extend(parse_marc(&record));
                }
                Ok(out)
            };
            let summaries = if mode == "held" {
                parse_all()?
            } else {
                let t = Instant::now();
                let result = gilkit::detach(py, parse_all)?;
                released = t.elapsed();
                result
            };
            python_calls = input.get_ref().calls;
            // Each read re-attaches (when released); plus the final re-acquire after the release.
            gil_acquisitions = if mode == "held" { 0 } else { python_calls + 1 };
            for summary in &summaries {
                tally(summary);
                if convert {
                    converted.append(summary.fields)?;
                }
            }
        }
        "read_all" => {
            let data = obj.call_method0("read")?;
            let data = data.cast::<PyBytes>()?.clone().unbind();
            python_calls = 1;
            let t = Instant::now();
            let summaries = Python::attach(|py| {
                let bytes = data.bind(py).as_bytes();
                // One release over the whole input; `bytes` is immutable and kept alive by `data`.
                let ptr = bytes.as_ptr() as usize;
                let len = bytes.len();
                gilkit::detach(py, move || {
                    // SAFETY: `data` (a `bytes`, immutable) outlives this closure, which runs
                    // before `detach` returns.
                    let all = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                    let mut out = Vec::new();
                    let mut rest = all;
                    while rest.len() >= 5 {
                        let Some(n) = std::str::from_utf8(&rest[..5])
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                        else {
                            break;
                        };
                        if n < 5 || n > rest.len() {
                            break;
                        }
                        out.extend(parse_marc(&rest[..n]));
                        rest = &rest[n..];
                    }
                    out
                })
            });
            released = t.elapsed();
            gil_acquisitions = 1;
            for summary in &summaries {
                tally(summary);
                if convert {
                    converted.append(summary.fields)?;
                }
            }
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown mode {other:?}: three_phase, per_read, held, read_all"
            )));
        }
    }
    let d = PyDict::new(py);
    d.set_item("records", records)?;
    d.set_item("fields", fields)?;
    d.set_item("subfields", subfields)?;
    d.set_item("python_calls", python_calls)?;
    d.set_item("gil_acquisitions", gil_acquisitions)?;
    d.set_item("released_s", released.as_secs_f64())?;
    d.set_item("wall_s", started.elapsed().as_secs_f64())?;
    d.set_item("converted", converted.len())?;
    Ok(d)
}

/// `pyo3-file`-style output: every `write` attaches and calls the file object's `write`.
struct PerWriteAttach {
    obj: Py<PyAny>,
    calls: u64,
}

impl std::io::Write for PerWriteAttach {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        Python::attach(|py| -> PyResult<usize> {
            self.obj
                .bind(py)
                .call_method1("write", (PyBytes::new(py, data),))?
                .extract()
        })
        .map_err(std::io::Error::other)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writing benchmark: every MARC record of `path` (read into memory first, not timed) written
/// `repeat` times to the binary file object `target`, by `mode`:
///
/// - `"pywriter"`: `PyWriter` (256 KiB chunks), serializing 1,000 records per GIL release;
/// - `"per_write"`: a `pyo3-file`-style writer (8 KiB `BufWriter`, attach per `write`) in one
///   release;
/// - `"held"`: the same with the GIL held throughout.
///
/// Returns `{records, python_calls, wall_s}`.
#[pyfunction]
#[pyo3(signature = (path, target, mode, repeat = 1))]
fn file_bench_write<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    target: &Bound<'py, PyAny>,
    mode: &str,
    repeat: usize,
) -> PyResult<Bound<'py, PyDict>> {
    use std::io::Write;
    let mut reader = RecordReader::new(
        Source::open(&path)?,
        LengthPrefixed::ascii(0, 5),
        ReaderOptions::default(),
    );
    let mut records = Vec::new();
    while let Some(batch) = reader.next_batch(py, <[u8]>::to_vec)? {
        records.extend(batch);
    }
    let started = Instant::now();
    let python_calls = match mode {
        "pywriter" => {
            let mut writer = PyWriter::from_py(target)?;
            for _ in 0..repeat {
                for chunk in records.chunks(1000) {
                    writer.serialize(py, |buf| {
                        chunk.iter().for_each(|r| buf.extend_from_slice(r))
                    })?;
                }
            }
            writer.flush_py(py)?;
            writer.stats().python_calls
        }
        "per_write" | "held" => {
            let mut out = std::io::BufWriter::with_capacity(
                8192,
                PerWriteAttach {
                    obj: target.clone().unbind(),
                    calls: 0,
                },
            );
            let mut write_all = || -> std::io::Result<()> {
                for _ in 0..repeat {
                    for record in &records {
                        out.write_all(record)?;
                    }
                }
                out.flush()
            };
            if mode == "held" {
                write_all()?;
            } else {
                gilkit::detach(py, write_all)?;
            }
            target.call_method0("flush")?;
            out.get_ref().calls + 1
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown mode {other:?}: pywriter, per_write, held"
            )));
        }
    };
    let d = PyDict::new(py);
    d.set_item("records", records.len() * repeat)?;
    d.set_item("python_calls", python_calls)?;
    d.set_item("wall_s", started.elapsed().as_secs_f64())?;
    Ok(d)
}

/// Adds the file adapter's functions and classes to the test extension.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(file_source_kind, m)?)?;
    m.add_function(wrap_pyfunction!(file_read, m)?)?;
    m.add_function(wrap_pyfunction!(file_read_meeting, m)?)?;
    m.add_function(wrap_pyfunction!(file_write, m)?)?;
    m.add_function(wrap_pyfunction!(file_bench_marc, m)?)?;
    m.add_function(wrap_pyfunction!(file_bench_write, m)?)?;
    m.add_class::<FileRecords>()?;
    m.add_class::<Meeting>()?;
    Ok(())
}
