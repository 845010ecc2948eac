"""Type stub for the Rust extension ``gilkit_marc._native`` (see ``src/python/``)."""

from collections.abc import Sequence
from os import PathLike
from typing import Any, BinaryIO, Literal, final, overload

from typing_extensions import Self, disjoint_base

from .field import Field
from .record import LazyRecord, Record

__all__ = ["MARCReader", "Table", "_FieldsDescriptor", "_LazyFields", "_parse_jobs_running", "_set_parse_cores", "_set_parse_worker_mode", "as_marc", "convert", "decode_into", "extract", "marc8_decode", "marc8_decode_str", "read_all"]

_Target = str | PathLike[str] | bytes | bytearray | memoryview | BinaryIO

@disjoint_base
class MARCReader:
    """pymarc's MARCReader: yields Records, or None for unreadable ones (see current_exception)."""

    permissive: bool
    to_unicode: bool
    force_utf8: bool
    hide_utf8_warnings: bool
    utf8_handling: str
    file_encoding: str
    @property
    def readahead(self) -> bool: ...
    @property
    def lazy_fields(self) -> bool: ...
    @property
    def file_handle(self) -> Any: ...
    @property
    def current_chunk(self) -> bytes | None: ...
    @property
    def current_exception(self) -> BaseException | None: ...
    def __new__(
        cls,
        marc_target: _Target,
        to_unicode: bool = True,
        force_utf8: bool = False,
        hide_utf8_warnings: bool = False,
        utf8_handling: str = "strict",
        file_encoding: str = "iso8859-1",
        permissive: bool = False,
        *,
        readahead: bool = True,
        lazy_fields: bool = False,
    ) -> Self: ...
    def __iter__(self) -> MARCReader: ...
    def __next__(self) -> Record | None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int | float]: ...

@final
class _LazyFields:
    """The parsed fields of a record read with lazy_fields=True, built when first used."""

    def fields(self) -> list[Field]: ...
    def select(self, tags: tuple[Any, ...], limit: int | None = None) -> list[Field] | None: ...

@final
class _FieldsDescriptor:
    """LazyRecord.fields: the list of fields, built on first use."""

    def __new__(cls) -> Self: ...
    @overload
    def __get__(self, record: None, owner: Any = None, /) -> Self: ...
    @overload
    def __get__(self, record: LazyRecord, owner: Any = None, /) -> list[Field]: ...
    def __set__(self, record: LazyRecord, value: list[Field], /) -> None: ...
    def __delete__(self, record: LazyRecord, /) -> None: ...

def read_all(
    target: _Target,
    threads: int = 1,
    *,
    permissive: bool = False,
    to_unicode: bool = True,
    force_utf8: bool = False,
    hide_utf8_warnings: bool = False,
    utf8_handling: str = "strict",
    file_encoding: str = "iso8859-1",
    readahead: bool = True,
    lazy_fields: bool = False,
) -> list[Record | None]: ...
def marc8_decode(data: bytes, quiet: bool, g0: int = 0x42, g1: int = 0x45) -> tuple[str, list[str], bool, int, int]: ...
def marc8_decode_str(data: str, quiet: bool, g0: int = 0x42, g1: int = 0x45) -> tuple[str, list[str], int, int]: ...
def decode_into(
    record: Record,
    data: bytes,
    to_unicode: bool,
    force_utf8: bool,
    hide_utf8_warnings: bool,
    utf8_handling: str,
    file_encoding: str,
) -> bool: ...
def as_marc(record: Record) -> bytes | None: ...
def _parse_jobs_running() -> int: ...
def _set_parse_cores(cores: int) -> None: ...
def _set_parse_worker_mode(mode: Literal["normal", "idle", "lagging"]) -> None: ...

@final
class Table:
    """extract's result: Arrow record batches, one list column per field spec."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...
    @property
    def num_rows(self) -> int: ...
    def __len__(self) -> int: ...
    @property
    def column_names(self) -> list[str]: ...
    def to_pydict(self) -> dict[str, list[list[Any] | None]]: ...

def extract(
    source: _Target,
    fields: str | Sequence[str],
    *,
    threads: int | None = None,
    permissive: bool = True,
    to_unicode: bool = True,
    force_utf8: bool = False,
    utf8_handling: str = "strict",
    hide_utf8_warnings: bool = False,
    file_encoding: str = "iso8859-1",
) -> Table: ...
def convert(
    source: _Target,
    path: str | PathLike[str],
    fields: str | Sequence[str],
    *,
    format: str,
    threads: int | None = None,
    permissive: bool = True,
    to_unicode: bool = True,
    force_utf8: bool = False,
    utf8_handling: str = "strict",
    hide_utf8_warnings: bool = False,
    file_encoding: str = "iso8859-1",
    overwrite: bool = False,
    separator: str = "|",
    progress: Any = None,
) -> int: ...
