"""Writers: MARC transmission format, MARC-in-JSON, MARCXML and MARCMaker text (pymarc's API).

``MARCWriter`` serialises with ``Record.as_marc`` (Rust for plain records) and writes each record
at once, as pymarc does.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import IO, Any

from . import _native
from .exceptions import WriteNeedsRecord
from .marcxml import record_to_xml_node
from .record import Record

class Writer:
    """Base writer: holds the file handle; ``close(close_fh=True)`` closes it."""

    def __init__(self, file_handle: IO[Any]) -> None:
        self.file_handle: Any = file_handle

    def write(self, record: Record) -> None:
        """Checks that ``record`` is a ``Record`` (``WriteNeedsRecord`` otherwise)."""
        if not isinstance(record, Record):
            raise WriteNeedsRecord

    def close(self, close_fh: bool = True) -> None:
        """Closes the writer, and the file handle too unless ``close_fh`` is false."""
        if close_fh and self.file_handle:
            self.file_handle.close()
        self.file_handle = None


class MARCWriter(Writer):
    """Writes records in MARC 21 transmission format to a binary file object.

    Each record is serialised (in Rust for plain records) and written at once, as pymarc does:
    nothing is held back, so a file closed without ``writer.close()`` still has every record.
    """

    def __init__(self, file_handle: IO[bytes]) -> None:
        super().__init__(file_handle)

    def write(self, record: Record) -> None:
        """Writes ``record`` (``WriteNeedsRecord`` if it is not a ``Record``).

        Raises ``RecordTooLong`` / ``FieldTooLong`` (beyond pymarc, which writes a corrupt
        record) when the record does not fit the format's lengths; nothing is written then, so
        the file keeps every record written before, valid.
        """
        if not isinstance(record, Record):
            raise WriteNeedsRecord
        if self.file_handle:
            data = _native.as_marc(record)
            self.file_handle.write(record.as_marc() if data is None else data)


class JSONWriter(Writer):
    """Writes a JSON array of MARC-in-JSON records to a text file object (``close()`` it)."""

    def __init__(self, file_handle: IO[str]) -> None:
        super().__init__(file_handle)
        self.write_count = 0
        if self.file_handle:
            self.file_handle.write("[")

    def write(self, record: Record) -> None:
        Writer.write(self, record)
        if self.file_handle:
            if self.write_count > 0:
                self.file_handle.write(",")
            json.dump(record.as_dict(), self.file_handle, separators=(",", ":"))
            self.write_count += 1

    def close(self, close_fh: bool = True) -> None:
        if self.file_handle:
            self.file_handle.write("]")
        Writer.close(self, close_fh)


class TextWriter(Writer):
    """Writes records in MARCMaker text, separated by blank lines, to a text file object."""

    def __init__(self, file_handle: IO[str]) -> None:
        super().__init__(file_handle)
        self.write_count = 0

    def write(self, record: Record) -> None:
        Writer.write(self, record)
        if self.file_handle:
            if self.write_count > 0:
                self.file_handle.write("\n")
            self.file_handle.write(str(record))
            self.write_count += 1


class XMLWriter(Writer):
    """Writes a MARCXML collection to a binary file object (``close()`` it)."""

    def __init__(self, file_handle: IO[bytes]) -> None:
        super().__init__(file_handle)
        if self.file_handle:
            self.file_handle.write(b'<?xml version="1.0" encoding="UTF-8"?>')
            self.file_handle.write(b'<collection xmlns="http://www.loc.gov/MARC21/slim">')

    def write(self, record: Record) -> None:
        Writer.write(self, record)
        if self.file_handle:
            self.file_handle.write(ET.tostring(record_to_xml_node(record), encoding="utf-8"))

    def close(self, close_fh: bool = True) -> None:
        if self.file_handle:
            self.file_handle.write(b"</collection>")
        Writer.close(self, close_fh)


__all__ = ["JSONWriter", "MARCWriter", "TextWriter", "Writer", "XMLWriter"]
