//! Procedural macros for gilkit: `#[gilkit::nogil]` (issue 3, in progress).
