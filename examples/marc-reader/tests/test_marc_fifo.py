"""Ctrl-C while reading a FIFO by path (issue 18, item 3): the read ends with KeyboardInterrupt.

Each case runs a child Python that reads the FIFO by path; the test writes part of the data and
keeps the FIFO open, so the child waits for the rest, then sends SIGINT. Opening the FIFO for
writing returns only once the child has opened it for reading, so the signal always arrives while
the child is inside the reader. The only timeout is a hang guard: before the fix, the child sat in
`read` forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from marc_support import DATA

HANG_GUARD = 120  # seconds; the child ends in milliseconds when it works

CHILD = """
import sys
import gilkit_marc

mode, path = sys.argv[1], sys.argv[2]
print("start", flush=True)
if mode == "reader":
    for record in gilkit_marc.MARCReader(path):
        print("record", flush=True)
elif mode == "read_all":
    gilkit_marc.read_all(path)
elif mode == "extract":
    gilkit_marc.extract(path, ["001"])
else:
    print(len(list(gilkit_marc.MARCReader(path))), flush=True)
print("ended", flush=True)
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")


def _child(mode: str, fifo: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "start"
    return child


@pytest.mark.parametrize("mode", ["reader", "read_all", "extract"])
def test_ctrl_c_interrupts_a_fifo_read_by_path(tmp_path: Path, mode: str) -> None:
    data = (DATA / "pymarc" / "test.dat").read_bytes()
    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    child = _child(mode, fifo)
    # Blocks until the child has opened the FIFO (inside MARCReader / read_all).
    with open(fifo, "wb", buffering=0) as writer:
        writer.write(data[: 755 + 10])  # the first record and the start of the second
        if mode == "reader":
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "record"
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=HANG_GUARD)
        finally:
            child.kill()
    assert "ended" not in out
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
    assert child.returncode != 0


def test_a_fifo_read_by_path_waits_for_its_writer(tmp_path: Path) -> None:
    """Opening a FIFO does not wait for a writer any more; reading must still wait for the data
    rather than take the silence for the end of the file."""
    data = (DATA / "pymarc" / "test.dat").read_bytes()
    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    child = _child("count", fifo)
    with open(fifo, "wb", buffering=0) as writer:
        for i in range(0, len(data), 1000):
            writer.write(data[i : i + 1000])
    try:
        out, err = child.communicate(timeout=HANG_GUARD)
    finally:
        child.kill()
    assert out.split() == ["10", "ended"], err
    assert child.returncode == 0
