//! When to retry a request and how long to wait, the way the official openai client does.
//!
//! * Retried: HTTP 408, 409, 429 and 5xx; connection failures, timeouts and truncated bodies.
//!   Not retried: other 4xx, and 2xx responses with a malformed body (a server bug, not a glitch).
//! * `x-should-retry: true|false` from the server overrides the status rule.
//! * The wait honours `retry-after-ms` (milliseconds) or `retry-after` (seconds, or an HTTP date)
//!   when it is between 0 and 120 s; a server asking for longer is not retried at all.
//! * Otherwise the wait is exponential: 0.5 s, 1 s, 2 s, ... capped at 8 s, shortened by a random
//!   0-25 % (jitter) so that many clients failing together do not retry in lockstep.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// Backoff settings; the defaults are the openai client's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (openai default: 2).
    pub max_retries: u32,
    /// First backoff step (0.5 s).
    pub initial_delay: Duration,
    /// Largest backoff step (8 s).
    pub max_delay: Duration,
    /// Longest server-requested wait that is honoured (120 s); longer means "do not retry".
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// True for the statuses the openai client retries: 408, 409, 429 and 5xx.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// The server-requested wait from `retry-after-ms` or `retry-after`, if any and parseable.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let secs_from = |v: &str, divisor: f64| {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(|x| Duration::from_secs_f64((x / divisor).min(1e9)))
    };
    if let Some(d) = get("retry-after-ms").and_then(|v| secs_from(v, 1000.0)) {
        return Some(d);
    }
    let v = get("retry-after")?;
    secs_from(v, 1.0).or_else(|| {
        let when = httpdate::parse_http_date(v).ok()?;
        Some(
            when.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    })
}

impl RetryPolicy {
    /// Whether a response with `status` and `headers` should be retried (ignoring the attempt count).
    pub fn should_retry_response(&self, status: u16, headers: &HeaderMap) -> bool {
        if retry_after(headers).is_some_and(|d| d > self.max_retry_after) {
            return false;
        }
        match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
            Some("true") => true,
            Some("false") => false,
            _ => status_is_retryable(status),
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), given the failed response's
    /// headers if there was a response.
    pub fn delay(&self, retry: u32, headers: Option<&HeaderMap>) -> Duration {
        if let Some(d) = headers.and_then(retry_after)
            && !d.is_zero()
            && d <= self.max_retry_after
        {
            return d;
        }
        self.backoff(retry, rand::random::<f64>())
    }

    /// Exponential backoff for retry number `retry`, with `unit_random` in `[0, 1)` as the jitter.
    pub fn backoff(&self, retry: u32, unit_random: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let step = self
            .initial_delay
            .saturating_mul(1 << exp)
            .min(self.max_delay);
        step.mul_f64(1.0 - 0.25 * unit_random.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(status_is_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!status_is_retryable(s), "{s}");
        }
    }

    #[test]
    fn x_should_retry_overrides_status() {
        let p = RetryPolicy::default();
        assert!(p.should_retry_response(400, &headers(&[("x-should-retry", "true")])));
        assert!(!p.should_retry_response(500, &headers(&[("x-should-retry", "false")])));
        assert!(p.should_retry_response(500, &HeaderMap::new()));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250")])),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")])),
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        // Too long a wait: not retried at all.
        let p = RetryPolicy::default();
        assert!(!p.should_retry_response(429, &headers(&[("retry-after", "600")])));
        assert_eq!(
            p.delay(1, Some(&headers(&[("retry-after-ms", "20")]))),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_down() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.backoff(10, 0.0), Duration::from_secs(8));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(375));
        let d = p.delay(1, None);
        assert!(d >= Duration::from_millis(375) && d <= Duration::from_millis(500));
    }
}
