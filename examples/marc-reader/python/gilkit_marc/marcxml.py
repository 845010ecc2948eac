"""MARCXML: ``record_to_xml``, ``parse_xml_to_array`` and friends (pymarc's API and output)."""

from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from xml.sax import make_parser
from xml.sax.handler import ContentHandler, feature_namespaces

from .field import Field, Indicators
from .leader import Leader
from .marc8 import MARC8ToUnicode
from .record import Record

XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MARC_XML_NS = "http://www.loc.gov/MARC21/slim"
MARC_XML_SCHEMA = "http://www.loc.gov/MARC21/slim http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd"


class XmlHandler(ContentHandler):
    """SAX handler building ``Record``s; override ``process_record`` to stream them.

    ``strict`` ignores elements outside the MARC21 slim namespace; ``normalize_form`` (``'NFC'``,
    ...) normalises text with ``unicodedata.normalize``.
    """

    def __init__(self, strict: bool = False, normalize_form: str | None = None) -> None:
        super().__init__()
        self.records: list[Record] = []
        self._record: Record | None = None
        self._field: Field | None = None
        self._subfield_code: str | None = None
        self._text: list[str] = []
        self._strict = strict
        self.normalize_form = normalize_form

    def startElementNS(self, name: tuple[str | None, str], qname: Any, attrs: Any) -> None:  # noqa: N802
        if self._strict and name[0] != MARC_XML_NS:
            return
        element = name[1]
        self._text = []
        if element == "record":
            self._record = Record()
        elif element == "controlfield":
            self._field = Field(attrs.getValue((None, "tag")))
        elif element == "datafield":
            ind1 = attrs.get((None, "ind1"), " ")
            ind2 = attrs.get((None, "ind2"), " ")
            self._field = Field(attrs.getValue((None, "tag")), Indicators(ind1, ind2))
        elif element == "subfield":
            self._subfield_code = attrs[(None, "code")]

    def endElementNS(self, name: tuple[str | None, str], qname: Any) -> None:  # noqa: N802
        if self._strict and name[0] != MARC_XML_NS:
            return
        element = name[1]
        text = "".join(self._text)
        if self.normalize_form is not None:
            text = unicodedata.normalize(self.normalize_form, text)  # type: ignore[arg-type]
        if element == "record" and self._record:
            self.process_record(self._record)
            self._record = None
        elif element == "leader" and self._record:
            self._record.leader = Leader(text)
        elif element == "controlfield" and self._record and self._field:
            self._field.data = text
            self._record.add_field(self._field)
            self._field = None
        elif element == "datafield" and self._record and self._field:
            self._record.add_field(self._field)
            self._field = None
        elif element == "subfield" and self._field and self._subfield_code:
            self._field.add_subfield(self._subfield_code, text)
            self._subfield_code = None
        self._text = []

    def characters(self, content: str) -> None:
        self._text.append(content)

    def process_record(self, record: Record) -> None:
        """Called with each complete record; appends it to ``records``."""
        self.records.append(record)


def parse_xml(xml_file: Any, handler: ContentHandler) -> None:
    """Parses a MARCXML file (path or file object) with ``handler``."""
    parser = make_parser()
    parser.setContentHandler(handler)
    parser.setFeature(feature_namespaces, 1)
    parser.parse(xml_file)


def map_xml(function: Callable[[Record], Any], *files: Any) -> None:
    """Calls ``function`` on each record of each MARCXML file."""
    handler = XmlHandler()
    handler.process_record = function  # type: ignore[method-assign,assignment]
    for xml_file in files:
        parse_xml(xml_file, handler)


def parse_xml_to_array(xml_file: Any, strict: bool = False, normalize_form: str | None = None) -> list[Record]:
    """The records of a MARCXML file (path or file object) as a list."""
    handler = XmlHandler(strict, normalize_form)
    parse_xml(xml_file, handler)
    return handler.records


def record_to_xml(record: Record, quiet: bool = False, namespace: bool = False) -> bytes:
    """The record as a MARCXML ``<record>`` element (bytes, as ``ET.tostring``)."""
    return ET.tostring(record_to_xml_node(record, quiet, namespace))


def record_to_xml_node(record: Record, quiet: bool = False, namespace: bool = False) -> ET.Element:
    """The record as an ``ElementTree`` element; ``bytes`` values are decoded from MARC-8."""
    marc8 = MARC8ToUnicode(quiet=quiet)

    def text(data: Any) -> str:
        return data if type(data) is str else marc8.translate(data)

    root = ET.Element("record")
    if namespace:
        root.set("xmlns", MARC_XML_NS)
        root.set("xmlns:xsi", XSI_NS)
        root.set("xsi:schemaLocation", MARC_XML_SCHEMA)
    ET.SubElement(root, "leader").text = str(record.leader)
    for field in record:
        if field.control_field:
            element = ET.SubElement(root, "controlfield")
            element.set("tag", field.tag)
            element.text = text(field.data)
        else:
            element = ET.SubElement(root, "datafield")
            element.set("ind1", field.indicators.first)  # type: ignore[union-attr]
            element.set("ind2", field.indicators.second)  # type: ignore[union-attr]
            element.set("tag", field.tag)
            for subfield in field:
                sub = ET.SubElement(element, "subfield")
                sub.set("code", subfield.code)
                sub.text = text(subfield.value)
    return root


__all__ = ["MARC_XML_NS", "MARC_XML_SCHEMA", "XSI_NS", "XmlHandler", "map_xml", "parse_xml", "parse_xml_to_array", "record_to_xml", "record_to_xml_node"]
