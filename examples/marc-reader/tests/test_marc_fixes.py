"""The last differences from pymarc (issue 18): MARC-8 from a ``str``, the file position after
each record, and the writer's refusal of records the format cannot hold."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pymarc
import pytest
from marc_support import DATA, SMALL_FILES

import gilkit_marc

# --- marc8_to_unicode(str) --------------------------------------------------------------------

MARC8_STRINGS = [
    "",
    "abc",
    "caf\xe9",  # a combining mark (ANSEL 0xE9) with nothing after it
    "a\xe2e",  # ANSEL acute before its base: e with acute
    "\x1b(Babc",  # an escape is never recognised in a str: ESC is dropped as a control character
    "\x1b$1!!!",
    "\x1bb",
    "\x1b",
    "ü€漢",  # code points above 0xFF: "Unable to parse character" and a space
    "\x00\x1f\x85\x9f tab\t",  # control characters dropped
    "Ca\xf0c",  # ANSEL cedilla
]


def _decode(module: Any, text: str, quiet: bool) -> tuple[str, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out = module.marc8_to_unicode(text, quiet)
    return out, err.getvalue()


@pytest.mark.parametrize("text", MARC8_STRINGS)
@pytest.mark.parametrize("quiet", [False, True])
def test_marc8_to_unicode_takes_a_str_like_pymarc(text: str, quiet: bool) -> None:
    assert _decode(gilkit_marc, text, quiet) == _decode(pymarc, text, quiet)


def test_marc8_converter_takes_a_str_and_keeps_its_sets() -> None:
    ours, theirs = gilkit_marc.MARC8ToUnicode(), pymarc.MARC8ToUnicode()
    for data in [b"\x1b(N", "A\xe2e", b"A", "\x1b(BA"]:
        assert ours.translate(data) == theirs.translate(data)
        assert (ours.g0, ours.g1) == (theirs.g0, theirs.g1)


def test_map_marc8_record_on_a_unicode_record_matches_pymarc() -> None:
    """pymarc's suite: `test_map_marc8_record_against_unicode_as_marc` (a record read with
    `to_unicode=True` mapped again as MARC-8, its str values decoded once more)."""
    for name in ["marc8.dat", "test.dat", "utf8_with_leader_flag.dat"]:
        data = (DATA / "pymarc" / name).read_bytes()
        ours = [gilkit_marc.map_marc8_record(r) for r in gilkit_marc.MARCReader(data, hide_utf8_warnings=True) if r]
        theirs = [pymarc.map_marc8_record(r) for r in pymarc.MARCReader(data, hide_utf8_warnings=True) if r]
        assert [r.as_marc() for r in ours] == [r.as_marc() for r in theirs]
        assert [r.as_dict() for r in ours] == [r.as_dict() for r in theirs]


# --- the file position after each record ------------------------------------------------------


class SeekableWrapper(io.RawIOBase):
    """A seekable file object gilkit reads through its methods (not its descriptor)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self.inner.readinto(b)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.inner.seek(pos, whence)

    def tell(self) -> int:
        return self.inner.tell()


def _open(kind: str, path: Path, start: int) -> Any:
    if kind == "buffered":
        fh: Any = open(path, "rb")  # noqa: SIM115 - closed by the caller
    elif kind == "unbuffered":
        fh = open(path, "rb", buffering=0)  # noqa: SIM115
    elif kind == "bytesio":
        fh = io.BytesIO(path.read_bytes())
    else:
        fh = SeekableWrapper(path.read_bytes())
    fh.seek(start)
    return fh


def _positions(module: Any, fh: Any) -> list[tuple[bool, int]]:
    """(record or None, fh.tell()) after each item the reader yields."""
    out = []
    with contextlib.redirect_stderr(io.StringIO()):
        reader = module.MARCReader(fh, hide_utf8_warnings=True)
        for record in reader:
            out.append((record is None, fh.tell()))
    return out


SOURCES = ["buffered", "unbuffered", "bytesio", "wrapper"]


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("path", SMALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_position_after_each_record_is_pymarcs(kind: str, path: Path) -> None:
    with _open(kind, path, 0) as ours, _open(kind, path, 0) as theirs:
        assert _positions(gilkit_marc, ours) == _positions(pymarc, theirs)


@pytest.mark.parametrize("kind", SOURCES)
def test_position_counts_from_where_the_file_was(kind: str) -> None:
    """A reader made on a file already moved past its first record."""
    path = DATA / "pymarc" / "test.dat"
    with _open(kind, path, 755) as ours, _open(kind, path, 755) as theirs:
        expected = _positions(pymarc, theirs)
        assert len(expected) == 9
        assert _positions(gilkit_marc, ours) == expected


@pytest.mark.parametrize("kind", SOURCES)
def test_positions_index_a_multi_batch_file(kind: str) -> None:
    """10,000 records (several refills): every position is pymarc's, no byte is read twice, and
    seeking to a recorded position reads that record again (the indexing use)."""
    path = DATA / "mrrc" / "10k_records.mrc"
    with _open(kind, path, 0) as fh:
        offsets = [0]
        records = []
        for record in gilkit_marc.MARCReader(fh):
            records.append(record.as_marc())
            offsets.append(fh.tell())
    expected = [r.as_marc() for r in pymarc.MARCReader(path.read_bytes())]
    assert records == expected
    assert offsets[-1] == path.stat().st_size
    assert offsets == [0] + list(_cumulative(len(r) for r in expected))
    with _open(kind, path, 0) as fh:
        for i in (0, 1, 4321, 9999):
            fh.seek(offsets[i])
            assert next(iter(gilkit_marc.MARCReader(fh))).as_marc() == expected[i]


def _cumulative(lengths: Any) -> Any:
    total = 0
    for n in lengths:
        total += n
        yield total


def test_position_is_kept_with_read_ahead_off_and_lazy_fields() -> None:
    path = DATA / "mrrc" / "1k_records.mrc"
    with open(path, "rb") as theirs:
        expected = _positions(pymarc, theirs)
    for options in ({"readahead": False}, {"lazy_fields": True}):
        with open(path, "rb") as fh:
            got = [fh.tell() for _ in gilkit_marc.MARCReader(fh, **options)]
        assert got == [p for _, p in expected]


# --- records the transmission format cannot hold ----------------------------------------------


def _record(module: Any, value_lengths: list[int], field_cls: Any = None) -> Any:
    field_cls = field_cls or module.Field
    record = module.Record()
    for i, n in enumerate(value_lengths):
        record.add_field(
            field_cls(tag="500", indicators=module.Indicators(" ", " "), subfields=[module.Subfield("a", "x" * n)])
        )
        record.fields[-1].subfields[0] = module.Subfield("a", chr(ord("a") + i % 26) * n)
    return record


class PlainField(gilkit_marc.Field):
    """A Field subclass: serialised by the Python code, not the Rust fast path."""


@pytest.mark.parametrize("field_cls", [None, PlainField], ids=["rust", "python"])
def test_field_over_9999_bytes_is_refused(field_cls: Any) -> None:
    # A 500 field is two indicators, "\x1fa", the value and the field terminator: value + 5.
    fits = _record(gilkit_marc, [9994], field_cls)
    assert fits.as_marc() == _record(pymarc, [9994]).as_marc()
    with pytest.raises(gilkit_marc.FieldTooLong) as caught:
        _record(gilkit_marc, [9995], field_cls).as_marc()
    assert caught.value.tag == "500"
    assert caught.value.length == 10_000
    assert "9,999" in str(caught.value) and "XMLWriter" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("field_cls", [None, PlainField], ids=["rust", "python"])
def test_record_over_99999_bytes_is_refused(field_cls: Any) -> None:
    # 24 (leader) + 10 * 12 (directory) + 1 + fields + 1 = 99,999 with these ten fields.
    lengths = [9994] * 9 + [9857]
    fits = _record(gilkit_marc, lengths, field_cls).as_marc()
    assert len(fits) == 99_999
    assert fits == _record(pymarc, lengths).as_marc()
    with pytest.raises(gilkit_marc.RecordTooLong) as caught:
        _record(gilkit_marc, [*lengths[:-1], 9858], field_cls).as_marc()
    assert not isinstance(caught.value, gilkit_marc.FieldTooLong)
    assert caught.value.length == 100_000
    assert "99,999" in str(caught.value)


def test_pymarc_writes_such_records_corrupt() -> None:
    """The difference documented: pymarc's bytes for a 10,000-byte field do not read back."""
    data = _record(pymarc, [9995]).as_marc()
    assert list(pymarc.MARCReader(data)) == [None]


def test_writer_refuses_and_keeps_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "out.mrc"
    good = [_record(gilkit_marc, [100]), _record(gilkit_marc, [200])]
    with open(path, "wb") as fh:
        writer = gilkit_marc.MARCWriter(fh)
        writer.write(good[0])
        with pytest.raises(gilkit_marc.FieldTooLong):
            writer.write(_record(gilkit_marc, [50, 12_000]))
        with pytest.raises(gilkit_marc.RecordTooLong):
            writer.write(_record(gilkit_marc, [9000] * 12))
        writer.write(good[1])
        writer.close(close_fh=False)
    back = list(pymarc.MARCReader(path.read_bytes()))
    assert [r.as_marc() for r in back] == [r.as_marc() for r in good]
