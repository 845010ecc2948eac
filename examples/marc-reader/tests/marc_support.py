"""Helpers shared by the gilkit_marc tests: the sample files and a reader-outcome recorder."""

from __future__ import annotations

import contextlib
import io
import random
import warnings
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"

# Every sample record file (MARCXML/JSON samples and licences are not record files).
MARC_FILES = sorted(
    p
    for p in DATA.rglob("*")
    if p.is_file() and p.suffix not in (".md", ".xml", ".json") and not p.name.startswith("LICENSE")
)
SMALL_FILES = [p for p in MARC_FILES if p.stat().st_size < 100_000]


class Chunky:
    """A file object whose ``read`` returns a random number of bytes, 1 to ``longest``."""

    def __init__(self, payload: bytes, rng: random.Random, longest: int) -> None:
        self.payload, self.rng, self.longest = payload, rng, longest

    def read(self, n: int = -1) -> bytes:
        k = min(n, self.rng.randint(1, self.longest))
        chunk, self.payload = self.payload[:k], self.payload[k:]
        return chunk


def outcome(reader_cls: Any, source: Any, **options: Any) -> dict[str, Any]:
    """Reads everything; returns per-position results, stderr text, and warnings, comparable."""
    stderr = io.StringIO()
    items: list[Any] = []
    with contextlib.redirect_stderr(stderr), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = reader_cls(source, **options)
        for record in reader:
            if record is None:
                exc = reader.current_exception
                items.append(("none", type(exc).__name__, str(exc), bytes(reader.current_chunk)))
                continue
            try:
                marc: Any = record.as_marc()
            except Exception as e:  # noqa: BLE001 - the exception type is what is compared
                marc = ("as_marc raised", type(e).__name__)
            items.append(("record", record.as_dict(), marc))
    return {
        "items": items,
        "stderr": stderr.getvalue(),
        "warnings": [(w.category.__name__, str(w.message)) for w in caught if w.category is not ResourceWarning],
    }
