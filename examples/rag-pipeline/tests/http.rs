//! The HTTP embedder against gilkit-embed's fault-injecting loopback server: vectors stay with
//! their chunks, a batch that keeps failing is reported and not stored, a transient failure recovers.

use std::time::Duration;

use gilkit_embed::EmbeddingConfig;
use gilkit_embed::testing::{FaultConfig, FaultServer, expected_embedding};
use gilkit_rag::client::ClientEmbedder;
use gilkit_rag::{CancelToken, Embedder, IngestOptions, OpenMode, Progress, Stage, Store};

#[test]
fn http_embedder_keeps_vectors_aligned_and_reports_failed_batches() {
    let server = FaultServer::start(FaultConfig::default()).unwrap();
    let mut config = EmbeddingConfig::openai("test-key");
    config.base_url = server.base_url();
    config.model = "fault-model".into();
    config.retry.max_retries = 1;
    config.retry.initial_delay = Duration::from_millis(5);
    config.retry.max_delay = Duration::from_millis(20);
    let embedder = ClientEmbedder::http(config).unwrap();
    assert_eq!(embedder.model_id(), "openai/fault-model");

    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    // One chunk per document, one document per request: each request's first input is a document.
    let mut texts = Vec::new();
    for i in 0..12 {
        let text = match i {
            3 => "@500 this document's batch always fails".to_owned(),
            7 => "@503*1 this one fails once, then succeeds".to_owned(),
            _ => format!("Document {i} is about subject number {i}."),
        };
        std::fs::write(docs.join(format!("d{i:02}.txt")), &text).unwrap();
        texts.push(text);
    }
    let opts = IngestOptions {
        embed_batch: 1,
        embed_concurrency: 4,
        retries: 0, // the client retries; the pipeline adds none here
        ..IngestOptions::default()
    };
    let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
    let report = gilkit_rag::ingest(
        &mut store,
        &embedder,
        &[docs],
        &opts,
        &Progress::default(),
        &CancelToken::new(),
    )
    .unwrap();

    assert_eq!(report.documents, 11, "{:?}", report.failures);
    assert_eq!(report.failures.len(), 1);
    assert!(report.failures[0].path.ends_with("d03.txt"));
    assert_eq!(report.failures[0].stage, Stage::Embed);
    assert!(
        report.failures[0].reason.contains("500"),
        "{}",
        report.failures[0].reason
    );
    assert_eq!(
        server.attempts("@503*1 this one fails once, then succeeds"),
        2
    );

    // Every stored vector is the one the server computed for that chunk's own text.
    let dim = FaultConfig::default().dim;
    let stored: Vec<_> = store.live_chunks().collect();
    assert_eq!(stored.len(), 11);
    for (chunk, vector) in stored {
        assert_ne!(chunk.text, texts[3], "the failed document was stored");
        let mut expected = expected_embedding(&chunk.text, dim);
        gilkit_rag::embed::normalize(&mut expected);
        for (a, b) in vector.iter().zip(&expected) {
            assert!(
                (a - b).abs() < 1e-6,
                "{:?}'s vector is not its own",
                chunk.text
            );
        }
    }
}

/// The pipeline's own retries on the async path: the client gives up at once (no retries of its
/// own), the pipeline tries the batch again, and the retried batch is counted and stored.
#[test]
fn pipeline_retries_a_failed_http_batch() {
    let server = FaultServer::start(FaultConfig::default()).unwrap();
    let mut config = EmbeddingConfig::openai("test-key");
    config.base_url = server.base_url();
    config.model = "fault-model".into();
    config.retry.max_retries = 0;
    let embedder = ClientEmbedder::http(config).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let flaky = "@503*1 this one fails once, then succeeds";
    std::fs::write(docs.join("flaky.txt"), flaky).unwrap();
    std::fs::write(docs.join("fine.txt"), "A healthy document.").unwrap();
    let opts = IngestOptions {
        embed_batch: 1,
        embed_concurrency: 2,
        retries: 1,
        retry_backoff: Duration::from_millis(1),
        ..IngestOptions::default()
    };
    let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
    let report = gilkit_rag::ingest(
        &mut store,
        &embedder,
        &[docs],
        &opts,
        &Progress::default(),
        &CancelToken::new(),
    )
    .unwrap();

    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.documents, report.retried_batches), (2, 1));
    assert_eq!(server.attempts(flaky), 2);
}
