"""``Leader``: the 24-character record leader, readable and writable by position or by name.

Behaves as ``pymarc.Leader``: ``leader[5]``, ``leader[0:5]``, ``leader.record_status``, and the
same setters with the same length checks and ``BadLeaderValue`` messages.
"""

from __future__ import annotations

from .constants import LEADER_LEN
from .exceptions import BadLeaderValue, RecordLeaderInvalid

# (property name, start, width, label used in the error message, width as pymarc words it)
_POSITIONS = [
    ("record_length", 0, 5, "Record length", "4 chars"),
    ("record_status", 5, 1, "Record status", "1 char"),
    ("type_of_record", 6, 1, "Type of record", "1 char"),
    ("bibliographic_level", 7, 1, "Bibliographic level", "1 char"),
    ("type_of_control", 8, 1, "Type of control", "1 char"),
    ("coding_scheme", 9, 1, "Character coding scheme", "1 char"),
    ("indicator_count", 10, 1, "Indicator count", "1 char"),
    ("subfield_code_count", 11, 1, "Subfield code count", "1 char"),
    ("base_address", 12, 5, "Base address of data", "4 chars"),
    ("encoding_level", 17, 1, "Encoding level", "1 char"),
    ("cataloging_form", 18, 1, "Descriptive cataloging form", "1 char"),
    ("multipart_ressource", 19, 1, "Multipart resource record level", "1 char"),
    ("length_of_field_length", 20, 1, "Length of the length-of-field portion", "1 char"),
    (
        "starting_character_position_length",
        21,
        1,
        "Length of the starting-character-position portion",
        "1 char",
    ),
    ("implementation_defined_length", 22, 1, "Length of the implementation-defined portion", "1 char"),
]


class Leader:
    """Mutable record leader (``str(leader)`` is the 24 characters)."""

    __slots__ = ("leader",)

    def __init__(self, leader: str) -> None:
        if len(leader) != LEADER_LEN:
            raise RecordLeaderInvalid
        self.leader = leader

    def __getitem__(self, item: str | int | slice) -> str:
        if isinstance(item, slice | int):
            return self.leader[item]
        return getattr(self, item)  # type: ignore[no-any-return]

    def __setitem__(self, item: str | int | slice, value: str) -> None:
        if isinstance(item, slice):
            self._replace_values(position=item.start, value=value)
        elif isinstance(item, int):
            self._replace_values(position=item, value=value)
        else:
            setattr(self, item, value)

    def __str__(self) -> str:
        return self.leader

    def _replace_values(self, position: int, value: str) -> None:
        if position < 0:
            raise IndexError("Position must be positive")
        after = position + len(value)
        if after > LEADER_LEN:
            raise BadLeaderValue(f"{value} is too long to be inserted at {position}")
        self.leader = self.leader[:position] + value + self.leader[after:]


def _position(start: int, width: int, label: str, wording: str) -> property:
    def get(self: Leader) -> str:
        return self.leader[start] if width == 1 else self.leader[start : start + width]

    def set(self: Leader, value: str) -> None:
        if len(value) != width:
            raise BadLeaderValue(f"{label} is {wording} field, got {value}")
        self._replace_values(position=start, value=value)

    return property(get, set, doc=f"{label} ({start:02d}{'' if width == 1 else f'-{start + width - 1:02d}'}).")


for _name, _start, _width, _label, _wording in _POSITIONS:
    setattr(Leader, _name, _position(_start, _width, _label, _wording))
del _name, _start, _width, _label, _wording


__all__ = ["Leader"]
