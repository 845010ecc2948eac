//! The file object's position, kept where pymarc leaves it: just after the record last read.
//!
//! gilkit's reader reads a file object a megabyte at a time, so without help `fh.tell()` would
//! report the end of the last chunk read, not the end of the last record returned. Code that
//! indexes MARC files by `fh.tell()` needs pymarc's answer, so after each record `MARCReader`
//! moves the position back to where that record ends (counted from the position the object had
//! when the reader was made):
//!
//! - **A regular file read through its descriptor** (`open(p, 'rb')`, gilkit's fast path): one
//!   `lseek` on a duplicate of the descriptor per record, no Python call. A duplicate shares the
//!   file offset with the original, and the object's `tell()` asks the descriptor (a
//!   `BufferedReader` asks its raw file whenever its buffer is empty, and gilkit's reader seeks
//!   the object after every refill, which empties it; the reader empties it once more here at the
//!   start, in case the caller had read from the object before).
//! - **Any other seekable file object** (`BytesIO`, ...): one `seek` call per record; before the
//!   next refill the object is sought back to where reading had got to, so no byte is read twice.
//! - Paths, `bytes` and unseekable objects (pipes, sockets) have no position to keep.
//!
//! The cost (measured in `benches/marc`, see `benches/results/marc.md`) is one system call or one
//! Python method call per record. Holds the GIL throughout (a per-record call, no release).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{BorrowedFd, RawFd};

use gilkit::file::SourceKind;
use pyo3::intern;
use pyo3::prelude::*;

/// Where a reader's file object stands, and how to move it.
pub(crate) struct Position {
    kind: Kind,
    /// The object's position when the reader was made: record offsets count from there.
    base: u64,
    /// Bytes of the records handed out so far.
    consumed: u64,
}

enum Kind {
    /// Nothing to keep (path, memory, unseekable object).
    None,
    /// Our duplicate of the object's descriptor; seeking it moves the object's offset.
    Descriptor(File),
    /// A seekable Python object, and where reading had got to (to go back to before refilling),
    /// if the reader has moved it since.
    Object {
        obj: Py<PyAny>,
        read_to: Option<u64>,
    },
}

impl Position {
    /// The position keeper for `obj`, read by gilkit as `kind`. GIL held.
    ///
    /// # Errors
    ///
    /// The object's exception if `fileno`, `tell` or `seek` fails on a plain binary file (gilkit
    /// already called them successfully to choose the descriptor path).
    pub(crate) fn new(obj: &Bound<'_, PyAny>, kind: SourceKind) -> PyResult<Position> {
        let py = obj.py();
        let none = Position {
            kind: Kind::None,
            base: 0,
            consumed: 0,
        };
        match kind {
            SourceKind::FileDescriptor => {
                let base: u64 = obj.call_method0(intern!(py, "tell"))?.extract()?;
                // Empty a BufferedReader's buffer (seeking from the end always does), so that its
                // `tell()` asks the descriptor from now on.
                obj.call_method1(intern!(py, "seek"), (0, 2))?;
                obj.call_method1(intern!(py, "seek"), (base,))?;
                let fd: RawFd = obj.call_method0(intern!(py, "fileno"))?.extract()?;
                // SAFETY: `fd` is the open descriptor of the file object, which the caller holds
                // and which cannot be closed while we hold the GIL; it is borrowed only to
                // duplicate it, and the duplicate is ours.
                let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
                Ok(Position {
                    kind: Kind::Descriptor(File::from(dup)),
                    base,
                    consumed: 0,
                })
            }
            SourceKind::FileObject => {
                let seekable = obj
                    .call_method0(intern!(py, "seekable"))
                    .and_then(|s| s.is_truthy())
                    .unwrap_or(false);
                let base = seekable
                    .then(|| {
                        obj.call_method0(intern!(py, "tell"))
                            .and_then(|p| p.extract())
                    })
                    .and_then(Result::ok);
                Ok(match base {
                    Some(base) => Position {
                        kind: Kind::Object {
                            obj: obj.clone().unbind(),
                            read_to: None,
                        },
                        base,
                        consumed: 0,
                    },
                    None => none,
                })
            }
            _ => Ok(none),
        }
    }

    /// Call before the reader reads from the object: puts it back where reading had got to.
    ///
    /// # Errors
    ///
    /// The object's `seek` exception: the reader must not read then (it would read bytes twice).
    pub(crate) fn before_read(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Kind::Object { obj, read_to } = &mut self.kind
            && let Some(to) = read_to.take()
        {
            obj.bind(py).call_method1(intern!(py, "seek"), (to,))?;
        }
        Ok(())
    }

    /// Call after each record handed out (also one yielded as `None`): `len` more bytes are
    /// consumed, and the object is moved to just after them.
    ///
    /// # Errors
    ///
    /// The object's `tell`/`seek` exception (the descriptor's `lseek` cannot fail on a regular
    /// file at a valid offset; if it did, the error is raised as `OSError`).
    pub(crate) fn record_read(&mut self, py: Python<'_>, len: usize) -> PyResult<()> {
        self.consumed += len as u64;
        let at = self.base + self.consumed;
        match &mut self.kind {
            Kind::None => {}
            Kind::Descriptor(file) => {
                file.seek(SeekFrom::Start(at))?;
            }
            Kind::Object { obj, read_to } => {
                let obj = obj.bind(py);
                if read_to.is_none() {
                    *read_to = Some(obj.call_method0(intern!(py, "tell"))?.extract()?);
                }
                obj.call_method1(intern!(py, "seek"), (at,))?;
            }
        }
        Ok(())
    }
}
