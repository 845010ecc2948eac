"""`extract`: columns computed in Rust equal pymarc's values, for every sample file and flag set."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymarc
import pytest
from gil_probe import assert_releases_gil
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
