//! `convert` (behind `gilkit_marc.to_parquet`, `gilkit_marc.convert` and `gilkit-marc convert`):
//! [`extract`](super::extract)'s columns streamed to a Parquet, CSV or JSON Lines file.
//!
//! Memory stays bounded: each round of records is read, turned into Arrow batches on the threads,
//! written, and dropped before the next is read; Parquet gets one row group per round (the writer
//! is flushed after each), so neither the input nor the output is ever held whole.
//!
//! The output is written to a hidden temporary file beside `path` (created exclusively, so it
//! never replaces anything) and moved into place only when everything has been written: an error
//! or Ctrl-C leaves no partial file and removes the temporary one. An existing `path` is never
//! replaced unless `overwrite` is set; without it the file is published with `link`, which fails
//! rather than replace a file that appeared meanwhile.
//!
//! CSV: a header of the column names, then one line per record; a cell holds the values joined by
//! `separator` (default `|`), and is empty for a record pymarc yields as `None`; quoting as RFC
//! 4180 (a cell with a comma, a quote or a line break is quoted, quotes doubled). JSON Lines: one
//! object per record, `{"245$a": ["..."], ...}`, `null` for a record pymarc yields as `None`.
//!
//! GIL: as `extract` for reading and building; released while writing and compressing each round.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, ListArray, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use pyo3::exceptions::{PyFileExistsError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use super::extract::{Extractor, ROUND_ROWS, Round, for_each_item, open_source, read_round};
use super::reader::PyOptions;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Parquet,
    Csv,
    JsonLines,
}

impl Format {
    fn parse(name: &str) -> PyResult<Format> {
        match name {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" => Ok(Format::JsonLines),
            _ => Err(PyValueError::new_err(format!(
                "unknown output format {name:?}: use \"parquet\", \"csv\" or \"jsonl\""
            ))),
        }
    }
}

/// What can go wrong writing the output (Python exceptions only at the boundary).
#[derive(Debug)]
enum ConvertError {
    /// The output exists and `overwrite` is off.
    Exists(PathBuf),
    /// Creating, writing or publishing the output failed.
    Io(PathBuf, io::Error),
    /// The Parquet writer failed.
    Parquet(parquet::errors::ParquetError),
}

impl From<ConvertError> for PyErr {
    fn from(err: ConvertError) -> PyErr {
        match err {
            ConvertError::Exists(path) => PyFileExistsError::new_err((
                17,
                "the output file exists; pass overwrite=True (--force) to replace it",
                path.display().to_string(),
            )),
            ConvertError::Io(path, err) => match err.raw_os_error() {
                Some(errno) => PyOSError::new_err((
                    errno,
                    io::Error::from_raw_os_error(errno)
                        .to_string()
                        .split(" (os error")
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    path.display().to_string(),
                )),
                None => PyOSError::new_err(format!("{}: {err}", path.display())),
            },
            ConvertError::Parquet(err) => {
                PyRuntimeError::new_err(format!("writing Parquet failed: {err}"))
            }
        }
    }
}

/// The output file while it is written: a temporary file beside the target, published by
/// [`Output::publish`] or removed when dropped unpublished.
struct Output {
    temp: PathBuf,
    target: PathBuf,
    overwrite: bool,
    published: bool,
}

impl Output {
    fn create(target: &Path, overwrite: bool) -> Result<(Output, File), ConvertError> {
        if !overwrite && fs::symlink_metadata(target).is_ok() {
            return Err(ConvertError::Exists(target.to_owned()));
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        // A unique name per process and call; `Relaxed`: only uniqueness matters.
        let temp = target.with_file_name(format!(
            ".{name}.{}.{}.partial",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| ConvertError::Io(target.to_owned(), e))?;
        Ok((
            Output {
                temp,
                target: target.to_owned(),
                overwrite,
                published: false,
            },
            file,
        ))
    }

    /// Moves the finished file into place.
    fn publish(mut self) -> Result<(), ConvertError> {
        let target = self.target.clone();
        let io = |e| ConvertError::Io(target.clone(), e);
        if self.overwrite {
            fs::rename(&self.temp, &self.target).map_err(io)?;
        } else {
            match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => fs::remove_file(&self.temp).map_err(io)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(ConvertError::Exists(self.target.clone()));
                }
                // A file system without hard links: the existence check at the start stands.
                Err(_) => fs::rename(&self.temp, &self.target).map_err(io)?,
            }
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.published {
            // Ours (created exclusively above): nothing else is removed.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Where the rows go.
enum Sink {
    // Boxed: the writer is large next to the other variants.
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
    Csv {
        out: BufWriter<File>,
        separator: Vec<u8>,
    },
    JsonLines {
        out: BufWriter<File>,
        names: Vec<String>,
    },
}

impl Sink {
    fn new(
        format: Format,
        file: File,
        schema: &SchemaRef,
        separator: &str,
        path: &Path,
    ) -> Result<Sink, ConvertError> {
        let out = BufWriter::with_capacity(1 << 20, file);
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        Ok(match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROUND_ROWS))
                    .build();
                Sink::Parquet(Box::new(
                    ArrowWriter::try_new(out, schema.clone(), Some(props))
                        .map_err(ConvertError::Parquet)?,
                ))
            }
            Format::Csv => {
                let mut out = out;
                let header: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
                write_csv_row(&mut out, header.iter().map(|h| vec![*h]), b"")
                    .map_err(|e| ConvertError::Io(path.to_owned(), e))?;
                Sink::Csv {
                    out,
                    separator: separator.as_bytes().to_vec(),
                }
            }
            Format::JsonLines => Sink::JsonLines { out, names },
        })
    }

    /// Writes a round's batches (no Python: called with the GIL released).
    fn write(&mut self, batches: &[RecordBatch], path: &Path) -> Result<(), ConvertError> {
        let io = |e| ConvertError::Io(path.to_owned(), e);
        match self {
            Sink::Parquet(writer) => {
                for batch in batches {
                    writer.write(batch).map_err(ConvertError::Parquet)?;
                }
                // One row group per round: nothing more than a round stays buffered.
                writer.flush().map_err(ConvertError::Parquet)
            }
            Sink::Csv { out, separator } => {
                for batch in batches {
                    let lists = lists(batch);
                    for row in 0..batch.num_rows() {
                        let cells = lists.iter().map(|list| row_values(list, row));
                        write_csv_row(out, cells, separator).map_err(io)?;
                    }
                }
                Ok(())
            }
            Sink::JsonLines { out, names } => {
                for batch in batches {
                    let lists = lists(batch);
                    for row in 0..batch.num_rows() {
                        write_json_row(out, names, &lists, row).map_err(io)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Finishes the file (Parquet footer, buffers flushed, data on disk).
    fn finish(self, path: &Path) -> Result<(), ConvertError> {
        let io = |e| ConvertError::Io(path.to_owned(), e);
        let out = match self {
            Sink::Parquet(writer) => writer.into_inner().map_err(ConvertError::Parquet)?,
            Sink::Csv { out, .. } | Sink::JsonLines { out, .. } => out,
        };
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }
}

fn lists(batch: &RecordBatch) -> Vec<&ListArray> {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.as_any()
                .downcast_ref::<ListArray>()
                .expect("extract builds list columns")
        })
        .collect()
}

/// The values of one cell (empty for a null row).
fn row_values(list: &ListArray, row: usize) -> Vec<&[u8]> {
    let mut values = Vec::new();
    if list.is_valid(row) {
        // Read from the list's own values array, so the slices borrow `list`.
        let offsets = list.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let all = list.values();
        if let Some(strings) = all.as_any().downcast_ref::<arrow_array::StringArray>() {
            values.extend((start..end).map(|j| strings.value(j).as_bytes()));
        } else if let Some(bytes) = all.as_any().downcast_ref::<arrow_array::BinaryArray>() {
            values.extend((start..end).map(|j| bytes.value(j)));
        }
    }
    values
}

/// One CSV line: each cell's values joined by `separator`, quoted when needed (RFC 4180).
fn write_csv_row<'a>(
    out: &mut impl Write,
    cells: impl Iterator<Item = Vec<&'a [u8]>>,
    separator: &[u8],
) -> io::Result<()> {
    let mut cell = Vec::new();
    for (i, values) in cells.enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        cell.clear();
        for (j, v) in values.iter().enumerate() {
            if j > 0 {
                cell.extend_from_slice(separator);
            }
            cell.extend_from_slice(v);
        }
        if cell
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        {
            out.write_all(b"\"")?;
            for &b in &cell {
                if b == b'"' {
                    out.write_all(b"\"\"")?;
                } else {
                    out.write_all(&[b])?;
                }
            }
            out.write_all(b"\"")?;
        } else {
            out.write_all(&cell)?;
        }
    }
    out.write_all(b"\r\n")
}

/// One JSON Lines object: `{"name": [values] or null, ...}`.
fn write_json_row(
    out: &mut impl Write,
    names: &[String],
    lists: &[&ListArray],
    row: usize,
) -> io::Result<()> {
    out.write_all(b"{")?;
    for (c, (name, list)) in names.iter().zip(lists).enumerate() {
        if c > 0 {
            out.write_all(b",")?;
        }
        write_json_string(out, name.as_bytes())?;
        out.write_all(b":")?;
        if list.is_null(row) {
            out.write_all(b"null")?;
            continue;
        }
        out.write_all(b"[")?;
        let mut result = Ok(());
        let mut first = true;
        for_each_item(&list.value(row), |v| {
            if result.is_ok() {
                if !first {
                    result = out.write_all(b",");
                }
                first = false;
                if result.is_ok() {
                    result = write_json_string(out, v);
                }
            }
        });
        result?;
        out.write_all(b"]")?;
    }
    out.write_all(b"}\n")
}

/// A JSON string of UTF-8 `text` (escapes `"`, `\` and control characters; invalid UTF-8, which
/// only raw bytes could hold, is replaced by U+FFFD).
fn write_json_string(out: &mut impl Write, text: &[u8]) -> io::Result<()> {
    let text = String::from_utf8_lossy(text);
    out.write_all(b"\"")?;
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        let escape: Option<&[u8]> = match ch {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.write_all(&text.as_bytes()[start..i])?;
        match escape {
            Some(e) => out.write_all(e)?,
            None => write!(out, "\\u{:04x}", ch as u32)?,
        }
        start = i + ch.len_utf8();
    }
    out.write_all(&text.as_bytes()[start..])?;
    out.write_all(b"\"")
}

/// `gilkit_marc.convert` / `to_parquet` (user documentation in `python/gilkit_marc/extract.py`):
/// returns the number of rows written. `progress(records, bytes)` is called after each round with
/// the totals so far (GIL held).
///
/// GIL: released to read paths, for parsing and column building, and while writing each round;
/// held between rounds (progress, messages) and to read other file objects.
#[pyfunction]
#[pyo3(signature = (source, path, fields, *, format, threads=None, permissive=true,
                    to_unicode=true, force_utf8=false, utf8_handling="strict",
                    hide_utf8_warnings=false, file_encoding="iso8859-1", overwrite=false,
                    separator="|", progress=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn convert(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    path: PathBuf,
    fields: &Bound<'_, PyAny>,
    format: &str,
    threads: Option<usize>,
    permissive: bool,
    to_unicode: bool,
    force_utf8: bool,
    utf8_handling: &str,
    hide_utf8_warnings: bool,
    file_encoding: &str,
    overwrite: bool,
    separator: &str,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<usize> {
    let format = Format::parse(format)?;
    let options = PyOptions::new(
        to_unicode,
        force_utf8,
        hide_utf8_warnings,
        utf8_handling,
        file_encoding,
    );
    let extractor = Extractor::new(py, fields, options, permissive, threads)?;
    if format == Format::JsonLines && !extractor.is_text() {
        return Err(PyValueError::new_err(
            "to_unicode=False gives bytes, which JSON cannot hold: write Parquet or CSV, or \
             decode (to_unicode=True)",
        ));
    }
    let mut reader = open_source(source)?;
    let (output, file) = Output::create(&path, overwrite)?;
    let mut sink = Sink::new(format, file, &extractor.schema(), separator, &path)?;
    let mut round = Round::default();
    let mut rows = 0;
    loop {
        let more = read_round(py, &mut reader, &mut round)?;
        if round.len() > 0 {
            let parts = extractor.run_round(py, &round)?;
            let batches = extractor.finish(py, parts)?;
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            gilkit::detach(py, || sink.write(&batches, &path))?;
            if let Some(progress) = &progress {
                progress.call1((rows, reader.offset()))?;
            }
        }
        if !more {
            break;
        }
    }
    gilkit::detach(py, || sink.finish(&path))?;
    output.publish()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_joined_and_quoted() {
        let mut out = Vec::new();
        let cells = vec![
            vec![&b"a"[..], b"b"],
            vec![],
            vec![&b"x,y"[..]],
            vec![&b"say \"hi\""[..]],
        ];
        write_csv_row(&mut out, cells.into_iter(), b"|").unwrap();
        assert_eq!(out, b"a|b,,\"x,y\",\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\n\u{1}é".as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }
}
