//! [`CancelToken`]: a cheap, shared "please stop" flag that both threads and futures can watch.
//!
//! # How it works
//! A token is an `Arc` around one `AtomicBool` and a [`tokio::sync::Notify`]. Work that runs in a
//! loop polls [`CancelToken::is_cancelled`] (one atomic load); async code awaits
//! [`CancelToken::cancelled`], which is woken by [`CancelToken::cancel`]. Clones share the flag.
//!
//! # Memory ordering
//! `cancel` stores the flag with `Release` and `is_cancelled` loads it with `Acquire`, so whatever the
//! cancelling thread wrote before cancelling (for example the reason it recorded) is visible to a
//! thread that observes the token as cancelled. The flag never goes back to `false`.
//! Waiters of `cancelled()` register with `Notify` *before* they check the flag
//! ([`tokio::sync::futures::Notified::enable`]), and `cancel` sets the flag *before* it calls
//! `notify_waiters`, so a waiter either sees the flag or is registered in time to be woken.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A shared cancellation flag, set once by [`cancel`](Self::cancel) and observed by work that
/// checks [`is_cancelled`](Self::is_cancelled) or awaits [`cancelled`](Self::cancelled).
///
/// gilkit hands one to work run by [`detach_interruptible`](crate::detach_interruptible): when
/// Python raises in a signal handler (Ctrl-C gives `KeyboardInterrupt`), the token is cancelled and the
/// call returns the exception as soon as the work notices.
///
/// Cloning is cheap and every clone shares the same flag.
///
/// # Examples
///
/// ```
/// use gilkit::CancelToken;
///
/// let token = CancelToken::new();
/// let worker = token.clone();
/// let handle = std::thread::spawn(move || {
///     let mut steps = 0u64;
///     while !worker.is_cancelled() {
///         steps += 1;
///         std::thread::yield_now();
///     }
///     steps
/// });
/// token.cancel();
/// handle.join().unwrap();
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// Creates a token that is not cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token: every clone reports `is_cancelled() == true` from now on and every
    /// pending [`cancelled`](Self::cancelled) future completes. Calling it again does nothing.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::Release) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Returns whether the token was cancelled. One atomic load: cheap enough for a hot loop.
    #[inline]
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Returns `Err(Cancelled)` once the token is cancelled, so work can stop with `?`.
    ///
    /// # Errors
    /// [`Cancelled`] when the token was cancelled.
    #[inline]
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// Completes once the token is cancelled (at once if it already is).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it completes has no effect on the token.
    pub async fn cancelled(&self) {
        loop {
            let mut notified = pin!(self.inner.notify.notified());
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The error of [`CancelToken::check`]: the work was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operation was cancelled")
    }
}

impl std::error::Error for Cancelled {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cancel_is_shared_and_idempotent() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        assert_eq!(b.check(), Ok(()));
        a.cancel();
        a.cancel();
        assert!(b.is_cancelled());
        assert_eq!(b.check(), Err(Cancelled));
    }

    #[test]
    fn cancelled_future_wakes_every_waiter() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let token = CancelToken::new();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let t = token.clone();
                rt.spawn(async move { t.cancelled().await })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        token.cancel();
        rt.block_on(async {
            for w in waiters {
                tokio::time::timeout(Duration::from_secs(60), w)
                    .await
                    .expect("a waiter was not woken")
                    .unwrap();
            }
            // Already cancelled: completes at once.
            token.cancelled().await;
        });
    }
}
