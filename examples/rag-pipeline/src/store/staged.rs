//! Segments built by other processes and committed by the writer: the store's side of a
//! distributed ingest (`gilkit-rag ingest --engine ray`, see [`crate::shard`]).
//!
//! A worker cannot commit: it does not hold the writer's lock and may run on another machine. It
//! writes the documents of its shard to a *staged* segment with [`write_staged`] (the same file
//! format as a committed segment, under a name the caller makes unique, never over an existing
//! file) and sends the writer the [`StagedSegment`] that describes it (plain data, serializable).
//! The writer adopts staged segments with [`Store::commit_staged`]: it checks each file against its
//! description (length, CRC-32, header, dimension, model, every document's row range and the
//! source of every row), renames it into the database under the next segment id and writes the
//! manifest: one atomic commit for any number of staged segments. A process killed before the
//! manifest's rename leaves the database as it was; the renamed files are then unreferenced
//! segments, removed by the next writer's open like any other commit's leftovers.
//!
//! A staged file that is never committed (a retried task's extra output, a run that stopped) is
//! not part of the database; deleting it is the job of whoever created its staging folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    ChunkMeta, DocumentEntry, FileState, HEADER_LEN, MAGIC, NewDocument, SegmentEntry, Store,
    StoreError, encode_segment, segment_name,
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
    /// Where the file is (on storage the writer sees).
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
/// The file is written to `path` + `.tmp` (created new: an existing file is an error, never
/// overwritten), synced, and renamed to `path` only if nothing is there; the folder is synced.
///
/// # Errors
/// [`StoreError::Io`] (also when `path` or its temporary exists); [`StoreError::Corrupt`] when the
/// vectors have different dimensions.
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
    let (buf, crc32) = encode_segment(dim, &vectors, &meta);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    let result = (|| {
        file.write_all(&buf)?;
        file.sync_all()?;
        rename_new(&tmp, path)?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        // The temporary is this call's own file (created new above).
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(path, e));
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

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`): never replaces a file.
/// (The check and the rename are two steps; the names this module renames to are owned by the one
/// writer or are unique per task attempt, so nothing else creates them in between.)
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file of this name exists already; it is not replaced",
        ));
    }
    fs::rename(from, to)
}

/// A staged file's rows, checked against its description.
struct Checked {
    vectors: Vec<f32>,
    meta: Vec<ChunkMeta>,
}

fn check(seg: &StagedSegment) -> Result<Checked, StoreError> {
    let path = &seg.path;
    let bad = |reason: String| StoreError::corrupt(path, reason);
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    if bytes.len() as u64 != seg.bytes || bytes.len() < HEADER_LEN + 4 {
        return Err(bad(format!(
            "{} bytes, the worker wrote {}",
            bytes.len(),
            seg.bytes
        )));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    if crc != seg.crc32 || crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    if &body[..8] != MAGIC {
        return Err(bad("not a gilkit-rag segment".into()));
    }
    let dim = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let rows = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
    let meta_len = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) as usize;
    let vec_bytes = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad("impossible header".into()))?;
    if dim != seg.dim
        || dim == 0
        || rows != seg.rows
        || HEADER_LEN
            .checked_add(vec_bytes)
            .and_then(|n| n.checked_add(meta_len))
            != Some(body.len())
    {
        return Err(bad("header does not match its description".into()));
    }
    let meta: Vec<ChunkMeta> = serde_json::from_slice(&body[HEADER_LEN + vec_bytes..])
        .map_err(|e| bad(format!("chunk metadata: {e}")))?;
    if meta.len() != rows {
        return Err(bad("metadata count does not match the rows".into()));
    }
    let mut next = 0;
    for doc in &seg.documents {
        let end = doc.first_row.checked_add(doc.rows);
        if doc.first_row != next || doc.rows == 0 || end.is_none_or(|e| e > rows) {
            return Err(bad(format!("{}: row range out of place", doc.source)));
        }
        let end = end.expect("checked");
        if meta[doc.first_row..end]
            .iter()
            .any(|m| m.source != doc.source)
        {
            return Err(bad(format!("{}: rows of another document", doc.source)));
        }
        next = end;
    }
    if next != rows {
        return Err(bad("rows that belong to no document".into()));
    }
    let vectors = body[HEADER_LEN..HEADER_LEN + vec_bytes]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(Checked { vectors, meta })
}

impl Store {
    /// Commits staged segments (written by [`write_staged`]; see [`crate::shard`]): each is checked, renamed into the
    /// database under a new segment id, and the manifest is written once for all of them. Their
    /// documents replace stored ones of the same source (the old rows become dead), in order.
    /// Returns the new segment ids.
    ///
    /// # Errors
    /// [`StoreError::ModelMismatch`] if a segment's model or dimension differ from the database's;
    /// [`StoreError::Corrupt`] if a file does not match its description (nothing is committed;
    /// the file is left where it is); [`StoreError::Io`]. On error the database is unchanged.
    pub fn commit_staged(&mut self, segments: &[StagedSegment]) -> Result<Vec<u64>, StoreError> {
        let mut model = self.manifest.model.clone().zip(self.manifest.dim);
        let mut checked = Vec::with_capacity(segments.len());
        for seg in segments {
            match &model {
                Some((m, d)) if *m != seg.model || *d != seg.dim => {
                    return Err(StoreError::ModelMismatch {
                        stored: (m.clone(), *d),
                        given: (seg.model.clone(), seg.dim),
                    });
                }
                Some(_) => {}
                None => model = Some((seg.model.clone(), seg.dim)),
            }
            checked.push(check(seg)?);
        }
        let Some((model, dim)) = model else {
            return Ok(Vec::new());
        };
        let mut manifest = self.manifest.clone();
        manifest.model = Some(model);
        manifest.dim = Some(dim);
        let mut ids = Vec::with_capacity(segments.len());
        for seg in segments {
            let id = manifest.next_segment;
            manifest.next_segment += 1;
            let dest = self.dir.join(segment_name(id));
            rename_new(&seg.path, &dest).map_err(|e| StoreError::io(&dest, e))?;
            for doc in &seg.documents {
                let entry = DocumentEntry {
                    file: doc.file.clone(),
                    segment: id,
                    first_row: doc.first_row,
                    rows: doc.rows,
                };
                manifest.documents.insert(doc.source.clone(), entry);
            }
            manifest.segments.push(SegmentEntry {
                id,
                rows: seg.rows,
                bytes: seg.bytes,
                crc32: seg.crc32,
            });
            ids.push(id);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.dir, e))?;
        self.write_manifest(&manifest)?;

        self.manifest = manifest;
        for (id, rows) in ids.iter().zip(checked) {
            self.segment_base.insert(*id, self.meta.len());
            self.vectors.extend_from_slice(&rows.vectors);
            self.meta.extend(rows.meta);
        }
        self.rebuild_live();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenMode;

    fn doc(source: &str, n: usize, dim: usize) -> NewDocument {
        NewDocument {
            source: source.into(),
            file: FileState {
                hash: format!("h-{source}"),
                size: 1,
                mtime_ns: 1,
                format: "txt".into(),
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
        let mut lying = seg.clone();
        lying.documents[0].source = "other".into();
        assert!(store.commit_staged(&[lying]).unwrap_err().is_corrupt());
        let mut bytes = fs::read(&seg.path).unwrap();
        bytes[HEADER_LEN] ^= 1;
        fs::write(&seg.path, bytes).unwrap();
        assert!(store.commit_staged(&[seg]).unwrap_err().is_corrupt());
        assert_eq!(store.stats().documents, 0);
        assert!(!db.join("MANIFEST").exists());
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
        assert!(err.to_string().contains("not replaced"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"mine");
        assert!(
            !dir.path().join("a.seg.tmp").exists(),
            "its own temporary is removed"
        );
    }
}
