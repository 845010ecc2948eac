//! The Python shape of every stats snapshot gilkit exports: the exact key set and the Python type
//! of each value, so that a renamed key or a changed unit (an int where float seconds are due)
//! fails here. The convention they follow is in `gilkit::stats`'s module doc.

use std::time::Duration;

use gilkit::batch::{self, BatchOptions};
use gilkit::batcher::BatcherConfig;
use gilkit::{GilBatcher, GilSemaphore};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Asserts that `d` has exactly the keys of `schema`, each holding a value whose Python type name
/// is the one given (`"float"`, `"int"`, `"NoneType"`, ...).
fn assert_schema(d: &Bound<'_, PyAny>, schema: &[(&str, &str)]) {
    let d = d.cast::<PyDict>().expect("a dict");
    let mut keys: Vec<String> = d.keys().extract().unwrap();
    keys.sort();
    let mut expected: Vec<&str> = schema.iter().map(|(k, _)| *k).collect();
    expected.sort_unstable();
    assert_eq!(keys, expected, "key set");
    for (key, type_name) in schema {
        let value = d.get_item(key).unwrap().unwrap();
        let actual = value.get_type().name().unwrap().to_string();
        assert_eq!(&actual, type_name, "type of {key:?}");
    }
}

const LATENCY: &[(&str, &str)] = &[
    ("count", "int"),
    ("p50_s", "float"),
    ("p99_s", "float"),
    ("max_s", "float"),
    ("mean_s", "float"),
];

#[test]
fn semaphore_stats() {
    let sem = GilSemaphore::builder()
        .permits(3)
        .max_queue(Some(8))
        .build();
    let _permit = sem.try_acquire_owned().unwrap();
    Python::attach(|py| {
        let d = sem.stats().into_pyobject(py).unwrap().into_any();
        assert_schema(
            &d,
            &[
                ("permits", "int"),
                ("in_use", "int"),
                ("waiting", "int"),
                ("max_queue", "int"),
                ("total_acquired", "int"),
                ("rejected_busy", "int"),
                ("timed_out", "int"),
                ("wait", "dict"),
                ("python_calls", "int"),
                ("python_time_s", "float"),
                ("attach_wait_s", "float"),
            ],
        );
        assert_schema(&d.get_item("wait").unwrap(), LATENCY);
        assert_eq!(
            d.get_item("wait")
                .unwrap()
                .get_item("count")
                .unwrap()
                .extract::<u64>()
                .unwrap(),
            1
        );
    });
}

#[test]
fn batcher_stats() {
    let config = BatcherConfig {
        max_batch: 4,
        max_wait: Duration::from_millis(250),
        max_queue: None,
    };
    let batcher = GilBatcher::new(config, |_py, xs: Vec<i64>| Ok(xs));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(batcher.submit(7)).unwrap(), 7);
    Python::attach(|py| {
        let d = batcher.stats().into_pyobject(py).unwrap().into_any();
        assert_schema(
            &d,
            &[
                ("max_batch", "int"),
                ("max_wait_s", "float"),
                ("max_queue", "NoneType"),
                ("queue_len", "int"),
                ("submitted", "int"),
                ("succeeded", "int"),
                ("failed", "int"),
                ("rejected_busy", "int"),
                ("cancelled", "int"),
                ("batches", "int"),
                ("batch_sizes", "dict"),
                ("mean_batch_size", "float"),
                ("queue_wait", "dict"),
                ("python_time_s", "float"),
            ],
        );
        assert_schema(&d.get_item("queue_wait").unwrap(), LATENCY);
        assert_eq!(
            d.get_item("max_wait_s").unwrap().extract::<f64>().unwrap(),
            0.25
        );
        let sizes = d.get_item("batch_sizes").unwrap();
        assert_eq!(sizes.str().unwrap().to_string(), "{1: 1}");
    });
}

#[test]
fn batch_stats() {
    let report = batch::run_cpu(&[1, 2, 3], &BatchOptions::default(), |&x| {
        Ok::<_, String>(x * 2)
    });
    Python::attach(|py| {
        let d = report.stats.into_pyobject(py).unwrap().into_any();
        assert_schema(
            &d,
            &[
                ("total", "int"),
                ("succeeded", "int"),
                ("failed", "int"),
                ("panicked", "int"),
                ("timed_out", "int"),
                ("cancelled", "int"),
                ("stopped", "NoneType"),
                ("duration_s", "float"),
                ("throughput", "float"),
                ("concurrency", "int"),
                ("latency", "dict"),
            ],
        );
        assert_schema(&d.get_item("latency").unwrap(), LATENCY);
    });
}

#[test]
fn batch_stats_name_why_the_batch_stopped() {
    let stats = batch::BatchStats {
        stopped: Some(batch::StopReason::Deadline),
        ..batch::BatchStats::default()
    };
    Python::attach(|py| {
        let d = stats.into_pyobject(py).unwrap();
        let stopped = d.get_item("stopped").unwrap().unwrap();
        assert_eq!(stopped.extract::<String>().unwrap(), "deadline");
    });
}

#[test]
fn call_site_stats() {
    let site = gilkit::callsite!("schema_probe");
    Python::attach(|py| {
        site.detach(py, || 1 + 1);
        let all = gilkit::callsite::callsite_stats(py).unwrap();
        let d = all
            .get_item(format!("{}::schema_probe", module_path!()))
            .unwrap()
            .expect("the call site is registered");
        assert_schema(
            &d,
            &[
                ("name", "str"),
                ("module", "str"),
                ("file", "str"),
                ("line", "int"),
                ("calls", "int"),
                ("released", "int"),
                ("timed_calls", "int"),
                ("released_s", "float"),
                ("reacquire_s", "float"),
                ("held_s", "float"),
                ("adaptive_calls", "int"),
                ("adaptive_released", "int"),
                ("average_work_s", "float"),
                ("threshold_s", "float"),
            ],
        );
    });
}

#[test]
fn runtime_info() {
    Python::attach(|py| {
        let d = gilkit::runtime::info()
            .into_pyobject(py)
            .unwrap()
            .into_any();
        assert_schema(
            &d,
            &[
                ("started", "bool"),
                ("worker_threads", "int"),
                ("blocking_threads", "int"),
                ("cpu_count", "int"),
                ("uptime_s", "float"),
                ("tasks_alive", "int"),
                ("config", "dict"),
            ],
        );
        assert_schema(
            &d.get_item("config").unwrap(),
            &[
                ("worker_threads", "NoneType"),
                ("max_blocking_threads", "NoneType"),
                ("thread_stack_size", "NoneType"),
                ("thread_name", "NoneType"),
            ],
        );
    });
}

#[test]
fn file_reader_and_writer_stats() {
    Python::attach(|py| {
        let d = gilkit::file::ReaderStats::default()
            .into_pyobject(py)
            .unwrap()
            .into_any();
        assert_schema(
            &d,
            &[
                ("python_calls", "int"),
                ("gil_releases", "int"),
                ("batches", "int"),
                ("records", "int"),
                ("bytes_read", "int"),
                ("released_s", "float"),
                ("buffer_capacity", "int"),
            ],
        );
        let d = gilkit::file::WriterStats::default()
            .into_pyobject(py)
            .unwrap()
            .into_any();
        assert_schema(
            &d,
            &[
                ("python_calls", "int"),
                ("bytes_written", "int"),
                ("gil_releases", "int"),
            ],
        );
    });
}
