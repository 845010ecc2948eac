//! gilkit
