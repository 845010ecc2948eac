//! The MARC 21 (ISO 2709) record parser: pymarc's `Record.decode_marc`, in Rust, without the GIL.
//!
//! A record is a 24-byte leader, a directory of 12-byte entries (tag, field length, offset from
//! the base address), a field terminator (0x1E), then the fields. A control field is its data; a
//! data field is two indicators then subfields, each introduced by 0x1F and a one-byte code.
//!
//! The parser mirrors pymarc 5 exactly on every record it accepts: numbers are read with Python's
//! `int()` rules ([`crate::pyint`]), field data is sliced with Python's slice rules (negative and
//! out-of-range offsets included), text is decoded as pymarc decodes it (UTF-8 with the chosen
//! error handling, MARC-8 through [`crate::marc8`], or Latin-1).
//!
//! Whatever pymarc would *not* turn into a plain record is refused with a [`ParseError`]: the
//! structural errors pymarc raises, and the cases where pymarc does something only Python can
//! reproduce faithfully (logging a warning about indicators, warning about a non-ASCII subfield
//! code, decoding with an arbitrary Python codec or error handler). The Python layer then runs its
//! pure-Python decoder on that record, which raises or warns exactly as pymarc does. Well-formed
//! records never leave Rust; odd ones cost a little more and stay exact.

use std::fmt;
use std::ops::Range;

use crate::marc8;
use crate::pyint;

/// Length of the leader.
pub const LEADER_LEN: usize = 24;
/// Length of one directory entry.
pub const DIRECTORY_ENTRY_LEN: usize = 12;
/// Subfield delimiter.
pub const SUBFIELD_INDICATOR: u8 = 0x1F;
/// Field terminator.
pub const END_OF_FIELD: u8 = 0x1E;
/// Record terminator.
pub const END_OF_RECORD: u8 = 0x1D;

/// How invalid UTF-8 in subfields is handled (pymarc's `utf8_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf8Handling {
    /// `'strict'`: invalid UTF-8 is an error.
    Strict,
    /// `'replace'`: each maximal invalid subsequence becomes U+FFFD (as CPython does).
    Replace,
    /// `'ignore'`: invalid bytes are dropped.
    Ignore,
    /// Any other Python error handler: only Python can apply it.
    Other,
}

/// What pymarc's `file_encoding` means for records whose leader does not say UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEncoding {
    /// Exactly `"iso8859-1"` (the default): subfields are MARC-8, control fields Latin-1.
    Marc8,
    /// Another name of Latin-1: everything Latin-1.
    Latin1,
    /// A name of UTF-8: everything strict UTF-8.
    Utf8,
    /// Any other Python codec: only Python can apply it.
    Other,
}

/// Decoding options, pymarc's `MARCReader`/`Record` keyword arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Decode text (`Field`s of `str`); otherwise keep bytes (`RawField`s).
    pub to_unicode: bool,
    /// Treat every record as UTF-8 whatever leader position 9 says.
    pub force_utf8: bool,
    /// pymarc's `hide_utf8_warnings`: no MARC-8 "Unable to parse character" messages.
    pub quiet: bool,
    /// pymarc's `utf8_handling`.
    pub utf8_handling: Utf8Handling,
    /// pymarc's `file_encoding`.
    pub file_encoding: FileEncoding,
}

impl Default for Options {
    /// pymarc's defaults.
    fn default() -> Self {
        Self {
            to_unicode: true,
            force_utf8: false,
            quiet: false,
            utf8_handling: Utf8Handling::Strict,
            file_encoding: FileEncoding::Marc8,
        }
    }
}

/// Why a record was not parsed here. The `pymarc_*` errors are the ones pymarc raises with the
/// same name; [`ParseError::NeedsPython`] marks records pymarc accepts (perhaps with a warning)
/// that only the Python decoder reproduces exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The leader is shorter than 24 bytes (`RecordLeaderInvalid`).
    LeaderInvalid,
    /// The base address is zero or negative (`BaseAddressNotFound`).
    BaseAddressNotFound,
    /// The base address is past the end of the record (`BaseAddressInvalid`).
    BaseAddressInvalid,
    /// The record is shorter than its leader says (`TruncatedRecord`).
    Truncated,
    /// The directory length is not a multiple of 12 (`RecordDirectoryInvalid`).
    DirectoryInvalid,
    /// The directory is empty (`NoFieldsFound`).
    NoFieldsFound,
    /// A number in the leader or directory is not a number (`ValueError` in pymarc).
    InvalidNumber,
    /// Leader, directory or indicators are not ASCII, or text is not valid in its encoding
    /// (`UnicodeDecodeError` in pymarc).
    Encoding,
    /// pymarc accepts the record but logs or warns, or a Python codec is needed.
    NeedsPython,
}

impl ParseError {
    /// Whether pymarc accepts such a record (the Python decoder will build it).
    pub fn is_accepted_by_pymarc(self) -> bool {
        self == ParseError::NeedsPython
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::LeaderInvalid => "Unable to extract record leader",
            ParseError::BaseAddressNotFound => "Unable to locate base address of record",
            ParseError::BaseAddressInvalid => "Base address exceeds size of record",
            ParseError::Truncated => "Record length in leader is greater than the length of data",
            ParseError::DirectoryInvalid => "Invalid directory",
            ParseError::NoFieldsFound => "Unable to locate fields in record data",
            ParseError::InvalidNumber => "invalid number in leader or directory",
            ParseError::Encoding => "text not valid in its encoding",
            ParseError::NeedsPython => "record needs the Python decoder",
        })
    }
}

impl std::error::Error for ParseError {}

/// A parsed record. Text lives in one buffer; fields and subfields point into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The 24 leader bytes (ASCII).
    pub leader: [u8; LEADER_LEN],
    /// The fields in directory order.
    pub fields: Vec<Field>,
    /// Every subfield of every data field, in order; [`FieldKind::Data`] holds a range of it.
    pub subfields: Vec<Subfield>,
    /// Decoded text (UTF-8) or raw bytes (when not `to_unicode`) that spans point into.
    pub buf: Vec<u8>,
    /// Lines pymarc's MARC-8 decoder would write to `sys.stderr`.
    pub messages: Vec<String>,
}

/// One field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The three tag bytes (ASCII).
    pub tag: [u8; 3],
    /// Control or data field.
    pub kind: FieldKind,
}

/// A field's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// A control field (tag `001`..`009`, `000`): its data.
    Control(Range<usize>),
    /// A data field: two indicator bytes (ASCII) and a range of [`Record::subfields`].
    Data {
        /// The indicators.
        indicators: [u8; 2],
        /// Index range into [`Record::subfields`].
        subfields: Range<usize>,
    },
}

/// One subfield: its code (ASCII) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subfield {
    /// The code byte.
    pub code: u8,
    /// The value, a range of [`Record::buf`].
    pub value: Range<usize>,
}

impl Record {
    /// The bytes (text when decoded) at `span`.
    pub fn bytes(&self, span: &Range<usize>) -> &[u8] {
        &self.buf[span.clone()]
    }
}

/// Python's `s[start:stop]` for a sequence of length `len`, as a range.
fn py_slice(len: usize, start: i64, stop: i64) -> Range<usize> {
    let len_i = len as i64;
    let clamp = |i: i64| -> usize {
        let i = if i < 0 {
            (i + len_i).max(0)
        } else {
            i.min(len_i)
        };
        i as usize
    };
    let (a, b) = (clamp(start), clamp(stop));
    if b < a { a..a } else { a..b }
}

/// Parses one record `marc` (one chunk, terminator included) as pymarc's `Record(marc, ...)`.
///
/// Runs without Python; safe on any input (never panics, never reads out of bounds).
///
/// # Errors
///
/// [`ParseError`] where pymarc raises, or where only pymarc's Python code reproduces the result
/// exactly (see the module doc).
///
/// # Examples
///
/// ```
/// use gilkit_marc::parse::{parse, Options, FieldKind};
///
/// let raw = b"00046     2200037   4500001000800000\x1eocm0001\x1e\x1d";
/// let record = parse(raw, &Options::default()).unwrap();
/// assert_eq!(&record.fields[0].tag, b"001");
/// let FieldKind::Control(span) = &record.fields[0].kind else { panic!() };
/// assert_eq!(record.bytes(span), b"ocm0001");
/// ```
pub fn parse(marc: &[u8], opts: &Options) -> Result<Record, ParseError> {
    let mut record = Record::default();
    parse_into(marc, opts, &mut record)?;
    Ok(record)
}

/// Like [`parse`], reusing `record`'s allocations (it is cleared first).
///
/// # Errors
///
/// As [`parse`]; `record` then holds partial data.
pub fn parse_into(marc: &[u8], opts: &Options, record: &mut Record) -> Result<(), ParseError> {
    record.fields.clear();
    record.subfields.clear();
    record.buf.clear();
    record.messages.clear();
    // Decoded text is about as long as the record (MARC-8 can grow a little): one allocation
    // instead of a dozen reallocations as the buffers grow.
    record.buf.reserve(marc.len());
    let delimiters = memchr::memchr_iter(SUBFIELD_INDICATOR, marc).count();
    record.subfields.reserve(delimiters);

    // pymarc: marc[0:24].decode("ascii"), then Leader() requires 24 characters.
    let leader = marc.get(..LEADER_LEN.min(marc.len())).unwrap_or(&[]);
    if !leader.is_ascii() {
        return Err(ParseError::Encoding);
    }
    let leader: [u8; LEADER_LEN] = leader.try_into().map_err(|_| ParseError::LeaderInvalid)?;
    record.leader = leader;
    let utf8 = leader[9] == b'a' || opts.force_utf8;

    let base_address = pyint::parse(&marc[12..17]).ok_or(ParseError::InvalidNumber)?;
    if base_address <= 0 {
        return Err(ParseError::BaseAddressNotFound);
    }
    if base_address >= marc.len() as i64 {
        return Err(ParseError::BaseAddressInvalid);
    }
    let record_length = pyint::parse(&leader[..5]).ok_or(ParseError::InvalidNumber)?;
    if (marc.len() as i64) < record_length {
        return Err(ParseError::Truncated);
    }
    let directory = &marc[py_slice(marc.len(), LEADER_LEN as i64, base_address - 1)];
    if !directory.is_ascii() {
        return Err(ParseError::Encoding);
    }
    if !directory.len().is_multiple_of(DIRECTORY_ENTRY_LEN) {
        return Err(ParseError::DirectoryInvalid);
    }
    if directory.is_empty() {
        return Err(ParseError::NoFieldsFound);
    }
    record.fields.reserve(directory.len() / DIRECTORY_ENTRY_LEN);

    for entry in directory.chunks_exact(DIRECTORY_ENTRY_LEN) {
        let tag: [u8; 3] = [entry[0], entry[1], entry[2]];
        let length = pyint::parse(&entry[3..7]).ok_or(ParseError::InvalidNumber)?;
        let offset = pyint::parse(&entry[7..12]).ok_or(ParseError::InvalidNumber)?;
        let start = base_address + offset;
        let data = &marc[py_slice(marc.len(), start, start + length - 1)];

        if tag.iter().all(u8::is_ascii_digit) && &tag < b"010" {
            let value = if opts.to_unicode {
                // Control fields: strict decoding with the record's encoding, never MARC-8.
                if utf8 {
                    push_utf8(&mut record.buf, data, Utf8Handling::Strict)?
                } else {
                    match opts.file_encoding {
                        FileEncoding::Marc8 | FileEncoding::Latin1 => {
                            push_latin1(&mut record.buf, data)
                        }
                        FileEncoding::Utf8 => {
                            push_utf8(&mut record.buf, data, Utf8Handling::Strict)?
                        }
                        FileEncoding::Other => return Err(ParseError::NeedsPython),
                    }
                }
            } else {
                push_raw(&mut record.buf, data)
            };
            record.fields.push(Field {
                tag,
                kind: FieldKind::Control(value),
            });
            continue;
        }

        let mut parts = split_subfields(data);
        let indicators = parts.next().unwrap_or(&[]);
        if !indicators.is_ascii() {
            return Err(ParseError::Encoding);
        }
        // pymarc logs a warning for missing or extra indicators: Python's job.
        let indicators: [u8; 2] = indicators.try_into().map_err(|_| ParseError::NeedsPython)?;
        let first = record.subfields.len();
        for part in parts {
            let Some((&code, value)) = part.split_first() else {
                continue;
            };
            if !code.is_ascii() {
                // pymarc warns (BadSubfieldCodeWarning) and normalises the code: Python's job.
                return Err(ParseError::NeedsPython);
            }
            let value = if !opts.to_unicode {
                push_raw(&mut record.buf, value)
            } else if utf8 {
                push_utf8(&mut record.buf, value, opts.utf8_handling)?
            } else {
                match opts.file_encoding {
                    FileEncoding::Marc8 => {
                        let decoded =
                            marc8::decode(value, opts.quiet).map_err(|_| ParseError::Encoding)?;
                        record.messages.extend(decoded.messages);
                        push_raw(&mut record.buf, decoded.text.as_bytes())
                    }
                    FileEncoding::Latin1 => push_latin1(&mut record.buf, value),
                    FileEncoding::Utf8 => push_utf8(&mut record.buf, value, Utf8Handling::Strict)?,
                    FileEncoding::Other => return Err(ParseError::NeedsPython),
                }
            };
            record.subfields.push(Subfield { code, value });
        }
        let subfields = first..record.subfields.len();
        record.fields.push(Field {
            tag,
            kind: FieldKind::Data {
                indicators,
                subfields,
            },
        });
    }
    Ok(())
}

/// `data.split(0x1F)`, with `memchr` finding the delimiters.
fn split_subfields(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(SUBFIELD_INDICATOR, data).chain(std::iter::once(data.len()));
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let part = &data[start..end];
        start = end + 1;
        Some(part)
    })
}

fn push_raw(buf: &mut Vec<u8>, data: &[u8]) -> Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(data);
    start..buf.len()
}

fn push_latin1(buf: &mut Vec<u8>, data: &[u8]) -> Range<usize> {
    let start = buf.len();
    if data.is_ascii() {
        buf.extend_from_slice(data);
    } else {
        let mut tmp = [0; 4];
        for &b in data {
            buf.extend_from_slice(char::from(b).encode_utf8(&mut tmp).as_bytes());
        }
    }
    start..buf.len()
}

/// Appends `data` decoded as UTF-8 the way CPython's decoder does with the given error handler.
fn push_utf8(
    buf: &mut Vec<u8>,
    data: &[u8],
    handling: Utf8Handling,
) -> Result<Range<usize>, ParseError> {
    let start = buf.len();
    if data.is_ascii() || std::str::from_utf8(data).is_ok() {
        buf.extend_from_slice(data);
        return Ok(start..buf.len());
    }
    match handling {
        Utf8Handling::Strict => return Err(ParseError::Encoding),
        Utf8Handling::Other => return Err(ParseError::NeedsPython),
        Utf8Handling::Replace | Utf8Handling::Ignore => {
            // Both CPython and `Utf8Chunks` substitute maximal subparts (Unicode 3.9, U+FFFD
            // substitution of maximal subparts), so the replacement counts agree.
            for chunk in data.utf8_chunks() {
                buf.extend_from_slice(chunk.valid().as_bytes());
                if !chunk.invalid().is_empty() && handling == Utf8Handling::Replace {
                    buf.extend_from_slice("\u{FFFD}".as_bytes());
                }
            }
        }
    }
    Ok(start..buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_subfields_matches_slice_split() {
        for data in [
            &b""[..],
            b"\x1f",
            b"ab",
            b"ab\x1fcd\x1f",
            b"\x1f\x1fx",
            b"10\x1faA\x1fbB",
        ] {
            let ours: Vec<&[u8]> = split_subfields(data).collect();
            let std: Vec<&[u8]> = data.split(|&b| b == SUBFIELD_INDICATOR).collect();
            assert_eq!(ours, std);
        }
    }

    #[test]
    fn py_slice_matches_python() {
        assert_eq!(py_slice(10, 2, 5), 2..5);
        assert_eq!(py_slice(10, 5, 2), 5..5);
        assert_eq!(py_slice(10, -3, 20), 7..10);
        assert_eq!(py_slice(10, -30, -20), 0..0);
        assert_eq!(py_slice(10, 12, 15), 10..10);
    }

    #[test]
    fn structural_errors() {
        let opts = Options::default();
        assert_eq!(parse(b"short", &opts), Err(ParseError::LeaderInvalid));
        assert_eq!(
            parse(b"00026     2200000   4500\x1e\x1d", &opts),
            Err(ParseError::BaseAddressNotFound)
        );
        assert_eq!(
            parse(b"00026     2200099   4500\x1e\x1d", &opts),
            Err(ParseError::BaseAddressInvalid)
        );
        assert_eq!(
            parse(b"00026     22000x5   4500\x1e\x1d", &opts),
            Err(ParseError::InvalidNumber)
        );
        assert_eq!(
            parse(b"00026     2200025   4500\x1e\x1d", &opts),
            Err(ParseError::NoFieldsFound)
        );
    }

    #[test]
    fn utf8_replace_and_ignore() {
        let mut buf = Vec::new();
        let r = push_utf8(&mut buf, b"a\xffb\xe2\x82", Utf8Handling::Replace).unwrap();
        assert_eq!(std::str::from_utf8(&buf[r]).unwrap(), "a\u{FFFD}b\u{FFFD}");
        let mut buf = Vec::new();
        let r = push_utf8(&mut buf, b"a\xffb\xe2\x82", Utf8Handling::Ignore).unwrap();
        assert_eq!(&buf[r], b"ab");
    }
}
