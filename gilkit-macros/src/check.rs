//! The compile-time checks: what a body that runs with the GIL released must not do.
//!
//! The checks read tokens, not types (a proc macro sees no types), so they look for the names
//! that carry the GIL in PyO3: the `py` token, the types `Python`, `Bound`, `Borrowed`, `PyRef`
//! and `PyRefMut`, and parameters whose declared type mentions one of them. Tokens inside macro
//! calls (`println!("{}", py)`) are read too. A name reached through a path or a field (`x.py`,
//! `m::Bound`) is not flagged: it is not the GIL-bound value. Anything the checks miss is still
//! caught by the compiler through the `Send` bound of the release (PyO3's `Ungil`), with a less
//! friendly message.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{FnArg, Pat, Signature, Type};

use crate::options::Errors;

/// PyO3 types whose values are only usable while attached to the interpreter.
const GIL_BOUND_TYPES: [&str; 5] = ["Python", "Bound", "Borrowed", "PyRef", "PyRefMut"];

/// A parameter whose type needs the GIL.
struct GilBoundParam {
    name: String,
    ty: String,
}

/// Reports every GIL-bound use in `body` and a `&mut self` receiver, each at its own token.
pub(crate) fn check(sig: &Signature, body: &TokenStream, attr_name: &str, errors: &mut Errors) {
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r)
                if r.reference.is_some() && r.mutability.is_some() && r.colon_token.is_none() =>
            {
                errors.push(syn::Error::new_spanned(
                    r,
                    format!(
                        "`#[{attr_name}]` cannot release the GIL around a `&mut self` method\n\
                         note: while the GIL is released, any other Python thread that touches this \
                         object gets `RuntimeError: Already borrowed`, because PyO3 holds the mutable \
                         borrow for the whole call\n\
                         help: take `&self`, make the class `#[pyclass(frozen)]`, and keep the state \
                         that changes in a `Mutex`, `RwLock` or atomics"
                    ),
                ));
            }
            FnArg::Receiver(r) if r.colon_token.is_some() && mentions_gil_type(&r.ty) => {
                params.push(GilBoundParam {
                    name: "self".into(),
                    ty: type_text(&r.ty),
                });
            }
            FnArg::Typed(pt) if mentions_gil_type(&pt.ty) => {
                if let Pat::Ident(p) = &*pt.pat {
                    params.push(GilBoundParam {
                        name: p.ident.to_string(),
                        ty: type_text(&pt.ty),
                    });
                }
            }
            _ => {}
        }
    }
    let mut seen = Vec::new();
    visit(body.clone(), &mut |ident, reached_through_path| {
        if reached_through_path {
            return;
        }
        let text = ident.to_string();
        if seen.contains(&text) {
            return; // one error per name is enough
        }
        let param = params.iter().find(|p| p.name == text);
        let message = if text == "py" || param.is_some_and(|p| p.ty.starts_with("Python")) {
            format!(
                "`{text}` is not available in a `#[{attr_name}]` body: the body runs with the GIL \
                 released\n\
                 help: use Python before or after the released part: take Rust values as arguments \
                 (PyO3 converts them), or write `py.detach(|| ...)` by hand around the part that \
                 needs no Python"
            )
        } else if let Some(p) = param {
            format!(
                "`{text}` is a `{}`, which needs the GIL, but a `#[{attr_name}]` body runs with the \
                 GIL released\n\
                 help: take an owned Rust type instead (`Vec<u8>`, `String`, `PyBackedBytes`, \
                 `Py<T>`, ...), or write `py.detach(|| ...)` by hand around the part that needs no \
                 Python",
                p.ty
            )
        } else if GIL_BOUND_TYPES.contains(&text.as_str()) {
            format!(
                "`{text}` needs the GIL, but a `#[{attr_name}]` body runs with the GIL released\n\
                 help: keep Python objects out of the body (pass owned Rust values or `Py<T>` in, \
                 convert the result after), or write `py.detach(|| ...)` by hand around the part \
                 that needs no Python"
            )
        } else {
            return;
        };
        seen.push(text);
        errors.push(syn::Error::new(ident.span(), message));
    });
}

/// Whether `name` appears in `body` as a plain name (for the cancel token of `interruptible`).
pub(crate) fn mentions(body: &TokenStream, name: &Ident) -> bool {
    let mut found = false;
    visit(body.clone(), &mut |ident, through_path| {
        found |= !through_path && ident == name
    });
    found
}

/// The names bound by the signature's parameters, with their spans.
pub(crate) fn param_names(sig: &Signature) -> Vec<(Ident, Span)> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(p) => Some((p.ident.clone(), p.ident.span())),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// The name of the parameter of type `Python<'_>`, if there is one.
pub(crate) fn python_param(sig: &Signature) -> Option<Ident> {
    sig.inputs.iter().find_map(|input| match input {
        FnArg::Typed(pt) => match (&*pt.pat, &*pt.ty) {
            (Pat::Ident(p), Type::Path(tp))
                if tp.path.segments.last().is_some_and(|s| s.ident == "Python") =>
            {
                Some(p.ident.clone())
            }
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

/// Calls `f(ident, reached_through_path)` for every identifier in `tokens`, recursively.
fn visit(tokens: TokenStream, f: &mut dyn FnMut(&Ident, bool)) {
    // The two previous tokens: `x.py` and `m::py` reach a name through something else.
    let mut prev: [Option<char>; 2] = [None, None];
    for tree in tokens {
        match &tree {
            TokenTree::Ident(ident) => {
                let through =
                    matches!(prev, [_, Some('.')]) || matches!(prev, [Some(':'), Some(':')]);
                f(ident, through);
                prev = [prev[1], None];
            }
            TokenTree::Group(group) => {
                visit(group.stream(), f);
                prev = [prev[1], None];
            }
            TokenTree::Punct(p) => prev = [prev[1], Some(p.as_char())],
            TokenTree::Literal(_) => prev = [prev[1], None],
        }
    }
}

fn mentions_gil_type(ty: &Type) -> bool {
    let mut found = false;
    visit(ty.to_token_stream(), &mut |ident, _| {
        found |= GIL_BOUND_TYPES.iter().any(|t| ident == t)
    });
    found
}

/// `Bound<'_, PyAny>` rather than `Bound < '_ , PyAny >`.
fn type_text(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                let next = chars.peek().copied();
                let last = out.chars().last();
                let drop = matches!(next, Some('<' | '>' | ',' | ')' | ']'))
                    || matches!(last, Some('<' | '&' | '(' | '[' | '\''));
                if !drop {
                    out.push(' ');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn flagged(sig: Signature, body: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        check(&sig, &body, "nogil", &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string().lines().next().unwrap().to_owned())
                .collect(),
        }
    }

    #[test]
    fn names_reached_through_a_path_or_field_are_not_flagged() {
        let sig: Signature = syn::parse_quote!(fn f(data: Vec<u8>) -> u64);
        let body = quote!({
            let py = config.py;
            m::Bound::new();
            data.len() as u64
        });
        // `py` as a plain name is flagged once; `config.py` and `m::Bound` are not.
        assert_eq!(flagged(sig, body).len(), 1);
    }

    #[test]
    fn tokens_inside_macro_calls_are_read() {
        let sig: Signature = syn::parse_quote!(fn f(obj: Bound<'_, PyAny>) -> u64);
        let body = quote!({
            println!("{}", obj);
            1
        });
        let errors = flagged(sig, body);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("`obj` is a `Bound<'_, PyAny>`"),
            "{errors:?}"
        );
    }

    #[test]
    fn each_name_is_reported_once_and_all_names_are_reported() {
        let sig: Signature =
            syn::parse_quote!(fn f(&mut self, a: PyRef<'_, X>, b: &Bound<'_, PyList>));
        let body = quote!({
            a.x();
            a.y();
            b.len();
            Python::attach(|_| ());
        });
        let errors = flagged(sig, body);
        assert_eq!(errors.len(), 4, "{errors:?}"); // `&mut self`, `a`, `b`, `Python`
        assert!(
            errors
                .iter()
                .any(|e| e.contains("`b` is a `&Bound<'_, PyList>`")),
            "{errors:?}"
        );
    }

    #[test]
    fn plain_bodies_pass() {
        let sig: Signature = syn::parse_quote!(fn f(&self, py: Python<'_>, n: u64) -> u64);
        assert!(flagged(sig, quote!({ self.base * n })).is_empty());
    }
}
