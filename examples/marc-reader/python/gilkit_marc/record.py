"""``Record``: a MARC record, pymarc's model and API.

A record is a ``Leader`` and a list of ``Field``s. ``Record(data=chunk)`` decodes transmission
format; the Rust parser does it when it can reproduce pymarc exactly, and ``decode_marc`` below (a
pure-Python decoder with pymarc's behaviour, warnings and exceptions) does the rest: records with
missing or extra indicators, non-ASCII subfield codes, a Python codec as ``file_encoding`` or an
unusual ``utf8_handling``, and every broken record (so the exception is pymarc's).
"""

from __future__ import annotations

import json
import logging
import re
import typing
import unicodedata
import warnings
from typing import Any

from . import _native
from .constants import DIRECTORY_ENTRY_LEN, END_OF_FIELD, END_OF_RECORD, LEADER_LEN, SUBFIELD_INDICATOR
from .exceptions import (
    BadSubfieldCodeWarning,
    BaseAddressInvalid,
    BaseAddressNotFound,
    FieldNotFound,
    MAX_FIELD_LENGTH,
    MAX_RECORD_LENGTH,
    MissingLinkedFields,
    NoFieldsFound,
    RecordDirectoryInvalid,
    RecordLeaderInvalid,
    TruncatedRecord,
    field_too_long,
    record_too_long,
)
from .field import Field, Indicators, RawField, Subfield, map_marc8_field
from .leader import Leader
from .marc8 import marc8_to_unicode

isbn_regex = re.compile(r"([0-9\-xX]+)")
logger = logging.getLogger("gilkit_marc")

_SUBJECT_TAGS = (
    "600", "610", "611", "630", "648", "650", "651", "653", "654", "655",
    "656", "657", "658", "662", "690", "691", "696", "697", "698", "699",
)  # fmt: skip
_ADDED_ENTRY_TAGS = (
    "700", "710", "711", "720", "730", "740", "752", "753", "754", "790",
    "791", "792", "793", "796", "797", "798", "799",
)  # fmt: skip
_NOTE_TAGS = (
    "500", "501", "502", "504", "505", "506", "507", "508", "510", "511",
    "513", "514", "515", "516", "518", "520", "521", "522", "524", "525",
    "526", "530", "533", "534", "535", "536", "538", "540", "541", "544",
    "545", "546", "547", "550", "552", "555", "556", "561", "562", "563",
    "565", "567", "580", "581", "583", "584", "585", "586", "590", "591",
    "592", "593", "594", "595", "596", "597", "598", "599",
)  # fmt: skip


class Record:
    """A MARC record: ``leader`` and ``fields``, with pymarc's accessors and serialisers."""

    __slots__ = ("leader", "fields", "pos", "force_utf8", "to_unicode", "__pos")

    def __init__(
        self,
        data: str | bytes = "",
        fields: list[Field] | None = None,
        to_unicode: bool = True,
        force_utf8: bool = False,
        hide_utf8_warnings: bool = False,
        utf8_handling: str = "strict",
        leader: str = " " * LEADER_LEN,
        file_encoding: str = "iso8859-1",
    ) -> None:
        self.leader: Leader = Leader(leader[0:10] + "22" + leader[12:20] + "4500")
        self.fields: list[Field] = []
        self.pos = 0
        self.__pos = 0
        self.force_utf8 = force_utf8
        self.to_unicode = to_unicode
        if fields:
            self.fields = fields
        elif len(data) > 0:
            self.decode_marc(
                data,  # type: ignore[arg-type]
                to_unicode=to_unicode,
                force_utf8=force_utf8,
                hide_utf8_warnings=hide_utf8_warnings,
                utf8_handling=utf8_handling,
                encoding=file_encoding,
            )
        elif force_utf8:
            self.leader = Leader(self.leader[0:9] + "a" + self.leader[10:])

    def __str__(self) -> str:
        """The record in MARCMaker form, one line per field."""
        return "\n".join([f"=LDR  {self.leader}", *(str(field) for field in self.fields)]) + "\n"

    def get(self, tag: str, default: Field | None = None) -> Field | None:
        """The first field with ``tag``, else ``default``."""
        for field in self.fields:
            if field.tag == tag:
                return field
        return default

    def __getitem__(self, tag: str) -> Field:
        """The first field with ``tag``; ``KeyError`` if there is none."""
        for field in self.fields:
            if field.tag == tag:
                return field
        raise KeyError

    def __contains__(self, tag: str) -> bool:
        for field in self.fields:  # noqa: SIM110 - a loop is faster than any()
            if field.tag == tag:
                return True
        return False

    def __iter__(self) -> Record:
        self.__pos = 0
        return self

    def __next__(self) -> Field:
        if self.__pos >= len(self.fields):
            raise StopIteration
        self.__pos += 1
        return self.fields[self.__pos - 1]

    def add_field(self, *fields: Field) -> None:
        """Appends fields."""
        self.fields.extend(fields)

    def add_grouped_field(self, *fields: Field) -> None:
        """Inserts fields keeping the tags loosely ordered by their first digit."""
        for field in fields:
            if not self.fields or not field.tag.isdigit():
                self.fields.append(field)
            else:
                self._sort_fields(field, "grouped")

    def add_ordered_field(self, *fields: Field) -> None:
        """Inserts fields keeping numeric tags in ascending order."""
        for field in fields:
            if not self.fields or not field.tag.isdigit():
                self.fields.append(field)
            else:
                self._sort_fields(field, "ordered")

    def _sort_fields(self, field: Field, mode: str) -> None:
        key = (lambda tag: int(tag[0])) if mode == "grouped" else int
        tag = key(field.tag)
        for i, existing in enumerate(self.fields, 1):
            if not existing.tag.isdigit() or key(existing.tag) > tag:
                self.fields.insert(i - 1, field)
                break
            if len(self.fields) == i:
                self.fields.append(field)
                break

    def remove_field(self, *fields: Field) -> None:
        """Removes the given field objects (``FieldNotFound`` if one is not in the record)."""
        for field in fields:
            try:
                self.fields.remove(field)
            except ValueError:
                raise FieldNotFound from None

    def remove_fields(self, *tags: str) -> None:
        """Removes every field with one of ``tags``."""
        if not tags:
            return
        if len(tags) == 1:
            tag = tags[0]
            self.fields[:] = (f for f in self.fields if f.tag != tag)
        else:
            tag_set = set(tags)
            self.fields[:] = (f for f in self.fields if f.tag not in tag_set)

    @typing.overload
    def get_fields(self, *args: str) -> list[Field]: ...

    @typing.overload
    def get_fields(self, *args: list[str]) -> list[Field]: ...

    def get_fields(self, *args: Any) -> list[Field]:
        """The fields with any of the tags (all fields, the list itself, when none are given)."""
        if not args:
            return self.fields
        if len(args) == 1:
            tag = args[0]
            return [f for f in self.fields if f.tag == tag]
        tag_set = set(args)
        return [f for f in self.fields if f.tag in tag_set]

    def get_linked_fields(self, field: Field) -> list[Field]:
        """The 880 fields linked to ``field`` by subfield 6 (``MissingLinkedFields`` if none)."""
        num = field.linkage_occurrence_num()
        linked = [f for f in self.get_fields("880") if f.linkage_occurrence_num() == num]
        if num is not None and not linked:
            raise MissingLinkedFields(field)
        return linked

    def decode_marc(
        self,
        marc: bytes,
        to_unicode: bool = True,
        force_utf8: bool = False,
        hide_utf8_warnings: bool = False,
        utf8_handling: str = "strict",
        encoding: str = "iso8859-1",
    ) -> None:
        """Fills the record from ``marc`` in transmission format.

        Tries the Rust parser first (same result as below, far faster); falls back to the Python
        decoder, which reproduces pymarc's warnings and exceptions.
        """
        # pymarc picks the control fields' encoding by `self.force_utf8` and the subfields' by the
        # `force_utf8` argument; the Rust parser assumes they agree (as they do from `__init__`).
        if (
            isinstance(marc, bytes)
            and bool(self.force_utf8) == bool(force_utf8)
            and _native.decode_into(self, marc, to_unicode, force_utf8, hide_utf8_warnings, utf8_handling, encoding)
        ):
            return
        self._decode_marc_python(marc, to_unicode, force_utf8, hide_utf8_warnings, utf8_handling, encoding)

    def _decode_marc_python(
        self,
        marc: bytes,
        to_unicode: bool,
        force_utf8: bool,
        hide_utf8_warnings: bool,
        utf8_handling: str,
        encoding: str,
    ) -> None:
        leader = marc[0:LEADER_LEN].decode("ascii")
        if len(leader) != LEADER_LEN:
            raise RecordLeaderInvalid
        if leader[9] == "a" or self.force_utf8:
            encoding = "utf-8"
        self.leader = Leader(leader)

        base_address = int(marc[12:17])
        if base_address <= 0:
            raise BaseAddressNotFound
        if base_address >= len(marc):
            raise BaseAddressInvalid
        if len(marc) < int(self.leader[:5]):
            raise TruncatedRecord

        # The directory ends with a field terminator, hence base_address - 1.
        directory = marc[LEADER_LEN : base_address - 1].decode("ascii")
        if len(directory) % DIRECTORY_ENTRY_LEN != 0:
            raise RecordDirectoryInvalid
        field_total = len(directory) // DIRECTORY_ENTRY_LEN
        utf8 = self.leader[9] == "a" or force_utf8

        for index in range(field_total):
            entry = directory[index * DIRECTORY_ENTRY_LEN : (index + 1) * DIRECTORY_ENTRY_LEN]
            tag = entry[0:3]
            length = int(entry[3:7])
            start = base_address + int(entry[7:12])
            data = marc[start : start + length - 1]
            field: Field
            if tag < "010" and tag.isdigit():
                if to_unicode:
                    field = Field(tag=tag, data=data.decode(encoding))
                else:
                    field = RawField(tag=tag, data=data)  # type: ignore[arg-type]
            else:
                parts = data.split(SUBFIELD_INDICATOR.encode("ascii"))
                # Real-world records lack indicators or have too many: use what is there, pad
                # with blanks, drop the surplus (and log it), rather than reject the record.
                head = parts[0].decode("ascii")
                if not head:
                    logger.warning("missing indicators: %s", data)
                    ind1 = ind2 = " "
                elif len(head) == 1:
                    logger.warning("only 1 indicator found: %s", data)
                    ind1, ind2 = head[0], " "
                else:
                    if len(head) > 2:
                        logger.warning("more than 2 indicators found: %s", data)
                    ind1, ind2 = head[0], head[1]

                subfields = []
                for part in parts[1:]:
                    if not part:
                        continue
                    skip = 1
                    try:
                        code = part[0:1].decode("ascii")
                    except UnicodeDecodeError:
                        warnings.warn(BadSubfieldCodeWarning(part), stacklevel=3)  # as pymarc: the caller of decode_marc
                        code, skip = normalize_subfield_code(part)
                    value: Any = part[skip:]
                    if to_unicode:
                        if utf8:
                            value = value.decode("utf-8", utf8_handling)
                        elif encoding == "iso8859-1":
                            value = marc8_to_unicode(value, hide_utf8_warnings)
                        else:
                            value = value.decode(encoding)
                    subfields.append(Subfield(code=code, value=value))
                cls = Field if to_unicode else RawField
                field = cls(tag=tag, indicators=Indicators(ind1, ind2), subfields=subfields)
            self.fields.append(field)

        if field_total == 0:
            raise NoFieldsFound

    def as_marc(self) -> bytes:
        """The record in transmission format (UTF-8, leader position 9 set to ``a``, when
        ``to_unicode``); lengths and base address are recomputed.

        Raises ``FieldTooLong`` for a field over 9,999 bytes and ``RecordTooLong`` for a record
        over 99,999 bytes, which the format cannot hold (pymarc returns corrupt bytes instead).
        """
        fast = _native.as_marc(self)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
        if self.to_unicode:
            if isinstance(self.leader, Leader):
                self.leader.coding_scheme = "a"  # type: ignore[attr-defined]
            else:
                self.leader = self.leader[0:9] + "a" + self.leader[10:]  # type: ignore[unreachable]
        encoding = "utf-8" if self.leader[9] == "a" or self.force_utf8 else "iso8859-1"

        field_parts = []
        directory = []
        offset = 0
        for field in self.fields:
            data = field.as_marc() if isinstance(field, RawField) else field.as_marc(encoding=encoding)
            if len(data) > MAX_FIELD_LENGTH:
                raise field_too_long(str(field.tag), len(data))
            field_parts.append(data)
            tag = f"{int(field.tag):03d}" if field.tag.isdigit() else f"{field.tag:>03}"
            directory.append(f"{tag}".encode(encoding) + f"{len(data):04d}{offset:05d}".encode(encoding))
            offset += len(data)
        dir_bytes = b"".join(directory) + END_OF_FIELD.encode(encoding)
        fields = b"".join(field_parts) + END_OF_RECORD.encode(encoding)
        base_address = LEADER_LEN + len(dir_bytes)
        record_length = base_address + len(fields)
        if record_length > MAX_RECORD_LENGTH:
            raise record_too_long(record_length)
        leader = f"{record_length:0>5}{self.leader[5:12]}{base_address:0>5}{self.leader[17:]}"
        return leader.encode(encoding) + dir_bytes + fields

    as_marc21 = as_marc

    def as_dict(self) -> dict[str, object]:
        """The record as MARC-in-JSON ``{"leader": ..., "fields": [...]}``."""
        fields: list[object] = []
        for field in self:
            if field.control_field:
                fields.append({field.tag: field.data})
            else:
                fields.append(
                    {
                        field.tag: {
                            "ind1": field.indicator1,
                            "ind2": field.indicator2,
                            "subfields": [{s.code: s.value} for s in field.subfields],
                        }
                    }
                )
        return {"leader": str(self.leader), "fields": fields}

    def as_json(self, **kwargs: Any) -> str:
        """The record as a MARC-in-JSON string (``kwargs`` go to ``json.dumps``)."""
        return json.dumps(self.as_dict(), **kwargs)

    def _title_from(self, tag: str) -> str | None:
        field = self.get(tag)
        if not field:
            return None
        title = field.get("a")
        if title:
            subtitle = field.get("b")
            if subtitle:
                title += f" {subtitle}"
        return title

    @property
    def title(self) -> str | None:
        """245 $a and $b."""
        return self._title_from("245")

    @property
    def issn_title(self) -> str | None:
        """The key title: 222 $a and $b."""
        return self._title_from("222")

    @property
    def isbn(self) -> str | None:
        """The first ISBN (020 $a) without dashes or qualifiers, if it looks like one."""
        field = self.get("020")
        if not field:
            return None
        number = field.get("a")
        if not number:
            return None
        match = isbn_regex.search(number)
        return match.group(1).replace("-", "") if match else None

    @property
    def issn(self) -> str | None:
        """022 $a."""
        field = self.get("022")
        return field.get("a") if (field and "a" in field) else None

    @property
    def issnl(self) -> str | None:
        """The ISSN-L, 022 $l."""
        field = self.get("022")
        return field["l"] if (field and "l" in field) else None

    @property
    def sudoc(self) -> str | None:
        """The SuDoc classification number (086)."""
        field = self.get("086")
        return field.format_field() if field else None

    @property
    def author(self) -> str | None:
        """The main entry, 100, 110 or 111."""
        field = self.get("100") or self.get("110") or self.get("111")
        return field.format_field() if field else None

    @property
    def uniformtitle(self) -> str | None:
        """The uniform title, 130 or 240."""
        field = self.get("130") or self.get("240")
        return field.format_field() if field else None

    @property
    def series(self) -> list[Field]:
        """Series fields: 440, 490, 800, 810, 811, 830."""
        return self.get_fields("440", "490", "800", "810", "811", "830")

    @property
    def subjects(self) -> list[Field]:
        """Subject fields (6xx, local 69x included)."""
        return self.get_fields(*_SUBJECT_TAGS)

    @property
    def addedentries(self) -> list[Field]:
        """Added entry fields (7xx, local 79x included)."""
        return self.get_fields(*_ADDED_ENTRY_TAGS)

    @property
    def location(self) -> list[Field]:
        """Location fields (852)."""
        return self.get_fields("852")

    @property
    def notes(self) -> list[Field]:
        """Note fields (5xx)."""
        return self.get_fields(*_NOTE_TAGS)

    @property
    def physicaldescription(self) -> list[Field]:
        """Physical description fields (300)."""
        return self.get_fields("300")

    def _imprint(self, code: str) -> str | None:
        for field in self.get_fields("260", "264"):
            if field.tag == "260" or (field.tag == "264" and field.indicator2 == "1"):
                return field.get(code)
        return None

    @property
    def publisher(self) -> str | None:
        """260 $b, or 264 $b of a 264 with second indicator 1."""
        return self._imprint("b")

    @property
    def pubyear(self) -> str | None:
        """260 $c, or 264 $c of a 264 with second indicator 1."""
        return self._imprint("c")


class LazyRecord(Record):
    """A ``Record`` read with ``lazy_fields=True``: its fields are built when first used.

    ``fields`` is the same plain, mutable list as in a ``Record``, built on first access;
    ``get_fields``, ``get``, ``record[tag]`` and ``tag in record`` build only the fields they
    return until then (the same ``Field`` objects that ``fields`` later holds). See
    ``src/python/lazy.rs``.
    """

    # The parsed fields while `fields` is not built, else None.
    __slots__ = ("_lazy",)
    _lazy: _native._LazyFields | None

    if typing.TYPE_CHECKING:
        fields: list[Field]
    else:
        # Shadows `Record`'s slot: reads and writes it, building the list first if needed.
        fields = _native._FieldsDescriptor()

    def _select(self, tags: tuple[Any, ...], limit: int | None = None) -> list[Field] | None:
        """The fields with these tags, building only those; ``None`` once ``fields`` is built."""
        try:
            lazy = self._lazy
        except AttributeError:  # made by copy or pickle: `fields` is set
            return None
        return None if lazy is None else lazy.select(tags, limit)

    def get(self, tag: str, default: Field | None = None) -> Field | None:
        selected = self._select((tag,), 1)
        if selected is None:
            return super().get(tag, default)
        return selected[0] if selected else default

    def __getitem__(self, tag: str) -> Field:
        selected = self._select((tag,), 1)
        if selected is None:
            return super().__getitem__(tag)
        if selected:
            return selected[0]
        raise KeyError

    def __contains__(self, tag: str) -> bool:
        selected = self._select((tag,), 1)
        return super().__contains__(tag) if selected is None else bool(selected)

    def get_fields(self, *args: Any) -> list[Field]:
        selected = self._select(args) if args else None
        return super().get_fields(*args) if selected is None else selected

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        # Pickling and copying: `Record`'s slots, with the fields built (never the parsed data).
        self.fields  # noqa: B018 - builds them
        state = {}
        for name in ("leader", "fields", "pos", "force_utf8", "to_unicode", "_Record__pos"):
            try:
                state[name] = getattr(self, name)
            except AttributeError:
                pass
        return None, state


def map_marc8_record(record: Record) -> Record:
    """Decodes a ``to_unicode=False`` record's MARC-8 fields in place; leader 9 becomes ``a``."""
    record.fields = [map_marc8_field(field) for field in record.fields]
    leader = list(record.leader.leader)
    leader[9] = "a"
    record.leader = Leader("".join(leader))
    return record


def normalize_subfield_code(subfield: bytes) -> tuple[str, int]:
    """An ASCII code for a subfield whose code byte is not ASCII, and how many bytes it took."""
    skip = 1
    try:
        text = subfield.decode("utf-8")
        skip = len(text[0].encode("utf-8"))
    except UnicodeDecodeError:
        text = subfield.decode("latin-1")
    ascii_only = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return ascii_only[0], skip


__all__ = ["LazyRecord", "Record", "map_marc8_record", "normalize_subfield_code"]
