"""`extract`: columns computed in Rust equal pymarc's values, for every sample file and flag set."""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymarc
import pytest
from gil_probe import _Ticker, assert_releases_gil
from marc_support import DATA, MARC_FILES

import gilkit_marc

SPECS = ["LDR", "001", "008", "020$a", "100", "245", "245$a", "245$ab", "650$ax", "880$6", "856$u", "999$z"]

FLAG_SETS: list[dict[str, Any]] = [
    {},
    {"force_utf8": True},
    {"utf8_handling": "replace"},
    {"utf8_handling": "ignore", "force_utf8": True},
    {"to_unicode": False},
    # A Python codec: every record goes to the Python decoder, whose values are put in place.
    {"file_encoding": "cp1251"},
]


def pymarc_columns(data: bytes, specs: list[str], **flags: Any) -> dict[str, list[Any]]:
    """The same columns computed with pymarc's record API (the reference)."""
    to_unicode = flags.get("to_unicode", True)
    columns: dict[str, list[Any]] = {spec: [] for spec in specs}
    with contextlib.redirect_stderr(io.StringIO()):
        for record in pymarc.MARCReader(data, hide_utf8_warnings=True, **flags):
            for spec in specs:
                columns[spec].append(None if record is None else _values(record, spec, to_unicode))
    return columns


def _values(record: Any, spec: str, to_unicode: bool) -> list[Any]:
    if spec == "LDR":
        leader = str(record.leader)
        return [leader if to_unicode else leader.encode()]
    tag, _, codes = spec.partition("$")
    out: list[Any] = []
    for field in record.get_fields(tag):
        if codes:
            out.extend(field.get_subfields(*codes))
        elif field.control_field:
            out.append(field.data)
        elif to_unicode:
            out.append(field.value())
        else:  # pymarc's RawField.value() raises TypeError; extract joins the bytes
            out.append(b" ".join(sub.value.strip() for sub in field.subfields))
    return out


def ours(source: Any, specs: list[str] = SPECS, **flags: Any) -> dict[str, list[Any]]:
    with contextlib.redirect_stderr(io.StringIO()):
        table = gilkit_marc.extract(source, specs, hide_utf8_warnings=True, **flags)
    return table.to_pydict()  # type: ignore[no-any-return]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "defaults")
@pytest.mark.parametrize("path", MARC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_values_equal_pymarcs(path: Path, flags: dict[str, Any]) -> None:
    data = path.read_bytes()
    assert ours(path, **flags) == pymarc_columns(data, SPECS, **flags)


def test_the_arrow_table_is_the_same_through_pyarrow() -> None:
    path = DATA / "mrrc" / "realistic.mrc"
    table = gilkit_marc.extract(path, ["001", "245$a", "650$ax"])
    arrow = pa.table(table)
    assert arrow.column_names == ["001", "245$a", "650$ax"]
    assert arrow.schema.field("245$a").type == pa.list_(pa.string())
    assert arrow.num_rows == table.num_rows == len(table) == 2000
    assert arrow.to_pydict() == table.to_pydict()
    # The stream can be taken again (each export is a fresh stream over the same batches).
    assert pa.table(table).equals(arrow)
    raw = gilkit_marc.extract(path, ["245$a"], to_unicode=False)
    assert pa.table(raw).schema.field("245$a").type == pa.list_(pa.binary())
    assert repr(table).startswith("<gilkit_marc.Table: 2000 rows")


def test_every_kind_of_source_gives_the_same_table() -> None:
    path = DATA / "pymarc" / "marc8.dat"
    data = path.read_bytes()
    expected = ours(path)
    assert ours(data) == expected
    assert ours(bytearray(data)) == expected
    assert ours(io.BytesIO(data)) == expected
    with open(path, "rb") as fh:
        assert ours(fh) == expected
    assert ours(str(path)) == expected


def test_threads_and_rounds_do_not_change_the_values() -> None:
    """40,000 records: two rounds of 32,768, parts shared by the threads."""
    data = (DATA / "mrrc" / "10k_records.mrc").read_bytes() * 4
    one = ours(data, ["001", "245$a", "650"], threads=1)
    assert len(one["001"]) == 40_000
    assert ours(data, ["001", "245$a", "650"], threads=2) == one
    assert ours(data, ["001", "245$a", "650"], threads=3) == one
    assert one == pymarc_columns(data, ["001", "245$a", "650"])


def test_a_single_spec_may_be_a_string() -> None:
    path = DATA / "pymarc" / "test.dat"
    assert ours(path, "245$a") == ours(path, ["245$a"])  # type: ignore[arg-type]


def test_bad_records_are_none_rows_or_pymarcs_exception() -> None:
    data = (DATA / "pymarc" / "bad_records.mrc").read_bytes()
    rows = ours(data, ["245$a"])["245$a"]
    assert None in rows
    assert rows == pymarc_columns(data, ["245$a"])["245$a"]
    with pytest.raises(Exception) as ours_err:
        gilkit_marc.extract(data, ["245$a"], permissive=False)
    with pytest.raises(Exception) as theirs_err:
        gilkit_marc.read_all(data, permissive=False)
    assert type(ours_err.value) is type(theirs_err.value)
    assert str(ours_err.value) == str(theirs_err.value)


def test_fatal_framing_error_ends_the_rows_as_in_pymarc() -> None:
    good = (DATA / "pymarc" / "test.dat").read_bytes()
    data = good + b"00bad" + good  # RecordLengthInvalid: pymarc yields None and stops
    rows = ours(data, ["001"])["001"]
    assert rows == pymarc_columns(data, ["001"])["001"]
    assert rows[-1] is None and len(rows) == 11
    with pytest.raises(gilkit_marc.RecordLengthInvalid):
        gilkit_marc.extract(data, ["001"], permissive=False)


def test_marc8_messages_are_written_as_pymarc_writes_them() -> None:
    data = (DATA / "pymarc" / "marc8.dat").read_bytes()
    ours_err, theirs_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(ours_err):
        gilkit_marc.extract(data, ["245$a"])
    with contextlib.redirect_stderr(theirs_err):
        list(pymarc.MARCReader(data))
    assert ours_err.getvalue() == theirs_err.getvalue()


@pytest.mark.parametrize(
    "fields", [[], ["24"], ["245$"], ["2451"], ["245 a"], ["$a"], ["245$a b"]], ids=lambda f: repr(f)
)
def test_bad_field_specs_are_clear_errors(fields: list[str]) -> None:
    with pytest.raises(ValueError, match="field spec|no fields"):
        gilkit_marc.extract(DATA / "pymarc" / "test.dat", fields)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="threads"):
        gilkit_marc.extract(DATA / "pymarc" / "test.dat", ["001"], threads=0)
    with pytest.raises(TypeError, match="field spec"):
        gilkit_marc.extract(DATA / "pymarc" / "test.dat", [1, 2])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError):
        gilkit_marc.extract(DATA / "no such file.mrc", ["001"])


def test_extract_releases_the_gil() -> None:
    data = (DATA / "mrrc" / "10k_records.mrc").read_bytes() * 8
    table = assert_releases_gil(lambda: gilkit_marc.extract(data, ["001", "245$a"], threads=1))
    assert table.num_rows == 80_000


# Records whose Python work pymarc does while reading: MARC-8 messages written to stderr
# (cyrillic.marc, by the Rust decoder), a logged warning (bad_indicator.dat) and a
# BadSubfieldCodeWarning (utf8_invalid.mrc), both from the Python decoder.
def _first_record(name: str) -> bytes:
    data = (DATA / name).read_bytes()
    return data[: int(data[:5])]


SPECIAL = b"".join(
    _first_record(name)
    for name in ["marc-perl/cyrillic.marc", "pymarc/bad_indicator.dat", "pymarc/utf8_invalid.mrc"]
)


def python_work(read: Any, data: bytes, ticker: _Ticker | None = None) -> list[tuple[str, str, int]]:
    """What `read(data)` writes to stderr and warns, in order: (kind, text, ticker count then)."""
    seen: list[tuple[str, str, int]] = []

    def count() -> int:
        return -1 if ticker is None else ticker.count

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            seen.append(("stderr", text, count()))
            return len(text)

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((category.__name__, str(message), count()))

    class Log(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.levelname, record.getMessage(), count()))

    handler = Log()
    loggers = [logging.getLogger(name) for name in ["pymarc", "gilkit_marc"]]
    for logger in loggers:
        logger.addHandler(handler)
        # Not to pytest's handlers too: its log file handler writes, which releases the GIL.
        logger.propagate = False
    try:
        with contextlib.redirect_stderr(Recorder()), warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            read(data)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.propagate = True
    return seen


@pytest.fixture(scope="module")
def special_records_in_bulk() -> tuple[bytes, list[tuple[str, str, int]], list[Any]]:
    """60,000 records with the special ones at the start, middle and end; what pymarc says while
    reading them (messages, log lines, warnings, in order); and pymarc's 245$a column of them.
    Computed once for every source kind below: pymarc takes seconds over 60,000 records."""
    bulk = (DATA / "mrrc" / "10k_records.mrc").read_bytes() * 3
    data = SPECIAL + bulk + SPECIAL + bulk + SPECIAL
    expected = python_work(lambda d: list(pymarc.MARCReader(d)), data)
    return data, expected, pymarc_columns(data, ["245$a"])["245$a"]


@pytest.mark.parametrize("kind", ["path", "bytes", "open file", "file object"])
def test_python_work_is_done_once_at_the_end_in_pymarcs_order(
    tmp_path: Path, kind: str, special_records_in_bulk: tuple[bytes, list[tuple[str, str, int]], list[Any]]
) -> None:
    """The GIL is taken once, at the end: every message, log line and warning (pymarc's, in
    pymarc's order, from records at the start, middle and end of 60,000) comes in one attach,
    after the parse. Proof: with the switch interval at 100 s a ticker thread runs only while
    the GIL is released; it ran before the first of them (during the parse) and never between
    the first and the last (before this change, messages were written after each part)."""
    data, expected, titles = special_records_in_bulk
    path = tmp_path / "records.mrc"
    path.write_bytes(data)
    source = {
        "path": lambda: path,
        "bytes": lambda: data,
        "open file": lambda: open(path, "rb"),  # noqa: SIM115 - closed below
        "file object": lambda: io.BytesIO(data),
    }[kind]
    assert {kind for kind, _, _ in expected} == {"stderr", "WARNING", "BadSubfieldCodeWarning"}
    # Once before, so that what Python does only the first time (an import reads files, which
    # releases the GIL) is done.
    python_work(lambda d: gilkit_marc.extract(d, ["001", "245$a"]), SPECIAL)
    old = sys.getswitchinterval()
    sys.setswitchinterval(100)
    # A collection could finalize unrelated objects (a file's close releases the GIL).
    gc.collect()
    gc.disable()
    try:
        with _Ticker() as ticker:
            opened = source()
            before = ticker.count
            result: list[Any] = []
            seen = python_work(lambda _: result.append(gilkit_marc.extract(opened, ["001", "245$a"])), data, ticker)
    finally:
        gc.enable()
        sys.setswitchinterval(old)
        if hasattr(opened, "close"):
            opened.close()
    assert [(k, t) for k, t, _ in seen] == [(k, t) for k, t, _ in expected]
    counts = [c for _, _, c in seen]
    assert counts[0] > before, "the GIL was not released while parsing"
    assert counts == [counts[0]] * len(counts), "the GIL was released between two pieces of Python work"
    assert result[0].to_pydict()["245$a"] == titles


def test_an_open_file_is_left_after_the_last_record(tmp_path: Path) -> None:
    data = (DATA / "pymarc" / "test.dat").read_bytes()
    path = tmp_path / "records.mrc"
    path.write_bytes(b"junk" + data)
    with open(path, "rb") as fh:
        fh.read(4)
        assert gilkit_marc.extract(fh, ["001"]).num_rows == 10
        assert fh.tell() == len(data) + 4
        assert fh.read() == b""
