"""Columns of field values computed in Rust on several threads (beyond pymarc).

``extract`` reads MARC records and returns one row per record and one column per field spec,
as an Arrow table (``pyarrow.table(t)``, ``polars.DataFrame(t)``, DuckDB: no copy). ``to_parquet``
and ``convert`` stream the same columns to a Parquet, CSV or JSON Lines file with bounded memory.
Reading, parsing and column building run in Rust with the GIL released, on ``threads`` threads,
so they scale with cores where the object API (``MARCReader``), which builds Python objects under
the GIL, cannot. The GIL is taken once, at the end: MARC-8 messages, warnings and the rare records
only Python decodes are handled then, in record order (a Python file object other than a regular
file opened ``'rb'`` also needs the GIL to be read, between rounds of 32,768 records). The command ``gilkit-marc convert`` wraps
``convert`` (``gilkit_marc.cli``).

Field specs:

- ``"001"``, ``"245"``: every such field's ``Field.value()`` (a control field's data; a data
  field's subfield values, stripped, joined by spaces);
- ``"245$a"``, ``"650$ax"``: every value of those subfields of every such field, in record order
  (``field.get_subfields("a", "x")`` for each field);
- ``"LDR"``: the leader.

Each cell is a list of strings (every occurrence, in record order; empty if the record has
none), or ``None`` for a record pymarc would yield as ``None`` (unreadable). Values are exactly
pymarc's for the same flags (``to_unicode``, ``force_utf8``, ``utf8_handling``, ...). With
``to_unicode=False`` the values are ``bytes`` (and ``"245"`` joins the stripped values with
``b" "``; pymarc's ``RawField.value()`` raises there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import _native

Source = Any
Fields = str | Sequence[str]


def extract(
    source: Source,
    fields: Fields,
    *,
    threads: int | None = None,
    permissive: bool = True,
    to_unicode: bool = True,
    force_utf8: bool = False,
    utf8_handling: str = "strict",
    hide_utf8_warnings: bool = False,
    file_encoding: str = "iso8859-1",
) -> _native.Table:
    """Reads every record of ``source`` and returns the columns ``fields`` as a ``Table``.

    ``source``: anything ``MARCReader`` reads (a path, ``bytes``, a binary file object).
    ``threads``: threads parsing and building columns (``None``: one per CPU). ``permissive=False``
    raises pymarc's exception for the first record pymarc cannot read instead of a ``None`` row.

    The ``Table`` implements the Arrow PyCapsule interface (``__arrow_c_stream__``): pass it to
    ``pyarrow.table``, ``polars.DataFrame`` or ``duckdb``. ``table.to_pydict()`` gives plain
    Python lists without pyarrow.

    Raises ``ValueError`` for a bad field spec; ``KeyboardInterrupt`` on Ctrl-C (the threads stop
    at their next 2,048 records).
    """
    return _native.extract(
        source,
        fields,
        threads=threads,
        permissive=permissive,
        to_unicode=to_unicode,
        force_utf8=force_utf8,
        utf8_handling=utf8_handling,
        hide_utf8_warnings=hide_utf8_warnings,
        file_encoding=file_encoding,
    )


FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def format_for(path: str | os.PathLike[str]) -> str:
    """The output format a file name implies (``.parquet``, ``.csv``, ``.jsonl``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"cannot tell the output format from {os.fspath(path)!r}: name it .parquet, .csv or "
            "(JSON Lines) .jsonl, or pass format='parquet'/'csv'/'jsonl'"
        )
    return FORMATS[suffix]


def convert(
    source: Source,
    path: str | os.PathLike[str],
    fields: Fields,
    *,
    format: str | None = None,  # noqa: A002 - the natural name
    threads: int | None = None,
    permissive: bool = True,
    to_unicode: bool = True,
    force_utf8: bool = False,
    utf8_handling: str = "strict",
    hide_utf8_warnings: bool = False,
    file_encoding: str = "iso8859-1",
    overwrite: bool = False,
    separator: str = "|",
    progress: Callable[[int, int], object] | None = None,
) -> int:
    """Streams the columns ``fields`` of ``source``'s records to ``path``; returns the rows written.

    ``format``: ``"parquet"``, ``"csv"`` or ``"jsonl"`` (default: from the suffix of ``path``).
    Memory stays bounded: rounds of 32,768 records are read, built on the threads and written
    (one Parquet row group per round). CSV cells join a record's values with ``separator``;
    JSON Lines holds lists. An unreadable record is an empty CSV row, a ``null`` JSON row, a null
    Parquet row.

    The file is written under a temporary name beside ``path`` and moved into place at the end:
    a failure or Ctrl-C leaves nothing behind. An existing ``path`` raises ``FileExistsError``
    unless ``overwrite=True``. ``progress(records, bytes_read)`` is called after each round.
    """
    return _native.convert(  # type: ignore[no-any-return]
        source,
        os.fspath(path),
        fields,
        format=format or format_for(path),
        threads=threads,
        permissive=permissive,
        to_unicode=to_unicode,
        force_utf8=force_utf8,
        utf8_handling=utf8_handling,
        hide_utf8_warnings=hide_utf8_warnings,
        file_encoding=file_encoding,
        overwrite=overwrite,
        separator=separator,
        progress=progress,
    )


def to_parquet(
    source: Source,
    path: str | os.PathLike[str],
    fields: Fields,
    *,
    threads: int | None = None,
    permissive: bool = True,
    to_unicode: bool = True,
    force_utf8: bool = False,
    utf8_handling: str = "strict",
    hide_utf8_warnings: bool = False,
    file_encoding: str = "iso8859-1",
    overwrite: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> int:
    """``convert(..., format="parquet")``: the columns as a Parquet file (Snappy), one row group
    per 32,768 records, written as they are built (bounded memory). Returns the rows written."""
    return convert(
        source,
        path,
        fields,
        format="parquet",
        threads=threads,
        permissive=permissive,
        to_unicode=to_unicode,
        force_utf8=force_utf8,
        utf8_handling=utf8_handling,
        hide_utf8_warnings=hide_utf8_warnings,
        file_encoding=file_encoding,
        overwrite=overwrite,
        progress=progress,
    )


def _values(record: Any, specs: list[tuple[str, str, str]], to_unicode: bool) -> list[list[Any]]:
    """The column values of a record the Python decoder built (the rare records the Rust parser
    leaves to it), computed with the record API exactly as the Rust side computes them."""
    out: list[list[Any]] = []
    for kind, tag, codes in specs:
        if kind == "leader":
            leader = str(record.leader)
            out.append([leader if to_unicode else leader.encode("ascii", "replace")])
            continue
        values: list[Any] = []
        for field in record.get_fields(tag):
            if kind == "subfields":
                values.extend(field.get_subfields(*codes))
            elif field.control_field:
                values.append(field.data)
            elif to_unicode:
                values.append(field.value())
            else:
                values.append(b" ".join(sub.value.strip() for sub in field.subfields))
        out.append(values)
    return out


__all__ = ["convert", "extract", "format_for", "to_parquet"]
