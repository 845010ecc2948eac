"""Merge two runs of one benchmark script (a baseline build, a candidate build) into one report whose
tables show each figure before | after, side by side.

Every benchmark script here prints markdown: headings, text and tables. The two runs must come from
the same script, so their tables appear in the same order with the same columns; rows are matched by
their first cell, and by position among rows with the same first cell (rows only one run has are
kept, with the other side empty). A column equal before and after in every row is shown once. Text outside tables
is taken from the (first) candidate run. How the runs were made (which builds, interleaved or not)
is for the results file to say; this only lays the figures out.

Given several runs a side (`--before B1 B2 B3 --after A1 A2 A3`, e.g. builds run in rotation), a
cell shows the median over that side's runs where every run's cell is a number (with the first
run's decimals and unit: `1,234`, `0.98x`, `12.5 ms`, `3%`), and the first run's text otherwise.

    python benches/side_by_side.py --before B.md [B2.md ...] --after A.md [A2.md ...] \
        [--labels before after] > merged.md
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path


def split_blocks(text: str) -> list[str | list[list[str]]]:
    """The text as a list of plain lines (str) and tables (a list of rows, each a list of cells;
    the markdown separator row is dropped and re-made on output)."""
    blocks: list[str | list[list[str]]] = []
    table: list[list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table is None:
                table = []
                blocks.append(table)
            if not all(set(c) <= set("-: ") and c for c in cells):
                table.append(cells)
        else:
            table = None
            blocks.append(line)
    return blocks


NUMBER = re.compile(r"^(\*\*)?(-?[\d,]*\.?\d+)(.*?)(\*\*)?$")


def median_cell(cells: list[str]) -> str:
    """The median of cells that all hold a number with the same unit, else the first cell."""
    parsed = [m for m in map(NUMBER.match, cells) if m is not None]
    if len(parsed) != len(cells) or len({m.group(3) for m in parsed}) != 1:
        return cells[0]
    first = parsed[0]
    value = statistics.median(float(m.group(2).replace(",", "")) for m in parsed)
    digits = first.group(2)
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    text = f"{value:,.{decimals}f}" if "," in digits else f"{value:.{decimals}f}"
    bold = first.group(1) or ""
    return f"{bold}{text}{first.group(3)}{first.group(4) or ''}"


def median_table(tables: list[list[list[str]]]) -> list[list[str]]:
    """One table whose cells are the medians of the same cells (same row key) of `tables`."""
    header, *rows = tables[0]
    others = [keyed(t[1:]) for t in tables]
    out = [header]
    for key, row in keyed(rows).items():
        same = [r for r in (t.get(key) for t in others) if r is not None and len(r) == len(row)]
        out.append([row[0]] + [median_cell([r[i] for r in same]) for i in range(1, len(row))])
    return out


def tables_of(path: Path) -> list[list[list[str]]]:
    return [b for b in split_blocks(path.read_text()) if isinstance(b, list)]


def keyed(rows: list[list[str]]) -> dict[tuple[str, int], list[str]]:
    """Rows by (first cell, how many earlier rows had that first cell): rows are matched by their
    first cell, and by position among rows that share one (a table keyed by several columns)."""
    seen: dict[str, int] = {}
    out = {}
    for row in rows:
        n = seen.get(row[0], 0)
        seen[row[0]] = n + 1
        out[(row[0], n)] = row
    return out


def merge_table(before: list[list[str]], after: list[list[str]], labels: tuple[str, str]) -> list[str]:
    """One table: a column whose cells are the same before and after in every row once, every
    other column twice (before, after)."""
    header_b, *rows_b = before
    header_a, *rows_a = after
    if header_b != header_a:
        raise SystemExit(f"tables differ in columns:\n  {header_b}\n  {header_a}")
    width = len(header_a)
    blank = [""] * width
    by_key_b, by_key_a = keyed(rows_b), keyed(rows_a)
    keys = list(by_key_a) + [k for k in by_key_b if k not in by_key_a]
    pairs = [
        ((by_key_b.get(k) or [k[0], *blank[1:]]) + blank)[:width]
        for k in keys
    ], [((by_key_a.get(k) or [k[0], *blank[1:]]) + blank)[:width] for k in keys]
    shared = [all(b[i] == a[i] for b, a in zip(*pairs)) for i in range(width)]
    header = [header_a[0]]
    for i, name in enumerate(header_a[1:], start=1):
        header += [name] if shared[i] else [f"{name} ({labels[0]})", f"{name} ({labels[1]})"]
    out = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for b, a in zip(*pairs):
        cells = [a[0]]
        for i in range(1, width):
            cells += [a[i]] if shared[i] else [b[i], a[i]]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, nargs="+", required=True)
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--labels", nargs=2, default=("before", "after"))
    args = parser.parse_args()
    before = [median_table(list(ts)) for ts in zip(*map(tables_of, args.before), strict=True)]
    after = [median_table(list(ts)) for ts in zip(*map(tables_of, args.after), strict=True)]
    out: list[str] = []
    tables = 0
    for block in split_blocks(args.after[0].read_text()):
        if isinstance(block, str):
            out.append(block)
            continue
        if tables >= len(before):
            raise SystemExit("the candidate run has more tables than the baseline run")
        out += merge_table(before[tables], after[tables], tuple(args.labels))
        tables += 1
    if tables != len(before):
        raise SystemExit("the baseline run has more tables than the candidate run")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
