//! Procedural macros for gilkit: `#[gilkit::nogil]`, re-exported by the `gilkit` crate.
//!
//! See `gilkit::nogil` for the attribute's documentation; this crate only holds the expansion.
//! The generated code calls `gilkit::__private`, which keeps this crate free of runtime code.
//!
//! - `options`: parsing the attribute's arguments, every mistake reported at once.
//! - `check`: the compile-time checks on the body (GIL-bound values, `&mut self`).
//! - `expand`: the rewrite of a function or of a `#[pymethods]` impl block.

mod check;
mod expand;
mod options;

use proc_macro::TokenStream;

/// Runs a function's body with the GIL released. Documented on the re-export, `gilkit::nogil`.
#[proc_macro_attribute]
pub fn nogil(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::nogil(args.into(), item.into()).into()
}
