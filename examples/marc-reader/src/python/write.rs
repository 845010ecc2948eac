//! `Record.as_marc()` in Rust: transmission format from the Python objects, byte for byte as pymarc.
//!
//! Only plain records take this path: exact `Record`/`Field`/`RawField`/`Subfield`/`Indicators`
//! instances holding `str` (or `bytes` in `RawField`s), three-character ASCII tags, and text the
//! target encoding can represent. Anything else returns `None` and `Record.as_marc` runs the
//! Python serialiser, which gives pymarc's result or pymarc's exception (a subclass overriding
//! `as_marc`, a `None` control field written as `"None"`, an unencodable character...).
//! Holds the GIL throughout (it reads Python objects).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple, PyType};

use super::build::{Builder, Classes};
use crate::parse::{END_OF_FIELD, END_OF_RECORD, LEADER_LEN};

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

/// `record.as_marc()` with leader position 9 already settled, or `None` to let Python do it.
pub(crate) fn as_marc<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
    encoding: &str,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let builder = Builder::get(py)?;
    let latin1 = match encoding {
        "utf-8" => false,
        "iso8859-1" => true,
        _ => return Ok(None),
    };
    if !is(&record.get_type(), classes_record(builder)) {
        return Ok(None);
    }
    Ok(serialise(record, builder, latin1)?.map(|bytes| PyBytes::new(py, &bytes)))
}

fn serialise(
    record: &Bound<'_, PyAny>,
    builder: &Builder,
    latin1: bool,
) -> PyResult<Option<Vec<u8>>> {
    let classes = builder.classes();
    let leader = record.getattr("leader")?;
    if !is(&leader.get_type(), classes.leader) {
        return Ok(None);
    }
    let leader = leader.getattr("leader")?;
    let Ok(leader) = leader.cast::<PyString>() else {
        return Ok(None);
    };
    let leader = leader.to_str()?;
    if leader.len() != LEADER_LEN || !leader.is_ascii() {
        return Ok(None);
    }
    let fields = record.getattr("fields")?;
    let Ok(fields) = fields.cast::<PyList>() else {
        return Ok(None);
    };

    let mut directory = Vec::with_capacity(fields.len() * 12 + 1);
    let mut body = Vec::new();
    for field in fields.iter() {
        let ty = field.get_type();
        let raw = is(&ty, classes.raw_field);
        if !raw && !is(&ty, classes.field) {
            return Ok(None);
        }
        let tag = field.getattr("tag")?;
        let Ok(tag) = tag.cast::<PyString>() else {
            return Ok(None);
        };
        let tag = tag.to_str()?;
        if tag.len() != 3 || !tag.is_ascii() {
            return Ok(None);
        }
        let control = field.getattr("control_field")?;
        let Ok(control) = control.cast::<PyBool>() else {
            return Ok(None);
        };
        let start = body.len();
        let ok = if control.is_true() {
            let data = field.getattr("data")?;
            if raw {
                push_bytes(&mut body, &data)
            } else {
                push_text(&mut body, &data, latin1)
            }
        } else {
            write_data_field(&field, &mut body, classes, raw, latin1)?
        };
        if ok.is_none() {
            return Ok(None);
        }
        body.push(END_OF_FIELD);
        directory.extend_from_slice(tag.as_bytes());
        directory.extend_from_slice(format!("{:04}{:05}", body.len() - start, start).as_bytes());
    }
    directory.push(END_OF_FIELD);
    body.push(END_OF_RECORD);
    let base_address = LEADER_LEN + directory.len();
    let mut out = Vec::with_capacity(base_address + body.len());
    out.extend_from_slice(format!("{:05}", base_address + body.len()).as_bytes());
    out.extend_from_slice(&leader.as_bytes()[5..12]);
    out.extend_from_slice(format!("{base_address:05}").as_bytes());
    out.extend_from_slice(&leader.as_bytes()[17..]);
    out.extend_from_slice(&directory);
    out.extend_from_slice(&body);
    Ok(Some(out))
}

fn write_data_field(
    field: &Bound<'_, PyAny>,
    body: &mut Vec<u8>,
    classes: Classes<'_>,
    raw: bool,
    latin1: bool,
) -> PyResult<Option<()>> {
    let indicators = field.getattr("_indicators")?;
    if !indicators.is_none() {
        if !is(&indicators.get_type(), classes.indicators) {
            return Ok(None);
        }
        let pair = indicators.cast::<PyTuple>()?;
        for i in 0..2 {
            let ind = pair.get_item(i)?;
            let done = if raw {
                push_ascii(body, &ind)
            } else {
                push_text(body, &ind, latin1)
            };
            if done.is_none() {
                return Ok(None);
            }
        }
    }
    let subfields = field.getattr("subfields")?;
    let Ok(subfields) = subfields.cast::<PyList>() else {
        return Ok(None);
    };
    for sub in subfields.iter() {
        if !is(&sub.get_type(), classes.subfield) {
            return Ok(None);
        }
        let sub = sub.cast::<PyTuple>()?;
        body.push(crate::parse::SUBFIELD_INDICATOR);
        let (code, value) = (sub.get_item(0)?, sub.get_item(1)?);
        let done = if raw {
            push_ascii(body, &code).and_then(|()| push_bytes(body, &value))
        } else {
            push_text(body, &code, latin1).and_then(|()| push_text(body, &value, latin1))
        };
        if done.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(()))
}

fn is(ty: &Bound<'_, PyType>, cls: &Py<PyType>) -> bool {
    ty.as_ptr() == cls.as_ptr()
}

fn classes_record(builder: &Builder) -> &Py<PyType> {
    builder.classes().record
}
