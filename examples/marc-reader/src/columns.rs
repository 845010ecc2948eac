//! Column specs for `extract`/`convert`: which values of a parsed record go in a column, computed
//! as pymarc's API computes them, without Python.
//!
//! A spec is one of:
//! - `"LDR"`: the leader (one value, `str(record.leader)`);
//! - a tag, `"245"`: every such field's `Field.value()` (a control field's data; a data field's
//!   subfield values, each stripped of whitespace, joined by one space);
//! - a tag and subfield codes, `"245$a"` or `"650$ax"`: every value of those subfields of every
//!   such field, in record order (`field.get_subfields("a", "x")` for each field of
//!   `record.get_fields("650")`); control fields have none.
//!
//! Values are the bytes [`crate::parse`] produced: UTF-8 text with `to_unicode`, raw bytes
//! without it (then `Field.value()` joins the subfields' `bytes.strip()`ped values with `b" "`;
//! pymarc's own `RawField.value()` raises `TypeError` there).

use std::fmt;

use crate::parse::{FieldKind, LEADER_LEN, Record};

/// What a column takes from each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// The leader.
    Leader,
    /// `Field.value()` of every field with the tag.
    Field([u8; 3]),
    /// The values of the subfields with these codes, of every field with the tag.
    Subfields([u8; 3], Vec<u8>),
}

/// One column: its name (the spec as given) and what it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    /// The spec as written, used as the column name.
    pub name: String,
    /// What it selects.
    pub select: Select,
}

/// A spec that is not one of the forms above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec as given.
    pub spec: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad field spec {:?}: use a tag (\"001\", \"245\": the field's value), a tag and \
             subfield codes (\"245$a\", \"650$ax\": those subfields' values) or \"LDR\" (the leader)",
            self.spec
        )
    }
}

impl std::error::Error for SpecError {}

impl ColumnSpec {
    /// Parses `"LDR"`, `"245"` or `"245$ab"`.
    ///
    /// # Errors
    ///
    /// [`SpecError`] for anything else: a tag that is not three ASCII letters or digits, no
    /// codes after `$`, a code that is not printable ASCII.
    ///
    /// # Examples
    ///
    /// ```
    /// use gilkit_marc::columns::{ColumnSpec, Select};
    ///
    /// assert_eq!(ColumnSpec::parse("245$a").unwrap().select, Select::Subfields(*b"245", b"a".to_vec()));
    /// assert!(ColumnSpec::parse("24$a").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<ColumnSpec, SpecError> {
        let error = || SpecError {
            spec: spec.to_owned(),
        };
        if spec == "LDR" {
            return Ok(ColumnSpec {
                name: spec.to_owned(),
                select: Select::Leader,
            });
        }
        let (tag, codes) = match spec.split_once('$') {
            Some((tag, codes)) => (tag, Some(codes)),
            None => (spec, None),
        };
        let tag: [u8; 3] = tag.as_bytes().try_into().map_err(|_| error())?;
        if !tag.iter().all(u8::is_ascii_alphanumeric) {
            return Err(error());
        }
        let select = match codes {
            None => Select::Field(tag),
            Some(codes) => {
                let codes = codes.as_bytes();
                if codes.is_empty() || !codes.iter().all(|c| c.is_ascii_graphic()) {
                    return Err(error());
                }
                Select::Subfields(tag, codes.to_vec())
            }
        };
        Ok(ColumnSpec {
            name: spec.to_owned(),
            select,
        })
    }

    /// Calls `emit` with each value of this column in `record`, in record order. `text`: the
    /// record was parsed with `to_unicode` (values are UTF-8 and stripped as `str.strip` does);
    /// `scratch` is reused for joined values.
    pub fn for_each_value(
        &self,
        record: &Record,
        text: bool,
        scratch: &mut Vec<u8>,
        mut emit: impl FnMut(&[u8]),
    ) {
        match &self.select {
            Select::Leader => emit(&record.leader[..LEADER_LEN]),
            Select::Field(tag) => {
                for field in record.fields.iter().filter(|f| &f.tag == tag) {
                    match &field.kind {
                        FieldKind::Control(span) => emit(record.bytes(span)),
                        FieldKind::Data { subfields, .. } => {
                            scratch.clear();
                            for (i, sub) in record.subfields[subfields.clone()].iter().enumerate() {
                                if i > 0 {
                                    scratch.push(b' ');
                                }
                                let value = record.bytes(&sub.value);
                                scratch.extend_from_slice(if text {
                                    strip_str(value)
                                } else {
                                    strip_bytes(value)
                                });
                            }
                            emit(scratch);
                        }
                    }
                }
            }
            Select::Subfields(tag, codes) => {
                for field in record.fields.iter().filter(|f| &f.tag == tag) {
                    if let FieldKind::Data { subfields, .. } = &field.kind {
                        for sub in &record.subfields[subfields.clone()] {
                            if codes.contains(&sub.code) {
                                emit(record.bytes(&sub.value));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the four information
/// separators U+001C..U+001F, which Python also counts as whitespace (bidirectional class B/S).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` on UTF-8 text (invalid UTF-8, which the parser never produces, is kept as is).
fn strip_str(value: &[u8]) -> &[u8] {
    match std::str::from_utf8(value) {
        Ok(s) => s.trim_matches(py_isspace).as_bytes(),
        Err(_) => value,
    }
}

/// `bytes.strip()`: ASCII whitespace (space, `\t`, `\n`, `\r`, `\x0b`, `\x0c`).
fn strip_bytes(value: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = value.iter().position(|b| !space(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Options, parse};

    const RECORD: &[u8] = b"00085     2200049   4500001000800000245002700008\x1eocm0001\x1e10\x1fa Title \x1fbsub\x1fa\x1c second\x1e\x1d";

    fn values(spec: &str) -> Vec<String> {
        let opts = Options {
            quiet: true,
            ..Options::default()
        };
        let record = parse(RECORD, &opts).unwrap();
        let mut out = Vec::new();
        ColumnSpec::parse(spec)
            .unwrap()
            .for_each_value(&record, true, &mut Vec::new(), |v| {
                out.push(String::from_utf8(v.to_vec()).unwrap())
            });
        out
    }

    #[test]
    fn specs_select_as_pymarc() {
        assert_eq!(values("001"), ["ocm0001"]);
        // MARC-8 text: the decoder drops the control character, as pymarc's does.
        assert_eq!(values("245$a"), [" Title ", " second"]);
        assert_eq!(values("245$ab"), [" Title ", "sub", " second"]);
        assert_eq!(values("245"), ["Title sub second"]);
        assert_eq!(values("001$a"), Vec::<String>::new());
        assert_eq!(values("500"), Vec::<String>::new());
        assert_eq!(values("LDR"), ["00085     2200049   4500"]);
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in [
            "", "24", "2451", "245$", "24$a", "$a", "2 5", "245$ a", "é45",
        ] {
            assert!(ColumnSpec::parse(spec).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn strip_matches_python() {
        assert_eq!(strip_bytes(b" \t a b \x0c"), b"a b");
        assert_eq!(strip_bytes(b"\x1c a"), b"\x1c a");
        assert_eq!(strip_bytes(b"   "), b"");
        assert_eq!(strip_str("\u{a0}\u{3000}x\u{1f}".as_bytes()), b"x");
    }
}
