"""The exceptions of ``gilkit_marc``: pymarc's hierarchy, names and messages.

Code written for pymarc catches these by the same names; ``str(exc)`` gives pymarc's message.
"""

from __future__ import annotations

from typing import Any


class PymarcException(Exception):
    """Base class of every error raised by ``gilkit_marc`` (named as in pymarc)."""


class FatalReaderError(PymarcException):
    """A reading error after which a ``MARCReader`` stops (it yields ``None`` once, then ends)."""


class _Fixed:
    """Mixin: ``str()`` is the class's fixed message, as in pymarc."""

    message = ""

    def __str__(self) -> str:
        return self.message


class RecordLengthInvalid(_Fixed, FatalReaderError):
    """The first five bytes of a record are not its length."""

    message = "Invalid record length in first 5 bytes of record"


class TruncatedRecord(_Fixed, FatalReaderError):
    """The data ends before the length in the leader says it should."""

    message = "Record length in leader is greater than the length of data"


class EndOfRecordNotFound(_Fixed, FatalReaderError):
    """The byte at the end of the record is not the record terminator (0x1D)."""

    message = "Unable to locate end of record marker"


class RecordLeaderInvalid(_Fixed, PymarcException):
    """The leader is not 24 characters long."""

    message = "Unable to extract record leader"


class RecordDirectoryInvalid(_Fixed, PymarcException):
    """The directory length is not a multiple of 12."""

    message = "Invalid directory"


class NoFieldsFound(_Fixed, PymarcException):
    """The directory lists no fields."""

    message = "Unable to locate fields in record data"


class BaseAddressInvalid(_Fixed, PymarcException):
    """The base address of data is past the end of the record."""

    message = "Base address exceeds size of record"


class BaseAddressNotFound(_Fixed, PymarcException):
    """The base address of data is zero or negative."""

    message = "Unable to locate base address of record"


class RecordTooLong(PymarcException, ValueError):
    """A record cannot be written in MARC 21 transmission format (ISO 2709): the whole record
    would be over 99,999 bytes (``RecordTooLong``) or one field over 9,999 bytes
    (``FieldTooLong``), which the five- and four-digit lengths of the leader and directory cannot
    hold.

    Beyond pymarc, which writes such a record with a broken leader or directory that no reader
    can read back. ``Record.as_marc()`` raises it and ``MARCWriter.write`` raises it before
    writing anything, so the records already written stay valid. ``XMLWriter`` and
    ``JSONWriter`` have no such limit.
    """

    def __init__(self, message: str, *, tag: str | None = None, length: int = 0) -> None:
        super().__init__(message)
        self.tag = tag
        self.length = length


class FieldTooLong(RecordTooLong):
    """One field of a record is over 9,999 bytes in transmission format (see ``RecordTooLong``)."""


MAX_RECORD_LENGTH = 99_999
MAX_FIELD_LENGTH = 9_999


def record_too_long(length: int) -> RecordTooLong:
    """The error for a record of ``length`` bytes (> 99,999) in transmission format."""
    return RecordTooLong(
        f"the record is {length:,} bytes long in MARC 21 transmission format, which allows at most "
        f"{MAX_RECORD_LENGTH:,} (its leader has five digits for the length). "
        "Split the record, or write it with XMLWriter or JSONWriter, which have no such limit",
        length=length,
    )


def field_too_long(tag: str, length: int) -> FieldTooLong:
    """The error for field ``tag`` of ``length`` bytes (> 9,999) in transmission format."""
    return FieldTooLong(
        f"field {tag} is {length:,} bytes long in MARC 21 transmission format, which allows at most "
        f"{MAX_FIELD_LENGTH:,} per field (the directory has four digits for a field's length). "
        "Split the field, or write the record with XMLWriter or JSONWriter, "
        "which have no such limit",
        tag=tag,
        length=length,
    )


class WriteNeedsRecord(_Fixed, PymarcException):
    """A writer was given something that is not a ``Record``."""

    message = "Write requires a pymarc.Record object as an argument"


class NoActiveFile(_Fixed, PymarcException):
    """A writer has no file to write to."""

    message = "There is no active file to write to in call to write"


class FieldNotFound(_Fixed, PymarcException):
    """``Record.remove_field`` was given a field the record does not hold."""

    message = "Record does not contain the specified field"


class BadSubfieldCodeWarning(Warning):
    """A subfield code is not ASCII; the code was normalised (as pymarc does)."""

    def __init__(self, subf: Any) -> None:
        super().__init__()
        self.subf = subf

    def __str__(self) -> str:
        return f"The subfield contained a non-ASCII subfield code: {self.subf}"


class BadLeaderValue(PymarcException):
    """A leader position was given a value of the wrong length."""


class MissingLinkedFields(PymarcException):
    """A field has a subfield 6 linkage but no 880 field links back to it."""

    def __init__(self, field: Any) -> None:
        super().__init__(field)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field.tag} field includes a subfield 6 but no linked fields could be found."


__all__ = [
    "BadLeaderValue",
    "BadSubfieldCodeWarning",
    "BaseAddressInvalid",
    "BaseAddressNotFound",
    "EndOfRecordNotFound",
    "FatalReaderError",
    "FieldNotFound",
    "MissingLinkedFields",
    "NoActiveFile",
    "NoFieldsFound",
    "PymarcException",
    "RecordDirectoryInvalid",
    "RecordLeaderInvalid",
    "RecordLengthInvalid",
    "TruncatedRecord",
    "WriteNeedsRecord",
]
