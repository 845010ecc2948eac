//! Token estimates, input validation and request splitting.
//!
//! The OpenAI embeddings API limits each request to 2,048 inputs and 300,000 tokens, and each input
//! to 8,192 tokens. We split a call's texts into requests that stay within those limits and refuse
//! texts that cannot fit, before anything is sent.
//!
//! # How tokens are estimated
//!
//! Exact counts would need the model's tokenizer (cl100k for OpenAI's embedding models, a
//! SentencePiece vocabulary for e5) and would cost more than the request itself for local models.
//! We estimate instead, erring on the high side for common text:
//!
//! * every run of ASCII bytes counts one token per 3 bytes (rounded up); English prose averages
//!   about 4 characters per token, code and numbers about 3;
//! * every non-ASCII character counts one token (CJK text averages about one token per character;
//!   accented Latin letters cost less).
//!
//! So the estimate is an over-estimate for prose (≈ 1.3x), which keeps split requests under the
//! API's per-request limit, and is within a small factor for other scripts. Text that the server
//! counts higher than we do (long runs of rare symbols) may still be refused by the API, with a
//! 400 carrying the API's message. [`Limits`] can be loosened or tightened per client.

use std::ops::Range;

use crate::error::InvalidInput;

/// Per-request and per-input limits used to validate and split calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most inputs in one request (OpenAI: 2,048).
    pub max_inputs_per_request: usize,
    /// Most estimated tokens in one request (OpenAI: 300,000).
    pub max_tokens_per_request: usize,
    /// Most estimated tokens in one input (OpenAI: 8,192).
    pub max_tokens_per_input: usize,
}

impl Limits {
    /// The OpenAI embeddings API's limits.
    pub const OPENAI: Limits = Limits {
        max_inputs_per_request: 2048,
        max_tokens_per_request: 300_000,
        max_tokens_per_input: 8192,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::OPENAI
    }
}

/// Estimated token count of `text` (see the module docs for the rule).
///
/// # Examples
///
/// ```
/// use gilkit_embed::tokens::estimate_tokens;
/// assert_eq!(estimate_tokens("hello world!"), 4); // 12 ASCII bytes / 3
/// assert_eq!(estimate_tokens("日本語"), 3); // one per non-ASCII character
/// ```
#[inline]
pub fn estimate_tokens(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes.is_ascii() {
        return bytes.len().div_ceil(3);
    }
    let mut ascii = 0usize;
    let mut non_ascii_chars = 0usize;
    for &b in bytes {
        if b < 0x80 {
            ascii += 1;
        } else if b & 0xC0 != 0x80 {
            // A leading byte of a multi-byte character (continuation bytes are 10xxxxxx).
            non_ascii_chars += 1;
        }
    }
    ascii.div_ceil(3) + non_ascii_chars
}

/// Checks every text against `limits` and returns their token estimates.
///
/// # Errors
///
/// [`InvalidInput::EmptyList`] for no texts, [`InvalidInput::EmptyText`] for an empty string,
/// [`InvalidInput::TooLong`] for a text over the per-input limit (the first offender is reported).
pub fn validate<S: AsRef<str>>(texts: &[S], limits: &Limits) -> Result<Vec<usize>, InvalidInput> {
    if texts.is_empty() {
        return Err(InvalidInput::EmptyList);
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let t = t.as_ref();
            if t.is_empty() {
                return Err(InvalidInput::EmptyText { index });
            }
            let estimated_tokens = estimate_tokens(t);
            if estimated_tokens > limits.max_tokens_per_input {
                return Err(InvalidInput::TooLong {
                    index,
                    estimated_tokens,
                    limit: limits.max_tokens_per_input,
                });
            }
            Ok(estimated_tokens)
        })
        .collect()
}

/// Splits texts with the given token estimates into consecutive request ranges, each within
/// `max_inputs` inputs (capped by the limits) and the per-request token limit.
///
/// Greedy and order-preserving: concatenating the ranges gives `0..estimates.len()`.
///
/// # Panics
///
/// Never for estimates produced by [`validate`] with the same limits; a single estimate above
/// `max_tokens_per_request` gets a request of its own.
pub fn plan_requests(estimates: &[usize], limits: &Limits, max_inputs: usize) -> Vec<Range<usize>> {
    let max_inputs = max_inputs.clamp(1, limits.max_inputs_per_request.max(1));
    let mut ranges = Vec::with_capacity(estimates.len().div_ceil(max_inputs));
    let mut start = 0;
    let mut tokens = 0usize;
    for (i, &t) in estimates.iter().enumerate() {
        let full = i - start == max_inputs || tokens + t > limits.max_tokens_per_request;
        if full && i > start {
            ranges.push(start..i);
            start = i;
            tokens = 0;
        }
        tokens += t;
    }
    if start < estimates.len() {
        ranges.push(start..estimates.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_ascii_and_unicode() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcdef"), 2);
        assert_eq!(estimate_tokens("é"), 1);
        assert_eq!(estimate_tokens("abcé"), 2);
        assert_eq!(estimate_tokens("🙂🙂"), 2);
    }

    #[test]
    fn validate_reports_first_offender() {
        let limits = Limits {
            max_tokens_per_input: 2,
            ..Limits::OPENAI
        };
        assert_eq!(validate::<&str>(&[], &limits), Err(InvalidInput::EmptyList));
        assert_eq!(
            validate(&["ok", "", "x"], &limits),
            Err(InvalidInput::EmptyText { index: 1 })
        );
        assert_eq!(
            validate(&["ok", "0123456"], &limits),
            Err(InvalidInput::TooLong {
                index: 1,
                estimated_tokens: 3,
                limit: 2
            })
        );
        assert_eq!(validate(&["ok", "abcd"], &limits), Ok(vec![1, 2]));
    }

    #[test]
    fn plan_respects_every_limit_and_covers_in_order() {
        let limits = Limits {
            max_inputs_per_request: 4,
            max_tokens_per_request: 10,
            max_tokens_per_input: 10,
        };
        let est = [3, 3, 3, 3, 1, 1, 1, 1, 1, 10, 2];
        let plan = plan_requests(&est, &limits, usize::MAX);
        let mut next = 0;
        for r in &plan {
            assert_eq!(r.start, next);
            assert!(r.len() <= 4);
            assert!(est[r.clone()].iter().sum::<usize>() <= 10);
            next = r.end;
        }
        assert_eq!(next, est.len());
        assert_eq!(plan, vec![0..3, 3..7, 7..9, 9..10, 10..11]);
        assert_eq!(plan_requests(&est, &limits, 2).len(), 7);
    }
}
