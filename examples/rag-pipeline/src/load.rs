//! Document discovery and loading: from paths on disk to plain text.
//!
//! [`discover`] walks the paths the user gave (files as they are, directories recursively) and keeps
//! the files whose path matches the include globs and none of the exclude globs. Anything that is
//! not a regular file (a FIFO, a device, a socket, also behind a symlink) is refused by its type,
//! never opened: a FIFO would block a reader forever and `/dev/zero` never ends. [`load_bytes`]
//! turns one file's bytes into text according to its extension: `.txt` and `.md` as text,
//! `.html`/`.htm` as the visible text (no `<script>`, `<style>`, `<head>`), `.pdf` as its text
//! layer, `.json` as its strings with their keys, `.csv` as one `header: value` block per record,
//! and `name.EXT.gz` as `name.EXT` after gunzip. Every failure is a [`LoadError`] naming the path
//! and the reason, so that the pipeline can report it and go on with the other files.
//!
//! # Text encodings
//!
//! Text is UTF-8 when it is valid UTF-8 (a BOM is dropped); a UTF-16 BOM selects UTF-16; anything
//! else is decoded in the legacy encoding `chardetng` (Firefox's detector) guesses, with
//! `encoding_rs` (Windows-1252 for Latin-1 text, Shift_JIS, KOI8-R, ...), and the encoding used is
//! recorded ([`LoadedDocument::encoding`]). Only binary data is refused: NUL bytes, or more than
//! 1% control characters.
//!
//! # Limits
//!
//! Input is untrusted: [`Limits`] caps the bytes read from a file, the bytes a `.gz` may inflate to
//! (a decompression bomb stops there, so memory stays bounded) and the size of the extracted text;
//! a file over a limit is a [`LoadErrorKind::TooLarge`] failure naming the setting to raise.
//!
//! # Names
//!
//! A path that is not valid UTF-8 is kept: [`display_path`] shows (and the store keys it by) its
//! valid parts as they are and each invalid byte as `\xNN`.
//!
//! Everything here is plain Rust with no Python involved: the pipeline calls it on worker threads
//! with the GIL released.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use scraper::{Html, Node};
use walkdir::WalkDir;

/// The formats the loader understands, chosen from the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.txt` (and anything given by name with an unknown extension is not loaded).
    Text,
    /// `.md`, `.markdown`.
    Markdown,
    /// `.html`, `.htm`.
    Html,
    /// `.pdf`.
    Pdf,
    /// `.json`.
    Json,
    /// `.csv`.
    Csv,
}

impl Format {
    /// The format for a file name, looking through one `.gz` suffix. Returns the format and whether
    /// the file is gzip-compressed, or `None` for an unsupported extension.
    pub fn for_path(path: &Path) -> Option<(Format, bool)> {
        // Lossy: only the (ASCII) extension matters, and a name that is not UTF-8 must still load.
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let (name, gz) = match name.strip_suffix(".gz") {
            Some(inner) => (inner.to_owned(), true),
            None => (name, false),
        };
        let ext = name.rsplit_once('.')?.1;
        let format = match ext {
            "txt" | "text" => Format::Text,
            "md" | "markdown" => Format::Markdown,
            "html" | "htm" => Format::Html,
            "pdf" => Format::Pdf,
            "json" => Format::Json,
            "csv" => Format::Csv,
            _ => return None,
        };
        Some((format, gz))
    }

    /// The lower-case name used in reports (`"pdf"`, `"html"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// Why a file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadErrorKind {
    /// The file could not be read (missing, permissions, ...).
    Io(String),
    /// The extension is not one the loader knows.
    UnsupportedFormat,
    /// The file is empty, or holds no text once parsed (e.g. a PDF without a text layer).
    Empty,
    /// The bytes are not valid UTF-8 (no longer produced for text formats, which are decoded in
    /// their detected encoding; see [`LoadErrorKind::Binary`]).
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence (after decompression).
        offset: usize,
    },
    /// A text format's bytes are binary data, not text in any encoding (NUL bytes or many control
    /// characters).
    Binary,
    /// Not a regular file (a FIFO, device or socket): refused by its type, never opened.
    NotRegularFile(&'static str),
    /// Over one of the [`Limits`].
    TooLarge {
        /// What was too large (`"file"`, `"decompressed data"`, `"extracted text"`, `"chunks"`).
        what: &'static str,
        /// The limit it went over.
        limit: u64,
        /// The setting that raises it (Python keyword / CLI flag).
        setting: &'static str,
    },
    /// The gzip stream is corrupt or truncated.
    Gzip(String),
    /// The file's format parser rejected it (truncated PDF, malformed JSON or CSV, ...).
    Parse(String),
}

/// A file that could not be loaded: its path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: LoadErrorKind,
}

impl LoadError {
    fn new(path: &Path, kind: LoadErrorKind) -> Self {
        LoadError {
            path: path.to_owned(),
            kind,
        }
    }

    /// True if the file held no text.
    pub fn is_empty(&self) -> bool {
        matches!(self.kind, LoadErrorKind::Empty)
    }

    /// True if the file's bytes are not valid UTF-8.
    pub fn is_invalid_utf8(&self) -> bool {
        matches!(self.kind, LoadErrorKind::InvalidUtf8 { .. })
    }

    /// True if the file went over one of the [`Limits`].
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind, LoadErrorKind::TooLarge { .. })
    }

    /// True if the format's parser rejected the file.
    pub fn is_parse(&self) -> bool {
        matches!(self.kind, LoadErrorKind::Parse(_) | LoadErrorKind::Gzip(_))
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = display_path(&self.path);
        match &self.kind {
            LoadErrorKind::Io(e) => write!(f, "{path}: cannot read the file: {e}"),
            LoadErrorKind::UnsupportedFormat => write!(
                f,
                "{path}: unsupported format (expected .txt, .md, .html, .pdf, .json, .csv, or one of them .gz)"
            ),
            LoadErrorKind::Empty => write!(f, "{path}: the file holds no text"),
            LoadErrorKind::InvalidUtf8 { offset } => {
                write!(
                    f,
                    "{path}: not valid UTF-8 (first bad byte at offset {offset}); save it as UTF-8"
                )
            }
            LoadErrorKind::Binary => write!(
                f,
                "{path}: binary data, not text (neither UTF-8 nor a legacy encoding: NUL bytes or control characters)"
            ),
            LoadErrorKind::NotRegularFile(kind) => write!(
                f,
                "{path}: not a regular file ({kind}); refused without reading it"
            ),
            LoadErrorKind::TooLarge {
                what,
                limit,
                setting,
            } => {
                let limit = if what.ends_with("count") || limit % (1 << 20) != 0 {
                    limit.to_string()
                } else {
                    format!("{} MiB", limit >> 20)
                };
                write!(
                    f,
                    "{path}: {what} over the limit of {limit} (raise {setting} to accept it)"
                )
            }
            LoadErrorKind::Gzip(e) => write!(f, "{path}: corrupt or truncated gzip data: {e}"),
            LoadErrorKind::Parse(e) => write!(f, "{path}: cannot parse the file: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// A file turned into text.
#[derive(Debug, Clone)]
pub struct LoadedDocument {
    /// The file's path, as discovered.
    pub path: PathBuf,
    /// The format it was read as.
    pub format: Format,
    /// Its text.
    pub text: String,
    /// The legacy encoding its text was decoded from (`"windows-1252"`), `None` for UTF-8 and
    /// for PDF.
    pub encoding: Option<&'static str>,
}

/// Caps for untrusted input; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes read from a file on disk (default 256 MiB).
    pub max_file_bytes: u64,
    /// Bytes a `.gz` file may inflate to (default 64 MiB).
    pub max_decompressed_bytes: u64,
    /// Bytes of text extracted from one document (default 16 MiB).
    pub max_text_bytes: u64,
    /// Chunks of one document (default 25,000; checked by the pipeline after splitting).
    pub max_chunks_per_document: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_decompressed_bytes: 64 << 20,
            max_text_bytes: 16 << 20,
            max_chunks_per_document: 25_000,
        }
    }
}

/// Serde for a path that goes to another process (a Ray worker's shard, a staged segment): a UTF-8
/// path as a JSON string, any other as the array of its bytes, so that a file name that is not
/// UTF-8 (Linux allows any byte but `/` and NUL) crosses unchanged. Use with
/// `#[serde(with = "crate::load::path_serde")]`.
pub(crate) mod path_serde {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `path`: its text if it is UTF-8, else its bytes.
    pub(crate) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => s.serialize_str(text),
            None => bytes(path).serialize(s),
        }
    }

    /// Deserializes what [`serialize`] wrote.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Text(text) => PathBuf::from(text),
            Repr::Bytes(b) => from_bytes(b),
        })
    }

    #[cfg(unix)]
    fn bytes(path: &Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }

    #[cfg(unix)]
    fn from_bytes(b: Vec<u8>) -> PathBuf {
        use std::os::unix::ffi::OsStringExt;
        PathBuf::from(std::ffi::OsString::from_vec(b))
    }

    // Elsewhere a path that is not Unicode is rare; it is sent as UTF-8 with replacements.
    #[cfg(not(unix))]
    fn bytes(path: &Path) -> Vec<u8> {
        path.to_string_lossy().into_owned().into_bytes()
    }

    #[cfg(not(unix))]
    fn from_bytes(b: Vec<u8>) -> PathBuf {
        PathBuf::from(String::from_utf8_lossy(&b).into_owned())
    }
}

/// A path for messages and store keys: as it is when it is UTF-8, else its valid parts as they are
/// and each invalid byte as `\xNN` (lossless on Unix, where [`path_from_display`] reverses it).
pub fn display_path(path: &Path) -> String {
    if let Some(s) = path.to_str() {
        return s.to_owned();
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in path.as_os_str().as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned()
    }
}

/// The path a [`display_path`] string stands for: the string itself if such a path exists, else
/// with its `\xNN` escapes turned back into bytes.
pub fn path_from_display(shown: &str) -> PathBuf {
    let literal = PathBuf::from(shown);
    if !shown.contains("\\x") || std::fs::symlink_metadata(&literal).is_ok() {
        return literal;
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bytes = shown.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) if bytes[i] == b'\\' && bytes[i + 1] == b'x' => {
                    out.push(b);
                    i += 4;
                }
                _ => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        PathBuf::from(std::ffi::OsStr::from_bytes(&out))
    }
    #[cfg(not(unix))]
    {
        literal
    }
}

/// What a file type is called in messages, if it is not a regular file or a directory.
fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() || file_type.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a FIFO");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
    }
    Some("not a file or folder")
}

/// Include and exclude globs for directory walks.
///
/// A file found by walking a directory is kept if it has a supported extension, matches at least
/// one include glob (all files when there is none) and matches no exclude glob. Globs match the
/// path relative to the directory given (e.g. `**/*.pdf`, `drafts/**`). Files named directly are
/// always kept, whatever the globs say.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

/// A glob that does not parse.
#[derive(Debug, Clone)]
pub struct GlobError {
    /// The glob as given.
    pub glob: String,
    /// Why it is invalid.
    pub reason: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid glob {:?}: {}", self.glob, self.reason)
    }
}

impl std::error::Error for GlobError {}

impl Filter {
    /// Builds a filter from include and exclude globs.
    ///
    /// # Errors
    /// [`GlobError`] naming the first glob that does not parse.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, GlobError> {
        fn build(globs: &[String]) -> Result<Option<GlobSet>, GlobError> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut builder = GlobSetBuilder::new();
            for g in globs {
                let glob = Glob::new(g).map_err(|e| GlobError {
                    glob: g.clone(),
                    reason: e.kind().to_string(),
                })?;
                builder.add(glob);
            }
            builder.build().map(Some).map_err(|e| GlobError {
                glob: globs.join(", "),
                reason: e.to_string(),
            })
        }
        Ok(Filter {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    fn keeps(&self, relative: &Path) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|set| set.is_match(relative));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|set| set.is_match(relative));
        included && !excluded
    }
}

/// Finds the files to ingest under `paths`, in a stable order (sorted within each directory).
///
/// Returns the files and the paths that could not be taken, each as a [`LoadError`]: a missing
/// path, an unreadable directory, a file given by name with an unsupported extension, anything that
/// is not a regular file (FIFO, device, socket: given by name, or walked with a name the globs keep).
pub fn discover(paths: &[PathBuf], filter: &Filter) -> (Vec<PathBuf>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        match std::fs::metadata(root) {
            Err(e) => errors.push(LoadError::new(root, LoadErrorKind::Io(e.to_string()))),
            Ok(meta) if meta.is_dir() => {
                for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
                    match entry {
                        Err(e) => {
                            let path = e.path().unwrap_or(root).to_owned();
                            errors.push(LoadError::new(&path, LoadErrorKind::Io(e.to_string())));
                        }
                        Ok(entry) => {
                            let path = entry.path();
                            let relative = path.strip_prefix(root).unwrap_or(path);
                            let wanted = !entry.file_type().is_dir()
                                && Format::for_path(path).is_some()
                                && filter.keeps(relative);
                            if !wanted {
                                continue;
                            }
                            match special_kind(entry.file_type()) {
                                None => files.push(path.to_owned()),
                                Some(kind) => errors.push(LoadError::new(
                                    path,
                                    LoadErrorKind::NotRegularFile(kind),
                                )),
                            }
                        }
                    }
                }
            }
            Ok(meta) => match special_kind(meta.file_type()) {
                Some(kind) => {
                    errors.push(LoadError::new(root, LoadErrorKind::NotRegularFile(kind)))
                }
                None if Format::for_path(root).is_some() => files.push(root.clone()),
                None => errors.push(LoadError::new(root, LoadErrorKind::UnsupportedFormat)),
            },
        }
    }
    (files, errors)
}

/// Reads a regular file, at most `limits.max_file_bytes` of it. The file is opened without
/// blocking and checked to be a regular file before a byte is read, so a FIFO or device swapped
/// in after discovery is refused, not waited on.
///
/// # Errors
/// [`LoadErrorKind::Io`], [`LoadErrorKind::NotRegularFile`], [`LoadErrorKind::TooLarge`].
pub fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, LoadError> {
    let io = |e: std::io::Error| LoadError::new(path, LoadErrorKind::Io(e.to_string()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = special_kind(meta.file_type()) {
        return Err(LoadError::new(path, LoadErrorKind::NotRegularFile(kind)));
    }
    if meta.is_dir() {
        return Err(LoadError::new(
            path,
            LoadErrorKind::NotRegularFile("a folder"),
        ));
    }
    let too_large = || {
        LoadError::new(
            path,
            LoadErrorKind::TooLarge {
                what: "file size",
                limit: limits.max_file_bytes,
                setting: "max_file_bytes / --max-file-mb",
            },
        )
    };
    if meta.len() > limits.max_file_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(too_large()); // it grew while read
    }
    Ok(bytes)
}

/// Loads one file from disk with the default [`Limits`]: reads it and calls [`load_bytes`].
///
/// # Errors
/// [`LoadError`] with the reason; see [`LoadErrorKind`].
pub fn load_file(path: &Path) -> Result<LoadedDocument, LoadError> {
    let limits = Limits::default();
    load_bytes_with(path, &read_file(path, &limits)?, &limits)
}

/// Turns a file's bytes into text according to the extension of `path` (which is not read), with
/// the default [`Limits`].
///
/// # Errors
/// [`LoadError`] with the reason; see [`LoadErrorKind`].
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<LoadedDocument, LoadError> {
    load_bytes_with(path, bytes, &Limits::default())
}

/// [`load_bytes`] with the given limits on the inflated size and the extracted text.
///
/// # Errors
/// [`LoadError`] with the reason; see [`LoadErrorKind`].
pub fn load_bytes_with(
    path: &Path,
    bytes: &[u8],
    limits: &Limits,
) -> Result<LoadedDocument, LoadError> {
    let fail = |kind| LoadError::new(path, kind);
    let (format, gz) =
        Format::for_path(path).ok_or_else(|| fail(LoadErrorKind::UnsupportedFormat))?;
    if bytes.is_empty() {
        return Err(fail(LoadErrorKind::Empty));
    }
    let mut inflated = Vec::new();
    let bytes = if gz {
        // Reads one byte past the limit to tell "exactly at the limit" from "over it".
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limits.max_decompressed_bytes.saturating_add(1))
            .read_to_end(&mut inflated)
            .map_err(|e| fail(LoadErrorKind::Gzip(e.to_string())))?;
        if inflated.len() as u64 > limits.max_decompressed_bytes {
            return Err(fail(LoadErrorKind::TooLarge {
                what: "decompressed size",
                limit: limits.max_decompressed_bytes,
                setting: "max_decompressed_bytes / --max-decompressed-mb",
            }));
        }
        &inflated[..]
    } else {
        bytes
    };
    let (text, encoding) = match format {
        Format::Pdf => (
            crate::pdf::pdf_text(bytes).map_err(|e| fail(LoadErrorKind::Parse(e)))?,
            None,
        ),
        _ => {
            let (decoded, encoding) =
                decode_text(bytes).ok_or_else(|| fail(LoadErrorKind::Binary))?;
            let text = decoded.strip_prefix('\u{feff}').unwrap_or(&decoded);
            let text = match format {
                Format::Text | Format::Markdown => text.to_owned(),
                Format::Html => html_text(text),
                Format::Json => json_text(text).map_err(|e| fail(LoadErrorKind::Parse(e)))?,
                Format::Csv => {
                    csv_text(text.as_bytes()).map_err(|e| fail(LoadErrorKind::Parse(e)))?
                }
                Format::Pdf => unreachable!("handled above"),
            };
            (text, encoding)
        }
    };
    if text.len() as u64 > limits.max_text_bytes {
        return Err(fail(LoadErrorKind::TooLarge {
            what: "extracted text",
            limit: limits.max_text_bytes,
            setting: "max_text_bytes / --max-text-mb",
        }));
    }
    if text.trim().is_empty() {
        return Err(fail(LoadErrorKind::Empty));
    }
    Ok(LoadedDocument {
        path: path.to_owned(),
        format,
        text,
        encoding,
    })
}

/// Bytes of a text format as a string: UTF-8 as it is; a UTF-16 BOM as UTF-16; else the legacy
/// encoding chardetng detects (its name returned). `None` for binary data: NUL bytes (outside
/// UTF-16), more than 1% control characters, or bytes the encoding cannot decode.
fn decode_text(bytes: &[u8]) -> Option<(std::borrow::Cow<'_, str>, Option<&'static str>)> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.contains('\0') {
            return None;
        }
        return Some((std::borrow::Cow::Borrowed(text), None));
    }
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors || text.contains('\0') {
            return None;
        }
        return Some((
            std::borrow::Cow::Owned(text.into_owned()),
            Some(encoding.name()),
        ));
    }
    let control = bytes
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
        .count();
    if bytes.contains(&0) || control * 100 > bytes.len() {
        return None;
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let encoding = detector.guess(None, false);
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        return None;
    }
    Some((
        std::borrow::Cow::Owned(text.into_owned()),
        Some(encoding.name()),
    ))
}

/// The visible text of an HTML page: text nodes outside `head`, `script`, `style`, `noscript`,
/// `template` and `svg`, with a line break after each block element so paragraphs stay apart.
fn html_text(source: &str) -> String {
    const HIDDEN: &[&str] = &[
        "head", "script", "style", "noscript", "template", "svg", "title",
    ];
    const BLOCK: &[&str] = &[
        "p",
        "div",
        "section",
        "article",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "header",
        "footer",
        "nav",
        "table",
        "ul",
        "ol",
        "dd",
        "dt",
    ];
    let document = Html::parse_document(source);
    let mut out = String::with_capacity(source.len() / 2);
    let mut stack = vec![(document.tree.root(), false)];
    // An explicit stack instead of recursion: deeply nested pages must not overflow a worker's stack.
    while let Some((node, closing)) = stack.pop() {
        if closing {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        match node.value() {
            Node::Text(text) => out.push_str(text),
            Node::Element(el) => {
                let name = el.name();
                if HIDDEN.contains(&name) {
                    continue;
                }
                if BLOCK.contains(&name) {
                    stack.push((node, true));
                }
                stack.extend(node.children().rev().map(|c| (c, false)));
            }
            Node::Document | Node::Fragment => {
                stack.extend(node.children().rev().map(|c| (c, false)))
            }
            _ => {}
        }
    }
    // Collapse the runs of blank lines and indentation that markup leaves behind.
    let mut cleaned = String::with_capacity(out.len());
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        cleaned.push_str(line);
        cleaned.push('\n');
    }
    cleaned
}

/// A JSON document as text: every string, number and boolean with the key that holds it, one per
/// line (`title: ...`, `term: ...`), in document order. Only the innermost key is kept: full key
/// paths (`entries.term`) repeat on every line and drown the content for an embedding model.
fn json_text(source: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(source).map_err(|e| e.to_string())?;
    let mut out = String::new();
    // An explicit stack instead of recursion: deeply nested input must not overflow a worker's stack.
    // `None` marks the end of an object inside an array: a blank line, so that records stay
    // paragraphs for the splitter.
    let mut stack: Vec<Option<(&str, &serde_json::Value)>> = vec![Some(("", &value))];
    while let Some(item) = stack.pop() {
        let Some((key, value)) = item else {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push('\n');
            }
            continue;
        };
        match value {
            serde_json::Value::Object(map) => {
                stack.extend(map.iter().rev().map(|(k, v)| Some((k.as_str(), v))))
            }
            serde_json::Value::Array(items) => {
                for v in items.iter().rev() {
                    if v.is_object() {
                        stack.push(None);
                    }
                    stack.push(Some((key, v)));
                }
            }
            serde_json::Value::String(s) => push_field(&mut out, key, s),
            serde_json::Value::Number(n) => push_field(&mut out, key, &n.to_string()),
            serde_json::Value::Bool(b) => {
                push_field(&mut out, key, if *b { "true" } else { "false" })
            }
            serde_json::Value::Null => {}
        }
    }
    Ok(out)
}

/// A CSV file as text: one block per record, `header: value` per field, records apart by a blank line.
fn csv_text(bytes: &[u8]) -> Result<String, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let mut out = String::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        for (i, field) in record.iter().enumerate() {
            push_field(&mut out, headers.get(i).unwrap_or(""), field);
        }
        out.push('\n');
    }
    Ok(out)
}

fn push_field(out: &mut String, key: &str, value: &str) {
    if !key.is_empty() {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(value);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, bytes: &[u8]) -> Result<LoadedDocument, LoadError> {
        load_bytes(Path::new(name), bytes)
    }

    #[test]
    fn formats_from_extensions() {
        assert_eq!(
            Format::for_path(Path::new("a/b.TXT")),
            Some((Format::Text, false))
        );
        assert_eq!(
            Format::for_path(Path::new("b.html.gz")),
            Some((Format::Html, true))
        );
        assert_eq!(Format::for_path(Path::new("b.gz")), None);
        assert_eq!(Format::for_path(Path::new("b.docx")), None);
    }

    #[test]
    fn html_keeps_visible_text_only() {
        let doc = load(
            "p.html",
            b"<html><head><title>T</title><style>x{}</style></head><body><script>var a;</script>\
              <h1>Head</h1><p>One <b>two</b></p><p>three</p></body></html>",
        )
        .unwrap();
        assert_eq!(doc.text, "Head\nOne two\nthree\n");
    }

    #[test]
    fn json_and_csv_keep_keys() {
        let doc = load(
            "d.json",
            br#"{"title": "X", "entries": [{"term": "a", "n": 2}]}"#,
        )
        .unwrap();
        assert_eq!(doc.text, "title: X\nterm: a\nn: 2\n\n");
        let doc = load("l.json", br#"[{"a": 1}, {"a": 2}, "x"]"#).unwrap();
        assert_eq!(doc.text, "a: 1\n\na: 2\n\nx\n");
        let doc = load("d.csv", b"term,definition\nfoo,\"a, b\"\n").unwrap();
        assert_eq!(doc.text, "term: foo\ndefinition: a, b\n\n");
    }

    #[test]
    fn broken_inputs_are_typed_errors() {
        assert!(load("e.txt", b"").unwrap_err().is_empty());
        assert!(load("e.txt", b"  \n").unwrap_err().is_empty());
        assert_eq!(
            load("u.txt", b"ok \x00\x01\x02 binary").unwrap_err().kind,
            LoadErrorKind::Binary
        );
        assert!(load("t.pdf", b"%PDF-1.4\n1 0 obj").unwrap_err().is_parse());
        assert!(
            load("t.txt.gz", b"\x1f\x8b\x08\x00garbage")
                .unwrap_err()
                .is_parse()
        );
        assert!(load("j.json", b"{\"a\": ").unwrap_err().is_parse());
        assert_eq!(
            load("x.bin", b"abc").unwrap_err().kind,
            LoadErrorKind::UnsupportedFormat
        );
    }

    #[test]
    fn gzip_is_transparent() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"# Title\n\nbody").unwrap();
        let doc = load("n.md.gz", &enc.finish().unwrap()).unwrap();
        assert_eq!(
            (doc.format, doc.text.as_str()),
            (Format::Markdown, "# Title\n\nbody")
        );
    }

    #[test]
    fn legacy_encodings_are_detected_and_recorded_binary_is_refused() {
        // Windows-1252 / Latin-1: "café, naïve, déjà vu" (not valid UTF-8).
        let latin = b"Le caf\xe9 na\xefve, d\xe9j\xe0 vu: \xab quelle \xe9poque \xbb, dit-il \x96 voil\xe0.";
        let doc = load("fr.txt", latin).unwrap();
        assert!(
            doc.text.contains("café") && doc.text.contains("déjà"),
            "{}",
            doc.text
        );
        assert_eq!(doc.encoding, Some("windows-1252"));
        // The same in CSV and HTML.
        let doc = load("t.csv", b"mot,sens\ncaf\xe9,boisson\n").unwrap();
        assert_eq!(doc.text, "mot: café\nsens: boisson\n\n");
        // UTF-16 with a BOM.
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("héllo wörld".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let doc = load("w.md", &utf16).unwrap();
        assert_eq!(
            (doc.text.as_str(), doc.encoding),
            ("héllo wörld", Some("UTF-16LE"))
        );
        // UTF-8 stays UTF-8 with no encoding recorded.
        assert_eq!(load("u.txt", "déjà".as_bytes()).unwrap().encoding, None);
        // Binary garbage: NUL bytes, control characters, a broken UTF-16 stream.
        for bytes in [
            &b"\xff\xfe\x00broken"[..],
            b"ELF\x7f\x00\x01\x02\x03",
            b"\x01\x02\x03\x04\x05\xe9abc",
        ] {
            let err = load("b.txt", bytes).unwrap_err();
            assert_eq!(err.kind, LoadErrorKind::Binary, "{bytes:?}");
        }
    }

    #[test]
    fn limits_stop_bombs_and_huge_documents() {
        use std::io::Write;
        let limits = Limits {
            max_decompressed_bytes: 1 << 20,
            max_text_bytes: 1000,
            ..Limits::default()
        };
        // 64 MiB of zeros-ish text compresses to ~64 KB: stopped at 1 MiB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let block = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&block).unwrap();
        }
        let bomb = enc.finish().unwrap();
        let err = load_bytes_with(Path::new("bomb.txt.gz"), &bomb, &limits).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(err.to_string().contains("--max-decompressed-mb"), "{err}");
        // Text over the limit.
        let err = load_bytes_with(Path::new("big.txt"), &[b'x'; 1001], &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("extracted text over the limit of 1000"),
            "{err}"
        );
        assert!(load_bytes_with(Path::new("ok.txt"), &[b'x'; 1000], &limits).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_are_escaped_losslessly() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        let path = dir.path().join(name);
        std::fs::write(&path, b"hello").unwrap();
        let shown = display_path(&path);
        assert!(shown.ends_with("caf\\xe9.txt"), "{shown}");
        assert_eq!(path_from_display(&shown), path);
        assert_eq!(Format::for_path(&path), Some((Format::Text, false)));
        let (files, errors) = discover(&[dir.path().to_owned()], &Filter::default());
        assert_eq!((files, errors), (vec![path.clone()], vec![]));
        assert_eq!(load_file(&path).unwrap().text, "hello");
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_by_type_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.txt");
        let c = std::ffi::CString::new(fifo.as_os_str().to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let zero = dir.path().join("zero.txt");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        // Named explicitly, and found by a walk: refused by type (a read would block or never end).
        for paths in [
            vec![fifo.clone(), zero.clone()],
            vec![dir.path().to_owned()],
        ] {
            let (files, errors) = discover(&paths, &Filter::default());
            assert!(files.is_empty(), "{files:?}");
            let kinds: Vec<_> = errors.iter().map(|e| e.kind.clone()).collect();
            assert_eq!(
                kinds,
                [
                    LoadErrorKind::NotRegularFile("a FIFO"),
                    LoadErrorKind::NotRegularFile("a character device")
                ]
            );
        }
        // Swapped in after discovery: opened without blocking, refused before reading.
        let err = read_file(&fifo, &Limits::default()).unwrap_err();
        assert_eq!(err.kind, LoadErrorKind::NotRegularFile("a FIFO"));
        let err = read_file(&zero, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
