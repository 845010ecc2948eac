//! Helpers shared by the semaphore and batcher integration tests.

use std::time::Duration;

/// Polls `cond` every millisecond until it holds; fails the test after 10 s instead of hanging.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
