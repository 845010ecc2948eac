//! gilkit
pub mod file;
