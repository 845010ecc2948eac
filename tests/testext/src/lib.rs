//! test extension
