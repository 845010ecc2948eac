//! Behaviour of the pipeline and the store with a deterministic fake embedder: alignment of chunks
//! and vectors under injected failures, incremental re-ingest, crash leftovers, damage detection,
//! locking and model checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gilkit_rag::{
    CancelToken, EmbedError, Embedder, IngestOptions, OpenMode, Progress, SplitKind,
    SplitterConfig, Stage, Store,
};

const DIM: usize = 64;

/// A vector that depends only on the text (FNV-1a seeded per dimension): equal texts, equal vectors;
/// different texts, almost orthogonal vectors.
fn fake_vector(text: &str) -> Vec<f32> {
    (0..DIM as u64)
        .map(|d| {
            let mut h: u64 = 0xcbf29ce484222325 ^ d.wrapping_mul(0x9e3779b97f4a7c15);
            for b in text.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
            }
            (h >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        })
        .collect()
}

/// A fake embedder with fault injection: a batch containing `poison` always fails; a batch
/// containing `flaky` fails `flaky_failures` times and then succeeds. Counts calls and texts.
#[derive(Default)]
struct Fake {
    poison: Option<&'static str>,
    flaky: Option<&'static str>,
    flaky_failures: AtomicUsize,
    calls: AtomicUsize,
    texts: AtomicUsize,
    model: Option<&'static str>,
    seen_batches: Mutex<Vec<usize>>,
}

impl Embedder for Fake {
    fn model_id(&self) -> String {
        self.model.unwrap_or("fake/1").to_owned()
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        self.seen_batches.lock().unwrap().push(texts.len());
        if let Some(p) = self.poison
            && texts.iter().any(|t| t.contains(p))
        {
            return Err(EmbedError::transient("injected failure"));
        }
        if let Some(f) = self.flaky
            && texts.iter().any(|t| t.contains(f))
            && self
                .flaky_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(EmbedError::transient("injected flaky failure"));
        }
        Ok(texts.iter().map(|t| fake_vector(t)).collect())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(fake_vector(text))
    }
}

fn opts() -> IngestOptions {
    IngestOptions {
        splitter: SplitterConfig {
            kind: SplitKind::Recursive,
            size: 60,
            overlap: 10,
        },
        workers: 3,
        embed_batch: 4,
        embed_concurrency: 2,
        retries: 2,
        retry_backoff: Duration::from_millis(1),
        commit_every: 10,
        ..IngestOptions::default()
    }
}

/// Writes `n` documents of several sentences each; document `i` mentions `doc{i}` in every sentence.
fn write_corpus(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let path = dir.join(format!("doc{i:03}.txt"));
            let text: String = (0..6)
                .map(|s| {
                    format!(
                        "Sentence {s} of doc{i} talks about topic {}.\n\n",
                        (i * 7 + s) % 13
                    )
                })
                .collect();
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

fn ingest(store: &mut Store, emb: &Fake, paths: &[PathBuf]) -> gilkit_rag::IngestReport {
    gilkit_rag::ingest(
        store,
        emb,
        paths,
        &opts(),
        &Progress::default(),
        &CancelToken::new(),
    )
    .unwrap()
}

/// Every stored chunk's vector is the vector of its own text: searching with it finds it first.
fn assert_aligned(store: &Store, texts: &[String]) {
    for text in texts {
        let hits = store.search(&fake_vector(text), 1);
        assert_eq!(
            &hits[0].chunk.text, text,
            "the vector stored for a chunk belongs to another chunk"
        );
        assert!(hits[0].score > 0.9999);
    }
}

fn stored_texts(store: &Store) -> Vec<String> {
    // All live chunks, found through an exhaustive search.
    store
        .search(&fake_vector("anything"), usize::MAX >> 8)
        .into_iter()
        .map(|h| h.chunk.text)
        .collect()
}

#[test]
fn failed_batches_never_misalign_chunks_and_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    write_corpus(&docs, 30);
    let emb = Fake {
        poison: Some("doc7 "),
        flaky: Some("doc13 "),
        flaky_failures: AtomicUsize::new(2),
        ..Fake::default()
    };
    let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
    let report = ingest(&mut store, &emb, std::slice::from_ref(&docs));

    // doc007 and whatever shared its failing batches are reported, whole, as embed failures.
    assert!(!report.failures.is_empty());
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.stage == Stage::Embed && f.failed_chunks > 0)
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.path.ends_with("doc007.txt"))
    );
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.reason.contains("injected failure"))
    );
    // The flaky batch succeeded on its retry.
    assert!(
        (1..=2).contains(&report.retried_batches),
        "doc13 spans two batches; both may need a retry"
    );
    assert!(
        store
            .document(&gilkit_rag::pipeline::source_key(&docs.join("doc013.txt")))
            .is_some()
    );
    assert_eq!(report.documents + report.failures.len(), 30);

    let texts = stored_texts(&store);
    assert_eq!(texts.len(), report.chunks);
    assert!(
        texts.iter().all(|t| !t.contains("doc7 ")),
        "no chunk of a failed document is stored"
    );
    assert_aligned(&store, &texts);
    for f in &report.failures {
        assert!(
            store
                .document(&gilkit_rag::pipeline::source_key(&f.path))
                .is_none()
        );
    }

    // The next run retries exactly the failed documents.
    let healed = Fake::default();
    let again = ingest(&mut store, &healed, &[docs]);
    assert_eq!(again.documents, report.failures.len());
    assert_eq!(again.unchanged, report.documents);
    assert!(again.failures.is_empty());
    assert_aligned(&store, &stored_texts(&store));
}

#[test]
fn incremental_reingest_skips_unchanged_and_replaces_changed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 12);
    let db = dir.path().join("db");
    let emb = Fake::default();
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let first = ingest(&mut store, &emb, &paths);
    assert_eq!((first.documents, first.unchanged), (12, 0));
    let chunks = store.stats().chunks;
    let doc0_chunks = stored_texts(&store)
        .iter()
        .filter(|t| t.contains("doc0 "))
        .count();
    assert!(doc0_chunks > 0);
    drop(store);

    // Unchanged: no embedding at all, nothing written.
    let emb = Fake::default();
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let second = ingest(&mut store, &emb, &paths);
    assert_eq!((second.documents, second.unchanged), (0, 12));
    assert_eq!(emb.calls.load(Ordering::SeqCst), 0);

    // Same content, new mtime: recorded, not re-embedded.
    let f = std::fs::File::options()
        .write(true)
        .open(&paths[1])
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    // Changed content: its chunks are replaced.
    std::fs::write(&paths[0], "A brand new text about zebras.\n\nNothing else.").unwrap();
    let third = ingest(&mut store, &emb, &paths);
    assert_eq!((third.documents, third.unchanged), (1, 11));
    assert_eq!(emb.texts.load(Ordering::SeqCst), third.chunks);
    let texts = stored_texts(&store);
    assert!(texts.iter().any(|t| t.contains("zebras")));
    assert!(
        !texts.iter().any(|t| t.contains("doc0 ")),
        "the old chunks of a changed file are gone"
    );
    let stats = store.stats();
    assert_eq!(stats.documents, 12);
    assert_eq!(stats.chunks, chunks - doc0_chunks + third.chunks);
    assert_eq!(stats.dead_rows, doc0_chunks);
    assert_aligned(&store, &texts);

    // And the mtime-only change is now skipped without hashing: a 4th run does nothing.
    let fourth = ingest(&mut store, &emb, &paths);
    assert_eq!(fourth.unchanged, 12);
}

#[test]
fn deleted_files_are_removed_only_from_under_the_directories_given() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::create_dir(&b).unwrap();
    let in_a = write_corpus(&a, 4);
    let in_sub = write_corpus(&a.join("sub"), 2);
    let in_b = write_corpus(&b, 2);
    let key = |p: &Path| gilkit_rag::pipeline::source_key(p);
    let db = dir.path().join("db");
    let emb = Fake::default();
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let first = ingest(&mut store, &emb, &[a.clone(), b.clone()]);
    assert_eq!((first.documents, first.removed.len()), (8, 0));
    let gone_a0 = key(&in_a[0]);
    let gone_sub1 = key(&in_sub[1]);
    let gone_b0 = key(&in_b[0]);

    // Deleted under `a`, deleted under `b`, and one of `a` that still exists but is excluded now.
    for p in [&in_a[0], &in_sub[1], &in_b[0]] {
        std::fs::remove_file(p).unwrap();
    }
    let mut o = opts();
    o.filter = gilkit_rag::load::Filter::new(&[], &["doc003.txt".to_owned()]).unwrap();
    let run = |store: &mut Store, paths: &[PathBuf], o: &IngestOptions| {
        gilkit_rag::ingest(
            store,
            &emb,
            paths,
            o,
            &Progress::default(),
            &CancelToken::new(),
        )
        .unwrap()
    };
    // Opted out: nothing removed.
    let kept = run(
        &mut store,
        std::slice::from_ref(&a),
        &IngestOptions {
            prune: false,
            ..o.clone()
        },
    );
    assert!(kept.removed.is_empty());
    assert!(store.document(&gone_a0).is_some());
    // A directory that does not exist prunes nothing, even if documents were stored from there.
    let missing = run(&mut store, &[dir.path().join("a-unmounted")], &o);
    assert!(missing.removed.is_empty());

    let report = run(&mut store, std::slice::from_ref(&a), &o);
    let mut expected = vec![gone_a0.clone(), gone_sub1.clone()];
    expected.sort();
    assert_eq!(report.removed, expected);
    assert_eq!(
        (report.files, report.unchanged),
        (3, 3),
        "a1, a2 and sub0 are unchanged; a3 is excluded, not looked at"
    );
    for gone in [&gone_a0, &gone_sub1] {
        assert!(store.document(gone).is_none());
    }
    assert!(
        store.document(&key(&in_a[3])).is_some(),
        "an excluded file that exists stays"
    );
    assert!(
        store.document(&gone_b0).is_some(),
        "nothing outside the directories given is touched"
    );
    assert_eq!(store.stats().documents, 6);
    let live: Vec<String> = store.live_chunks().map(|(m, _)| m.source.clone()).collect();
    assert!(!live.contains(&gone_a0) && !live.contains(&gone_sub1));
    assert_aligned(&store, &stored_texts(&store));

    // Reopened, the removal holds; ingesting `b` removes its own deleted file.
    drop(store);
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert!(store.document(&gone_a0).is_none());
    assert_eq!(run(&mut store, &[b], &o).removed, [gone_b0]);
    assert_eq!(store.stats().documents, 5);
}

#[test]
fn leftovers_of_a_killed_commit_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 5);
    let db = dir.path().join("db");
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    ingest(&mut store, &Fake::default(), &paths);
    let before = store.stats();
    drop(store);
    // What a process killed mid-commit leaves: a complete but unreferenced segment, half-written
    // temporary files.
    std::fs::write(
        db.join("seg-000099.seg"),
        b"GKRAGSG1 complete but never committed",
    )
    .unwrap();
    std::fs::write(db.join("seg-000100.seg.tmp"), b"GKRAG").unwrap();
    std::fs::write(db.join("MANIFEST.tmp"), b"{\"format\": 1, \"segm").unwrap();

    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert_eq!(store.stats(), before);
    for leftover in ["seg-000099.seg", "seg-000100.seg.tmp", "MANIFEST.tmp"] {
        assert!(!db.join(leftover).exists(), "{leftover} was not cleaned up");
    }
}

#[test]
fn damaged_segments_are_reported_not_searched() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 3);
    let db = dir.path().join("db");
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    ingest(&mut store, &Fake::default(), &paths);
    drop(store);
    let seg = std::fs::read_dir(&db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x55; // one flipped bit pattern inside a vector
    std::fs::write(&seg, &bytes).unwrap();
    let err = Store::open(&db, OpenMode::ReadOnly).unwrap_err();
    assert!(err.is_corrupt(), "{err}");
    assert!(err.to_string().contains("checksum"));
}

#[test]
fn one_writer_at_a_time_readers_beside_it_and_one_model_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 2);
    let db = dir.path().join("db");
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    ingest(&mut store, &Fake::default(), &paths);
    assert!(
        Store::open(&db, OpenMode::ReadWrite)
            .unwrap_err()
            .is_locked()
    );
    // Readers take no lock: they open beside the writer and see its last commit.
    let reader = Store::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(reader.stats(), store.stats());
    std::fs::write(&paths[0], "changed").unwrap();
    let other = Fake {
        model: Some("other/2"),
        ..Fake::default()
    };
    let err = gilkit_rag::ingest(
        &mut store,
        &other,
        &paths,
        &opts(),
        &Progress::default(),
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("other/2"), "{err}");
    let err = gilkit_rag::query(&store, &other, "x", 3).unwrap_err();
    assert!(matches!(err, gilkit_rag::QueryError::ModelMismatch { .. }));
    store.release_lock();
    assert!(Store::open(&db, OpenMode::ReadOnly).is_ok());
    assert!(
        Store::open(&dir.path().join("none"), OpenMode::ReadOnly)
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn compaction_keeps_every_live_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 4);
    let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
    let emb = Fake::default();
    ingest(&mut store, &emb, &paths);
    // Rewrite every file several times: dead rows pile up, compaction reclaims them.
    let mut expected = HashMap::new();
    for round in 0..3 {
        for (i, p) in paths.iter().enumerate() {
            let text = format!("Round {round} text of file {i}.\n\nSecond paragraph {round}/{i}.");
            std::fs::write(p, &text).unwrap();
            expected.insert(i, text);
        }
        ingest(&mut store, &emb, &paths);
    }
    let stats = store.stats();
    assert!(stats.dead_rows <= stats.chunks, "compaction ran: {stats:?}");
    store.compact(true).unwrap();
    assert_eq!(store.stats().dead_rows, 0);
    assert_eq!(store.stats().segments, 1);
    let texts = stored_texts(&store);
    assert_eq!(texts.len(), 4, "one chunk per file, latest round only");
    assert!(texts.iter().all(|t| t.contains("Round 2")));
    assert_aligned(&store, &texts);
}

#[test]
fn cancellation_keeps_committed_documents_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_corpus(dir.path(), 20);
    let db = dir.path().join("db");
    let token = CancelToken::new();
    /// Cancels the ingest from inside its third embedding call.
    struct CancelAfter<'a>(Fake, &'a CancelToken);
    impl Embedder for CancelAfter<'_> {
        fn model_id(&self) -> String {
            self.0.model_id()
        }
        fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            if self.0.calls.load(Ordering::SeqCst) == 2 {
                self.1.cancel();
            }
            self.0.embed_passages(texts)
        }
        fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
            self.0.embed_query(text)
        }
    }
    let emb = CancelAfter(Fake::default(), &token);
    let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let mut o = opts();
    o.embed_concurrency = 1;
    let report =
        gilkit_rag::ingest(&mut store, &emb, &paths, &o, &Progress::default(), &token).unwrap();
    assert!(report.cancelled);
    assert!(report.documents < 20);
    drop(store);
    let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert_eq!(store.stats().documents, report.documents);
    assert_aligned(&store, &stored_texts(&store));
}
