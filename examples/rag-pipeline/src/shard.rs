//! Distributed ingest: the driver plans, workers build staged segments, the driver commits them.
//!
//! The single-process [`ingest`](crate::ingest) runs every stage in one process that holds the
//! writer's lock. Across processes or machines (`gilkit-rag ingest --engine ray`) the same stages
//! are split into three steps, each here and each driven from Python by the engine:
//!
//! 1. [`plan`] (driver, holds the lock): discover the files as `ingest` does (walk, globs, one key
//!    per file, the documents of deleted files to prune) and skip the files whose size and mtime
//!    match the store's record. Every other file becomes a [`ShardFile`] carrying what the store
//!    records of it, so that a worker can skip it by hash without opening the database.
//! 2. [`build_shard`] (worker, no lock, any machine that sees the files and the database folder):
//!    for its files, the pipeline's own load (hash compare: same content is only *touched*),
//!    split and embed code, in parallel on the worker's threads; the documents that got every
//!    vector are written to one staged segment ([`write_staged`]) at a path the driver chose to be
//!    unique per task attempt. The [`ShardOutcome`] (segment description, touched files, failures,
//!    counts) goes back to the driver as plain data.
//! 3. [`Store::commit_staged`](crate::store::Store::commit_staged) (driver): adopt the segments of
//!    finished shards atomically. The driver commits each shard at most once and deletes the files
//!    of attempts it did not commit; see `gilkit_rag/ray_engine.py` for the protocol.
//!
//! Documents, chunks and vectors are those the single-process ingest stores for the same files
//! (the same load and split code, `pipeline::sort_loaded` and `pipeline::split_stage`, with the
//! same limits for untrusted input; vectors equal up to the model's own batch-to-batch float
//! noise), and failures are reported alike.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::CancelToken;
use crate::embed::Embedder;
use crate::load;
use crate::parallel;
use crate::pipeline::{
    self, Failure, IngestError, IngestOptions, IngestReport, Progress, source_key,
};
use crate::split::Splitter;
use crate::store::{FileState, StagedSegment, Store, write_staged};

/// A file for a worker to look at, with what the database records of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    /// The path to read (any bytes on Unix: it crosses to the worker losslessly).
    #[serde(with = "crate::load::path_serde")]
    pub path: PathBuf,
    /// The key it is stored under.
    pub source: String,
    /// Its stored state, if the database holds it (a worker skips it if the hash is the same).
    pub stored: Option<FileState>,
}

/// What the driver decided: the work, and what needs none.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files seen: found, or given and not walkable (those are in `failures`).
    pub files: usize,
    /// Files skipped because their size and mtime are as stored.
    pub unchanged: usize,
    /// Files for the workers, in discovery order.
    pub work: Vec<ShardFile>,
    /// Stored documents whose files were deleted (to remove, if pruning).
    pub removed: Vec<String>,
    /// Paths that could not be walked or looked at.
    pub failures: Vec<Failure>,
}

/// Plans a distributed ingest of `paths` into `store`: discovery as in
/// [`ingest`](crate::ingest) (walk, globs, keys, prune list) and the size-and-mtime skip. Reads
/// no file's contents. Blocks; call with the GIL released.
pub fn plan(store: &Store, paths: &[PathBuf], opts: &IngestOptions) -> Plan {
    let (found, walk_errors) = load::discover(paths, &opts.filter);
    // Paths that could not be walked count as files seen, as in `ingest`, so that the report's
    // counts add up.
    let mut plan = Plan {
        files: walk_errors.len(),
        failures: walk_errors.into_iter().map(Failure::from).collect(),
        ..Plan::default()
    };
    let mut seen = HashSet::new();
    for path in found {
        let source = source_key(&path);
        if !seen.insert(source.clone()) {
            continue;
        }
        plan.files += 1;
        let stored = store.document(&source).map(|d| d.file.clone());
        match std::fs::metadata(&path) {
            Ok(meta)
                if stored
                    .as_ref()
                    .is_some_and(|s| s.size == meta.len() && s.mtime_ns == mtime_ns(&meta)) =>
            {
                plan.unchanged += 1;
            }
            // Unreadable metadata is the worker's to report (as a load failure, like `ingest`).
            _ => plan.work.push(ShardFile {
                path,
                source,
                stored,
            }),
        }
    }
    if opts.prune {
        plan.removed = pipeline::deleted_documents(store, paths, &seen);
    }
    plan
}

/// A file's mtime as the store records it (nanoseconds since the epoch; 0 if unknown).
fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a worker did with its shard.
#[derive(Debug, Default)]
pub struct ShardOutcome {
    /// The staged segment holding the documents stored, if any.
    pub segment: Option<StagedSegment>,
    /// Files with the stored content but a new mtime (the driver records the new state).
    pub touched: Vec<(String, FileState)>,
    /// Counts, failures, retried batches and stage timings, as `ingest` reports them (`files` is
    /// the shard's file count; `removed` is empty: pruning is the driver's).
    pub report: IngestReport,
}

/// Builds the staged segment of one shard at `out` (a path no other attempt uses; see the
/// [module docs](self)). Blocks the calling thread (it spawns scoped workers); call it with the
/// GIL released.
///
/// # Errors
/// [`IngestError::Config`] for invalid splitter settings; [`IngestError::Store`] if the segment
/// cannot be written. Per-document problems are in the outcome's failures.
pub fn build_shard(
    embedder: &dyn Embedder,
    files: &[ShardFile],
    opts: &IngestOptions,
    out: &Path,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<ShardOutcome, IngestError> {
    let splitter = Splitter::new(opts.splitter).map_err(|e| IngestError::Config(e.to_string()))?;
    let model = embedder.model_id();
    let mut outcome = ShardOutcome::default();
    let report = &mut outcome.report;
    report.files = files.len();
    progress.files_total.store(files.len(), Ordering::Relaxed);

    let t = Instant::now();
    let loaded = parallel::map(files, opts.workers, cancel, |f| {
        let out = pipeline::look_at(f.stored.as_ref(), &f.path, &opts.limits);
        progress.files_done.fetch_add(1, Ordering::Relaxed);
        out
    });
    report.timings.load = t.elapsed();
    let mut texts = Vec::new();
    for (f, slot) in files.iter().zip(loaded) {
        pipeline::sort_loaded(
            &f.path,
            &f.source,
            slot,
            report,
            &mut outcome.touched,
            &mut texts,
        );
    }
    let prepared = pipeline::split_stage(texts, &splitter, opts, progress, cancel, report);

    // Embed in waves of whole documents, as `ingest` does, to bound what is in flight.
    let mut ready = Vec::new();
    let Ok(()) = pipeline::embed_in_waves(
        embedder,
        prepared,
        opts,
        progress,
        cancel,
        report,
        |wave, _| {
            ready.extend(wave);
            Ok::<(), Infallible>(())
        },
    );
    let t = Instant::now();
    outcome.segment = write_staged(out, &model, ready).map_err(IngestError::Store)?;
    outcome.report.timings.store = t.elapsed();
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::EmbedError;
    use crate::store::OpenMode;

    /// Letter counts: deterministic, so two runs give equal vectors.
    struct Letters;
    impl Embedder for Letters {
        fn model_id(&self) -> String {
            "letters".into()
        }
        fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            texts.iter().map(|t| self.embed_query(t)).collect()
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            let mut v = vec![1.0; 26];
            for b in text.bytes().filter(u8::is_ascii_lowercase) {
                v[(b - b'a') as usize] += 1.0;
            }
            Ok(v)
        }
    }

    fn rows(store: &Store) -> Vec<(String, usize, String, Vec<f32>)> {
        let mut out: Vec<_> = store
            .live_chunks()
            .map(|(m, v)| (m.source.clone(), m.position, m.text.clone(), v.to_vec()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    #[test]
    fn plan_build_and_commit_store_what_ingest_stores_and_a_second_plan_has_no_work() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        for i in 0..7 {
            let text = format!("document {i}\n\n").repeat(40 + i);
            std::fs::write(docs.join(format!("d{i}.txt")), text).unwrap();
        }
        std::fs::write(docs.join("bad.pdf"), b"not a pdf").unwrap();
        let opts = IngestOptions {
            splitter: crate::SplitterConfig {
                size: 60,
                overlap: 10,
                ..Default::default()
            },
            workers: 2,
            ..IngestOptions::default()
        };
        let (progress, cancel) = (Progress::default(), CancelToken::new());
        let mut single = Store::open(&dir.path().join("single"), OpenMode::ReadWrite).unwrap();
        let expected = crate::ingest(
            &mut single,
            &Letters,
            std::slice::from_ref(&docs),
            &opts,
            &progress,
            &cancel,
        )
        .unwrap();

        let stage = dir.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let mut store = Store::open(&dir.path().join("sharded"), OpenMode::ReadWrite).unwrap();
        let plan = plan(&store, std::slice::from_ref(&docs), &opts);
        assert_eq!((plan.files, plan.unchanged, plan.work.len()), (8, 0, 8));
        let mut segments = Vec::new();
        let mut failures = 0;
        for (i, shard) in plan.work.chunks(3).enumerate() {
            let out = stage.join(format!("shard-{i}.seg"));
            let outcome = build_shard(&Letters, shard, &opts, &out, &progress, &cancel).unwrap();
            failures += outcome.report.failures.len();
            segments.extend(outcome.segment);
        }
        assert_eq!(failures, expected.failures.len());
        store.commit_staged(&segments).unwrap();
        assert_eq!(rows(&store), rows(&single));
        assert_eq!(store.stats().documents, expected.documents);

        // Nothing changed: no work. A file touched (same bytes, new mtime) is skipped by hash.
        assert!(plan_work(&store, &docs, &opts).is_empty());
        let d0 = docs.join("d0.txt");
        std::fs::write(&d0, std::fs::read(&d0).unwrap()).unwrap();
        let file = std::fs::File::options().write(true).open(&d0).unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        let work = plan_work(&store, &docs, &opts);
        assert_eq!(work.len(), 1);
        let out = stage.join("again.seg");
        let outcome = build_shard(&Letters, &work, &opts, &out, &progress, &cancel).unwrap();
        assert!(outcome.segment.is_none() && !out.exists());
        assert_eq!((outcome.touched.len(), outcome.report.unchanged), (1, 1));
    }

    #[cfg(unix)]
    #[test]
    fn a_shard_file_whose_name_is_not_utf8_crosses_as_json_unchanged() {
        use std::os::unix::ffi::OsStrExt;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/docs/caf\xe9.txt"));
        let file = ShardFile {
            source: crate::load::display_path(&path),
            path,
            stored: None,
        };
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(serde_json::from_str::<ShardFile>(&json).unwrap(), file);
        let utf8 = ShardFile {
            path: "/docs/café.txt".into(),
            ..file
        };
        let json = serde_json::to_string(&utf8).unwrap();
        assert!(json.contains("\"path\":\"/docs/café.txt\""), "{json}");
        assert_eq!(serde_json::from_str::<ShardFile>(&json).unwrap(), utf8);
    }

    fn plan_work(store: &Store, docs: &Path, opts: &IngestOptions) -> Vec<ShardFile> {
        // bad.pdf failed to load, so it is never stored and always planned again.
        plan(store, &[docs.to_owned()], opts)
            .work
            .into_iter()
            .filter(|f| !f.source.ends_with("bad.pdf"))
            .collect()
    }
}
