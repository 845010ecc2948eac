//! Segments built by other processes and committed by the writer: the store's side of a
//! distributed ingest (`gilkit-rag ingest --engine ray`, see [`crate::shard`]).
//!
//! A worker cannot commit: it does not hold the writer's lock and may run on another machine. It
//! writes the documents of its shard to a *staged* segment with [`write_staged`] (the same file
//! format as a committed segment, under a name the caller makes unique, never over an existing
//! file) and sends the writer the [`StagedSegment`] that describes it (plain data, serializable).
//! The writer adopts staged segments with [`Store::commit_staged`], which goes through the same
//! checks and the same commit point as [`Store::commit_segments`]: each file is read back once and
//! checked (length, CRC-32, header, dimension, model, every document's rows one contiguous run
//! with a file state) and against its description, placed in the database under a new segment id
//! with the store's no-replace primitive (a hard link that fails if the name exists), and the
//! manifest (format 2, checksummed) is written once for all of them. A process killed before the
//! manifest's rename leaves the database as it was; the placed files are then unreferenced
//! segments, removed by the next writer's open like any other commit's leftovers.
//!
//! A staged file that is never committed (a retried task's extra output, a run that stopped) is
//! not part of the database; deleting it is the job of whoever created its staging folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    FileState, NewDocument, SegmentEntry, Store, StoreError, encode_segment, place_new,
    segment_name, sync_dir, write_temporary,
};

/// A document in a staged segment: its file state and its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedDocument {
    /// The document's key (its source path).
    pub source: String,
    /// The file as it was when read.
    pub file: FileState,
    /// Index of its first row in the segment.
    pub first_row: usize,
    /// Number of rows (chunks).
    pub rows: usize,
}

/// A segment written outside the database, waiting to be committed by the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedSegment {
    /// Where the file is (on storage the writer sees; any bytes on Unix).
    #[serde(with = "crate::load::path_serde")]
    pub path: PathBuf,
    /// The model that embedded its rows.
    pub model: String,
    /// Vector dimension.
    pub dim: usize,
    /// Rows in the file.
    pub rows: usize,
    /// File length.
    pub bytes: u64,
    /// CRC-32 of the file (as in its last four bytes).
    pub crc32: u32,
    /// Its documents, in row order, contiguous.
    pub documents: Vec<StagedDocument>,
}

/// Writes `docs` (vectors of one dimension, any length; stored unit-length) as a segment file at
/// `path` and describes it. `None` if the documents have no rows (nothing is written).
///
/// The file is written to a temporary beside `path` (as the store writes its own: `path.tmp`, or
/// `path.PID.tmp` if someone else's file holds that name), synced, and given the name `path` only
/// if nothing is there (a hard link, never a replacing rename); the folder is synced.
///
/// # Errors
/// [`StoreError::Io`] (of kind `AlreadyExists` when `path` exists: it is left alone);
/// [`StoreError::Corrupt`] when the vectors have different dimensions.
pub fn write_staged(
    path: &Path,
    model: &str,
    docs: Vec<NewDocument>,
) -> Result<Option<StagedSegment>, StoreError> {
    let rows: usize = docs.iter().map(|d| d.chunks.len()).sum();
    let Some(dim) = docs
        .iter()
        .flat_map(|d| d.chunks.first())
        .map(|(_, v)| v.len())
        .next()
    else {
        return Ok(None);
    };
    let mut vectors = Vec::with_capacity(rows * dim);
    let mut meta = Vec::with_capacity(rows);
    let mut documents = Vec::with_capacity(docs.len());
    for doc in docs {
        documents.push(StagedDocument {
            source: doc.source,
            file: doc.file,
            first_row: meta.len(),
            rows: doc.chunks.len(),
        });
        for (chunk, mut v) in doc.chunks {
            if v.len() != dim {
                return Err(StoreError::corrupt(
                    path,
                    format!("vectors of {} and {dim} dimensions in one segment", v.len()),
                ));
            }
            crate::embed::normalize(&mut v);
            vectors.extend_from_slice(&v);
            meta.push(chunk);
        }
    }
    let buf = encode_segment(dim, &vectors, &meta);
    let crc32 = u32::from_le_bytes(buf[buf.len() - 4..].try_into().expect("4 bytes"));
    let tmp = write_temporary(path, &buf)?;
    let placed = place_new(&tmp, path);
    let _ = fs::remove_file(&tmp); // ours (created above); gone already after a rename
    placed.map_err(|e| StoreError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(Some(StagedSegment {
        path: path.to_owned(),
        model: model.to_owned(),
        dim,
        rows,
        bytes: buf.len() as u64,
        crc32,
        documents,
    }))
}

impl Store {
    /// Commits staged segments (written by [`write_staged`]; see [`crate::shard`]) in one atomic
    /// manifest write, under new segment ids (returned, in order). Their documents replace stored
    /// ones of the same source (the old rows become dead). Each file is checked as
    /// [`Store::commit_segments`] checks its files, and against its description; it is placed
    /// into the database without ever replacing a file, and the staged name is removed once the
    /// commit is written.
    ///
    /// # Errors
    /// [`StoreError::ModelMismatch`] if a segment's model or dimension differ from the database's
    /// or from each other; [`StoreError::Corrupt`] if a file does not match its description or a
    /// document is in two segments (nothing is committed; the files are left where they are);
    /// [`StoreError::Io`]. On error the database is unchanged.
    pub fn commit_staged(&mut self, segments: &[StagedSegment]) -> Result<Vec<u64>, StoreError> {
        let Some(first) = segments.first() else {
            return Ok(Vec::new());
        };
        let (model, dim) = (first.model.as_str(), first.dim);
        if let Some((m, d)) = self.model()
            && (m != model || d != dim)
        {
            return Err(StoreError::ModelMismatch {
                stored: (m.to_owned(), d),
                given: (model.to_owned(), dim),
            });
        }
        let mut files = BTreeMap::new();
        let mut located = Vec::with_capacity(segments.len());
        let mut described = Vec::new();
        for (seg, id) in segments.iter().zip(self.manifest.next_segment..) {
            if seg.model != model || seg.dim != dim {
                return Err(StoreError::ModelMismatch {
                    stored: (model.to_owned(), dim),
                    given: (seg.model.clone(), seg.dim),
                });
            }
            for doc in &seg.documents {
                if files.insert(doc.source.clone(), doc.file.clone()).is_some() {
                    return Err(StoreError::corrupt(
                        &seg.path,
                        format!("document {:?} is in two staged segments", doc.source),
                    ));
                }
                described.push((doc.source.as_str(), id, doc.first_row, doc.rows));
            }
            let entry = SegmentEntry {
                id,
                rows: seg.rows,
                bytes: seg.bytes,
                crc32: seg.crc32,
            };
            located.push((entry, seg.path.clone()));
        }
        let Some(verified) = self.verify_segments(model, &located, &files)? else {
            return Ok(Vec::new());
        };
        // The rows are the truth (checksummed); the description must tell the same.
        let found = verified
            .documents
            .iter()
            .map(|(source, d)| (source.as_str(), d.segment, d.first_row, d.rows));
        if verified.dim != dim || !found.eq(described.iter().copied()) {
            let path = &segments[0].path;
            return Err(StoreError::corrupt(
                path,
                "the staged segments' description does not match their rows",
            ));
        }

        let mut placed: Vec<(PathBuf, &Path)> = Vec::with_capacity(located.len());
        let result = (|| {
            for (entry, from) in &located {
                let dest = self.dir.join(segment_name(entry.id));
                place_new(from, &dest).map_err(|e| StoreError::io(&dest, e))?;
                placed.push((dest, from));
            }
            sync_dir(&self.dir)
        })();
        if let Err(e) = result {
            // Undo what this call placed: the commit did not happen.
            for (dest, from) in &placed {
                if from.exists() {
                    let _ = fs::remove_file(dest);
                } else {
                    let _ = fs::rename(dest, from);
                }
            }
            return Err(e);
        }
        let ids = located.iter().map(|(e, _)| e.id).collect();
        self.apply(model, dim, verified.segments, verified.documents)?;
        for (_, from) in &placed {
            // A second name of a committed segment (after a hard link); best effort, as the
            // staging folder's owner deletes what is left.
            let _ = fs::remove_file(from);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkMeta, HEADER_LEN, OpenMode};

    fn doc(source: &str, n: usize, dim: usize) -> NewDocument {
        NewDocument {
            source: source.into(),
            file: FileState {
                hash: format!("h-{source}"),
                size: 1,
                mtime_ns: 1,
                format: "txt".into(),
                encoding: None,
            },
            chunks: (0..n)
                .map(|i| {
                    let meta = ChunkMeta {
                        source: source.into(),
                        position: i,
                        start_byte: 0,
                        end_byte: 1,
                        start_char: 0,
                        end_char: 1,
                        text: format!("{source} {i}"),
                    };
                    (meta, vec![1.0 + i as f32; dim])
                })
                .collect(),
        }
    }

    #[test]
    fn staged_segments_commit_as_one_and_read_back_like_commits() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        fs::create_dir(&stage).unwrap();
        let a = write_staged(
            &stage.join("a.seg"),
            "m",
            vec![doc("x", 2, 3), doc("y", 1, 3)],
        )
        .unwrap()
        .unwrap();
        let b = write_staged(&stage.join("b.seg"), "m", vec![doc("z", 3, 3)])
            .unwrap()
            .unwrap();
        let db = dir.path().join("db");
        let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        assert_eq!(store.commit_staged(&[a, b]).unwrap(), vec![1, 2]);
        assert!(fs::read_dir(&stage).unwrap().next().is_none(), "renamed in");
        let stats = store.stats();
        assert_eq!((stats.documents, stats.chunks, stats.segments), (3, 6, 2));
        drop(store);
        let reopened = Store::open(&db, OpenMode::ReadOnly).unwrap();
        assert_eq!(reopened.stats(), stats);
        assert_eq!(reopened.search(&[1.0, 1.0, 1.0], 1)[0].score, 1.0);
    }

    #[test]
    fn a_staged_file_that_does_not_match_its_description_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = write_staged(&dir.path().join("a.seg"), "m", vec![doc("x", 2, 3)])
            .unwrap()
            .unwrap();
        let db = dir.path().join("db");
        let mut store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        let manifest = fs::read(db.join("MANIFEST")).unwrap();
        let mut lying = seg.clone();
        lying.documents[0].source = "other".into();
        assert!(store.commit_staged(&[lying]).unwrap_err().is_corrupt());
        let mut short = seg.clone();
        short.documents[0].rows = 1;
        assert!(store.commit_staged(&[short]).unwrap_err().is_corrupt());
        let mut twice = seg.clone();
        twice.path = dir.path().join("elsewhere.seg");
        fs::copy(&seg.path, &twice.path).unwrap();
        let err = store.commit_staged(&[seg.clone(), twice]).unwrap_err();
        assert!(err.to_string().contains("two staged segments"), "{err}");
        let mut bytes = fs::read(&seg.path).unwrap();
        bytes[HEADER_LEN] ^= 1;
        fs::write(&seg.path, bytes).unwrap();
        assert!(
            store
                .commit_staged(std::slice::from_ref(&seg))
                .unwrap_err()
                .is_corrupt()
        );
        assert_eq!(store.stats().documents, 0);
        assert_eq!(fs::read(db.join("MANIFEST")).unwrap(), manifest);
        assert!(seg.path.exists(), "a refused file is left where it is");
        let in_db: Vec<_> = fs::read_dir(&db)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(in_db.len(), 2, "only MANIFEST and LOCK: {in_db:?}");
    }

    #[test]
    fn a_first_run_killed_before_its_first_commit_leaves_a_folder_that_opens_again() {
        // The Ray driver opens the database (writing its MANIFEST) before it creates `staging/`.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        drop(Store::open(&db, OpenMode::ReadWrite).unwrap());
        let run = db.join("staging").join("run-0123456789ab");
        fs::create_dir_all(&run).unwrap();
        write_staged(
            &run.join("shard-000000-0123456789ab.seg"),
            "m",
            vec![doc("x", 1, 3)],
        )
        .unwrap()
        .unwrap();
        let store = Store::open(&db, OpenMode::ReadWrite).unwrap();
        assert_eq!(store.stats().documents, 0);
        assert!(
            run.join("shard-000000-0123456789ab.seg").exists(),
            "not the store's to delete"
        );
    }

    #[test]
    fn another_models_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db"), OpenMode::ReadWrite).unwrap();
        store.commit("m", vec![doc("x", 1, 3)]).unwrap();
        let other = write_staged(&dir.path().join("a.seg"), "n", vec![doc("y", 1, 3)])
            .unwrap()
            .unwrap();
        assert!(
            store
                .commit_staged(&[other])
                .unwrap_err()
                .is_model_mismatch()
        );
        let wider = write_staged(&dir.path().join("b.seg"), "m", vec![doc("y", 1, 4)])
            .unwrap()
            .unwrap();
        assert!(
            store
                .commit_staged(&[wider])
                .unwrap_err()
                .is_model_mismatch()
        );
    }

    #[test]
    fn staging_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seg");
        fs::write(&path, b"mine").unwrap();
        let err = write_staged(&path, "m", vec![doc("x", 1, 3)]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"mine");
        assert!(
            !dir.path().join("a.seg.tmp").exists(),
            "its own temporary is removed"
        );
    }
}
