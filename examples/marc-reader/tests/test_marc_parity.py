"""Parity with pymarc 5.4 on every sample file and every flag combination pymarc accepts.

For each file and each combination of ``to_unicode``, ``force_utf8``, ``utf8_handling`` and
``file_encoding``, reading with ``gilkit_marc.MARCReader`` must give, position by position, what
``pymarc.MARCReader`` gives: the same ``as_dict()`` and ``as_marc()`` bytes for records; ``None``
with the same exception type, message and ``current_chunk`` for unreadable ones; and the same
stderr output (MARC-8 messages) and warnings.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pymarc
import pytest
from marc_support import DATA, MARC_FILES, SMALL_FILES, Chunky, outcome

import gilkit_marc

COMBOS = [
    dict(to_unicode=t, force_utf8=f, utf8_handling=h, file_encoding=e)
    for t, f, h, e in itertools.product(
        [True, False], [False, True], ["strict", "replace", "ignore", "backslashreplace"],
        ["iso8859-1", "utf-8", "latin-1", "cp866"],
    )
]  # fmt: skip


def assert_same(path_or_data: object, **options: object) -> None:
    def source() -> object:
        return open(path_or_data, "rb") if isinstance(path_or_data, Path) else path_or_data

    expected = outcome(pymarc.MARCReader, source(), **options)
    got = outcome(gilkit_marc.MARCReader, source(), **options)
    assert got["items"] == expected["items"]
    assert got["stderr"] == expected["stderr"]
    assert [w for _, w in got["warnings"]] == [w for _, w in expected["warnings"]]


@pytest.mark.parametrize("path", MARC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_default_flags(path: Path) -> None:
    assert_same(path)


@pytest.mark.parametrize("path", SMALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_flag_combination(path: Path) -> None:
    for options in COMBOS:
        assert_same(path, **options)
        assert_same(path, hide_utf8_warnings=True, **options)


@pytest.mark.parametrize("path", SMALL_FILES[:20], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sources_agree(path: Path) -> None:
    """A path, bytes, bytearray, memoryview and a file object give the same records."""
    data = path.read_bytes()
    expected = outcome(gilkit_marc.MARCReader, open(path, "rb"))
    for source in (str(path), path, data, bytearray(data), memoryview(data)):
        assert outcome(gilkit_marc.MARCReader, source) == expected


def test_random_corruption_never_crashes_and_matches_pymarc() -> None:
    """Random byte flips, cuts and splices of real records: same results as pymarc, no crash."""
    rng = random.Random(5)
    originals = [p.read_bytes() for p in SMALL_FILES if p.stat().st_size > 0]
    for _ in range(400):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            action = rng.random()
            i = rng.randrange(len(data)) if data else 0
            if action < 0.6 and data:
                data[i] = rng.choice([0x1D, 0x1E, 0x1F, 0x1B, 0x20, 0x2D, 0x30, 0x39, 0xC3, 0xE1, 0xFF, rng.randrange(256)])
            elif action < 0.8:
                del data[i : i + rng.randint(1, 40)]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        for options in (dict(), dict(to_unicode=False), dict(force_utf8=True, utf8_handling="replace")):
            assert_same(bytes(data), hide_utf8_warnings=True, **options)


@pytest.mark.filterwarnings("ignore:The subfield contained a non-ASCII subfield code")
@pytest.mark.parametrize("path", SMALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_round_trip_matches_pymarc(path: Path) -> None:
    """read, as_marc, read again, as_marc: the bytes are pymarc's at each step."""

    def round_trip(module: object) -> list[object]:
        out: list[object] = []
        for record in module.MARCReader(open(path, "rb"), hide_utf8_warnings=True):  # type: ignore[attr-defined]
            if record is None:
                continue
            try:
                once = record.as_marc()
                again = module.Record(once).as_marc()  # type: ignore[attr-defined]
                out.append((once, again))
            except Exception as e:  # noqa: BLE001
                out.append(type(e).__name__)
        return out

    assert round_trip(gilkit_marc) == round_trip(pymarc)


@pytest.mark.filterwarnings("ignore:The subfield contained a non-ASCII subfield code")
@pytest.mark.parametrize("path", SMALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_strict_mode_raises_pymarcs_exception(path: Path) -> None:
    """``read_all`` (strict) raises where pymarc's ``Record(chunk)`` or framing raises."""
    expected = outcome(pymarc.MARCReader, open(path, "rb"), hide_utf8_warnings=True)["items"]
    first_error = next((item for item in expected if item[0] == "none"), None)
    if first_error is None:
        records = gilkit_marc.read_all(path, hide_utf8_warnings=True)
        # `outcome` serialises before `as_dict` (as_marc sets leader position 9): do the same.
        assert [(r.as_marc(), r.as_dict())[1] for r in records] == [item[1] for item in expected]
        return
    with pytest.raises(Exception) as info:
        gilkit_marc.read_all(path, hide_utf8_warnings=True)
    assert type(info.value).__name__ == first_error[1]
    assert str(info.value) == first_error[2]
    permissive = gilkit_marc.read_all(path, permissive=True, hide_utf8_warnings=True)
    assert [r is None for r in permissive] == [item[0] == "none" for item in expected]


def test_exceptions_are_gilkit_classes_named_as_pymarc() -> None:
    reader = gilkit_marc.MARCReader(b"00010abcdX")
    assert next(reader) is None
    assert isinstance(reader.current_exception, gilkit_marc.exceptions.EndOfRecordNotFound)
    assert isinstance(reader.current_exception, gilkit_marc.exceptions.FatalReaderError)
    assert reader.current_chunk == b"00010abcdX"
    with pytest.raises(StopIteration):
        next(reader)


def test_options_changed_mid_iteration_apply_to_the_next_record() -> None:
    """pymarc reads the reader's attributes for each record; so does gilkit_marc."""
    data = (DATA / "pymarc" / "marc8.dat").read_bytes() + (DATA / "pymarc" / "test.dat").read_bytes()

    def read(module: object) -> list[object]:
        reader = module.MARCReader(data, hide_utf8_warnings=True)  # type: ignore[attr-defined]
        out = []
        for i, record in enumerate(reader):
            out.append(record.as_dict() if record is not None else type(reader.current_exception).__name__)
            reader.to_unicode = i % 2 == 0
            reader.force_utf8 = i % 3 == 0
            reader.utf8_handling = "replace" if i % 4 else "strict"
        return out

    assert read(gilkit_marc) == read(pymarc)


def test_chunk_edges_do_not_change_results() -> None:
    """Corrupted streams read through a file object returning random short reads give what the
    same bytes give in one piece (pymarc's framing must not depend on where reads end)."""
    rng = random.Random(7)
    originals = [p.read_bytes() for p in SMALL_FILES if p.stat().st_size > 0]

    for _ in range(150):
        data = bytearray(b"".join(rng.sample(originals, 3)))
        for _ in range(rng.randint(0, 3)):
            i = rng.randrange(len(data))
            data[i : i + rng.randint(0, 3)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
        expected = outcome(gilkit_marc.MARCReader, bytes(data), hide_utf8_warnings=True)
        assert outcome(gilkit_marc.MARCReader, Chunky(bytes(data), rng, 300), hide_utf8_warnings=True) == expected
