//! Running a batch from Python code: [`run_cpu_from_python`] and [`block_on_batch_from_python`]
//! (GIL released, progress callback, Ctrl-C), and the conversions of outcomes and statistics to
//! Python objects.
//!
//! Both run functions are built on [`Interruptible`]: the batch runs on a helper thread (and its
//! workers) while the calling thread waits with the GIL released, re-attaching every 50 ms to run
//! signal handlers and, at most every [`PROGRESS_INTERVAL`], the progress callback with the number of
//! items finished since its last call. Ctrl-C (or an exception from the callback) cancels the
//! batch's token; workers stop at their next item, in-flight futures are dropped, and the call
//! returns [`BatchInterrupted`], which carries both the exception and the report of what finished.

use std::future::Future;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::{BatchOptions, BatchReport, BatchStats, ItemContext, OptionsError, Outcome, Progress};
use crate::{CancelToken, Interruptible};

/// The progress callback of the Python helpers runs at most this often (and once at the end).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// A batch run from Python was interrupted (Ctrl-C, or the progress callback raised): the exception,
/// and the report of the batch up to the interruption (unfinished items are
/// [`Outcome::Cancelled`]).
///
/// `?` converts it to the bare exception; [`into_pyerr_with_results`](Self::into_pyerr_with_results)
/// attaches the partial results to it first.
#[derive(Debug)]
pub struct BatchInterrupted<T, E> {
    /// What interrupted the batch: usually `KeyboardInterrupt`.
    pub error: PyErr,
    /// The outcomes of the batch until it stopped (boxed: the error path stays small).
    pub report: Box<BatchReport<T, E>>,
}

impl<T, E> From<BatchInterrupted<T, E>> for PyErr {
    fn from(interrupted: BatchInterrupted<T, E>) -> Self {
        interrupted.error
    }
}

impl<T, E> BatchInterrupted<T, E> {
    /// The batch could not start: every item is `Cancelled`.
    fn nothing_ran(error: PyErr, len: usize) -> Self {
        let outcomes: Vec<_> = (0..len).map(|_| Outcome::Cancelled).collect();
        let stats = BatchStats {
            total: len,
            cancelled: len,
            stopped: Some(super::StopReason::Cancelled),
            ..BatchStats::default()
        };
        Self {
            error,
            report: Box::new(BatchReport { outcomes, stats }),
        }
    }

    /// The exception, with the partial results attached as attributes: `partial_results` (as
    /// [`results_to_python`]) and `batch_stats` ([`BatchStats`]'s `dict`), so Python code that
    /// catches `KeyboardInterrupt` can keep what finished.
    ///
    /// GIL: holds it.
    pub fn into_pyerr_with_results(self, py: Python<'_>) -> PyErr
    where
        T: for<'py> IntoPyObject<'py>,
        E: Into<PyErr>,
    {
        let Self { error, report } = self;
        let attach = || -> PyResult<()> {
            let value = error.value(py);
            value.setattr("batch_stats", report.stats.clone())?;
            value.setattr("partial_results", results_to_python(py, *report)?)?;
            Ok(())
        };
        // An exception that refuses attributes is still the right exception to raise.
        let _ = attach();
        error
    }
}

/// [`run_cpu_with_context`](super::run_cpu_with_context) from Python code: releases the GIL, reports
/// progress to `progress`, and lets Ctrl-C stop the batch.
///
/// `progress`, if given, is called as `progress(n)` with `n` items newly finished (tqdm's
/// `update` fits), with the GIL re-acquired, at most every [`PROGRESS_INTERVAL`] and once at the
/// end, never per item. If `options.token` is set, Ctrl-C cancels that token; if
/// `options.progress` is set, it is used for the counting.
///
/// GIL: released while the batch runs; re-acquired by the calling thread every 50 ms (signals) and
/// for the progress callback; held on return.
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
/// use gilkit::batch::{self, BatchOptions};
///
/// /// Sum of the digits of each number, in parallel, with a progress callback.
/// #[pyfunction]
/// #[pyo3(signature = (numbers, progress=None))]
/// fn digit_sums(
///     py: Python<'_>,
///     numbers: Vec<u64>,
///     progress: Option<Bound<'_, PyAny>>,
/// ) -> PyResult<Vec<u64>> {
///     let report = batch::run_cpu_from_python(
///         py, &numbers, &BatchOptions::default(), progress.as_ref(),
///         |&n, _cx| Ok::<u64, PyErr>(n.to_string().bytes().map(|b| u64::from(b - b'0')).sum()),
///     )?;
///     report.outcomes.into_iter().map(|o| o.into_result().map_err(|e| e.into_pyerr())).collect()
/// }
/// # Python::attach(|py| {
/// #     let f = wrap_pyfunction!(digit_sums, py).unwrap();
/// #     let sums: Vec<u64> = f.call1((vec![19_u64, 305],)).unwrap().extract().unwrap();
/// #     assert_eq!(sums, [10, 8]);
/// # });
/// ```
///
/// # Errors
/// [`BatchInterrupted`] when Ctrl-C arrives or `progress` raises; item failures are outcomes, not
/// errors.
///
/// # Panics
/// As [`run_cpu`](super::run_cpu).
pub fn run_cpu_from_python<I, T, E, F>(
    py: Python<'_>,
    items: &[I],
    options: &BatchOptions,
    progress: Option<&Bound<'_, PyAny>>,
    work: F,
) -> Result<BatchReport<T, E>, BatchInterrupted<T, E>>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I, &ItemContext<'_>) -> Result<T, E> + Sync + Send,
{
    run_interruptible(py, items.len(), options, progress, |options| {
        super::run_cpu_with_context(items, options, work)
    })
}

/// [`run_cpu_from_python`] over items whose conversion from Python could fail one by one: an
/// `Err` item becomes that item's [`Outcome::Err`] (the error moved there, in the item's place)
/// without `work` being called for it; the other items run as usual. Counts, progress, deadlines
/// and Ctrl-C treat the failed conversions as items that failed.
///
/// Use it to convert a Python list element by element, so that one bad element fails only itself
/// (extracting a `Vec<I>` would fail the whole call on the first one).
///
/// GIL: as [`run_cpu_from_python`] (the items are converted by the caller, before, GIL held).
///
/// # Examples
///
/// ```
/// use pyo3::prelude::*;
/// use pyo3::types::PyList;
/// use gilkit::batch::{self, BatchOptions, Outcome};
///
/// Python::attach(|py| {
///     let list = PyList::new(py, [1_i64.into_pyobject(py).unwrap().into_any(), "x".into_pyobject(py).unwrap().into_any()]).unwrap();
///     let items: Vec<PyResult<i64>> = list.iter().map(|o| o.extract::<i64>()).collect();
///     let report = batch::run_cpu_from_python_extracted(
///         py, items, &BatchOptions::default(), None, |&n, _cx| Ok(n * 2),
///     )
///     .unwrap();
///     assert!(matches!(report.outcomes[0], Outcome::Ok(2)));
///     assert!(matches!(&report.outcomes[1], Outcome::Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)));
///     assert_eq!((report.stats.succeeded, report.stats.failed), (1, 1));
/// });
/// ```
///
/// # Errors
/// As [`run_cpu_from_python`].
///
/// # Panics
/// As [`run_cpu`](super::run_cpu).
pub fn run_cpu_from_python_extracted<I, T, E, F>(
    py: Python<'_>,
    items: Vec<Result<I, E>>,
    options: &BatchOptions,
    progress: Option<&Bound<'_, PyAny>>,
    work: F,
) -> Result<BatchReport<T, E>, BatchInterrupted<T, E>>
where
    I: Sync,
    T: Send,
    E: Send,
    F: Fn(&I, &ItemContext<'_>) -> Result<T, E> + Sync + Send,
{
    // Each failed conversion waits in a slot its item's work takes it from: every item is
    // claimed by exactly one worker, at most once, so the slot is full when taken.
    let items: Vec<Result<I, parking_lot::Mutex<Option<E>>>> = items
        .into_iter()
        .map(|item| item.map_err(|e| parking_lot::Mutex::new(Some(e))))
        .collect();
    run_cpu_from_python(py, &items, options, progress, |item, cx| match item {
        Ok(item) => work(item, cx),
        Err(slot) => Err(slot
            .lock()
            .take()
            .expect("an item's work runs at most once")),
    })
}

/// [`run_async`](super::run_async) from Python code: drives the batch on the shared runtime with the
/// GIL released, reports progress to `progress`, and lets Ctrl-C stop the batch (in-flight futures
/// are dropped).
///
/// The futures are polled on a helper thread inside the shared runtime's context, so this works
/// from any thread, including one that is itself inside a tokio runtime. Progress and Ctrl-C as in
/// [`run_cpu_from_python`].
///
/// GIL: released while the batch runs; re-acquired by the calling thread every 50 ms (signals) and
/// for the progress callback; held on return.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pyo3::prelude::*;
/// use gilkit::batch::{self, BatchOptions};
///
/// Python::attach(|py| {
///     let report = batch::block_on_batch_from_python(
///         py, vec![3_u64, 1, 2], &BatchOptions::default(), None,
///         |ms| async move {
///             tokio::time::sleep(Duration::from_millis(ms)).await;
///             Ok::<_, String>(ms * 10)
///         },
///     )
///     .unwrap();
///     assert_eq!(report.stats.succeeded, 3);
///     assert_eq!(report.outcomes[0].clone().ok(), Some(30));
/// });
/// ```
///
/// # Errors
/// [`BatchInterrupted`] when Ctrl-C arrives or `progress` raises; a `RuntimeError` (in
/// `BatchInterrupted::error`, with an empty report) if the shared runtime cannot start.
///
/// # Panics
/// As [`run_async`](super::run_async).
pub fn block_on_batch_from_python<I, T, E, F, Fut>(
    py: Python<'_>,
    items: Vec<I>,
    options: &BatchOptions,
    progress: Option<&Bound<'_, PyAny>>,
    work: F,
) -> Result<BatchReport<T, E>, BatchInterrupted<T, E>>
where
    I: Send,
    T: Send,
    E: Send,
    F: FnMut(I) -> Fut + Send,
    Fut: Future<Output = Result<T, E>>,
{
    if crate::poll_gate::gate_closed() {
        let error = crate::poll_gate::exiting_error();
        return Err(BatchInterrupted::nothing_ran(error, items.len()));
    }
    let handle = match crate::runtime::try_handle() {
        Ok(handle) => handle,
        Err(error) => {
            let error = pyo3::exceptions::PyRuntimeError::new_err(error.to_string());
            return Err(BatchInterrupted::nothing_ran(error, items.len()));
        }
    };
    crate::python::ensure_exit_hook(py);
    let len = items.len();
    run_interruptible(py, len, options, progress, move |options| {
        // The helper thread `Interruptible` runs this on is never a runtime thread, so the
        // handle's `block_on` cannot meet "a runtime within a runtime". Gated: a batch caught in
        // flight by interpreter exit is not polled against the stopping runtime (see `block_on`).
        handle.block_on(crate::poll_gate::Gated(super::run_async(
            items, options, work,
        )))
    })
}

/// The shared part: a token Ctrl-C cancels, a progress counter read by the poll hook, and the report
/// kept even when the run is interrupted.
fn run_interruptible<T, E>(
    py: Python<'_>,
    len: usize,
    options: &BatchOptions,
    callback: Option<&Bound<'_, PyAny>>,
    run: impl FnOnce(&BatchOptions) -> BatchReport<T, E> + Send,
) -> Result<BatchReport<T, E>, BatchInterrupted<T, E>>
where
    T: Send,
    E: Send,
{
    let mut options = options.clone();
    let token = options.token.get_or_insert_with(CancelToken::new).clone();
    let progress = options.progress.get_or_insert_with(Progress::new).clone();
    let callback = callback.map(|c| c.clone().unbind());
    // The `Progress` may be shared with earlier batches: report only this batch's items.
    let mut reported = progress.finished();
    let mut reported_at = Instant::now();
    let mut report = None;
    let result = Interruptible::new()
        .token(token)
        // With a hook, `Interruptible` runs the work on a helper thread on every thread (its
        // documented contract), which `block_on_batch_from_python` relies on.
        .on_poll(|py| {
            let Some(callback) = &callback else {
                return Ok(());
            };
            let finished = progress.finished();
            if finished > reported && reported_at.elapsed() >= PROGRESS_INTERVAL {
                callback.call1(py, (finished - reported,))?;
                reported = finished;
                reported_at = Instant::now();
            }
            Ok(())
        })
        .run(py, |_token| report = Some(run(&options)));
    match (result, report) {
        (Ok(()), Some(report)) => {
            let finished = progress.finished();
            if let Some(callback) = &callback
                && finished > reported
                && let Err(error) = callback.call1(py, (finished - reported,))
            {
                let report = Box::new(report);
                return Err(BatchInterrupted { error, report });
            }
            Ok(report)
        }
        (Err(error), Some(report)) => Err(BatchInterrupted {
            error,
            report: Box::new(report),
        }),
        // The helper thread could not start: nothing ran.
        (Err(error), None) => Err(BatchInterrupted::nothing_ran(error, len)),
        (Ok(()), None) => unreachable!("the batch returned without a report"),
    }
}

impl<E: Into<PyErr>> super::ItemError<E> {
    /// The Python exception for this item: the error's own conversion for `Failed`,
    /// `pyo3_runtime.PanicException` for `Panicked`, `TimeoutError` for `TimedOut` and
    /// `concurrent.futures.CancelledError` for `Cancelled`.
    pub fn into_pyerr(self) -> PyErr {
        match self {
            Self::Failed(error) => error.into(),
            Self::Panicked(message) => {
                PanicException::new_err(format!("a batch item panicked: {message}"))
            }
            Self::TimedOut => PyTimeoutError::new_err(
                "the item did not finish before its timeout or the batch deadline",
            ),
            Self::Cancelled => CancelledError::new_err("the batch was cancelled"),
        }
    }
}

/// The outcomes as a Python list in input order: the value of each `Ok`, and for every other
/// outcome the exception instance [`ItemError::into_pyerr`](super::ItemError::into_pyerr) gives, the
/// shape of `asyncio.gather(..., return_exceptions=True)`.
///
/// GIL: holds it.
///
/// # Errors
/// If converting a value to Python fails.
pub fn results_to_python<'py, T, E>(
    py: Python<'py>,
    report: BatchReport<T, E>,
) -> PyResult<Bound<'py, PyList>>
where
    T: IntoPyObject<'py>,
    E: Into<PyErr>,
{
    let list = PyList::empty(py);
    for outcome in report.outcomes {
        match outcome {
            Outcome::Ok(value) => list.append(value)?,
            other => {
                let error = other.into_result().err().expect("not Ok").into_pyerr();
                list.append(error.into_value(py))?;
            }
        }
    }
    Ok(list)
}

impl From<OptionsError> for PyErr {
    fn from(error: OptionsError) -> Self {
        PyValueError::new_err(error.to_string())
    }
}

pyo3::import_exception!(concurrent.futures, CancelledError);
