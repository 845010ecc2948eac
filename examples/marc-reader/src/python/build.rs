//! Phase 3: turning parsed records into `gilkit_marc`'s Python objects, fast (GIL held).
//!
//! The Python classes (`Record`, `Field`, `RawField`, `Leader`, `Subfield`, `Indicators`) are
//! plain Python classes with `__slots__`, so they behave exactly like pymarc's. Calling them from
//! Rust would run their `__init__` in the interpreter for every field, which costs more than all of
//! the parsing. Instead this module does what `object.__new__` plus slot assignment does, without
//! the interpreter:
//! - an instance is allocated with the class's own `tp_alloc` (what `object.__new__` calls);
//! - each slot is written at the offset its member descriptor (`Field.tag`, ...) records, looked
//!   up once per class when the builder is created. If a name is not a plain object slot (someone
//!   replaced a class attribute), that slot falls back to `setattr`, which is slower but equal.
//! - `Subfield` and `Indicators` are tuple subclasses: allocated with `tp_alloc(cls, 2)` and filled
//!   like `tuple.__new__` fills them.
//!
//! The serialiser ([`super::write`]) reads the same slots back the same way, for exact instances
//! of these classes only.
//!
//! Small immutable values are shared rather than rebuilt: one-character subfield codes, numeric
//! tags, and `Indicators` pairs are cached per interpreter (they are immutable `str`/tuples, so
//! sharing is invisible, as for CPython's own small-string cache).
//!
//! Everything here holds the GIL: a `Python<'py>` token is required by every function.

use std::ops::Range;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyType};

use super::lazy::LazyFields;
use crate::parse::{self, FieldKind};

/// Where a slot is written.
enum Slot {
    /// Byte offset of a `T_OBJECT_EX` member slot in the instance.
    Offset(isize),
    /// Not a plain slot: assign with `setattr`.
    Name(Py<PyString>),
}

impl Slot {
    /// Looks `name` up on `cls` and records the slot's offset if it is a plain object slot.
    fn resolve(cls: &Bound<'_, PyType>, name: &str) -> PyResult<Self> {
        let py = cls.py();
        let descriptor = cls.getattr(name)?;
        let ptr = descriptor.as_ptr();
        // SAFETY: `ptr` is a live object (we hold `descriptor`). Its type is compared with the
        // member-descriptor type before the cast, so the cast reads a `PyMemberDescrObject`, whose
        // `d_member` points to the class's `PyMemberDef` (kept alive by the class, which outlives
        // the builder: the builder holds a strong reference to it).
        unsafe {
            if ffi::Py_TYPE(ptr) == &raw mut ffi::PyMemberDescr_Type {
                let member = (*ptr.cast::<ffi::PyMemberDescrObject>()).d_member;
                if !member.is_null()
                    && (*member).type_code == ffi::Py_T_OBJECT_EX
                    && (*member).flags & ffi::Py_READONLY == 0
                {
                    return Ok(Slot::Offset((*member).offset));
                }
            }
        }
        Ok(Slot::Name(PyString::intern(py, name).unbind()))
    }

    /// Stores `value` (an owned reference, consumed) in the slot of the fresh object `obj`.
    ///
    /// # Safety
    ///
    /// `obj` must be a freshly allocated instance of the class this slot was resolved on (so an
    /// `Offset` slot is inside it and still NULL), and `value` an owned, non-null reference.
    unsafe fn write(
        &self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        value: *mut ffi::PyObject,
    ) -> PyResult<()> {
        match self {
            Slot::Offset(offset) => {
                // SAFETY: per this function's contract the slot lies inside `obj` and is NULL, so
                // storing the owned reference transfers it to the object without leaking another.
                unsafe {
                    *obj.cast::<u8>()
                        .offset(*offset)
                        .cast::<*mut ffi::PyObject>() = value
                };
                Ok(())
            }
            Slot::Name(name) => {
                // SAFETY: all three pointers are live; `value` is released after the call, which
                // took its own reference if it kept the value.
                let rc = unsafe { ffi::PyObject_SetAttr(obj, name.as_ptr(), value) };
                // SAFETY: `value` is an owned reference we no longer use.
                unsafe { ffi::Py_DECREF(value) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(PyErr::fetch(py))
                }
            }
        }
    }

    /// The value in the slot of `obj`, `None` if the slot is unset.
    ///
    /// # Safety
    ///
    /// `obj` must be an instance of exactly the class this slot was resolved on.
    unsafe fn read<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self {
            Slot::Offset(offset) => {
                // SAFETY: per the contract the slot lies inside `obj`; it holds NULL or a
                // reference owned by `obj`, which we borrow (and then own a new reference to).
                let ptr = unsafe {
                    *obj.as_ptr()
                        .cast::<u8>()
                        .offset(*offset)
                        .cast::<*mut ffi::PyObject>()
                };
                // SAFETY: `ptr` is NULL or a live object kept alive by `obj`.
                Ok((!ptr.is_null()).then(|| unsafe { Bound::from_borrowed_ptr(obj.py(), ptr) }))
            }
            Slot::Name(name) => match obj.getattr(name.bind(obj.py())) {
                Ok(value) => Ok(Some(value)),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(obj.py()) => {
                    Ok(None)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Empties the slot of `obj` (as `del obj.name`); `AttributeError` if it was empty.
    ///
    /// # Safety
    ///
    /// `obj` must be an instance of the class this slot was resolved on (or of a subclass).
    unsafe fn clear(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        match self {
            Slot::Offset(offset) => {
                // SAFETY: per the contract the slot lies inside `obj`; we take the reference it
                // owned, if any, and release it below.
                let old = unsafe {
                    let slot = obj
                        .as_ptr()
                        .cast::<u8>()
                        .offset(*offset)
                        .cast::<*mut ffi::PyObject>();
                    std::mem::replace(&mut *slot, std::ptr::null_mut())
                };
                if old.is_null() {
                    return Err(pyo3::exceptions::PyAttributeError::new_err("fields"));
                }
                // SAFETY: `old` is the owned reference the slot held.
                unsafe { ffi::Py_DECREF(old) };
                Ok(())
            }
            Slot::Name(name) => obj.delattr(name.bind(obj.py())),
        }
    }

    /// Replaces the value in the slot of `obj` with `value`.
    ///
    /// # Safety
    ///
    /// `obj` must be an instance of exactly the class this slot was resolved on.
    unsafe fn replace(&self, obj: &Bound<'_, PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
        match self {
            Slot::Offset(offset) => {
                // SAFETY: per the contract the slot lies inside `obj`; we swap in an owned
                // reference and release the one the slot held (NULL-safe), as `member_set` does.
                unsafe {
                    let slot = obj
                        .as_ptr()
                        .cast::<u8>()
                        .offset(*offset)
                        .cast::<*mut ffi::PyObject>();
                    let old = std::mem::replace(&mut *slot, value.into_ptr());
                    ffi::Py_XDECREF(old);
                }
                Ok(())
            }
            Slot::Name(name) => obj.setattr(name.bind(obj.py()), value),
        }
    }
}

/// The classes a serialiser checks objects against (exact types only).
#[derive(Clone, Copy)]
pub(crate) struct Classes<'a> {
    pub(crate) subfield: &'a Py<PyType>,
    pub(crate) indicators: &'a Py<PyType>,
}

/// A field's slot values in [`FIELD_SLOTS`] order (`None`: unset).
pub(crate) type FieldValues<'py> = [Option<Bound<'py, PyAny>>; 5];

/// Index of a `Record` slot in [`RECORD_SLOTS`].
#[derive(Clone, Copy)]
pub(crate) enum RecordSlot {
    Leader = 0,
    Fields = 1,
    ForceUtf8 = 3,
    ToUnicode = 4,
}

/// The classes of `gilkit_marc` and their slot layout, resolved once per interpreter.
pub(crate) struct Builder {
    record: Py<PyType>,
    /// `LazyRecord` (a `Record` subclass) and its `_lazy` slot, for `lazy_fields`.
    lazy_record: Py<PyType>,
    lazy_slot: Slot,
    field: Py<PyType>,
    raw_field: Py<PyType>,
    leader: Py<PyType>,
    subfield: Py<PyType>,
    indicators: Py<PyType>,
    /// `Subfield`s have no `__dict__`, so one holding only `str`/`bytes` can be untracked by the
    /// cycle collector, as CPython untracks plain tuples of atoms.
    untrack_subfields: bool,
    record_slots: [Slot; 6],
    field_slots: [Slot; 5],
    raw_field_slots: [Slot; 5],
    leader_slot: Slot,
    /// One-character strings for ASCII codes and indicators.
    chars: Vec<Py<PyString>>,
    /// `"000"`..`"999"`, created on first use.
    numeric_tags: Vec<PyOnceLock<Py<PyString>>>,
    /// `Indicators(a, b)` for ASCII `a`, `b`, created on first use (index `a * 128 + b`).
    indicator_pairs: Vec<PyOnceLock<Py<PyAny>>>,
    zero: Py<PyAny>,
}

static BUILDER: PyOnceLock<Builder> = PyOnceLock::new();

const RECORD_SLOTS: [&str; 6] = [
    "leader",
    "fields",
    "pos",
    "force_utf8",
    "to_unicode",
    "_Record__pos",
];
const FIELD_SLOTS: [&str; 5] = ["tag", "data", "_indicators", "subfields", "control_field"];

impl Builder {
    /// The builder for this interpreter (imports `gilkit_marc.record` on first use).
    pub(crate) fn get(py: Python<'_>) -> PyResult<&Builder> {
        BUILDER.get_or_try_init(py, || Builder::new(py))
    }

    fn new(py: Python<'_>) -> PyResult<Self> {
        let record_mod = py.import("gilkit_marc.record")?;
        let field_mod = py.import("gilkit_marc.field")?;
        let leader_mod = py.import("gilkit_marc.leader")?;
        let record = class(&record_mod, "Record")?;
        let lazy_record = class(&record_mod, "LazyRecord")?;
        let field = class(&field_mod, "Field")?;
        let raw_field = class(&field_mod, "RawField")?;
        let leader = class(&leader_mod, "Leader")?;
        let subfield = class(&field_mod, "Subfield")?;
        let indicators = class(&field_mod, "Indicators")?;
        for tuple_class in [&subfield, &indicators] {
            if !tuple_class.is_subclass_of::<pyo3::types::PyTuple>()? {
                return Err(PyTypeError::new_err(
                    "gilkit_marc: Subfield and Indicators must be tuples",
                ));
            }
        }
        let slots = |cls: &Bound<'_, PyType>, names: &[&str]| -> PyResult<Vec<Slot>> {
            names.iter().map(|n| Slot::resolve(cls, n)).collect()
        };
        // SAFETY: `subfield` is a live type object; reading its `tp_dictoffset` field.
        let untrack_subfields =
            unsafe { (*subfield.as_ptr().cast::<ffi::PyTypeObject>()).tp_dictoffset == 0 };
        let chars = (0u8..128)
            .map(|b| PyString::new(py, char::from(b).encode_utf8(&mut [0; 4])).unbind())
            .collect();
        Ok(Self {
            record_slots: into_array(slots(&record, &RECORD_SLOTS)?)?,
            field_slots: into_array(slots(&field, &FIELD_SLOTS)?)?,
            raw_field_slots: into_array(slots(&raw_field, &FIELD_SLOTS)?)?,
            leader_slot: Slot::resolve(&leader, "leader")?,
            lazy_slot: Slot::resolve(&lazy_record, "_lazy")?,
            lazy_record: lazy_record.unbind(),
            record: record.unbind(),
            field: field.unbind(),
            raw_field: raw_field.unbind(),
            leader: leader.unbind(),
            subfield: subfield.unbind(),
            indicators: indicators.unbind(),
            untrack_subfields,
            chars,
            numeric_tags: (0..1000).map(|_| PyOnceLock::new()).collect(),
            indicator_pairs: (0..128 * 128).map(|_| PyOnceLock::new()).collect(),
            zero: 0i32.into_pyobject(py)?.into_any().unbind(),
        })
    }

    /// A `Record` equal to what `Record(chunk, to_unicode=..., force_utf8=...)` builds; with
    /// `lazy`, its fields are built when first used (see [`super::lazy`]).
    pub(crate) fn record<'py>(
        &self,
        py: Python<'py>,
        rec: parse::Record,
        to_unicode: bool,
        force_utf8: bool,
        lazy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let leader = self.leader(py, &rec)?;
        // A lazy record needs `Record.fields` to be a plain slot (it always is, unless replaced).
        let lazy = lazy
            && matches!(
                self.record_slots[RecordSlot::Fields as usize],
                Slot::Offset(_)
            );
        let (obj, fields) = if lazy {
            let obj = alloc(py, &self.lazy_record, 0)?;
            let parsed = Bound::new(py, LazyFields::new(rec, to_unicode))?;
            // SAFETY: `obj` is a fresh `LazyRecord`, the class the slot was resolved on; owned value.
            unsafe {
                self.lazy_slot
                    .write(py, obj.as_ptr(), parsed.into_any().into_ptr())?
            };
            // The `fields` slot stays empty until `LazyRecord.fields` builds the list.
            (obj, std::ptr::null_mut())
        } else {
            let fields = self.fields(py, &rec, to_unicode)?;
            (alloc(py, &self.record, 0)?, fields.into_ptr())
        };
        let values = [
            leader.into_ptr(),
            fields,
            self.zero.clone_ref(py).into_ptr(),
            py_bool(force_utf8),
            py_bool(to_unicode),
            self.zero.clone_ref(py).into_ptr(),
        ];
        for (slot, value) in self.record_slots.iter().zip(values) {
            if value.is_null() {
                continue;
            }
            // SAFETY: `obj` is a fresh `Record` or `LazyRecord` (whose base slots sit where they
            // do in `Record`), the slots were resolved on `Record`, and every value is owned.
            unsafe { slot.write(py, obj.as_ptr(), value)? };
        }
        Ok(obj)
    }

    /// `Leader(rec.leader)`.
    pub(crate) fn leader<'py>(
        &self,
        py: Python<'py>,
        rec: &parse::Record,
    ) -> PyResult<Bound<'py, PyAny>> {
        let text = std::str::from_utf8(&rec.leader)
            .map_err(|_| PyTypeError::new_err("leader is not ASCII"))?;
        let obj = alloc(py, &self.leader, 0)?;
        // SAFETY: fresh `Leader`, slot resolved on `Leader`, owned value.
        unsafe {
            self.leader_slot
                .write(py, obj.as_ptr(), PyString::new(py, text).into_ptr())?
        };
        Ok(obj)
    }

    /// The list of `Field`s (or `RawField`s when not `to_unicode`).
    pub(crate) fn fields<'py>(
        &self,
        py: Python<'py>,
        rec: &parse::Record,
        to_unicode: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = new_list(py, rec.fields.len())?;
        for i in 0..rec.fields.len() {
            let obj = self.field(py, rec, i, to_unicode)?;
            // SAFETY: `list` is fresh with `rec.fields.len()` NULL items; `i` is in range.
            unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, obj.into_ptr()) };
        }
        Ok(list)
    }

    /// Field `index` of `rec`: a `Field` (or a `RawField` when not `to_unicode`).
    #[inline]
    pub(crate) fn field<'py>(
        &self,
        py: Python<'py>,
        rec: &parse::Record,
        index: usize,
        to_unicode: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (class, slots) = if to_unicode {
            (&self.field, &self.field_slots)
        } else {
            (&self.raw_field, &self.raw_field_slots)
        };
        let field = &rec.fields[index];
        let obj = alloc(py, class, 0)?;
        let tag = self.tag(py, &field.tag);
        let (data, indicators, subfields, control) = match &field.kind {
            FieldKind::Control(span) => (
                self.value(py, rec, span, to_unicode)?,
                py.None(),
                PyList::empty(py).into_any().unbind(),
                true,
            ),
            FieldKind::Data {
                indicators,
                subfields,
            } => {
                let list = self.subfields(py, rec, subfields.clone(), to_unicode)?;
                (
                    py.None(),
                    self.indicators(py, *indicators)?,
                    list.into_any().unbind(),
                    false,
                )
            }
        };
        let values = [
            tag.into_ptr(),
            data.into_ptr(),
            indicators.into_ptr(),
            subfields.into_ptr(),
            py_bool(control),
        ];
        for (slot, value) in slots.iter().zip(values) {
            // SAFETY: fresh instance of `class`, whose slots are `slots`; owned values.
            unsafe { slot.write(py, obj.as_ptr(), value)? };
        }
        Ok(obj)
    }

    fn subfields<'py>(
        &self,
        py: Python<'py>,
        rec: &parse::Record,
        range: Range<usize>,
        to_unicode: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = new_list(py, range.len())?;
        for (i, sub) in rec.subfields[range].iter().enumerate() {
            let code = self.chars[usize::from(sub.code & 0x7F)]
                .clone_ref(py)
                .into_any();
            let value = self.value(py, rec, &sub.value, to_unicode)?;
            let tuple = tuple2(py, &self.subfield, code, value)?;
            if self.untrack_subfields {
                // SAFETY: `tuple` is a live GC object we own. It holds two `str` (or `bytes`)
                // objects and has no `__dict__`, so it can never be part of a reference cycle:
                // untracking it is what CPython's collector does to such plain tuples. Its
                // deallocator untracks only if tracked.
                unsafe { ffi::PyObject_GC_UnTrack(tuple.as_ptr().cast()) };
            }
            // SAFETY: `list` is fresh with `range.len()` NULL items; `i` is in range.
            unsafe { ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, tuple.into_ptr()) };
        }
        Ok(list)
    }

    fn indicators(&self, py: Python<'_>, pair: [u8; 2]) -> PyResult<Py<PyAny>> {
        let index = usize::from(pair[0] & 0x7F) * 128 + usize::from(pair[1] & 0x7F);
        let cached = self.indicator_pairs[index].get_or_try_init(py, || {
            let a = self.chars[usize::from(pair[0] & 0x7F)]
                .clone_ref(py)
                .into_any();
            let b = self.chars[usize::from(pair[1] & 0x7F)]
                .clone_ref(py)
                .into_any();
            Ok::<_, PyErr>(tuple2(py, &self.indicators, a, b)?.unbind())
        })?;
        Ok(cached.clone_ref(py))
    }

    fn tag(&self, py: Python<'_>, tag: &[u8; 3]) -> Py<PyAny> {
        if tag.iter().all(u8::is_ascii_digit) {
            let n = tag
                .iter()
                .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            let s = self.numeric_tags[n].get_or_init(py, || PyString::new(py, ascii(tag)).unbind());
            return s.clone_ref(py).into_any();
        }
        PyString::new(py, ascii(tag)).into_any().unbind()
    }

    fn value(
        &self,
        py: Python<'_>,
        rec: &parse::Record,
        span: &Range<usize>,
        to_unicode: bool,
    ) -> PyResult<Py<PyAny>> {
        let bytes = rec.bytes(span);
        if !to_unicode {
            return Ok(pyo3::types::PyBytes::new(py, bytes).into_any().unbind());
        }
        if bytes.len() == 1 && bytes[0] < 0x80 {
            return Ok(self.chars[usize::from(bytes[0])].clone_ref(py).into_any());
        }
        if bytes.is_ascii() {
            // SAFETY: `PyUnicode_New(n, 127)` returns a compact ASCII string with room for `n`
            // one-byte characters (or NULL with an exception); we fill exactly `n` bytes of ASCII
            // before anyone else sees it.
            unsafe {
                let ptr = ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127);
                if !ptr.is_null() {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        ffi::PyUnicode_DATA(ptr).cast::<u8>(),
                        bytes.len(),
                    );
                }
                return Bound::from_owned_ptr_or_err(py, ptr).map(Bound::unbind);
            }
        }
        // SAFETY: `bytes` is a valid pointer/length pair; CPython validates the UTF-8 (the parser
        // only stores valid UTF-8 when decoding, so this does not fail in practice).
        unsafe {
            let ptr = ffi::PyUnicode_FromStringAndSize(
                bytes.as_ptr().cast(),
                bytes.len() as ffi::Py_ssize_t,
            );
            Bound::from_owned_ptr_or_err(py, ptr).map(Bound::unbind)
        }
    }

    /// A slot of `record`, if it is exactly a `Record` or a `LazyRecord` and the slot is set
    /// (a `LazyRecord`'s `fields` slot is empty until its fields are built).
    pub(crate) fn record_slot<'py>(
        &self,
        record: &Bound<'py, PyAny>,
        slot: RecordSlot,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !is_exactly(record, &self.record) && !is_exactly(record, &self.lazy_record) {
            return Ok(None);
        }
        // SAFETY: `record` is exactly a `Record`, the class the slot was resolved on, or a
        // `LazyRecord`, which adds a slot after `Record`'s and keeps theirs in place.
        unsafe { self.record_slots[slot as usize].read(record) }
    }

    /// The `fields` slot of `record` (a `LazyRecord`), `None` while empty.
    ///
    /// # Errors
    ///
    /// `TypeError` if `record` is not a `LazyRecord`.
    pub(crate) fn lazy_record_fields<'py>(
        &self,
        record: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let slot = self.lazy_record_fields_slot(record)?;
        // SAFETY: `record` is a `LazyRecord`, whose base slots sit where they do in `Record`.
        unsafe { slot.read(record) }
    }

    /// Stores `value` in the `fields` slot of `record` (a `LazyRecord`); `None` empties it
    /// (`AttributeError` if it was empty).
    ///
    /// # Errors
    ///
    /// `TypeError` if `record` is not a `LazyRecord`; `AttributeError` as said.
    pub(crate) fn set_lazy_record_fields(
        &self,
        record: &Bound<'_, PyAny>,
        value: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let slot = self.lazy_record_fields_slot(record)?;
        // SAFETY: as in `lazy_record_fields`.
        unsafe {
            match value {
                Some(value) => slot.replace(record, value),
                None => slot.clear(record),
            }
        }
    }

    /// The `_lazy` slot of `record` (a `LazyRecord`), `None` if unset.
    pub(crate) fn lazy_slot<'py>(
        &self,
        record: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.lazy_record_fields_slot(record)?;
        // SAFETY: `record` is a `LazyRecord` (or a subclass: same slot offsets).
        unsafe { self.lazy_slot.read(record) }
    }

    /// Sets the `_lazy` slot of `record` (a `LazyRecord`) to `None`.
    pub(crate) fn clear_lazy_slot(&self, record: &Bound<'_, PyAny>) -> PyResult<()> {
        self.lazy_record_fields_slot(record)?;
        // SAFETY: as in `lazy_slot`.
        unsafe {
            self.lazy_slot
                .replace(record, record.py().None().into_bound(record.py()))
        }
    }

    /// `Record`'s `fields` slot, after checking that `record` is a `LazyRecord` and that the slot
    /// is a plain one (the `LazyRecord.fields` descriptor would find itself otherwise).
    fn lazy_record_fields_slot(&self, record: &Bound<'_, PyAny>) -> PyResult<&Slot> {
        let slot = &self.record_slots[RecordSlot::Fields as usize];
        if record.is_instance(self.lazy_record.bind(record.py()))?
            && matches!(slot, Slot::Offset(_))
        {
            Ok(slot)
        } else {
            Err(PyTypeError::new_err(format!(
                "LazyRecord.fields needs a LazyRecord, not {}",
                record.get_type().name()?
            )))
        }
    }

    /// The slots of `field` (in `FIELD_SLOTS` order) and whether it is a `RawField`, if it is
    /// exactly a `Field` or a `RawField`.
    pub(crate) fn field_slots<'py>(
        &self,
        field: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(bool, FieldValues<'py>)>> {
        let ty = field.get_type().as_ptr();
        let (raw, slots) = if ty == self.field.as_ptr() {
            (false, &self.field_slots)
        } else if ty == self.raw_field.as_ptr() {
            (true, &self.raw_field_slots)
        } else {
            return Ok(None);
        };
        let mut values = [None, None, None, None, None];
        for (value, slot) in values.iter_mut().zip(slots) {
            // SAFETY: `field` is exactly the class `slots` were resolved on.
            *value = unsafe { slot.read(field)? };
        }
        Ok(Some((raw, values)))
    }

    /// `leader.leader`, if `leader` is exactly a `Leader` and the slot is set.
    pub(crate) fn leader_text<'py>(
        &self,
        leader: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if !is_exactly(leader, &self.leader) {
            return Ok(None);
        }
        // SAFETY: `leader` is exactly a `Leader`.
        unsafe { self.leader_slot.read(leader) }
    }

    /// Sets `leader.leader` (`leader` must be exactly a `Leader`; otherwise nothing happens).
    pub(crate) fn set_leader_text(
        &self,
        leader: &Bound<'_, PyAny>,
        text: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if !is_exactly(leader, &self.leader) {
            return Ok(());
        }
        // SAFETY: `leader` is exactly a `Leader`.
        unsafe { self.leader_slot.replace(leader, text) }
    }

    /// The classes, for exact type checks.
    pub(crate) fn classes(&self) -> Classes<'_> {
        Classes {
            subfield: &self.subfield,
            indicators: &self.indicators,
        }
    }

    /// The Python `Record` class (the slow path calls it).
    pub(crate) fn record_class<'py>(&self, py: Python<'py>) -> &Bound<'py, PyType> {
        self.record.bind(py)
    }
}

fn ascii(tag: &[u8; 3]) -> &str {
    // Tags come from the ASCII-checked directory.
    std::str::from_utf8(tag).unwrap_or("???")
}

fn py_bool(value: bool) -> *mut ffi::PyObject {
    // SAFETY: `Py_True`/`Py_False` are immortal-ish singletons; `Py_NewRef` returns a new reference.
    unsafe {
        ffi::Py_NewRef(if value {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        })
    }
}

/// A fresh, all-NULL-slots instance of `cls` (what `object.__new__(cls)` returns).
fn alloc<'py>(
    py: Python<'py>,
    cls: &Py<PyType>,
    items: ffi::Py_ssize_t,
) -> PyResult<Bound<'py, PyAny>> {
    let tp = cls.as_ptr().cast::<ffi::PyTypeObject>();
    // SAFETY: `tp` is a live type object (we hold it). Every heap type has `tp_alloc`
    // (`PyType_GenericAlloc` unless overridden), which returns a new reference or NULL with an
    // exception set.
    unsafe {
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        Bound::from_owned_ptr_or_err(py, alloc(tp, items))
    }
}

/// `cls((a, b))` for a tuple subclass `cls` without `__new__`'s interpreter round trip.
fn tuple2<'py>(
    py: Python<'py>,
    cls: &Py<PyType>,
    a: Py<PyAny>,
    b: Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let obj = alloc(py, cls, 2)?;
    // SAFETY: `obj` is a fresh instance of a tuple subclass with room for two items (checked in
    // `Builder::new` that the class is a tuple subclass); items are set once with owned references,
    // exactly as `tuple.__new__` does for subclasses.
    unsafe {
        ffi::PyTuple_SET_ITEM(obj.as_ptr(), 0, a.into_ptr());
        ffi::PyTuple_SET_ITEM(obj.as_ptr(), 1, b.into_ptr());
    }
    Ok(obj)
}

/// Writes pymarc's MARC-8 messages to `sys.stderr`, as pymarc does.
pub(crate) fn write_messages(py: Python<'_>, messages: &[String]) -> PyResult<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let stderr = py.import("sys")?.getattr("stderr")?;
    for message in messages {
        stderr.call_method1("write", (message,))?;
    }
    Ok(())
}

fn into_array<const N: usize>(slots: Vec<Slot>) -> PyResult<[Slot; N]> {
    slots
        .try_into()
        .map_err(|_| PyTypeError::new_err("gilkit_marc: unexpected slot count"))
}

fn class<'py>(module: &Bound<'py, PyModule>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(module.getattr(name)?.cast_into::<PyType>()?)
}

/// Whether `obj`'s type is exactly `cls` (no subclass).
pub(crate) fn is_exactly(obj: &Bound<'_, PyAny>, cls: &Py<PyType>) -> bool {
    obj.get_type().as_ptr() == cls.as_ptr()
}

/// A new list of `len` NULL items, to be filled with `PyList_SET_ITEM`.
fn new_list(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyList>> {
    // SAFETY: `PyList_New` returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyList_New(len as ffi::Py_ssize_t))
            .map(|l| l.cast_into_unchecked())
    }
}
