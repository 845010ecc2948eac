//! The vector store: an embedded, persistent, exact-cosine index in a directory.
//!
//! # Layout
//!
//! ```text
//! DB/
//!   MANIFEST         a header line `gilkit_rag MANIFEST 2 blake3:<hash of the rest>`, then JSON:
//!                    format, model, dimension, the live segments (rows, bytes, CRC-32) and the
//!                    document table (path -> content hash, size, mtime, encoding, segment, rows)
//!   seg-000001.seg   an immutable segment: header, rows x dim little-endian f32, chunk metadata
//!   seg-000002.seg   (JSON), CRC-32 of everything before it
//!   LOCK             advisory lock, held by the one writer (readers take no lock)
//!   staging/         the Ray engine's staged segments while a run goes (`gilkit_rag.ray_engine`)
//! ```
//!
//! # The folder is the store's own
//!
//! A writer opens a folder only if it does not exist (it is created), is empty, or holds a
//! gilkit_rag MANIFEST; any other folder, or a file, is [`StoreError::NotADatabase`]: `--db .` or
//! `--db ~` must never touch a user's files. A new database writes its (empty) MANIFEST at once, so
//! the folder is marked as the store's from the first open. Even then, the store deletes only files
//! it can tell it wrote: unreferenced `seg-NNNNNN.seg` files that start with the segment magic, and
//! its own temporaries (`*.tmp` under its own names, whose content starts with its own magic).
//!
//! # Integrity
//!
//! The MANIFEST's header carries a BLAKE3 hash of its JSON, and each segment ends with a CRC-32 of
//! its bytes, so any changed byte is detected. Every number the manifest holds is validated before
//! it is used (segment ids, row ranges against the segment's rows, each row's source against the
//! document that claims it), so a damaged database is [`StoreError::Corrupt`] naming the file and
//! what is wrong, never a panic and never a write: a writer refuses to open it. [`check`] reports
//! every problem; [`repair`] rebuilds the manifest from the intact segments. A manifest of format 1
//! (before the checksum) is still read, validated the same way, and rewritten as format 2 by the
//! next commit; the store deletes no unreferenced segment under such a manifest.
//!
//! # Crash safety
//!
//! Segments are written once and never changed. A commit writes the new segment to a temporary
//! file, syncs it, and links it into place under its final name, which fails if that name exists:
//! no write ever replaces a segment. Then it writes the new manifest the same way (`MANIFEST.tmp`,
//! sync, rename, sync the directory). The rename of the manifest is the commit point: a process
//! killed at any moment leaves either the old manifest (the new segment is an unreferenced file,
//! deleted on the next open) or the new one, never a half-written index. Opening checks every
//! segment's length and checksum, so a disk that lost data is reported, not searched. Segment ids
//! come from the manifest's `next_segment`, raised past any segment file found in the folder.
//!
//! # Segments written elsewhere
//!
//! [`write_segment`] writes a segment file without the writer's lock (for workers of a distributed
//! ingest); ids come from [`Store::reserve_segment_ids`], persisted so that no later commit reuses
//! them. [`Store::commit_segments`] then verifies those files and commits them, with their
//! documents, in one manifest write: all of them or none. A worker that cannot see the database's
//! ids (the Ray engine's) writes a *staged* segment anywhere instead ([`write_staged`]), and
//! [`Store::commit_staged`] checks it the same way, places it under a new id with the same
//! no-replace link, and commits it through the same manifest write.
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

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

// Segments built by other processes (distributed ingest) and committed by the writer.
mod staged;
pub use staged::{StagedDocument, StagedSegment, write_staged};

const MANIFEST: &str = "MANIFEST";
const LOCK: &str = "LOCK";
/// The first bytes of every MANIFEST of format 2 and later: also the mark of a gilkit_rag folder.
const MANIFEST_MAGIC: &str = "gilkit_rag MANIFEST";
const MAGIC: &[u8; 8] = b"GKRAGSG1";
/// The manifest format this build writes (1: plain JSON without a checksum, still read).
const FORMAT_VERSION: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// Largest vector dimension accepted from a file (a damaged header must not size an allocation).
const MAX_DIM: usize = 1 << 16;
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
    /// A file of the database is damaged (checksum, length, format or an inconsistent number).
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
    /// The path is not a folder the store may use: a file, or a non-empty folder without a
    /// gilkit_rag MANIFEST. Nothing in it was touched.
    NotADatabase {
        /// The path given.
        dir: PathBuf,
        /// What is there instead.
        reason: String,
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

    fn not_a_database(dir: &Path, reason: impl Into<String>) -> Self {
        StoreError::NotADatabase {
            dir: dir.to_owned(),
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

    /// True if the path is a file or someone else's folder.
    pub fn is_not_a_database(&self) -> bool {
        matches!(self, StoreError::NotADatabase { .. })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Corrupt { path, reason } => {
                let dir = path.parent().unwrap_or(Path::new("."));
                write!(
                    f,
                    "{}: damaged database file ({reason}); nothing was written. \
                     `gilkit-rag check --db {dir}` lists the damage, `gilkit-rag repair --db {dir}` \
                     rebuilds the manifest from the intact segments; or re-ingest into a fresh --db folder",
                    path.display(),
                    dir = dir.display()
                )
            }
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
            StoreError::NotADatabase { dir, reason } => write!(
                f,
                "{}: {reason}; --db must name a new or empty folder, or one gilkit-rag created \
                 (it never writes into other folders)",
                dir.display()
            ),
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
    /// The character encoding its text was decoded from, when it was not UTF-8 (`"windows-1252"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
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

/// A segment file as the manifest lists it; also what [`write_segment`] returns for a segment
/// written but not yet committed (see [`Store::commit_segments`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Its id: the file is `seg-{id:06}.seg`.
    pub id: u64,
    /// Rows (chunks) it holds.
    pub rows: usize,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its CRC-32 (also its last 4 bytes).
    pub crc32: u32,
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
#[derive(Debug, Clone, PartialEq, Eq, pyo3::IntoPyObject)]
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

/// A manifest as read from disk.
struct ReadManifest {
    /// The file's bytes (a reader compares them to see whether the manifest moved on).
    bytes: Vec<u8>,
    manifest: Manifest,
    /// False for a format-1 manifest, which carries no checksum.
    checksummed: bool,
}

/// The header line of a format-2 manifest: the magic, the format and the hash of the JSON after it.
fn manifest_header(json: &[u8]) -> String {
    format!(
        "{MANIFEST_MAGIC} {FORMAT_VERSION} blake3:{}\n",
        blake3::hash(json).to_hex()
    )
}

/// Parses a MANIFEST's bytes: format 2 (header line with the checksum, then JSON) or format 1
/// (JSON only). A file that is neither is someone else's ([`StoreError::NotADatabase`]); one that
/// is ours but damaged is [`StoreError::Corrupt`].
fn parse_manifest(dir: &Path, bytes: &[u8]) -> Result<(Manifest, bool), StoreError> {
    let path = dir.join(MANIFEST);
    let corrupt = |reason: String| StoreError::corrupt(&path, reason);
    if let Some(rest) = bytes.strip_prefix(MANIFEST_MAGIC.as_bytes()) {
        let newline = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("the header line is cut off".into()))?;
        let header = std::str::from_utf8(&rest[..newline])
            .map_err(|_| corrupt("the header line is not text".into()))?;
        let json = &rest[newline + 1..];
        let mut fields = header.split_whitespace();
        let format: u32 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| corrupt(format!("unreadable header {header:?}")))?;
        if format != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {format} (this build reads {FORMAT_VERSION} and 1); use the gilkit_rag that wrote it"
            )));
        }
        let stored = fields
            .next()
            .and_then(|f| f.strip_prefix("blake3:"))
            .ok_or_else(|| corrupt(format!("no checksum in the header {header:?}")))?;
        if blake3::hash(json).to_hex().as_str() != stored {
            return Err(corrupt(
                "checksum mismatch: the manifest was changed or damaged after it was written"
                    .into(),
            ));
        }
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
        if manifest.format != FORMAT_VERSION {
            return Err(corrupt(format!(
                "header says format {FORMAT_VERSION}, contents say {}",
                manifest.format
            )));
        }
        return Ok((manifest, true));
    }
    if looks_like_format_1(bytes) {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if manifest.format != 1 {
            return Err(corrupt(format!(
                "format version {} (this build reads {FORMAT_VERSION} and 1)",
                manifest.format
            )));
        }
        return Ok((manifest, false));
    }
    Err(StoreError::not_a_database(
        dir,
        "it holds a MANIFEST file that gilkit_rag did not write",
    ))
}

/// A format-1 manifest (pretty JSON of [`Manifest`]) begins with its `format` field.
fn looks_like_format_1(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64)];
    let text = String::from_utf8_lossy(head);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    compact.starts_with("{\"format\":")
}

/// The committed manifest in `dir`, or `None` if there is none.
fn read_manifest(dir: &Path) -> Result<Option<ReadManifest>, StoreError> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(StoreError::not_a_database(
                dir,
                "this is a file, not a folder",
            ));
        }
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let (manifest, checksummed) = parse_manifest(dir, &bytes)?;
    Ok(Some(ReadManifest {
        bytes,
        manifest,
        checksummed,
    }))
}

/// Checks every number of a manifest that can be checked without the segments: ids, row ranges
/// against the listed segments' rows, the model and dimension. See also [`Store::check_rows`].
fn validate_manifest(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    let path = dir.join(MANIFEST);
    let corrupt = |reason: String| Err(StoreError::corrupt(&path, reason));
    if m.model.is_some() != m.dim.is_some() {
        return corrupt("model and dimension must be both set or both unset".into());
    }
    if m.dim.is_some_and(|d| d == 0 || d > MAX_DIM) {
        return corrupt(format!("dimension {:?} out of range", m.dim));
    }
    if !m.segments.is_empty() && m.dim.is_none() {
        return corrupt("segments are listed but no dimension".into());
    }
    let mut rows_of = HashMap::new();
    for seg in &m.segments {
        if seg.id == 0 || seg.id >= m.next_segment {
            return corrupt(format!(
                "segment id {} is not below next_segment {}",
                seg.id, m.next_segment
            ));
        }
        if rows_of.insert(seg.id, seg.rows).is_some() {
            return corrupt(format!("segment {} is listed twice", seg.id));
        }
    }
    for (source, doc) in &m.documents {
        let Some(&seg_rows) = rows_of.get(&doc.segment) else {
            return corrupt(format!(
                "document {source:?} points at segment {}, which is not listed",
                doc.segment
            ));
        };
        if doc
            .first_row
            .checked_add(doc.rows)
            .is_none_or(|end| end > seg_rows)
        {
            return corrupt(format!(
                "document {source:?} claims rows {}..+{} of segment {}, which holds {seg_rows}",
                doc.first_row, doc.rows, doc.segment
            ));
        }
    }
    Ok(())
}

/// The file name of segment `id`.
fn segment_name(id: u64) -> String {
    format!("seg-{id:06}.seg")
}

/// The id of a segment file name (`seg-000012.seg` -> 12), if it is one.
fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".seg")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment's contents, checked against its own header and checksum (not against a manifest).
struct SegmentData {
    dim: usize,
    crc32: u32,
    vectors: Vec<f32>,
    meta: Vec<ChunkMeta>,
}

/// Segment files read back and checked for a commit (see [`Store::verify_segments`]): their
/// dimension, entries and rows, and the documents their rows hold.
struct VerifiedSegments {
    dim: usize,
    segments: Vec<(SegmentEntry, Vec<f32>, Vec<ChunkMeta>)>,
    documents: Vec<(String, DocumentEntry)>,
}

/// Reads and checks one segment file on its own: magic, trailing CRC-32, header lengths, metadata.
fn read_segment(path: &Path) -> Result<(u64, SegmentData), StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let data = parse_segment(path, &bytes)?;
    Ok((bytes.len() as u64, data))
}

fn parse_segment(path: &Path, bytes: &[u8]) -> Result<SegmentData, StoreError> {
    let corrupt = |reason: &str| StoreError::corrupt(path, reason);
    if bytes.len() < HEADER_LEN + 4 {
        return Err(corrupt("too short to be a segment"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    if &body[..8] != MAGIC {
        return Err(corrupt("not a gilkit-rag segment"));
    }
    let dim = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let rows = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
    let meta_len = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    let vec_bytes = rows.checked_mul(dim).and_then(|n| n.checked_mul(4));
    let expected = vec_bytes
        .and_then(|v| v.checked_add(HEADER_LEN))
        .and_then(|v| v.checked_add(usize::try_from(meta_len).ok()?));
    let (Some(vec_bytes), Some(expected)) = (vec_bytes, expected) else {
        return Err(corrupt("header lengths overflow"));
    };
    if dim == 0 || dim > MAX_DIM || expected != body.len() {
        return Err(corrupt("header does not match the file's length"));
    }
    let meta: Vec<ChunkMeta> = serde_json::from_slice(&body[HEADER_LEN + vec_bytes..])
        .map_err(|e| StoreError::corrupt(path, format!("chunk metadata: {e}")))?;
    if meta.len() != rows {
        return Err(corrupt("metadata count does not match the rows"));
    }
    let vectors = body[HEADER_LEN..HEADER_LEN + vec_bytes]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(SegmentData {
        dim,
        crc32: crc,
        vectors,
        meta,
    })
}

/// The bytes of a segment file holding `vectors` (`meta.len()` rows of `dim` floats) and `meta`.
fn encode_segment(dim: usize, vectors: &[f32], meta: &[ChunkMeta]) -> Vec<u8> {
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
    buf
}

/// Writes segment `id` into the database folder `dir` and returns its manifest entry; it is not
/// part of the index until [`Store::commit_segments`] commits it. Needs no lock (for the workers of
/// a distributed ingest, with ids from [`Store::reserve_segment_ids`]). Vectors are stored as
/// given: pass them unit-length.
///
/// Never replaces a file: if `seg-{id}.seg` exists, this fails with [`StoreError::Io`] of kind
/// `AlreadyExists` and leaves it alone.
///
/// # Errors
/// [`StoreError::Io`]; `AlreadyExists` as above.
///
/// # Panics
/// If `vectors.len() != meta.len() * dim` or `dim` is 0.
pub fn write_segment(
    dir: &Path,
    id: u64,
    dim: usize,
    vectors: &[f32],
    meta: &[ChunkMeta],
) -> Result<SegmentEntry, StoreError> {
    assert!(
        dim > 0 && vectors.len() == meta.len() * dim,
        "one vector of `dim` floats per row"
    );
    let buf = encode_segment(dim, vectors, meta);
    let crc = u32::from_le_bytes(buf[buf.len() - 4..].try_into().expect("4 bytes"));
    let dest = dir.join(segment_name(id));
    let tmp = write_temporary(&dest, &buf)?;
    let placed = place_new(&tmp, &dest);
    let _ = fs::remove_file(&tmp); // ours (created above); gone already after a rename
    placed.map_err(|e| StoreError::io(&dest, e))?;
    sync_dir(dir)?;
    Ok(SegmentEntry {
        id,
        rows: meta.len(),
        bytes: buf.len() as u64,
        crc32: crc,
    })
}

/// Gives the file `from` the name `dest`, never replacing a file: a hard link fails if `dest`
/// exists, where a rename would replace it. `from` keeps its name (the caller removes it) unless the
/// file system has no hard links: then `dest` is checked and `from` renamed (two steps; the names
/// placed are segment ids only the writer hands out and never reuses, or staging names unique per
/// task attempt, so nothing else creates them in between). `AlreadyExists` if `dest` exists.
fn place_new(from: &Path, dest: &Path) -> io::Result<()> {
    match fs::hard_link(from, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if fs::symlink_metadata(dest).is_ok() => {
            Err(io::Error::from(io::ErrorKind::AlreadyExists))
        }
        Err(_) => fs::rename(from, dest),
    }
}

/// Creates a temporary file for `dest` (`dest.tmp`; if someone else's file holds that name,
/// `dest.PID.tmp`), writes `bytes`, syncs it, and returns its path. A temporary of ours left by a
/// killed process is replaced; nothing else is.
fn write_temporary(dest: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let name = dest.file_name().expect("a file name").to_string_lossy();
    let mut path = dest.with_file_name(format!("{name}.tmp"));
    let create = |p: &Path| OpenOptions::new().write(true).create_new(true).open(p);
    let mut file = match create(&path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && is_own_temporary(&path) => {
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            create(&path)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            path = dest.with_file_name(format!("{name}.{}.tmp", std::process::id()));
            if is_own_temporary(&path) {
                let _ = fs::remove_file(&path); // ours, from a killed run of this pid number
            }
            create(&path)
        }
        other => other,
    }
    .map_err(|e| StoreError::io(&path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// The first bytes of a file (fewer if it is shorter), or `None` if it cannot be read.
fn file_head(path: &Path, n: usize) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    File::open(path)
        .ok()?
        .take(n as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// True if `path` is a temporary file this store writes (by name) and its content is what the
/// store writes there (its magic, or a prefix of it: a write cut short). Nothing else is deleted.
fn is_own_temporary(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    // `NAME.tmp` or `NAME.PID.tmp` (see `write_temporary`).
    let stem = match stem.rsplit_once('.') {
        Some((base, pid)) if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    };
    let Some(head) = file_head(path, 64) else {
        return false;
    };
    let starts = |magic: &[u8]| {
        let n = head.len().min(magic.len());
        head[..n] == magic[..n]
    };
    if stem == MANIFEST {
        return starts(MANIFEST_MAGIC.as_bytes()) || looks_like_format_1(&head);
    }
    segment_id(stem).is_some() && starts(MAGIC)
}

/// Makes `dir` usable by a writer, or refuses it: creates it if missing; otherwise it must be a
/// folder that is empty (but for our `LOCK`) or holds a MANIFEST (whose owner `parse_manifest`
/// checks). Touches nothing in a folder it refuses.
fn claim_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(StoreError::not_a_database(
            dir,
            "a parent of this path is a file",
        )),
        Err(e) => Err(StoreError::io(dir, e)),
        Ok(meta) if !meta.is_dir() => Err(StoreError::not_a_database(
            dir,
            "this is a file, not a folder",
        )),
        Ok(_) => {
            if dir.join(MANIFEST).exists() {
                return Ok(());
            }
            let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
            let mut foreign = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(dir, e))?;
                let own_lock = entry.file_name() == LOCK
                    && entry.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
                if !own_lock {
                    foreign.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            if foreign.is_empty() {
                return Ok(());
            }
            foreign.sort();
            let shown: Vec<String> = foreign.iter().take(3).map(|n| format!("{n:?}")).collect();
            let more = if foreign.len() > 3 {
                format!(" and {} more", foreign.len() - 3)
            } else {
                String::new()
            };
            Err(StoreError::not_a_database(
                dir,
                format!(
                    "this folder is not empty ({}{more}) and holds no gilkit_rag MANIFEST",
                    shown.join(", ")
                ),
            ))
        }
    }
}

impl Store {
    /// Opens (or, in [`OpenMode::ReadWrite`], creates) the database in `dir`, verifying every segment.
    /// A writer also deletes the files a killed ingest left behind (only files it can tell it wrote;
    /// see the module docs); a reader loads the last commit without a lock, even while another
    /// process writes.
    ///
    /// # Errors
    /// [`StoreError`]: I/O, a damaged database, a path that is not a database folder
    /// ([`StoreError::NotADatabase`]), another writer holding the lock (read-write only), or
    /// (read-only) no database in `dir`.
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        match mode {
            OpenMode::ReadOnly => Store::open_snapshot(dir, &mut || {}),
            OpenMode::ReadWrite => {
                claim_dir(dir)?;
                // Someone else's MANIFEST is refused before the LOCK file is created.
                read_manifest(dir)?;
                let lock = Store::lock(dir)?;
                let (manifest, checksummed, new) = match read_manifest(dir)? {
                    Some(read) => (read.manifest, read.checksummed, false),
                    None => (Manifest::default(), true, true),
                };
                validate_manifest(dir, &manifest)?;
                let mut store = Store::load(dir, Some(lock), manifest)?;
                if new {
                    // The folder is marked as ours from the first open on.
                    store.write_manifest(&store.manifest.clone())?;
                }
                if checksummed {
                    store.remove_unreferenced()?;
                }
                store.manifest.next_segment = store.first_free_segment_id()?;
                Ok(store)
            }
        }
    }

    /// Takes the writer's lock of `dir`.
    fn lock(dir: &Path) -> Result<File, StoreError> {
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => Ok(lock),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                dir: dir.to_owned(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::io(&lock_path, e)),
        }
    }

    /// A reader's open: the manifest, then its segments; if a segment has vanished because the
    /// manifest moved on (a compaction), again with the new manifest. `between` runs after each
    /// manifest read (a seam for the tests, which compact there).
    fn open_snapshot(dir: &Path, between: &mut dyn FnMut()) -> Result<Store, StoreError> {
        let mut attempt = 1;
        loop {
            let Some(read) = read_manifest(dir)? else {
                return Err(StoreError::NotFound {
                    dir: dir.to_owned(),
                });
            };
            between();
            let result = validate_manifest(dir, &read.manifest)
                .and_then(|()| Store::load(dir, None, read.manifest));
            if let Err(StoreError::Io { source, .. }) = &result
                && source.kind() == io::ErrorKind::NotFound
                && attempt < SNAPSHOT_ATTEMPTS
                && read_manifest(dir)?.is_none_or(|now| now.bytes != read.bytes)
            {
                attempt += 1;
                continue;
            }
            return result;
        }
    }

    /// The store of `manifest` (validated), with all of its segments loaded and checked, and every
    /// document's rows checked against the rows' own metadata.
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
        store.check_rows()?;
        store.rebuild_live();
        Ok(store)
    }

    /// Every document's rows hold its own chunks, in order: a row range that a damaged manifest
    /// shifted or stretched is caught here, before anything is searched or written.
    fn check_rows(&self) -> Result<(), StoreError> {
        for (source, doc) in &self.manifest.documents {
            let base = self.segment_base[&doc.segment]; // validated: the segment is listed
            let rows = &self.meta[base + doc.first_row..base + doc.first_row + doc.rows];
            let consistent = rows
                .iter()
                .enumerate()
                .all(|(i, m)| m.source == *source && m.position == i);
            if !consistent {
                return Err(StoreError::corrupt(
                    &self.dir.join(MANIFEST),
                    format!(
                        "document {source:?}: rows {}..+{} of segment {} hold other chunks",
                        doc.first_row, doc.rows, doc.segment
                    ),
                ));
            }
        }
        Ok(())
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
        let (bytes, data) = read_segment(&path)?;
        if bytes != seg.bytes {
            return Err(StoreError::corrupt(
                &path,
                format!("{bytes} bytes, manifest says {}", seg.bytes),
            ));
        }
        if data.crc32 != seg.crc32 {
            return Err(StoreError::corrupt(
                &path,
                "checksum mismatch with the manifest",
            ));
        }
        if Some(data.dim) != self.manifest.dim || data.meta.len() != seg.rows {
            return Err(StoreError::corrupt(
                &path,
                "header does not match the manifest",
            ));
        }
        self.segment_base.insert(seg.id, self.meta.len());
        self.vectors.extend(data.vectors);
        self.meta.extend(data.meta);
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

    /// The lowest segment id above `next_segment` and above every segment file in the folder, so
    /// that a new segment never meets an existing file.
    fn first_free_segment_id(&self) -> Result<u64, StoreError> {
        let mut next = self.manifest.next_segment.max(1);
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let id = segment_id(&name).or_else(|| name.strip_suffix(".tmp").and_then(segment_id));
            if let Some(id) = id {
                next = next.max(id.saturating_add(1));
            }
        }
        Ok(next)
    }

    /// Deletes what a process killed mid-commit, or a compaction, left behind: segment files the
    /// manifest does not reference and temporaries, but only those it can tell it wrote (see
    /// [`is_own_temporary`]; a segment must start with the segment magic).
    fn remove_unreferenced(&self) -> Result<(), StoreError> {
        let keep: HashSet<u64> = self.manifest.segments.iter().map(|s| s.id).collect();
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            let stale = is_file
                && match segment_id(name) {
                    Some(id) => {
                        !keep.contains(&id) && file_head(&path, 8).as_deref() == Some(MAGIC)
                    }
                    None => name.ends_with(".tmp") && is_own_temporary(&path),
                };
            if stale {
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
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

    /// Reserves `n` segment ids for [`write_segment`] calls made elsewhere (workers), and commits
    /// the reservation, so that no later commit of this database uses them.
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn reserve_segment_ids(&mut self, n: u64) -> Result<Range<u64>, StoreError> {
        let mut manifest = self.manifest.clone();
        let start = manifest.next_segment;
        manifest.next_segment = start.saturating_add(n);
        self.write_manifest(&manifest)?;
        self.manifest = manifest;
        Ok(start..start + n)
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
        self.check_model(model, dim)?;
        let id = self.manifest.next_segment;
        let mut vectors = Vec::with_capacity(rows * dim);
        let mut meta = Vec::with_capacity(rows);
        let mut documents = Vec::with_capacity(docs.len());
        for doc in docs {
            documents.push((
                doc.source,
                DocumentEntry {
                    file: doc.file,
                    segment: id,
                    first_row: meta.len(),
                    rows: doc.chunks.len(),
                },
            ));
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
        let entry = write_segment(&self.dir, id, dim, &vectors, &meta)?;
        self.apply(model, dim, vec![(entry, vectors, meta)], documents)
    }

    /// Commits segments that [`write_segment`] wrote (with ids from
    /// [`Store::reserve_segment_ids`]), with the documents whose chunks they hold, in one atomic
    /// manifest write. Each file is read back and checked against its entry; a document's rows are
    /// the contiguous run of rows whose `source` is its key (positions from 0), and `files` gives
    /// its file state. A document already in the store is replaced.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a file does not match its entry, a segment id is already committed,
    /// a document's rows are not one contiguous run starting at position 0, or a document has no
    /// file state; [`StoreError::ModelMismatch`]; [`StoreError::Io`]. On error nothing is changed.
    pub fn commit_segments(
        &mut self,
        model: &str,
        segments: &[SegmentEntry],
        files: &BTreeMap<String, FileState>,
    ) -> Result<(), StoreError> {
        let located: Vec<(SegmentEntry, PathBuf)> = segments
            .iter()
            .map(|e| (e.clone(), self.dir.join(segment_name(e.id))))
            .collect();
        let Some(verified) = self.verify_segments(model, &located, files)? else {
            return Ok(());
        };
        self.apply(model, verified.dim, verified.segments, verified.documents)
    }

    /// Reads back and checks segment files about to be committed (`(entry, where the file is)`),
    /// for [`Store::commit_segments`] and [`Store::commit_staged`]: each file against its entry
    /// (length, CRC-32, rows) and its own header and checksum, one dimension, the model against the
    /// database's, and each document's rows one contiguous run from position 0 with a file state
    /// in `files`. `None` if there are no segments. Changes nothing.
    fn verify_segments(
        &self,
        model: &str,
        segments: &[(SegmentEntry, PathBuf)],
        files: &BTreeMap<String, FileState>,
    ) -> Result<Option<VerifiedSegments>, StoreError> {
        let mut loaded = Vec::with_capacity(segments.len());
        let mut documents: Vec<(String, DocumentEntry)> = Vec::new();
        let mut seen_sources = HashSet::new();
        let mut seen = HashSet::new();
        let mut dim = None;
        for (entry, path) in segments {
            if self.segment_base.contains_key(&entry.id) || !seen.insert(entry.id) {
                return Err(StoreError::corrupt(path, "segment committed twice"));
            }
            let (bytes, data) = read_segment(path)?;
            if bytes != entry.bytes || data.crc32 != entry.crc32 || data.meta.len() != entry.rows {
                return Err(StoreError::corrupt(
                    path,
                    "the file does not match the segment entry",
                ));
            }
            if dim.is_some_and(|d| d != data.dim) {
                return Err(StoreError::corrupt(
                    path,
                    "segments of different dimensions",
                ));
            }
            dim = Some(data.dim);
            let mut start = 0;
            while start < data.meta.len() {
                let source = &data.meta[start].source;
                let len = data.meta[start..]
                    .iter()
                    .take_while(|m| m.source == *source)
                    .count();
                let in_order = data.meta[start..start + len]
                    .iter()
                    .enumerate()
                    .all(|(i, m)| m.position == i);
                let file = files.get(source).filter(|_| in_order).ok_or_else(|| {
                    StoreError::corrupt(
                        path,
                        format!("rows of {source:?} are out of order or have no file state"),
                    )
                })?;
                if !seen_sources.insert(source.clone()) {
                    return Err(StoreError::corrupt(
                        path,
                        format!("document {source:?} is in more than one run of rows"),
                    ));
                }
                documents.push((
                    source.clone(),
                    DocumentEntry {
                        file: file.clone(),
                        segment: entry.id,
                        first_row: start,
                        rows: len,
                    },
                ));
                start += len;
            }
            loaded.push((entry.clone(), data.vectors, data.meta));
        }
        let Some(dim) = dim else { return Ok(None) };
        self.check_model(model, dim)?;
        Ok(Some(VerifiedSegments {
            dim,
            segments: loaded,
            documents,
        }))
    }

    fn check_model(&self, model: &str, dim: usize) -> Result<(), StoreError> {
        match (&self.manifest.model, self.manifest.dim) {
            (Some(m), Some(d)) if m != model || d != dim => Err(StoreError::ModelMismatch {
                stored: (m.clone(), d),
                given: (model.to_owned(), dim),
            }),
            _ => Ok(()),
        }
    }

    /// The commit point shared by [`Store::commit`] and [`Store::commit_segments`]: one manifest
    /// write adding the (already written) segments and the documents, then the in-memory index.
    fn apply(
        &mut self,
        model: &str,
        dim: usize,
        segments: Vec<(SegmentEntry, Vec<f32>, Vec<ChunkMeta>)>,
        documents: Vec<(String, DocumentEntry)>,
    ) -> Result<(), StoreError> {
        let mut manifest = self.manifest.clone();
        manifest.model = Some(model.to_owned());
        manifest.dim = Some(dim);
        for (entry, _, _) in &segments {
            manifest.next_segment = manifest.next_segment.max(entry.id.saturating_add(1));
            manifest.segments.push(entry.clone());
        }
        manifest.documents.extend(documents);
        self.write_manifest(&manifest)?;
        self.manifest = manifest;
        for (entry, vectors, meta) in segments {
            self.segment_base.insert(entry.id, self.meta.len());
            self.vectors.extend_from_slice(&vectors);
            self.meta.extend(meta);
        }
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
            // Validated at open and kept consistent by every commit.
            let start = self.segment_base[&doc.segment] + doc.first_row;
            doc.segment = id;
            doc.first_row = meta.len();
            vectors.extend_from_slice(&self.vectors[start * dim..(start + doc.rows) * dim]);
            meta.extend_from_slice(&self.meta[start..start + doc.rows]);
        }
        let old: Vec<u64> = manifest.segments.iter().map(|s| s.id).collect();
        manifest.segments.clear();
        if !meta.is_empty() {
            let entry = write_segment(&self.dir, id, dim, &vectors, &meta)?;
            manifest.segments.push(entry);
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

    /// Writes `manifest` (format 2: header line with the checksum, then JSON) so that the file is
    /// either the old one or the new one: temporary file, sync, rename, sync the directory.
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let mut manifest = manifest.clone();
        manifest.format = FORMAT_VERSION;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        let mut bytes = manifest_header(&json).into_bytes();
        bytes.extend_from_slice(&json);
        let dest = self.dir.join(MANIFEST);
        let tmp = write_temporary(&dest, &bytes)?;
        fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
        sync_dir(&self.dir)
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

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Every problem, one sentence each; empty if the database is intact.
    pub problems: Vec<String>,
    /// Documents and chunks of the intact database (0 when damaged).
    pub documents: usize,
    /// Searchable chunks of the intact database (0 when damaged).
    pub chunks: usize,
    /// Segment files that pass their own checksum (what [`repair`] can rebuild from).
    pub intact_segments: usize,
    /// Segment files that fail their own checksum or format checks.
    pub damaged_segments: Vec<String>,
}

impl CheckReport {
    /// True if nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A segment file's id and, if it passes its own checks, its length and contents.
type ScannedSegment = (u64, Result<(u64, SegmentData), StoreError>);

/// The segment files of `dir` (by id), each read and checked on its own.
fn scan_segments(dir: &Path) -> Result<Vec<ScannedSegment>, StoreError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| segment_id(e.file_name().to_str()?))
        .collect();
    ids.sort_unstable();
    Ok(ids
        .into_iter()
        .map(|id| (id, read_segment(&dir.join(segment_name(id)))))
        .collect())
}

/// Checks the database in `dir` without changing it: the manifest (checksum, every number) and
/// every segment file, listed or not. Takes no lock.
///
/// # Errors
/// [`StoreError::NotFound`], [`StoreError::NotADatabase`], or I/O on the folder itself; damage is
/// not an error but the report's `problems`.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    match Store::open(dir, OpenMode::ReadOnly) {
        Ok(store) => {
            let stats = store.stats();
            report.documents = stats.documents;
            report.chunks = stats.chunks;
        }
        Err(e @ (StoreError::Corrupt { .. } | StoreError::Io { .. })) => {
            report.problems.push(match e {
                StoreError::Corrupt { path, reason } => format!("{}: {reason}", path.display()),
                other => other.to_string(),
            });
        }
        Err(e) => return Err(e),
    }
    for (id, result) in scan_segments(dir)? {
        match result {
            Ok(_) => report.intact_segments += 1,
            Err(e) => {
                let name = segment_name(id);
                let why = match e {
                    StoreError::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                report.problems.push(format!("{name}: {why}"));
                report.damaged_segments.push(name);
            }
        }
    }
    report.problems.dedup();
    Ok(report)
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, pyo3::IntoPyObject)]
pub struct RepairReport {
    /// False if the database was intact and nothing was written.
    pub repaired: bool,
    /// Documents in the rebuilt manifest.
    pub documents: usize,
    /// Their chunks.
    pub chunks: usize,
    /// Documents whose file state could not be recovered: the next ingest re-reads and re-embeds
    /// them (they stay searchable meanwhile).
    pub unknown_file_state: usize,
    /// Damaged segment files, renamed to `*.damaged` (kept, never deleted).
    pub damaged_segments: Vec<String>,
}

/// Rebuilds the manifest of the database in `dir` from its intact segment files: each document is
/// the contiguous run of its rows in the newest segment holding it. File states (hashes) come from
/// the old manifest where it still parses and agrees, else they are left unknown, so the next ingest
/// re-reads those files. Documents removed since the last compaction may come back (the next
/// `ingest` of their folder prunes them again). Damaged segments are renamed to `seg-N.seg.damaged`.
/// `model` names the embedding model if the old manifest no longer tells. Takes the writer's lock.
///
/// # Errors
/// [`StoreError::NotFound`] if there is neither a manifest nor a segment, [`StoreError::Locked`],
/// [`StoreError::NotADatabase`], [`StoreError::Corrupt`] if the model is unknown and not given,
/// [`StoreError::Io`].
pub fn repair(dir: &Path, model: Option<&str>) -> Result<RepairReport, StoreError> {
    let manifest_path = dir.join(MANIFEST);
    let old_bytes = match fs::read(&manifest_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(StoreError::not_a_database(
                dir,
                "this is a file, not a folder",
            ));
        }
        Err(e) => return Err(StoreError::io(&manifest_path, e)),
    };
    let segments = scan_segments(dir)?;
    if old_bytes.is_none() && segments.is_empty() {
        return Err(StoreError::NotFound {
            dir: dir.to_owned(),
        });
    }
    // Ours: a manifest of ours (even damaged), or at least one segment with our magic.
    let ours = old_bytes
        .as_deref()
        .is_some_and(|b| b.starts_with(MANIFEST_MAGIC.as_bytes()) || looks_like_format_1(b))
        || segments
            .iter()
            .any(|(id, _)| file_head(&dir.join(segment_name(*id)), 8).as_deref() == Some(MAGIC));
    if !ours {
        return Err(StoreError::not_a_database(
            dir,
            "it holds no gilkit_rag MANIFEST or segment",
        ));
    }
    let lock = Store::lock(dir)?;
    match Store::open_snapshot(dir, &mut || {}) {
        Ok(_) => return Ok(RepairReport::default()),
        Err(StoreError::Corrupt { .. } | StoreError::Io { .. }) => {}
        Err(StoreError::NotFound { .. }) => {} // segments without a manifest
        Err(e) => return Err(e),
    }
    // What the old manifest still tells, checksum or not.
    let old: Option<Manifest> = old_bytes.as_deref().and_then(|b| {
        let json = match b.strip_prefix(MANIFEST_MAGIC.as_bytes()) {
            Some(rest) => &rest[rest.iter().position(|c| *c == b'\n')? + 1..],
            None => b,
        };
        serde_json::from_slice(json).ok()
    });
    // The model name from a manifest whose JSON no longer parses.
    let model_in_text = old_bytes.as_deref().and_then(|b| {
        let text = String::from_utf8_lossy(b);
        let rest = &text[text.find("\"model\": \"")? + 10..];
        Some(rest[..rest.find('"')?].to_owned())
    });
    let model = old
        .as_ref()
        .and_then(|m| m.model.clone())
        .or_else(|| model.map(str::to_owned))
        .or(model_in_text);
    if segments.iter().any(|(_, r)| r.is_ok()) && model.is_none() {
        return Err(StoreError::corrupt(
            &manifest_path,
            "the embedding model is not recorded any more; pass it to repair (--model)",
        ));
    }
    let mut report = RepairReport {
        repaired: true,
        ..RepairReport::default()
    };
    let mut set_aside = |id: u64| -> Result<(), StoreError> {
        let name = segment_name(id);
        let from = dir.join(&name);
        let to = dir.join(format!("{name}.damaged"));
        if !to.exists() {
            fs::rename(&from, &to).map_err(|e| StoreError::io(&from, e))?;
        }
        report.damaged_segments.push(name);
        Ok(())
    };
    let mut intact = Vec::new();
    for (id, result) in segments {
        match result {
            Ok((bytes, data)) => intact.push((id, bytes, data)),
            Err(_) => set_aside(id)?,
        }
    }
    // One dimension: the newest segment's; others are set aside as damaged.
    let dim = intact.last().map(|(_, _, d)| d.dim);
    let mut kept = Vec::with_capacity(intact.len());
    for (id, bytes, data) in intact {
        if Some(data.dim) == dim {
            kept.push((id, bytes, data));
        } else {
            set_aside(id)?;
        }
    }
    let mut manifest = Manifest {
        model: dim.and(model),
        dim,
        ..Manifest::default()
    };
    for (id, bytes, data) in kept {
        let mut start = 0;
        while start < data.meta.len() {
            let source = data.meta[start].source.clone();
            let len = data.meta[start..]
                .iter()
                .take_while(|m| m.source == source)
                .count();
            let in_order = data.meta[start..start + len]
                .iter()
                .enumerate()
                .all(|(i, m)| m.position == i);
            if in_order {
                let known = old
                    .as_ref()
                    .and_then(|m| m.documents.get(&source))
                    .filter(|d| d.segment == id && d.first_row == start && d.rows == len)
                    .map(|d| d.file.clone());
                let file = known.unwrap_or_else(|| FileState {
                    hash: String::new(),
                    size: 0,
                    mtime_ns: 0,
                    format: crate::load::Format::for_path(Path::new(&source))
                        .map_or("unknown", |(f, _)| f.name())
                        .to_owned(),
                    encoding: None,
                });
                manifest.documents.insert(
                    source,
                    DocumentEntry {
                        file,
                        segment: id,
                        first_row: start,
                        rows: len,
                    },
                );
            }
            start += len;
        }
        manifest.segments.push(SegmentEntry {
            id,
            rows: data.meta.len(),
            bytes,
            crc32: data.crc32,
        });
        manifest.next_segment = manifest.next_segment.max(id + 1);
    }
    // Segments no document points at any more stay listed (their rows are dead) until compaction.
    report.unknown_file_state = manifest
        .documents
        .values()
        .filter(|d| d.file.hash.is_empty())
        .count();
    report.documents = manifest.documents.len();
    report.chunks = manifest.documents.values().map(|d| d.rows).sum();
    let store = Store {
        dir: dir.to_owned(),
        lock: Some(lock),
        manifest: Manifest::default(),
        vectors: Vec::new(),
        meta: Vec::new(),
        live: Vec::new(),
        segment_base: HashMap::new(),
    };
    store.write_manifest(&manifest)?;
    // The rebuilt manifest must open cleanly.
    drop(store);
    Store::open(dir, OpenMode::ReadOnly)?;
    Ok(report)
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
                encoding: None,
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
