"""Readers: ``MARCReader`` (Rust), ``JSONReader``, ``map_records``, and the batch helpers.

``MARCReader`` is implemented in Rust (``_native.MARCReader``): it reads large chunks, frames and
parses a batch of records with the GIL released, and builds each record's Python objects when
iterated. Behaviour is pymarc 5's: a record that cannot be read yields ``None`` and sets
``current_exception`` and ``current_chunk``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from io import IOBase, StringIO
from typing import IO, Any

from . import _native
from .field import Field, Indicators, Subfield
from .leader import Leader
from .record import Record

MARCReader = _native.MARCReader


class Reader:
    """Base class of the iterating readers (kept for pymarc compatibility)."""


def read_all(
    target: Any,
    threads: int = 1,
    *,
    permissive: bool = False,
    to_unicode: bool = True,
    force_utf8: bool = False,
    hide_utf8_warnings: bool = False,
    utf8_handling: str = "strict",
    file_encoding: str = "iso8859-1",
) -> list[Record | None]:
    """Reads every record of ``target`` (path, bytes or binary file) into a list.

    Parsing runs on ``threads`` threads with the GIL released. Strict by default: the first
    record pymarc could not read raises its exception; with ``permissive=True`` it is ``None``
    in the list instead (as ``MARCReader`` yields it).
    """
    return _native.read_all(  # type: ignore[no-any-return]
        target,
        threads,
        permissive=permissive,
        to_unicode=to_unicode,
        force_utf8=force_utf8,
        hide_utf8_warnings=hide_utf8_warnings,
        utf8_handling=utf8_handling,
        file_encoding=file_encoding,
    )


def parse(data: bytes, **options: Any) -> list[Record | None]:
    """Parses MARC transmission-format ``data`` (one or more records); see ``read_all``."""
    return read_all(bytes(data), 1, **options)


def map_records(f: Callable[[Record | None], Any], *files: Any) -> None:
    """Calls ``f`` on every record of every file (pymarc's ``map_records``)."""
    for file in files:
        for record in MARCReader(file):
            f(record)


class JSONReader(Reader):
    """Reads MARC-in-JSON (a list of records or one record) from a path, a string or a file."""

    def __init__(self, marc_target: bytes | str | IO[str], encoding: str = "utf-8", stream: bool = False) -> None:
        self.encoding = encoding
        if isinstance(marc_target, IOBase):
            self.file_handle: Any = marc_target
        elif isinstance(marc_target, str) and os.path.exists(marc_target):
            self.file_handle = open(marc_target)  # noqa: SIM115 - pymarc keeps it open too
        else:
            self.file_handle = StringIO(marc_target)  # type: ignore[arg-type]
        if stream:
            sys.stderr.write("Streaming not yet implemented, your data will be loaded into memory\n")
        self.records = json.load(self.file_handle, strict=False)

    def __iter__(self) -> Iterator[Record]:
        if hasattr(self.records, "__iter__") and not isinstance(self.records, dict):
            self.iter = iter(self.records)
        else:
            self.iter = iter([self.records])
        return self

    def __next__(self) -> Record:
        obj = next(self.iter)
        record = Record()
        record.leader = Leader(obj["leader"])
        for entry in obj["fields"]:
            tag, value = next(iter(entry.items()))
            if "subfields" in value and hasattr(value, "update"):
                subfields = [Subfield(code=code, value=v) for sub in value["subfields"] for code, v in sub.items()]
                field = Field(tag=tag, subfields=subfields, indicators=Indicators(value["ind1"], value["ind2"]))
            else:
                field = Field(tag=tag, data=value)
            record.add_field(field)
        return record


__all__ = ["JSONReader", "MARCReader", "Reader", "map_records", "parse", "read_all"]
