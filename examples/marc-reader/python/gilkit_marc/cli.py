"""The ``gilkit-marc`` command (also ``python -m gilkit_marc``).

``gilkit-marc convert IN OUT --field 001 --field 245$a ...`` writes the columns of the records
of ``IN`` (a MARC 21 file, or ``-`` for standard input) to ``OUT`` as Parquet, CSV or JSON Lines
(from the suffix, or ``--format``), streaming with bounded memory (see
``gilkit_marc.extract.convert``). A progress bar is drawn on standard error when it is a terminal.

Exit codes: 0 done; 1 the conversion failed (input missing or unreadable, output exists, a bad
record with ``--strict``, disk full...); 2 bad usage (unknown option, bad field spec); 130
interrupted (Ctrl-C). ``OUT`` is never overwritten without ``--force``, and a failed or
interrupted run leaves no partial file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from .extract import FORMATS, convert, format_for

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Progress:
    """A one-line progress bar on a terminal: records, MB read, percent of the input's size."""

    def __init__(self, stream: IO[str], total_bytes: int | None) -> None:
        self.stream, self.total = stream, total_bytes
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, records: int, bytes_read: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{records:,} records, {bytes_read / 1e6:,.1f} MB, {records / elapsed:,.0f} records/s"
        if self.total:
            fraction = min(bytes_read / self.total, 1.0)
            filled = int(fraction * 30)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} " + text
        self.stream.write("\r" + text + " " * 4)
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gilkit-marc", description="MARC 21 tools built on gilkit_marc.")
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser(
        "convert",
        help="write fields of MARC records to Parquet, CSV or JSON Lines",
        description="Write the given fields of every record of IN to OUT, one row per record.",
        epilog=(
            "Field specs: 001 or 245 (the field's value), 245$a or 650$ax (those subfields' values), "
            "LDR (the leader). Each cell holds every occurrence in the record: a list in Parquet and "
            "JSON Lines, the values joined by --separator in CSV."
        ),
    )
    conv.add_argument("input", metavar="IN", help="MARC 21 file (ISO 2709), or - for standard input")
    conv.add_argument("output", metavar="OUT", help="output file (.parquet, .csv or .jsonl)")
    conv.add_argument(
        "-f",
        "--field",
        dest="fields",
        action="append",
        required=True,
        metavar="SPEC",
        help="a field spec (repeat it, or separate specs with commas): 001, 245, 245$a, 650$ax, LDR",
    )
    conv.add_argument("--format", choices=sorted(set(FORMATS.values())), help="output format (default: from OUT's suffix)")
    conv.add_argument("--force", action="store_true", help="replace OUT if it exists")
    conv.add_argument("--threads", type=int, default=None, help="threads (default: one per CPU)")
    conv.add_argument("--separator", default="|", help="CSV: between the values of one cell (default: |)")
    conv.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable record instead of writing an empty row"
    )
    conv.add_argument("--force-utf8", action="store_true", help="read every record as UTF-8 (pymarc's force_utf8)")
    conv.add_argument(
        "--utf8-handling",
        default="strict",
        help="invalid UTF-8: strict (the record is unreadable), replace or ignore (pymarc's utf8_handling)",
    )
    conv.add_argument("--quiet", action="store_true", help="no progress bar, no MARC-8 warnings")
    return parser


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"gilkit-marc: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit code."""
    args = _parser().parse_args(argv)
    fields = [spec.strip() for arg in args.fields for spec in arg.split(",") if spec.strip()]
    try:
        fmt = args.format or format_for(args.output)
    except ValueError as e:
        return _fail(str(e), EXIT_USAGE)
    if args.threads is not None and args.threads < 1:
        return _fail("--threads must be at least 1", EXIT_USAGE)
    source: Any
    total: int | None = None
    if args.input == "-":
        source = sys.stdin.buffer
    else:
        if not os.path.exists(args.input):
            return _fail(f"{args.input}: no such file")
        source = args.input
        try:
            total = os.path.getsize(args.input)
        except OSError:
            total = None
    show = not args.quiet and sys.stderr.isatty()
    progress = Progress(sys.stderr, total) if show else None
    try:
        rows = convert(
            source,
            args.output,
            fields,
            format=fmt,
            threads=args.threads,
            permissive=not args.strict,
            force_utf8=args.force_utf8,
            utf8_handling=args.utf8_handling,
            hide_utf8_warnings=args.quiet,
            overwrite=args.force,
            separator=args.separator,
            progress=progress,
        )
    except KeyboardInterrupt:
        if progress:
            progress.done()
        print("gilkit-marc: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FileExistsError:
        if progress:
            progress.done()
        return _fail(f"{args.output} exists; pass --force to replace it")
    except ValueError as e:
        if progress:
            progress.done()
        # A bad field spec is a usage error; a bad record (with --strict) a failed conversion.
        bad_spec = "field spec" in str(e)
        return _fail(str(e), EXIT_USAGE if bad_spec else EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - every other failure is reported, not a traceback
        if progress:
            progress.done()
        return _fail(f"{type(e).__name__}: {e}")
    if progress:
        progress.done()
    if not args.quiet:
        print(f"wrote {rows:,} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
