//! Record framing: where the next record ends in a stream, exactly as pymarc's `MARCReader` decides.
//!
//! pymarc reads five bytes, parses them with `int()`, reads `length - 5` more bytes (all the rest
//! of the stream when that is negative, since `read(-n)` reads to the end), and then checks the
//! chunk: shorter than `length` is `TruncatedRecord`, a last byte other than 0x1D is
//! `EndOfRecordNotFound`, an unreadable length is `RecordLengthInvalid`. All three are fatal: the
//! reader yields `None` once and then stops. [`next_frame`] makes the same decisions on a buffer.

use std::fmt;

use crate::parse::END_OF_RECORD;
use crate::pyint;

/// A fatal framing error; the names are pymarc's exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The stream ended inside a record (`TruncatedRecord`).
    Truncated,
    /// The first five bytes are not a number (`RecordLengthInvalid`).
    LengthInvalid,
    /// The record's last byte is not 0x1D (`EndOfRecordNotFound`).
    EndOfRecordNotFound,
}

impl FrameError {
    /// pymarc's exception class name for this error.
    pub fn pymarc_name(self) -> &'static str {
        match self {
            FrameError::Truncated => "TruncatedRecord",
            FrameError::LengthInvalid => "RecordLengthInvalid",
            FrameError::EndOfRecordNotFound => "EndOfRecordNotFound",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Truncated => "Record length in leader is greater than the length of data",
            FrameError::LengthInvalid => "Invalid record length in first 5 bytes of record",
            FrameError::EndOfRecordNotFound => "Unable to locate end of record marker",
        })
    }
}

impl std::error::Error for FrameError {}

/// What the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// More data is needed to decide (only when not at the end of the stream).
    NeedMore,
    /// The stream is exhausted.
    End,
    /// A complete record of this many bytes (terminator included).
    Record(usize),
    /// A chunk of this many bytes that pymarc rejects with a fatal error; reading stops after it.
    Broken(usize, FrameError),
}

/// Decides what the front of `buf` is; `at_eof` says no more data will come.
///
/// # Examples
///
/// ```
/// use gilkit_marc::frame::{next_frame, Frame, FrameError};
///
/// assert_eq!(next_frame(b"00008ab\x1d", true), Frame::Record(8));
/// assert_eq!(next_frame(b"0000", false), Frame::NeedMore);
/// assert_eq!(next_frame(b"0000", true), Frame::Broken(4, FrameError::Truncated));
/// assert_eq!(next_frame(b"", true), Frame::End);
/// ```
pub fn next_frame(buf: &[u8], at_eof: bool) -> Frame {
    if buf.len() < 5 {
        return match (at_eof, buf.is_empty()) {
            (false, _) => Frame::NeedMore,
            (true, true) => Frame::End,
            (true, false) => Frame::Broken(buf.len(), FrameError::Truncated),
        };
    }
    let Some(length) = pyint::parse(&buf[..5]) else {
        return Frame::Broken(5, FrameError::LengthInvalid);
    };
    let chunk_len = if length < 5 {
        // read(length - 5) with a negative size reads everything that is left.
        if !at_eof {
            return Frame::NeedMore;
        }
        buf.len()
    } else {
        let want = usize::try_from(length).unwrap_or(usize::MAX);
        if buf.len() < want {
            if !at_eof {
                return Frame::NeedMore;
            }
            return Frame::Broken(buf.len(), FrameError::Truncated);
        }
        want
    };
    if (chunk_len as i64) < length {
        return Frame::Broken(chunk_len, FrameError::Truncated);
    }
    if buf[chunk_len - 1] != END_OF_RECORD {
        return Frame::Broken(chunk_len, FrameError::EndOfRecordNotFound);
    }
    Frame::Record(chunk_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pymarc_decisions() {
        assert_eq!(
            next_frame(b"abcde12345", true),
            Frame::Broken(5, FrameError::LengthInvalid)
        );
        assert_eq!(next_frame(b"00010abcd\x1dMORE", true), Frame::Record(10));
        assert_eq!(
            next_frame(b"00010abcdXMORE", true),
            Frame::Broken(10, FrameError::EndOfRecordNotFound)
        );
        assert_eq!(
            next_frame(b"00020abcd\x1d", true),
            Frame::Broken(10, FrameError::Truncated)
        );
        assert_eq!(next_frame(b"00020abcd\x1d", false), Frame::NeedMore);
        // A length below five reads the rest of the stream.
        assert_eq!(next_frame(b"00003abc\x1d", false), Frame::NeedMore);
        assert_eq!(next_frame(b"00003abc\x1d", true), Frame::Record(9));
        assert_eq!(
            next_frame(b"00005", true),
            Frame::Broken(5, FrameError::EndOfRecordNotFound)
        );
    }
}
