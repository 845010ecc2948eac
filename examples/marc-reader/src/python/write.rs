//! `Record.as_marc()` in Rust: transmission format from the Python objects, byte for byte as pymarc.
//!
//! Only plain records take this path: exact `Record`/`Field`/`RawField`/`Subfield`/`Indicators`/
//! `Leader` instances (read through their slots, see [`super::build`]) holding `str` (or `bytes`
//! in `RawField`s), three-character ASCII tags, and text the target encoding can represent.
//! Anything else returns `None` and `Record.as_marc` runs the Python serialiser, which gives
//! pymarc's result or pymarc's exception (a subclass overriding `as_marc`, a `None` control field
//! written as `"None"`, an unencodable character...). Holds the GIL throughout.
//!
//! A record over 99,999 bytes or a field over 9,999 bytes raises `RecordTooLong` /
//! `FieldTooLong` (a deliberate difference from pymarc, which writes corrupt bytes).

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::build::{Builder, RecordSlot, is_exactly};
use crate::parse::{END_OF_FIELD, END_OF_RECORD, LEADER_LEN, SUBFIELD_INDICATOR};

/// Appends `s` encoded as UTF-8 or Latin-1; `None` if it cannot be (Python decides then).
fn push_text(out: &mut Vec<u8>, s: &Bound<'_, PyAny>, latin1: bool) -> Option<()> {
    let s = s.cast::<PyString>().ok()?.to_str().ok()?;
    if !latin1 || s.is_ascii() {
        out.extend_from_slice(s.as_bytes());
        return Some(());
    }
    for ch in s.chars() {
        out.push(u8::try_from(u32::from(ch)).ok()?);
    }
    Some(())
}

fn push_bytes(out: &mut Vec<u8>, b: &Bound<'_, PyAny>) -> Option<()> {
    out.extend_from_slice(b.cast::<PyBytes>().ok()?.as_bytes());
    Some(())
}

fn push_ascii(out: &mut Vec<u8>, s: &Bound<'_, PyAny>) -> Option<()> {
    let s = s.cast::<PyString>().ok()?.to_str().ok()?;
    s.is_ascii().then(|| out.extend_from_slice(s.as_bytes()))
}

/// A record in transmission format, in three parts: the leader with its numbers filled in, the
/// directory and the field data. Kept per thread and reused, so serialising allocates nothing but
/// the `bytes` object.
#[derive(Default)]
struct Parts {
    head: Vec<u8>,
    directory: Vec<u8>,
    body: Vec<u8>,
}

thread_local! {
    static PARTS: RefCell<Parts> = RefCell::default();
}

/// `record.as_marc()`, including its update of leader position 9, or `None` to let Python do it.
pub(crate) fn as_marc<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let builder = Builder::get(py)?;
    PARTS.with(|cell| {
        // Serialising may call back into Python (building a lazy record's fields), which could
        // serialise another record on this thread: then this call uses fresh buffers.
        let mut fresh = Parts::default();
        let mut reused = cell.try_borrow_mut();
        let parts = match &mut reused {
            Ok(parts) => &mut **parts,
            Err(_) => &mut fresh,
        };
        parts.head.clear();
        parts.directory.clear();
        parts.body.clear();
        if serialise(record, builder, parts)?.is_none() {
            return Ok(None);
        }
        let len = parts.head.len() + parts.directory.len() + parts.body.len();
        PyBytes::new_with(py, len, |out| {
            let (head, rest) = out.split_at_mut(parts.head.len());
            let (directory, body) = rest.split_at_mut(parts.directory.len());
            head.copy_from_slice(&parts.head);
            directory.copy_from_slice(&parts.directory);
            body.copy_from_slice(&parts.body);
            Ok(())
        })
        .map(Some)
    })
}

/// Fills `parts` with `record.as_marc()`; `None` (and `parts` partly filled) if Python must do it.
fn serialise(
    record: &Bound<'_, PyAny>,
    builder: &Builder,
    parts: &mut Parts,
) -> PyResult<Option<()>> {
    let Parts {
        head: out,
        directory,
        body,
    } = parts;
    macro_rules! some {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let py = record.py();
    let classes = builder.classes();
    let leader = some!(builder.record_slot(record, RecordSlot::Leader)?);
    let text = some!(builder.leader_text(&leader)?);
    let text = some!(text.cast::<PyString>().ok()).to_str()?;
    if text.len() != LEADER_LEN || !text.is_ascii() {
        return Ok(None);
    }
    let mut leader_bytes: [u8; LEADER_LEN] = text.as_bytes().try_into().expect("checked length");
    // pymarc: `if self.to_unicode: self.leader.coding_scheme = "a"`.
    let to_unicode = some!(builder.record_slot(record, RecordSlot::ToUnicode)?);
    if to_unicode.is_truthy()? && leader_bytes[9] != b'a' {
        leader_bytes[9] = b'a';
        let updated = std::str::from_utf8(&leader_bytes).expect("ASCII");
        builder.set_leader_text(&leader, PyString::new(py, updated).into_any())?;
    }
    let force_utf8 = some!(builder.record_slot(record, RecordSlot::ForceUtf8)?);
    let latin1 = !(leader_bytes[9] == b'a' || force_utf8.is_truthy()?);
    let fields = match builder.record_slot(record, RecordSlot::Fields)? {
        Some(fields) => fields,
        // A `LazyRecord` whose fields were not used yet: its `fields` descriptor builds them.
        None => match record.getattr(pyo3::intern!(py, "fields")) {
            Ok(fields) => fields,
            Err(_) => return Ok(None),
        },
    };
    let fields = some!(fields.cast::<PyList>().ok());

    directory.reserve(fields.len() * 12 + 1);
    for field in fields.iter() {
        let (raw, [tag, data, indicators, subfields, control]) =
            some!(builder.field_slots(&field)?);
        let tag = some!(tag);
        let tag = some!(tag.cast::<PyString>().ok()).to_str()?;
        if tag.len() != 3 || !tag.is_ascii() {
            return Ok(None);
        }
        let control = some!(control);
        let start = body.len();
        if control.is_truthy()? {
            let data = some!(data);
            some!(if raw {
                push_bytes(body, &data)
            } else {
                push_text(body, &data, latin1)
            });
        } else {
            let indicators = some!(indicators);
            if !indicators.is_none() {
                if !is_exactly(&indicators, classes.indicators) {
                    return Ok(None);
                }
                let pair = indicators.cast::<PyTuple>()?;
                for i in 0..2 {
                    let ind = pair.get_borrowed_item(i)?;
                    some!(if raw {
                        push_ascii(body, &ind)
                    } else {
                        push_text(body, &ind, latin1)
                    });
                }
            }
            let subfields = some!(subfields);
            let subfields = some!(subfields.cast::<PyList>().ok());
            for sub in subfields.iter() {
                if !is_exactly(&sub, classes.subfield) {
                    return Ok(None);
                }
                let sub = sub.cast::<PyTuple>()?;
                let (code, value) = (sub.get_borrowed_item(0)?, sub.get_borrowed_item(1)?);
                body.push(SUBFIELD_INDICATOR);
                some!(if raw {
                    push_ascii(body, &code).and_then(|()| push_bytes(body, &value))
                } else {
                    push_text(body, &code, latin1).and_then(|()| push_text(body, &value, latin1))
                });
            }
        }
        body.push(END_OF_FIELD);
        let length = body.len() - start;
        if length > MAX_FIELD_LENGTH {
            return Err(TooLong::Field {
                tag: tag.to_owned(),
                length,
            }
            .into_pyerr(py));
        }
        directory.extend_from_slice(tag.as_bytes());
        push_number(directory, body.len() - start, 4);
        push_number(directory, start, 5);
    }
    directory.push(END_OF_FIELD);
    body.push(END_OF_RECORD);
    let base_address = LEADER_LEN + directory.len();
    let length = base_address + body.len();
    if length > MAX_RECORD_LENGTH {
        return Err(TooLong::Record { length }.into_pyerr(py));
    }
    push_number(out, length, 5);
    out.extend_from_slice(&leader_bytes[5..12]);
    push_number(out, base_address, 5);
    out.extend_from_slice(&leader_bytes[17..]);
    Ok(Some(()))
}

/// The longest record the leader's five digits can give the length of.
const MAX_RECORD_LENGTH: usize = 99_999;
/// The longest field a directory entry's four digits can give the length of.
const MAX_FIELD_LENGTH: usize = 9_999;

/// A record transmission format cannot hold (pymarc writes it anyway, with a broken leader or
/// directory, and reading it back fails).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TooLong {
    Record { length: usize },
    Field { tag: String, length: usize },
}

impl TooLong {
    /// `gilkit_marc.exceptions.RecordTooLong` / `FieldTooLong`, made by the same Python helpers
    /// as the pure-Python serialiser's, so both paths raise the same message.
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let made = py
            .import("gilkit_marc.exceptions")
            .and_then(|m| match &self {
                TooLong::Record { length } => m.getattr("record_too_long")?.call1((*length,)),
                TooLong::Field { tag, length } => {
                    m.getattr("field_too_long")?.call1((tag.as_str(), *length))
                }
            });
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(err) => err,
        }
    }
}

/// Appends `n` zero-padded to `width` digits, wider if it needs more (Python's `f"{n:05d}"`).
fn push_number(out: &mut Vec<u8>, n: usize, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(len)));
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_number_pads_like_python() {
        for (n, width, expected) in [
            (0, 5, "00000"),
            (42, 4, "0042"),
            (123456, 5, "123456"),
            (9999, 4, "9999"),
        ] {
            let mut out = Vec::new();
            super::push_number(&mut out, n, width);
            assert_eq!(out, expected.as_bytes());
        }
    }
}
