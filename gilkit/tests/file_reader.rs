//! Behaviour of the record reader, the `std::io` adapter and the writer from Rust, with an embedded
//! interpreter: growth for large records, error placement and recovery, exceptions passing
//! through unchanged, short writes retried.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};

use gilkit::file::{
    Delimited, Frame, Framing, FramingError, LengthPrefixed, Lines, PyReader, PyWriter,
    ReaderOptions, RecordReader, Source, SourceKind,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

fn run<'py>(py: Python<'py>, code: &std::ffi::CStr) -> Bound<'py, PyDict> {
    let globals = PyDict::new(py);
    py.run(code, Some(&globals), None).unwrap();
    globals
}

fn collect<F: Framing>(
    py: Python<'_>,
    reader: &mut RecordReader<F>,
) -> Vec<Result<Vec<Vec<u8>>, String>> {
    let mut out = Vec::new();
    loop {
        match reader.next_batch(py, |r| r.to_vec()) {
            Ok(Some(batch)) => out.push(Ok(batch)),
            Ok(None) => return out,
            Err(err) => out.push(Err(err.to_string())),
        }
        assert!(out.len() < 1000, "the reader does not finish");
    }
}

#[test]
fn a_record_larger_than_the_buffer_grows_it_then_it_shrinks_back() {
    Python::attach(|py| {
        let mut input = b"small\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.push(b'\n');
        for _ in 0..50_000 {
            input.extend_from_slice(b"after\n");
        }
        let file = py
            .import("io")
            .unwrap()
            .getattr("BytesIO")
            .unwrap()
            .call1((PyBytes::new(py, &input),))
            .unwrap();
        let opts = ReaderOptions::default().buffer_size(64);
        let mut reader = RecordReader::new(Source::from_py(&file).unwrap(), Lines::new(), opts);
        let mut lens = Vec::new();
        let mut biggest = 0;
        while let Some(batch) = reader.next_batch(py, |r| r.len()).unwrap() {
            biggest = biggest.max(reader.stats().buffer_capacity);
            lens.extend(batch);
        }
        assert_eq!(lens.len(), 50_002);
        assert_eq!(lens[..3], [5, 100_000, 5]);
        assert!(biggest > 100_000, "grew to {biggest}");
        // Once the big record is consumed, the next refill shrinks the buffer again.
        assert!(reader.stats().buffer_capacity < 1024, "shrank back");
    });
}

#[test]
fn try_for_each_stops_where_the_closure_says_and_reports_its_value() {
    use std::ops::ControlFlow;
    Python::attach(|py| {
        let input: Vec<u8> = (0..1000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let opts = ReaderOptions::default().buffer_size(64).max_batch(10);
        let mut reader = RecordReader::new(Source::from_vec(input), Lines::new(), opts);
        let mut seen = Vec::new();
        let stopped = reader
            .try_for_each(
                py,
                |r| {
                    std::str::from_utf8(r)
                        .unwrap()
                        .trim()
                        .parse::<u32>()
                        .unwrap()
                },
                |_py, n| {
                    seen.push(n);
                    Ok::<_, PyErr>(if n == 25 {
                        ControlFlow::Break("at 25")
                    } else {
                        ControlFlow::Continue(())
                    })
                },
            )
            .unwrap();
        assert_eq!(stopped, Some("at 25"));
        assert_eq!(seen, (0..=25).collect::<Vec<_>>());
        // At most one batch (10 records) was parsed past the stop.
        assert!(reader.stats().records <= 26 + 10, "{:?}", reader.stats());
        // To the end: `None`, every remaining record seen once, in order.
        let mut rest = Vec::new();
        let end = reader
            .try_for_each(
                py,
                |r| r.len(),
                |_py, len| {
                    rest.push(len);
                    Ok::<_, PyErr>(ControlFlow::<()>::Continue(()))
                },
            )
            .unwrap();
        assert_eq!(end, None);
        assert!(!rest.is_empty());
    });
}

#[test]
fn try_for_each_passes_a_read_error_on_as_the_callers_error() {
    use std::ops::ControlFlow;
    Python::attach(|py| {
        let opts = ReaderOptions::default()
            .buffer_size(100)
            .max_record_size(1000);
        let source = Source::from_reader(std::io::Cursor::new(vec![b'x'; 10_000]));
        let mut reader = RecordReader::new(source, Lines::new(), opts);
        let err = reader
            .try_for_each(
                py,
                |r| r.len(),
                |_py, _| Ok::<_, PyErr>(ControlFlow::<()>::Continue(())),
            )
            .unwrap_err();
        assert!(
            err.is_instance_of::<pyo3::exceptions::PyValueError>(py),
            "{err}"
        );
    });
}

#[test]
fn max_record_size_stops_a_runaway_record() {
    Python::attach(|py| {
        let input = vec![b'x'; 10_000];
        let opts = ReaderOptions::default()
            .buffer_size(100)
            .max_record_size(1000);
        let source = Source::from_reader(std::io::Cursor::new(input));
        let mut reader = RecordReader::new(source, Lines::new(), opts);
        let err = reader.next_batch(py, |r| r.len()).unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert!(err.to_string().contains("max_record_size"), "{err}");
        assert!(reader.next_batch(py, |r| r.len()).unwrap().is_none());
    });
}

#[test]
fn a_recoverable_framing_error_comes_after_the_records_before_it_and_loses_nothing_after() {
    Python::attach(|py| {
        let input = b"00007ab00006cXXXXX00008def00006g".to_vec();
        let mut reader = RecordReader::new(
            Source::from_vec(input),
            LengthPrefixed::ascii(0, 5),
            ReaderOptions::default(),
        );
        let got = collect(py, &mut reader);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Ok(vec![b"00007ab".to_vec(), b"00006c".to_vec()]));
        let err = got[1].as_ref().unwrap_err();
        assert!(
            err.contains("byte offset 13") && err.contains("XXXXX"),
            "{err}"
        );
        assert_eq!(got[2], Ok(vec![b"00008def".to_vec(), b"00006g".to_vec()]));
    });
}

#[test]
fn framing_errors_keep_their_type_for_downcasting() {
    #[derive(Debug)]
    struct Bad;
    impl std::fmt::Display for Bad {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bad byte")
        }
    }
    impl std::error::Error for Bad {}
    /// One-byte records; `!` is malformed and stops reading.
    struct Bytes;
    impl Framing for Bytes {
        fn next_record(&mut self, buf: &[u8], _: bool) -> Result<Frame, FramingError> {
            if buf[0] == b'!' {
                Err(FramingError::new(Bad))
            } else {
                Ok(Frame::record(1))
            }
        }
    }
    Python::attach(|py| {
        let mut reader = RecordReader::new(
            Source::from_vec(b"ab!cd".to_vec()),
            Bytes,
            ReaderOptions::default(),
        );
        assert_eq!(
            reader.next_batch(py, |r| r[0]).unwrap(),
            Some(vec![b'a', b'b'])
        );
        let err = reader.next_batch(py, |r| r[0]).unwrap_err();
        assert!(err.framing_error().unwrap().cause().is::<Bad>());
        assert_eq!(err.offset(), 2);
        assert!(
            reader.next_batch(py, |r| r[0]).unwrap().is_none(),
            "fatal: reading stops"
        );
        let py_err = PyErr::from(err);
        assert!(py_err.is_instance_of::<PyValueError>(py));
    });
}

#[test]
fn a_python_exception_comes_back_unchanged_after_the_records_before_it_and_reading_resumes() {
    Python::attach(|py| {
        let g = run(
            py,
            cr#"
class Flaky:
    """Three good chunks; the second call raises once (with a cause)."""
    def __init__(self):
        self.calls = 0
        self.chunks = [b"a\nb", b"\nc\n", b"d\n"]
    def read(self, n):
        self.calls += 1
        if self.calls == 2:
            try:
                raise KeyError("inner")
            except KeyError as inner:
                self.raised = ValueError("disk on fire")
                raise self.raised from inner
        return self.chunks.pop(0) if self.chunks else b""
flaky = Flaky()
"#,
        );
        let flaky = g.get_item("flaky").unwrap().unwrap();
        let mut reader = RecordReader::new(
            Source::from_py(&flaky).unwrap(),
            Lines::new(),
            ReaderOptions::default(),
        );
        assert_eq!(
            reader.next_batch(py, |r| r.to_vec()).unwrap(),
            Some(vec![b"a".to_vec()])
        );
        let err = reader.next_batch(py, |r| r.to_vec()).unwrap_err();
        assert!(err.is_python());
        let py_err = PyErr::from(err);
        // The very same exception object, cause kept.
        assert!(py_err.value(py).is(flaky.getattr("raised").unwrap()));
        assert!(py_err.cause(py).unwrap().to_string().contains("inner"));
        // Nothing after the error is lost: "b" (cut at the chunk edge) and the rest follow.
        let rest: Vec<Vec<u8>> =
            std::iter::from_fn(|| reader.next_batch(py, |r| r.to_vec()).unwrap())
                .flatten()
                .collect();
        assert_eq!(rest, [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    });
}

#[test]
fn a_regular_file_object_is_read_through_its_descriptor_and_keeps_its_position() {
    Python::attach(|py| {
        let dir = std::env::temp_dir().join(format!("gilkit-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.txt");
        std::fs::write(&path, b"skip\none\ntwo\n").unwrap();
        let file = py
            .import("builtins")
            .unwrap()
            .call_method1("open", (&path, "rb"))
            .unwrap();
        file.call_method0("readline").unwrap(); // Python has read ahead into its buffer.
        let source = Source::from_py(&file).unwrap();
        assert_eq!(source.kind(), SourceKind::FileDescriptor);
        let mut reader = RecordReader::new(source, Lines::new(), ReaderOptions::default());
        let lines: Vec<Vec<u8>> =
            std::iter::from_fn(|| reader.next_batch(py, |r| r.to_vec()).unwrap())
                .flatten()
                .collect();
        assert_eq!(lines, [b"one".to_vec(), b"two".to_vec()]);
        let pos: u64 = file.call_method0("tell").unwrap().extract().unwrap();
        assert_eq!(pos, 13, "the file object's position is after what was read");
        file.call_method0("close").unwrap();

        let reader = RecordReader::new(
            Source::from_py(&path.clone().into_pyobject(py).unwrap()).unwrap(),
            Delimited::new(b"\n"),
            ReaderOptions::default(),
        );
        assert!(format!("{reader:?}").contains("Path"));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn py_reader_reads_lines_and_seeks_a_file_object() {
    Python::attach(|py| {
        let file = py
            .import("io")
            .unwrap()
            .getattr("BytesIO")
            .unwrap()
            .call1((PyBytes::new(py, b"alpha\nbeta\ngamma\n"),))
            .unwrap();
        let mut reader = PyReader::with_capacity(4, Source::from_py(&file).unwrap());
        let lines = py.detach(|| {
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            reader.seek(SeekFrom::Current(5)).unwrap();
            let mut rest = String::new();
            reader.read_to_string(&mut rest).unwrap();
            (first, rest)
        });
        assert_eq!(lines, ("alpha\n".into(), "gamma\n".into()));

        let mut memory = PyReader::new(Source::from_vec(b"0123456789".to_vec()));
        memory.seek(SeekFrom::End(-3)).unwrap();
        let mut tail = String::new();
        memory.read_to_string(&mut tail).unwrap();
        assert_eq!(tail, "789");
    });
}

#[test]
fn py_writer_retries_short_writes_and_waits_on_would_block() {
    Python::attach(|py| {
        let g = run(
            py,
            cr#"
import io
class Trickle(io.RawIOBase):
    """Writes at most 7 bytes per call; every third call would block (returns None)."""
    def __init__(self):
        self.data, self.calls = bytearray(), 0
    def writable(self):
        return True
    def write(self, b):
        self.calls += 1
        if self.calls % 3 == 0:
            return None
        n = min(7, len(b))
        self.data += bytes(b[:n])
        return n
trickle = Trickle()
"#,
        );
        let trickle = g.get_item("trickle").unwrap().unwrap();
        let mut writer = PyWriter::from_py(&trickle).unwrap().with_capacity(16);
        let expected: Vec<u8> = (0..200u32).flat_map(|n| n.to_le_bytes()).collect();
        py.detach(|| {
            for chunk in expected.chunks(13) {
                writer.write_all(chunk).unwrap();
            }
        });
        writer.close(py).unwrap();
        let data: Vec<u8> = trickle.getattr("data").unwrap().extract().unwrap();
        assert_eq!(data, expected);
        assert!(writer.stats().python_calls > 100);
        assert!(trickle.getattr("closed").unwrap().is_truthy().unwrap());
        let err = writer.serialize(py, |buf| buf.push(1)).unwrap_err();
        assert!(err.to_string().contains("closed file"), "{err}");
    });
}

#[test]
fn py_writer_write_errors_keep_the_unwritten_bytes() {
    Python::attach(|py| {
        let g = run(
            py,
            cr#"
class FailOnce:
    def __init__(self):
        self.data, self.failed = bytearray(), False
    def write(self, b):
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        self.data += b
        return len(b)
    def flush(self):
        pass
sink = FailOnce()
"#,
        );
        let sink = g.get_item("sink").unwrap().unwrap();
        let mut writer = PyWriter::from_py(&sink).unwrap();
        writer
            .serialize(py, |buf| buf.extend_from_slice(b"precious"))
            .unwrap();
        let err = writer.flush_py(py).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(writer.buffered(), 8);
        writer.flush_py(py).unwrap();
        let data: Vec<u8> = sink.getattr("data").unwrap().extract().unwrap();
        assert_eq!(data, b"precious");
    });
}

#[test]
fn readers_and_writers_can_live_in_a_pyclass() {
    // `#[pyclass]` needs `Send + Sync`; each Python thread owns its reader.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Source>();
    assert_send_sync::<RecordReader<LengthPrefixed>>();
    assert_send_sync::<RecordReader<Box<dyn Framing>>>();
    assert_send_sync::<gilkit::file::Records<Box<dyn Framing>, Vec<u8>, fn(&[u8]) -> Vec<u8>>>();
    assert_send_sync::<PyReader>();
    assert_send_sync::<PyWriter>();
}

#[test]
fn an_io_error_from_a_rust_reader_comes_after_the_records_before_it() {
    /// Gives `a\nb\nc` then fails once, then gives `\nd\n`.
    struct FailsOnce(Vec<std::io::Result<&'static [u8]>>);
    impl Read for FailsOnce {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop() {
                None => Ok(0),
                Some(Err(err)) => Err(err),
                Some(Ok(chunk)) => {
                    out[..chunk.len()].copy_from_slice(chunk);
                    Ok(chunk.len())
                }
            }
        }
    }
    Python::attach(|py| {
        let chunks = vec![
            Ok(&b"\nd\n"[..]),
            Err(std::io::Error::from_raw_os_error(libc_eio())),
            Ok(&b"a\nb\nc"[..]),
        ];
        let source = Source::from_reader(FailsOnce(chunks));
        let mut reader = RecordReader::new(source, Lines::new(), ReaderOptions::default());
        let got = collect(py, &mut reader);
        assert_eq!(got[0], Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        let err = got[1].as_ref().unwrap_err();
        assert!(err.contains("after byte offset 5"), "{err}");
        assert_eq!(got[2], Ok(vec![b"c".to_vec(), b"d".to_vec()]));
        assert_eq!(got.len(), 3);
    });
}

/// EIO, without depending on libc in the tests.
fn libc_eio() -> i32 {
    5
}

#[test]
fn skip_frames_drop_bytes_between_records() {
    /// Records are runs of letters; anything else is skipped.
    struct Words;
    impl Framing for Words {
        fn next_record(&mut self, buf: &[u8], at_eof: bool) -> Result<Frame, FramingError> {
            if !buf[0].is_ascii_alphabetic() {
                let n = buf.iter().take_while(|b| !b.is_ascii_alphabetic()).count();
                return Ok(Frame::Skip(n));
            }
            match buf.iter().position(|b| !b.is_ascii_alphabetic()) {
                Some(end) => Ok(Frame::record(end)),
                None if at_eof => Ok(Frame::record(buf.len())),
                None => Ok(Frame::incomplete()),
            }
        }
    }
    Python::attach(|py| {
        let source = Source::from_reader(std::io::Cursor::new(b"  hello, world!! 42 end".to_vec()));
        let mut reader = RecordReader::new(source, Words, ReaderOptions::default().buffer_size(3));
        let words: Vec<Vec<u8>> =
            std::iter::from_fn(|| reader.next_batch(py, |r| r.to_vec()).unwrap())
                .flatten()
                .collect();
        assert_eq!(
            words,
            [b"hello".to_vec(), b"world".to_vec(), b"end".to_vec()]
        );
    });
}
