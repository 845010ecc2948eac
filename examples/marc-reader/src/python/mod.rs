//! The extension module `gilkit_marc._native`.
//!
//! `gilkit_marc`'s public API is Python (`python/gilkit_marc/`); this module provides the parts
//! that must be fast: the reader ([`reader`]), building Python objects ([`build`]), serialising
//! records ([`write`](mod@write)), MARC-8 decoding, and columns computed in Rust on several
//! threads ([`extract`](mod@extract), written to files by [`convert`](mod@convert)). See each function for what it does with the GIL.

mod build;
mod convert;
mod extract;
mod lazy;
mod position;
mod reader;
mod write;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::marc8;
use crate::parse;
use reader::PyOptions;

/// `(text, messages, ok, g0, g1)`: MARC-8 `data` decoded as pymarc does from the working sets
/// `g0`/`g1`, and the sets afterwards; `ok` is false where pymarc raises. Holds the GIL
/// (strings are short).
#[pyfunction]
#[pyo3(signature = (data, quiet, g0=0x42, g1=0x45))]
fn marc8_decode(
    data: &[u8],
    quiet: bool,
    g0: u32,
    g1: u32,
) -> (String, Vec<String>, bool, u32, u32) {
    let mut sets = marc8::Sets { g0, g1 };
    match marc8::decode_with(data, quiet, &mut sets) {
        Ok(d) => (d.text, d.messages, true, sets.g0, sets.g1),
        Err(e) => (String::new(), e.messages, false, sets.g0, sets.g1),
    }
}

/// [`marc8_decode`] for a `str` (pymarc decodes a `str` character by character and never sees an
/// escape sequence in it; see [`marc8::decode_str_with`]): `(text, messages, g0, g1)`. Holds the
/// GIL.
#[pyfunction]
#[pyo3(signature = (data, quiet, g0=0x42, g1=0x45))]
fn marc8_decode_str(data: &str, quiet: bool, g0: u32, g1: u32) -> (String, Vec<String>, u32, u32) {
    let mut sets = marc8::Sets { g0, g1 };
    let decoded = marc8::decode_str_with(data, quiet, &mut sets);
    (decoded.text, decoded.messages, sets.g0, sets.g1)
}

/// Fills `record` (a fresh `Record`) from transmission-format `data` if the Rust parser can
/// reproduce pymarc's result exactly; returns whether it did. Holds the GIL (one record).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn decode_into(
    py: Python<'_>,
    record: &Bound<'_, PyAny>,
    data: &[u8],
    to_unicode: bool,
    force_utf8: bool,
    hide_utf8_warnings: bool,
    utf8_handling: &str,
    file_encoding: &str,
) -> PyResult<bool> {
    let opts = PyOptions::new(
        to_unicode,
        force_utf8,
        hide_utf8_warnings,
        utf8_handling,
        file_encoding,
    )
    .resolve(py);
    let Ok(rec) = parse::parse(data, &opts) else {
        return Ok(false);
    };
    let builder = build::Builder::get(py)?;
    build::write_messages(py, &rec.messages)?;
    record.setattr("leader", builder.leader(py, &rec)?)?;
    let fields = record.getattr("fields")?;
    fields
        .cast::<PyList>()?
        .call_method1("extend", (builder.fields(py, &rec, to_unicode)?,))?;
    Ok(true)
}

/// `record.as_marc()` for plain records (leader position 9 updated as pymarc does), or `None`
/// when the Python serialiser must run (see [`write`](mod@write)). Holds the GIL.
#[pyfunction]
fn as_marc<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    write::as_marc(py, record)
}

/// Test hooks (beyond pymarc), only in a build with the cargo feature `test-hooks`
/// (`scripts/setup.sh` builds the development install so; a published wheel has none): read-ahead
/// workers made slow without relying on timing, a set number of cores, and the count of workers
/// running. Each holds the GIL.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use gilkit::batch::ordered::{self, test_hooks::WorkerMode};
    use pyo3::prelude::*;

    /// How many parse workers are running in this process (a reader dropped or closed mid-file
    /// must leave none).
    #[pyfunction]
    pub(super) fn _parse_jobs_running() -> usize {
        ordered::workers_running()
    }

    /// Makes the parse workers started from now on claim nothing (`"idle"`), hold their first
    /// part until the caller has claimed every other (`"lagging"`), or work normally
    /// (`"normal"`).
    ///
    /// # Errors
    /// `ValueError` for another mode.
    #[pyfunction]
    pub(super) fn _set_parse_worker_mode(mode: &str) -> PyResult<()> {
        let mode = match mode {
            "normal" => WorkerMode::Normal,
            "idle" => WorkerMode::Idle,
            "lagging" => WorkerMode::Lagging,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown parse worker mode {mode:?}: use 'normal', 'idle' or 'lagging'"
                )));
            }
        };
        ordered::test_hooks::set_worker_mode(mode);
        Ok(())
    }

    /// Makes read-ahead assume `cores` cores when deciding whether a batch gets a worker (0: as
    /// many as the system gives this process).
    #[pyfunction]
    pub(super) fn _set_parse_cores(cores: usize) {
        ordered::test_hooks::set_cores(cores);
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<reader::MarcReader>()?;
    m.add_class::<lazy::LazyFields>()?;
    m.add_class::<lazy::FieldsDescriptor>()?;
    m.add_function(wrap_pyfunction!(reader::read_all, m)?)?;
    m.add_class::<extract::Table>()?;
    m.add_function(wrap_pyfunction!(extract::extract, m)?)?;
    m.add_function(wrap_pyfunction!(convert::convert, m)?)?;
    m.add_function(wrap_pyfunction!(marc8_decode, m)?)?;
    m.add_function(wrap_pyfunction!(marc8_decode_str, m)?)?;
    m.add_function(wrap_pyfunction!(decode_into, m)?)?;
    m.add_function(wrap_pyfunction!(as_marc, m)?)?;
    #[cfg(feature = "test-hooks")]
    {
        m.add_function(wrap_pyfunction!(test_hooks::_parse_jobs_running, m)?)?;
        m.add_function(wrap_pyfunction!(test_hooks::_set_parse_worker_mode, m)?)?;
        m.add_function(wrap_pyfunction!(test_hooks::_set_parse_cores, m)?)?;
    }
    Ok(())
}
