"""PDF text engines against pypdf on the corpus of benches/rag/pdfs/ (issue 16, finding 7).

For each file: pypdf's words are the reference; each engine's recall is the share of them it finds
(multiset intersection of lower-cased words stripped of punctuation); pages/s is pages over the
median of `--rounds` timed extractions of the file on one thread. Engines:

- pypdf (pure Python; the reference, so its recall is 1 by definition);
- gilkit_rag's loader (`load_and_split`: lopdf + pdf-extract, with the ' and " pass; includes the
  recursive splitter, which costs under 1% of it);
- pdfium through pypdfium2 (the engine a Rust binding such as pdfium-render would load from the same
  libpdfium; timed through its Python wrapper, so an upper bound of a Rust binding's time).

Run: .venv/bin/python benches/rag/pdf_engines.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pypdf
import pypdfium2

from gilkit_rag import load_and_split

PDFS = Path(__file__).resolve().parent / "pdfs"
WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in WORD.findall(text))


def with_pypdf(path: Path) -> str:
    r = pypdf.PdfReader(path)
    if r.is_encrypted:
        r.decrypt("")
    return "\n".join(p.extract_text() or "" for p in r.pages)


def with_gilkit(path: Path) -> str:
    try:
        return load_and_split(path)[1]
    except ValueError as e:
        raise RuntimeError(str(e).split(": ", 2)[-1][:60]) from None


def with_pdfium(path: Path) -> str:
    doc = pypdfium2.PdfDocument(str(path))
    try:
        return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    finally:
        doc.close()


ENGINES: dict[str, Callable[[Path], str]] = {"pypdf": with_pypdf, "gilkit_rag (pdf-extract)": with_gilkit, "pdfium (pypdfium2)": with_pdfium}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    files = sorted(PDFS.glob("*.pdf"))
    names = list(ENGINES)
    print("| file | producer | pages | pypdf words | " + " | ".join(f"{n} recall | {n} pages/s" for n in names[1:]) + " | pypdf pages/s |")
    print("|---|---|---|---|" + "---|---|" * (len(names) - 1) + "---|")
    totals: dict[str, list[float]] = {n: [] for n in names}
    worst: dict[str, float] = {n: 1.0 for n in names}
    for path in files:
        reader = pypdf.PdfReader(path)
        pages = len(reader.pages)
        producer = str((reader.metadata or {}).get("/Producer") or "-").split("(")[0].strip()[:28]
        ref = words(with_pypdf(path))
        cells = []
        speeds = {}
        for name in names:
            f = ENGINES[name]
            times = []
            text = ""
            error = None
            for _ in range(args.rounds):
                t = time.perf_counter()
                try:
                    text = f(path)
                except Exception as e:  # an engine that fails on a file: recall 0, reported
                    error = str(e)[:50]
                    break
                times.append(time.perf_counter() - t)
            speed = pages / statistics.median(times) if times else 0.0
            speeds[name] = speed
            totals[name].append(speed)
            if name == "pypdf":
                continue
            if error:
                cells.append(f"error: {error} | -")
                worst[name] = 0.0
                continue
            got = words(text)
            recall = sum((ref & got).values()) / max(1, sum(ref.values())) if ref else float("nan")
            if ref:
                worst[name] = min(worst[name], recall)
            cells.append(f"{recall:.2f} | {speed:,.0f}")
        print(f"| {path.name} | {producer} | {pages} | {sum(ref.values())} | " + " | ".join(cells) + f" | {speeds['pypdf']:,.0f} |")
    print()
    for name in names[1:]:
        ratio = statistics.median(a / b for a, b in zip(totals[name], totals["pypdf"]) if b and a)
        print(f"- {name}: worst recall {worst[name]:.2f}; median speed vs pypdf per file {ratio:.1f}x")


if __name__ == "__main__":
    main()
