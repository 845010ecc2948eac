//! Python's `int()` on the short ASCII numbers of a MARC leader and directory.
//!
//! pymarc reads lengths and offsets with `int(b"00123")` and `int("0042")`, so it accepts what
//! Python's integer literal parser accepts: surrounding ASCII whitespace (` \t\n\v\f\r`), one sign,
//! and single underscores between digits. A reader that wants pymarc's results must accept (and
//! reject) exactly the same strings; `tests::agrees_with_python_rules` pins the cases down.

/// Parses `s` as Python's `int(s)` does for ASCII text, or `None` where Python raises `ValueError`.
///
/// # Examples
///
/// ```
/// use gilkit_marc::pyint::parse;
///
/// assert_eq!(parse(b"00042"), Some(42));
/// assert_eq!(parse(b" +1_0 "), Some(10));
/// assert_eq!(parse(b"-0007"), Some(-7));
/// assert_eq!(parse(b"12a45"), None);
/// ```
pub fn parse(s: &[u8]) -> Option<i64> {
    // The usual case: nothing but digits (leaders and directories are zero-padded).
    if !s.is_empty() && s.len() <= 18 && s.iter().all(u8::is_ascii_digit) {
        return Some(s.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')));
    }
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
    let start = s.iter().position(|b| !is_space(b))?;
    let end = s.iter().rposition(|b| !is_space(b))? + 1;
    let mut body = &s[start..end];
    let negative = match body.first() {
        Some(b'-') => {
            body = &body[1..];
            true
        }
        Some(b'+') => {
            body = &body[1..];
            false
        }
        _ => false,
    };
    if body.is_empty() || body.first() == Some(&b'_') || body.last() == Some(&b'_') {
        return None;
    }
    let mut value: i64 = 0;
    let mut previous_underscore = false;
    for &b in body {
        match b {
            b'0'..=b'9' => {
                // Inputs are at most a few bytes; saturate rather than overflow on hostile data.
                value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
                previous_underscore = false;
            }
            b'_' if !previous_underscore => previous_underscore = true,
            _ => return None,
        }
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn agrees_with_python_rules() {
        let ok: &[(&[u8], i64)] = &[
            (b"00000", 0),
            (b"12345", 12345),
            (b" 12 ", 12),
            (b"\t\n\x0b\x0c\r7\r", 7),
            (b"+12", 12),
            (b"-12", -12),
            (b"-0", 0),
            (b"1_2", 12),
            (b"+1_2_3", 123),
        ];
        for (s, v) in ok {
            assert_eq!(parse(s), Some(*v), "{:?}", String::from_utf8_lossy(s));
        }
        let bad: &[&[u8]] = &[
            b"", b"   ", b"+", b"-", b"1__2", b"_12", b"12_", b"+-1", b"- 1", b"+_1", b"1 2",
            b"\x1c12", b"12\x1f", b"0x1f", b"1.0", b"\x0012",
        ];
        for s in bad {
            assert_eq!(parse(s), None, "{:?}", String::from_utf8_lossy(s));
        }
    }
}
