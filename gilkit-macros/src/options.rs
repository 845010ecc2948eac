//! The attribute's options: `interruptible`, `adaptive`, `name`, parsed with every mistake reported.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, LitInt, LitStr, Meta, Token};

/// What the options list must look like, for error messages.
pub(crate) const VALID_OPTIONS: &str = "the options are `interruptible`, \
    `interruptible(token = <name>)`, `adaptive`, `adaptive(threshold_us = <integer>, hint = <expr>)`, \
    `awaitable` (on an `async fn`) and `name = \"<name>\"`";

/// The parsed options of one `#[nogil(...)]`.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) interruptible: Option<Interruptible>,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) name: Option<LitStr>,
    /// `awaitable`: an `async fn` returns an asyncio awaitable instead of blocking; where written.
    pub(crate) awaitable: Option<Span>,
}

pub(crate) struct Interruptible {
    /// Where the option was written (errors about it point here).
    pub(crate) span: Span,
    /// The name the body uses for the `&CancelToken` (`token` unless renamed).
    pub(crate) token: Ident,
}

pub(crate) struct Adaptive {
    pub(crate) span: Span,
    pub(crate) threshold_us: Option<LitInt>,
    pub(crate) hint: Option<Expr>,
    /// The keys given so far, valid or not, to report repeats.
    seen: Vec<String>,
}

impl Options {
    /// Parses the attribute's arguments; all mistakes are combined into one error.
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Options> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
        let mut options = Options::default();
        let mut errors = Errors::default();
        for meta in metas {
            options.add(meta, &mut errors);
        }
        errors.finish()?;
        Ok(options)
    }

    fn add(&mut self, meta: Meta, errors: &mut Errors) {
        let Some(key) = meta.path().get_ident().map(Ident::to_string) else {
            errors.push(syn::Error::new_spanned(
                meta.path(),
                format!("unknown option; {VALID_OPTIONS}"),
            ));
            return;
        };
        let span = meta.path().span();
        match key.as_str() {
            "interruptible" => {
                if self.interruptible.is_some() {
                    errors.push(syn::Error::new(span, "`interruptible` is given twice"));
                    return;
                }
                let mut token = Ident::new("token", span);
                match &meta {
                    Meta::Path(_) => {}
                    Meta::List(list) => {
                        let parsed = match list
                            .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
                        {
                            Ok(parsed) => parsed,
                            Err(e) => {
                                errors.push(e);
                                Punctuated::new()
                            }
                        };
                        for inner in parsed {
                            match &inner {
                                Meta::NameValue(nv) if nv.path.is_ident("token") => match &nv.value {
                                    Expr::Path(p) if p.path.get_ident().is_some() => {
                                        token = p.path.get_ident().cloned().expect("checked");
                                    }
                                    other => errors.push(syn::Error::new_spanned(
                                        other,
                                        "expected a plain name for the token, as in `interruptible(token = cancel)`",
                                    )),
                                },
                                other => errors.push(syn::Error::new_spanned(
                                    other.path(),
                                    "unknown `interruptible` option; the only one is `token = <name>` \
                                     (the name the body uses for its `&gilkit::CancelToken`)",
                                )),
                            }
                        }
                    }
                    Meta::NameValue(nv) => errors.push(syn::Error::new(
                        nv.eq_token.span,
                        "write `interruptible` or `interruptible(token = <name>)`",
                    )),
                }
                self.interruptible = Some(Interruptible { span, token });
            }
            "adaptive" => {
                if self.adaptive.is_some() {
                    errors.push(syn::Error::new(span, "`adaptive` is given twice"));
                    return;
                }
                let mut adaptive = Adaptive {
                    span,
                    threshold_us: None,
                    hint: None,
                    seen: Vec::new(),
                };
                match &meta {
                    Meta::Path(_) => {}
                    Meta::List(list) => {
                        let parsed =
                            list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated);
                        match parsed {
                            Ok(inner) => {
                                for m in inner {
                                    adaptive.add(m, errors);
                                }
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                    Meta::NameValue(nv) => errors.push(syn::Error::new(
                        nv.eq_token.span,
                        "write `adaptive` or `adaptive(threshold_us = <integer>, hint = <expr>)`",
                    )),
                }
                self.adaptive = Some(adaptive);
            }
            "awaitable" => match meta {
                Meta::Path(_) if self.awaitable.is_none() => self.awaitable = Some(span),
                Meta::Path(_) => errors.push(syn::Error::new(span, "`awaitable` is given twice")),
                _ => errors.push(syn::Error::new(
                    span,
                    "`awaitable` takes no arguments: write `#[nogil(awaitable)]`",
                )),
            },
            "name" => match meta {
                Meta::NameValue(syn::MetaNameValue {
                    value:
                        Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }),
                    ..
                }) if self.name.is_none() => self.name = Some(s),
                _ if self.name.is_some() => {
                    errors.push(syn::Error::new(span, "`name` is given twice"))
                }
                _ => errors.push(syn::Error::new(span, "write `name = \"<name>\"`")),
            },
            _ => errors.push(syn::Error::new(
                span,
                format!("unknown option `{key}`; {VALID_OPTIONS}"),
            )),
        }
    }
}

impl Adaptive {
    fn add(&mut self, meta: Meta, errors: &mut Errors) {
        let span = meta.path().span();
        let key = meta
            .path()
            .get_ident()
            .map(Ident::to_string)
            .unwrap_or_default();
        let value = match meta {
            Meta::NameValue(nv) => nv.value,
            _ => {
                errors.push(syn::Error::new(
                    span,
                    "unknown `adaptive` option; the options are `threshold_us = <integer>` (release \
                     when the work is expected to take at least this many microseconds) and \
                     `hint = <expr>` (a size, as `usize`, that the work's duration follows)",
                ));
                return;
            }
        };
        if self.seen.contains(&key) {
            errors.push(syn::Error::new(span, format!("`{key}` is given twice")));
            return;
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "threshold_us" => match value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(n),
                    ..
                }) => self.threshold_us = Some(n),
                other => errors.push(syn::Error::new_spanned(
                    other,
                    "`threshold_us` takes an integer literal (microseconds)",
                )),
            },
            "hint" => self.hint = Some(value),
            _ => errors.push(syn::Error::new(
                span,
                "unknown `adaptive` option; the options are `threshold_us = <integer>` (release \
                 when the work is expected to take at least this many microseconds) and \
                 `hint = <expr>` (a size, as `usize`, that the work's duration follows)",
            )),
        }
    }
}

/// Collects errors so that all of them are shown at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
