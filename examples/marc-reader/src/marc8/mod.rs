//! MARC-8 to Unicode, exactly as pymarc's `MARC8ToUnicode.translate` does it.
//!
//! MARC-8 is the pre-Unicode character encoding of MARC 21 records: ASCII-compatible G0 and
//! ANSEL-like G1 working sets that escape sequences switch to other code tables (Greek, Cyrillic,
//! Hebrew, Arabic, the three-byte East Asian EACC set, sub- and superscripts). Combining marks come
//! *before* the base character they modify, so the decoder holds them back until the next base
//! character, then normalises the result to NFC.
//!
//! This module reproduces pymarc 5's decoder step for step, including its quirks, because
//! `gilkit_marc` promises the same strings as pymarc:
//! - control bytes (< 0x20) and C1 bytes (0x81..=0x9F) are dropped;
//! - an escape to an unknown final byte is not consumed: the ESC byte itself is then read as a
//!   (dropped) control character;
//! - a code missing from the current set is looked up in pymarc's `ODD_MAP`, else replaced by a
//!   space with a message (`Unable to parse character ...`) unless `quiet`;
//! - combining marks left over at the end of the string are dropped;
//! - an escape sequence cut short by the end of the data is an error (pymarc raises
//!   `UnicodeDecodeError`, "invalid multibyte character encoding").
//!
//! pymarc writes its messages to `sys.stderr`; here they are returned in [`Decoded::messages`] so
//! the caller can write them once it holds the GIL.
//!
//! The code tables in `tables.rs` are generated from pymarc's `marc8_mapping` by
//! `scripts/gen_marc8_tables.py` (pymarc's BSD-2-Clause licence is beside them).

mod tables;

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::{IsNormalized, is_nfc_quick};

/// Final byte of the Basic Latin (ASCII) set, the initial G0.
const BASIC_LATIN: u32 = 0x42;
/// Final byte of the Extended Latin (ANSEL) set, the initial G1.
const ANSEL: u32 = 0x45;
/// Final byte of the three-byte East Asian (EACC) set.
const EACC: u32 = 0x31;
const ESC: u8 = 0x1B;

/// The result of a successful decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded text, NFC-normalised.
    pub text: String,
    /// The lines pymarc would have written to `sys.stderr`, each ending in `\n`.
    pub messages: Vec<String>,
}

/// An escape sequence ran past the end of the data.
///
/// pymarc reports this as `UnicodeDecodeError('marc8_to_unicode', data, 0, len(data),
/// 'invalid multibyte character encoding')`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marc8Error {
    /// Messages written before the error (pymarc writes them before raising).
    pub messages: Vec<String>,
}

impl fmt::Display for Marc8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid multibyte character encoding")
    }
}

impl std::error::Error for Marc8Error {}

/// The working character sets, by final byte: pymarc's `MARC8ToUnicode.g0` and `.g1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sets {
    /// The set for bytes 0x20..=0x7F (and all bytes of a multibyte set).
    pub g0: u32,
    /// The set for bytes 0xA0..=0xFF.
    pub g1: u32,
}

impl Default for Sets {
    /// Basic Latin and ANSEL, the sets every MARC-8 string starts with.
    fn default() -> Self {
        Sets {
            g0: BASIC_LATIN,
            g1: ANSEL,
        }
    }
}

/// Decodes MARC-8 `data` to Unicode as pymarc's `marc8_to_unicode(data, quiet)` does.
///
/// # Errors
///
/// [`Marc8Error`] when an escape sequence or a character is cut short by the end of `data`, where
/// pymarc raises `UnicodeDecodeError`.
///
/// # Examples
///
/// ```
/// use gilkit_marc::marc8::decode;
///
/// // "e" preceded by ANSEL's combining acute accent (0xE2) becomes "é".
/// assert_eq!(decode(b"caf\xe2e", false).unwrap().text, "caf\u{e9}");
/// // Basic Cyrillic via an escape sequence to G0.
/// assert_eq!(decode(b"\x1b(NABC", false).unwrap().text, "\u{430}\u{431}\u{446}");
/// ```
pub fn decode(data: &[u8], quiet: bool) -> Result<Decoded, Marc8Error> {
    decode_with(data, quiet, &mut Sets::default())
}

/// Like [`decode`], starting from the working sets `sets` and leaving them as the data's escape
/// sequences set them (also when it fails), as one pymarc `MARC8ToUnicode` object does across
/// `translate` calls.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_with(data: &[u8], quiet: bool, sets: &mut Sets) -> Result<Decoded, Marc8Error> {
    decode_units(data, true, quiet, sets)
}

/// Decodes a `str` as pymarc's decoder does when given one (`marc8_to_unicode(str)`, which
/// pymarc's `map_marc8_record` calls on records read with `to_unicode=True`): each character is
/// a code unit (its code point), and escape sequences are never recognised (pymarc compares the
/// string's slices with `b"\x1b"`, which a `str` never equals), so ESC is dropped as a control
/// character and the sets stay as they are. Never fails.
pub fn decode_str_with(text: &str, quiet: bool, sets: &mut Sets) -> Decoded {
    let units: Vec<u32> = text.chars().map(u32::from).collect();
    decode_units(&units, false, quiet, sets).expect("decoding without escape sequences cannot fail")
}

/// The decoder over code units: bytes, or a string's code points (see [`decode_str_with`]).
/// `escapes`: whether ESC starts an escape sequence (only for bytes).
fn decode_units<U: Copy + Into<u32>>(
    data: &[U],
    escapes: bool,
    quiet: bool,
    sets: &mut Sets,
) -> Result<Decoded, Marc8Error> {
    let unit = |i: usize| -> u32 { data[i].into() };
    let unit_at = |i: usize| -> Option<u32> { data.get(i).map(|&u| u.into()) };
    let mut text = String::with_capacity(data.len());
    let mut messages = Vec::new();
    if sets.g0 == BASIC_LATIN && data.iter().all(|&b| (0x20..0x7F).contains(&b.into())) {
        text.extend(data.iter().map(|&b| char::from(b.into() as u8)));
        return Ok(Decoded { text, messages });
    }
    let Sets { g0, g1 } = sets;
    let mut combinings: Vec<char> = Vec::new();
    let len = data.len();
    let mut pos = 0;
    let err = |messages: Vec<String>| Marc8Error { messages };
    while pos < len {
        if escapes && unit(pos) == u32::from(ESC) {
            let next = unit_at(pos + 1);
            const OPEN_G0: [u32; 3] = [b'(' as u32, b',' as u32, b'$' as u32];
            const OPEN_G1: [u32; 2] = [b')' as u32, b'-' as u32];
            match next {
                Some(n) if OPEN_G0.contains(&n) => {
                    if len >= pos + 3 {
                        if unit(pos + 2) == u32::from(b',') && next == Some(u32::from(b'$')) {
                            pos += 1;
                        }
                        match unit_at(pos + 2) {
                            Some(b) => *g0 = b,
                            None => return Err(err(messages)),
                        }
                        pos += 3;
                    } else {
                        text.push('\u{1b}');
                        pos += 1;
                    }
                    continue;
                }
                Some(n) if OPEN_G1.contains(&n) => {
                    match unit_at(pos + 2) {
                        Some(b) => *g1 = b,
                        None => return Err(err(messages)),
                    }
                    pos += 3;
                    continue;
                }
                Some(charset) => {
                    if tables::charset(charset).is_some() {
                        *g0 = charset;
                        pos += 2;
                    } else if charset == 0x73 {
                        *g0 = BASIC_LATIN;
                        pos += 2;
                        if pos == len {
                            break;
                        }
                    }
                }
                None => return Err(err(messages)),
            }
        }

        let multibyte = *g0 == EACC;
        // u64: a string's code points (up to 0x10FFFF) overflow u32 in the three-unit sum.
        let code_point: u64 = if multibyte {
            let cp = if len < pos + 3 {
                messages.push(format!(
                    "Multi-byte position {} exceeds length of marc8 string {}\n",
                    pos + 3,
                    len
                ));
                32
            } else {
                u64::from(unit(pos)) * 65536
                    + u64::from(unit(pos + 1)) * 256
                    + u64::from(unit(pos + 2))
            };
            pos += 3;
            cp
        } else {
            match unit_at(pos) {
                Some(b) => {
                    pos += 1;
                    u64::from(b)
                }
                None => return Err(err(messages)),
            }
        };

        if code_point < 0x20 || (0x80 < code_point && code_point < 0xA0) {
            continue;
        }
        let set = if code_point > 0x80 && !multibyte {
            *g1
        } else {
            *g0
        };
        let key = u32::try_from(code_point).ok();
        let found = key
            .zip(tables::charset(set))
            .and_then(|(code_point, table)| {
                table
                    .binary_search_by_key(&code_point, |&(code, _, _)| code)
                    .ok()
                    .map(|i| (table[i].1, table[i].2))
            });
        let (uni, combining) = match found {
            Some(hit) => hit,
            None => {
                if let Some(i) = key.and_then(|code_point| {
                    tables::ODD_MAP
                        .binary_search_by_key(&code_point, |&(code, _)| code)
                        .ok()
                }) {
                    text.push(to_char(tables::ODD_MAP[i].1));
                    continue;
                }
                if !quiet {
                    messages.push(format!(
                        "Unable to parse character 0x{code_point:x} in g0={g0} g1={g1}\n"
                    ));
                }
                (u32::from(b' '), false)
            }
        };
        if combining {
            combinings.push(to_char(uni));
        } else {
            text.push(to_char(uni));
            text.extend(combinings.drain(..));
        }
    }
    if is_nfc_quick(text.chars()) != IsNormalized::Yes {
        text = text.nfc().collect();
    }
    Ok(Decoded { text, messages })
}

/// The table values are Unicode scalar values (checked by a test over every table).
fn to_char(uni: u32) -> char {
    char::from_u32(uni).unwrap_or('\u{FFFD}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_value_is_a_scalar_value() {
        for set in [
            0x31, 0x32, 0x33, 0x34, 0x42, 0x45, 0x4E, 0x51, 0x53, 0x62, 0x67, 0x70,
        ] {
            let table = tables::charset(set).unwrap();
            assert!(
                table.windows(2).all(|w| w[0].0 < w[1].0),
                "set {set:x} sorted"
            );
            assert!(table.iter().all(|&(_, u, _)| char::from_u32(u).is_some()));
        }
        assert!(
            tables::ODD_MAP
                .iter()
                .all(|&(_, u)| char::from_u32(u).is_some())
        );
    }

    #[test]
    fn ascii_fast_path_agrees_with_basic_latin_table() {
        let table = tables::charset(BASIC_LATIN).unwrap();
        for b in 0x20u32..0x7F {
            let i = table.binary_search_by_key(&b, |e| e.0).unwrap();
            assert_eq!(table[i].1, b);
            assert!(!table[i].2);
        }
    }

    #[test]
    fn combining_marks_precede_their_base() {
        assert_eq!(decode(b"\xe2e\xe3a", true).unwrap().text, "\u{e9}\u{e2}");
        // Left-over combining marks are dropped.
        assert_eq!(decode(b"a\xe2", true).unwrap().text, "a");
    }

    #[test]
    fn eacc_three_byte_characters() {
        // ESC $ 1 selects EACC as G0; 0x213021 is U+4E00.
        assert_eq!(
            decode(b"\x1b$1\x21\x30\x21\x1b(B!", true).unwrap().text,
            "\u{4e00}!"
        );
        // A truncated three-byte character becomes a space and a message.
        let d = decode(b"\x1b$1\x21\x30", false).unwrap();
        assert_eq!(d.messages.len(), 2);
        assert!(d.messages[0].starts_with("Multi-byte position 6 exceeds length"));
    }

    #[test]
    fn sets_carry_over_between_calls() {
        let mut sets = Sets::default();
        // Switch G0 to Basic Cyrillic and leave it there.
        assert_eq!(
            decode_with(b"\x1b(NA", true, &mut sets).unwrap().text,
            "\u{430}"
        );
        assert_eq!(
            sets,
            Sets {
                g0: 0x4E,
                g1: ANSEL
            }
        );
        // The next string starts in Cyrillic, as with one pymarc converter object.
        assert_eq!(decode_with(b"A", true, &mut sets).unwrap().text, "\u{430}");
        assert_eq!(decode(b"A", true).unwrap().text, "A");
    }

    #[test]
    fn truncated_escape_is_an_error() {
        assert!(decode(b"abc\x1b", true).is_err());
        assert!(decode(b"abc\x1b)", true).is_err());
        assert!(decode(b"\x1bN", true).is_err());
        // Too short for a G0 escape: the ESC is kept.
        assert_eq!(decode(b"a\x1b(", true).unwrap().text, "a\u{1b}(");
    }

    #[test]
    fn unknown_code_becomes_space_with_message_unless_quiet() {
        let d = decode(b"a\xfc", false).unwrap();
        assert_eq!(d.text, "a ");
        assert_eq!(
            d.messages,
            ["Unable to parse character 0xfc in g0=66 g1=69\n"]
        );
        assert!(decode(b"a\xfc", true).unwrap().messages.is_empty());
    }
}
