//! Optional client-side rate limits: requests and tokens per minute.
//!
//! Two token buckets (one for requests, one for estimated tokens), each refilled continuously at
//! `limit / 60 s` up to `limit`. A request waits (asynchronously) until both buckets hold what it
//! needs, then takes it. A request needing more tokens than a whole bucket holds waits for a full
//! bucket and drives it negative, so it is neither refused nor starves.
//!
//! When the API sends `x-ratelimit-*` headers (OpenAI does), the limiter learns from them:
//! `x-ratelimit-limit-requests` / `-tokens` set the bucket size when the caller gave none, and
//! `x-ratelimit-remaining-*` lower the bucket to what the server says is left, so several processes
//! sharing one key slow down together instead of collecting 429s.
//!
//! Each bucket is a small struct under a `parking_lot::Mutex`, held only to refill and take. Time is
//! `tokio::time::Instant`, so tests can run the limiter on a paused clock.

use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use reqwest::header::HeaderMap;

/// Which rate limits to apply; all `None` and `from_headers: false` means no limiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Estimated tokens per minute.
    pub tokens_per_minute: Option<u32>,
    /// Learn limits and remaining budget from `x-ratelimit-*` response headers.
    pub from_headers: bool,
}

#[derive(Debug)]
struct Bucket {
    /// Size per minute; 0 means "unlimited until learned".
    limit: f64,
    available: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn new(limit: Option<u32>) -> Self {
        let limit = limit.map_or(0.0, f64::from);
        Bucket {
            limit,
            available: limit,
            refilled_at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.limit > 0.0 {
            let per_sec = self.limit / 60.0;
            let dt = now
                .saturating_duration_since(self.refilled_at)
                .as_secs_f64();
            self.available = (self.available + dt * per_sec).min(self.limit);
        }
        self.refilled_at = now;
    }

    /// Time until `n` can be taken (zero if now).
    fn wait_for(&self, n: f64) -> Duration {
        if self.limit <= 0.0 {
            return Duration::ZERO;
        }
        let need = n.min(self.limit);
        if self.available >= need {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((need - self.available) / (self.limit / 60.0))
    }
}

/// The limiter of one client (shared by all its calls and threads).
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    requests: Mutex<Bucket>,
    tokens: Mutex<Bucket>,
}

impl RateLimiter {
    /// A limiter with full buckets.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            requests: Mutex::new(Bucket::new(config.requests_per_minute)),
            tokens: Mutex::new(Bucket::new(config.tokens_per_minute)),
        }
    }

    /// True when no limit is configured or learnable (the fast path skips the buckets).
    pub fn is_disabled(&self) -> bool {
        self.config == RateLimitConfig::default()
    }

    /// Waits until one request of `tokens` estimated tokens may be sent, then takes its budget.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: budget is taken only after the wait, atomically with the check.
    pub async fn acquire(&self, tokens: usize) -> Duration {
        if self.is_disabled() {
            return Duration::ZERO;
        }
        let mut waited = Duration::ZERO;
        loop {
            let now = Instant::now();
            let wait = {
                let mut r = self.requests.lock();
                let mut t = self.tokens.lock();
                r.refill(now);
                t.refill(now);
                let wait = r.wait_for(1.0).max(t.wait_for(tokens as f64));
                if wait.is_zero() {
                    if r.limit > 0.0 {
                        r.available -= 1.0;
                    }
                    if t.limit > 0.0 {
                        t.available -= tokens as f64;
                    }
                }
                wait
            };
            if wait.is_zero() {
                return waited;
            }
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }

    /// Updates the buckets from `x-ratelimit-*` headers (when `from_headers` is on).
    pub fn observe(&self, headers: &HeaderMap) {
        if !self.config.from_headers {
            return;
        }
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let now = Instant::now();
        for (bucket, configured, limit_h, remaining_h) in [
            (
                &self.requests,
                self.config.requests_per_minute.is_some(),
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
            ),
            (
                &self.tokens,
                self.config.tokens_per_minute.is_some(),
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
            ),
        ] {
            let mut b = bucket.lock();
            b.refill(now);
            if !configured && let Some(limit) = num(limit_h).filter(|l| *l > 0.0) {
                if b.limit <= 0.0 {
                    b.available = limit;
                }
                b.limit = limit;
            }
            if let Some(remaining) = num(remaining_h)
                && b.limit > 0.0
            {
                b.available = b.available.min(remaining);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_spaces_requests() {
        let l = RateLimiter::new(RateLimitConfig {
            requests_per_minute: Some(60),
            ..Default::default()
        });
        // The bucket starts full: 60 requests go at once, the 61st waits about a second.
        for _ in 0..60 {
            assert_eq!(l.acquire(1).await, Duration::ZERO);
        }
        let waited = l.acquire(1).await;
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_request_waits_for_full_bucket() {
        let l = RateLimiter::new(RateLimitConfig {
            tokens_per_minute: Some(600),
            ..Default::default()
        });
        assert_eq!(l.acquire(1000).await, Duration::ZERO); // full bucket: allowed, goes negative
        let waited = l.acquire(10).await;
        // -400 -> +10 needs 410 tokens at 10 tokens/s.
        assert!(waited >= Duration::from_secs(40), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn learns_from_headers() {
        let l = RateLimiter::new(RateLimitConfig {
            from_headers: true,
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-limit-requests",
            HeaderValue::from_static("120"),
        );
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
        l.observe(&h);
        let waited = l.acquire(1).await;
        // 120 per minute = 2 per second: one request needs 0.5 s from empty.
        assert!(
            waited >= Duration::from_millis(490) && waited <= Duration::from_millis(510),
            "{waited:?}"
        );
    }
}
