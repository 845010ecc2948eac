"""`to_parquet`, `convert` and the `gilkit-marc convert` command."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from marc_support import DATA

import gilkit_marc

FIELDS = ["001", "245$a", "650$ax", "245"]
TEN_K = DATA / "mrrc" / "10k_records.mrc"


def expected(source: Any, fields: list[str] = FIELDS, **flags: Any) -> dict[str, list[Any]]:
    return gilkit_marc.extract(source, fields, **flags).to_pydict()  # type: ignore[no-any-return]


def no_leftovers(directory: Path) -> None:
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".partial")]


def test_parquet_holds_the_extracted_table_one_row_group_per_round(tmp_path: Path) -> None:
    data = TEN_K.read_bytes() * 4  # 40,000 records: rounds of 32,768
    out = tmp_path / "records.parquet"
    rounds: list[tuple[int, int]] = []
    rows = gilkit_marc.to_parquet(data, out, FIELDS, progress=lambda r, b: rounds.append((r, b)))
    assert rows == 40_000
    parquet = pq.ParquetFile(out)
    # Written as the rounds were built (memory bounded), not all at the end.
    assert parquet.metadata.num_row_groups == 2
    assert rounds == [(32_768, rounds[0][1]), (40_000, len(data))]
    assert parquet.read().to_pydict() == expected(data)
    no_leftovers(tmp_path)


def test_csv_joins_each_cells_values(tmp_path: Path) -> None:
    source = DATA / "pymarc" / "bad_records.mrc"
    out = tmp_path / "records.csv"
    gilkit_marc.convert(source, out, FIELDS, separator=" ; ")
    with open(out, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == FIELDS
    want = expected(source)
    for i, line in enumerate(lines[1:]):
        assert line == [" ; ".join(want[f][i] or []) for f in FIELDS]
    assert len(lines) - 1 == len(want["001"])


def test_jsonl_holds_lists_and_nulls(tmp_path: Path) -> None:
    source = DATA / "pymarc" / "bad_records.mrc"
    out = tmp_path / "records.jsonl"
    gilkit_marc.convert(source, out, FIELDS)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = expected(source)
    assert rows == [{f: want[f][i] for f in FIELDS} for i in range(len(want["001"]))]
    assert any(row["001"] is None for row in rows)


def test_an_existing_file_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "records.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        gilkit_marc.to_parquet(TEN_K, out, FIELDS)
    assert out.read_bytes() == b"precious"
    no_leftovers(tmp_path)
    gilkit_marc.to_parquet(TEN_K, out, FIELDS, overwrite=True)
    assert pq.read_table(out).num_rows == 10_000


def test_a_failed_conversion_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    with pytest.raises(gilkit_marc.PymarcException):
        gilkit_marc.convert(DATA / "pymarc" / "bad_records.mrc", out, FIELDS, permissive=False)
    assert not out.exists()
    no_leftovers(tmp_path)
    # A failure over an existing file with overwrite leaves it as it was.
    out.write_text("old")
    with pytest.raises(gilkit_marc.PymarcException):
        gilkit_marc.convert(DATA / "pymarc" / "bad_records.mrc", out, FIELDS, permissive=False, overwrite=True)
    assert out.read_text() == "old"
    no_leftovers(tmp_path)


def test_format_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output format"):
        gilkit_marc.convert(TEN_K, tmp_path / "out.xlsx", FIELDS)
    with pytest.raises(ValueError, match="JSON"):
        gilkit_marc.convert(TEN_K, tmp_path / "out.jsonl", FIELDS, to_unicode=False)
    with pytest.raises(ValueError, match="field spec"):
        gilkit_marc.to_parquet(TEN_K, tmp_path / "out.parquet", ["24$"])
    no_leftovers(tmp_path)
    assert list(tmp_path.iterdir()) == []


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gilkit_marc", *args], input=stdin, capture_output=True, timeout=300
    )


def test_cli_converts_to_each_format(tmp_path: Path) -> None:
    for name in ["out.parquet", "out.csv", "out.jsonl"]:
        result = run_cli("convert", str(TEN_K), str(tmp_path / name), "--field", "001", "-f", "245$a,650$ax")
        assert result.returncode == 0, result.stderr
        assert b"wrote 10,000 rows" in result.stderr
    assert pq.read_table(tmp_path / "out.parquet").to_pydict() == expected(TEN_K, ["001", "245$a", "650$ax"])
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 10_000


def test_cli_reads_standard_input(tmp_path: Path) -> None:
    result = run_cli("convert", "-", str(tmp_path / "out.jsonl"), "-f", "001", "--quiet", stdin=TEN_K.read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["001"] for r in rows] == expected(TEN_K, ["001"])["001"]


def test_cli_errors_and_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("keep me")
    exists = run_cli("convert", str(TEN_K), str(out), "-f", "001")
    assert exists.returncode == 1
    assert b"exists; pass --force" in exists.stderr
    assert out.read_text() == "keep me"
    assert run_cli("convert", str(TEN_K), str(out), "-f", "001", "--force").returncode == 0
    assert out.read_bytes().startswith(b"001\r\n")

    missing = run_cli("convert", str(tmp_path / "nope.mrc"), str(tmp_path / "x.csv"), "-f", "001")
    assert (missing.returncode, b"no such file" in missing.stderr) == (1, True)
    bad_spec = run_cli("convert", str(TEN_K), str(tmp_path / "x.csv"), "-f", "24$")
    assert bad_spec.returncode == 2 and b"bad field spec" in bad_spec.stderr
    bad_format = run_cli("convert", str(TEN_K), str(tmp_path / "x.txt"), "-f", "001")
    assert bad_format.returncode == 2 and b"output format" in bad_format.stderr
    strict = run_cli("convert", str(DATA / "pymarc" / "bad_records.mrc"), str(tmp_path / "x.csv"), "-f", "001", "--strict")
    assert strict.returncode == 1 and b"Traceback" not in strict.stderr
    no_args = run_cli("convert", str(TEN_K), str(tmp_path / "x.csv"))
    assert no_args.returncode == 2
    assert not (tmp_path / "x.csv").exists()
    no_leftovers(tmp_path)


def test_cli_progress_bar_is_drawn_only_on_a_terminal(tmp_path: Path) -> None:
    """Not a terminal (a pipe): no bar; the bar itself is checked through `Progress`."""
    result = run_cli("convert", str(TEN_K), str(tmp_path / "out.csv"), "-f", "001")
    assert b"\r" not in result.stderr
    from gilkit_marc.cli import Progress

    stream = io.StringIO()
    bar = Progress(stream, total_bytes=1000)
    bar(10, 500)
    bar.done()
    assert "[###############...............]  50% 10 records" in stream.getvalue()


def test_cli_ctrl_c_exits_130_and_leaves_no_file(tmp_path: Path) -> None:
    """SIGINT while converting a FIFO that stays open (the command waits for more) ends it with
    exit code 130, no output and no temporary file. The signal is sent once the temporary file
    exists, so the conversion is under way; the timeout is only a hang guard."""
    import os
    import signal
    import time

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.parquet"
    child = subprocess.Popen(
        [sys.executable, "-m", "gilkit_marc", "convert", str(fifo), str(out), "-f", "245$a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with open(fifo, "wb", buffering=0) as writer:  # returns once the command has opened it
        writer.write(TEN_K.read_bytes()[:100_000])
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".partial") for p in out_dir.iterdir()):
            assert child.poll() is None, child.stderr.read() if child.stderr else b""
            assert time.monotonic() < deadline, "the conversion never started"
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        try:
            _, err = child.communicate(timeout=120)
        finally:
            child.kill()
    assert child.returncode == 130, err
    assert b"interrupted; no output written" in err
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_stops_extract(tmp_path: Path) -> None:
    """Ctrl-C during `extract` of a FIFO that does not end raises KeyboardInterrupt."""
    import os
    import signal

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    code = (
        "import sys, gilkit_marc\n"
        "print('start', flush=True)\n"
        "gilkit_marc.extract(sys.argv[1], ['245$a'], threads=2)\n"
        "print('ended', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "start"
    with open(fifo, "wb", buffering=0) as writer:  # the child has opened it: extract is reading
        writer.write(TEN_K.read_bytes()[:50_000])
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=120)
        finally:
            child.kill()
    assert "ended" not in out
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
