"""Readers: ``MARCReader`` (Rust), ``JSONReader``, ``map_records``, and the batch helpers.

``MARCReader`` is implemented in Rust (``_native.MARCReader``): it reads large chunks and frames
a batch of records with the GIL released, parses them (by default partly on a worker thread,
ahead of the records being built, when a core is spare: ``readahead=True``), and builds each
record's Python objects when iterated. Behaviour is pymarc 5's: a record that cannot be read
yields ``None`` and sets ``current_exception`` and ``current_chunk``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from io import IOBase, StringIO
from typing import IO, Any

from . import _native
from .exceptions import PymarcException
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
    readahead: bool = True,
    lazy_fields: bool = False,
) -> list[Record | None]:
    """Reads every record of ``target`` (path, bytes or binary file) into a list.

    Parsing runs with the GIL released: on ``threads`` threads before any record is built when
    ``threads > 1``; else partly on a worker thread ahead of the records being built, if a core is
    spare (``readahead=True``), or on the calling thread first (``readahead=False``). With ``lazy_fields=True`` each record's
    fields are built when first used (see ``MARCReader``). Strict by default: the first record pymarc
    could not read raises its exception; with ``permissive=True`` it is ``None`` in the list
    instead (as ``MARCReader`` yields it).
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
        readahead=readahead,
        lazy_fields=lazy_fields,
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


class MARCMakerReader(Reader):
    """Reads MARCMaker text (``str(record)`` output: ``=LDR  ...`` lines, blank line between
    records) from a path, a string or a text file."""

    def __init__(self, target: bytes | str | IO[str], encoding: str = "utf-8") -> None:
        if isinstance(target, IOBase):
            handle: Any = target
        elif isinstance(target, str) and os.path.exists(target):
            handle = open(target, encoding=encoding)  # noqa: SIM115 - closed just below
        else:
            handle = StringIO(target)  # type: ignore[arg-type]
        content = handle.read()
        handle.close()
        self.records = content.split("\n\n")
        self.iter = iter(self.records)

    def _parse_line(self, line: str) -> Leader | Field:
        """One line: ``=LDR  leader``, ``=001  data`` or ``=245  10$aTitle$bSub``."""
        if line[0] != "=":
            raise ValueError('Line should start with a "=".')
        if line[4:6] != "  ":
            raise ValueError("Tag should be separated from the rest of the field by two spaces.")
        tag, data = line[1:4], line[6:]
        if tag == "LDR":
            return Leader(data)
        if tag < "010":
            return Field(tag, data=data)
        subfields = [Subfield(part[:1], part[1:]) for part in data[3:].split("$")]
        return Field(tag, indicators=Indicators(data[0], data[1]), subfields=subfields)

    def __iter__(self) -> MARCMakerReader:
        return self

    def __next__(self) -> Record:
        text = next(self.iter)
        record = Record()
        for line in text.splitlines():
            try:
                item = self._parse_line(line)
            except Exception as exc:
                raise PymarcException(f'Unable to parse line "{line}"') from exc
            if isinstance(item, Leader):
                record.leader = item
            else:
                record.add_field(item)
        return record


__all__ = ["JSONReader", "MARCMakerReader", "MARCReader", "Reader", "map_records", "parse", "read_all"]
