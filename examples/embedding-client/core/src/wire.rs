//! The OpenAI embeddings wire format, for the client (encode requests, decode responses) and the
//! service (decode requests, encode responses).
//!
//! Vectors travel either as JSON numbers (`"encoding_format": "float"`) or as base64 of the
//! little-endian `f32` bytes (`"base64"`, what the official client asks for by default: about a
//! third of the size and much cheaper to parse).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::provider::Embeddings;

/// How vectors are encoded in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of little-endian `f32` bytes.
    #[default]
    Base64,
}

impl EncodingFormat {
    /// `"float"` or `"base64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EncodingFormat::Float => "float",
            EncodingFormat::Base64 => "base64",
        }
    }
}

/// A `POST /v1/embeddings` request body as the client sends it.
#[derive(Debug, Serialize)]
pub struct EmbeddingRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// The texts.
    pub input: &'a [String],
    /// Response encoding.
    pub encoding_format: EncodingFormat,
    /// Output dimensions, for models that support shortening.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// `input` of a request as the service accepts it: one string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// A single string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
    /// Anything else (token arrays, numbers...): refused with a clear message.
    Other(serde_json::Value),
}

/// A `POST /v1/embeddings` request body as the service accepts it.
#[derive(Debug, Deserialize)]
pub struct ServiceRequest {
    /// The texts.
    pub input: Option<Input>,
    /// Model name (echoed back; the service serves one model).
    #[serde(default)]
    pub model: Option<String>,
    /// `"float"` (default) or `"base64"`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Requested dimensions; only the model's own is accepted.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// OpenAI's end-user id: accepted (and ignored) when it is a string.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ResponseBody {
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vector,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Deserialize, Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Decodes a 2xx embeddings response for `expected` inputs into rows ordered by `index`.
///
/// # Errors
///
/// A message saying what is wrong: not JSON, wrong count, missing or duplicate index, bad base64,
/// vectors of different lengths.
pub fn decode_response(body: &[u8], expected: usize) -> Result<Embeddings, String> {
    let parsed: ResponseBody = serde_json::from_slice(body)
        .map_err(|e| format!("body is not an embeddings response: {e}"))?;
    if parsed.data.len() != expected {
        return Err(format!(
            "sent {expected} inputs but got {} embeddings back",
            parsed.data.len()
        ));
    }
    let mut dim = None;
    let mut values = vec![0f32; 0];
    let mut seen = vec![false; expected];
    for item in parsed.data {
        if item.index >= expected || std::mem::replace(&mut seen[item.index], true) {
            return Err(format!(
                "embedding index {} is out of range or repeated",
                item.index
            ));
        }
        let row: Vec<f32> = match item.embedding {
            Vector::Float(v) => v,
            Vector::Base64(s) => decode_base64_f32(&s)?,
        };
        if row.is_empty() {
            return Err(format!("embedding {} is empty", item.index));
        }
        let d = *dim.get_or_insert(row.len());
        if row.len() != d {
            return Err(format!(
                "embedding {} has {} dimensions, but an earlier one has {d}",
                item.index,
                row.len()
            ));
        }
        if values.is_empty() {
            values = vec![0f32; d * expected];
        }
        values[item.index * d..(item.index + 1) * d].copy_from_slice(&row);
    }
    let dim = dim.unwrap_or(0);
    let tokens = parsed.usage.map_or(0, |u| u.prompt_tokens);
    Ok(Embeddings::from_flat(values, dim, tokens))
}

/// Decodes base64 of little-endian `f32`s.
///
/// # Errors
///
/// When the text is not base64 or its length is not a multiple of 4 bytes.
pub fn decode_base64_f32(s: &str) -> Result<Vec<f32>, String> {
    let bytes = B64
        .decode(s)
        .map_err(|e| format!("invalid base64 embedding: {e}"))?;
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "base64 embedding has {} bytes, not a multiple of 4",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Encodes `f32`s as base64 of their little-endian bytes.
pub fn encode_base64_f32(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    B64.encode(bytes)
}

/// Writes an embeddings response body (the service's side).
pub fn encode_response(emb: &Embeddings, model: &str, format: EncodingFormat) -> Vec<u8> {
    use std::io::Write as _;
    // Written by hand rather than through serde structs: one pass, no intermediate Vec<Vec<f32>>.
    let mut out = Vec::with_capacity(64 + emb.len() * (emb.dim() * 12 + 48));
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, row) in emb.rows().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write!(
            out,
            "{{\"object\":\"embedding\",\"index\":{i},\"embedding\":"
        )
        .expect("Vec write");
        match format {
            EncodingFormat::Base64 => {
                out.push(b'"');
                out.extend_from_slice(encode_base64_f32(row).as_bytes());
                out.push(b'"');
            }
            EncodingFormat::Float => {
                serde_json::to_writer(&mut out, row).expect("f32 slices serialize");
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    serde_json::to_writer(&mut out, model).expect("strings serialize");
    let usage = Usage {
        prompt_tokens: emb.prompt_tokens(),
        total_tokens: emb.prompt_tokens(),
    };
    out.extend_from_slice(b",\"usage\":");
    serde_json::to_writer(&mut out, &usage).expect("usage serializes");
    out.push(b'}');
    out
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }))
    .expect("JSON values serialize")
}

/// The fields of an OpenAI-style error body, when the body is one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `error.message`.
    pub message: Option<String>,
    /// `error.type`.
    pub error_type: Option<String>,
    /// `error.code` (strings as is, numbers as text).
    pub code: Option<String>,
}

/// Reads an OpenAI-style error body; fields are `None` when absent or when the body is not one.
pub fn parse_error_body(body: &[u8]) -> ErrorFields {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return ErrorFields::default();
    };
    let err = v.get("error").unwrap_or(&v);
    let text = |k: &str| match err.get(k) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    ErrorFields {
        message: text("message").or_else(|| err.as_str().map(str::to_owned)),
        error_type: text("type"),
        code: text("code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_encodings_out_of_order() {
        let emb = Embeddings::from_flat(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 7);
        for fmt in [EncodingFormat::Float, EncodingFormat::Base64] {
            let body = encode_response(&emb, "m", fmt);
            let back = decode_response(&body, 2).unwrap();
            assert_eq!(back, emb);
        }
        // Items in reverse order are put back by index.
        let body = br#"{"data":[{"index":1,"embedding":[3.0,4.0]},{"index":0,"embedding":"AACAPwAAAEA="}]}"#;
        let back = decode_response(body, 2).unwrap();
        assert_eq!(back.row(0), &[1.0, 2.0]);
        assert_eq!(back.row(1), &[3.0, 4.0]);
    }

    #[test]
    fn rejects_bad_bodies() {
        let cases: [(&[u8], &str); 5] = [
            (b"{\"data\": [", "not an embeddings response"),
            (br#"{"data":[]}"#, "got 0 embeddings"),
            (
                br#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]}"#,
                "repeated",
            ),
            (
                br#"{"data":[{"index":0,"embedding":[1]},{"index":1,"embedding":[1,2]}]}"#,
                "dimensions",
            ),
            (
                br#"{"data":[{"index":0,"embedding":"AAA="},{"index":1,"embedding":[1]}]}"#,
                "multiple of 4",
            ),
        ];
        for (body, want) in cases {
            let err = decode_response(body, 2).unwrap_err();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn error_bodies() {
        let f = parse_error_body(&error_body(
            "nope",
            "invalid_request_error",
            None,
            Some("bad"),
        ));
        assert_eq!(f.message.as_deref(), Some("nope"));
        assert_eq!(f.error_type.as_deref(), Some("invalid_request_error"));
        assert_eq!(f.code.as_deref(), Some("bad"));
        assert_eq!(parse_error_body(b"<html>"), ErrorFields::default());
    }
}
