//! `gilkit_marc`: a pymarc-compatible MARC 21 reader and writer built on gilkit.
//!
//! The Rust side of the `gilkit_marc` Python package. The pure-Rust core parses records without
//! Python and is what the fuzz target drives:
//! - [`frame`]: where a record ends in a stream (pymarc's `MARCReader` decisions);
//! - [`parse`]: one record into leader, fields and subfields (pymarc's `Record.decode_marc`);
//! - [`marc8`]: MARC-8 to Unicode (pymarc's `MARC8ToUnicode`);
//! - [`pyint`]: Python's `int()` rules for the numbers in leaders and directories;
//! - [`columns`]: the column specs of `extract` (`"245$a"`), computed as pymarc's API does.
//!
//! With the `python` feature (on by default) the crate is also the extension module
//! `gilkit_marc._native`: a reader that frames and parses a whole batch of records with the GIL
//! released, then builds pymarc-shaped Python objects for the batch with the GIL held.

pub mod columns;
pub mod frame;
pub mod marc8;
pub mod parse;
pub mod pyint;

#[cfg(feature = "python")]
mod python;

/// The extension's Rust allocations go to mimalloc. With read-ahead a record is allocated on the
/// parse worker and freed on the thread that builds it; glibc's malloc makes such frees take the
/// worker's arena lock while the worker allocates from it, and the two threads then spend more
/// time in futex calls than in parsing. mimalloc frees to another thread's page without a lock.
#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
