//! [`EmbeddingClient`]: validation, request splitting, concurrent dispatch, ordered reassembly.
//!
//! A call is validated whole before anything is sent ([`crate::tokens::validate`]), split into
//! requests within the provider's limits ([`crate::tokens::plan_requests`]), and the requests run
//! concurrently (up to `max_concurrency`), each result written to the slot of its request's index,
//! so reassembly is a concatenation in index order and cannot misalign vectors and texts. (Not
//! `futures`' `buffered`: it keeps a finished request's place in the window until every earlier
//! one has finished, so one slow request would hold back the others.)
//!
//! [`EmbeddingClient::embed_batches`] is the many-batches form (`embed_batch_parallel` in Python),
//! run on gilkit's batch executor (`gilkit::batch::run_async`): each batch succeeds, fails, times
//! out on its own, and the result keeps one slot per input batch, in input order.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use gilkit::batch::{self, BatchOptions, BatchReport, Outcome};

use crate::config::EmbeddingConfig;
use crate::error::{DecodeError, EmbedError, InvalidInput, TransportError, TransportKind};
use crate::openai::OpenAiEmbedder;
use crate::provider::{Embedder, Embeddings};
use crate::tokens::{self, Limits};

/// Splitting and concurrency settings of a client over any [`Embedder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Most inputs per request (capped by the provider's limits).
    pub max_batch_size: usize,
    /// Most requests of one call in flight at once.
    pub max_concurrency: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_batch_size: Limits::OPENAI.max_inputs_per_request,
            max_concurrency: 64,
        }
    }
}

/// The outcome of [`EmbeddingClient::embed_batches`]: one result per input batch, in input order.
#[derive(Debug)]
pub struct BatchResults {
    /// `results[i]` is batch `i`'s vectors or its error.
    pub results: Vec<Result<Embeddings, EmbedError>>,
    /// Totals of the run.
    pub stats: BatchStats,
}

/// Totals of one [`EmbeddingClient::embed_batches`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    /// Batches that succeeded.
    pub succeeded: usize,
    /// Batches that failed.
    pub failed: usize,
    /// Vectors returned.
    pub embeddings: usize,
    /// Prompt tokens reported by the provider.
    pub prompt_tokens: u64,
    /// Time from a batch's start to its end, over the batches that finished by themselves
    /// (count 0 when none did).
    pub latency: gilkit::stats::LatencySummary,
    /// Wall time of the whole run.
    pub duration: Duration,
}

/// An embedding client: one provider (with its connection pool), shared by every call and thread.
///
/// Cheap to share: wrap it in an `Arc` (the Python package does) or clone the `Arc` inside.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), gilkit_embed::EmbedError> {
/// use gilkit_embed::{EmbeddingClient, EmbeddingConfig};
///
/// let client = EmbeddingClient::new(EmbeddingConfig::from_env()?)?;
/// let vectors = client.embed_many(&["a cat".to_string(), "a dog".to_string()]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmbeddingClient {
    embedder: Arc<dyn Embedder>,
    http: Option<Arc<OpenAiEmbedder>>,
    options: ClientOptions,
}

impl std::fmt::Debug for EmbeddingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingClient")
            .field("model", &self.embedder.model())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EmbeddingClient {
    /// A client of an OpenAI-compatible HTTP endpoint.
    ///
    /// # Errors
    ///
    /// [`EmbedError::InvalidInput`] for a bad configuration.
    pub fn new(config: EmbeddingConfig) -> Result<Self, EmbedError> {
        let options = ClientOptions {
            max_batch_size: config.max_batch_size,
            max_concurrency: config.max_concurrency,
        };
        let http = Arc::new(OpenAiEmbedder::new(config)?);
        Ok(EmbeddingClient {
            embedder: http.clone(),
            http: Some(http),
            options,
        })
    }

    /// A client over any provider (for example an in-process Python model).
    pub fn with_embedder(embedder: Arc<dyn Embedder>, options: ClientOptions) -> Self {
        EmbeddingClient {
            embedder,
            http: None,
            options: ClientOptions {
                max_batch_size: options.max_batch_size.max(1),
                max_concurrency: options.max_concurrency.max(1),
            },
        }
    }

    /// The provider.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The HTTP provider, when this client is one (for its stats and configuration).
    pub fn http(&self) -> Option<&OpenAiEmbedder> {
        self.http.as_deref()
    }

    /// The splitting and concurrency settings.
    pub fn options(&self) -> ClientOptions {
        self.options
    }

    /// Embeds one text.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] for an empty or too long text (before any request); otherwise whatever the
    /// provider reports.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let texts = [text.to_owned()];
        Ok(self.embed_many(&texts).await?.into_flat())
    }

    /// Embeds `texts`: one vector per text, in order.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] before any request when a text is empty or too long or the list is empty;
    /// otherwise the first failed request's error (the others are abandoned: a partial result could
    /// not be aligned with the input).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons every request of the call.
    pub async fn embed_many(&self, texts: &[String]) -> Result<Embeddings, EmbedError> {
        let limits = self.embedder.limits();
        let estimates = tokens::validate(texts, &limits)?;
        self.embed_validated(texts, &estimates, &limits, self.options.max_concurrency)
            .await
    }

    async fn embed_validated(
        &self,
        texts: &[String],
        estimates: &[usize],
        limits: &Limits,
        concurrency: usize,
    ) -> Result<Embeddings, EmbedError> {
        let plan = tokens::plan_requests(estimates, limits, self.options.max_batch_size);
        if let [only] = plan.as_slice() {
            let part = self.embedder.embed(&texts[only.clone()]).await?;
            return self.checked(part, only.clone());
        }
        let parts = try_run_indexed(plan.len(), concurrency, |i| {
            let range = plan[i].clone();
            async move {
                let part = self.embedder.embed(&texts[range.clone()]).await?;
                self.checked(part, range)
            }
        })
        .await?;
        Embeddings::concat(parts).map_err(|e| self.bad_vectors(e))
    }

    /// Refuses a provider's answer for the inputs `range` unless it has one vector per input,
    /// every value finite, and the declared dimension (when the provider has one). The error names
    /// the first offending input by its index in the caller's list.
    fn checked(&self, part: Embeddings, range: Range<usize>) -> Result<Embeddings, EmbedError> {
        if part.len() != range.len() {
            return Err(self.bad_vectors(format!(
                "got {} vectors for the {} inputs {}..{}",
                part.len(),
                range.len(),
                range.start,
                range.end
            )));
        }
        if let Some(i) = part.first_non_finite() {
            return Err(self.bad_vectors(format!(
                "the vector of input {} contains NaN or infinity",
                range.start + i
            )));
        }
        if let Some(want) = self.embedder.dimensions()
            && part.dim() != want
        {
            return Err(self.bad_vectors(format!(
                "the vector of input {} has {} dimensions, but {want} were asked for (dimensions={want})",
                range.start,
                part.dim()
            )));
        }
        Ok(part)
    }

    /// An unusable answer: a response validation error for an HTTP provider, a model error for an
    /// in-process one.
    fn bad_vectors(&self, message: String) -> EmbedError {
        if self.http.is_some() {
            EmbedError::Decode(DecodeError {
                message,
                status: 200,
                request_id: None,
            })
        } else {
            EmbedError::Provider(message)
        }
    }

    /// Embeds many batches concurrently; each batch succeeds or fails on its own.
    ///
    /// Up to `max_concurrency` batches (default: the client's) run at once; `timeout` bounds each
    /// batch. The result has exactly one entry per input batch, in input order.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`] before any request when a batch is empty or holds an empty or too long
    /// text. Failures of individual batches are reported in [`BatchResults::results`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons every batch still running.
    pub async fn embed_batches(
        &self,
        batches: &[Vec<String>],
        max_concurrency: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<BatchResults, EmbedError> {
        self.validate_batches(batches)?;
        let options = self.batch_options(max_concurrency, timeout);
        let indices = (0..batches.len()).collect();
        let report = batch::run_async(indices, &options, |i| self.embed_many(&batches[i])).await;
        Ok(BatchResults::from_report(report, timeout))
    }

    /// Checks every batch as [`EmbeddingClient::embed_batches`] does before sending anything.
    ///
    /// # Errors
    ///
    /// [`InvalidInput::EmptyBatch`] for an empty batch, and what [`tokens::validate`] reports.
    pub fn validate_batches(&self, batches: &[Vec<String>]) -> Result<(), EmbedError> {
        let limits = self.embedder.limits();
        for (batch, texts) in batches.iter().enumerate() {
            if texts.is_empty() {
                return Err(InvalidInput::EmptyBatch { batch }.into());
            }
            tokens::validate(texts, &limits)?;
        }
        Ok(())
    }

    /// The batch-executor options of a many-batches call: `max_concurrency` batches in flight
    /// (default: the client's), `timeout` per batch.
    pub fn batch_options(
        &self,
        max_concurrency: Option<usize>,
        timeout: Option<Duration>,
    ) -> BatchOptions {
        BatchOptions {
            max_concurrency: Some(
                max_concurrency
                    .unwrap_or(self.options.max_concurrency)
                    .max(1),
            ),
            item_timeout: timeout.filter(|t| !t.is_zero()),
            ..BatchOptions::default()
        }
    }
}

impl BatchResults {
    /// Turns the executor's per-batch outcomes into results: a timed-out batch becomes a timeout
    /// error, a panic a provider error, a cancelled batch [`EmbedError::Cancelled`].
    pub fn from_report(
        report: BatchReport<Embeddings, EmbedError>,
        timeout: Option<Duration>,
    ) -> Self {
        let mut stats = BatchStats {
            duration: report.stats.duration,
            latency: report.stats.latency,
            ..BatchStats::default()
        };
        let results: Vec<_> = report
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Ok(e) => Ok(e),
                Outcome::Err(e) => Err(e),
                Outcome::TimedOut => Err(batch_timeout(timeout.unwrap_or_default())),
                Outcome::Panicked(message) => Err(EmbedError::Provider(format!(
                    "embedding the batch panicked: {message}"
                ))),
                Outcome::Cancelled => Err(EmbedError::Cancelled),
            })
            .inspect(|r| match r {
                Ok(e) => {
                    stats.succeeded += 1;
                    stats.embeddings += e.len();
                    stats.prompt_tokens += e.prompt_tokens();
                }
                Err(_) => stats.failed += 1,
            })
            .collect();
        BatchResults { results, stats }
    }
}

/// Runs `make(i)` for every `i` in `0..n`, at most `limit` at once, and returns the outputs in
/// index order; the first error is returned at once and the work still running is dropped
/// (cancelled). Indices, not references, go through the closure: a closure taking references
/// makes the future not `Send` for every lifetime (rust-lang/rust#64552).
async fn try_run_indexed<T, E, Fut>(
    n: usize,
    limit: usize,
    mut make: impl FnMut(usize) -> Fut,
) -> Result<Vec<T>, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut finished = stream::iter(0..n)
        .map(|i| {
            let work = make(i);
            async move { (i, work.await) }
        })
        .buffer_unordered(limit.max(1));
    while let Some((i, out)) = finished.next().await {
        slots[i] = Some(out?);
    }
    Ok(slots
        .into_iter()
        .map(|slot| slot.expect("every index ran to completion"))
        .collect())
}

fn batch_timeout(limit: Duration) -> EmbedError {
    EmbedError::Transport(TransportError {
        kind: TransportKind::Timeout,
        message: format!("the batch did not finish within {} ms", limit.as_millis()),
        request_id: None,
        attempts: 0,
    })
}
