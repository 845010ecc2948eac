//! The vector store: an embedded, persistent, exact-cosine index in a directory.
//!
//! # Layout
//!
//! ```text
//! DB/
//!   MANIFEST         JSON: format, model, dimension, the live segments (rows, bytes, CRC-32) and
//!                    the document table (path -> content hash, size, mtime, segment, row range)
//!   seg-000001.seg   an immutable segment: header, rows x dim little-endian f32, chunk metadata
//!   seg-000002.seg   (JSON), CRC-32 of everything before it
//!   LOCK             advisory lock, held by the one writer (readers take no lock)
//! ```
//!
//! # Crash safety
//!
//! Segments are written once and never changed. A commit writes the new segment to `*.tmp`, syncs
//! it, renames it into place, then writes the new manifest the same way (`MANIFEST.tmp`, sync,
//! rename, sync the directory). The rename of the manifest is the commit point: a process killed
//! at any moment leaves either the old manifest (the new segment is an unreferenced file, deleted
//! on the next open) or the new one, never a half-written index. Opening checks every segment's
//! length and checksum, so a disk that lost data is reported, not searched.
//!
//! # Readers and the writer
//!
//! One process writes at a time: [`OpenMode::ReadWrite`] holds an exclusive advisory lock on
//! `LOCK` ([`StoreError::Locked`] for a second writer). Readers ([`OpenMode::ReadOnly`]) take no
//! lock, so a query never waits for or fails because of an ingest in another process: a reader
//! reads the manifest (the last commit; the rename makes it whole) and then the segments it lists,
//! which are never changed once written, and whose ids are never reused by a later commit. The one
//! thing a writer does to a committed file is delete it: a compaction deletes the segments it
//! rewrote, possibly after a reader read the manifest that lists them and before it opened them.
//! The reader then finds a segment missing, sees that the manifest has changed since, and starts
//! over with the new one (a missing segment under an unchanged manifest is an error, as is a
//! manifest that keeps changing for [`SNAPSHOT_ATTEMPTS`] attempts). A reader therefore always
//! sees one committed state, never a mix of two.
//!
//! # Incremental updates
//!
//! A document's chunks are contiguous rows of one segment. Re-ingesting a changed file writes its
//! new rows to a new segment and points its manifest entry at them; the old rows become dead (not
//! searched). When dead rows outnumber live ones, [`Store::compact`] rewrites the live rows into one
//! segment and deletes the old files.
//!
//! # Search
//!
//! Vectors are stored unit-length, so cosine similarity is a dot product. Search scans all live rows
//! (exact, no approximation): 384-dimensional vectors cost about 0.1 µs each per query on one core,
//! so a million chunks take about 0.1 s.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// Segments built by other processes (distributed ingest) and committed by the writer.
mod staged;
pub use staged::{StagedDocument, StagedSegment, write_staged};

const MANIFEST: &str = "MANIFEST";
const LOCK: &str = "LOCK";
const MAGIC: &[u8; 8] = b"GKRAGSG1";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// How many manifests a reader tries when compactions keep deleting the segments it is about to read.
pub const SNAPSHOT_ATTEMPTS: usize = 16;

/// What went wrong with the store.
#[derive(Debug)]
pub enum StoreError {
    /// A file of the database could not be read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file of the database is damaged (checksum, length or format mismatch).
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process is writing to the database (one writer at a time; readers never see this).
    Locked {
        /// The database directory.
        dir: PathBuf,
    },
    /// The database was built with another model or dimension than the one in use.
    ModelMismatch {
        /// Model and dimension recorded in the database.
        stored: (String, usize),
        /// Model and dimension of this run.
        given: (String, usize),
    },
    /// The directory holds no database (for read-only opens).
    NotFound {
        /// The directory.
        dir: PathBuf,
    },
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    /// True if a file of the database is damaged.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// True if another process is writing to the database.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Locked { .. })
    }

    /// True if the database was built with another model.
    pub fn is_model_mismatch(&self) -> bool {
        matches!(self, StoreError::ModelMismatch { .. })
    }

    /// True if there is no database in the directory.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Corrupt { path, reason } => write!(
                f,
                "{}: damaged database file ({reason}); re-ingest into a fresh --db directory",
                path.display()
            ),
            StoreError::Locked { dir } => write!(
                f,
                "{}: the database is in use by another process (an ingest holds it); wait for it to finish",
                dir.display()
            ),
            StoreError::ModelMismatch { stored, given } => write!(
                f,
                "the database holds {}-dimensional vectors of model {:?}, but this run embeds with {:?} ({} dimensions); \
                 use the same embedder or a fresh --db directory",
                stored.1, stored.0, given.0, given.1
            ),
            StoreError::NotFound { dir } => {
                write!(
                    f,
                    "{}: no database here; run `gilkit-rag ingest PATH --db {}` first",
                    dir.display(),
                    dir.display()
                )
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where a chunk came from: stored beside its vector and returned with search hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// The source document's path.
    pub source: String,
    /// Position of the chunk in its document.
    pub position: usize,
    /// Byte range in the document's extracted text.
    pub start_byte: usize,
    /// End of the byte range (exclusive).
    pub end_byte: usize,
    /// Character range in the document's extracted text.
    pub start_char: usize,
    /// End of the character range (exclusive).
    pub end_char: usize,
    /// The chunk's text.
    pub text: String,
}

/// What the store remembers of a source file, to skip it when it has not changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// BLAKE3 hash of the file's bytes (hex).
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// The format it was loaded as (`"pdf"`, ...).
    pub format: String,
}

/// A document's manifest entry: its file state and where its rows are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentEntry {
    /// The file as it was when ingested.
    #[serde(flatten)]
    pub file: FileState,
    /// The segment holding its rows.
    pub segment: u64,
    /// Index of its first row in that segment.
    pub first_row: usize,
    /// Number of rows (chunks).
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentEntry {
    id: u64,
    rows: usize,
    bytes: u64,
    crc32: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    model: Option<String>,
    dim: Option<usize>,
    next_segment: u64,
    segments: Vec<SegmentEntry>,
    documents: BTreeMap<String, DocumentEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT_VERSION,
            model: None,
            dim: None,
            next_segment: 1,
            segments: Vec::new(),
            documents: BTreeMap::new(),
        }
    }
}

/// A document ready to store: its file state and its chunks with their vectors.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// The document's path (the key in the document table).
    pub source: String,
    /// The file's state when it was read.
    pub file: FileState,
    /// Its chunks, in order, each with its vector (any length; stored unit-length).
    pub chunks: Vec<(ChunkMeta, Vec<f32>)>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Cosine similarity with the query, in `[-1, 1]`.
    pub score: f32,
    /// The chunk.
    pub chunk: ChunkMeta,
}

/// Counts describing a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Documents in the index.
    pub documents: usize,
    /// Searchable chunks.
    pub chunks: usize,
    /// Rows superseded by re-ingested documents, reclaimed by compaction.
    pub dead_rows: usize,
    /// Segment files.
    pub segments: usize,
    /// Bytes on disk of the segments.
    pub bytes: u64,
    /// The model the vectors come from, once anything is stored.
    pub model: Option<String>,
    /// Vector dimension, once anything is stored.
    pub dim: Option<usize>,
    /// Documents per format (`"pdf"` -> n).
    pub formats: BTreeMap<String, usize>,
}

/// Whether to open for writing (one process at a time) or reading (any number, beside the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the directory if needed; take the exclusive writer's lock.
    ReadWrite,
    /// The database must exist; no lock: a snapshot of the last commit (see the module docs).
    ReadOnly,
}

/// An open database. See the [module docs](self) for the format and guarantees.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The advisory lock, held until [`Store::release_lock`] or drop.
    lock: Option<File>,
    manifest: Manifest,
    /// All rows of all segments, `dim` floats each.
    vectors: Vec<f32>,
    meta: Vec<ChunkMeta>,
    live: Vec<bool>,
    /// Global index of each segment's first row.
    segment_base: HashMap<u64, usize>,
}

/// The committed manifest in `dir` (its bytes and contents), or `None` if there is none.
fn read_manifest(dir: &Path) -> Result<Option<(Vec<u8>, Manifest)>, StoreError> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&path, e.to_string()))?;
    if manifest.format != FORMAT_VERSION {
        return Err(StoreError::corrupt(
            &path,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                manifest.format
            ),
        ));
    }
    Ok(Some((bytes, manifest)))
}

fn segment_name(id: u64) -> String {
    format!("seg-{id:06}.seg")
}

impl Store {
    /// Opens (or, in [`OpenMode::ReadWrite`], creates) the database in `dir`, verifying every segment.
    /// A writer also deletes the files a killed ingest left behind; a reader loads the last commit
    /// without a lock, even while another process writes (see the module docs).
    ///
    /// # Errors
    /// [`StoreError`]: I/O, a damaged file, another writer holding the lock (read-write only), or
    /// (read-only) no database in `dir`.
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        match mode {
            OpenMode::ReadOnly => Store::open_snapshot(dir, &mut || {}),
            OpenMode::ReadWrite => {
                fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
                let lock_path = dir.join(LOCK);
                let lock = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| StoreError::io(&lock_path, e))?;
                match lock.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => {
                        return Err(StoreError::Locked {
                            dir: dir.to_owned(),
                        });
                    }
                    Err(fs::TryLockError::Error(e)) => return Err(StoreError::io(&lock_path, e)),
                }
                let manifest = match read_manifest(dir)? {
                    Some((_, manifest)) => manifest,
                    None => Manifest::default(),
                };
                let store = Store::load(dir, Some(lock), manifest)?;
                store.remove_unreferenced()?;
                Ok(store)
            }
        }
    }

    /// A reader's open: the manifest, then its segments; if a segment has vanished because the
    /// manifest moved on (a compaction), again with the new manifest. `between` runs after each
    /// manifest read (a seam for the tests, which compact there).
    fn open_snapshot(dir: &Path, between: &mut dyn FnMut()) -> Result<Store, StoreError> {
        let mut attempt = 1;
        loop {
            let Some((bytes, manifest)) = read_manifest(dir)? else {
                return Err(StoreError::NotFound {
                    dir: dir.to_owned(),
                });
            };
            between();
            let result = Store::load(dir, None, manifest);
            if let Err(StoreError::Io { source, .. }) = &result
                && source.kind() == io::ErrorKind::NotFound
                && attempt < SNAPSHOT_ATTEMPTS
                && read_manifest(dir)?.is_none_or(|(now, _)| now != bytes)
            {
                attempt += 1;
                continue;
            }
            return result;
        }
    }

    /// The store of `manifest`, with all of its segments loaded and checked.
    fn load(dir: &Path, lock: Option<File>, manifest: Manifest) -> Result<Store, StoreError> {
        let mut store = Store {
            dir: dir.to_owned(),
            lock,
            manifest,
            vectors: Vec::new(),
            meta: Vec::new(),
            live: Vec::new(),
            segment_base: HashMap::new(),
        };
        for seg in store.manifest.segments.clone() {
            store.load_segment(&seg)?;
        }
        store.rebuild_live();
        Ok(store)
    }

    /// Gives up the file lock, keeping the loaded index as a read-only snapshot: searches still
    /// work, and other processes may now open the database. Do not commit after this.
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest entry of a document, if it is stored.
    pub fn document(&self, source: &str) -> Option<&DocumentEntry> {
        self.manifest.documents.get(source)
    }

    /// The source keys of the stored documents, sorted.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.manifest.documents.keys().map(String::as_str)
    }

    /// The model and dimension recorded in the database, once anything is stored.
    pub fn model(&self) -> Option<(&str, usize)> {
        Some((self.manifest.model.as_deref()?, self.manifest.dim?))
    }

    fn dim(&self) -> usize {
        self.manifest.dim.unwrap_or(0)
    }

    fn load_segment(&mut self, seg: &SegmentEntry) -> Result<(), StoreError> {
        let path = self.dir.join(segment_name(seg.id));
        let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        if bytes.len() as u64 != seg.bytes || bytes.len() < HEADER_LEN + 4 {
            return Err(StoreError::corrupt(
                &path,
                format!("{} bytes, manifest says {}", bytes.len(), seg.bytes),
            ));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        if crc != seg.crc32 || crc32fast::hash(body) != crc {
            return Err(StoreError::corrupt(&path, "checksum mismatch"));
        }
        if &body[..8] != MAGIC {
            return Err(StoreError::corrupt(&path, "not a gilkit-rag segment"));
        }
        let dim = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
        let rows = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
        let meta_len = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) as usize;
        let vec_bytes = rows * dim * 4;
        if Some(dim) != self.manifest.dim
            || rows != seg.rows
            || HEADER_LEN + vec_bytes + meta_len != body.len()
        {
            return Err(StoreError::corrupt(
                &path,
                "header does not match the manifest",
            ));
        }
        let meta: Vec<ChunkMeta> = serde_json::from_slice(&body[HEADER_LEN + vec_bytes..])
            .map_err(|e| StoreError::corrupt(&path, format!("chunk metadata: {e}")))?;
        if meta.len() != rows {
            return Err(StoreError::corrupt(
                &path,
                "metadata count does not match the rows",
            ));
        }
        self.segment_base.insert(seg.id, self.meta.len());
        self.vectors.extend(
            body[HEADER_LEN..HEADER_LEN + vec_bytes]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        );
        self.meta.extend(meta);
        Ok(())
    }

    fn rebuild_live(&mut self) {
        self.live = vec![false; self.meta.len()];
        for doc in self.manifest.documents.values() {
            if let Some(&base) = self.segment_base.get(&doc.segment) {
                let start = base + doc.first_row;
                self.live[start..start + doc.rows]
                    .iter_mut()
                    .for_each(|l| *l = true);
            }
        }
    }

    /// Deletes segment and temporary files that the manifest does not reference: what a process
    /// killed mid-commit, or a compaction, left behind.
    fn remove_unreferenced(&self) -> Result<(), StoreError> {
        let keep: Vec<String> = self
            .manifest
            .segments
            .iter()
            .map(|s| segment_name(s.id))
            .collect();
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale =
                name.ends_with(".tmp") || (name.starts_with("seg-") && !keep.contains(&name));
            if stale {
                fs::remove_file(entry.path()).map_err(|e| StoreError::io(&entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// Records that these documents' files were seen again unchanged (same content, new mtime), so
    /// the next run skips them without hashing. Manifest only; commits atomically.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn touch(&mut self, files: &[(String, FileState)]) -> Result<(), StoreError> {
        let mut manifest = self.manifest.clone();
        for (source, state) in files {
            if let Some(doc) = manifest.documents.get_mut(source) {
                doc.file = state.clone();
            }
        }
        self.write_manifest(&manifest)?;
        self.manifest = manifest;
        Ok(())
    }

    /// Stores documents atomically: all of them or, if the process dies first, none. A document
    /// already in the store is replaced (its old rows become dead).
    ///
    /// # Errors
    /// [`StoreError::ModelMismatch`] if `model`/the vectors' dimension differ from the stored ones;
    /// [`StoreError::Io`]. On error nothing is changed.
    ///
    /// # Panics
    /// If a document's vectors have different lengths (the pipeline checks before calling).
    pub fn commit(&mut self, model: &str, docs: Vec<NewDocument>) -> Result<(), StoreError> {
        let rows: usize = docs.iter().map(|d| d.chunks.len()).sum();
        if rows == 0 {
            return Ok(());
        }
        let dim = docs
            .iter()
            .flat_map(|d| d.chunks.first())
            .map(|(_, v)| v.len())
            .next()
            .unwrap_or(0);
        match (&self.manifest.model, self.manifest.dim) {
            (Some(m), Some(d)) if m != model || d != dim => {
                return Err(StoreError::ModelMismatch {
                    stored: (m.clone(), d),
                    given: (model.to_owned(), dim),
                });
            }
            _ => {}
        }
        let mut manifest = self.manifest.clone();
        manifest.model = Some(model.to_owned());
        manifest.dim = Some(dim);
        let id = manifest.next_segment;
        manifest.next_segment += 1;

        let mut vectors = Vec::with_capacity(rows * dim);
        let mut meta = Vec::with_capacity(rows);
        for doc in docs {
            let entry = DocumentEntry {
                file: doc.file,
                segment: id,
                first_row: meta.len(),
                rows: doc.chunks.len(),
            };
            manifest.documents.insert(doc.source, entry);
            for (chunk, mut v) in doc.chunks {
                assert_eq!(
                    v.len(),
                    dim,
                    "all vectors of a commit have the same dimension"
                );
                crate::embed::normalize(&mut v);
                vectors.extend_from_slice(&v);
                meta.push(chunk);
            }
        }
        let (bytes, crc) = self.write_segment(id, dim, &vectors, &meta)?;
        manifest.segments.push(SegmentEntry {
            id,
            rows,
            bytes,
            crc32: crc,
        });
        self.write_manifest(&manifest)?;

        self.manifest = manifest;
        self.segment_base.insert(id, self.meta.len());
        self.vectors.extend_from_slice(&vectors);
        self.meta.extend(meta);
        self.rebuild_live();
        Ok(())
    }

    /// Removes documents from the index (their rows become dead). Commits atomically.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn remove(&mut self, sources: &[String]) -> Result<usize, StoreError> {
        let mut manifest = self.manifest.clone();
        let removed = sources
            .iter()
            .filter(|s| manifest.documents.remove(*s).is_some())
            .count();
        if removed > 0 {
            self.write_manifest(&manifest)?;
            self.manifest = manifest;
            self.rebuild_live();
        }
        Ok(removed)
    }

    /// Rewrites the live rows into one new segment and deletes the old segment files, if dead rows
    /// outnumber live ones (or `force`). Returns whether it compacted.
    ///
    /// # Errors
    /// [`StoreError::Io`]. A failure leaves the database as it was.
    pub fn compact(&mut self, force: bool) -> Result<bool, StoreError> {
        let live_rows = self.live.iter().filter(|l| **l).count();
        let dead_rows = self.live.len() - live_rows;
        if dead_rows == 0 || (!force && dead_rows <= live_rows) {
            return Ok(false);
        }
        let dim = self.dim();
        let mut manifest = self.manifest.clone();
        let id = manifest.next_segment;
        manifest.next_segment += 1;
        let mut vectors = Vec::with_capacity(live_rows * dim);
        let mut meta = Vec::with_capacity(live_rows);
        for doc in manifest.documents.values_mut() {
            let start = self.segment_base[&doc.segment] + doc.first_row;
            doc.segment = id;
            doc.first_row = meta.len();
            vectors.extend_from_slice(&self.vectors[start * dim..(start + doc.rows) * dim]);
            meta.extend_from_slice(&self.meta[start..start + doc.rows]);
        }
        let old: Vec<u64> = manifest.segments.iter().map(|s| s.id).collect();
        manifest.segments.clear();
        if !meta.is_empty() {
            let (bytes, crc) = self.write_segment(id, dim, &vectors, &meta)?;
            manifest.segments.push(SegmentEntry {
                id,
                rows: meta.len(),
                bytes,
                crc32: crc,
            });
        }
        self.write_manifest(&manifest)?;
        self.manifest = manifest;
        self.segment_base.clear();
        if !meta.is_empty() {
            self.segment_base.insert(id, 0);
        }
        self.vectors = vectors;
        self.meta = meta;
        self.rebuild_live();
        for old_id in old {
            // Best effort: a file left here is unreferenced and removed on the next open.
            let _ = fs::remove_file(self.dir.join(segment_name(old_id)));
        }
        Ok(true)
    }

    fn write_segment(
        &self,
        id: u64,
        dim: usize,
        vectors: &[f32],
        meta: &[ChunkMeta],
    ) -> Result<(u64, u32), StoreError> {
        let (buf, crc) = encode_segment(dim, vectors, meta);
        self.write_atomically(&segment_name(id), &buf)?;
        Ok((buf.len() as u64, crc))
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        self.write_atomically(MANIFEST, &json)
    }

    /// Writes `name` so that it is either absent/old or complete: temp file, sync, rename, sync dir.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let dest = self.dir.join(name);
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &dest)?;
            File::open(&self.dir)?.sync_all()
        })();
        result.map_err(|e| StoreError::io(&dest, e))
    }

    /// The `k` live chunks most similar to `query` (any length; normalized here), best first.
    /// Exact: every live row is scored.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let dim = self.dim();
        let k = k.min(self.meta.len()); // a huge k must not allocate a huge heap
        if k == 0 || dim == 0 || query.len() != dim {
            return Vec::new();
        }
        let mut q = query.to_vec();
        crate::embed::normalize(&mut q);
        // A min-heap of the best k so far (scores ordered by total_cmp through OrdF32).
        let mut heap: BinaryHeap<std::cmp::Reverse<(OrdF32, usize)>> =
            BinaryHeap::with_capacity(k + 1);
        for (row, v) in self.vectors.chunks_exact(dim).enumerate() {
            if !self.live[row] {
                continue;
            }
            let score: f32 = v.iter().zip(&q).map(|(a, b)| a * b).sum();
            if heap.len() < k {
                heap.push(std::cmp::Reverse((OrdF32(score), row)));
            } else if heap.peek().is_some_and(|min| score > min.0.0.0) {
                heap.pop();
                heap.push(std::cmp::Reverse((OrdF32(score), row)));
            }
        }
        let mut hits: Vec<(f32, usize)> = heap.into_iter().map(|r| (r.0.0.0, r.0.1)).collect();
        hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.into_iter()
            .map(|(score, row)| Hit {
                score,
                chunk: self.meta[row].clone(),
            })
            .collect()
    }

    /// Every searchable chunk with its stored (unit-length) vector, in storage order.
    pub fn live_chunks(&self) -> impl Iterator<Item = (&ChunkMeta, &[f32])> {
        let dim = self.dim().max(1);
        self.meta
            .iter()
            .zip(self.vectors.chunks_exact(dim))
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .map(|(row, _)| row)
    }

    /// Counts describing the database.
    pub fn stats(&self) -> StoreStats {
        let chunks = self.live.iter().filter(|l| **l).count();
        let mut formats = BTreeMap::new();
        for doc in self.manifest.documents.values() {
            *formats.entry(doc.file.format.clone()).or_insert(0) += 1;
        }
        StoreStats {
            documents: self.manifest.documents.len(),
            chunks,
            dead_rows: self.live.len() - chunks,
            segments: self.manifest.segments.len(),
            bytes: self.manifest.segments.iter().map(|s| s.bytes).sum(),
            model: self.manifest.model.clone(),
            dim: self.manifest.dim,
            formats,
        }
    }
}

/// A segment file's bytes (header, vectors, chunk metadata, CRC-32 of what precedes it) and its CRC.
fn encode_segment(dim: usize, vectors: &[f32], meta: &[ChunkMeta]) -> (Vec<u8>, u32) {
    let meta_json = serde_json::to_vec(meta).expect("chunk metadata serializes");
    let mut buf = Vec::with_capacity(HEADER_LEN + vectors.len() * 4 + meta_json.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(dim as u32).to_le_bytes());
    buf.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(meta_json.len() as u64).to_le_bytes());
    for x in vectors {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.extend_from_slice(&meta_json);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    (buf, crc)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);

impl Eq for OrdF32 {}

impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(source: &str, version: u32) -> NewDocument {
        let chunks = (0..3)
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
                (meta, vec![1.0, i as f32, version as f32])
            })
            .collect();
        NewDocument {
            source: source.to_owned(),
            file: FileState {
                hash: format!("{source}{version}"),
                size: 1,
                mtime_ns: u64::from(version),
                format: "txt".to_owned(),
            },
            chunks,
        }
    }

    /// A writer with two documents in two segments.
    fn writer(dir: &Path) -> Store {
        let mut store = Store::open(dir, OpenMode::ReadWrite).unwrap();
        store.commit("m", vec![document("a", 1)]).unwrap();
        store.commit("m", vec![document("b", 1)]).unwrap();
        store
    }

    /// Rewrites both documents and compacts: every segment the previous manifest listed is deleted.
    fn rewrite_and_compact(store: &mut Store, version: u32) {
        store
            .commit("m", vec![document("a", version), document("b", version)])
            .unwrap();
        assert!(store.compact(true).unwrap());
    }

    fn texts(store: &Store) -> Vec<String> {
        store.live_chunks().map(|(m, _)| m.text.clone()).collect()
    }

    #[test]
    fn readers_take_no_lock_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let r = Store::open(dir.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(r.stats(), w.stats());
        assert!(
            Store::open(dir.path(), OpenMode::ReadWrite)
                .unwrap_err()
                .is_locked(),
            "one writer at a time"
        );
        // A reader open does not keep the writer from committing, and sees only what was committed.
        w.commit("m", vec![document("c", 1)]).unwrap();
        assert_eq!(r.stats().documents, 2);
        let r2 = Store::open(dir.path(), OpenMode::ReadOnly).unwrap();
        assert_eq!(r2.stats().documents, 3);
    }

    #[test]
    fn a_reader_whose_segments_are_compacted_away_retries_with_the_new_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let mut manifests_read = 0;
        let r = Store::open_snapshot(dir.path(), &mut || {
            manifests_read += 1;
            if manifests_read == 1 {
                rewrite_and_compact(&mut w, 2);
            }
        })
        .unwrap();
        assert_eq!(manifests_read, 2, "the first manifest's segments were gone");
        assert_eq!(r.stats(), w.stats());
        let t = texts(&r);
        assert_eq!(t.len(), 6);
        assert!(t.iter().all(|t| t.contains(" v2 ")), "{t:?}");
    }

    #[test]
    fn a_missing_segment_under_an_unchanged_manifest_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(writer(dir.path()));
        fs::remove_file(dir.path().join(segment_name(1))).unwrap();
        let mut manifests_read = 0;
        let err = Store::open_snapshot(dir.path(), &mut || manifests_read += 1).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
        assert_eq!(manifests_read, 1);
    }

    #[test]
    fn a_reader_gives_up_when_every_manifest_it_reads_is_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path());
        let mut manifests_read = 0;
        let err = Store::open_snapshot(dir.path(), &mut || {
            manifests_read += 1;
            rewrite_and_compact(&mut w, 10 + manifests_read as u32);
        })
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
        assert_eq!(manifests_read, SNAPSHOT_ATTEMPTS);
    }
}
