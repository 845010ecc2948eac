//! The database folder under attack and accident (issue 16, findings 1-3): someone else's folder,
//! a file, a changed digit in MANIFEST, lying row counts, name collisions with segments; and the
//! way back: `check`, `repair`, and committing segments written elsewhere.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use gilkit_rag::store::{self, ChunkMeta, FileState, NewDocument, SegmentEntry};
use gilkit_rag::{OpenMode, Store};

fn doc(source: &str, n: usize, version: u32) -> NewDocument {
    let chunks = (0..n)
        .map(|i| {
            let text = format!("{source} v{version} chunk {i}");
            let meta = ChunkMeta {
                source: source.to_owned(),
                position: i,
                start_byte: 0,
                end_byte: text.len(),
                start_char: 0,
                end_char: text.len(),
                text,
            };
            (meta, vec![1.0, i as f32, version as f32, 0.5])
        })
        .collect();
    NewDocument {
        source: source.to_owned(),
        file: state(version),
        chunks,
    }
}

fn state(version: u32) -> FileState {
    FileState {
        hash: format!("{:064x}", version),
        size: 10,
        mtime_ns: u64::from(version),
        format: "txt".to_owned(),
        encoding: None,
    }
}

/// A database with documents `a` (3 chunks, segment 1) and `b` (2 chunks, segment 2).
fn database(db: &Path) {
    let mut s = Store::open(db, OpenMode::ReadWrite).unwrap();
    s.commit("m", vec![doc("a", 3, 1)]).unwrap();
    s.commit("m", vec![doc("b", 2, 1)]).unwrap();
}

/// Every file of a folder with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

/// The manifest's JSON (after the header line).
fn manifest_json(db: &Path) -> serde_json::Value {
    let bytes = fs::read(db.join("MANIFEST")).unwrap();
    let start = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert!(bytes.starts_with(b"gilkit_rag MANIFEST 2 blake3:"));
    serde_json::from_slice(&bytes[start..]).unwrap()
}

/// Writes `json` as a format-2 manifest with a valid checksum (what an attacker who knows the
/// format, or a buggy tool, would write).
fn write_signed(db: &Path, json: &serde_json::Value) {
    let body = serde_json::to_vec_pretty(json).unwrap();
    let mut out = format!(
        "gilkit_rag MANIFEST 2 blake3:{}\n",
        blake3::hash(&body).to_hex()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    fs::write(db.join("MANIFEST"), out).unwrap();
}

/// Writes `json` as a format-1 manifest (plain JSON, no checksum: what older builds wrote).
fn write_format_1(db: &Path, json: &serde_json::Value) {
    let mut json = json.clone();
    json["format"] = 1.into();
    fs::write(
        db.join("MANIFEST"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    (dir, db)
}

#[test]
fn a_users_folder_is_refused_and_left_untouched() {
    let (_dir, db) = tmp();
    fs::create_dir(&db).unwrap();
    for (name, bytes) in [
        ("notes.txt", &b"my notes"[..]),
        ("report.tmp", b"draft"),
        ("seg-000001.seg", b"GKRAGSG1 but the user's"),
        ("MANIFEST.tmp", b"user data"),
    ] {
        fs::write(db.join(name), bytes).unwrap();
    }
    let before = snapshot(&db);
    let err = Store::open(&db, OpenMode::ReadWrite).unwrap_err();
    assert!(err.is_not_a_database(), "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(snapshot(&db), before, "nothing created, changed or deleted");

    // A MANIFEST that is not gilkit_rag's (a Python sdist has one) is someone else's folder too.
    fs::write(db.join("MANIFEST"), b"include README.md\n").unwrap();
    let before = snapshot(&db);
    let err = Store::open(&db, OpenMode::ReadWrite).unwrap_err();
    assert!(err.is_not_a_database(), "{err}");
    assert!(
        Store::open(&db, OpenMode::ReadOnly)
            .unwrap_err()
            .is_not_a_database()
    );
    assert_eq!(snapshot(&db), before);
}

#[test]
fn a_file_is_not_a_database_and_an_empty_folder_is_claimed_at_once() {
    let (dir, db) = tmp();
    let file = dir.path().join("notes.txt");
    fs::write(&file, b"keep me").unwrap();
    for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let err = Store::open(&file, mode).unwrap_err();
        assert!(err.is_not_a_database(), "{err}");
        assert!(err.to_string().contains("is a file"), "{err}");
    }
    assert_eq!(fs::read(&file).unwrap(), b"keep me");

    fs::create_dir(&db).unwrap();
    drop(Store::open(&db, OpenMode::ReadWrite).unwrap());
    assert!(
        manifest_json(&db)["documents"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    // From now on it is a database: opening again works.
    drop(Store::open(&db, OpenMode::ReadWrite).unwrap());
}

#[test]
fn only_files_the_store_wrote_are_cleaned_up_in_its_own_folder() {
    let (_dir, db) = tmp();
    database(&db);
    // A user's files dropped into the database folder: same names as the store's temporaries,
    // an unreferenced segment name without the segment magic.
    fs::write(db.join("report.tmp"), b"draft").unwrap();
    fs::write(db.join("seg-000007.seg"), b"user bytes").unwrap();
    fs::write(db.join("MANIFEST.tmp"), b"user data").unwrap();
    let mut s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    s.commit("m", vec![doc("c", 1, 1)]).unwrap();
    drop(s);
    assert_eq!(fs::read(db.join("report.tmp")).unwrap(), b"draft");
    assert_eq!(fs::read(db.join("seg-000007.seg")).unwrap(), b"user bytes");
    assert_eq!(fs::read(db.join("MANIFEST.tmp")).unwrap(), b"user data");
    // The new segment took an id past the foreign file's.
    assert!(db.join("seg-000008.seg").exists());
    assert_eq!(
        Store::open(&db, OpenMode::ReadOnly)
            .unwrap()
            .stats()
            .documents,
        3
    );
}

#[test]
fn a_changed_digit_in_the_manifest_is_detected_and_nothing_is_overwritten() {
    let (_dir, db) = tmp();
    database(&db);
    let text = fs::read_to_string(db.join("MANIFEST")).unwrap();
    let changed = text.replacen("\"next_segment\": 3", "\"next_segment\": 1", 1);
    assert_ne!(text, changed);
    fs::write(db.join("MANIFEST"), changed).unwrap();
    let before = snapshot(&db);
    for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let err = Store::open(&db, mode).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(err.to_string().contains("gilkit-rag repair"), "{err}");
    }
    assert_eq!(snapshot(&db), before, "a damaged database is never written");

    // A one-byte change in a file hash is caught the same way.
    let (_dir2, db2) = tmp();
    database(&db2);
    let text = fs::read_to_string(db2.join("MANIFEST")).unwrap();
    let h = format!("{:064x}", 1);
    let changed = text.replacen(&h, &format!("{}2", &h[..63]), 1);
    fs::write(db2.join("MANIFEST"), changed).unwrap();
    assert!(
        Store::open(&db2, OpenMode::ReadOnly)
            .unwrap_err()
            .is_corrupt()
    );
}

#[test]
fn lying_numbers_are_corrupt_errors_not_panics_even_with_a_valid_checksum() {
    type Lie = fn(&mut serde_json::Value);
    let lies: [(&str, Lie); 6] = [
        ("rows", |m| m["documents"]["a"]["rows"] = 1_000_000.into()),
        ("first_row", |m| {
            m["documents"]["a"]["first_row"] = u64::MAX.into()
        }),
        ("next_segment", |m| m["next_segment"] = 1.into()),
        ("segment", |m| m["documents"]["a"]["segment"] = 9.into()),
        ("shifted rows", |m| {
            m["documents"]["a"]["first_row"] = 1.into();
            m["documents"]["a"]["rows"] = 2.into();
        }),
        ("segment rows", |m| m["segments"][0]["rows"] = 7.into()),
    ];
    for (what, lie) in lies {
        for format_1 in [false, true] {
            let (_dir, db) = tmp();
            database(&db);
            let mut m = manifest_json(&db);
            lie(&mut m);
            if format_1 {
                write_format_1(&db, &m);
            } else {
                write_signed(&db, &m);
            }
            let before = snapshot(&db);
            for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
                let err = Store::open(&db, mode).unwrap_err();
                assert!(err.is_corrupt(), "{what} (format 1: {format_1}): {err}");
            }
            assert_eq!(snapshot(&db), before, "{what}: nothing written");
        }
    }
}

#[test]
fn a_format_1_manifest_is_still_read_and_upgraded_by_the_next_commit() {
    let (_dir, db) = tmp();
    database(&db);
    let m = manifest_json(&db);
    write_format_1(&db, &m);
    assert_eq!(
        Store::open(&db, OpenMode::ReadOnly)
            .unwrap()
            .stats()
            .documents,
        2
    );
    let mut s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    s.commit("m", vec![doc("c", 1, 1)]).unwrap();
    drop(s);
    assert_eq!(manifest_json(&db)["format"], 2);
    assert_eq!(
        Store::open(&db, OpenMode::ReadOnly)
            .unwrap()
            .stats()
            .documents,
        3
    );
}

#[test]
fn a_segment_is_never_replaced() {
    let (_dir, db) = tmp();
    database(&db);
    let seg1 = fs::read(db.join("seg-000001.seg")).unwrap();
    let meta = vec![doc("x", 1, 1).chunks.remove(0).0];
    let err = store::write_segment(&db, 1, 4, &[1.0, 0.0, 0.0, 0.0], &meta).unwrap_err();
    assert!(
        matches!(&err, gilkit_rag::StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(fs::read(db.join("seg-000001.seg")).unwrap(), seg1);
    assert!(!db.join("seg-000001.seg.tmp").exists());
}

#[test]
fn check_reports_and_repair_rebuilds_from_the_intact_segments() {
    let (_dir, db) = tmp();
    database(&db);
    let mut s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    s.commit("m", vec![doc("a", 4, 2)]).unwrap(); // a replaced: its old rows in segment 1 are dead
    let before = s.stats();
    let hits_before = s.search(&[1.0, 1.0, 2.0, 0.5], 3);
    drop(s);
    assert!(store::check(&db).unwrap().is_ok());
    assert!(
        !store::repair(&db, None).unwrap().repaired,
        "intact: nothing to do"
    );

    // Damage the manifest.
    let mut bytes = fs::read(db.join("MANIFEST")).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    fs::write(db.join("MANIFEST"), &bytes).unwrap();
    let report = store::check(&db).unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems[0].contains("MANIFEST"),
        "{:?}",
        report.problems
    );
    assert_eq!(report.intact_segments, 3);

    let repaired = store::repair(&db, None).unwrap();
    assert!(repaired.repaired);
    assert_eq!((repaired.documents, repaired.chunks), (2, 6));
    let s = Store::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(s.stats().documents, before.documents);
    assert_eq!(s.stats().chunks, before.chunks);
    assert_eq!(s.search(&[1.0, 1.0, 2.0, 0.5], 3), hits_before);
    assert!(store::check(&db).unwrap().is_ok());

    // A damaged segment and a lost manifest: the rest is rebuilt, the damaged file is kept aside,
    // and the model must be named.
    let mut seg = fs::read(db.join("seg-000003.seg")).unwrap();
    seg[30] ^= 0x40;
    fs::write(db.join("seg-000003.seg"), &seg).unwrap();
    fs::remove_file(db.join("MANIFEST")).unwrap();
    let err = store::repair(&db, None).unwrap_err();
    assert!(err.to_string().contains("--model"), "{err}");
    let repaired = store::repair(&db, Some("m")).unwrap();
    assert_eq!(repaired.damaged_segments, ["seg-000003.seg"]);
    assert!(db.join("seg-000003.seg.damaged").exists());
    // `a` falls back to its older version in segment 1; its file state is unknown, so the next
    // ingest re-reads it.
    assert_eq!((repaired.documents, repaired.unknown_file_state), (2, 2));
    let s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert_eq!(s.document("a").unwrap().rows, 3);
    assert!(db.join("seg-000003.seg.damaged").exists(), "never deleted");
}

#[test]
fn segments_written_elsewhere_are_committed_at_once() {
    let (_dir, db) = tmp();
    database(&db);
    let mut s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    let ids = s.reserve_segment_ids(2).unwrap();
    assert_eq!(ids, 3..5);
    // Two "workers" write a segment each, without the lock.
    let mut written: Vec<SegmentEntry> = Vec::new(); // entries a killed driver never commits
    let mut files = BTreeMap::new();
    for (id, sources) in ids.clone().zip([["c", "d"], ["e", "a"]]) {
        let mut vectors = Vec::new();
        let mut meta = Vec::new();
        for source in sources {
            for (m, mut v) in doc(source, 2, 3).chunks {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                vectors.extend(v);
                meta.push(m);
            }
            files.insert(source.to_owned(), state(3));
        }
        written.push(store::write_segment(&db, id, 4, &vectors, &meta).unwrap());
    }
    // A driver killed here commits nothing, and the reservation keeps the ids from reuse.
    drop(s);
    let mut s = Store::open(&db, OpenMode::ReadWrite).unwrap();
    assert_eq!(s.stats().documents, 2);
    assert!(
        !db.join("seg-000003.seg").exists(),
        "orphans of a killed run are removed"
    );
    s.commit("m", vec![doc("z", 1, 1)]).unwrap();
    assert!(db.join("seg-000005.seg").exists());

    // A run that completes: written, then committed in one step.
    let id = s.reserve_segment_ids(1).unwrap().start;
    let meta: Vec<ChunkMeta> = ["c", "d"]
        .iter()
        .flat_map(|src| doc(src, 2, 3).chunks.into_iter().map(|(m, _)| m))
        .collect();
    let vectors = vec![0.5; meta.len() * 4];
    let written2 = vec![store::write_segment(&db, id, 4, &vectors, &meta).unwrap()];
    s.commit_segments("m", &written2, &files).unwrap();
    assert_eq!(s.stats().documents, 5, "a, b, z, c, d");
    // Committing the same segment again is refused.
    assert!(
        s.commit_segments("m", &written2, &files)
            .unwrap_err()
            .is_corrupt()
    );
    drop(s);
    let s = Store::open(&db, OpenMode::ReadOnly).unwrap();
    assert_eq!(s.stats().documents, 5);
    assert_eq!(s.document("c").unwrap().rows, 2);
}
