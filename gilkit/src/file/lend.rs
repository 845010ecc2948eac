//! Lending Rust-owned memory to Python for one call (`readinto`, `write`) without copying.
//!
//! The bytes live in a `Vec<u8>` that Rust owns. To let Python fill it (`readinto`) or read it
//! (`write`), the vector is moved (three words, not the data) into a small Python object,
//! [`Lent`], that exports exactly the requested window of it through the buffer protocol, and a
//! `memoryview` of that object is passed to Python. After the call Rust takes the vector back.
//!
//! Python code may keep a view beyond the call (a buggy `readinto` that stores `b[:10]`). Every
//! view holds a strong reference to the exporting object, so the check is simple: when our
//! reference is the only one left, no view exists and the vector is ours again, to read and reuse
//! without the GIL. Otherwise the vector stays with the `Lent` object (freed when the last view
//! goes) and Rust continues with a copy. Memory is never freed or reused under a live view, and
//! never read without the GIL while Python could write to it.
//!
//! **`abi3` builds for Python < 3.11** cannot export a buffer from a Rust class (the buffer
//! protocol joined the stable ABI in 3.11). There [`with_lent`] copies the window into a
//! `bytearray` and passes a `memoryview` of that (and, for `readinto`, copies it back): the same
//! behaviour with one copy of each chunk more. Version-specific and `abi3-py311`+ builds do not copy.

#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
use std::ffi::c_int;
use std::ops::Range;

#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
use parking_lot::Mutex;
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
use pyo3::exceptions::PyBufferError;
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

/// A window of a Rust `Vec<u8>` exported to Python through the buffer protocol.
///
/// Only this module creates it; Python sees it only through a `memoryview`.
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
#[pyclass(frozen, module = "gilkit.file", name = "_LentBuffer")]
pub(crate) struct Lent {
    /// The vector. Its heap block never moves or shrinks while the object is shared with Python:
    /// Rust takes it out only when it holds the sole reference (see [`reclaim`]).
    data: Mutex<Vec<u8>>,
    window: Range<usize>,
    writable: bool,
}

#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
#[pymethods]
impl Lent {
    /// Exports `data[window]`.
    ///
    /// # Safety
    ///
    /// Called by CPython with a valid `view` to fill, per the buffer protocol.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("View is null"));
        }
        let lent = slf.get();
        if flags & ffi::PyBUF_WRITABLE != 0 && !lent.writable {
            return Err(PyBufferError::new_err("this buffer is read-only"));
        }
        let ptr = {
            let mut data = lent.data.lock();
            data[lent.window.clone()].as_mut_ptr()
        };
        let len = lent.window.len() as ffi::Py_ssize_t;
        // SAFETY: `view` is a valid `Py_buffer` to fill (buffer protocol). `ptr..ptr + len` is
        // inside the vector's heap block, which stays allocated and in place for as long as this
        // object lives: the vector is only taken out when no view (each of which holds a strong
        // reference to this object, set by `PyBuffer_FillInfo` in `view.obj`) remains. Python may
        // write to it only when `writable`, checked above and passed on as `readonly`.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr.cast(),
                len,
                c_int::from(!lent.writable),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(PyErr::fetch(slf.py()))
        }
    }
}

/// Lends `data[window]` to Python as a `memoryview` for the duration of `call`, then takes `data`
/// back (or, if Python kept a view, a copy of it). `data` is restored whatever `call` returns, so
/// bytes already in the buffer are never lost.
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
pub(crate) fn with_lent<'py, R>(
    py: Python<'py>,
    data: &mut Vec<u8>,
    window: Range<usize>,
    writable: bool,
    call: impl FnOnce(&Bound<'py, PyMemoryView>) -> PyResult<R>,
) -> PyResult<R> {
    debug_assert!(window.end <= data.len());
    // Created empty and filled after, so that a failed allocation cannot take the bytes with it.
    let lent = Bound::new(
        py,
        Lent {
            data: Mutex::new(Vec::new()),
            window,
            writable,
        },
    )?;
    *lent.get().data.lock() = std::mem::take(data);
    let result = PyMemoryView::from(lent.as_any()).and_then(|view| call(&view));
    *data = reclaim(lent);
    result
}

/// Takes the vector back from `lent`, once every `memoryview` Rust made of it was dropped.
///
/// Returns the vector itself when Python kept no reference, else a copy (the original then stays
/// alive with the views Python kept, and is freed with the last of them).
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
fn reclaim(lent: Bound<'_, Lent>) -> Vec<u8> {
    // SAFETY: `lent` is a valid object pointer while the GIL is held.
    if unsafe { ffi::Py_REFCNT(lent.as_ptr()) } == 1 {
        // Sole owner: no view exists and none can be made any more.
        std::mem::take(&mut *lent.get().data.lock())
    } else {
        // A view outlived the call. We hold the GIL, so no Python code writes to it while we copy
        // (C code that released the GIL while holding a stolen view could; that is its bug).
        lent.get().data.lock().clone()
    }
}

/// [`with_lent`] for `abi3` builds below Python 3.11: `data[window]` is copied into a
/// `bytearray`, Python sees a `memoryview` of it, and when `writable` the bytearray's bytes are
/// copied back into `data[window]` after the call (whatever it returned, so bytes a failing
/// `readinto` wrote are kept as the full-API version keeps them). GIL: held throughout.
#[cfg(all(Py_LIMITED_API, not(Py_3_11)))]
pub(crate) fn with_lent<'py, R>(
    py: Python<'py>,
    data: &mut Vec<u8>,
    window: Range<usize>,
    writable: bool,
    call: impl FnOnce(&Bound<'py, PyMemoryView>) -> PyResult<R>,
) -> PyResult<R> {
    use pyo3::types::PyByteArray;
    debug_assert!(window.end <= data.len());
    let array = PyByteArray::new(py, &data[window.clone()]);
    let view = PyMemoryView::from(array.as_any())?;
    let view = if writable {
        view
    } else {
        view.call_method0(pyo3::intern!(py, "toreadonly"))?
            .cast_into::<PyMemoryView>()?
    };
    let result = call(&view);
    drop(view);
    if writable {
        // A `readinto` that kept a view cannot have resized the bytearray (views pin its size);
        // one that resized it after releasing its views gets only the window's length copied.
        let filled = array.to_vec();
        let n = filled.len().min(window.len());
        data[window.start..window.start + n].copy_from_slice(&filled[..n]);
    }
    result
}
