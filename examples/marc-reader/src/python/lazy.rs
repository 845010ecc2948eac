//! Lazy fields (`lazy_fields=True`): a record from the reader builds its `Field` objects when
//! they are first used.
//!
//! Most of reading time is building Python objects (a `Field` per field, a `Subfield` and a `str`
//! per subfield); a program that looks at a few fields of each record pays for all of them. With
//! `lazy_fields=True` the reader makes `LazyRecord`s (a `Record` subclass, `record.py`): the
//! `fields` slot is left empty and the parsed record goes into a [`LazyFields`] in the `_lazy`
//! slot. `LazyRecord.fields` is a data descriptor ([`FieldsDescriptor`]) that shadows `Record`'s
//! slot:
//!
//! - reading `record.fields` returns the slot's list; if the slot is empty it asks the
//!   `LazyFields` for the list (built once, reusing any field already built), stores it in the
//!   slot and drops the `LazyFields`. So `record.fields` is always the same plain, mutable
//!   `list`, and every change to it is seen by everything that reads it, as in pymarc;
//! - assigning or deleting `record.fields` writes or empties the slot;
//! - `get_fields(tag, ...)`, `get`, `record[tag]` and `tag in record` ask the `LazyFields`
//!   directly ([`LazyFields::select`]) while the list is not built: it builds only the fields
//!   with those tags and keeps them, so the same `Field` object comes back each time and later
//!   sits in `record.fields`. A field already built is matched by its current `tag` attribute
//!   (it may have been changed), one not yet built by its parsed tag, which nothing can change;
//! - everything else goes through `record.fields`; pickling and copying build the list first.
//!
//! Plain `Record`s are untouched: `fields` stays a slot that CPython reads at full speed. That is
//! why laziness is a subclass and opt-in: a descriptor costs a little on every `record.fields`,
//! which only pays off when most fields are never built.
//!
//! All of it runs with the GIL held.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::build::Builder;
use crate::parse;

/// A parsed record's fields, built into Python objects on demand (see the module docs).
#[pyclass(module = "gilkit_marc._native", name = "_LazyFields")]
pub(crate) struct LazyFields {
    /// The parsed record (emptied once the list is built).
    rec: parse::Record,
    to_unicode: bool,
    /// Fields built so far, by position.
    built: Vec<Option<Py<PyAny>>>,
    /// The full list, once built.
    list: Option<Py<PyList>>,
}

impl LazyFields {
    pub(crate) fn new(rec: parse::Record, to_unicode: bool) -> Self {
        LazyFields {
            built: Vec::new(),
            rec,
            to_unicode,
            list: None,
        }
    }

    /// The list of all fields, built (once) from the fields already built and the rest.
    fn list<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if let Some(list) = &self.list {
            return Ok(list.bind(py).clone());
        }
        let builder = Builder::get(py)?;
        let list = if self.built.is_empty() {
            builder.fields(py, &self.rec, self.to_unicode)?
        } else {
            let mut items = Vec::with_capacity(self.rec.fields.len());
            for i in 0..self.rec.fields.len() {
                items.push(match self.built[i].take() {
                    Some(field) => field.into_bound(py),
                    None => builder.field(py, &self.rec, i, self.to_unicode)?,
                });
            }
            PyList::new(py, items)?
        };
        self.list = Some(list.clone().unbind());
        // The parsed data is no longer needed.
        self.rec = parse::Record::default();
        self.built = Vec::new();
        Ok(list)
    }

    /// Field `i`, built now if it was not yet.
    fn field<'py>(&mut self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        if self.built.is_empty() {
            self.built.resize_with(self.rec.fields.len(), || None);
        }
        if let Some(field) = &self.built[i] {
            return Ok(field.bind(py).clone());
        }
        let field = Builder::get(py)?.field(py, &self.rec, i, self.to_unicode)?;
        self.built[i] = Some(field.clone().unbind());
        Ok(field)
    }

    /// Whether field `i` has a tag in `tags`: its current `tag` if built, else its parsed tag.
    fn matches(&self, py: Python<'_>, i: usize, tags: &[Bound<'_, PyString>]) -> PyResult<bool> {
        if let Some(Some(field)) = self.built.get(i) {
            let tag = field.bind(py).getattr(pyo3::intern!(py, "tag"))?;
            for wanted in tags {
                if tag.eq(wanted)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let parsed = &self.rec.fields[i].tag;
        Ok(tags
            .iter()
            .any(|t| t.to_str().is_ok_and(|t| t.as_bytes() == parsed)))
    }
}

#[pymethods]
impl LazyFields {
    /// The fields it holds, for the cycle collector (a field may end up referring to its record).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for field in self.built.iter().flatten() {
            visit.call(field)?;
        }
        if let Some(list) = &self.list {
            visit.call(list)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.built.clear();
        self.list = None;
    }

    /// The fields whose tag is one of `tags`, in order, building only those; at most `limit` of
    /// them if given. `None` (the caller then uses `record.fields`) once the full list exists, or
    /// if a tag is not a `str`.
    ///
    /// # Errors
    ///
    /// An exception from comparing a changed `tag` attribute.
    #[pyo3(signature = (tags, limit=None))]
    fn select<'py>(
        &mut self,
        py: Python<'py>,
        tags: &Bound<'py, PyTuple>,
        limit: Option<usize>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        if self.list.is_some() {
            return Ok(None);
        }
        let Ok(tags) = tags
            .iter()
            .map(|t| t.cast_into::<PyString>())
            .collect::<Result<Vec<_>, _>>()
        else {
            return Ok(None);
        };
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for i in 0..self.rec.fields.len() {
            if out.len() >= limit {
                break;
            }
            if self.matches(py, i, &tags)? {
                out.push(self.field(py, i)?);
            }
        }
        Ok(Some(PyList::new(py, out)?))
    }

    /// The list of all the record's fields, built once (reusing the fields already built).
    ///
    /// # Errors
    ///
    /// An exception from building a field (none in practice: the data was parsed already).
    fn fields<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.list(py)
    }
}

/// `LazyRecord.fields`: the record's list of fields, built on first use (see the module docs).
#[pyclass(module = "gilkit_marc._native", name = "_FieldsDescriptor", frozen)]
pub(crate) struct FieldsDescriptor;

#[pymethods]
impl FieldsDescriptor {
    #[new]
    fn new() -> Self {
        FieldsDescriptor
    }

    /// `record.fields`: the list, built now if not yet. On the class, the descriptor itself.
    ///
    /// # Errors
    ///
    /// `AttributeError` if unset (after `del record.fields`); `TypeError` on a non-`LazyRecord`.
    fn __get__<'py>(
        slf: &Bound<'py, Self>,
        record: Option<&Bound<'py, PyAny>>,
        _owner: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Some(record) = record.filter(|r| !r.is_none()) else {
            return Ok(slf.clone().into_any());
        };
        let py = record.py();
        let builder = Builder::get(py)?;
        if let Some(fields) = builder.lazy_record_fields(record)? {
            return Ok(fields);
        }
        let lazy = builder.lazy_slot(record)?;
        let Some(lazy) = lazy.as_ref().and_then(|l| l.cast::<LazyFields>().ok()) else {
            return Err(PyAttributeError::new_err(format!(
                "'{}' object has no attribute 'fields'",
                record.get_type().name()?
            )));
        };
        let list = lazy.borrow_mut().list(py)?.into_any();
        builder.set_lazy_record_fields(record, Some(list.clone()))?;
        builder.clear_lazy_slot(record)?;
        Ok(list)
    }

    /// `record.fields = value`.
    fn __set__(&self, record: &Bound<'_, PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let builder = Builder::get(record.py())?;
        builder.set_lazy_record_fields(record, Some(value))?;
        // A list set before the lazy one was built replaces it for good.
        builder.clear_lazy_slot(record)
    }

    /// `del record.fields`.
    fn __delete__(&self, record: &Bound<'_, PyAny>) -> PyResult<()> {
        let builder = Builder::get(record.py())?;
        let had_lazy = builder
            .lazy_slot(record)?
            .is_some_and(|l| l.is_instance_of::<LazyFields>());
        builder.clear_lazy_slot(record)?;
        match builder.set_lazy_record_fields(record, None) {
            // Deleting fields that were never built.
            Err(err) if had_lazy && err.is_instance_of::<PyAttributeError>(record.py()) => Ok(()),
            other => other,
        }
    }
}
