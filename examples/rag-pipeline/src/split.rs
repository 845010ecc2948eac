//! Splitting a document's text into chunks for embedding.
//!
//! Four strategies, one [`SplitterConfig`]:
//!
//! | [`SplitKind`] | unit of `size` and `overlap` | how |
//! |---|---|---|
//! | `Character` | characters | fixed windows of `size` chars, each starting `size - overlap` after the previous one |
//! | `Recursive` | characters | `text-splitter`'s [`TextSplitter`]: the largest semantic unit that fits (paragraphs, then lines, sentences, words, graphemes), with overlap |
//! | `Sentence` | characters | whole Unicode sentences packed up to `size`; the next chunk repeats the last sentences that fit in `overlap`; a sentence longer than `size` is cut by characters |
//! | `Tokens` | tokens (OpenAI `cl100k_base`) | `TextSplitter` sized by a tokenizer, for endpoints with token limits |
//!
//! Every [`Chunk`] records the byte and character range it covers in the document's text and its
//! position in the document, so a search hit can point back into the source. Chunks never contain
//! text that is not in the document; splitters that trim (`Recursive`, `Tokens`, `Sentence`) drop
//! only whitespace between chunks.

use std::fmt;
use std::sync::OnceLock;

use text_splitter::{ChunkConfig, TextSplitter};
use tiktoken_rs::CoreBPE;
use unicode_segmentation::UnicodeSegmentation;

/// Which splitting strategy to use; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitKind {
    /// Fixed-size windows of characters.
    Character,
    /// Largest semantic units that fit, via `text-splitter` (the default).
    #[default]
    Recursive,
    /// Whole sentences packed up to the size.
    Sentence,
    /// Semantic units that fit a token budget (`cl100k_base`).
    Tokens,
}

impl SplitKind {
    /// Parses `character`, `recursive`, `sentence` or `token(s)`.
    pub fn parse(name: &str) -> Option<SplitKind> {
        Some(match name {
            "character" | "char" | "chars" => SplitKind::Character,
            "recursive" => SplitKind::Recursive,
            "sentence" | "sentences" => SplitKind::Sentence,
            "token" | "tokens" => SplitKind::Tokens,
            _ => return None,
        })
    }
}

/// The splitting strategy with its chunk size and overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitterConfig {
    /// The strategy.
    pub kind: SplitKind,
    /// The maximum chunk size (characters, or tokens for [`SplitKind::Tokens`]).
    pub size: usize,
    /// How much of the end of a chunk the next chunk repeats (same unit as `size`).
    pub overlap: usize,
}

impl Default for SplitterConfig {
    /// Recursive, 800 characters, 100 of overlap: about 200 tokens, well inside the 512-token window
    /// of e5-small, and small enough that one chunk is about one idea.
    fn default() -> Self {
        SplitterConfig {
            kind: SplitKind::Recursive,
            size: 800,
            overlap: 100,
        }
    }
}

/// An invalid [`SplitterConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfigError {
    /// The size given.
    pub size: usize,
    /// The overlap given.
    pub overlap: usize,
}

impl fmt::Display for SplitConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid splitter settings: chunk size {} and overlap {} (the size must be at least 1 and the overlap smaller than the size)",
            self.size, self.overlap
        )
    }
}

impl std::error::Error for SplitConfigError {}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's text (a slice of the document's text).
    pub text: String,
    /// Byte range in the document's text: `start_byte..end_byte`.
    pub start_byte: usize,
    /// End of the byte range (exclusive).
    pub end_byte: usize,
    /// Character range in the document's text: `start_char..end_char`.
    pub start_char: usize,
    /// End of the character range (exclusive).
    pub end_char: usize,
    /// Position of the chunk in its document (0, 1, 2, ...).
    pub position: usize,
}

/// A validated splitter, reusable across documents and threads.
pub struct Splitter {
    config: SplitterConfig,
    text: Option<TextSplitter<text_splitter::Characters>>,
    tokens: Option<TextSplitter<&'static CoreBPE>>,
}

impl fmt::Debug for Splitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Splitter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn cl100k() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    // The BPE ranks are compiled into tiktoken-rs: loading cannot fail for want of a file.
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().expect("tiktoken-rs ships cl100k_base"))
}

impl Splitter {
    /// Checks the configuration and builds the splitter.
    ///
    /// # Errors
    /// [`SplitConfigError`] if `size` is 0 or `overlap >= size`.
    pub fn new(config: SplitterConfig) -> Result<Self, SplitConfigError> {
        let err = SplitConfigError {
            size: config.size,
            overlap: config.overlap,
        };
        if config.size == 0 || config.overlap >= config.size {
            return Err(err);
        }
        let chunk_config = || ChunkConfig::new(config.size).with_overlap(config.overlap);
        let (text, tokens) = match config.kind {
            SplitKind::Recursive => (
                Some(TextSplitter::new(chunk_config().map_err(|_| err)?)),
                None,
            ),
            SplitKind::Tokens => {
                let sized = chunk_config().map_err(|_| err)?.with_sizer(cl100k());
                (None, Some(TextSplitter::new(sized)))
            }
            SplitKind::Character | SplitKind::Sentence => (None, None),
        };
        Ok(Splitter {
            config,
            text,
            tokens,
        })
    }

    /// The configuration this splitter was built with.
    pub fn config(&self) -> SplitterConfig {
        self.config
    }

    /// Splits `text` into chunks, in document order.
    pub fn split(&self, text: &str) -> Vec<Chunk> {
        let ranges: Vec<(usize, usize)> = match self.config.kind {
            SplitKind::Character => {
                char_windows(text, 0, text.len(), self.config.size, self.config.overlap)
            }
            SplitKind::Sentence => sentence_chunks(text, self.config.size, self.config.overlap),
            SplitKind::Recursive => {
                let splitter = self.text.as_ref().expect("built for Recursive");
                splitter
                    .chunk_indices(text)
                    .map(|(at, s)| (at, at + s.len()))
                    .collect()
            }
            SplitKind::Tokens => {
                let splitter = self.tokens.as_ref().expect("built for Tokens");
                splitter
                    .chunk_indices(text)
                    .map(|(at, s)| (at, at + s.len()))
                    .collect()
            }
        };
        with_char_offsets(text, &ranges)
    }
}

/// Turns byte ranges (starts in non-decreasing order) into chunks with character offsets, counting
/// characters once over the text rather than once per chunk.
fn with_char_offsets(text: &str, ranges: &[(usize, usize)]) -> Vec<Chunk> {
    // Character offset of every range boundary, found in one forward pass per boundary list.
    let mut bounds: Vec<usize> = ranges.iter().flat_map(|&(s, e)| [s, e]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut char_at = Vec::with_capacity(bounds.len());
    let (mut byte, mut chars) = (0usize, 0usize);
    for &b in &bounds {
        chars += text[byte..b].chars().count();
        byte = b;
        char_at.push(chars);
    }
    let chars_of = |b: usize| char_at[bounds.binary_search(&b).expect("boundary recorded")];
    ranges
        .iter()
        .enumerate()
        .map(|(position, &(start, end))| Chunk {
            text: text[start..end].to_owned(),
            start_byte: start,
            end_byte: end,
            start_char: chars_of(start),
            end_char: chars_of(end),
            position,
        })
        .collect()
}

/// Fixed windows of `size` characters over `text[from..to]`, each `size - overlap` after the last.
fn char_windows(
    text: &str,
    from: usize,
    to: usize,
    size: usize,
    overlap: usize,
) -> Vec<(usize, usize)> {
    let offsets: Vec<usize> = text[from..to]
        .char_indices()
        .map(|(i, _)| from + i)
        .chain(std::iter::once(to))
        .collect();
    let n_chars = offsets.len() - 1;
    let step = size - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    while start < n_chars {
        let end = (start + size).min(n_chars);
        out.push((offsets[start], offsets[end]));
        if end == n_chars {
            break;
        }
        start += step;
    }
    out
}

/// Whole sentences packed up to `size` characters, repeating trailing sentences up to `overlap`.
fn sentence_chunks(text: &str, size: usize, overlap: usize) -> Vec<(usize, usize)> {
    // Each sentence as a trimmed byte range with its length in characters.
    let sentences: Vec<(usize, usize, usize)> = text
        .split_sentence_bound_indices()
        .filter_map(|(at, s)| {
            let lead = s.len() - s.trim_start().len();
            let trimmed = s.trim();
            (!trimmed.is_empty()).then(|| {
                (
                    at + lead,
                    at + lead + trimmed.len(),
                    trimmed.chars().count(),
                )
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sentences.len() {
        let (start, end, len) = sentences[i];
        if len > size {
            // One sentence longer than a chunk: cut it by characters.
            out.extend(char_windows(text, start, end, size, overlap));
            i += 1;
            continue;
        }
        // Chars spanned from `start` to the end of sentence j, gaps included.
        let span = |j: usize| text[start..sentences[j].1].chars().count();
        let mut j = i;
        while j + 1 < sentences.len() && sentences[j + 1].2 <= size && span(j + 1) <= size {
            j += 1;
        }
        out.push((start, sentences[j].1));
        if j + 1 >= sentences.len() {
            break;
        }
        // Start the next chunk at the earliest of the last sentences that fit in `overlap`, but
        // always move forward by at least one sentence.
        let mut next = j + 1;
        while next > i + 1 && text[sentences[next - 1].0..sentences[j].1].chars().count() <= overlap
        {
            next -= 1;
        }
        i = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn splitter(kind: SplitKind, size: usize, overlap: usize) -> Splitter {
        Splitter::new(SplitterConfig {
            kind,
            size,
            overlap,
        })
        .unwrap()
    }

    /// The invariants every splitter keeps, whatever the text.
    fn check(text: &str, s: &Splitter) {
        let chunks = s.split(text);
        let size = s.config().size;
        let mut covered = vec![false; text.len()];
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.position, i);
            assert_eq!(
                c.text,
                &text[c.start_byte..c.end_byte],
                "offsets point at the chunk's text"
            );
            assert_eq!(c.start_char, text[..c.start_byte].chars().count());
            assert_eq!(c.end_char - c.start_char, c.text.chars().count());
            assert!(!c.text.is_empty());
            if s.config().kind != SplitKind::Tokens {
                assert!(
                    c.text.chars().count() <= size,
                    "chunk of {} chars > {size}",
                    c.text.chars().count()
                );
            } else {
                assert!(cl100k().encode_ordinary(&c.text).len() <= size);
            }
            if i > 0 {
                assert!(
                    c.start_byte >= chunks[i - 1].start_byte,
                    "chunks in document order"
                );
            }
            covered[c.start_byte..c.end_byte]
                .iter_mut()
                .for_each(|b| *b = true);
        }
        // Coverage: every non-whitespace character of the text is in some chunk.
        for (at, ch) in text.char_indices() {
            assert!(
                ch.is_whitespace() || covered[at],
                "{ch:?} at byte {at} not covered"
            );
        }
    }

    #[test]
    fn character_windows_overlap_exactly() {
        let text = "abcdefghij";
        let chunks = splitter(SplitKind::Character, 4, 1).split(text);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["abcd", "defg", "ghij"]);
    }

    #[test]
    fn sentences_stay_whole_and_overlap() {
        let text = "Aa bb. Cc dd. Ee ff gg hh ii jj.";
        let chunks = splitter(SplitKind::Sentence, 26, 10).split(text);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["Aa bb. Cc dd.", "Cc dd. Ee ff gg hh ii jj."]);
    }

    #[test]
    fn recursive_prefers_paragraphs() {
        let text = "First paragraph here.\n\nSecond paragraph here.";
        let chunks = splitter(SplitKind::Recursive, 30, 0).split(text);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["First paragraph here.", "Second paragraph here."]);
    }

    #[test]
    fn multibyte_offsets() {
        let text = "Ünïcödé façade — naïve café. Ωμέγα. 日本語のテキスト。";
        for kind in [
            SplitKind::Character,
            SplitKind::Recursive,
            SplitKind::Sentence,
            SplitKind::Tokens,
        ] {
            check(text, &splitter(kind, 7, 2));
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        for (size, overlap) in [(0, 0), (10, 10), (10, 20)] {
            let cfg = SplitterConfig {
                kind: SplitKind::Character,
                size,
                overlap,
            };
            assert_eq!(
                Splitter::new(cfg).unwrap_err(),
                SplitConfigError { size, overlap }
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn splitter_properties(
            text in "([a-zé日 ]{0,12}[.!?\n]{0,2} ?){0,40}",
            size in 4usize..60,
            overlap_frac in 0usize..100,
            kind in prop_oneof![Just(SplitKind::Character), Just(SplitKind::Recursive), Just(SplitKind::Sentence), Just(SplitKind::Tokens)],
        ) {
            let overlap = size * overlap_frac / 200; // up to half the size
            check(&text, &splitter(kind, size, overlap));
        }

        #[test]
        fn character_overlap_is_exact(text in "[a-zß ]{1,200}", size in 2usize..30, overlap_frac in 0usize..100) {
            let overlap = (size - 1) * overlap_frac / 100;
            let chunks = splitter(SplitKind::Character, size, overlap).split(&text);
            for pair in chunks.windows(2) {
                prop_assert_eq!(pair[1].start_char, pair[0].start_char + size - overlap);
                prop_assert_eq!(pair[0].end_char - pair[1].start_char, overlap);
            }
        }
    }
}
