"""``Field``, ``RawField``, ``Subfield`` and ``Indicators``: pymarc's field model.

A control field (tag ``000``..``009``) has ``data``; a data field has ``indicators`` and a list of
``Subfield(code, value)`` named tuples. Everything here behaves as in pymarc 5, so code written
against ``pymarc.Field`` works unchanged. Records read by ``MARCReader`` get their fields built by
the Rust extension straight into these slots (no ``__init__`` call), which is why the slot layout
is part of the contract with ``_native`` (see ``src/python/build.rs``).
"""

from __future__ import annotations

import typing
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .constants import END_OF_FIELD, SUBFIELD_INDICATOR

_logger_name = "gilkit_marc"


class Subfield(NamedTuple):
    """One subfield: its one-character ``code`` and its ``value``."""

    code: str
    value: str


class Indicators(NamedTuple):
    """The two indicators of a data field."""

    first: str
    second: str


def _is_control_tag(tag: str) -> bool:
    # Control fields are numeric tags below 010 (ruby-marc's and pymarc's rule).
    return tag < "010" and tag.isdigit()


class Field:
    """A MARC field: ``Field(tag, indicators, subfields)`` or ``Field(tag, data=...)``."""

    __slots__ = ("tag", "data", "_indicators", "subfields", "__pos", "control_field")

    def __init__(
        self,
        tag: str,
        indicators: Indicators | Sequence[str] | None = None,
        subfields: list[Subfield] | None = None,
        data: str | None = None,
    ) -> None:
        if isinstance(tag, str):
            self.tag = tag if not tag.isdigit() or len(tag) == 3 else f"{int(tag):03}"
        else:
            try:
                self.tag = f"{int(tag):03}"
            except (TypeError, ValueError):
                self.tag = f"{tag}"

        if subfields and isinstance(subfields[0], str):
            raise ValueError(
                """The subfield input no longer accepts strings, and should use Subfield.
                   Please consult the documentation for details.
                """
            )

        self.subfields: list[Subfield] = []
        self._indicators: Indicators | None = None
        self.data: str | None = None
        self.control_field: bool = False

        if _is_control_tag(self.tag):
            self.control_field = True
            self.data = data
        else:
            self.subfields = subfields or []
            if not indicators:
                self._indicators = Indicators(" ", " ")
            elif isinstance(indicators, list | tuple) and len(indicators) == 2:
                self._indicators = Indicators(*indicators)
            else:
                # The setter raises ValueError for anything that is not two indicators.
                self.indicators = indicators  # type: ignore[assignment]

    @property
    def indicators(self) -> Indicators | None:
        """The indicators (``None`` for a control field)."""
        return self._indicators

    @indicators.setter
    def indicators(self, value: Sequence[str] | None) -> None:
        if value and isinstance(value, list | tuple) and len(value) != 2:
            raise ValueError(
                """The indicators input no longer accepts an iterable of arbitrary length. Use
                   the Indicators() named tuple instead. Please consult the documentation
                   for details.
                """
            )
        if value is not None:
            self._indicators = value if isinstance(value, Indicators) else Indicators(*value)

    @classmethod
    def convert_legacy_subfields(cls, subfields: list[str]) -> list[Subfield]:
        """Turns ``['a', 'x', 'b', 'y']`` into ``[Subfield('a', 'x'), Subfield('b', 'y')]``."""
        it = iter(subfields)
        return [Subfield._make(pair) for pair in zip(it, it, strict=True)]

    def __iter__(self) -> Field:
        self.__pos = 0
        return self

    def __next__(self) -> Subfield:
        if self.control_field:
            raise StopIteration
        try:
            subfield = self.subfields[self.__pos]
        except IndexError:
            raise StopIteration from None
        self.__pos += 1
        return subfield

    def __str__(self) -> str:
        """The field in MARCMaker form: ``=245  10$aTitle``."""
        if self.control_field:
            data = self.data.replace(" ", "\\") if self.data else ""
            return f"={self.tag}  {data}"
        indicators = "".join(
            "\\" if i in (" ", "\\") else f"{i}"
            for i in self._indicators  # type: ignore[union-attr]
        )
        subfields = "".join(f"${s.code}{s.value}" for s in self.subfields)
        return f"={self.tag}  {indicators}{subfields}"

    @typing.overload
    def get(self, code: str, default: str) -> str: ...

    @typing.overload
    def get(self, code: str, default: None = None) -> str | None: ...

    def get(self, code: str, default: str | None = None) -> str | None:
        """The value of the first subfield ``code``, else ``default`` (always for control fields)."""
        if self.control_field:
            return default
        for subfield in self.subfields:
            if subfield.code == code:
                return subfield.value
        return default

    def __getitem__(self, code: str) -> str:
        """The value of the first subfield ``code``; ``KeyError`` if absent or a control field."""
        if self.control_field:
            raise KeyError
        for subfield in self.subfields:
            if subfield.code == code:
                return subfield.value
        raise KeyError

    def __contains__(self, code: str) -> bool:
        if self.control_field:
            return False
        for subfield in self.subfields:  # noqa: SIM110 - a loop is faster than any()
            if subfield.code == code:
                return True
        return False

    def __setitem__(self, code: str, value: str) -> None:
        """Replaces the value of the only subfield ``code`` (``KeyError`` if none or several)."""
        if self.control_field:
            raise KeyError("field is a control field")
        found: int | None = None
        for index, subfield in enumerate(self.subfields):
            if subfield.code == code:
                if found is not None:
                    raise KeyError(f"more than one code '{code}'")
                found = index
        if found is None:
            raise KeyError(f"no code '{code}'")
        self.subfields[found] = Subfield(code=self.subfields[found].code, value=value)

    def value(self) -> str:
        """The data, or the stripped subfield values joined by spaces."""
        if self.control_field:
            return self.data or ""
        return " ".join(subfield.value.strip() for subfield in self.subfields)

    def get_subfields(self, *codes: str) -> list[str]:
        """The values of the subfields with any of ``codes``, in field order."""
        if self.control_field or not codes:
            return []
        if len(codes) == 1:
            code = codes[0]
            return [s.value for s in self.subfields if s.code == code]
        return [s.value for s in self.subfields if s.code in codes]

    def add_subfield(self, code: str, value: str, pos: int | None = None) -> None:
        """Appends a subfield, or inserts it at ``pos`` (no-op on a control field)."""
        if self.control_field:
            return
        subfield = Subfield(code=code, value=value)
        if pos is None or pos > len(self.subfields):
            self.subfields.append(subfield)
        else:
            self.subfields.insert(pos, subfield)

    def delete_subfield(self, code: str) -> str | None:
        """Removes the first subfield ``code`` and returns its value (``None`` if absent)."""
        if self.control_field:
            return None
        for index, subfield in enumerate(self.subfields):
            if subfield.code == code:
                return self.subfields.pop(index).value
        return None

    def subfields_as_dict(self) -> dict[str, list[str]]:
        """``{code: [values...]}`` in field order (empty for control fields)."""
        if self.control_field:
            return {}
        result: defaultdict[str, list[str]] = defaultdict(list)
        for subfield in self.subfields:
            result[subfield.code].append(subfield.value)
        return dict(result)

    def is_control_field(self) -> bool:
        """Whether this is a control field (same as the ``control_field`` attribute)."""
        return self.control_field

    def linkage_occurrence_num(self) -> str | None:
        """The occurrence number of subfield 6 (``'880-02/r'`` gives ``'02'``), if any."""
        linkage = self.get("6", "")
        return linkage.split("-")[1].split("/")[0] if linkage else None

    def as_marc(self, encoding: str) -> bytes:
        """The field in transmission format, encoded with ``encoding``."""
        if self.control_field:
            return f"{self.data}{END_OF_FIELD}".encode(encoding)
        subfields = "".join(f"{SUBFIELD_INDICATOR}{s.code}{s.value}" for s in self.subfields)
        return f"{self.indicator1}{self.indicator2}{subfields}{END_OF_FIELD}".encode(encoding)

    as_marc21 = as_marc

    def format_field(self) -> str:
        """Like ``value()`` but prettier: skips subfield 6, and subject subdivisions get ``--``."""
        if self.control_field:
            return self.data or ""
        subject = self.is_subject_field()
        parts = []
        for subfield in self.subfields:
            if subfield.code == "6":
                continue
            if subject and subfield.code in ("v", "x", "y", "z"):
                parts.append(f" -- {subfield.value}")
            else:
                parts.append(f" {subfield.value}")
        return "".join(parts).strip()

    def is_subject_field(self) -> bool:
        """Whether the tag starts with 6."""
        return self.tag.startswith("6")

    @property
    def indicator1(self) -> str:
        """The first indicator (``''`` for a control field)."""
        return self._indicators.first if self._indicators else ""

    @indicator1.setter
    def indicator1(self, value: str) -> None:
        if self.control_field:
            self._indicators = None
        self._indicators = self._indicators._replace(first=value)  # type: ignore[union-attr]

    @property
    def indicator2(self) -> str:
        """The second indicator (``''`` for a control field)."""
        return self._indicators.second if self._indicators else ""

    @indicator2.setter
    def indicator2(self, value: str) -> None:
        if self.control_field:
            self._indicators = None
        self._indicators = self._indicators._replace(second=value)  # type: ignore[union-attr]


class RawField(Field):
    """A field whose data and subfield values are undecoded ``bytes`` (``to_unicode=False``)."""

    __slots__ = ()

    def as_marc(self, encoding: str | None = None) -> bytes:  # type: ignore[override]
        """The field in transmission format, bytes as they were read."""
        if encoding is not None:
            import logging

            logging.getLogger(_logger_name).warning("Attempt to force a RawField into encoding %s", encoding)
        if self.control_field:
            return self.data + END_OF_FIELD.encode("ascii")  # type: ignore[operator,return-value]
        out = self.indicator1.encode("ascii") + self.indicator2.encode("ascii")
        for subfield in self.subfields:
            out += SUBFIELD_INDICATOR.encode("ascii") + subfield.code.encode("ascii") + subfield.value  # type: ignore[operator]
        return out + END_OF_FIELD.encode("ascii")

    as_marc21 = as_marc


def map_marc8_field(f: Field) -> Field:
    """Decodes a field's MARC-8 ``bytes`` to ``str`` in place and returns it."""
    from .marc8 import marc8_to_unicode

    if f.control_field:
        f.data = marc8_to_unicode(f.data)  # type: ignore[arg-type]
    else:
        f.subfields = [Subfield(s.code, marc8_to_unicode(s.value)) for s in f.subfields]  # type: ignore[arg-type]
    return f


__all__ = ["Field", "Indicators", "RawField", "Subfield", "map_marc8_field"]
