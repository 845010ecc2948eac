//! The compile-time checks: what a body that runs with the GIL released must not do.
//!
//! A proc macro sees no types, so the checks go by names, with Rust's scoping rules:
//!
//! - **Values**: `py`, and every parameter whose declared type mentions `Python`, `Bound`,
//!   `Borrowed`, `PyRef` or `PyRefMut`, are refused where the body uses them, unless the body
//!   binds the same name again first (a `let`, a closure parameter, a `match` arm, an `if let`, a
//!   `for` pattern): `sem.run(move |py| ...)` uses the closure's own `py`, not the function's.
//! - **Types**: those five type names are refused where the released body itself names them
//!   (`Python::attach(..)`, `let x: Bound<..>`), but not inside a closure, whose code runs wherever
//!   the closure is called (`permit.attach(|py: Python<'_>| ...)` runs attached).
//!
//! The body is read as a syntax tree (`syn::visit`) with a stack of scopes. Arguments of macro
//! calls (`println!("{}", py)`) are read as expressions when they parse as a comma-separated list,
//! and token by token otherwise. A name reached through a path or a field (`x.py`, `m::Bound`) is
//! not flagged: it is not the GIL-bound value. Items declared inside the body (a nested `fn`)
//! are not read: they cannot capture the function's values. Anything the checks miss is still
//! caught by the compiler through the `Send` bound of the release (PyO3's `Ungil`), with a less
//! friendly message.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Block, Expr, FnArg, Pat, ReceiverKind, Signature, Token, Type};

use crate::options::Errors;

/// PyO3 types whose values are only usable while attached to the interpreter.
const GIL_BOUND_TYPES: [&str; 5] = ["Python", "Bound", "Borrowed", "PyRef", "PyRefMut"];

/// A parameter whose type needs the GIL.
struct GilBoundParam {
    name: String,
    ty: String,
}

/// Reports every GIL-bound use in `body` and a `&mut self` receiver, each at its own token.
pub(crate) fn check(sig: &Signature, body: &Block, attr_name: &str, errors: &mut Errors) {
    let mut params = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(syn::Receiver {
                kind: ReceiverKind::Reference(_, _, Some(_)),
                ..
            }) => {
                let r = input;
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
            FnArg::Receiver(syn::Receiver {
                kind: ReceiverKind::Typed(_, ty),
                ..
            }) if mentions_gil_type(ty) => {
                params.push(GilBoundParam {
                    name: "self".into(),
                    ty: type_text(ty),
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
    let mut checker = Checker {
        attr_name,
        params: &params,
        scopes: vec![Vec::new()],
        closure_depth: 0,
        seen: Vec::new(),
        found: Vec::new(),
    };
    checker.visit_block(body);
    for error in checker.found {
        errors.push(error);
    }
}

/// Walks the body with the names it binds, innermost scope last.
struct Checker<'a> {
    attr_name: &'a str,
    params: &'a [GilBoundParam],
    scopes: Vec<Vec<String>>,
    /// How many closures enclose the current node (GIL-bound type names are allowed inside one).
    closure_depth: usize,
    /// Names already reported: one error per name is enough.
    seen: Vec<String>,
    found: Vec<syn::Error>,
}

impl Checker<'_> {
    fn bound_in_body(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|n| n == name))
    }

    fn bind(&mut self, pat: &Pat) {
        let mut names = Bindings(Vec::new());
        names.visit_pat(pat);
        self.scopes
            .last_mut()
            .expect("the body's scope is never popped")
            .extend(names.0);
    }

    fn report(&mut self, ident: &Ident, message: String) {
        let text = ident.to_string();
        if !self.seen.contains(&text) {
            self.seen.push(text);
            self.found.push(syn::Error::new(ident.span(), message));
        }
    }

    /// `ident` used as a plain value name (`py`, `items`).
    fn value(&mut self, ident: &Ident) {
        let text = ident.to_string();
        if self.bound_in_body(&text) {
            return;
        }
        let attr_name = self.attr_name;
        let param = self.params.iter().find(|p| p.name == text);
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
        } else {
            return;
        };
        self.report(ident, message);
    }

    /// `ident` used as the first segment of a type or path (`Python::attach`, `Bound<..>`).
    fn type_name(&mut self, ident: &Ident) {
        if self.closure_depth > 0 || !GIL_BOUND_TYPES.iter().any(|t| ident == t) {
            return;
        }
        let attr_name = self.attr_name;
        let message = format!(
            "`{ident}` needs the GIL, but a `#[{attr_name}]` body runs with the GIL released\n\
             help: keep Python objects out of the body (pass owned Rust values or `Py<T>` in, \
             convert the result after), or write `py.detach(|| ...)` by hand around the part \
             that needs no Python"
        );
        self.report(ident, message);
    }

    fn scoped(&mut self, f: impl FnOnce(&mut Self)) {
        self.scopes.push(Vec::new());
        f(self);
        self.scopes.pop();
    }

    /// Macro arguments that are not a list of expressions: token by token, in the current scope.
    fn tokens(&mut self, tokens: TokenStream) {
        visit_tokens(tokens, &mut |ident, through_path| {
            if !through_path {
                self.value(ident);
                self.type_name(ident);
            }
        });
    }
}

impl<'ast> Visit<'ast> for Checker<'_> {
    fn visit_block(&mut self, block: &'ast Block) {
        self.scoped(|this| visit::visit_block(this, block));
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        // `let py = py;` reads the outer `py`: the initializer first, then the new names.
        if let Some(init) = &local.init {
            self.visit_expr(&init.expr);
            if let Some((_, diverge)) = &init.diverge {
                self.visit_expr(diverge);
            }
        }
        self.visit_pat(&local.pat);
        self.bind(&local.pat);
    }

    fn visit_expr_closure(&mut self, closure: &'ast syn::ExprClosure) {
        self.closure_depth += 1;
        self.scoped(|this| {
            for input in &closure.inputs {
                this.visit_pat(input);
                this.bind(input);
            }
            this.visit_expr(&closure.body);
        });
        self.closure_depth -= 1;
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        self.scoped(|this| {
            // A guard is part of the pattern (`Pat::Guard`): its expression is read by
            // `visit_pat`, after the bindings it can use.
            this.bind(&arm.pat);
            this.visit_pat(&arm.pat);
            this.visit_expr(&arm.body);
        });
    }

    fn visit_expr_if(&mut self, e: &'ast syn::ExprIf) {
        // `if let` binds for the condition's rest and the `then` branch only.
        self.scoped(|this| {
            this.visit_expr(&e.cond);
            this.visit_block(&e.then_branch);
        });
        if let Some((_, other)) = &e.else_branch {
            self.visit_expr(other);
        }
    }

    fn visit_expr_while(&mut self, e: &'ast syn::ExprWhile) {
        self.scoped(|this| {
            this.visit_expr(&e.cond);
            this.visit_block(&e.body);
        });
    }

    fn visit_expr_let(&mut self, e: &'ast syn::ExprLet) {
        self.visit_expr(&e.expr);
        self.visit_pat(&e.pat);
        self.bind(&e.pat);
    }

    fn visit_expr_for_loop(&mut self, e: &'ast syn::ExprForLoop) {
        self.visit_expr(&e.expr);
        self.scoped(|this| {
            this.visit_pat(&e.pat);
            this.bind(&e.pat);
            this.visit_block(&e.body);
        });
    }

    fn visit_item(&mut self, _: &'ast syn::Item) {
        // A nested item cannot capture the function's values; the compiler checks it.
    }

    fn visit_expr_path(&mut self, e: &'ast syn::ExprPath) {
        if e.qself.is_none() && e.path.leading_colon.is_none() {
            let first = &e.path.segments[0];
            if e.path.segments.len() == 1 && first.arguments.is_none() {
                self.value(&first.ident);
            } else {
                self.type_name(&first.ident);
            }
        }
        visit::visit_expr_path(self, e);
    }

    fn visit_type_path(&mut self, t: &'ast syn::TypePath) {
        if t.qself.is_none() && t.path.leading_colon.is_none() {
            self.type_name(&t.path.segments[0].ident);
        }
        visit::visit_type_path(self, t);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        match Punctuated::<Expr, Token![,]>::parse_terminated.parse2(mac.tokens.clone()) {
            Ok(args) => args.iter().for_each(|arg| self.visit_expr(arg)),
            Err(_) => self.tokens(mac.tokens.clone()),
        }
    }
}

/// The names a pattern binds (`Some((a, ref b))` binds `a` and `b`).
struct Bindings(Vec<String>);

impl<'ast> Visit<'ast> for Bindings {
    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.0.push(p.ident.to_string());
        visit::visit_pat_ident(self, p);
    }
}

/// Whether `name` appears in `body` as a plain name (for the cancel token of `interruptible`).
pub(crate) fn mentions(body: &TokenStream, name: &Ident) -> bool {
    let mut found = false;
    visit_tokens(body.clone(), &mut |ident, through_path| {
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
fn visit_tokens(tokens: TokenStream, f: &mut dyn FnMut(&Ident, bool)) {
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
                visit_tokens(group.stream(), f);
                prev = [prev[1], None];
            }
            TokenTree::Punct(p) => prev = [prev[1], Some(p.as_char())],
            TokenTree::Literal(_) => prev = [prev[1], None],
        }
    }
}

fn mentions_gil_type(ty: &Type) -> bool {
    let mut found = false;
    visit_tokens(ty.to_token_stream(), &mut |ident, _| {
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
    out.replace(" :: ", "::")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn flagged(sig: Signature, body: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        let body: Block = syn::parse2(body).expect("a block");
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
        // `config.py` and `m::Bound` are not the GIL-bound values; the `let` binds a new `py`.
        assert_eq!(flagged(sig, body), Vec::<String>::new());
    }

    #[test]
    fn names_bound_in_the_body_are_not_flagged() {
        let sig: Signature = syn::parse_quote!(fn f(py: Python<'_>, obj: Bound<'_, PyAny>) -> u64);
        let body = quote!({
            let a = sem.run(move |py| model.call1(py, ()));
            let b = items.iter().map(|obj| obj.len()).sum::<usize>();
            let c = match x {
                Some(obj) => obj,
                None => 0,
            };
            let d = if let Some(py) = maybe { py } else { 0 };
            for obj in list {
                drop(obj);
            }
            while let Some(py) = it.next() {
                drop(py);
            }
            let obj = 3;
            println!("{} {}", obj, a);
            a + b + c + d + obj
        });
        assert_eq!(flagged(sig, body), Vec::<String>::new());
    }

    #[test]
    fn a_binding_is_only_in_scope_after_it_and_inside_its_block() {
        let sig: Signature = syn::parse_quote!(fn f(py: Python<'_>, obj: Bound<'_, PyAny>) -> u64);
        // `let py = py` reads the parameter; `obj` bound in the closure does not leak out of it;
        // a `match` arm's binding ends with the arm.
        let body = quote!({
            let py = py;
            let f = |obj: u64| obj;
            f(obj.len());
        });
        let errors = flagged(sig, body);
        assert_eq!(errors.len(), 2, "{errors:?}");
        let sig: Signature = syn::parse_quote!(fn f(py: Python<'_>) -> u64);
        let body = quote!({
            match x {
                Some(py) => 1,
                None => py.version(),
            }
        });
        assert_eq!(flagged(sig, body).len(), 1);
    }

    #[test]
    fn gil_bound_type_names_are_allowed_inside_closures_only() {
        let sig: Signature = syn::parse_quote!(fn f() -> u64);
        let body = quote!({
            permit.attach(|py: Python<'_>| -> PyResult<u64> {
                Bound::clone(&x);
                Ok(1)
            });
        });
        assert!(flagged(sig.clone(), body).is_empty());
        let body = quote!({
            let x: Bound<'_, PyAny> = y;
        });
        assert_eq!(flagged(sig, body).len(), 1);
    }

    #[test]
    fn macro_arguments_that_are_not_expressions_are_read_token_by_token() {
        let sig: Signature = syn::parse_quote!(fn f(py: Python<'_>) -> Vec<u64>);
        assert_eq!(flagged(sig.clone(), quote!({ vec![py; 3] })).len(), 1);
        assert!(
            flagged(
                sig,
                quote!({
                    let py = 1;
                    vec![py; 3]
                })
            )
            .is_empty()
        );
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
