//! The runtime's configuration lifecycle. One test in this file: the runtime is process-global.

use std::time::Duration;

use gilkit::runtime::{self, ConfigureError, RuntimeConfig};

#[test]
fn configure_then_start_then_refuse_then_restart() {
    let before = runtime::info();
    assert!(!before.started);
    assert_eq!(before.worker_threads, 0);

    runtime::configure(RuntimeConfig {
        worker_threads: Some(3),
        max_blocking_threads: Some(4),
        thread_name: Some("cfg-test".into()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert_eq!(runtime::info().config.worker_threads, Some(3));

    let handle = runtime::handle();
    let name = std::thread::spawn(move || {
        handle.block_on(async {
            tokio::spawn(async { std::thread::current().name().map(String::from) })
                .await
                .unwrap()
        })
    })
    .join()
    .unwrap();
    assert_eq!(name.as_deref(), Some("cfg-test"));

    let info = runtime::info();
    assert!(info.started);
    assert_eq!(info.worker_threads, 3);

    let err = runtime::configure(RuntimeConfig::default()).unwrap_err();
    assert_eq!(err, ConfigureError::AlreadyStarted { worker_threads: 3 });
    assert!(err.to_string().contains("already running"));

    // Shut down, then a later use starts afresh with the defaults.
    assert!(runtime::shutdown(Duration::from_secs(60)));
    assert!(!runtime::info().started);
    let _ = runtime::handle();
    assert!(runtime::info().started);
}
