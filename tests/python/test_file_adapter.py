"""The file adapter (gilkit::file) from Python: every kind of source, misbehaving file objects,
errors in stream order, GIL release per batch, threads overlapping in phase 2, the writer."""

from __future__ import annotations

import array
import gzip
import io
import os
import pathlib
import socket
import threading
import time

import gilkit_testext as ext
import pytest
from gil_probe import assert_holds_gil, assert_releases_gil

LINES = [b"line %d " % i + b"x" * (i % 50) for i in range(2000)]
DATA = b"".join(line + b"\n" for line in LINES)


def marc_record(payload: bytes) -> bytes:
    return b"%05d" % (len(payload) + 5) + payload


MARC = [marc_record(b"record %d " % i + b"y" * (i % 300)) for i in range(500)]
MARC_DATA = b"".join(MARC)


def read(obj, **kw):
    records, _stats = ext.file_read(obj, **kw)
    return records


@pytest.fixture
def data_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "lines.txt"
    path.write_bytes(DATA)
    return path


# ---------------------------------------------------------------------------------------------
# Sources


def test_a_path_str_or_pathlike_is_read_by_rust(data_file):
    assert ext.file_source_kind(str(data_file)) == "path"
    assert ext.file_source_kind(data_file) == "path"
    assert read(str(data_file)) == LINES
    _, stats = ext.file_read(data_file)
    assert stats["python_calls"] == 0


def test_a_missing_path_raises_file_not_found_with_the_name(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        read(tmp_path / "nope.txt")
    assert info.value.filename == str(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "make",
    [bytes, bytearray, memoryview, lambda d: memoryview(bytearray(d))[0:], lambda d: array.array("B", d)],
    ids=["bytes", "bytearray", "memoryview", "memoryview-of-bytearray", "array"],
)
def test_buffers_are_read_from_memory(make):
    obj = make(DATA)
    assert ext.file_source_kind(obj) == "memory"
    assert read(obj) == LINES


def test_a_buffer_of_wider_items_is_read_as_its_bytes():
    words = array.array("I", [0x0A414141] * 3)  # b"AAA\n" on little-endian
    assert read(words) == [words.tobytes()[0:3]] * 3


def test_open_rb_takes_the_descriptor_path_and_keeps_the_position_right(data_file):
    with open(data_file, "rb") as f:
        first = f.readline()  # Python reads ahead into its buffer
        assert ext.file_source_kind(f) == "fd"
        assert read(f) == LINES[1:]
        assert first == LINES[0] + b"\n"
        assert f.tell() == len(DATA)
        assert f.read() == b""
    with open(data_file, "rb", buffering=0) as raw:
        assert ext.file_source_kind(raw) == "fd"
        assert read(raw) == LINES


def test_open_rb_without_the_descriptor_path_reads_the_same(data_file):
    with open(data_file, "rb") as f:
        assert ext.file_source_kind(f, no_fd=True) == "file_object"
        records, stats = ext.file_read(f, no_fd=True, buffer_size=4096)
        assert records == LINES
        # Few Python calls: one readinto per 4 KiB, plus the one that sees EOF.
        assert stats["python_calls"] <= len(DATA) // 4096 + 2


def test_bytesio():
    f = io.BytesIO(DATA)
    assert ext.file_source_kind(f) == "file_object"
    assert read(f) == LINES


def test_gzip_file_over_a_real_compressed_file(tmp_path):
    path = tmp_path / "lines.txt.gz"
    with gzip.open(path, "wb") as out:
        out.write(DATA)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    with gzip.open(path, "rb") as f:
        # GzipFile has fileno() (the compressed file's): it must not take the descriptor path.
        assert ext.file_source_kind(f) == "file_object"
        assert read(f) == LINES


def test_socket_makefile_rb():
    left, right = socket.socketpair()
    with left, right:

        def send():
            for i in range(0, len(MARC_DATA), 1000):
                right.sendall(MARC_DATA[i : i + 1000])
            right.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        with left.makefile("rb") as f:
            assert ext.file_source_kind(f) == "file_object"
            assert read(f, framing_name="marc") == MARC
        sender.join()


class ReadOnly:
    """A user class with only read()."""

    def __init__(self, data: bytes):
        self.data, self.at, self.calls = data, 0, 0

    def read(self, n: int = -1) -> bytes:
        self.calls += 1
        n = len(self.data) - self.at if n < 0 else n
        chunk = self.data[self.at : self.at + n]
        self.at += len(chunk)
        return chunk


class ShortReadInto:
    """A user class whose readinto returns at most `chunk` bytes."""

    def __init__(self, data: bytes, chunk: int):
        self.data, self.at, self.chunk, self.calls = data, 0, chunk, 0

    def readinto(self, b) -> int:
        self.calls += 1
        n = min(len(b), self.chunk, len(self.data) - self.at)
        b[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def test_a_user_class_with_read_only():
    f = ReadOnly(MARC_DATA)
    assert ext.file_source_kind(f) == "file_object"
    assert read(f, framing_name="marc", buffer_size=10_000) == MARC
    assert f.calls <= len(MARC_DATA) // 10_000 + 2


def test_short_reads_are_gathered_into_full_buffers():
    f = ShortReadInto(MARC_DATA, chunk=7)
    records, stats = ext.file_read(f, framing_name="marc", buffer_size=4096)
    assert records == MARC
    # Short reads are looped over in phase 1: one release per full buffer, not per read.
    assert stats["gil_releases"] <= len(MARC_DATA) // 4096 + 3
    assert f.calls == stats["python_calls"] > len(MARC_DATA) // 7


class KeepsTheBuffer(ShortReadInto):
    """A badly behaved readinto that keeps a slice of each buffer it is lent and scribbles on it
    at the next call, when the reader is holding unparsed bytes."""

    def readinto(self, b) -> int:
        if hasattr(self, "kept"):
            self.kept[:] = b"Z" * len(self.kept)
        self.kept = memoryview(b)[:8]
        return super().readinto(b)


def test_a_readinto_that_keeps_the_buffer_cannot_corrupt_the_records():
    f = KeepsTheBuffer(DATA, chunk=1 << 20)
    # The scribbles land in memory the reader gave up to Python, never in its own buffer.
    assert read(f, buffer_size=1000) == LINES


def test_text_mode_files_are_refused_with_advice(data_file):
    with open(data_file, "r") as f:
        with pytest.raises(TypeError, match="binary mode"):
            read(f)
    with pytest.raises(TypeError, match="binary mode"):
        read(io.StringIO("a\nb\n"))

    class StrReader:
        def read(self, n):
            return "text"

    with pytest.raises(TypeError, match="binary mode"):
        read(StrReader())


def test_other_objects_are_refused():
    with pytest.raises(TypeError, match="binary file object"):
        read(42)


# ---------------------------------------------------------------------------------------------
# Misbehaving file objects and errors


class FailsOnce:
    """Serves DATA in 1000-byte reads; the third read raises (with a cause), once."""

    def __init__(self):
        self.src = io.BytesIO(DATA)
        self.calls = 0
        self.raised: Exception | None = None

    def read(self, n):
        self.calls += 1
        if self.calls == 3:
            try:
                raise KeyError("inner")
            except KeyError as inner:
                self.raised = ConnectionResetError(104, "peer went away")
                raise self.raised from inner
        return self.src.read(min(n, 1000))


def test_an_exception_from_read_comes_back_unchanged_after_the_records_before_it():
    f = FailsOnce()
    records = ext.FileRecords(f, buffer_size=1000)
    got = []
    with pytest.raises(ConnectionResetError) as info:
        for record in records:
            got.append(record)
    assert info.value is f.raised
    assert isinstance(info.value.__cause__, KeyError)
    # Every record complete in the 2000 bytes read before the failure was delivered first ...
    assert got == LINES[: len(got)]
    assert len(got) == DATA[:2000].count(b"\n")
    # ... and nothing after it is lost: iterating again resumes.
    got.extend(records)
    assert got == LINES


class NoneThenData:
    """Non-blocking style: read() returns None until `ready_after` seconds have passed."""

    def __init__(self, data: bytes, ready_after: float):
        self.data, self.at = data, 0
        self.ready_at = time.monotonic() + ready_after
        self.calls = 0

    def read(self, n):
        self.calls += 1
        if time.monotonic() < self.ready_at:
            return None
        chunk = self.data[self.at : self.at + n]
        self.at += len(chunk)
        return chunk


def test_read_returning_none_is_waited_on_without_a_busy_loop():
    f = NoneThenData(DATA, ready_after=0.3)
    assert read(f) == LINES
    # Backoff from 1 ms to 50 ms: about a dozen polls in 0.3 s; a busy loop would make thousands.
    assert f.calls < 60


def test_a_non_blocking_pipe_is_polled_not_spun():
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    chunks = [MARC_DATA[i : i + 3000] for i in range(0, len(MARC_DATA), 3000)]

    def writer():
        with os.fdopen(wfd, "wb", buffering=0) as w:
            for chunk in chunks:
                time.sleep(0.005)
                w.write(chunk)

    t = threading.Thread(target=writer)
    t.start()
    with io.FileIO(rfd, "rb") as f:
        assert ext.file_source_kind(f) == "file_object"  # a pipe, not a regular file
        records, stats = ext.file_read(f, framing_name="marc", buffer_size=1 << 16)
    t.join()
    assert records == MARC
    assert stats["python_calls"] < 20 * len(chunks)


@pytest.mark.parametrize("hold_gil", [False, True], ids=["record_reader", "py_reader"])
def test_a_fifo_path_is_read_as_its_writer_writes(tmp_path, hold_gil):
    """A FIFO by path is opened without waiting for a writer and polled: the reader neither
    takes the silence before the first write for the end of the data nor blocks in the kernel."""
    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    assert ext.file_source_kind(str(fifo)) == "path"
    chunks = [MARC_DATA[i : i + 3000] for i in range(0, len(MARC_DATA), 3000)]

    def writer():
        with open(fifo, "wb", buffering=0) as w:  # returns once the reader has opened the FIFO
            for chunk in chunks:
                time.sleep(0.002)
                w.write(chunk)

    t = threading.Thread(target=writer)
    t.start()
    try:
        records = read(str(fifo), framing_name="marc", hold_gil=hold_gil)
    finally:
        t.join()
    assert records == MARC


FIFO_CHILD = """
import sys
import gilkit_testext as ext
print("start", flush=True)
ext.file_read(sys.argv[1], framing_name="marc", hold_gil=sys.argv[2] == "1")
print("ended", flush=True)
"""


@pytest.mark.parametrize("hold_gil", [False, True], ids=["record_reader", "py_reader"])
def test_ctrl_c_interrupts_a_fifo_path_waiting_for_data(tmp_path, hold_gil):
    """SIGINT while the reader waits for a FIFO's next bytes ends it with KeyboardInterrupt (a
    blocking read would retry on EINTR forever). The timeout is only a hang guard."""
    import signal
    import subprocess
    import sys

    fifo = tmp_path / "records.fifo"
    os.mkfifo(fifo)
    child = subprocess.Popen(
        [sys.executable, "-c", FIFO_CHILD, str(fifo), "1" if hold_gil else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "start"
    with open(fifo, "wb", buffering=0) as w:  # the child has opened the FIFO: it is reading
        w.write(MARC_DATA[:1000])  # and stays open: the reader waits for the rest
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=120)
        finally:
            child.kill()
    assert "ended" not in out
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err


def test_eof_inside_a_record_names_the_offset_after_the_last_complete_one():
    complete = MARC[:10]
    cut = b"".join(complete) + MARC[10][:17]
    got = []
    with pytest.raises(EOFError) as info:
        for record in ext.FileRecords(io.BytesIO(cut), framing_name="marc", buffer_size=64):
            got.append(record)
    assert got == complete
    offset = len(b"".join(complete))
    assert f"byte offset {offset}" in str(info.value)
    assert "17 bytes" in str(info.value)


def test_an_invalid_length_is_reported_in_place_and_reading_goes_on():
    data = MARC[0] + b"12x45" + MARC[1]
    records = ext.FileRecords(io.BytesIO(data), framing_name="marc")
    assert next(records) == MARC[0]
    with pytest.raises(ValueError, match=f"byte offset {len(MARC[0])}.*12x45"):
        next(records)
    assert list(records) == [MARC[1]]


def test_a_record_larger_than_the_buffer_grows_it():
    big = b"z" * 1_000_000
    data = b"a\n" + big + b"\nb\n"
    records, stats = ext.file_read(io.BytesIO(data), buffer_size=1024)
    assert records == [b"a", big, b"b"]
    assert stats["buffer_capacity"] >= 1_000_000


# ---------------------------------------------------------------------------------------------
# The GIL


def test_one_gil_release_per_batch_not_per_record():
    records = ext.FileRecords(io.BytesIO(DATA), buffer_size=64 * 1024)
    assert list(records) == LINES
    stats = records.stats()
    assert stats["records"] == len(LINES)
    assert stats["gil_releases"] <= stats["batches"] + 1 <= 3


def test_parsing_a_large_file_object_releases_the_gil():
    f = io.BytesIO(MARC_DATA * 4)
    # ~2000 records x 100 us of parse work: 200 ms in phase 2.
    records = assert_releases_gil(lambda: read(f, framing_name="marc", spin_ns=100_000))
    assert len(records) == 4 * len(MARC)


def test_the_same_work_with_the_gil_held_blocks_other_threads():
    # The control: the probe can fail.
    f = io.BytesIO(MARC_DATA * 4)
    records = assert_holds_gil(lambda: read(f, framing_name="marc", spin_ns=100_000, hold_gil=True))
    assert len(records) == 4 * len(MARC)


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_reading_their_own_file_objects_are_in_phase_2_together(threads):
    meeting = ext.Meeting(threads)
    results: list[tuple[bool, int]] = []
    lock = threading.Lock()

    def work(i):
        f = io.BytesIO(DATA) if i % 2 else ShortReadInto(MARC_DATA, 5000)
        result = ext.file_read_meeting(f, meeting, framing_name="lines" if i % 2 else "marc")
        with lock:
            results.append(result)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    # Each thread waited, inside its parse with the GIL released, until all were there.
    assert all(met for met, _ in results), results
    assert sorted(n for _, n in results) == sorted(len(LINES) if i % 2 else len(MARC) for i in range(threads))


def test_a_lone_reader_cannot_meet_a_partner_that_never_comes():
    # The control: the meeting really waits for the others.
    met, n = ext.file_read_meeting(io.BytesIO(DATA), ext.Meeting(2), timeout_s=0.05)
    assert not met and n == len(LINES)


# ---------------------------------------------------------------------------------------------
# The writer


def test_writer_to_bytesio_in_large_chunks():
    out = io.BytesIO()
    calls, written = ext.file_write(out, LINES, capacity=64 * 1024)
    assert out.getvalue() == DATA
    assert written == len(DATA)
    assert calls <= len(DATA) // (64 * 1024) + 3  # writes + the final flush


def test_writer_to_a_path_and_to_gzip_round_trips(tmp_path):
    ext.file_write(tmp_path / "out.txt", LINES)
    assert (tmp_path / "out.txt").read_bytes() == DATA
    ext.file_write(str(tmp_path / "closed.txt"), LINES, close=True)
    assert (tmp_path / "closed.txt").read_bytes() == DATA
    with gzip.open(tmp_path / "out.gz", "wb") as gz:
        ext.file_write(gz, MARC, terminator=b"", capacity=10_000)
    with gzip.open(tmp_path / "out.gz", "rb") as gz:
        assert read(gz, framing_name="marc") == MARC


class ShortWriter:
    def __init__(self):
        self.data, self.calls, self.closed = bytearray(), 0, False

    def write(self, b) -> int:
        self.calls += 1
        n = min(len(b), 1000)
        self.data += bytes(b[:n])
        return n

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_short_writes_are_retried_not_lost():
    out = ShortWriter()
    ext.file_write(out, LINES, capacity=50_000, close=True)
    assert bytes(out.data) == DATA
    assert out.closed
    assert out.calls >= len(DATA) // 1000


class NonBlockingBuffered(io.BufferedIOBase):
    """A buffered non-blocking stream: every other write takes 100 bytes, then would block."""

    def __init__(self):
        self.data, self.calls = bytearray(), 0

    def writable(self):
        return True

    def write(self, b):
        self.calls += 1
        n = min(len(b), 100)
        self.data += bytes(b[:n])
        if self.calls % 2 and n < len(b):
            raise BlockingIOError(11, "would block", n)
        return n


def test_blocking_io_error_with_partial_progress_is_resumed():
    out = NonBlockingBuffered()
    ext.file_write(out, LINES, capacity=10_000)
    assert bytes(out.data) == DATA


def test_serializing_releases_the_gil():
    out = io.BytesIO()
    # 2000 records x 100 us of serialization work: 200 ms with the GIL released.
    assert_releases_gil(lambda: ext.file_write(out, LINES, spin_ns=100_000))
    assert out.getvalue() == DATA


def test_writer_exceptions_come_back_unchanged():
    class Full:
        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as info:
        ext.file_write(Full(), LINES)
    assert info.value.errno == 28


def test_writer_refuses_text_mode(tmp_path):
    with open(tmp_path / "t.txt", "w") as f:
        with pytest.raises(TypeError, match="binary mode"):
            ext.file_write(f, LINES)
