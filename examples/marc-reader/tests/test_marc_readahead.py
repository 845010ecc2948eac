"""Parsing ahead (``readahead=True``, the default): same records, errors and positions as parsing
on the calling thread, the caller never waiting for a part no worker has started, and no worker
left running when a reader is dropped or closed.

The worker takes part only in batches of more than 64 records, so the inputs here are the sample
files repeated until they are that long. A test hook makes workers idle (claim nothing) or lagging
(hold the one part they claim until the caller has claimed every other), so what the caller does
when the worker is slow is checked without relying on timing.
"""

from __future__ import annotations

import gc
import os
import random
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pymarc
import pytest
from marc_support import DATA, MARC_FILES, SMALL_FILES, Chunky, outcome

import gilkit_marc
from gilkit_marc import _native

BIG = DATA / "mrrc" / "10k_records.mrc"
SetMode = Callable[[Literal["normal", "idle", "lagging"]], None]
# Parts of 64 records after the first 64 of each batch of 1024, for `BIG`'s 10,000 records:
# 9 batches of 15 parts, and 784 records (12 parts).
BIG_PARTS = 9 * 15 + 12


@pytest.fixture(autouse=True)
def many_cores() -> Iterator[None]:
    """Read-ahead starts a worker only if a core is spare: let every test here have one, on any
    machine (the policy itself is tested with a set number of cores)."""
    _native._set_parse_cores(64)
    yield
    _native._set_parse_cores(0)


@pytest.fixture
def worker_mode() -> Iterator[SetMode]:
    """Sets how parse workers behave for the rest of the test ("normal" again afterwards)."""
    yield _native._set_parse_worker_mode
    _native._set_parse_worker_mode("normal")


def repeated(path: Path, records: int = 300) -> bytes:
    """`path`'s bytes repeated to hold at least `records` records (fewer if reading stops early)."""
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = max(1, sum(1 for _ in gilkit_marc.MARCReader(data, hide_utf8_warnings=True, readahead=False)))
    return data * (records // n + 1)


@pytest.mark.parametrize("path", MARC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_same_outcome_with_and_without_readahead(path: Path) -> None:
    data = repeated(path)
    off = outcome(gilkit_marc.MARCReader, data, readahead=False)
    on = outcome(gilkit_marc.MARCReader, data, readahead=True)
    assert on == off
    reader = gilkit_marc.MARCReader(data)
    assert reader.readahead
    with warnings.catch_warnings():
        # Files with broken subfield codes warn as pymarc does; `outcome` compared the warnings.
        warnings.simplefilter("ignore")
        assert sum(1 for _ in reader) == len(on["items"])


def test_readahead_matches_pymarc_and_uses_the_worker() -> None:
    data = repeated(DATA / "pymarc" / "test.dat", 500) + repeated(DATA / "marc-perl" / "cyrillic.marc", 500)
    expected = outcome(pymarc.MARCReader, data)
    assert outcome(gilkit_marc.MARCReader, data) == expected
    reader = gilkit_marc.MARCReader(data)
    for _ in reader:
        pass
    assert reader.stats()["parse_jobs"] >= 1
    off = gilkit_marc.MARCReader(data, readahead=False)
    for _ in off:
        pass
    assert off.stats()["parse_jobs"] == 0


def test_corrupt_streams_give_the_same_positions() -> None:
    """Unreadable records (``None`` with ``current_exception`` and ``current_chunk``) and fatal
    framing errors land at the same positions with the worker, also through short reads."""
    rng = random.Random(11)
    originals = [p.read_bytes() for p in SMALL_FILES if p.stat().st_size > 0]

    for _ in range(30):
        data = bytearray(b"".join(rng.choices(originals, k=60)))
        for _ in range(rng.randint(0, 4)):
            i = rng.randrange(len(data))
            data[i : i + rng.randint(0, 3)] = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
        expected = outcome(gilkit_marc.MARCReader, bytes(data), hide_utf8_warnings=True, readahead=False)
        assert outcome(gilkit_marc.MARCReader, bytes(data), hide_utf8_warnings=True) == expected
        assert outcome(gilkit_marc.MARCReader, Chunky(bytes(data), rng, 5000), hide_utf8_warnings=True) == expected


def test_options_changed_mid_batch_apply_to_the_next_record() -> None:
    data = repeated(DATA / "pymarc" / "marc8.dat", 200) + repeated(DATA / "pymarc" / "test.dat", 200)

    def read(module: object, **kw: object) -> list[object]:
        reader = module.MARCReader(data, hide_utf8_warnings=True, **kw)  # type: ignore[attr-defined]
        out = []
        for i, record in enumerate(reader):
            out.append(record.as_dict() if record is not None else type(reader.current_exception).__name__)
            if i % 37 == 0:
                reader.to_unicode = not reader.to_unicode
            if i % 53 == 0:
                reader.utf8_handling = "replace" if reader.utf8_handling == "strict" else "strict"
        return out

    expected = read(pymarc)
    assert read(gilkit_marc, readahead=False) == expected
    assert read(gilkit_marc) == expected


def test_read_all_same_with_and_without_readahead() -> None:
    expected = [r.as_marc() for r in pymarc.MARCReader(BIG.read_bytes())]
    for kw in ({}, {"readahead": False}, {"threads": 2}):
        assert [r.as_marc() for r in gilkit_marc.read_all(BIG, **kw)] == expected  # type: ignore[union-attr]
    bad = repeated(DATA / "mrrc" / "e301_invalid_utf8_in_subfield.bin", 200)
    permissive = [type(r).__name__ for r in gilkit_marc.read_all(bad, permissive=True, readahead=False)]
    assert [type(r).__name__ for r in gilkit_marc.read_all(bad, permissive=True)] == permissive
    with pytest.raises(Exception) as off:
        gilkit_marc.read_all(bad, readahead=False)
    with pytest.raises(type(off.value)):
        gilkit_marc.read_all(bad)
    assert _native._parse_jobs_running() == 0


def test_reader_dropped_or_closed_mid_batch_leaves_no_worker() -> None:
    for end in ("drop", "close"):
        reader = gilkit_marc.MARCReader(BIG)
        for _ in range(70):
            next(reader)
        assert reader.stats()["parse_jobs"] == 1
        if end == "close":
            reader.close()
        del reader
        gc.collect()
        assert _native._parse_jobs_running() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(("mode", "before"), [("normal", 70), ("lagging", 10)])
def test_fork_mid_batch_child_reads_the_rest(
    worker_mode: SetMode, mode: Literal["normal", "lagging"], before: int
) -> None:
    """The child has no worker: it parses the rest itself, including a part the worker had claimed
    (a lagging worker holds one from the start of each batch)."""
    # Bytes, not a path: a forked child shares the parent's file offsets.
    data = BIG.read_bytes()
    expected = sum(1 for _ in gilkit_marc.MARCReader(data, readahead=False))
    worker_mode(mode)
    reader = gilkit_marc.MARCReader(data)
    first = sum(1 for _ in zip(range(before), reader))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write_end, str(first + sum(1 for _ in reader)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as fh:
        assert int(fh.read()) == expected
    assert os.waitstatus_to_exitcode(status) == 0
    assert first + sum(1 for _ in reader) == expected


def read_counting(data: bytes) -> tuple[int, dict[str, float]]:
    reader = gilkit_marc.MARCReader(data)
    return sum(1 for _ in reader), reader.stats()


def read_big_with_workers(worker_mode: SetMode, mode: Literal["idle", "lagging"]) -> dict[str, float]:
    """Reads `BIG` with workers in `mode`: the same outcome as without read-ahead; the stats."""
    data = BIG.read_bytes()
    expected = outcome(gilkit_marc.MARCReader, data, readahead=False)
    worker_mode(mode)
    assert outcome(gilkit_marc.MARCReader, data) == expected
    n, stats = read_counting(data)
    assert n == 10_000
    return stats


def test_every_part_is_parsed_once_by_someone() -> None:
    n, stats = read_counting(BIG.read_bytes())
    assert n == 10_000
    assert stats["parse_jobs"] == 10
    assert stats["parts_parsed_ahead"] + stats["parts_parsed_inline"] == BIG_PARTS


def test_caller_parses_what_no_worker_started(worker_mode: SetMode) -> None:
    """With workers that never claim a part, the caller parses every part itself and never waits."""
    stats = read_big_with_workers(worker_mode, "idle")
    assert stats["parse_jobs"] == 10
    assert stats["parts_parsed_ahead"] == 0
    assert stats["parts_parsed_inline"] == BIG_PARTS
    assert stats["parse_waits"] == 0
    assert stats["parse_wait_s"] == 0.0
    assert _native._parse_jobs_running() == 0


def test_caller_waits_only_for_the_part_the_worker_holds(worker_mode: SetMode) -> None:
    """A worker that sits on the part it claimed: the caller parses every other part meanwhile and
    waits at most once a batch, for that part alone."""
    stats = read_big_with_workers(worker_mode, "lagging")
    data = BIG.read_bytes()
    assert stats["parts_parsed_ahead"] <= stats["parse_jobs"] == 10
    assert stats["parts_parsed_inline"] == BIG_PARTS - stats["parts_parsed_ahead"]
    assert stats["parse_waits"] <= stats["parts_parsed_ahead"]
    # Also with options changed mid-batch (the worker is stopped and another started).
    def toggling(reader: gilkit_marc.MARCReader) -> list[bytes]:
        items = []
        for i, record in enumerate(reader):
            items.append(record.as_marc())  # type: ignore[union-attr]
            if i % 500 == 100:
                reader.force_utf8 = not reader.force_utf8
        return items

    assert toggling(gilkit_marc.MARCReader(data)) == toggling(gilkit_marc.MARCReader(data, readahead=False))
    expected_marc = [r.as_marc() for r in pymarc.MARCReader(data)]  # type: ignore[union-attr]
    for permissive in (False, True):
        assert [r.as_marc() for r in gilkit_marc.read_all(data, permissive=permissive)] == expected_marc  # type: ignore[union-attr]
    assert _native._parse_jobs_running() == 0


@pytest.mark.parametrize("mode", ["idle", "lagging"])
def test_slow_workers_are_stopped_by_drop_and_close(worker_mode: SetMode, mode: Literal["idle", "lagging"]) -> None:
    worker_mode(mode)
    for end in ("drop", "close"):
        reader = gilkit_marc.MARCReader(BIG)
        for _ in range(10):
            next(reader)
        if end == "close":
            reader.close()
        del reader
        gc.collect()
        assert _native._parse_jobs_running() == 0


def test_unknown_worker_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'normal', 'idle' or 'lagging'"):
        _native._set_parse_worker_mode("fast")  # type: ignore[arg-type]


def test_no_worker_without_a_spare_core() -> None:
    """Two cores: a reader reading alone gets a worker; while two read, a new batch gets none and
    is read exactly as without read-ahead (its tail parsed in the batch's GIL release)."""
    _native._set_parse_cores(2)
    data = BIG.read_bytes()
    alone = gilkit_marc.MARCReader(data)
    assert sum(1 for _ in alone) == 10_000
    assert (alone.stats()["parse_jobs"], alone.stats()["parse_jobs_skipped"]) == (10, 0)

    first, second = gilkit_marc.MARCReader(data), gilkit_marc.MARCReader(data)
    next(first)  # `first` is reading (and its worker may still be running)
    assert [r.as_marc() for r in second] == [r.as_marc() for r in gilkit_marc.MARCReader(data, readahead=False)]  # type: ignore[union-attr]
    stats = second.stats()
    assert (stats["parse_jobs"], stats["parse_jobs_skipped"]) == (0, 10)
    assert stats["parts_parsed_inline"] == stats["parts_parsed_ahead"] == 0
    assert stats["gil_releases"] == 10
    # `first` reads alone again once `second` has ended.
    assert sum(1 for _ in first) == 9_999
    assert first.stats()["parse_jobs"] + first.stats()["parse_jobs_skipped"] == 10
    assert first.stats()["parse_jobs"] >= 9
    del first, second
    gc.collect()
    assert _native._parse_jobs_running() == 0
