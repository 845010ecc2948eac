"""gilkit_marc: a pymarc-compatible MARC 21 reader and writer in Rust that scales with threads.

Replace ``import pymarc`` / ``from pymarc import ...`` with ``gilkit_marc``: the classes,
functions, exceptions and results are pymarc 5's. Reading parses batches of records in Rust with
the GIL released, so one reader per thread reads files in parallel. Beyond pymarc:
``read_all(target, threads=N)``, ``parse(data)``, and columns computed in Rust on several
threads: ``extract(source, ["001", "245$a"])`` (an Arrow table), ``to_parquet`` and ``convert``
(streamed to Parquet, CSV or JSON Lines; also the ``gilkit-marc convert`` command).
"""

from .constants import DIRECTORY_ENTRY_LEN, END_OF_FIELD, END_OF_RECORD, LEADER_LEN, SUBFIELD_INDICATOR
from .exceptions import (
    BadLeaderValue,
    BadSubfieldCodeWarning,
    BaseAddressInvalid,
    BaseAddressNotFound,
    EndOfRecordNotFound,
    FatalReaderError,
    FieldNotFound,
    FieldTooLong,
    MissingLinkedFields,
    NoActiveFile,
    NoFieldsFound,
    PymarcException,
    RecordDirectoryInvalid,
    RecordLeaderInvalid,
    RecordLengthInvalid,
    RecordTooLong,
    TruncatedRecord,
    WriteNeedsRecord,
)
from .extract import convert, extract, to_parquet
from .field import Field, Indicators, RawField, Subfield, map_marc8_field
from .leader import Leader
from .marc8 import MARC8ToUnicode, marc8_to_unicode
from .marcjson import JSONHandler, parse_json_to_array
from .marcxml import (
    MARC_XML_NS,
    MARC_XML_SCHEMA,
    XSI_NS,
    XmlHandler,
    map_xml,
    parse_xml,
    parse_xml_to_array,
    record_to_xml,
    record_to_xml_node,
)
from .reader import JSONReader, MARCMakerReader, MARCReader, Reader, map_records, parse, read_all
from .record import LazyRecord, Record, map_marc8_record, normalize_subfield_code
from .writer import JSONWriter, MARCWriter, TextWriter, Writer, XMLWriter

__all__ = [
    "DIRECTORY_ENTRY_LEN",
    "END_OF_FIELD",
    "END_OF_RECORD",
    "LEADER_LEN",
    "MARC_XML_NS",
    "MARC_XML_SCHEMA",
    "XSI_NS",
    "JSONHandler",
    "MARCMakerReader",
    "parse_json_to_array",
    "SUBFIELD_INDICATOR",
    "BadLeaderValue",
    "BadSubfieldCodeWarning",
    "BaseAddressInvalid",
    "BaseAddressNotFound",
    "EndOfRecordNotFound",
    "FatalReaderError",
    "Field",
    "FieldNotFound",
    "FieldTooLong",
    "Indicators",
    "JSONReader",
    "JSONWriter",
    "Leader",
    "MARC8ToUnicode",
    "MARCReader",
    "MARCWriter",
    "MissingLinkedFields",
    "NoActiveFile",
    "NoFieldsFound",
    "PymarcException",
    "RawField",
    "Reader",
    "LazyRecord",
    "Record",
    "RecordDirectoryInvalid",
    "RecordLeaderInvalid",
    "RecordLengthInvalid",
    "RecordTooLong",
    "Subfield",
    "TextWriter",
    "TruncatedRecord",
    "WriteNeedsRecord",
    "Writer",
    "XMLWriter",
    "XmlHandler",
    "convert",
    "extract",
    "map_marc8_field",
    "map_marc8_record",
    "map_records",
    "map_xml",
    "marc8_to_unicode",
    "normalize_subfield_code",
    "parse",
    "parse_xml",
    "parse_xml_to_array",
    "read_all",
    "to_parquet",
    "record_to_xml",
    "record_to_xml_node",
]
