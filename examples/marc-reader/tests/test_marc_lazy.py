"""``lazy_fields=True``: records whose fields are built when first used behave exactly like
records built up front (pymarc's), also when fields are looked up, mutated, copied or pickled."""

from __future__ import annotations

import copy
import io
import pickle
from pathlib import Path

import pytest
from marc_support import DATA, MARC_FILES, outcome

import gilkit_marc
from gilkit_marc import Field, LazyRecord, Record, Subfield

SAMPLE = DATA / "mrrc" / "realistic.mrc"


def lazy_records(path: Path = SAMPLE, **kw: object) -> list[LazyRecord]:
    return list(gilkit_marc.MARCReader(path.read_bytes(), lazy_fields=True, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", MARC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_same_outcome_as_eager(path: Path) -> None:
    data = path.read_bytes()
    assert outcome(gilkit_marc.MARCReader, data, lazy_fields=True) == outcome(gilkit_marc.MARCReader, data)


def test_raw_fields_and_read_all() -> None:
    data = (DATA / "marc-perl" / "cyrillic.marc").read_bytes()
    eager = [r.as_marc() for r in gilkit_marc.MARCReader(data, to_unicode=False)]
    lazy = gilkit_marc.read_all(data, to_unicode=False, lazy_fields=True)
    assert all(type(r) is LazyRecord for r in lazy)
    assert [r.as_marc() for r in lazy] == eager  # type: ignore[union-attr]
    assert all(type(f).__name__ == "RawField" for r in lazy for f in r.fields)  # type: ignore[union-attr]


def test_lookups_match_eager_and_return_the_fields_later_in_the_list() -> None:
    eager = list(gilkit_marc.MARCReader(SAMPLE.read_bytes()))
    for lazy, full in zip(lazy_records(), eager):
        assert isinstance(lazy, Record)
        title = lazy.get_fields("245")
        subjects = lazy.get_fields("650", "651")
        assert [f.as_marc("utf-8") for f in title] == [f.as_marc("utf-8") for f in full.get_fields("245")]
        assert [str(f) for f in subjects] == [str(f) for f in full.get_fields("650", "651")]
        assert ("245" in lazy) == ("245" in full) and ("999" in lazy) == ("999" in full)
        assert lazy.title == full.title and lazy.author == full.author and lazy.isbn == full.isbn
        assert lazy.get("999") is None and lazy.get_fields(245) == []  # type: ignore[arg-type]
        if title:
            assert lazy["245"] is title[0] is lazy.get("245") is lazy.get_fields("245")[0]
        fields = lazy.fields
        assert fields is lazy.fields and type(fields) is list
        assert all(any(f is g for g in fields) for f in title + subjects)
        assert [str(f) for f in fields] == [str(f) for f in full.fields]


def test_a_changed_tag_is_seen_before_and_after_the_list_is_built() -> None:
    record = lazy_records()[0]
    title = record["245"]
    title.tag = "246"
    assert record.get_fields("245") == [] and record.get_fields("246")[0] is title
    assert "245" not in record
    fields = record.fields
    assert title in fields and record.get_fields("246") == [f for f in fields if f.tag == "246"]


def test_mutating_fields_is_seen_by_lookups() -> None:
    record = lazy_records()[1]
    extra = Field("650", subfields=[Subfield("a", "Added")])
    record.add_field(extra)
    assert record.get_fields("650")[-1] is extra
    record.remove_fields("650")
    assert record.get_fields("650") == []
    replaced = lazy_records()[2]
    replaced.fields = [extra]
    assert replaced.fields == [extra] and replaced.get_fields("650") == [extra] and replaced["650"] is extra
    emptied = lazy_records()[3]
    del emptied.fields
    with pytest.raises(AttributeError, match="fields"):
        emptied.fields  # noqa: B018
    with pytest.raises(AttributeError):
        emptied.get_fields("245")


def test_copy_and_pickle() -> None:
    for record in lazy_records()[:5]:
        marc = Record.as_marc(copy.deepcopy(record))  # the copy is built, the original untouched
        shallow = copy.copy(record)
        assert shallow.fields is record.fields  # a shallow copy shares the list, as in pymarc
        deep = copy.deepcopy(record)
        assert deep.fields is not record.fields and deep.as_marc() == record.as_marc() == marc
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):  # as for Record: slots need 2+
            again = pickle.loads(pickle.dumps(record, protocol))
            assert type(again) is LazyRecord and again.as_marc() == marc
            assert again.get_fields("245") == [f for f in again.fields if f.tag == "245"]


def test_pickle_before_any_field_is_built() -> None:
    record = lazy_records()[0]
    expected = next(iter(gilkit_marc.MARCReader(SAMPLE.read_bytes()))).as_marc()
    assert pickle.loads(pickle.dumps(record)).as_marc() == expected


def test_writers_build_lazy_fields() -> None:
    eager = list(gilkit_marc.MARCReader(SAMPLE.read_bytes()))
    outputs = []
    for records in (eager, lazy_records()):
        out = io.BytesIO()
        writer = gilkit_marc.MARCWriter(out)
        for r in records:
            writer.write(r)
        outputs.append(out.getvalue())
        text = io.StringIO()
        gilkit_marc.TextWriter(text).write(records[0])
        outputs.append(text.getvalue().encode())
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]


def test_records_built_by_hand_and_subclasses_are_unchanged() -> None:
    class MyRecord(Record):
        __slots__ = ("note",)

    mine = MyRecord(fields=[Field("245", subfields=[Subfield("a", "T")])])
    assert mine.get_fields("245")[0]["a"] == "T" and mine.title == "T"
    assert type(Record().fields) is list
    assert not hasattr(Record(), "_lazy")


def test_a_cycle_through_a_built_field_is_collected() -> None:
    import gc

    collected = []

    class Sentinel:
        def __del__(self) -> None:
            collected.append(True)

    record = lazy_records()[0]
    title = record["245"]  # built and kept by the record's lazy data, not yet in a list
    title.subfields.append(record)  # type: ignore[arg-type]
    title.subfields.append(Sentinel())  # type: ignore[arg-type]
    del record, title
    gc.collect()
    assert collected == [True]
