//! Words as a reader sees them, from the positioned glyphs of a PDF page.
//!
//! pdfium's full-page text (`FPDFText_GetText`) inserts a space or a line break wherever a glyph
//! is not where the previous one's advance ends. Text placed glyph by glyph (OCR layers,
//! letter-spaced headings, rotated labels) then reads `Nort h Buon a`: a word split in the index
//! and in the embedding. This module rebuilds the page text from pdfium's characters instead
//! ([`Glyph`], in pdfium's order): pdfium's own text page still groups glyphs into lines and
//! orders them, and its real space and line-break characters are kept as they are; only the
//! space and line-break characters pdfium *generated* are judged again, from geometry:
//!
//! - the gap between two glyphs is measured along the baseline direction of the first (from the
//!   glyph's text matrix, so rotated and skewed text is measured along its own line), between
//!   their ink extents, in units of the font size along that line (`em`);
//! - a line's letter spacing is the median gap between consecutive letters or digits on it (its
//!   words' own spacing, so letter-spaced text raises it and tight text lowers it);
//! - a generated space between glyphs on the same baseline is kept only when the gap exceeds the
//!   letter spacing by more than `max(0.1 em, letter spacing)`: a word space is wider than the
//!   spacing inside words, and an inflated or badly placed glyph inside a word is not;
//! - a generated line break between glyphs on the same baseline and less than 1 em apart is a
//!   space (or nothing, by the rule above); elsewhere pdfium's line break stays.
//!
//! Two more defects are undone. Upside-down text drawn glyph by glyph comes from pdfium left to
//! right, that is backwards: such runs are turned to read along their baseline. And glyphs that
//! overlap along the line (OCR noise, a glyph drawn over
//! another) have no visible order, and pdfium then sorts them by position (`rP` for the `Pr` the
//! file draws). A run of such glyphs, none of them separated by a space, is put back in the order
//! the page draws their text objects (content-stream order), when they come from different
//! objects and that order is known.
//!
//! Everything here is plain geometry with no pdfium call (the caller gathers the glyphs), so it is
//! tested on synthetic glyphs; `tests/test_pdf.py` checks it on real and generated PDFs.

/// One character of pdfium's text page, with what the layout needs of it.
#[derive(Debug, Clone, Copy)]
pub struct Glyph {
    /// The character (`'\0'` when pdfium has none: skipped).
    pub ch: char,
    /// Inserted by pdfium (a space or line break it inferred), not drawn by the page.
    pub generated: bool,
    /// Tight bounding box in page space: left, right, bottom, top.
    pub bbox: [f32; 4],
    /// Where the glyph's baseline starts, in page space.
    pub origin: [f32; 2],
    /// The first column of the glyph's text matrix: its baseline direction and horizontal scale.
    pub axis: [f32; 2],
    /// Font size in text space (multiplied by the length of `axis` it is the em along the line).
    pub font_size: f32,
    /// Identity of the glyph's text object (0: none); see [`page_text`] for its drawing order.
    pub object: usize,
}

impl Glyph {
    /// A glyph that is not whitespace (whitespace, drawn or generated, separates words).
    fn is_ink(&self) -> bool {
        self.ch != '\0' && !self.ch.is_whitespace()
    }

    /// Unit baseline direction ((1, 0) when the matrix has none).
    fn direction(&self) -> [f32; 2] {
        let len = self.axis[0].hypot(self.axis[1]);
        if len > 1e-6 && len.is_finite() {
            [self.axis[0] / len, self.axis[1] / len]
        } else {
            [1.0, 0.0]
        }
    }

    /// The font size along the line (font size times the matrix's scale along the baseline).
    fn em(&self) -> f32 {
        let len = self.axis[0].hypot(self.axis[1]);
        let scale = if len > 1e-6 && len.is_finite() {
            len
        } else {
            1.0
        };
        (self.font_size * scale).abs()
    }

    /// The ink's centre and length along `dir`. The tight box is the axis-aligned box of the ink
    /// rotated by the line's angle, so its centre is the ink's centre, and the ink's length `w`
    /// (and height `h`) satisfy `W = w|cos| + h|sin|`, `H = w|sin| + h|cos|` for the box's width
    /// `W` and height `H`; near 45 degrees, where that is ill-conditioned, `w` is taken as `h`.
    fn extent_along(&self, dir: [f32; 2]) -> (f32, f32) {
        let [left, right, bottom, top] = self.bbox;
        let (width, height) = ((right - left).max(0.0), (top - bottom).max(0.0));
        let centre = 0.5 * (left + right) * dir[0] + 0.5 * (bottom + top) * dir[1];
        let (c, s) = (dir[0].abs(), dir[1].abs());
        let length = if (c - s).abs() > 0.2 {
            ((width * c - height * s) / (c * c - s * s)).clamp(0.0, width.max(height))
        } else {
            width / (c + s)
        };
        (centre, length)
    }
}

/// What pdfium put between two consecutive ink glyphs.
#[derive(Debug, Default, Clone, Copy)]
struct Between {
    drawn_break: bool,
    drawn_space: bool,
    generated_break: bool,
    generated_space: bool,
}

impl Between {
    fn is_empty(&self) -> bool {
        !(self.drawn_break || self.drawn_space || self.generated_break || self.generated_space)
    }
}

/// The boundary between ink glyph `i - 1` and ink glyph `i`.
#[derive(Debug, Clone, Copy)]
struct Boundary {
    between: Between,
    /// Gap between the two inks along the first glyph's baseline, in em.
    gap: f32,
    /// On the same baseline, in the same direction, not overlapping backwards by more than half
    /// an em (a new line or column that happens to share a baseline starts far behind).
    same_line: bool,
    /// Same direction, baselines less than half an em apart, and the second glyph's origin before
    /// the end of the first's ink: glyphs drawn over each other, with no visible order.
    overlaps: bool,
}

/// A generated line break between glyphs on one baseline closer than this (in em) is a space.
const SAME_LINE_BREAK_EM: f32 = 1.0;
/// The least margin (in em) by which a word space exceeds a line's letter spacing.
const WORD_SPACE_MARGIN_EM: f32 = 0.1;
/// Letter spacing is capped at this (in em): beyond it the line is not one run of words.
const MAX_LETTER_SPACING_EM: f32 = 0.5;

/// The page's text: ink glyphs in pdfium's order (overlapping runs in drawing order), with the
/// word spaces and line breaks the rules in the module doc decide. No trailing newline.
/// `draw_order` gives a text object's position in the page's content stream (None: unknown); it
/// is called only for overlapping glyphs of different objects, which are rare.
pub fn page_text(glyphs: &[Glyph], mut draw_order: impl FnMut(usize) -> Option<u32>) -> String {
    let mut ink: Vec<usize> = (0..glyphs.len()).filter(|&i| glyphs[i].is_ink()).collect();
    if ink.is_empty() {
        return String::new();
    }
    reverse_backward_runs(glyphs, &mut ink);
    let boundaries: Vec<Boundary> = ink
        .windows(2)
        .map(|pair| {
            let (low, high) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
            boundary(&glyphs[pair[0]], &glyphs[pair[1]], &glyphs[low + 1..high])
        })
        .collect();
    let spacing = letter_spacing(glyphs, &ink, &boundaries);

    // The ink glyphs' characters, with overlapping runs put in drawing order.
    let mut chars: Vec<char> = ink.iter().map(|&i| glyphs[i].ch).collect();
    let mut start = 0;
    while start < ink.len() {
        let mut end = start + 1;
        while end < ink.len() && {
            let b = &boundaries[end - 1];
            b.between.is_empty() && b.overlaps
        } {
            end += 1;
        }
        if end - start > 1 {
            reorder_by_drawing(
                glyphs,
                &ink[start..end],
                &mut chars[start..end],
                &mut draw_order,
            );
        }
        start = end;
    }

    let mut out = String::with_capacity(ink.len() + ink.len() / 4);
    out.push(chars[0]);
    for (k, b) in boundaries.iter().enumerate() {
        let bw = &b.between;
        if bw.drawn_break {
            out.push('\n');
        } else if bw.drawn_space {
            out.push(' ');
        } else if bw.generated_break || bw.generated_space {
            let word_gap = spacing[k] + WORD_SPACE_MARGIN_EM.max(spacing[k]);
            if !b.same_line {
                out.push(if bw.generated_break { '\n' } else { ' ' });
            } else if b.gap > word_gap {
                let far = bw.generated_break && b.gap >= SAME_LINE_BREAK_EM;
                out.push(if far { '\n' } else { ' ' });
            }
            // else: a space inside a word, dropped.
        }
        out.push(chars[k + 1]);
    }
    out
}

fn boundary(a: &Glyph, b: &Glyph, between: &[Glyph]) -> Boundary {
    let mut bw = Between::default();
    for g in between {
        let newline = matches!(g.ch, '\r' | '\n');
        match (g.generated, newline) {
            (true, true) => bw.generated_break = true,
            (false, true) => bw.drawn_break = true,
            (true, false) if g.ch.is_whitespace() => bw.generated_space = true,
            (false, false) if g.ch.is_whitespace() => bw.drawn_space = true,
            _ => {}
        }
    }
    let dir = a.direction();
    let em = a.em().max(b.em()).max(1e-3);
    let (centre_a, len_a) = a.extent_along(dir);
    let (centre_b, len_b) = b.extent_along(dir);
    let gap = (centre_b - 0.5 * len_b) - (centre_a + 0.5 * len_a);
    let dir_b = b.direction();
    let same_direction = dir[0] * dir_b[0] + dir[1] * dir_b[1] > 0.98;
    let (dx, dy) = (b.origin[0] - a.origin[0], b.origin[1] - a.origin[1]);
    let off_baseline = (dy * dir[0] - dx * dir[1]).abs();
    let origin_b = b.origin[0] * dir[0] + b.origin[1] * dir[1];
    let (ink_start_a, ink_end_a) = (centre_a - 0.5 * len_a, centre_a + 0.5 * len_a);
    let gap_em = gap / em;
    Boundary {
        between: bw,
        gap: if gap_em.is_finite() { gap_em } else { 0.0 },
        same_line: same_direction && off_baseline < 0.3 * em && gap > -0.5 * em,
        overlaps: same_direction
            && off_baseline < 0.5 * em
            && origin_b > ink_start_a + 0.02 * em
            && origin_b < ink_end_a - 0.02 * em,
    }
}

/// Reverses each run of ink glyphs that pdfium put in the order opposite to their own direction
/// (upside-down text drawn glyph by glyph: pdfium sorts a line's objects left to right), so that
/// it reads along its baseline. A glyph continues such a run when it is on the previous glyph's
/// baseline, in its direction, and ends less than [`SAME_LINE_BREAK_EM`] before it starts, with
/// no drawn space or line break between them.
fn reverse_backward_runs(glyphs: &[Glyph], ink: &mut [usize]) {
    let backward = |a: &Glyph, b: &Glyph, between: &[Glyph]| {
        if between.iter().any(|g| !g.generated && g.ch.is_whitespace()) {
            return false;
        }
        let dir = a.direction();
        let dir_b = b.direction();
        let em = a.em().max(b.em()).max(1e-3);
        let (dx, dy) = (b.origin[0] - a.origin[0], b.origin[1] - a.origin[1]);
        let (centre_a, len_a) = a.extent_along(dir);
        let (centre_b, len_b) = b.extent_along(dir);
        let back_gap = (centre_a - 0.5 * len_a) - (centre_b + 0.5 * len_b);
        dir[0] * dir_b[0] + dir[1] * dir_b[1] > 0.98
            && (dy * dir[0] - dx * dir[1]).abs() < 0.3 * em
            && back_gap > -0.2 * em
            && back_gap < SAME_LINE_BREAK_EM * em
    };
    let mut start = 0;
    while start < ink.len() {
        let mut end = start + 1;
        while end < ink.len() && {
            let (a, b) = (ink[end - 1], ink[end]);
            backward(&glyphs[a], &glyphs[b], &glyphs[a.min(b) + 1..a.max(b)])
        } {
            end += 1;
        }
        ink[start..end].reverse();
        start = end;
    }
}

/// For each boundary, the letter spacing (in em) of its line: the median gap between consecutive
/// letters or digits with no drawn space between them, over the run of boundaries on one line.
fn letter_spacing(glyphs: &[Glyph], ink: &[usize], boundaries: &[Boundary]) -> Vec<f32> {
    let mut spacing = vec![0.0; boundaries.len()];
    let mut gaps: Vec<f32> = Vec::new();
    let mut start = 0;
    while start < boundaries.len() {
        let mut end = start;
        while end < boundaries.len() && boundaries[end].same_line {
            end += 1;
        }
        gaps.clear();
        gaps.extend((start..end).filter_map(|k| {
            let b = &boundaries[k];
            let letters =
                glyphs[ink[k]].ch.is_alphanumeric() && glyphs[ink[k + 1]].ch.is_alphanumeric();
            (letters && !b.between.drawn_space && !b.between.drawn_break).then_some(b.gap)
        }));
        let median = match gaps.len() {
            0 => 0.0,
            n => {
                gaps.sort_by(f32::total_cmp);
                0.5 * (gaps[(n - 1) / 2] + gaps[n / 2])
            }
        };
        spacing[start..end].fill(median.clamp(0.0, MAX_LETTER_SPACING_EM));
        start = end + 1;
    }
    spacing
}

/// Puts a run of overlapping glyphs in the order their text objects are drawn (stable: glyphs of
/// one object keep pdfium's order). Left as it is when the run is one object or an order is unknown.
fn reorder_by_drawing(
    glyphs: &[Glyph],
    run: &[usize],
    chars: &mut [char],
    draw_order: &mut impl FnMut(usize) -> Option<u32>,
) {
    let first = glyphs[run[0]].object;
    if run.iter().all(|&i| glyphs[i].object == first) {
        return;
    }
    let orders: Option<Vec<u32>> = run
        .iter()
        .map(|&i| match glyphs[i].object {
            0 => None,
            object => draw_order(object),
        })
        .collect();
    let Some(orders) = orders else { return };
    if orders.windows(2).all(|w| w[0] <= w[1]) {
        return;
    }
    let mut order: Vec<usize> = (0..run.len()).collect();
    order.sort_by_key(|&k| orders[k]);
    let original: Vec<char> = chars.to_vec();
    for (slot, k) in chars.iter_mut().zip(order) {
        *slot = original[k];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A glyph of `width` x 0.7 em ink at `pos` along a line at `angle` degrees through (100, 100).
    fn glyph(ch: char, pos: f32, width: f32, angle: f32, generated: bool) -> Glyph {
        let (s, c) = angle.to_radians().sin_cos();
        let size = 10.0;
        let (w, h) = (width * size, 0.7 * size);
        let origin = [100.0 + pos * size * c, 100.0 + pos * size * s];
        // The ink rectangle's corners, rotated; the tight box is their bounding box.
        let corners = [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)]
            .map(|(x, y)| (origin[0] + x * c - y * s, origin[1] + x * s + y * c));
        let xs = corners.map(|p| p.0);
        let ys = corners.map(|p| p.1);
        let min = |v: [f32; 4]| v.iter().copied().fold(f32::MAX, f32::min);
        let max = |v: [f32; 4]| v.iter().copied().fold(f32::MIN, f32::max);
        let bbox = if generated {
            [origin[0], origin[0], origin[1], origin[1]]
        } else {
            [min(xs), max(xs), min(ys), max(ys)]
        };
        Glyph {
            ch,
            generated,
            bbox,
            origin,
            axis: [c, s],
            font_size: size,
            object: 1,
        }
    }

    /// Glyphs for `text` (each letter 0.5 em wide, `tracking` em apart; a space is 0.3 em more),
    /// with a generated space wherever pdfium would put one: between every pair when `split`.
    fn line(text: &str, tracking: f32, angle: f32, split: bool) -> Vec<Glyph> {
        let mut out = Vec::new();
        let mut pos = 0.0;
        for (i, ch) in text.chars().enumerate() {
            if ch == ' ' {
                pos += 0.3;
                if !split {
                    out.push(glyph(' ', pos, 0.0, angle, true));
                }
                continue;
            }
            if split && i > 0 {
                out.push(glyph(' ', pos, 0.0, angle, true));
            }
            out.push(glyph(ch, pos, 0.5, angle, false));
            pos += 0.5 + tracking;
        }
        out
    }

    fn no_order(_: usize) -> Option<u32> {
        None
    }

    #[test]
    fn letter_spaced_words_come_out_whole_at_any_angle() {
        for angle in [0.0, 25.0, 45.0, 90.0, 180.0, 270.0, 330.0] {
            let glyphs = line("North Buona Vista", 0.15, angle, true);
            assert_eq!(
                page_text(&glyphs, no_order),
                "North Buona Vista",
                "angle {angle}"
            );
        }
    }

    #[test]
    fn upside_down_text_in_pdfium_order_reads_along_its_baseline() {
        // pdfium sorts glyph-by-glyph text at 180 degrees left to right: last glyph first.
        let mut glyphs = line("North Buona", 0.15, 180.0, true);
        glyphs.reverse();
        assert_eq!(page_text(&glyphs, no_order), "North Buona");
    }

    #[test]
    fn word_spaces_pdfium_generates_in_tight_text_are_kept() {
        for angle in [0.0, 30.0, 90.0] {
            let glyphs = line("the quick brown fox", 0.02, angle, false);
            assert_eq!(
                page_text(&glyphs, no_order),
                "the quick brown fox",
                "angle {angle}"
            );
        }
    }

    /// `glyphs` moved `dx` em along the line and `dy` em across it (at angle 0).
    fn moved(glyphs: Vec<Glyph>, dx: f32, dy: f32) -> Vec<Glyph> {
        let (dx, dy) = (dx * 10.0, dy * 10.0);
        glyphs
            .into_iter()
            .map(|mut g| {
                g.origin = [g.origin[0] + dx, g.origin[1] + dy];
                g.bbox = [
                    g.bbox[0] + dx,
                    g.bbox[1] + dx,
                    g.bbox[2] + dy,
                    g.bbox[3] + dy,
                ];
                g
            })
            .collect()
    }

    #[test]
    fn drawn_spaces_and_breaks_are_kept_and_generated_breaks_on_one_line_are_spaces() {
        let drawn_space = Glyph {
            generated: false,
            ..glyph(' ', 2.1, 0.0, 0.0, false)
        };
        // A drawn space between glyphs that touch still separates them.
        let mut glyphs = line("word", 0.02, 0.0, false);
        glyphs.push(drawn_space);
        glyphs.extend(moved(line("next", 0.02, 0.0, false), 2.1, 0.0));
        assert_eq!(page_text(&glyphs, no_order), "word next");
        // A generated line break 0.5 em further along the same baseline is a space...
        let generated_break = |at: f32| {
            [
                glyph('\r', at, 0.0, 0.0, true),
                glyph('\n', at, 0.0, 0.0, true),
            ]
        };
        let mut glyphs = line("word", 0.02, 0.0, false);
        glyphs.extend(generated_break(2.1));
        glyphs.extend(moved(line("next", 0.02, 0.0, false), 2.6, 0.0));
        assert_eq!(page_text(&glyphs, no_order), "word next");
        // ...one on another baseline, or 2 em away, stays a line break.
        for (dx, dy) in [(0.0, -1.2), (4.1, 0.0)] {
            let mut glyphs = line("word", 0.02, 0.0, false);
            glyphs.extend(generated_break(2.1));
            glyphs.extend(moved(line("next", 0.02, 0.0, false), dx, dy));
            assert_eq!(
                page_text(&glyphs, no_order),
                "word\nnext",
                "moved {dx}, {dy}"
            );
        }
    }

    #[test]
    fn overlapping_glyphs_of_different_objects_follow_the_drawing_order() {
        // pdfium's order r, P (by position); the page draws P first, and P starts inside r.
        let r = Glyph {
            object: 2,
            ..glyph('r', 0.0, 0.4, 0.0, false)
        };
        let p = Glyph {
            object: 1,
            ..glyph('P', 0.3, 0.6, 0.0, false)
        };
        let known = |object: usize| Some(object as u32);
        assert_eq!(page_text(&[r, p], known), "Pr");
        // Unknown drawing order, one object, or glyphs apart: pdfium's order stays.
        assert_eq!(page_text(&[r, p], |_| None), "rP");
        assert_eq!(page_text(&[r, Glyph { object: 2, ..p }], known), "rP");
        let apart = Glyph {
            object: 1,
            ..glyph('P', 0.45, 0.6, 0.0, false)
        };
        assert_eq!(page_text(&[r, apart], known), "rP");
    }

    #[test]
    fn empty_and_whitespace_only_pages_have_no_text() {
        assert_eq!(page_text(&[], no_order), "");
        assert_eq!(page_text(&[glyph(' ', 0.0, 0.0, 0.0, true)], no_order), "");
    }
}
