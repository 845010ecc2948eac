"""Generates the ReportLab and hand-written files of benches/rag/pdfs/ (committed; re-run only to
rebuild them): a two-column, three-page document in the standard-14 Helvetica, the same with an
embedded TrueType font (DejaVu Sans, from Debian's fonts-dejavu-core), and a minimal PDF whose
text uses the ' and " operators. Needs `pip install reportlab`.

Run: .venv/bin/python benches/rag/make_pdfs.py
"""

from __future__ import annotations

from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

HERE = Path(__file__).resolve().parent / "pdfs"
CORPUS = Path(__file__).resolve().parents[2] / "examples" / "rag-pipeline" / "corpus" / "docs"

def paragraphs() -> list[str]:
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("devil-00*.txt")))
    paras = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    return paras[:60]


def two_columns(path: Path, font: str) -> None:
    doc = BaseDocTemplate(str(path), pagesize=A4, title=path.stem)
    w, h = A4
    frames = [Frame(40, 40, (w - 100) / 2, h - 80, id="left"), Frame(60 + (w - 100) / 2, 40, (w - 100) / 2, h - 80, id="right")]
    doc.addPageTemplates([PageTemplate(id="two", frames=frames)])
    style = getSampleStyleSheet()["BodyText"]
    style.fontName = font
    doc.build([Paragraph(p.replace("&", "&amp;").replace("<", "&lt;"), style) for p in paragraphs()])


def minimal_pdf(content: bytes, font: bytes = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>") -> bytes:
    """A valid one-page PDF with `content` as its page content and `font` as /F1 (xref computed)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        font,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def quote_operators(path: Path) -> None:
    lines = [b"Text shown by the Tj operator.", b"The quote operator moves to the next line first.",
             b"So does the double quote operator, with word and character spacing."]
    content = (b"BT /F1 12 Tf 14 TL 72 720 Td (" + lines[0] + b") Tj (" + lines[1] + b") ' 1 0 (" + lines[2] + b") \" ET")
    path.write_bytes(minimal_pdf(content))


if __name__ == "__main__":
    two_columns(HERE / "reportlab-helvetica-2col.pdf", "Helvetica")
    pdfmetrics.registerFont(TTFont("DejaVuSans", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    two_columns(HERE / "reportlab-dejavu-ttf-2col.pdf", "DejaVuSans")
    quote_operators(HERE / "quote-operators.pdf")
