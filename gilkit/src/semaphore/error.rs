//! The error types of the semaphore and the batcher: one small type per operation, each with `is_*`
//! predicates, converted to a Python exception only at the boundary (`From<_> for PyErr`).

use std::fmt;
use std::time::Duration;

use pyo3::PyErr;
use pyo3::exceptions::{PyRuntimeError, PyTimeoutError};
use pyo3::panic::PanicException;

/// Why [`GilSemaphore::acquire`](super::GilSemaphore::acquire) (and its variants) gave no permit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// The wait queue was full: `queue_len` tasks were already waiting, the bound is `max_queue`.
    /// Only possible when the semaphore was built with a queue bound; never returned merely because
    /// every permit is taken. A server answers this with "503, retry later".
    Busy {
        /// Tasks waiting when this one was refused.
        queue_len: usize,
        /// The configured bound.
        max_queue: usize,
    },
    /// The semaphore was closed with [`GilSemaphore::close`](super::GilSemaphore::close).
    Closed,
    /// No permit came within the time given to
    /// [`acquire_timeout`](super::GilSemaphore::acquire_timeout). Only that method returns it.
    TimedOut {
        /// How long the call waited.
        waited: Duration,
    },
}

impl AcquireError {
    /// Whether the queue bound refused the request ([`AcquireError::Busy`]).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether the semaphore is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// Whether the wait timed out.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::TimedOut { .. })
    }

    /// The queue length reported by a [`Busy`](AcquireError::Busy) refusal.
    pub fn queue_len(&self) -> Option<usize> {
        match self {
            Self::Busy { queue_len, .. } => Some(*queue_len),
            _ => None,
        }
    }
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy {
                queue_len,
                max_queue,
            } => write!(
                f,
                "GIL semaphore busy: {queue_len} tasks already waiting (queue bound {max_queue}); \
                 retry later or raise the bound"
            ),
            Self::Closed => f.write_str("GIL semaphore closed: no more permits are handed out"),
            Self::TimedOut { waited } => {
                write!(
                    f,
                    "no GIL semaphore permit within {waited:?}; retry or wait longer"
                )
            }
        }
    }
}

impl std::error::Error for AcquireError {}

impl From<AcquireError> for PyErr {
    fn from(e: AcquireError) -> PyErr {
        match e {
            AcquireError::TimedOut { .. } => PyTimeoutError::new_err(e.to_string()),
            _ => PyRuntimeError::new_err(e.to_string()),
        }
    }
}

/// Why [`GilSemaphore::try_acquire_owned`](super::GilSemaphore::try_acquire_owned) gave no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Every permit is taken (or tasks are queued ahead; `try_acquire_owned` never jumps the queue).
    NoPermits,
    /// The semaphore was closed.
    Closed,
}

impl TryAcquireError {
    /// Whether every permit was taken.
    pub fn is_no_permits(&self) -> bool {
        matches!(self, Self::NoPermits)
    }

    /// Whether the semaphore is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPermits => f.write_str(
                "no GIL semaphore permit free right now; use acquire().await to wait in line",
            ),
            Self::Closed => f.write_str("GIL semaphore closed: no more permits are handed out"),
        }
    }
}

impl std::error::Error for TryAcquireError {}

impl From<TryAcquireError> for PyErr {
    fn from(e: TryAcquireError) -> PyErr {
        PyRuntimeError::new_err(e.to_string())
    }
}

/// A configuration value that cannot work (0 permits, a batch of at most 0 requests, ...), from
/// [`GilSemaphoreBuilder::try_build`](super::GilSemaphoreBuilder::try_build) or
/// [`GilBatcher::try_new`](crate::GilBatcher::try_new). Becomes a Python `ValueError`, so values
/// that come from Python can be passed through unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    message: String,
}

impl InvalidConfig {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidConfig {}

impl From<InvalidConfig> for PyErr {
    fn from(e: InvalidConfig) -> PyErr {
        pyo3::exceptions::PyValueError::new_err(e.message)
    }
}

/// Why [`GilSemaphore::run`](super::GilSemaphore::run) returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// No permit was obtained (busy, closed); the closure never ran.
    Acquire(AcquireError),
    /// The closure returned this Python exception, kept intact (type, value, traceback).
    Python(PyErr),
    /// The closure panicked; the permit was given back. Holds the panic message.
    Panicked(String),
    /// The closure never ran because the interpreter is not initialized or is shutting down.
    InterpreterUnavailable,
    /// The closure never ran because the tokio runtime is shutting down.
    RuntimeShutdown,
}

impl RunError {
    /// Whether the queue bound refused the call (see [`AcquireError::Busy`]).
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Acquire(e) if e.is_busy())
    }

    /// Whether the closure raised a Python exception.
    pub fn is_python(&self) -> bool {
        matches!(self, Self::Python(_))
    }

    /// Whether the closure panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// The Python exception for this error, as `PyErr::from` gives it: the closure's own
    /// exception for [`RunError::Python`] (type, value and traceback intact), a `PanicException`
    /// for a panic, a `RuntimeError` otherwise. Named like [`ItemError::into_pyerr`](crate::batch::ItemError::into_pyerr).
    pub fn into_pyerr(self) -> PyErr {
        self.into()
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acquire(e) => e.fmt(f),
            // PyErr's Display attaches to the interpreter to format the exception.
            Self::Python(e) => write!(f, "the Python call raised {e}"),
            Self::Panicked(msg) => write!(f, "the Python call panicked: {msg}"),
            Self::InterpreterUnavailable => f.write_str(
                "the Python interpreter is not initialized or is shutting down; the call did not run",
            ),
            Self::RuntimeShutdown => {
                f.write_str("the tokio runtime is shutting down; the call did not run")
            }
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Acquire(e) => Some(e),
            Self::Python(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AcquireError> for RunError {
    fn from(e: AcquireError) -> Self {
        Self::Acquire(e)
    }
}

impl From<RunError> for PyErr {
    /// The Python exception as raised for [`RunError::Python`]; a `PanicException` for a panic; a
    /// `TimeoutError` for a timeout; a `RuntimeError` otherwise.
    fn from(e: RunError) -> PyErr {
        match e {
            RunError::Python(e) => e,
            RunError::Acquire(e) => e.into(),
            RunError::Panicked(msg) => PanicException::new_err(msg),
            other => PyRuntimeError::new_err(other.to_string()),
        }
    }
}

/// Why [`GilBatcher::submit`](crate::GilBatcher::submit) returned no value.
#[derive(Debug)]
#[non_exhaustive]
pub enum BatchError {
    /// The queue was full: `queue_len` requests were waiting, the bound is `max_queue`. The request
    /// was not queued. A server answers this with "503, retry later".
    Busy {
        /// Requests queued when this one was refused.
        queue_len: usize,
        /// The configured bound.
        max_queue: usize,
    },
    /// The batch function raised this exception for the batch this request was in; every request of
    /// that batch gets the same exception (the same Python object), and no other batch is affected.
    Python(PyErr),
    /// The batch function panicked on this request's batch. Holds the panic message.
    Panicked(String),
    /// The batch function returned `got` results for a batch of `expected` requests, so no result
    /// can be matched to its request.
    LengthMismatch {
        /// Requests in the batch.
        expected: usize,
        /// Results returned.
        got: usize,
    },
    /// The interpreter is not initialized or is shutting down; the batch did not run.
    InterpreterUnavailable,
    /// The batcher's worker is gone (it stopped after the last handle was dropped).
    Closed,
    /// This process is a child made by `fork()` after the batcher was created, so the batcher's
    /// worker thread does not exist here. Create batchers after forking (e.g. in the worker
    /// process's startup, not at import time).
    Forked,
}

impl BatchError {
    /// Whether the queue bound refused the request.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }

    /// Whether the batch function raised a Python exception.
    pub fn is_python(&self) -> bool {
        matches!(self, Self::Python(_))
    }

    /// Whether the batch function panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// The queue length reported by a [`Busy`](BatchError::Busy) refusal.
    pub fn queue_len(&self) -> Option<usize> {
        match self {
            Self::Busy { queue_len, .. } => Some(*queue_len),
            _ => None,
        }
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Busy {
                queue_len,
                max_queue,
            } => write!(
                f,
                "batcher busy: {queue_len} requests already queued (queue bound {max_queue}); \
                 retry later or raise the bound"
            ),
            Self::Python(e) => write!(f, "the batch function raised {e}"),
            Self::Panicked(msg) => write!(f, "the batch function panicked: {msg}"),
            Self::LengthMismatch { expected, got } => write!(
                f,
                "the batch function returned {got} results for {expected} requests; \
                 it must return exactly one result per request, in order"
            ),
            Self::InterpreterUnavailable => f.write_str(
                "the Python interpreter is not initialized or is shutting down; the batch did not run",
            ),
            Self::Closed => f.write_str("the batcher is closed; its worker has stopped"),
            Self::Forked => f.write_str(
                "this batcher was created before the process forked and its worker thread did not \
                 survive the fork; create the batcher in the child process instead",
            ),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Python(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BatchError> for PyErr {
    /// The Python exception as raised for [`BatchError::Python`]; a `PanicException` for a panic; a
    /// `RuntimeError` otherwise.
    fn from(e: BatchError) -> PyErr {
        match e {
            BatchError::Python(e) => e,
            BatchError::Panicked(msg) => PanicException::new_err(msg),
            other => PyRuntimeError::new_err(other.to_string()),
        }
    }
}
