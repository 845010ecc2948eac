//! Record framing: finding where one record ends and the next begins in a byte buffer.
//!
//! A [`Framing`] looks at the unconsumed input at the front of the reader's buffer and answers with
//! a [`Frame`]: a complete record, bytes to skip, or "not enough input yet". The reader calls it
//! over and over with the GIL released, so a framing is plain Rust with no Python in it. Because the
//! reader always passes the input *from the start of the next record*, a framing never has to
//! remember anything between calls; the built-in ones are stateless.
//!
//! Ready-made framings: [`Delimited`] (records end with a byte sequence), [`Lines`] (newline
//! terminated text, `\r\n` tolerated), and [`LengthPrefixed`] (a length field at a fixed offset and
//! width, in ASCII digits or binary; MARC 21 is `LengthPrefixed::ascii(0, 5)`).

use std::error::Error;
use std::fmt;
use std::ops::Range;

/// Finds record boundaries in a byte stream.
///
/// `buf` is the unconsumed input, starting exactly where the next record (or junk to skip) begins.
/// `at_eof` is true when no more input will ever follow `buf`. The answer must be one of:
///
/// - [`Frame::Record`]: `buf[..consumed]` is one record; the parser is given `buf[record]`
///   (`record` lies within `..consumed`, so a delimiter or header can be left out).
/// - [`Frame::Skip`]: drop `n` bytes (padding, separators) without producing a record.
/// - [`Frame::Incomplete`]: the record continues past the end of `buf`. If `needed` is known
///   (length-prefixed formats), the reader grows its buffer to hold it at once. Returned with an
///   empty `buf`, it means "no more records"; returned at EOF with a non-empty `buf`, the reader
///   reports truncated input.
/// - `Err(FramingError)`: the input is malformed here. If the error is
///   [recoverable](FramingError::recover_after), the reader reports it, skips the given bytes and
///   goes on; otherwise reading stops.
///
/// Framings run with the GIL released, between chunk refills: they must be fast, must not call
/// into Python, and must give the same answer for the same `(buf, at_eof)` whatever the chunking
/// (the reader's property tests check the built-ins for this).
///
/// # Examples
///
/// A framing for records preceded by a one-byte length (an illustration; `LengthPrefixed` does
/// this and more):
///
/// ```
/// use gilkit::file::{Frame, Framing, FramingError};
///
/// struct ByteLength;
///
/// impl Framing for ByteLength {
///     fn next_record(&mut self, buf: &[u8], _at_eof: bool) -> Result<Frame, FramingError> {
///         let Some(&len) = buf.first() else { return Ok(Frame::incomplete()) };
///         let total = 1 + len as usize;
///         if buf.len() < total {
///             return Ok(Frame::Incomplete { needed: Some(total) });
///         }
///         // Hand the parser the payload without the length byte.
///         Ok(Frame::Record { consumed: total, record: 1..total })
///     }
/// }
///
/// let mut framing = ByteLength;
/// assert_eq!(framing.next_record(b"\x02hi\x01!", false).unwrap(), Frame::Record { consumed: 3, record: 1..3 });
/// assert_eq!(framing.next_record(b"\x05abc", false).unwrap(), Frame::Incomplete { needed: Some(6) });
/// ```
pub trait Framing: Send {
    /// Says what the input at the start of `buf` is; see the trait documentation.
    ///
    /// # Errors
    ///
    /// A [`FramingError`] when the bytes at the start of `buf` cannot begin a valid record.
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError>;
}

impl<F: Framing + ?Sized> Framing for Box<F> {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        (**self).next_record(buf, at_eof)
    }
}

impl<F: Framing + ?Sized> Framing for &mut F {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        (**self).next_record(buf, at_eof)
    }
}

/// A [`Framing`] from a closure, for one-off formats.
///
/// # Examples
///
/// ```
/// use gilkit::file::{Frame, Framing, from_fn};
///
/// // Fixed-size records of 4 bytes.
/// let mut fixed = from_fn(|buf: &[u8], _at_eof: bool| {
///     Ok(if buf.len() >= 4 { Frame::record(4) } else { Frame::Incomplete { needed: Some(4) } })
/// });
/// assert_eq!(fixed.next_record(b"abcdef", false).unwrap(), Frame::record(4));
/// ```
pub fn from_fn<F>(f: F) -> FromFn<F>
where
    F: FnMut(&[u8], bool) -> Result<Frame, FramingError> + Send,
{
    FromFn(f)
}

/// The [`Framing`] made by [`from_fn`].
#[derive(Clone, Debug)]
pub struct FromFn<F>(F);

impl<F> Framing for FromFn<F>
where
    F: FnMut(&[u8], bool) -> Result<Frame, FramingError> + Send,
{
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        (self.0)(buf, at_eof)
    }
}

/// What a [`Framing`] found at the start of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One complete record: `consumed` bytes are used up; the parser sees `buf[record]`.
    Record {
        /// Bytes used up by this record (at least 1).
        consumed: usize,
        /// The part of `buf[..consumed]` handed to the parser.
        record: Range<usize>,
    },
    /// Bytes to drop that belong to no record (at least 1).
    Skip(usize),
    /// The next record is not complete in `buf`.
    Incomplete {
        /// The total number of bytes (from the start of `buf`) the record needs, when known.
        needed: Option<usize>,
    },
}

impl Frame {
    /// A record made of the first `len` bytes, all handed to the parser.
    #[inline]
    pub fn record(len: usize) -> Frame {
        Frame::Record {
            consumed: len,
            record: 0..len,
        }
    }

    /// Not enough input, size unknown.
    #[inline]
    pub fn incomplete() -> Frame {
        Frame::Incomplete { needed: None }
    }
}

/// Malformed input found by a [`Framing`].
///
/// It carries the cause (any error type; the built-in framings use [`InvalidLength`]) and,
/// when reading can go on, how many bytes to skip first.
#[derive(Debug)]
pub struct FramingError {
    cause: Box<dyn Error + Send + Sync>,
    recover_after: Option<usize>,
}

impl FramingError {
    /// An error that stops reading (the reader delivers every record before it, then the error,
    /// then no more records).
    pub fn new(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        FramingError {
            cause: cause.into(),
            recover_after: None,
        }
    }

    /// Makes the error recoverable: the reader reports it, skips `skip` bytes (at least 1) and
    /// frames on from there.
    #[must_use]
    pub fn recover_after(mut self, skip: usize) -> Self {
        self.recover_after = Some(skip.max(1));
        self
    }

    /// The bytes skipped to recover, or `None` if reading stops here.
    pub fn skip(&self) -> Option<usize> {
        self.recover_after
    }

    /// Whether reading can continue after this error.
    pub fn is_recoverable(&self) -> bool {
        self.recover_after.is_some()
    }

    /// The cause, for downcasting to the framing's own error type.
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.cause, f)
    }
}

impl Error for FramingError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.cause)
    }
}

/// A length field that is not a valid length (the cause of [`LengthPrefixed`]'s errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidLength {
    /// The raw bytes of the length field.
    pub field: Vec<u8>,
    /// Why they are not a length.
    pub reason: &'static str,
}

impl fmt::Display for InvalidLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid record length field {:?}: {}",
            self.field.escape_ascii().to_string(),
            self.reason
        )
    }
}

impl Error for InvalidLength {}

/// Records terminated by a delimiter (one byte or a byte sequence).
///
/// The parser sees the record without its delimiter unless [`keep_delimiter`] is set. Trailing
/// bytes at EOF without a delimiter are truncated input, unless [`allow_unterminated_last`] is set,
/// in which case they form a last record. An empty input gives no records.
///
/// [`keep_delimiter`]: Delimited::keep_delimiter
/// [`allow_unterminated_last`]: Delimited::allow_unterminated_last
///
/// # Examples
///
/// ```
/// use gilkit::file::{Delimited, Frame, Framing};
///
/// // MARC 21 records end with 0x1D; keep it, the MARC parser checks for it.
/// let mut framing = Delimited::new(b"\x1d").keep_delimiter(true);
/// assert_eq!(framing.next_record(b"abc\x1dde", false).unwrap(), Frame::record(4));
/// ```
///
/// # Panics
///
/// `Delimited::new` panics if the delimiter is empty.
#[derive(Clone, Debug)]
pub struct Delimited {
    delimiter: Vec<u8>,
    keep_delimiter: bool,
    allow_unterminated_last: bool,
}

impl Delimited {
    /// Records end with `delimiter` (non-empty).
    pub fn new(delimiter: impl Into<Vec<u8>>) -> Self {
        let delimiter = delimiter.into();
        assert!(
            !delimiter.is_empty(),
            "Delimited::new: the delimiter must not be empty"
        );
        Delimited {
            delimiter,
            keep_delimiter: false,
            allow_unterminated_last: false,
        }
    }

    /// Whether the parser sees the delimiter at the end of each record (default: no).
    #[must_use]
    pub fn keep_delimiter(mut self, keep: bool) -> Self {
        self.keep_delimiter = keep;
        self
    }

    /// Whether bytes after the last delimiter at EOF form a record (default: no, they are
    /// reported as truncated input).
    #[must_use]
    pub fn allow_unterminated_last(mut self, allow: bool) -> Self {
        self.allow_unterminated_last = allow;
        self
    }

    #[inline]
    fn find(&self, buf: &[u8]) -> Option<usize> {
        match self.delimiter.as_slice() {
            [byte] => memchr::memchr(*byte, buf),
            delimiter => memchr::memmem::find(buf, delimiter),
        }
    }
}

impl Framing for Delimited {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        match self.find(buf) {
            Some(at) => {
                let consumed = at + self.delimiter.len();
                let end = if self.keep_delimiter { consumed } else { at };
                Ok(Frame::Record {
                    consumed,
                    record: 0..end,
                })
            }
            None if at_eof && self.allow_unterminated_last && !buf.is_empty() => {
                Ok(Frame::record(buf.len()))
            }
            None => Ok(Frame::incomplete()),
        }
    }
}

/// Lines of text: records end with `\n`; a `\r` before it is dropped too; the last line may lack
/// its newline.
///
/// # Examples
///
/// ```
/// use gilkit::file::{Frame, Framing, Lines};
///
/// let mut lines = Lines::new();
/// assert_eq!(lines.next_record(b"one\r\ntwo", false).unwrap(), Frame::Record { consumed: 5, record: 0..3 });
/// assert_eq!(lines.next_record(b"two", true).unwrap(), Frame::record(3));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Lines {
    keep_ends: bool,
}

impl Lines {
    /// Newline-terminated records, line endings removed.
    pub fn new() -> Self {
        Lines { keep_ends: false }
    }

    /// Whether the parser sees the line ending (`\n` or `\r\n`) (default: no).
    #[must_use]
    pub fn keep_ends(mut self, keep: bool) -> Self {
        self.keep_ends = keep;
        self
    }
}

impl Framing for Lines {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        match memchr::memchr(b'\n', buf) {
            Some(at) => {
                let consumed = at + 1;
                let end = if self.keep_ends {
                    consumed
                } else if at > 0 && buf[at - 1] == b'\r' {
                    at - 1
                } else {
                    at
                };
                Ok(Frame::Record {
                    consumed,
                    record: 0..end,
                })
            }
            None if at_eof && !buf.is_empty() => Ok(Frame::record(buf.len())),
            None => Ok(Frame::incomplete()),
        }
    }
}

/// How a [`LengthPrefixed`] length field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthEncoding {
    /// ASCII decimal digits, exactly `width` of them (MARC 21: `"01234"`).
    AsciiDecimal,
    /// An unsigned big-endian integer of `width` bytes (1 to 8).
    BigEndian,
    /// An unsigned little-endian integer of `width` bytes (1 to 8).
    LittleEndian,
}

/// Records whose length is written in a field at a fixed offset from the record start.
///
/// By default the length counts the whole record, header included (as in MARC 21, where the first
/// five bytes are the record length in ASCII digits); [`length_excludes_header`] makes it count only
/// the bytes after the length field. The parser is given the whole record, header included.
///
/// A length field that is not a number, or a length shorter than the header, is a recoverable
/// [`FramingError`] whose cause is [`InvalidLength`]: the reader reports it and skips the header
/// (offset + width bytes), as pymarc does. Lengths over [`max_len`] are errors too (default 1 GiB),
/// so that a corrupt field cannot make the reader allocate without bound.
///
/// [`length_excludes_header`]: LengthPrefixed::length_excludes_header
/// [`max_len`]: LengthPrefixed::max_len
///
/// # Examples
///
/// ```
/// use gilkit::file::{Frame, Framing, LengthPrefixed};
///
/// let mut marc = LengthPrefixed::ascii(0, 5);
/// assert_eq!(marc.next_record(b"00007ab00005", false).unwrap(), Frame::record(7));
/// assert_eq!(marc.next_record(b"00009ab", false).unwrap(), Frame::Incomplete { needed: Some(9) });
/// assert!(marc.next_record(b"12x45", false).unwrap_err().is_recoverable());
///
/// // A 4-byte big-endian payload length before each message.
/// let mut messages = LengthPrefixed::big_endian(0, 4).length_excludes_header(true);
/// assert_eq!(messages.next_record(b"\0\0\0\x02hi", false).unwrap(), Frame::record(6));
/// ```
///
/// # Panics
///
/// The constructors panic if `width` is 0, or over 8 for the binary encodings, or over 19 for
/// ASCII digits.
#[derive(Clone, Debug)]
pub struct LengthPrefixed {
    offset: usize,
    width: usize,
    encoding: LengthEncoding,
    excludes_header: bool,
    max_len: usize,
}

impl LengthPrefixed {
    /// A length field of `width` bytes at `offset`, encoded as `encoding`.
    pub fn new(offset: usize, width: usize, encoding: LengthEncoding) -> Self {
        let max_width = match encoding {
            LengthEncoding::AsciiDecimal => 19,
            LengthEncoding::BigEndian | LengthEncoding::LittleEndian => 8,
        };
        assert!(
            (1..=max_width).contains(&width),
            "LengthPrefixed: width must be 1..={max_width} for {encoding:?}, got {width}"
        );
        LengthPrefixed {
            offset,
            width,
            encoding,
            excludes_header: false,
            max_len: 1 << 30,
        }
    }

    /// ASCII decimal digits: `LengthPrefixed::ascii(0, 5)` is MARC 21.
    pub fn ascii(offset: usize, width: usize) -> Self {
        Self::new(offset, width, LengthEncoding::AsciiDecimal)
    }

    /// A big-endian unsigned integer.
    pub fn big_endian(offset: usize, width: usize) -> Self {
        Self::new(offset, width, LengthEncoding::BigEndian)
    }

    /// A little-endian unsigned integer.
    pub fn little_endian(offset: usize, width: usize) -> Self {
        Self::new(offset, width, LengthEncoding::LittleEndian)
    }

    /// Whether the length counts only the bytes after the length field (default: it counts the
    /// whole record).
    #[must_use]
    pub fn length_excludes_header(mut self, excludes: bool) -> Self {
        self.excludes_header = excludes;
        self
    }

    /// The largest record length accepted (default 1 GiB).
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    fn header_len(&self) -> usize {
        self.offset + self.width
    }

    fn invalid(&self, field: &[u8], reason: &'static str) -> FramingError {
        FramingError::new(InvalidLength {
            field: field.to_vec(),
            reason,
        })
        .recover_after(self.header_len())
    }

    fn decode(&self, field: &[u8]) -> Result<u64, FramingError> {
        match self.encoding {
            LengthEncoding::AsciiDecimal => field.iter().try_fold(0u64, |n, &b| {
                if b.is_ascii_digit() {
                    Ok(n * 10 + u64::from(b - b'0'))
                } else {
                    Err(self.invalid(field, "not all ASCII digits"))
                }
            }),
            LengthEncoding::BigEndian => Ok(field.iter().fold(0, |n, &b| n << 8 | u64::from(b))),
            LengthEncoding::LittleEndian => {
                Ok(field.iter().rev().fold(0, |n, &b| n << 8 | u64::from(b)))
            }
        }
    }
}

impl Framing for LengthPrefixed {
    fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
        let header = self.header_len();
        if buf.len() < header {
            // At EOF with a partial header the reader reports truncation; an empty buffer is
            // the clean end.
            let _ = at_eof;
            return Ok(Frame::Incomplete {
                needed: Some(header),
            });
        }
        let field = &buf[self.offset..header];
        let value = self.decode(field)?;
        let total = if self.excludes_header {
            value.checked_add(header as u64)
        } else {
            Some(value)
        };
        let total = match total {
            Some(total) if total > self.max_len as u64 => {
                return Err(self.invalid(field, "longer than the maximum record length"));
            }
            Some(total) if total < header as u64 || total == 0 => {
                return Err(self.invalid(field, "shorter than the record header"));
            }
            Some(total) => total as usize,
            None => return Err(self.invalid(field, "longer than the maximum record length")),
        };
        if buf.len() < total {
            Ok(Frame::Incomplete {
                needed: Some(total),
            })
        } else {
            Ok(Frame::record(total))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_multi_byte() {
        let mut f = Delimited::new(b"\r\n\r\n".to_vec());
        assert_eq!(
            f.next_record(b"head\r\n\r\nbody", false).unwrap(),
            Frame::Record {
                consumed: 8,
                record: 0..4
            }
        );
        assert_eq!(f.next_record(b"body", true).unwrap(), Frame::incomplete());
        let mut f = f.allow_unterminated_last(true);
        assert_eq!(f.next_record(b"body", true).unwrap(), Frame::record(4));
        assert_eq!(f.next_record(b"", true).unwrap(), Frame::incomplete());
    }

    #[test]
    fn lines_keep_ends_and_empty_lines() {
        let mut f = Lines::new().keep_ends(true);
        assert_eq!(f.next_record(b"a\r\n", false).unwrap(), Frame::record(3));
        let mut f = Lines::new();
        assert_eq!(
            f.next_record(b"\nx", false).unwrap(),
            Frame::Record {
                consumed: 1,
                record: 0..0
            }
        );
    }

    #[test]
    fn length_prefixed_rejects_bad_fields() {
        let mut marc = LengthPrefixed::ascii(0, 5);
        let err = marc.next_record(b"0000", true).unwrap();
        assert_eq!(err, Frame::Incomplete { needed: Some(5) });
        let err = marc.next_record(b"00003abc", false).unwrap_err();
        assert_eq!(err.skip(), Some(5));
        let cause = err.cause().downcast_ref::<InvalidLength>().unwrap();
        assert_eq!(cause.field, b"00003");
        assert!(err.to_string().contains("shorter than the record header"));
        let err = LengthPrefixed::little_endian(2, 2)
            .max_len(100)
            .next_record(b"xx\xff\x00", false)
            .unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
        assert_eq!(
            LengthPrefixed::little_endian(2, 2)
                .next_record(b"xx\x05\x00y", false)
                .unwrap(),
            Frame::record(5)
        );
    }
}
