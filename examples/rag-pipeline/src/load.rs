//! Document discovery and loading: from paths on disk to plain text.
//!
//! [`discover`] walks the paths the user gave (files as they are, directories recursively) and keeps
//! the files whose path matches the include globs and none of the exclude globs. [`load_bytes`] turns
//! one file's bytes into text according to its extension: `.txt` and `.md` as UTF-8, `.html`/`.htm`
//! as the visible text (no `<script>`, `<style>`, `<head>`), `.pdf` as its text layer, `.json` as its
//! strings with their keys, `.csv` as one `header: value` block per record, and `name.EXT.gz` as
//! `name.EXT` after gunzip. Every failure is a [`LoadError`] naming the path and the reason, so that
//! the pipeline can report it and go on with the other files.
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
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
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
    /// The bytes are not valid UTF-8 (text formats must be UTF-8).
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence (after decompression).
        offset: usize,
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

    /// True if the format's parser rejected the file.
    pub fn is_parse(&self) -> bool {
        matches!(self.kind, LoadErrorKind::Parse(_) | LoadErrorKind::Gzip(_))
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
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
/// Returns the files and the paths that could not be walked (missing path, unreadable directory,
/// a file given by name with an unsupported extension), each as a [`LoadError`].
pub fn discover(paths: &[PathBuf], filter: &Filter) -> (Vec<PathBuf>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        match std::fs::metadata(root) {
            Err(e) => errors.push(LoadError::new(root, LoadErrorKind::Io(e.to_string()))),
            Ok(meta) if meta.is_file() => {
                if Format::for_path(root).is_some() {
                    files.push(root.clone());
                } else {
                    errors.push(LoadError::new(root, LoadErrorKind::UnsupportedFormat));
                }
            }
            Ok(_) => {
                for entry in WalkDir::new(root).follow_links(true).sort_by_file_name() {
                    match entry {
                        Err(e) => {
                            let path = e.path().unwrap_or(root).to_owned();
                            errors.push(LoadError::new(&path, LoadErrorKind::Io(e.to_string())));
                        }
                        Ok(entry) => {
                            let path = entry.path();
                            let relative = path.strip_prefix(root).unwrap_or(path);
                            if entry.file_type().is_file()
                                && Format::for_path(path).is_some()
                                && filter.keeps(relative)
                            {
                                files.push(path.to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    (files, errors)
}

/// Loads one file from disk: reads it and calls [`load_bytes`].
///
/// # Errors
/// [`LoadError`] with the reason; see [`LoadErrorKind`].
pub fn load_file(path: &Path) -> Result<LoadedDocument, LoadError> {
    let bytes =
        std::fs::read(path).map_err(|e| LoadError::new(path, LoadErrorKind::Io(e.to_string())))?;
    load_bytes(path, &bytes)
}

/// Turns a file's bytes into text according to the extension of `path` (which is not read).
///
/// # Errors
/// [`LoadError`] with the reason; see [`LoadErrorKind`].
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<LoadedDocument, LoadError> {
    let fail = |kind| LoadError::new(path, kind);
    let (format, gz) =
        Format::for_path(path).ok_or_else(|| fail(LoadErrorKind::UnsupportedFormat))?;
    if bytes.is_empty() {
        return Err(fail(LoadErrorKind::Empty));
    }
    let mut inflated = Vec::new();
    let bytes = if gz {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut inflated)
            .map_err(|e| fail(LoadErrorKind::Gzip(e.to_string())))?;
        &inflated[..]
    } else {
        bytes
    };
    let text = match format {
        Format::Pdf => pdf_text(bytes).map_err(|e| fail(LoadErrorKind::Parse(e)))?,
        _ => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                fail(LoadErrorKind::InvalidUtf8 {
                    offset: e.valid_up_to(),
                })
            })?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            match format {
                Format::Text | Format::Markdown => text.to_owned(),
                Format::Html => html_text(text),
                Format::Json => json_text(text).map_err(|e| fail(LoadErrorKind::Parse(e)))?,
                Format::Csv => csv_text(bytes).map_err(|e| fail(LoadErrorKind::Parse(e)))?,
                Format::Pdf => unreachable!("handled above"),
            }
        }
    };
    if text.trim().is_empty() {
        return Err(fail(LoadErrorKind::Empty));
    }
    Ok(LoadedDocument {
        path: path.to_owned(),
        format,
        text,
    })
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

/// The text layer of a PDF. `pdf-extract` may panic on malformed files; a panic is caught and
/// reported as a parse error so one broken PDF never takes the ingest down.
fn pdf_text(bytes: &[u8]) -> Result<String, String> {
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            Err(format!("malformed PDF ({msg})"))
        }
    }
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
        let err = load("u.txt", b"ok \xff\xfe").unwrap_err();
        assert_eq!(err.kind, LoadErrorKind::InvalidUtf8 { offset: 3 });
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
}
