//! A circuit breaker: stop sending requests to an endpoint that keeps failing.
//!
//! States (the classic three):
//!
//! | state | requests | leaves it when |
//! |---|---|---|
//! | closed | sent | `threshold` consecutive failed attempts → open |
//! | open | refused at once with [`EmbedError::CircuitOpen`] | `cooldown` has passed → half-open |
//! | half-open | one probe sent, others refused | the probe succeeds → closed; fails → open again |
//!
//! A failed attempt is one that says the endpoint is unhealthy: a 5xx, a connection failure, a
//! timeout, a truncated body. Client errors (4xx, including 429, which retries and rate limits
//! handle) and malformed bodies do not count, and any success resets the count.
//!
//! State lives under one `parking_lot::Mutex`, held for a few instructions per attempt.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::EmbedError;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    pub threshold: u32,
    /// How long the breaker stays open before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 10,
            cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    last_failure: String,
}

/// The breaker of one client (shared by all its calls and threads).
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                last_failure: String::new(),
            }),
        }
    }

    /// Asks to send one attempt.
    ///
    /// # Errors
    ///
    /// [`EmbedError::CircuitOpen`] when the breaker is open, or half-open with its probe out.
    pub fn admit(&self) -> Result<(), EmbedError> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        match g.state {
            State::Closed => return Ok(()),
            State::Open { until } if now >= until => {
                g.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                return Ok(());
            }
            State::HalfOpen {
                probe_in_flight: false,
            } => {
                g.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                return Ok(());
            }
            _ => {}
        }
        let retry_in = match g.state {
            State::Open { until } => until.saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        Err(EmbedError::CircuitOpen {
            consecutive_failures: g.consecutive_failures,
            retry_in,
            last_failure: g.last_failure.clone(),
        })
    }

    /// Records a successful attempt: closes the breaker.
    pub fn on_success(&self) {
        let mut g = self.inner.lock();
        g.state = State::Closed;
        g.consecutive_failures = 0;
    }

    /// Records an attempt that failed in a way that does not say the endpoint is unhealthy (a 4xx):
    /// releases a half-open probe slot without changing the count.
    pub fn on_neutral(&self) {
        let mut g = self.inner.lock();
        if let State::HalfOpen { .. } = g.state {
            g.state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    /// Records a failed attempt; opens the breaker at the threshold (or at once when half-open).
    pub fn on_failure(&self, what: &str) {
        let mut g = self.inner.lock();
        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
        g.last_failure.clear();
        g.last_failure.push_str(what);
        let half_open = matches!(g.state, State::HalfOpen { .. });
        if half_open || g.consecutive_failures >= self.config.threshold {
            g.state = State::Open {
                until: Instant::now() + self.config.cooldown,
            };
        }
    }

    /// True while the breaker refuses requests.
    pub fn is_open(&self) -> bool {
        matches!(self.inner.lock().state, State::Open { until } if Instant::now() < until)
    }

    /// Consecutive failed attempts so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.lock().consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_threshold_then_probes_then_closes() {
        let b = CircuitBreaker::new(BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_millis(30),
        });
        for _ in 0..2 {
            b.admit().unwrap();
            b.on_failure("HTTP 500");
        }
        b.admit().unwrap();
        b.on_failure("HTTP 503");
        let err = b.admit().unwrap_err();
        assert!(err.is_circuit_open());
        assert!(err.to_string().contains("3 consecutive failures"), "{err}");
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        std::thread::sleep(Duration::from_millis(40));
        b.admit().unwrap(); // the probe
        assert!(b.admit().unwrap_err().is_circuit_open()); // only one probe at a time
        b.on_success();
        b.admit().unwrap();
        assert_eq!(b.consecutive_failures(), 0);
    }

    #[test]
    fn failed_probe_reopens() {
        let b = CircuitBreaker::new(BreakerConfig {
            threshold: 1,
            cooldown: Duration::from_millis(10),
        });
        b.admit().unwrap();
        b.on_failure("timeout");
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(15));
        b.admit().unwrap();
        b.on_failure("timeout");
        assert!(b.is_open());
        assert!(b.admit().is_err());
    }
}
