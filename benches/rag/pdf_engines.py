"""PDF text engines against pypdf on the corpus of benches/rag/pdfs/ (issue 16, finding 7).

For each file, pypdf's words are the reference and each engine's recall is the share of them it
finds. Words are runs of letters and digits, lower-cased, counted as a multiset, after the same
normalization of both texts (`normalize`): Unicode NFKC (the ligature ``ﬁ`` is ``fi``: pypdf keeps
the ligature character, pdfium spells it out), soft hyphens dropped, and a word hyphenated at a
line end joined (``exam-\\npl`` is ``exampl``). Two recalls:

- strict: the multiset intersection of the word lists;
- spacing-tolerant (the issue's bar): a reference word also counts as found when the engine
  splits it into 2 or 3 consecutive words (``Nort h`` for ``North``: an OCR layer whose last glyph
  is placed apart) or joins it with its neighbours into one word (``mm1`` for ``mm 1``). Where a
  space goes between positioned glyphs is each engine's guess, pypdf's included (it reads
  ``spec ified`` on SF424_page2.pdf and ``rdogrp1rdo1`` on FormTestFromOo.pdf): counting those as
  misses measures the disagreement of two guesses, not missing text.

pages/s is pages over the median of `--rounds` timed extractions of the file on one thread;
`--parallel` also times gilkit_rag's `load_and_split_many` over the whole corpus on 1 and 2 worker
threads per engine (pdfium runs under one per-process lock, see examples/rag-pipeline/src/pdf.rs).
Engines (gilkit_rag's loader, with its recursive splitter, which costs under 1% of it):

- pypdf (pure Python; the reference, so its recall is 1 by definition);
- pdfium: gilkit_rag's loader with `set_pdf_engine("pdfium")` (the libpdfium of the pypdfium2
  wheel, called from Rust through pdfium-render's bindings);
- pdf-extract: gilkit_rag's loader with `set_pdf_engine("pdf-extract")` (lopdf + pdf-extract,
  with the ' and " pass);
- pdfium GetText: the same libpdfium through pypdfium2, page text by `FPDFText_GetText` (pdfium's
  own spaces and line breaks): what gilkit_rag's pdfium engine returned before it built words
  from the glyphs (examples/rag-pipeline/src/pdf_words.rs), as the "before" of that change.

Run: .venv/bin/python benches/rag/pdf_engines.py [--rounds 3] [--parallel] [--missing FILE]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable

import pypdf
import pypdfium2

import gilkit_rag
from gilkit_rag import load_and_split, load_and_split_many

PDFS = Path(__file__).resolve().parent / "pdfs"
WORD = re.compile(r"[^\W_]+", re.UNICODE)
LINE_END_HYPHEN = re.compile(r"(\w)-[ \t]*\r?\n\s*(\w)")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    return LINE_END_HYPHEN.sub(r"\1\2", text)


def tokens(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(normalize(text))]


def recall(ref: list[str], got: list[str]) -> tuple[float, float, Counter[str]]:
    """(strict, spacing-tolerant, words still missing) of the reference tokens in `got`."""
    if not ref:
        return float("nan"), float("nan"), Counter()
    want, have = Counter(ref), Counter(got)
    exact = want & have
    missing = want - have
    spare = have - want
    # Split by the engine: a missing word that is 2-3 consecutive engine words run together.
    for n in (2, 3):
        joined = Counter("".join(got[i : i + n]) for i in range(len(got) - n + 1))
        found = missing & joined
        missing -= found
    # Joined by the engine: 2-3 consecutive reference words that are one spare engine word.
    for n in (2, 3):
        for i in range(len(ref) - n + 1):
            window = ref[i : i + n]
            word = "".join(window)
            if spare[word] > 0 and all(missing[w] > 0 for w in window):
                spare[word] -= 1
                missing.subtract(window)
                missing = +missing
    total = sum(want.values())
    return sum(exact.values()) / total, 1 - sum(missing.values()) / total, missing


def with_pypdf(path: Path) -> str:
    r = pypdf.PdfReader(path)
    if r.is_encrypted:
        r.decrypt("")
    return "\n".join(p.extract_text() or "" for p in r.pages)


def gilkit_engine(engine: str) -> Callable[[Path], str]:
    def extract(path: Path) -> str:
        gilkit_rag.set_pdf_engine(engine)
        try:
            return load_and_split(path)[1]
        except ValueError as e:
            raise RuntimeError(str(e).split(": ", 2)[-1][:60]) from None
        finally:
            gilkit_rag.set_pdf_engine("auto")

    return extract


def with_pdfium_gettext(path: Path) -> str:
    doc = pypdfium2.PdfDocument(path)
    try:
        pages = []
        for page in doc:
            text_page = page.get_textpage()
            pages.append(text_page.get_text_range())
            text_page.close()
            page.close()
        return "\n".join(pages)
    finally:
        doc.close()


ENGINES: dict[str, Callable[[Path], str]] = {
    "pypdf": with_pypdf,
    "pdfium": gilkit_engine("pdfium"),
    "pdfium GetText": with_pdfium_gettext,
    "pdf-extract": gilkit_engine("pdf-extract"),
}


def timed(f: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_file(files: list[Path], rounds: int) -> None:
    names = list(ENGINES)
    print(
        "| file | producer | pages | pypdf words | "
        + " | ".join(f"{n} recall (strict / tolerant) | {n} pages/s" for n in names[1:])
        + " | pypdf pages/s |"
    )
    print("|---|---|---|---|" + "---|---|" * (len(names) - 1) + "---|")
    speed_ratios: dict[str, list[float]] = {n: [] for n in names}
    worst: dict[str, tuple[float, float]] = {n: (1.0, 1.0) for n in names}
    pages_total, seconds = 0, {n: 0.0 for n in names}
    for path in files:
        reader = pypdf.PdfReader(path)
        pages = len(reader.pages)
        pages_total += pages
        producer = str((reader.metadata.get("/Producer") if reader.metadata else None) or "-").split("(")[0].strip()[:28]
        ref = tokens(with_pypdf(path))
        cells = []
        speeds = {}
        for name in names:
            f = ENGINES[name]
            try:
                text = f(path)
                median = timed(lambda: f(path), rounds)
            except Exception as e:  # an engine that fails on a file: recall 0, reported
                cells.append(f"error: {str(e)[:50]} | -")
                worst[name] = (0.0, 0.0)
                continue
            seconds[name] += median
            speeds[name] = pages / median
            if name == "pypdf":
                continue
            speed_ratios[name].append(speeds[name] / speeds["pypdf"])
            strict, tolerant, _ = recall(ref, tokens(text))
            if ref:
                worst[name] = (min(worst[name][0], strict), min(worst[name][1], tolerant))
            cells.append(f"{strict:.2f} / {tolerant:.2f} | {speeds[name]:,.0f}")
        print(f"| {path.name} | {producer} | {pages} | {len(ref)} | " + " | ".join(cells) + f" | {speeds['pypdf']:,.0f} |")
    print()
    for name in names[1:]:
        print(
            f"- {name}: worst recall {worst[name][0]:.2f} strict, {worst[name][1]:.2f} spacing-tolerant; "
            f"speed vs pypdf per file: median {statistics.median(speed_ratios[name]):.1f}x; "
            f"whole corpus on one thread: {pages_total / seconds[name]:,.0f} pages/s "
            f"= {seconds['pypdf'] / seconds[name]:.1f}x pypdf's {pages_total / seconds['pypdf']:,.0f}"
        )


def parallel(files: list[Path], rounds: int, copies: int = 3) -> None:
    """Pages/s of gilkit_rag's loader over the corpus (`copies` times) on 1 and 2 worker threads."""
    paths = [str(p) for p in files] * copies
    pages = copies * sum(len(pypdf.PdfReader(p).pages) for p in files)
    pypdf_s = timed(lambda: [with_pypdf(Path(p)) for p in paths], rounds)
    print(f"\nWhole corpus x{copies} ({pages} pages), medians of {rounds} rounds; pypdf on one core: {pages / pypdf_s:,.0f} pages/s\n")
    print("| engine | 1 thread pages/s | 2 threads pages/s | 2 threads / 1 thread | 1 thread / pypdf | 2 threads / pypdf |")
    print("|---|---|---|---|---|---|")
    for engine in ("pdfium", "pdf-extract", "auto"):
        gilkit_rag.set_pdf_engine(engine)
        try:
            one = timed(lambda: load_and_split_many(paths, max_workers=1), rounds)
            two = timed(lambda: load_and_split_many(paths, max_workers=2), rounds)
        finally:
            gilkit_rag.set_pdf_engine("auto")
        print(
            f"| {engine} | {pages / one:,.0f} | {pages / two:,.0f} | {one / two:.2f}x | "
            f"{pypdf_s / one:.1f}x | {pypdf_s / two:.1f}x |"
        )


def show_missing(path: Path) -> None:
    ref = tokens(with_pypdf(path))
    for name in list(ENGINES)[1:]:
        try:
            got = tokens(ENGINES[name](path))
        except Exception as e:
            print(f"{name}: error {e}")
            continue
        strict, tolerant, missing = recall(ref, got)
        print(f"{name}: strict {strict:.3f}, tolerant {tolerant:.3f}; still missing: {sorted(missing.elements())[:80]}")
        print(f"  not in pypdf's words: {sorted((Counter(got) - Counter(ref)).elements())[:80]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", action="store_true", help="also time 1 and 2 worker threads over the corpus")
    ap.add_argument("--missing", type=Path, help="print the words an engine misses on one file, and stop")
    args = ap.parse_args()
    if args.missing:
        show_missing(args.missing)
        return
    files = sorted(PDFS.glob("*.pdf"))
    per_file(files, args.rounds)
    if args.parallel:
        parallel(files, args.rounds)


if __name__ == "__main__":
    main()
