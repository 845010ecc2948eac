//! Splitting a document's text into chunks for embedding.
//!
//! Five strategies, one [`SplitterConfig`]:
//!
//! | [`SplitKind`] | unit of `size` and `overlap` | how |
//! |---|---|---|
//! | `Character` | characters | fixed windows of `size` chars, each starting `size - overlap` after the previous one |
//! | `Recursive` | characters | the recursive character splitter of LangChain (below), in Rust: the default |
//! | `Semantic` | characters | `text-splitter`'s [`TextSplitter`]: the largest semantic unit that fits (paragraphs, lines, sentences, words, graphemes), with overlap |
//! | `Sentence` | characters | whole Unicode sentences packed up to `size`; the next chunk repeats the last sentences that fit in `overlap`; a sentence longer than `size` is cut by characters |
//! | `Tokens` | tokens (OpenAI `cl100k_base`) | `TextSplitter` sized by a tokenizer, for endpoints with token limits |
//!
//! Every [`Chunk`] records the byte and character range it covers in the document's text and its
//! position in the document, so a search hit can point back into the source. Chunks never contain
//! text that is not in the document; splitters that trim (all but `Character`) drop only whitespace
//! between chunks.
//!
//! # The recursive splitter
//!
//! The algorithm of LangChain's `RecursiveCharacterTextSplitter` (and of the Python pipelines the
//! benchmark compares with): split the text on the first separator of the hierarchy that occurs in
//! it, paragraphs (`"\n\n"`), then lines (`"\n"`), then sentences (`". "`, the period staying with
//! its sentence), then words (`" "`); merge consecutive pieces into chunks of at most `size`
//! characters, starting each next chunk with the last pieces of the previous one that fit in
//! `overlap`; split a piece longer than `size` again with the rest of the hierarchy, and cut one
//! with no separator left into windows of characters. Pieces are byte ranges of the document with
//! their lengths in characters, so a chunk is one slice of the text (whitespace-trimmed) and its
//! length is exact; nothing is allocated per piece or chunk but the chunk's own text.
//!
//! Why not `text-splitter` here, as "prefer a well-kept crate" would have it: it fits the other
//! kinds (`Semantic`, `Tokens`), but not the default's speed target (the pipeline's CPU stages at
//! 1.8x or more of a sequential Python pipeline on 2 cores). It ranks every semantic level (down
//! to graphemes and Unicode sentences) and searches for the largest fitting unit, which costs
//! about 6-7 µs per chunk on one core, twice the pure-Python recursive splitter (about 3 µs, its
//! work done by `str.split` in C): with it, split-heavy ingests ran at 0.83x of sequential Python.
//! The recursive algorithm is short, and this one costs about 0.7 µs per chunk on one core, the
//! chunk's text and offsets included: 7.5x the Python splitter on 2 cores, with the same chunks
//! (`benches/results/rag.md`).

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
    /// LangChain's recursive character splitter: paragraphs, lines, sentences, words (the default).
    #[default]
    Recursive,
    /// Largest semantic units that fit, via `text-splitter`.
    Semantic,
    /// Whole sentences packed up to the size.
    Sentence,
    /// Semantic units that fit a token budget (`cl100k_base`).
    Tokens,
}

impl SplitKind {
    /// Parses `character`, `recursive`, `semantic`, `sentence` or `token(s)`.
    pub fn parse(name: &str) -> Option<SplitKind> {
        Some(match name {
            "character" | "char" | "chars" => SplitKind::Character,
            "recursive" => SplitKind::Recursive,
            "semantic" => SplitKind::Semantic,
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
    semantic: Option<TextSplitter<text_splitter::Characters>>,
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
        let (semantic, tokens) = match config.kind {
            SplitKind::Semantic => (
                Some(TextSplitter::new(chunk_config().map_err(|_| err)?)),
                None,
            ),
            SplitKind::Tokens => {
                let sized = chunk_config().map_err(|_| err)?.with_sizer(cl100k());
                (None, Some(TextSplitter::new(sized)))
            }
            SplitKind::Character | SplitKind::Recursive | SplitKind::Sentence => (None, None),
        };
        Ok(Splitter {
            config,
            semantic,
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
                let mut out = Vec::new();
                split_recursive(
                    text,
                    0,
                    text.len(),
                    &SEPARATORS,
                    self.config.size,
                    self.config.overlap,
                    &mut out,
                );
                out
            }
            SplitKind::Semantic => {
                let splitter = self.semantic.as_ref().expect("built for Semantic");
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

/// One level of the recursive splitter's hierarchy: `pattern` separates pieces, of which the first
/// `keep` bytes stay at the end of the piece before it (the period of `". "`). Patterns are ASCII,
/// so the gap left between two pieces is `pattern.len() - keep` characters.
struct Separator {
    pattern: &'static str,
    keep: usize,
}

/// Paragraphs, lines, sentences, words; then windows of characters.
const SEPARATORS: [Separator; 4] = [
    Separator {
        pattern: "\n\n",
        keep: 0,
    },
    Separator {
        pattern: "\n",
        keep: 0,
    },
    Separator {
        pattern: ". ",
        keep: 1,
    },
    Separator {
        pattern: " ",
        keep: 0,
    },
];

/// A piece of the text between two separators: a byte range and its length in characters.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    chars: usize,
}

/// Appends the chunks of `text[from..to]` (byte ranges) to `out`: split on the first of `separators`
/// that occurs, merge the pieces that fit, recurse into those that do not; see the module docs.
fn split_recursive(
    text: &str,
    from: usize,
    to: usize,
    separators: &[Separator],
    size: usize,
    overlap: usize,
    out: &mut Vec<(usize, usize)>,
) {
    let span = &text[from..to];
    let piece = |start: usize, end: usize| Piece {
        start,
        end,
        chars: text[start..end].chars().count(),
    };
    for (level, sep) in separators.iter().enumerate() {
        let mut pieces = Vec::new();
        let mut at = from;
        for (i, _) in span.match_indices(sep.pattern) {
            pieces.push(piece(at, from + i + sep.keep));
            at = from + i + sep.pattern.len();
        }
        if pieces.is_empty() {
            continue; // this separator does not occur: try the next one
        }
        pieces.push(piece(at, to));
        let gap = sep.pattern.len() - sep.keep;
        let mut fitting = 0; // first piece of the current run of pieces that fit
        for (i, p) in pieces.iter().enumerate() {
            if p.chars > size {
                merge_pieces(text, &pieces[fitting..i], gap, size, overlap, out);
                split_recursive(
                    text,
                    p.start,
                    p.end,
                    &separators[level + 1..],
                    size,
                    overlap,
                    out,
                );
                fitting = i + 1;
            }
        }
        merge_pieces(text, &pieces[fitting..], gap, size, overlap, out);
        return;
    }
    // No separator left, or none occurs: windows of characters.
    for (start, end) in char_windows(text, from, to, size, overlap) {
        push_trimmed(text, start, end, out);
    }
}

/// Merges consecutive `pieces` (each at most `size` chars, `gap` chars apart) into chunks of at most
/// `size` chars; each next chunk starts with the last pieces of the previous one that fit in
/// `overlap` (and leave room for the piece that did not fit).
fn merge_pieces(
    text: &str,
    pieces: &[Piece],
    gap: usize,
    size: usize,
    overlap: usize,
    out: &mut Vec<(usize, usize)>,
) {
    let mut first = 0; // the current chunk is pieces[first..i]
    let mut total = 0; // its length in chars, gaps included
    for (i, p) in pieces.iter().enumerate() {
        if i > first && total + gap + p.chars > size {
            push_trimmed(text, pieces[first].start, pieces[i - 1].end, out);
            while i > first && (total > overlap || total + gap + p.chars > size) {
                total -= pieces[first].chars + if first + 1 < i { gap } else { 0 };
                first += 1;
            }
        }
        total += p.chars + if i > first { gap } else { 0 };
    }
    if let Some(last) = pieces.last()
        && first < pieces.len()
    {
        push_trimmed(text, pieces[first].start, last.end, out);
    }
}

/// Appends `start..end` without its leading and trailing whitespace, unless nothing is left.
fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let s = &text[start..end];
    let trimmed = s.trim();
    if !trimmed.is_empty() {
        let lead = s.len() - s.trim_start().len();
        out.push((start + lead, start + lead + trimmed.len()));
    }
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
    fn recursive_falls_back_through_the_hierarchy() {
        // A paragraph too long for one chunk is cut at lines, then sentences (keeping the period),
        // then words, then characters.
        let text = "Short one.\n\nLine one here\nLine two. It goes on. And on\n\nabcdefghijklmnop";
        let chunks = splitter(SplitKind::Recursive, 12, 0).split(text);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Short one.",
                "Line one",
                "here",
                "Line two.",
                "It goes on.",
                "And on",
                "abcdefghijkl",
                "mnop"
            ]
        );
    }

    #[test]
    fn recursive_overlap_repeats_whole_pieces() {
        let text = "aa bb cc dd ee ff";
        let chunks = splitter(SplitKind::Recursive, 8, 3).split(text);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["aa bb cc", "cc dd ee", "ee ff"]);
    }

    #[test]
    fn multibyte_offsets() {
        let text = "Ünïcödé façade — naïve café. Ωμέγα. 日本語のテキスト。";
        for kind in [
            SplitKind::Character,
            SplitKind::Recursive,
            SplitKind::Semantic,
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
            kind in prop_oneof![Just(SplitKind::Character), Just(SplitKind::Recursive), Just(SplitKind::Semantic), Just(SplitKind::Sentence), Just(SplitKind::Tokens)],
        ) {
            let overlap = size * overlap_frac / 200; // up to half the size
            check(&text, &splitter(kind, size, overlap));
        }

        /// Recursive chunks overlap by at most `overlap` chars, each ends further on than the last,
        /// and a text of paragraphs that each fit is cut only between paragraphs.
        #[test]
        fn recursive_overlap_and_paragraphs(
            paragraphs in prop::collection::vec("[a-zé日]{1,6}( [a-zé日]{1,6}){0,5}\\.?", 1..30),
            size in 42usize..120,
            overlap_frac in 0usize..100,
        ) {
            let overlap = size * overlap_frac / 200;
            let text = paragraphs.join("\n\n");
            let s = splitter(SplitKind::Recursive, size, overlap);
            check(&text, &s);
            let chunks = s.split(&text);
            let starts: Vec<usize> = paragraphs
                .iter()
                .scan(0, |at, p| { let start = *at; *at += p.len() + 2; Some(start) })
                .collect();
            for c in &chunks {
                prop_assert!(starts.contains(&c.start_byte), "chunk starts inside a paragraph: {:?}", c);
                prop_assert!(
                    c.end_byte == text.len() || text[c.end_byte..].starts_with("\n\n"),
                    "chunk ends inside a paragraph: {:?}", c
                );
            }
            for pair in chunks.windows(2) {
                prop_assert!(pair[1].end_byte > pair[0].end_byte);
                prop_assert!(pair[0].end_char.saturating_sub(pair[1].start_char) <= overlap);
            }
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
