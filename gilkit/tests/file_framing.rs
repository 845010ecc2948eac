//! Property tests of the record reader: whatever the chunking of the input (chunks from 1 byte to
//! more than the whole input), the buffer size and the batch size, the records are exactly those of
//! parsing the whole input at once, and truncated input is reported at the right offset.

use std::io::Read;

use gilkit::file::{
    Delimited, Framing, LengthPrefixed, Lines, ReadError, ReaderOptions, RecordReader, Source,
};
use proptest::prelude::*;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A reader that returns at most `chunk` bytes per `read`, like a slow pipe.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl Read for Chunked {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(out.len()).min(self.data.len() - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The framings under test, and how each encodes one record.
#[derive(Clone, Copy, Debug)]
enum Format {
    Lines,
    Delimited,
    Marc,
    BinaryLength,
}

impl Format {
    fn framing(self) -> Box<dyn Framing> {
        match self {
            Format::Lines => Box::new(Lines::new()),
            Format::Delimited => Box::new(Delimited::new(b"\x1d")),
            Format::Marc => Box::new(LengthPrefixed::ascii(0, 5)),
            Format::BinaryLength => {
                Box::new(LengthPrefixed::big_endian(1, 3).length_excludes_header(true))
            }
        }
    }

    /// Encodes `payload`; returns the bytes and the record the parser should see.
    fn encode(self, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        match self {
            Format::Lines => {
                let body: Vec<u8> = payload
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b'.' } else { b })
                    .collect();
                let mut bytes = body.clone();
                bytes.push(b'\n');
                (bytes, body)
            }
            Format::Delimited => {
                let body: Vec<u8> = payload
                    .iter()
                    .map(|&b| if b == 0x1d { b'.' } else { b })
                    .collect();
                let mut bytes = body.clone();
                bytes.push(0x1d);
                (bytes, body)
            }
            Format::Marc => {
                let mut bytes = format!("{:05}", payload.len() + 5).into_bytes();
                bytes.extend_from_slice(payload);
                (bytes.clone(), bytes)
            }
            Format::BinaryLength => {
                let len = payload.len() as u32;
                let mut bytes = vec![0x7f, (len >> 16) as u8, (len >> 8) as u8, len as u8];
                bytes.extend_from_slice(payload);
                (bytes.clone(), bytes)
            }
        }
    }
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::Lines),
        Just(Format::Delimited),
        Just(Format::Marc),
        Just(Format::BinaryLength),
    ]
}

/// Up to 40 records of 0 to 300 bytes (a few much larger), encoded.
fn records(format: Format) -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    let payload = prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => proptest::collection::vec(any::<u8>(), 1000..3000),
    ];
    proptest::collection::vec(payload, 0..40).prop_map(move |payloads| {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for payload in payloads {
            let (bytes, record) = format.encode(&payload);
            input.extend_from_slice(&bytes);
            expected.push(record);
        }
        (input, expected)
    })
}

/// Reads every record (as owned bytes) until the end or the first error.
fn read_all<F: Framing>(
    py: Python<'_>,
    reader: &mut RecordReader<F>,
) -> (Vec<Vec<u8>>, Option<ReadError>) {
    let mut out = Vec::new();
    loop {
        match reader.next_batch(py, |record| record.to_vec()) {
            Ok(Some(batch)) => {
                assert!(!batch.is_empty(), "a batch is never empty");
                out.extend(batch);
            }
            Ok(None) => return (out, None),
            Err(err) => return (out, Some(err)),
        }
    }
}

fn whole(py: Python<'_>, format: Format, input: &[u8]) -> (Vec<Vec<u8>>, Option<ReadError>) {
    let mut reader = RecordReader::new(
        Source::from_vec(input.to_vec()),
        format.framing(),
        ReaderOptions::default(),
    );
    read_all(py, &mut reader)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Chunked reading through a Rust reader (read in phase 2, GIL released) gives the records
    /// of the whole input, for every chunk size, buffer size and batch size.
    #[test]
    fn chunking_does_not_change_records(
        (format, (input, expected)) in format().prop_flat_map(|f| (Just(f), records(f))),
        chunk_seed in any::<proptest::sample::Index>(),
        buffer_seed in any::<proptest::sample::Index>(),
        max_batch in 1usize..50,
    ) {
        let chunk = 1 + chunk_seed.index(input.len() + 16);
        let buffer = 1 + buffer_seed.index(input.len() + 16);
        Python::attach(|py| {
            let (all_at_once, err) = whole(py, format, &input);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(&all_at_once, &expected);

            let source = Source::from_reader(Chunked { data: input.clone(), at: 0, chunk });
            let opts = ReaderOptions::default().buffer_size(buffer).max_batch(max_batch);
            let mut reader = RecordReader::new(source, format.framing(), opts);
            let (chunked, err) = read_all(py, &mut reader);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(&chunked, &expected);
            prop_assert_eq!(reader.offset(), input.len() as u64);
            Ok(())
        })?;
    }

    /// Input cut anywhere: every record before the cut is delivered, then (if the cut is inside a
    /// record) a truncation error naming the offset just after the last complete record.
    #[test]
    fn truncation_is_reported_after_every_complete_record(
        (format, (input, _)) in prop_oneof![Just(Format::Delimited), Just(Format::Marc), Just(Format::BinaryLength)]
            .prop_flat_map(|f| (Just(f), records(f))),
        cut_seed in any::<proptest::sample::Index>(),
        chunk in 1usize..64,
        buffer in 1usize..512,
    ) {
        let cut = cut_seed.index(input.len() + 1);
        let truncated = &input[..cut];
        Python::attach(|py| {
            // The records that fit entirely before the cut, from the whole input.
            let (all, _) = whole(py, format, &input);
            let mut complete = Vec::new();
            let mut end = 0;
            for record in &all {
                let len = format.encode_len(record);
                if end + len > cut { break; }
                end += len;
                complete.push(record.clone());
            }
            let source = Source::from_reader(Chunked { data: truncated.to_vec(), at: 0, chunk });
            let opts = ReaderOptions::default().buffer_size(buffer).max_batch(7);
            let mut reader = RecordReader::new(source, format.framing(), opts);
            let (records, err) = read_all(py, &mut reader);
            prop_assert_eq!(&records, &complete);
            if end == cut {
                prop_assert!(err.is_none(), "{err:?}");
            } else {
                let err = err.expect("a truncation error");
                prop_assert!(err.is_truncated(), "{err}");
                prop_assert_eq!(err.offset(), end as u64);
                prop_assert_eq!(err.remainder().unwrap(), &truncated[end..]);
                prop_assert!(err.to_string().contains(&format!("byte offset {end}")), "{err}");
                // The reader is finished after truncation.
                prop_assert!(reader.next_batch(py, |r| r.len()).unwrap().is_none());
            }
            Ok(())
        })?;
    }

    /// The same through a Python file object whose `readinto` returns short reads of random
    /// sizes (phase 1, GIL held, lending Rust memory to Python).
    #[test]
    fn python_short_reads_do_not_change_records(
        (input, expected) in records(Format::Marc),
        chunk in 1usize..700,
        buffer in 1usize..4096,
    ) {
        Python::attach(|py| {
            let file = short_reader(py, &input, chunk);
            let opts = ReaderOptions::default().buffer_size(buffer).max_batch(5);
            let mut reader = RecordReader::new(Source::from_py(&file).unwrap(), Format::Marc.framing(), opts);
            let (records, err) = read_all(py, &mut reader);
            prop_assert!(err.is_none(), "{err:?}");
            prop_assert_eq!(&records, &expected);
            Ok(())
        })?;
    }
}

impl Format {
    /// Encoded length of a record as the parser saw it.
    fn encode_len(self, record: &[u8]) -> usize {
        match self {
            Format::Lines | Format::Delimited => record.len() + 1,
            Format::Marc | Format::BinaryLength => record.len(),
        }
    }
}

/// A Python binary file object whose `readinto` returns at most `chunk` bytes per call.
fn short_reader<'py>(py: Python<'py>, data: &[u8], chunk: usize) -> Bound<'py, PyAny> {
    let globals = PyDict::new(py);
    py.run(
        cr#"
import io
class Short(io.RawIOBase):
    def __init__(self, data, chunk):
        self.data, self.at, self.chunk = data, 0, chunk
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.chunk, len(self.data) - self.at)
        b[:n] = self.data[self.at:self.at + n]
        self.at += n
        return n
"#,
        Some(&globals),
        None,
    )
    .unwrap();
    globals
        .get_item("Short")
        .unwrap()
        .unwrap()
        .call1((pyo3::types::PyBytes::new(py, data), chunk))
        .unwrap()
}
