//! Fuzzes the whole Rust read path on arbitrary bytes: framing a stream into records, parsing each
//! record with several option sets, and MARC-8 decoding. Any panic, out-of-bounds access or
//! infinite loop is a bug (the Python reader relies on these never failing on hostile input).
#![no_main]

use gilkit_marc::frame::{Frame, next_frame};
use gilkit_marc::parse::{FileEncoding, Options, Utf8Handling, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let variants = [
        Options::default(),
        Options { to_unicode: false, ..Options::default() },
        Options { force_utf8: true, utf8_handling: Utf8Handling::Replace, ..Options::default() },
        Options { file_encoding: FileEncoding::Latin1, utf8_handling: Utf8Handling::Ignore, ..Options::default() },
    ];
    let mut pos = 0;
    while pos <= data.len() {
        match next_frame(&data[pos..], true) {
            Frame::Record(n) => {
                for opts in &variants {
                    let _ = parse(&data[pos..pos + n], opts);
                }
                pos += n;
            }
            Frame::Broken(n, _) => {
                assert!(n <= data.len() - pos);
                break;
            }
            Frame::End | Frame::NeedMore => break,
        }
    }
    // Whole input as one record, too (Record(bytes) in Python does this).
    for opts in &variants {
        let _ = parse(data, opts);
    }
    let _ = gilkit_marc::marc8::decode(data, false);
});
