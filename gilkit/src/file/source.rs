//! Where the bytes come from: a path, memory, a Python file object, or a Rust reader.
//!
//! See [`Source`] for which Python object becomes which kind of source and how each is read.
//! Text-mode files are refused; `None` from a non-blocking file object is waited on without spinning.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyString};

use sync_wrapper::SyncWrapper;

use super::lend;

/// What kind of input a [`Source`] reads; see [`Source`] for which Python objects become which
/// kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// A file opened by Rust from a path; read with no GIL at all. A path that is not a
    /// regular file (a FIFO, a terminal) is polled: waiting for its data lets Ctrl-C through.
    Path,
    /// Bytes already in memory.
    Memory,
    /// A regular file behind a Python file object, read through a duplicate descriptor without
    /// the GIL.
    FileDescriptor,
    /// A Python file-like object, read with `readinto` or `read` while holding the GIL.
    FileObject,
    /// A Rust `std::io::Read`; read without the GIL.
    Reader,
}

/// Input for a [`RecordReader`](super::RecordReader) or [`PyReader`](super::PyReader).
///
/// `bytes` are always data, never a path: pass `str` or `pathlib.Path` for paths.
///
/// [`Source::from_py`] turns whatever a Python user passed into one of these kinds:
///
/// | Python object | kind | how it is read |
/// |---|---|---|
/// | `str`, `os.PathLike` | [`SourceKind::Path`] | opened and read by Rust, GIL released; a FIFO or device is waited on as below |
/// | `bytes` | [`SourceKind::Memory`] | in place, no copy (bytes are immutable) |
/// | `bytearray`, `memoryview`, any buffer | [`SourceKind::Memory`] | one copy, GIL held |
/// | `open(p, 'rb')` (exactly `io.BufferedReader` over `io.FileIO`, or `io.FileIO`) on a regular file | [`SourceKind::FileDescriptor`] | `pread` on a duplicate of its descriptor, GIL released; after each refill the object is sought to where reading got to |
/// | any other object with `readinto` or `read` | [`SourceKind::FileObject`] | `readinto` into Rust memory (or `read`), GIL held |
///
/// Text-mode files (`io.TextIOBase`, or a `read` that returns `str`) are refused with a
/// `TypeError` that says to open the file in binary mode.
///
/// A file object whose `read`/`readinto` returns `None` (non-blocking, no data yet) is waited on
/// without spinning: `poll()` on its descriptor when it has one, else sleeps growing from 1 ms to
/// 50 ms; the GIL is released while waiting and signal handlers run between waits. A path that is
/// not a regular file (a FIFO, a terminal, `/dev/stdin` on a pipe) is opened non-blocking (so
/// opening a FIFO does not wait for a writer) and waited on the same way when it has no data, so
/// Ctrl-C interrupts a read that would otherwise block forever in the kernel.
///
/// Rust input: [`Source::open`], [`Source::from_vec`], [`Source::from_reader`].
///
/// # Examples
///
/// ```
/// use gilkit::file::{Source, SourceKind};
/// use pyo3::prelude::*;
///
/// Python::attach(|py| -> PyResult<()> {
///     let data = pyo3::types::PyBytes::new(py, b"a\nb\n");
///     assert_eq!(Source::from_py(data.as_any())?.kind(), SourceKind::Memory);
///     let file = py.import("io")?.getattr("BytesIO")?.call1((data,))?;
///     assert_eq!(Source::from_py(&file)?.kind(), SourceKind::FileObject);
///     Ok(())
/// })
/// .unwrap();
/// ```
pub struct Source {
    pub(crate) inner: Inner,
}

pub(crate) enum Inner {
    Bytes(BytesRef),
    Owned(Vec<u8>),
    Path(File),
    /// A path that is not a regular file, opened non-blocking: read only when `poll` says so.
    Stream(File),
    Fd(FdSource),
    FileObject(FileObject),
    /// Only ever used through `&mut`, so it need not be `Sync` for the source to be.
    Reader(SyncWrapper<Box<dyn Read + Send>>),
}

/// An immutable Python `bytes` object, readable without the GIL.
pub(crate) struct BytesRef {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr..ptr + len` is the content of the `bytes` object kept alive by `_owner`. A `bytes`
// object never changes after creation and its storage is inline in the object, which does not move,
// so the slice stays valid and unchanged on any thread, with or without the GIL, until `_owner` is
// dropped (and `Py` may be dropped on any thread).
unsafe impl Send for BytesRef {}
// SAFETY: as above; the only access is a shared `&[u8]`.
unsafe impl Sync for BytesRef {}

impl BytesRef {
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: valid, immutable memory owned by `_owner`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

pub(crate) struct FdSource {
    pub(crate) file: File,
    /// Where the next read starts; the Python object is told this position after each fill.
    pub(crate) pos: u64,
    /// The position last told to the Python object.
    pub(crate) synced: u64,
    pub(crate) obj: Py<PyAny>,
}

pub(crate) struct FileObject {
    pub(crate) obj: Py<PyAny>,
    pub(crate) method: ReadMethod,
    /// The object's descriptor, if it has one, to wait on when it returns `None`.
    pub(crate) fileno: Option<RawFd>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadMethod {
    ReadInto,
    Read,
}

/// The result of one attempt to read into a slice.
pub(crate) enum ReadStep {
    /// `n > 0` bytes were read.
    Data(usize),
    Eof,
    /// Non-blocking source with no data now.
    WouldBlock,
}

impl Source {
    /// Builds a source from any Python object (see the table in the [`Source`] docs).
    ///
    /// GIL: held. A path is opened with the GIL released.
    ///
    /// # Errors
    ///
    /// `TypeError` for a text-mode file or an object that is neither a path, a buffer nor a file
    /// object; `OSError` (with `filename`) when a path cannot be opened; the object's own exception
    /// when asking a plain binary file for its descriptor or position fails.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        Self::from_py_impl(obj, true)
    }

    /// Like [`from_py`](Self::from_py), but a Python file object is always read through its own
    /// `readinto`/`read`, never through its descriptor.
    ///
    /// # Errors
    ///
    /// As [`from_py`](Self::from_py).
    pub fn from_py_no_fd(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        Self::from_py_impl(obj, false)
    }

    fn from_py_impl(obj: &Bound<'_, PyAny>, allow_fd: bool) -> PyResult<Source> {
        let py = obj.py();
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            let data = bytes.as_bytes();
            let (ptr, len) = (data.as_ptr(), data.len());
            return Ok(Source {
                inner: Inner::Bytes(BytesRef {
                    _owner: bytes.clone().unbind(),
                    ptr,
                    len,
                }),
            });
        }
        if obj.is_instance_of::<PyString>() || obj.hasattr(intern!(py, "__fspath__"))? {
            let path = fspath(obj)?;
            return Source::open_detached(py, path);
        }
        let io = py.import(intern!(py, "io"))?;
        if obj.is_instance(&io.getattr(intern!(py, "TextIOBase"))?)? {
            return Err(text_mode_error(obj));
        }
        let has_readinto = obj.hasattr(intern!(py, "readinto"))?;
        if has_readinto || obj.hasattr(intern!(py, "read"))? {
            if allow_fd && let Some(fd) = FdSource::try_new(obj, &io)? {
                return Ok(Source {
                    inner: Inner::Fd(fd),
                });
            }
            let method = if has_readinto {
                ReadMethod::ReadInto
            } else {
                ReadMethod::Read
            };
            return Ok(Source {
                inner: Inner::FileObject(FileObject::new(obj, method)),
            });
        }
        if let Ok(bytearray) = obj.cast::<PyByteArray>() {
            return Ok(Source::from_vec(bytearray.to_vec()));
        }
        match buffer_bytes(obj)? {
            Some(bytes) => Ok(Source::from_vec(bytes)),
            None => Err(PyTypeError::new_err(format!(
                "expected a path (str or os.PathLike), a bytes-like object or a binary file object \
                 (with readinto() or read()), got {}",
                type_name(obj)
            ))),
        }
    }

    /// Opens `path` for reading, in Rust, with the GIL released.
    fn open_detached(py: Python<'_>, path: PathBuf) -> PyResult<Source> {
        crate::detach(py, || Source::open(&path)).map_err(|err| os_error(err, &path))
    }

    /// Opens a file by path; reads then need no GIL at all.
    ///
    /// The file is opened with `O_NONBLOCK`, which changes nothing for a regular file and keeps
    /// opening a FIFO from blocking until a writer comes; a path that is not a regular file is
    /// then read only when `poll` reports data (see [`Source`]).
    ///
    /// # Errors
    ///
    /// The error of opening the file.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Source> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let kind = file.metadata()?.file_type();
        let stream = kind.is_fifo() || kind.is_char_device() || kind.is_socket();
        Ok(Source {
            inner: if stream {
                Inner::Stream(file)
            } else {
                Inner::Path(file)
            },
        })
    }

    /// Bytes already in memory.
    pub fn from_vec(data: Vec<u8>) -> Source {
        Source {
            inner: Inner::Owned(data),
        }
    }

    /// Any Rust reader (a decompressor, a socket); read without the GIL.
    pub fn from_reader(reader: impl Read + Send + 'static) -> Source {
        Source {
            inner: Inner::Reader(SyncWrapper::new(Box::new(reader))),
        }
    }

    /// Which kind of input this is.
    pub fn kind(&self) -> SourceKind {
        match self.inner {
            Inner::Bytes(_) | Inner::Owned(_) => SourceKind::Memory,
            Inner::Path(_) | Inner::Stream(_) => SourceKind::Path,
            Inner::Fd(_) => SourceKind::FileDescriptor,
            Inner::FileObject(_) => SourceKind::FileObject,
            Inner::Reader(_) => SourceKind::Reader,
        }
    }

    /// Whether reading needs the GIL (only Python file objects do).
    pub(crate) fn needs_gil(&self) -> bool {
        matches!(self.inner, Inner::FileObject(_))
    }

    /// Reads into `buf` without Python. Only for the kinds that need no GIL.
    pub(crate) fn read_detached(&mut self, buf: &mut [u8]) -> io::Result<ReadStep> {
        let n = match &mut self.inner {
            Inner::Path(file) => retry_interrupted(|| file.read(buf))?,
            Inner::Stream(file) => {
                // Only read what is there: a FIFO nobody has written to yet reads as EOF when
                // non-blocking, but `poll` reports nothing until a writer writes or leaves.
                if !poll_ready(file.as_raw_fd()) {
                    return Ok(ReadStep::WouldBlock);
                }
                match retry_interrupted(|| file.read(buf)) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadStep::WouldBlock);
                    }
                    result => result?,
                }
            }
            Inner::Reader(reader) => retry_interrupted(|| reader.get_mut().read(buf))?,
            Inner::Fd(fd) => {
                let n = retry_interrupted(|| fd.file.read_at(buf, fd.pos))?;
                fd.pos += n as u64;
                n
            }
            Inner::Bytes(_) | Inner::Owned(_) | Inner::FileObject(_) => {
                unreachable!("read_detached on a source that is not read by Rust")
            }
        };
        Ok(if n == 0 {
            ReadStep::Eof
        } else {
            ReadStep::Data(n)
        })
    }

    /// The descriptor to wait on when [`read_detached`](Self::read_detached) would block (a path
    /// that is not a regular file).
    pub(crate) fn stream_fd(&self) -> Option<RawFd> {
        match &self.inner {
            Inner::Stream(file) => Some(file.as_raw_fd()),
            _ => None,
        }
    }

    /// Tells a descriptor-read Python object where reading has got to (GIL held). Counts the call.
    pub(crate) fn sync_position(&mut self, py: Python<'_>) -> PyResult<bool> {
        match &mut self.inner {
            Inner::Fd(fd) if fd.synced != fd.pos => {
                fd.obj
                    .bind(py)
                    .call_method1(intern!(py, "seek"), (fd.pos,))?;
                fd.synced = fd.pos;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl FdSource {
    /// The descriptor fast path, for exactly `io.FileIO` or `io.BufferedReader` over `io.FileIO`
    /// on a regular file opened for reading. Anything else (gzip, sockets, subclasses that may
    /// override `read`) goes through the object's own methods.
    fn try_new(obj: &Bound<'_, PyAny>, io: &Bound<'_, PyModule>) -> PyResult<Option<FdSource>> {
        let py = obj.py();
        let file_io = io.getattr(intern!(py, "FileIO"))?;
        let ty = obj.get_type();
        let plain = if ty.is(&file_io) {
            true
        } else if ty.is(&io.getattr(intern!(py, "BufferedReader"))?) {
            obj.getattr(intern!(py, "raw"))?.get_type().is(&file_io)
        } else {
            false
        };
        if !plain
            || obj.getattr(intern!(py, "closed"))?.is_truthy()?
            || !obj.call_method0(intern!(py, "readable"))?.is_truthy()?
        {
            return Ok(None);
        }
        let fd: RawFd = obj.call_method0(intern!(py, "fileno"))?.extract()?;
        // SAFETY: `fd` is the open descriptor of the (not closed) file object, which we hold and
        // which cannot be closed while we hold the GIL; it is borrowed only to duplicate it, and the
        // duplicate is ours to own.
        let file = File::from(unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?);
        if !file.metadata()?.file_type().is_file() {
            return Ok(None);
        }
        let pos: u64 = obj.call_method0(intern!(py, "tell"))?.extract()?;
        Ok(Some(FdSource {
            file,
            pos,
            synced: pos,
            obj: obj.clone().unbind(),
        }))
    }
}

impl FileObject {
    fn new(obj: &Bound<'_, PyAny>, method: ReadMethod) -> FileObject {
        let fileno = obj
            .call_method0(intern!(obj.py(), "fileno"))
            .and_then(|fd| fd.extract::<RawFd>())
            .ok();
        FileObject {
            obj: obj.clone().unbind(),
            method,
            fileno,
        }
    }

    /// One `readinto`/`read` call filling `data[window]`, GIL held. `data` is lent to Python for
    /// the call (see [`lend`]); on return it holds the bytes read at `window.start..`.
    pub(crate) fn read_once(
        &self,
        py: Python<'_>,
        data: &mut Vec<u8>,
        window: std::ops::Range<usize>,
    ) -> PyResult<ReadStep> {
        let obj = self.obj.bind(py);
        let want = window.len();
        let start = window.start;
        let n = match self.method {
            ReadMethod::ReadInto => {
                let result = lend::with_lent(py, data, window, true, |view| {
                    obj.call_method1(intern!(py, "readinto"), (view,))
                })?;
                if result.is_none() {
                    return Ok(ReadStep::WouldBlock);
                }
                let n: usize = result.extract().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "{}.readinto() returned {}, expected the number of bytes read (an int >= 0) or None",
                        type_name(obj),
                        type_name(&result)
                    ))
                })?;
                if n > want {
                    return Err(PyValueError::new_err(format!(
                        "{}.readinto() returned {n} for a buffer of {want} bytes",
                        type_name(obj)
                    )));
                }
                n
            }
            ReadMethod::Read => {
                let result = obj.call_method1(intern!(py, "read"), (want,))?;
                if result.is_none() {
                    return Ok(ReadStep::WouldBlock);
                }
                let n = copy_read_result(obj, &result, &mut data[start..start + want])?;
                if n > want {
                    return Err(PyValueError::new_err(format!(
                        "{}.read({want}) returned {n} bytes, more than asked for",
                        type_name(obj)
                    )));
                }
                n
            }
        };
        Ok(if n == 0 {
            ReadStep::Eof
        } else {
            ReadStep::Data(n)
        })
    }
}

/// Copies what `read(n)` returned into `out`; returns its length (which may exceed `out.len()`,
/// in which case nothing is copied and the caller reports the error).
fn copy_read_result(
    obj: &Bound<'_, PyAny>,
    result: &Bound<'_, PyAny>,
    out: &mut [u8],
) -> PyResult<usize> {
    if let Ok(bytes) = result.cast::<PyBytes>() {
        let bytes = bytes.as_bytes();
        if bytes.len() <= out.len() {
            out[..bytes.len()].copy_from_slice(bytes);
        }
        return Ok(bytes.len());
    }
    if result.is_instance_of::<PyString>() {
        return Err(text_mode_error(obj));
    }
    #[cfg(any(not(Py_LIMITED_API), Py_3_11))]
    if let Ok(buffer) = pyo3::buffer::PyBuffer::<u8>::get(result) {
        let n = buffer.len_bytes();
        if n <= out.len() {
            buffer.copy_to_slice(result.py(), &mut out[..n])?;
        }
        return Ok(n);
    }
    #[cfg(all(Py_LIMITED_API, not(Py_3_11)))]
    if let Some(bytes) = buffer_bytes(result)? {
        if bytes.len() <= out.len() {
            out[..bytes.len()].copy_from_slice(&bytes);
        }
        return Ok(bytes.len());
    }
    Err(PyTypeError::new_err(format!(
        "{}.read() returned {}, expected bytes",
        type_name(obj),
        type_name(result)
    )))
}

/// Waits for a non-blocking file object to have data (or room), GIL released, then runs signal
/// handlers. `attempt` counts the `None`s in a row: sleeps grow from 1 ms to 50 ms.
pub(crate) fn wait_ready(
    py: Python<'_>,
    fileno: Option<RawFd>,
    for_write: bool,
    attempt: u32,
) -> PyResult<()> {
    let timeout = Duration::from_millis(1u64 << attempt.min(6)).min(Duration::from_millis(50));
    crate::detach(py, || match fileno {
        Some(fd) => {
            let mut pfd = libc::pollfd {
                fd,
                events: if for_write {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
            // Polling a descriptor that was closed meanwhile is harmless (POLLNVAL).
            unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        }
        None => std::thread::sleep(timeout),
    });
    py.check_signals()
}

/// Whether reading `fd` would not block now (data, end of file or an error to report).
fn poll_ready(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call; `fd` is
    // owned by the caller's open `File`. A zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    // An error of poll itself (EINTR, ENOMEM): let `read` run and report what it finds.
    ready != 0
}

fn retry_interrupted(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A copy of the bytes of any object that supports the buffer protocol (`memoryview`,
/// `array.array`, numpy arrays: the raw bytes, whatever the item type), or `None` for an object
/// that does not. GIL: held.
#[cfg(any(not(Py_LIMITED_API), Py_3_11))]
fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    let py = obj.py();
    if let Ok(buffer) = pyo3::buffer::PyBuffer::<u8>::get(obj) {
        return Ok(Some(buffer.to_vec(py)?));
    }
    // SAFETY: `obj` is a valid object pointer while the GIL is held.
    if unsafe { pyo3::ffi::PyObject_CheckBuffer(obj.as_ptr()) } == 0 {
        return Ok(None);
    }
    // A buffer of other items (array('i'), numpy): view its bytes.
    let view = py
        .import(intern!(py, "builtins"))?
        .getattr(intern!(py, "memoryview"))?
        .call1((obj,))?
        .call_method1(intern!(py, "cast"), ("B",))?;
    let buffer = pyo3::buffer::PyBuffer::<u8>::get(&view)?;
    Ok(Some(buffer.to_vec(py)?))
}

/// [`buffer_bytes`] for `abi3` builds below Python 3.11, where the buffer API is not in the
/// stable ABI: `memoryview(obj).tobytes()`, a `TypeError` from `memoryview` meaning "not a
/// buffer". The same bytes, through one more Python call. GIL: held.
#[cfg(all(Py_LIMITED_API, not(Py_3_11)))]
fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    let py = obj.py();
    let view = match py
        .import(intern!(py, "builtins"))?
        .getattr(intern!(py, "memoryview"))?
        .call1((obj,))
    {
        Ok(view) => view,
        Err(e) if e.is_instance_of::<PyTypeError>(py) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = view.call_method0(intern!(py, "tobytes"))?;
    Ok(Some(bytes.cast::<PyBytes>()?.as_bytes().to_vec()))
}

fn fspath(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let py = obj.py();
    let path = py
        .import(intern!(py, "os"))?
        .call_method1(intern!(py, "fspath"), (obj,))?;
    if let Ok(bytes) = path.cast::<PyBytes>() {
        return Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes.as_bytes())));
    }
    path.extract()
}

/// `OSError(errno, strerror, filename)`: Python picks the subclass (`FileNotFoundError`, ...).
pub(crate) fn os_error(err: io::Error, path: &Path) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => {
            // Rust's message ends in " (os error N)"; Python's strerror does not.
            let message = io::Error::from_raw_os_error(errno).to_string();
            let strerror = message
                .split(" (os error")
                .next()
                .unwrap_or(&message)
                .to_owned();
            pyo3::exceptions::PyOSError::new_err((errno, strerror, path.as_os_str().to_owned()))
        }
        None => pyo3::exceptions::PyOSError::new_err(format!("{}: {err}", path.display())),
    }
}

pub(crate) fn text_mode_error(obj: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{} is a text-mode file; open it in binary mode (open(path, 'rb')) or pass its path",
        type_name(obj)
    ))
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}
