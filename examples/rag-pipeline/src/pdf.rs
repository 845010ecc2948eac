//! PDF text: the engine that reads a PDF's text layer, chosen by measurement.
//!
//! Two engines, tried in the order of the [`PdfEngine`] setting (default [`PdfEngine::Auto`]):
//!
//! - **pdfium** (Chrome's PDF library), loaded at run time from a `libpdfium` shared library
//!   through the `pdfium-render` crate's dynamic bindings (only its raw FFI layer is used). The
//!   Python package points it at the library inside the `pypdfium2` wheel (a dependency of
//!   `gilkit_rag`; `GILKIT_RAG_PDFIUM=/path/to/libpdfium.so` overrides). It reads every file of
//!   the loader-quality corpus, finds more of pypdf's words than pdf-extract and is faster:
//!   `benches/results/rag.md` ("PDF text") has the table and why it won.
//! - **pdf-extract** (pure Rust, over `lopdf`), with a pass that spells out the `'` and `"`
//!   operators it ignores. The fallback: used when pdfium is not available or rejects a file.
//!
//! pdfium is not thread-safe: a loaded library serves one document at a time (held from open
//! to close). To read PDFs on several threads at once, each busy thread gets its own *instance*:
//! the configured library first, then private copies of it made on demand, each loaded as a
//! separate library with its own global state (see `pdf_instances.rs`; at most one per core,
//! [`MAX_PDFIUM_INSTANCES`] at most). If a copy cannot be made (no writable temporary folder),
//! threads share the instances there are. The per-core speed and the 1- and 2-thread figures
//! are in the results file. A program that also calls the configured libpdfium through
//! pypdfium2, on another thread at the same time, is outside this module's instances: it shares
//! the first one's global state without its lock.
//!
//! A library that is missing or fails to load is never fatal: the error is kept (and reported
//! by [`pdfium_status`]) and each PDF falls back to pdf-extract; a file that neither engine reads
//! fails with both engines' reasons. Panics inside either engine are caught without printing
//! (see `quietly`); pdfium itself is C++ and is fuzzed by its maintainers (it ships in Chrome),
//! so a crash inside it is outside what this module can catch.
//!
//! Everything here is plain Rust with no Python involved (the library path is given as a string).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;

use parking_lot::Mutex;
use pdfium_render::prelude::{FPDF_TEXTPAGE, FS_MATRIX, Pdfium, PdfiumLibraryBindings};

use crate::pdf_instances::InstancePool;
use crate::pdf_words::{Glyph, page_text};

/// Which engine reads PDFs (process-wide; see [`set_engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdfEngine {
    /// pdfium when its library loads, pdf-extract when it does not or when pdfium rejects a file.
    Auto,
    /// pdfium only: a missing library or a file pdfium rejects is a per-file failure.
    Pdfium,
    /// pdf-extract only (no native library needed).
    PdfExtract,
}

impl PdfEngine {
    /// Parses the names used by the Python API and the CLI: `auto`, `pdfium`, `pdf-extract`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Self::Auto),
            "pdfium" => Some(Self::Pdfium),
            "pdf-extract" => Some(Self::PdfExtract),
            _ => None,
        }
    }

    /// The name [`PdfEngine::from_name`] parses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Pdfium => "pdfium",
            Self::PdfExtract => "pdf-extract",
        }
    }
}

/// The [`PdfEngine`] setting, as its discriminant. Relaxed ordering: a lone setting that publishes
/// no other data; a reader that sees the old value for a moment reads one more file the old way.
static ENGINE: AtomicU8 = AtomicU8::new(0);

/// Chooses the engine for the PDFs loaded from now on (all threads).
pub fn set_engine(engine: PdfEngine) {
    ENGINE.store(engine as u8, Ordering::Relaxed);
}

/// The engine chosen with [`set_engine`] ([`PdfEngine::Auto`] by default).
pub fn engine() -> PdfEngine {
    match ENGINE.load(Ordering::Relaxed) {
        1 => PdfEngine::Pdfium,
        2 => PdfEngine::PdfExtract,
        _ => PdfEngine::Auto,
    }
}

/// Where libpdfium is, or why there is none; set once, before the first PDF, by [`set_pdfium_library`].
static LIBRARY_PATH: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);

/// The loaded library (or the reason it could not be loaded), with its instances. Loaded on the
/// first PDF, never unloaded.
static PDFIUM: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// The most pdfium instances a process makes (each a copy of the library: about 8 MB of mapped
/// code, and pdfium's own caches while it reads).
pub const MAX_PDFIUM_INSTANCES: usize = 8;

/// The loaded libpdfium: where it came from, and its instances (raw bindings initialized with
/// `FPDF_InitLibrary`), each used by one thread at a time.
struct Loaded {
    path: PathBuf,
    instances: InstancePool<Box<dyn PdfiumLibraryBindings>>,
}

/// Tells the engine where libpdfium is (`Ok(path)`), or why it is not available (`Err(reason)`,
/// e.g. "pypdfium2 is not installed"). Returns an error if the library is already loaded from a
/// different path (the first PDF loads it; one process holds one pdfium).
pub fn set_pdfium_library(library: Result<PathBuf, String>) -> Result<(), String> {
    let mut slot = LIBRARY_PATH.lock();
    if let Some(loaded) = PDFIUM.get() {
        let same = match (loaded, &library) {
            (Ok(lib), Ok(path)) => lib.path == *path,
            _ => false,
        };
        if !same {
            return Err(format!(
                "pdfium is already {} in this process; set the library before the first PDF is read",
                match loaded {
                    Ok(lib) => format!("loaded from {}", lib.path.display()),
                    Err(e) => format!("unavailable ({e})"),
                }
            ));
        }
    }
    *slot = Some(library);
    Ok(())
}

/// The library, loading it on first use.
fn pdfium() -> Result<&'static Loaded, &'static str> {
    PDFIUM
        .get_or_init(|| {
            let path = match LIBRARY_PATH.lock().clone() {
                Some(Ok(path)) => path,
                Some(Err(reason)) => return Err(reason),
                None => library_from_env().ok_or_else(|| {
                    "no libpdfium configured (install pypdfium2, or set \
                     GILKIT_RAG_PDFIUM=/path/to/libpdfium.so)"
                        .to_owned()
                })?,
            };
            let first = bind(&path)?;
            let limit = thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_PDFIUM_INSTANCES);
            Ok(Loaded {
                path,
                instances: InstancePool::new(first, limit),
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Loads libpdfium from `path` and initializes it.
fn bind(path: &Path) -> Result<Box<dyn PdfiumLibraryBindings>, String> {
    let bindings = match quietly(|| Pdfium::bind_to_library(path)) {
        Ok(Ok(bindings)) => bindings,
        Ok(Err(e)) => {
            let why = match e {
                // libloading's own message ("...: invalid ELF header", "...: cannot open").
                pdfium_render::prelude::PdfiumError::LoadLibraryError(e) => e.to_string(),
                e => format!("{e:?}"),
            };
            return Err(format!(
                "cannot load libpdfium from {}: {why}",
                path.display()
            ));
        }
        Err(_) => return Err(format!("cannot load libpdfium from {}", path.display())),
    };
    // SAFETY: the library was just loaded; FPDF_InitLibrary is the documented first call
    // (pdfium ignores a second one, e.g. by pypdfium2 in the same process).
    unsafe { bindings.FPDF_InitLibrary() };
    Ok(bindings)
}

/// A new instance of the library at `path`: a private copy, loaded as a library of its own (the
/// dynamic loader shares a library only with a load of the same file). The copy is written to a
/// folder this function creates in `temp_root` (the system's temporary folder), and both are
/// deleted once it is loaded: the mapping outlives the file, and nothing is left on disk, even if
/// the process is killed later.
fn private_copy(path: &Path, temp_root: &Path) -> Result<Box<dyn PdfiumLibraryBindings>, String> {
    let why = |e: std::io::Error| format!("cannot copy libpdfium for another thread: {e}");
    let folder = tempfile::Builder::new()
        .prefix("gilkit-rag-pdfium-")
        .tempdir_in(temp_root)
        .map_err(why)?;
    let copy = folder.path().join("libpdfium.so");
    std::fs::copy(path, &copy).map_err(why)?;
    let bindings = bind(&copy);
    folder.close().map_err(why)?;
    bindings
}

/// How many pdfium instances exist (each used by one thread at a time), the most this process
/// makes, and why it stopped making them before that, if it did. `None` before the library is
/// loaded or when it is not available.
pub fn pdfium_instances() -> Option<(usize, usize, Option<String>)> {
    let loaded = PDFIUM.get()?.as_ref().ok()?;
    Some((
        loaded.instances.made(),
        loaded.instances.limit(),
        loaded.instances.growth_stopped(),
    ))
}

/// `Ok(path)` of the loaded libpdfium, or why pdfium is not available (loads it if needed).
pub fn pdfium_status() -> Result<PathBuf, String> {
    pdfium().map(|lib| lib.path.clone()).map_err(str::to_owned)
}

/// The text layer of a PDF, by the engine(s) of the [`engine`] setting; pages end with a newline.
/// An error says why each engine tried failed.
pub fn pdf_text(bytes: &[u8]) -> Result<String, String> {
    match engine() {
        PdfEngine::Pdfium => pdfium_text(bytes).map_err(|e| format!("pdfium: {e}")),
        PdfEngine::PdfExtract => pdf_extract_text(bytes),
        PdfEngine::Auto => match pdfium_text(bytes) {
            Ok(text) => Ok(text),
            Err(pdfium_error) => pdf_extract_text(bytes)
                .map_err(|e| format!("{e}; pdfium also failed: {pdfium_error}")),
        },
    }
}

/// The text of every page through pdfium's text page, on an instance of pdfium this thread holds
/// alone: its characters (in the order pdfium groups them into lines), with the word spaces and
/// line breaks decided from their geometry by [`crate::pdf_words`] rather than the ones
/// `FPDFText_GetText` infers.
pub fn pdfium_text(bytes: &[u8]) -> Result<String, String> {
    let loaded = pdfium()?;
    let instance = loaded
        .instances
        .acquire(|| private_copy(&loaded.path, &std::env::temp_dir()));
    text_of(&**instance, bytes)
}

/// [`pdfium_text`] on the instance `b`, which the calling thread must hold alone.
fn text_of(b: &dyn PdfiumLibraryBindings, bytes: &[u8]) -> Result<String, String> {
    // SAFETY: the caller holds this instance of pdfium alone (it is not thread-safe); `bytes`
    // outlives the document (closed below before returning); each handle is checked for null
    // before use and closed exactly once, pages and text pages before their document; character
    // indices are below FPDFText_CountChars, and every out-pointer is a live local.
    unsafe {
        let doc = b.FPDF_LoadMemDocument64(bytes, None);
        if doc.is_null() {
            return Err(match b.FPDF_GetLastError() {
                4 => "encrypted PDF that needs a password".to_owned(),
                5 => "unsupported security handler".to_owned(),
                2 | 3 => "malformed PDF (pdfium cannot parse it)".to_owned(),
                code => format!("malformed or unsupported PDF (pdfium error {code})"),
            });
        }
        let mut out = String::new();
        let mut glyphs: Vec<Glyph> = Vec::new();
        for index in 0..b.FPDF_GetPageCount(doc).max(0) {
            let page = b.FPDF_LoadPage(doc, index);
            if page.is_null() {
                continue;
            }
            let text_page = b.FPDFText_LoadPage(page);
            if !text_page.is_null() {
                glyphs.clear();
                glyphs.extend(
                    (0..b.FPDFText_CountChars(text_page).max(0)).map(|i| glyph(b, text_page, i)),
                );
                // The drawing order of the page's top-level objects, built on first need.
                let mut order: Option<HashMap<usize, u32>> = None;
                let text = page_text(&glyphs, |object| {
                    order
                        .get_or_insert_with(|| {
                            (0..b.FPDFPage_CountObjects(page).max(0))
                                .map(|i| (b.FPDFPage_GetObject(page, i) as usize, i as u32))
                                .collect()
                        })
                        .get(&object)
                        .copied()
                });
                push_page(&mut out, &text);
                b.FPDFText_ClosePage(text_page);
            }
            b.FPDF_ClosePage(page);
        }
        b.FPDF_CloseDocument(doc);
        Ok(out)
    }
}

/// Appends one page's text and a newline (none for an empty page after a newline).
fn push_page(out: &mut String, page: &str) {
    out.push_str(page);
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

/// Character `index` of `text_page`, with its box, origin, matrix, font size and text object.
///
/// # Safety
/// The calling thread holds this instance of pdfium alone, `text_page` is open and `index` is below
/// its character count.
unsafe fn glyph(b: &dyn PdfiumLibraryBindings, text_page: FPDF_TEXTPAGE, index: i32) -> Glyph {
    let (mut left, mut right, mut bottom, mut top) = (0.0, 0.0, 0.0, 0.0);
    let (mut x, mut y) = (0.0, 0.0);
    let mut matrix = FS_MATRIX {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 1.0,
        e: 0.0,
        f: 0.0,
    };
    // SAFETY: per this function's contract; pdfium leaves an out-value untouched on failure
    // (the defaults above then stand: an empty box, the origin, an identity matrix).
    unsafe {
        b.FPDFText_GetCharBox(
            text_page,
            index,
            &mut left,
            &mut right,
            &mut bottom,
            &mut top,
        );
        b.FPDFText_GetCharOrigin(text_page, index, &mut x, &mut y);
        b.FPDFText_GetMatrix(text_page, index, &mut matrix);
        Glyph {
            ch: char::from_u32(b.FPDFText_GetUnicode(text_page, index)).unwrap_or('\u{fffd}'),
            generated: b.FPDFText_IsGenerated(text_page, index) == 1,
            bbox: [left as f32, right as f32, bottom as f32, top as f32],
            origin: [x as f32, y as f32],
            axis: [matrix.a, matrix.b],
            font_size: b.FPDFText_GetFontSize(text_page, index) as f32,
            object: b.FPDFText_GetTextObject(text_page, index) as usize,
        }
    }
}

/// The text layer by `pdf-extract`: parsed with lopdf, its `'` and `"` operators spelled out (see
/// `spell_out_quote_operators`), then extracted. Either crate may panic on malformed files; a
/// panic is caught, reported as a parse error, and its message is not printed (see `quietly`).
pub fn pdf_extract_text(bytes: &[u8]) -> Result<String, String> {
    let result = quietly(|| -> Result<String, String> {
        let mut doc = lopdf::Document::load_mem(bytes).map_err(|e| e.to_string())?;
        if doc.is_encrypted() {
            // Encrypted with an empty user password (common for "no copying" PDFs) opens; others fail.
            doc.decrypt("")
                .map_err(|e| format!("encrypted PDF that needs a password ({e})"))?;
        }
        spell_out_quote_operators(&mut doc);
        let mut text = String::new();
        {
            let mut output = pdf_extract::PlainTextOutput::new(&mut text);
            pdf_extract::output_doc(&doc, &mut output).map_err(|e| e.to_string())?;
        }
        Ok(text)
    });
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("malformed or unsupported PDF ({e})")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            Err(format!("malformed or unsupported PDF ({msg})"))
        }
    }
}

/// Rewrites the page content streams' "move to the next line and show text" operators, which
/// `pdf-extract` ignores, into the operators it reads: `(s) '` is `T* (s) Tj`, and
/// `aw ac (s) "` is `aw Tw ac Tc T* (s) Tj` (PDF 32000-1, table 109). Pages whose content does not
/// parse are left as they are.
fn spell_out_quote_operators(doc: &mut lopdf::Document) {
    use lopdf::content::{Content, Operation};
    let pages: Vec<lopdf::ObjectId> = doc.get_pages().values().copied().collect();
    for page in pages {
        let Ok(raw) = doc.get_page_content(page) else {
            continue;
        };
        if !raw.iter().any(|b| *b == b'\'' || *b == b'"') {
            continue;
        }
        let Ok(mut content) = Content::decode(&raw) else {
            continue;
        };
        if !content
            .operations
            .iter()
            .any(|op| op.operator == "'" || op.operator == "\"")
        {
            continue;
        }
        let mut operations = Vec::with_capacity(content.operations.len() + 8);
        for op in content.operations {
            match (op.operator.as_str(), op.operands.len()) {
                ("'", 1) => {
                    operations.push(Operation::new("T*", vec![]));
                    operations.push(Operation::new("Tj", op.operands));
                }
                ("\"", 3) => {
                    let mut operands = op.operands.into_iter();
                    let (aw, ac, s) = (operands.next(), operands.next(), operands.next());
                    let (Some(aw), Some(ac), Some(s)) = (aw, ac, s) else {
                        continue;
                    };
                    operations.push(Operation::new("Tw", vec![aw]));
                    operations.push(Operation::new("Tc", vec![ac]));
                    operations.push(Operation::new("T*", vec![]));
                    operations.push(Operation::new("Tj", vec![s]));
                }
                _ => operations.push(op),
            }
        }
        content.operations = operations;
        if let Ok(encoded) = content.encode() {
            let _ = doc.change_page_content(page, encoded);
        }
    }
}

thread_local! {
    /// Set while [`quietly`] runs on this thread: the panic hook then prints nothing.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without printing its message and backtrace (third-party parsers
/// panic on malformed input; the caller reports the panic as a per-file error instead). Installs,
/// once, a panic hook that stays silent on threads inside `quietly` and defers to the previous hook
/// everywhere else.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET_PANICS.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was));
    result
}

/// The library used when [`set_pdfium_library`] was not called (a Rust program): the path in
/// `GILKIT_RAG_PDFIUM`, if set. (The Python package finds the one in the pypdfium2 wheel.)
fn library_from_env() -> Option<PathBuf> {
    std::env::var_os("GILKIT_RAG_PDFIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| Path::new(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_round_trip() {
        for engine in [PdfEngine::Auto, PdfEngine::Pdfium, PdfEngine::PdfExtract] {
            assert_eq!(PdfEngine::from_name(engine.name()), Some(engine));
        }
        assert_eq!(PdfEngine::from_name("mupdf"), None);
    }

    #[test]
    fn pages_end_with_one_newline() {
        let mut out = String::new();
        push_page(&mut out, "a b\nc");
        push_page(&mut out, "");
        push_page(&mut out, "e\n");
        // An empty page adds nothing: the text so far already ends with a newline.
        assert_eq!(out, "a b\nc\ne\n");
    }

    /// The libpdfium of the repository's virtualenv (`scripts/setup.sh` installs pypdfium2), or
    /// the one `GILKIT_RAG_PDFIUM` names.
    fn test_library() -> PathBuf {
        if let Some(path) = library_from_env() {
            return path;
        }
        let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        std::fs::read_dir(&venv_lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| {
                python
                    .path()
                    .join("site-packages/pypdfium2_raw/libpdfium.so")
            })
            .find(|lib| lib.exists())
            .unwrap_or_else(|| {
                panic!(
                    "no libpdfium: run scripts/setup.sh (it installs pypdfium2 in .venv) or set \
                     GILKIT_RAG_PDFIUM=/path/to/libpdfium.so"
                )
            })
    }

    #[test]
    fn private_copies_of_pdfium_read_pdfs_on_two_threads_at_once_with_the_same_text() {
        let library = test_library();
        let pdfs: Vec<Vec<u8>> = [
            "reportlab-helvetica-2col.pdf",
            "crazyones.pdf",
            "example.pdf",
        ]
        .iter()
        .map(|name| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../benches/rag/pdfs")
                .join(name);
            std::fs::read(path).unwrap()
        })
        .collect();
        // Two copies, never the process-wide instance other tests may be using, made in a folder
        // of this test's own.
        let temp_root = tempfile::tempdir().unwrap();
        let copies = [
            private_copy(&library, temp_root.path()).unwrap(),
            private_copy(&library, temp_root.path()).unwrap(),
        ];
        let texts: Vec<Vec<String>> = thread::scope(|s| {
            let readers: Vec<_> = copies
                .iter()
                .map(|b| {
                    s.spawn(|| {
                        (0..20)
                            .flat_map(|_| pdfs.iter().map(|pdf| text_of(&**b, pdf).unwrap()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(texts[0], texts[1]);
        assert!(
            texts[0].iter().all(|t| t.split_whitespace().count() > 20),
            "{:?}",
            texts[0]
        );
        // The copies are deleted once loaded: nothing of them is left where they were made.
        let left: Vec<_> = std::fs::read_dir(temp_root.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // Unloading pdfium is not something it supports cleanly: keep the copies to the end.
        std::mem::forget(copies);
    }

    #[test]
    fn a_copy_of_a_missing_library_is_an_error_that_says_so() {
        let temp_root = tempfile::tempdir().unwrap();
        let err = private_copy(Path::new("/nonexistent/libpdfium.so"), temp_root.path())
            .err()
            .unwrap();
        assert!(
            err.starts_with("cannot copy libpdfium for another thread"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_an_error_from_every_engine_without_a_panic() {
        let garbage = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> trailer";
        let err = pdf_extract_text(garbage).unwrap_err();
        assert!(err.starts_with("malformed or unsupported PDF"), "{err}");
        // With or without a libpdfium configured (GILKIT_RAG_PDFIUM), pdfium fails too: either
        // it cannot parse the file or it says how to configure the library.
        let err = pdfium_text(garbage).unwrap_err();
        assert!(err.contains("pdfium") || err.contains("malformed"), "{err}");
        let err = pdf_text(garbage).unwrap_err();
        assert!(err.contains("pdfium also failed"), "{err}");
    }
}
