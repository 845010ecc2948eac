"""MARC-8 to Unicode, as pymarc's ``marc8_to_unicode`` and ``MARC8ToUnicode``, decoded in Rust.

The Rust decoder (``src/marc8``) follows pymarc's algorithm step for step with pymarc's code
tables, so the strings are identical; the messages pymarc writes to ``sys.stderr`` for characters
it cannot map are written here too (unless ``quiet``/``hide_utf8_warnings``).
"""

from __future__ import annotations

import sys

from . import _native


def marc8_to_unicode(marc8: bytes | str, hide_utf8_warnings: bool = False) -> str:
    """Decodes MARC-8 ``bytes`` to an NFC-normalised ``str``.

    A ``str`` is decoded as pymarc decodes one: character by character, each character's code
    point taken as a MARC-8 code, escape sequences never recognised (pymarc's
    ``map_marc8_record`` does this to records read with ``to_unicode=True``).

    Raises ``UnicodeDecodeError`` (as pymarc) when an escape sequence is cut short.
    """
    if isinstance(marc8, str):
        text, messages, _, _ = _native.marc8_decode_str(marc8, hide_utf8_warnings)
        for message in messages:
            sys.stderr.write(message)
        return text  # type: ignore[no-any-return]
    text, messages, ok, _, _ = _native.marc8_decode(bytes(marc8), hide_utf8_warnings)
    for message in messages:
        sys.stderr.write(message)
    if not ok:
        raise UnicodeDecodeError(
            "marc8_to_unicode", bytes(marc8), 0, len(marc8), "invalid multibyte character encoding"
        )
    return text  # type: ignore[no-any-return]


class MARC8ToUnicode:
    """pymarc's converter object: ``translate(bytes)`` decodes from the working sets ``g0`` and
    ``g1`` (Basic Latin and ANSEL at first) and keeps what escape sequences switch them to for the
    next call, as pymarc's does."""

    basic_latin = 0x42
    ansel = 0x45

    def __init__(self, G0: int = basic_latin, G1: int = ansel, quiet: bool = False) -> None:  # noqa: N803
        self.g0 = G0
        self.g1 = G1
        self.quiet = quiet

    def translate(self, marc8_string: bytes | str) -> str:
        """Decodes ``marc8_string``; ``IndexError``/``TypeError`` where pymarc's raise them.

        A ``str`` is decoded character by character, as pymarc does (see ``marc8_to_unicode``).
        """
        if not marc8_string:
            return ""
        if isinstance(marc8_string, str):
            text, messages, self.g0, self.g1 = _native.marc8_decode_str(
                marc8_string, self.quiet, self.g0, self.g1
            )
            for message in messages:
                sys.stderr.write(message)
            return text  # type: ignore[no-any-return]
        text, messages, ok, self.g0, self.g1 = _native.marc8_decode(
            bytes(marc8_string), self.quiet, self.g0, self.g1
        )
        for message in messages:
            sys.stderr.write(message)
        if not ok:
            raise TypeError("invalid multibyte character encoding")
        return text  # type: ignore[no-any-return]


__all__ = ["MARC8ToUnicode", "marc8_to_unicode"]
