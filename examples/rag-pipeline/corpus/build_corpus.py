#!/usr/bin/env python3
"""Builds the bundled RAG corpus from two public-domain texts shipped by Debian.

Sources (see README.md in this folder for the licences):

* *The Devil's Dictionary* by Ambrose Bierce (1911, copyright expired), Debian package ``dict-devil``;
* *The Jargon File* 4.4.7 (public domain by its authors' dedication), Debian package ``dict-jargon``.

Both packages ship a dictd database: ``NAME.index`` (headword, base64 offset, base64 length per line)
over ``NAME.dict.dz`` (gzip). The script groups consecutive entries into small documents, keeps an
evenly spread sample of them (so the corpus stays small enough to embed on a laptop CPU in about a
minute), always keeps the documents that hold the entries the known queries ask about, and writes
each document in one of several formats, chosen round-robin: ``.txt``, ``.md``, ``.html``, ``.json``,
``.csv``, ``.pdf`` and gzip-compressed ``.txt.gz``/``.html.gz``/``.md.gz``. It also writes
``queries.json``: queries whose right source is known, used by the demo and the retrieval tests.

The output is deterministic for a given input. Run it again to regenerate ``docs/``:

    python examples/rag-pipeline/corpus/build_corpus.py            # fetches the two .deb with apt-get
    python examples/rag-pipeline/corpus/build_corpus.py --dictd DIR  # DIR holds devil.* and jargon.*

Needs ``fpdf2`` (``pip install fpdf2``) for the PDF renderings; nothing else outside the stdlib.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import html
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# Document size (characters) when grouping consecutive entries, and the sampling stride per source.
GROUP_CHARS = {"devil": 450, "jargon": 500}
STRIDE = {"devil": 3, "jargon": 18}
FORMATS = ["txt", "md", "html", "json", "csv", "pdf", "txt.gz", "html.gz", "md.gz", "txt"]

# Queries with a known right source: (query, source, headword of the entry that answers it).
QUERIES = [
    ("a blackguard whose faulty vision sees things as they are, not as they ought to be", "devil", "cynic"),
    ("someone skilled at getting around the law", "devil", "lawyer"),
    ("a period of cheating between two periods of fighting", "devil", "peace"),
    ("what is an egotist? someone more interested in himself than in me", "devil", "egotist"),
    ("a bug that disappears or changes its behaviour when you try to observe it", "jargon", "heisenbug"),
    ("an off-by-one error when counting the posts of a fence", "jargon", "fencepost error"),
    ("the smoke that makes electronic chips work; when it escapes they stop working", "jargon", "magic smoke"),
    ("a seemingly pointless activity that turns out to be needed to solve the real problem", "jargon", "yak shaving"),
]


@dataclass
class Entry:
    headword: str
    text: str


@dataclass
class Document:
    source: str
    index: int
    entries: list[Entry]

    @property
    def title(self) -> str:
        first, last = self.entries[0].headword, self.entries[-1].headword
        label = "The Devil's Dictionary" if self.source == "devil" else "The Jargon File"
        return f"{label}: {first}" + (f" to {last}" if last != first else "")

    def plain(self) -> str:
        return self.title + "\n\n" + "\n".join(e.text.strip() + "\n" for e in self.entries)


def b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def read_dictd(directory: Path, name: str) -> list[Entry]:
    data = gzip.decompress((directory / f"{name}.dict.dz").read_bytes())
    entries = []
    for line in (directory / f"{name}.index").read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.split("\t")
        if headword.startswith("00"):  # dictd's own metadata records
            continue
        start = b64(offset)
        text = data[start : start + b64(length)].decode("utf-8").strip()
        if text:
            entries.append(Entry(headword, text))
    return entries


def group(source: str, entries: list[Entry]) -> list[Document]:
    docs: list[Document] = []
    current: list[Entry] = []
    size = 0
    for entry in entries:
        if current and size + len(entry.text) > GROUP_CHARS[source]:
            docs.append(Document(source, len(docs), current))
            current, size = [], 0
        current.append(entry)
        size += len(entry.text)
    if current:
        docs.append(Document(source, len(docs), current))
    return docs


def render_md(doc: Document) -> str:
    parts = [f"# {doc.title}\n"]
    for e in doc.entries:
        parts.append(f"## {e.headword}\n\n{e.text.strip()}\n")
    return "\n".join(parts)


def render_html(doc: Document) -> str:
    body = "\n".join(
        f"<section><h2>{html.escape(e.headword)}</h2>\n<p>{html.escape(e.text.strip())}</p></section>"
        for e in doc.entries
    )
    # The script and style blocks are there on purpose: the loader must keep visible text only.
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(doc.title)}</title>"
        "<style>body { font-family: serif; }</style>"
        "<script>var analytics = 'not visible text';</script></head>\n"
        f"<body><nav>corpus navigation</nav><h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n"
    )


def render_json(doc: Document) -> str:
    payload = {
        "title": doc.title,
        "source": doc.source,
        "entries": [{"term": e.headword, "definition": e.text.strip()} for e in doc.entries],
    }
    return json.dumps(payload, ensure_ascii=False, indent=1) + "\n"


def render_csv(doc: Document) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["term", "definition"])
    for e in doc.entries:
        writer.writerow([e.headword, e.text.strip()])
    return out.getvalue()


def render_pdf(doc: Document) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_compression(True)
    # A fixed date: the same input gives the same bytes.
    pdf.set_creation_date(datetime(2000, 1, 1, tzinfo=timezone.utc))
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    # The core PDF fonts are Latin-1: replace what it lacks (curly quotes and so on).
    text = doc.plain().encode("latin-1", "replace").decode("latin-1")
    pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def write(doc: Document, fmt: str, out_dir: Path) -> Path:
    stem = f"{doc.source}-{doc.index:04d}"
    base = fmt.removesuffix(".gz")
    if base == "pdf":
        data = render_pdf(doc)
    else:
        renderer = {"txt": Document.plain, "md": render_md, "html": render_html, "json": render_json, "csv": render_csv}
        data = renderer[base](doc).encode("utf-8")
    path = out_dir / f"{stem}.{fmt}"
    if fmt.endswith(".gz"):
        # mtime=0: the same input gives the same bytes.
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def fetch_dictd() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="gilkit-corpus-"))
    subprocess.run(["apt-get", "download", "dict-devil", "dict-jargon"], cwd=tmp, check=True)
    for deb in tmp.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
    return tmp / "x" / "usr" / "share" / "dictd"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dictd", type=Path, help="folder with devil.{index,dict.dz} and jargon.{index,dict.dz}")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    dictd = args.dictd or fetch_dictd()

    docs_dir = args.out / "docs"
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    queries = []
    n = 0
    for source in ("devil", "jargon"):
        sub = docs_dir / source
        sub.mkdir(parents=True)
        docs = group(source, read_dictd(dictd, source))
        wanted = {hw for _, src, hw in QUERIES if src == source}
        for doc in docs:
            heads = {e.headword for e in doc.entries}
            if doc.index % STRIDE[source] != 0 and not heads & wanted:
                continue
            path = write(doc, FORMATS[n % len(FORMATS)], sub)
            n += 1
            for query, src, hw in QUERIES:
                if src == source and hw in heads:
                    queries.append({"query": query, "source": str(path.relative_to(args.out)), "headword": hw})
    queries.sort(key=lambda q: [x[0] for x in QUERIES].index(q["query"]))
    (args.out / "queries.json").write_text(json.dumps(queries, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {n} documents to {docs_dir} and {len(queries)} known queries")


if __name__ == "__main__":
    main()
