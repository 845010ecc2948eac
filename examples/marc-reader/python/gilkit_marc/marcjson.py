"""MARC-in-JSON to records: ``JSONHandler`` and ``parse_json_to_array`` (pymarc's API)."""

from __future__ import annotations

from typing import Any

from .field import Field, Indicators
from .leader import Leader
from .reader import JSONReader
from .record import Record


class JSONHandler:
    """Builds ``Record``s from decoded MARC-in-JSON; override ``process_record`` to stream."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def element(self, element_dict: dict[str, Any], name: str | None = None) -> None:
        """Turns one MARC-in-JSON record dict into a ``Record`` (consumes the field dicts)."""
        record = Record()
        record.leader = Leader(element_dict["leader"])
        for entry in element_dict["fields"]:
            tag, content = entry.popitem()
            field = Field(tag)
            if field.control_field:
                field.data = content
            else:
                for subfield in content["subfields"]:
                    code, text = subfield.popitem()
                    field.add_subfield(code, text)
                field.indicators = Indicators(content["ind1"], content["ind2"])
            record.add_field(field)
        self.process_record(record)

    def elements(self, dict_list: Any) -> list[Record]:
        """Handles a record dict or a list of them; returns ``records``."""
        if type(dict_list) is not list:
            dict_list = [dict_list]
        for record in dict_list:
            self.element(record)
        return self.records

    def process_record(self, record: Record) -> None:
        """Called with each record; appends it to ``records``."""
        self.records.append(record)


def parse_json_to_array(json_file: Any) -> list[Record]:
    """The records of a MARC-in-JSON document (path, string or text file) as a list."""
    return JSONHandler().elements(JSONReader(json_file).records)


__all__ = ["JSONHandler", "parse_json_to_array"]
