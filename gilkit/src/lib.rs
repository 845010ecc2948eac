//! gilkit

#![warn(missing_docs, unreachable_pub)]

pub mod batch;
mod cancel;

pub use cancel::{CancelToken, Cancelled};
