"""Writers, MARCXML/JSON, the record API, threads and the GIL, each checked against pymarc."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pymarc
import pytest
from marc_support import DATA
from gil_probe import assert_releases_gil
from stats_schema import assert_schema

import gilkit_marc

SAMPLES = [DATA / "pymarc" / "marc.dat", DATA / "pymarc" / "test.dat", DATA / "marc-perl" / "cyrillic.marc"]


def both(path: Path) -> tuple[list[object], list[object]]:
    ours = [r for r in gilkit_marc.MARCReader(path.read_bytes(), hide_utf8_warnings=True) if r is not None]
    theirs = [r for r in pymarc.MARCReader(path.read_bytes(), hide_utf8_warnings=True) if r is not None]
    return ours, theirs


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_writers_match_pymarc(path: Path) -> None:
    ours, theirs = both(path)
    for module, records, outputs in ((gilkit_marc, ours, []), (pymarc, theirs, [])):
        binary, xml, text, js = io.BytesIO(), io.BytesIO(), io.StringIO(), io.StringIO()
        writers = [module.MARCWriter(binary), module.XMLWriter(xml), module.TextWriter(text), module.JSONWriter(js)]
        for record in records:
            for writer in writers:
                writer.write(record)
        for writer in writers:
            writer.close(close_fh=False)
        outputs.extend([binary.getvalue(), xml.getvalue(), text.getvalue(), js.getvalue()])
        outputs.extend(module.record_to_xml(r, namespace=True) for r in records)
        if module is gilkit_marc:
            mine = outputs
        else:
            assert mine == outputs


def test_marcwriter_rejects_non_records() -> None:
    with pytest.raises(gilkit_marc.exceptions.WriteNeedsRecord):
        gilkit_marc.MARCWriter(io.BytesIO()).write("not a record")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["batch.xml", "utf8.xml"])
def test_parse_xml_to_array_matches_pymarc(name: str) -> None:
    path = DATA / "pymarc" / name
    ours = [r.as_dict() for r in gilkit_marc.parse_xml_to_array(str(path))]
    assert ours == [r.as_dict() for r in pymarc.parse_xml_to_array(str(path))]
    assert ours


@pytest.mark.parametrize("name", ["batch.json", "one.json", "test.json"])
def test_json_reader_matches_pymarc(name: str) -> None:
    text = (DATA / "pymarc" / name).read_text()
    ours = [r.as_marc() for r in gilkit_marc.JSONReader(text)]
    assert ours == [r.as_marc() for r in pymarc.JSONReader(text)]
    assert ours


def test_record_api_matches_pymarc() -> None:
    ours, theirs = both(DATA / "pymarc" / "marc.dat")
    props = ["title", "author", "isbn", "issn", "issnl", "publisher", "pubyear", "sudoc", "uniformtitle", "issn_title"]
    lists = ["subjects", "notes", "series", "physicaldescription", "location", "addedentries"]
    for a, b in zip(ours, theirs, strict=True):
        for p in props:
            assert getattr(a, p) == getattr(b, p), p
        for p in lists:
            assert [str(f) for f in getattr(a, p)] == [str(f) for f in getattr(b, p)], p
        assert str(a) == str(b)
        assert ("245" in a) == ("245" in b)
        assert [f.value() for f in a.get_fields("650", "245")] == [f.value() for f in b.get_fields("650", "245")]
        assert [f.format_field() for f in a] == [f.format_field() for f in b]
        assert a["245"].get_subfields("a", "c") == b["245"].get_subfields("a", "c")


def test_field_editing_matches_pymarc() -> None:
    for module in (gilkit_marc, pymarc):
        record = module.Record()
        record.add_field(module.Field("245", module.Indicators("1", "0"), [module.Subfield("a", "T")]))
        record.add_ordered_field(module.Field("100", data=None, subfields=[module.Subfield("a", "A")]))
        record.add_ordered_field(module.Field("001", data="id1"))
        f = record["245"]
        f.add_subfield("b", "sub", 0)
        f["a"] = "Title"
        f.indicator1 = "0"
        assert f.delete_subfield("zz") is None
        record.remove_fields("100")
        result = (record.as_marc(), str(record), record.as_json(sort_keys=True))
        if module is gilkit_marc:
            mine = result
        else:
            assert mine == result


def test_read_all_threads_give_the_same_records() -> None:
    path = DATA / "mrrc" / "1k_records.mrc"
    one = [r.as_marc() for r in gilkit_marc.read_all(path)]
    assert [r.as_marc() for r in gilkit_marc.read_all(path, threads=3)] == one
    assert [r.as_marc() for r in gilkit_marc.parse(path.read_bytes())] == one
    assert len(one) == 1000


def test_parsing_releases_the_gil(tmp_path: Path) -> None:
    data = (DATA / "mrrc" / "10k_records.mrc").read_bytes() * 8
    big = tmp_path / "big.mrc"
    big.write_bytes(data)
    # A path and a file object over a regular file are read and parsed without the GIL.
    assert_releases_gil(lambda: sum(1 for _ in gilkit_marc.MARCReader(big)))
    with open(big, "rb") as fh:
        assert_releases_gil(lambda: sum(1 for _ in gilkit_marc.MARCReader(fh)))
    # read_all parses everything in one release; the build phase holds the GIL but the ticker
    # only needs the release to run at all.
    assert_releases_gil(lambda: gilkit_marc.read_all(data))
    # The streaming reader releases once per batch.
    assert_releases_gil(lambda: sum(1 for _ in gilkit_marc.MARCReader(data)))


def test_one_reader_per_thread() -> None:
    paths = [DATA / "mrrc" / "1k_records.mrc", DATA / "pymarc" / "marc.dat", DATA / "mrrc" / "realistic.mrc"]
    expected = {p: [r.as_marc() for r in pymarc.MARCReader(open(p, "rb"))] for p in paths}
    results: dict[Path, list[bytes]] = {}

    def work(p: Path) -> None:
        with open(p, "rb") as fh:
            results[p] = [r.as_marc() for r in gilkit_marc.MARCReader(fh)]

    threads = [threading.Thread(target=work, args=(p,)) for p in paths * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_text_mode_file_is_a_clear_type_error(tmp_path: Path) -> None:
    path = tmp_path / "x.mrc"
    path.write_bytes((DATA / "pymarc" / "one.dat").read_bytes())
    with open(path) as fh, pytest.raises(TypeError, match="binary"):
        next(gilkit_marc.MARCReader(fh))


def test_file_object_exception_propagates() -> None:
    class Broken:
        def read(self, n: int = -1) -> bytes:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        next(gilkit_marc.MARCReader(Broken()))


def test_marc8_matches_pymarc_on_raw_text() -> None:
    raw = (DATA / "marc-perl" / "farsi.marc").read_bytes()
    assert gilkit_marc.marc8_to_unicode(raw, True) == pymarc.marc8_to_unicode(raw, True)
    with pytest.raises(UnicodeDecodeError):
        gilkit_marc.marc8_to_unicode(b"abc\x1b")
    with pytest.raises(UnicodeDecodeError):
        pymarc.marc8_to_unicode(b"abc\x1b")


def test_stub_matches_the_extension() -> None:
    """mypy's stubtest: `_native.pyi` describes exactly what the extension module exports."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "gilkit_marc._native"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_pymarc_name_exists() -> None:
    import types

    helpers = {"BinaryIO", "BufferedReader", "BytesIO", "Callable", "ContentHandler", "IO", "IOBase", "Iterator"}
    helpers |= {"NamedTuple", "Pattern", "Sequence", "StringIO", "Union", "defaultdict", "feature_namespaces"}
    helpers |= {"make_parser", "logger", "isbn_regex"}  # pymarc's own imports and module internals
    public = {
        n for n in dir(pymarc) if not n.startswith("_") and not isinstance(getattr(pymarc, n), types.ModuleType)
    }
    assert sorted(public - helpers - set(dir(gilkit_marc))) == []


def test_marcmaker_and_json_round_trips_match_pymarc() -> None:
    ours, theirs = both(DATA / "pymarc" / "test.dat")
    text = "\n".join(str(r) for r in theirs)
    assert [str(r) for r in gilkit_marc.MARCMakerReader(text)] == [str(r) for r in pymarc.MARCMakerReader(text)]
    js = (DATA / "pymarc" / "batch.json").read_text()
    assert [r.as_dict() for r in gilkit_marc.parse_json_to_array(js)] == [
        r.as_dict() for r in pymarc.parse_json_to_array(js)
    ]
    seen: list[str | None] = []
    gilkit_marc.map_records(lambda r: seen.append(r.title), open(DATA / "pymarc" / "test.dat", "rb"))
    assert seen == [r.title for r in theirs]


def test_marc8_record_mapping_matches_pymarc() -> None:
    path = DATA / "pymarc" / "marc8.dat"
    ours = [gilkit_marc.map_marc8_record(r).as_dict() for r in gilkit_marc.MARCReader(path.read_bytes(), to_unicode=False)]
    theirs = [pymarc.map_marc8_record(r).as_dict() for r in pymarc.MARCReader(path.read_bytes(), to_unicode=False)]
    assert ours == theirs


def test_marcwriter_writes_each_record_at_once(tmp_path: Path) -> None:
    """No record is held back: a file closed without `writer.close()` has them all (as pymarc)."""
    records = list(gilkit_marc.MARCReader(DATA / "pymarc" / "test.dat"))
    path = tmp_path / "out.mrc"
    with open(path, "wb") as fh:
        writer = gilkit_marc.MARCWriter(fh)
        for record in records:
            writer.write(record)
    assert path.read_bytes() == b"".join(r.as_marc() for r in records)


def test_reader_stats_count_batches_not_records() -> None:
    """One GIL release and one Python read call per batch, not per record."""
    with open(DATA / "mrrc" / "10k_records.mrc", "rb") as fh:
        reader = gilkit_marc.MARCReader(io.BufferedReader(io.BytesIO(fh.read())))
        assert sum(1 for _ in reader) == 10_000
    stats = reader.stats()
    assert stats["records"] == 10_000
    assert 0 < stats["batches"] <= 20
    assert stats["gil_releases"] <= 2 * stats["batches"] + 2
    assert stats["python_calls"] <= 10
    assert stats["released_s"] > 0


def test_reader_stats_keys_and_types() -> None:
    with open(DATA / "pymarc" / "marc.dat", "rb") as fh:
        reader = gilkit_marc.MARCReader(fh)
        next(iter(reader))
        stats = reader.stats()
    assert_schema(
        stats,
        {
            "python_calls": int,
            "gil_releases": int,
            "batches": int,
            "records": int,
            "bytes_read": int,
            "released_s": float,
            "parse_jobs": int,
            "parse_jobs_skipped": int,
            "parts_parsed_ahead": int,
            "parts_parsed_inline": int,
            "parse_waits": int,
            "parse_wait_s": float,
        },
    )


def test_gzip_and_user_file_objects(tmp_path: Path) -> None:
    import gzip

    data = (DATA / "pymarc" / "marc.dat").read_bytes()
    expected = [r.as_marc() for r in pymarc.MARCReader(data)]
    path = tmp_path / "marc.dat.gz"
    path.write_bytes(gzip.compress(data))
    with gzip.open(path, "rb") as fh:
        assert [r.as_marc() for r in gilkit_marc.MARCReader(fh)] == expected

    class Trickle:
        """A file object with only `read`, returning at most 7 bytes per call."""

        def __init__(self, payload: bytes) -> None:
            self.payload = payload

        def read(self, n: int = -1) -> bytes:
            chunk, self.payload = self.payload[: min(n, 7)], self.payload[min(n, 7) :]
            return chunk

    assert [r.as_marc() for r in gilkit_marc.MARCReader(Trickle(data))] == expected


def test_marc8_converter_keeps_its_sets_like_pymarcs() -> None:
    ours, theirs = gilkit_marc.MARC8ToUnicode(quiet=True), pymarc.MARC8ToUnicode(quiet=True)
    for data in (b"\x1b(NAB", b"AB", b"\x1b)Q\xc0", b"\xc0", b"\x1b(BAB", b"\x1b$1\x21\x30\x21", b"\x21\x30\x21"):
        assert ours.translate(data) == theirs.translate(data)
        assert (ours.g0, ours.g1) == (theirs.g0, theirs.g1)
    raw = [r for r in gilkit_marc.MARCReader((DATA / "marc-perl" / "cyrillic.marc").read_bytes(), to_unicode=False)]
    raw_p = [r for r in pymarc.MARCReader((DATA / "marc-perl" / "cyrillic.marc").read_bytes(), to_unicode=False)]
    assert [gilkit_marc.record_to_xml(r, quiet=True) for r in raw] == [pymarc.record_to_xml(r, quiet=True) for r in raw_p]


def test_decode_marc_with_a_different_force_utf8_matches_pymarc() -> None:
    data = (DATA / "pymarc" / "marc8.dat").read_bytes()
    for module in (gilkit_marc, pymarc):
        record = module.Record(force_utf8=False)
        record.fields = []
        try:
            record.decode_marc(data, force_utf8=True, utf8_handling="replace")
            result: object = record.as_dict()
        except Exception as e:  # noqa: BLE001
            result = type(e).__name__
        if module is gilkit_marc:
            mine = result
        else:
            assert mine == result


def test_subfields_from_the_reader_are_not_tracked_by_the_cycle_collector() -> None:
    """They hold only `str` (or `bytes`), so they are untracked as CPython untracks such tuples;
    this keeps collections cheap when many records are kept (`read_all`, `list(reader)`)."""
    import gc

    for to_unicode in (True, False):
        record = next(iter(gilkit_marc.MARCReader(DATA / "mrrc" / "realistic.mrc", to_unicode=to_unicode)))
        subfields = [s for f in record.fields for s in f.subfields]
        assert subfields and not any(gc.is_tracked(s) for s in subfields)
        assert all(gc.is_tracked(f) for f in record.fields)
    assert gc.is_tracked(gilkit_marc.Subfield("a", "b"))  # built in Python: as CPython does it
