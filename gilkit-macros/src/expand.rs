//! The expansion: a function whose body runs through a `gilkit` call site, or an impl block whose
//! marked methods do.
//!
//! Only the body changes (and, for `interruptible` and `async fn`, a return type that is not
//! already a `Result` becomes `PyResult<_>`): the parameters stay as written, so PyO3 derives the
//! same Python signature, text signature and docstring whether it sees the function before or
//! after this attribute. The `Python<'_>` token the release needs is the function's own `py`
//! parameter when it has one, and otherwise comes from `Python::attach`, which costs one
//! thread-local read in a function called from Python (the thread is attached already).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, ImplItem, Item, ItemFn, ItemImpl, ReturnType, Type};

use crate::check;
use crate::options::{Errors, Options};

/// The attribute's entry point: dispatches on what it is attached to.
pub(crate) fn nogil(args: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => return with_original(e, item),
    };
    match parsed {
        Item::Fn(func) => {
            let name = func.sig.ident.to_string();
            match expand_fn(func, Options::parse(args), name) {
                (None, tokens) => tokens,
                (Some(e), tokens) => with_original(e, tokens),
            }
        }
        Item::Impl(block) => expand_impl(args, block),
        other => {
            let message = "`#[gilkit::nogil]` goes on a function: a method in `#[pymethods]`, a \
                           `#[pyfunction]`, or a plain `fn`; or on a `#[pymethods]` impl block whose \
                           methods are marked `#[nogil]`";
            let span = item_keyword_span(&other);
            with_original(syn::Error::new(span, message), item)
        }
    }
}

/// The impl-block form: `#[gilkit::nogil]` above `#[pymethods]`, methods marked `#[nogil]`.
fn expand_impl(args: TokenStream, mut block: ItemImpl) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.push(syn::Error::new(
            args.span(),
            "options go on the methods (`#[nogil(adaptive)] fn ...`), not on the impl block",
        ));
    }
    let type_name = match &*block.self_ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| "Self".into());
    let mut marked = 0;
    let mut rewritten = Vec::with_capacity(block.items.len());
    for item in std::mem::take(&mut block.items) {
        let ImplItem::Fn(method) = item else {
            rewritten.push(item);
            continue;
        };
        let (marks, attrs): (Vec<Attribute>, Vec<Attribute>) =
            method.attrs.iter().cloned().partition(is_nogil_attr);
        let mut method = method;
        method.attrs = attrs;
        let Some(mark) = marks.into_iter().next() else {
            rewritten.push(ImplItem::Fn(method));
            continue;
        };
        marked += 1;
        let args = match &mark.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            _ => TokenStream::new(),
        };
        let func = ItemFn {
            attrs: method.attrs.clone(),
            vis: method.vis.clone(),
            modifiers: method.modifiers.clone(),
            sig: method.sig.clone(),
            block: Box::new(method.block.clone()),
        };
        let name = format!("{type_name}.{}", method.sig.ident);
        let (error, tokens) = expand_fn(func, Options::parse(args), name);
        if let Some(e) = error {
            errors.push(e);
        }
        match syn::parse2::<ImplItem>(tokens) {
            Ok(item) => rewritten.push(item),
            Err(e) => {
                errors.push(e);
                rewritten.push(ImplItem::Fn(method));
            }
        }
    }
    if marked == 0 {
        errors.push(syn::Error::new(
            block.impl_token.span,
            "no method of this impl block is marked `#[nogil]`\nhelp: mark the methods whose body \
             should run with the GIL released, e.g. `#[nogil] fn work(&self) -> u64 { ... }`",
        ));
    }
    block.items = rewritten;
    match errors.finish() {
        Ok(()) => quote!(#block),
        Err(e) => {
            let errors = e.to_compile_error();
            quote!(#errors #block)
        }
    }
}

/// `#[nogil]`, `#[gilkit::nogil]`, `#[nogil(...)]`: the marks the impl-block form consumes.
fn is_nogil_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "nogil")
}

/// Rewrites one function; `name` is its call site's name unless `name = "..."` overrides it.
///
/// With errors (in the options or found by the checks), the function is still emitted, so the
/// rest of the crate and the editor keep working, with the signature the rewrite would give it
/// and a body that type-checks the original one without running it: never the original `async
/// fn` (PyO3 would add an error about its `experimental-async` feature) and never a release (the
/// compiler would add an error about `Send` for each GIL-bound value the checks already named).
fn expand_fn(
    func: ItemFn,
    opts: syn::Result<Options>,
    default_name: String,
) -> (Option<syn::Error>, TokenStream) {
    let ItemFn {
        attrs,
        vis,
        modifiers: _, // only `default fn` (unstable specialization), which `#[nogil]` does not keep
        mut sig,
        block,
    } = func;
    let body = quote!(#block);
    let mut errors = Errors::default();
    let opts = opts.unwrap_or_else(|e| {
        errors.push(e);
        Options::default()
    });
    check::check(&sig, &block, "nogil", &mut errors);

    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            "a `const fn` cannot release the GIL: releasing happens at run time\nhelp: remove `const`, \
             or remove `#[nogil]`",
        ));
    }
    let is_async = sig.asyncness.is_some();
    let awaitable = opts.awaitable.is_some();
    if let Some(span) = opts.awaitable {
        if is_async {
            check_static_params(&sig, &mut errors);
        } else {
            errors.push(syn::Error::new(
                span,
                "`awaitable` applies to an `async fn`: it makes the function return an asyncio \
                 awaitable of its future\nhelp: make the function `async fn`, or remove `awaitable`",
            ));
        }
    }
    if awaitable {
        if let Some(a) = &opts.adaptive {
            errors.push(syn::Error::new(
                a.span,
                "`adaptive` does not apply to an `awaitable` function: its body always runs on \
                 gilkit's runtime, without the GIL\nhelp: remove `adaptive`",
            ));
        }
        if let Some(i) = &opts.interruptible {
            errors.push(syn::Error::new(
                i.span,
                "an `awaitable` function is cancellable already: cancelling its awaitable (Ctrl-C \
                 in `asyncio.run` does) drops its future at the next `.await`\nhelp: remove \
                 `interruptible`",
            ));
        }
    } else if is_async {
        if let Some(a) = &opts.adaptive {
            errors.push(syn::Error::new(
                a.span,
                "`adaptive` does not apply to an `async fn`: its body always runs through \
                 `gilkit::block_on` with the GIL released\nhelp: remove `adaptive`",
            ));
        }
        if let Some(i) = &opts.interruptible {
            errors.push(syn::Error::new(
                i.span,
                "an `async fn` is interruptible already: Ctrl-C drops its future at the next \
                 `.await`\nhelp: remove `interruptible`",
            ));
        }
    }
    if let Some(i) = &opts.interruptible {
        if let Some((_, span)) = check::param_names(&sig)
            .into_iter()
            .find(|(n, _)| *n == i.token)
        {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`{token}` is the name `interruptible` gives the cancel token, and this \
                     parameter has it too\nhelp: name the token differently: \
                     `interruptible(token = cancel)`",
                    token = i.token
                ),
            ));
        } else if !is_async && !check::mentions(&body, &i.token) {
            errors.push(syn::Error::new(
                i.span,
                format!(
                    "the body never looks at `{token}`, so Ctrl-C could not stop it early\nhelp: \
                     check `{token}.is_cancelled()` in the body's loops and return early when it is \
                     set, or remove `interruptible`",
                    token = i.token
                ),
            ));
        }
        if let Some(hint) = opts.adaptive.as_ref().and_then(|a| a.hint.as_ref()) {
            errors.push(syn::Error::new_spanned(
                hint,
                "`hint` cannot be combined with `interruptible`\nhelp: use `adaptive` without a \
                 hint (the moving average of past durations decides)",
            ));
        }
    }
    let failed = errors.finish().err();

    // The call site: a static in the function's body, named after the function.
    let name = opts.name.as_ref().map_or(default_name, syn::LitStr::value);
    let site = format_ident!("__GILKIT_CALL_SITE", span = Span::mixed_site());
    let threshold = opts
        .adaptive
        .as_ref()
        .and_then(|a| a.threshold_us.as_ref())
        .map(|n| quote_spanned!(n.span()=> .with_threshold(::gilkit::__private::micros(#n))));
    // `line!()` spanned at the function's name reports the function's line, not the attribute's
    // (which, in the impl-block form, is the same for every method).
    let line = quote_spanned!(sig.ident.span()=> ::core::line!());
    let site_static = quote! {
        static #site: ::gilkit::__private::CallSite = ::gilkit::__private::CallSite::new(
            #name, ::core::module_path!(), ::core::file!(), #line,
        ) #threshold;
    };

    let py = format_ident!("__gilkit_py", span = Span::mixed_site());
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    // Annotating the closure's return type lets `?` in the body convert its errors; it is left
    // out when the type has elided lifetimes, which a closure signature cannot express.
    let annotated = (!has_elided_lifetime_or_impl(&ret_ty)).then(|| quote!(-> #ret_ty));

    let call = if failed.is_some() {
        let body = if is_async {
            quote!(async move #block)
        } else {
            let token = opts
                .interruptible
                .as_ref()
                .map(|i| &i.token)
                .filter(|t| !check::param_names(&sig).iter().any(|(n, _)| n == *t));
            match token {
                Some(token) => quote!(
                    move |#[allow(unused_variables)] #token: &::gilkit::CancelToken| #annotated #block
                ),
                None => quote!(move || #annotated #block),
            }
        };
        quote!(::gilkit::__private::not_expanded(#body))
    } else if awaitable {
        let fut = quote!(::gilkit::__private::future_of::<#ret_ty, _>(async move #block));
        let fut = if returns_result(&ret_ty) {
            fut
        } else {
            quote!(::gilkit::__private::infallible(#fut))
        };
        sig.output = syn::parse_quote!(
            -> ::gilkit::__private::PyResult<::gilkit::__private::Py<::gilkit::__private::PyAny>>
        );
        if returns_unit(&ret_ty) {
            quote!(::gilkit::__private::awaitable_unit(#py, #fut))
        } else {
            quote!(::gilkit::__private::awaitable(#py, #fut))
        }
    } else if is_async {
        let fut = match &annotated {
            Some(_) => quote!(::gilkit::__private::future_of::<#ret_ty, _>(async move #block)),
            None => quote!(async move #block),
        };
        quote!(#site.block_on(#py, #fut))
    } else if let Some(i) = &opts.interruptible {
        let token = &i.token;
        let closure = quote!(move |#token: &::gilkit::CancelToken| #annotated #block);
        if opts.adaptive.is_some() {
            quote!(#site.detach_interruptible_adaptive(#py, #closure))
        } else {
            quote!(#site.detach_interruptible(#py, #closure))
        }
    } else {
        let closure = quote!(move || #annotated #block);
        match &opts.adaptive {
            Some(a) => match &a.hint {
                Some(hint) => {
                    let size = format_ident!("__gilkit_size", span = Span::mixed_site());
                    let hint = quote_spanned!(hint.span()=> let #size: usize = #hint;);
                    quote!({ #hint #site.detach_adaptive_sized(#py, #size, #closure) })
                }
                None => quote!(#site.detach_adaptive(#py, #closure)),
            },
            None => quote!(#site.detach(#py, #closure)),
        }
    };

    // `interruptible` and `async fn` can fail with the exception a signal handler raised: merge
    // it into a `Result` return type, or make the return type `PyResult<_>`.
    let fallible = !awaitable && (is_async || opts.interruptible.is_some());
    let call = if fallible && returns_result(&ret_ty) {
        if failed.is_some() {
            call
        } else {
            quote!(::gilkit::__private::flatten(#call))
        }
    } else {
        if fallible {
            sig.output = syn::parse_quote!(-> ::gilkit::__private::PyResult<#ret_ty>);
        }
        call
    };
    sig.asyncness = None;
    if failed.is_some() {
        return (
            failed,
            quote! {
                #(#attrs)*
                #vis #sig {
                    #call
                }
            },
        );
    }
    let call = match check::python_param(&sig) {
        Some(own) => quote!({ let #py = #own; #call }),
        None => quote!(::gilkit::__private::attach(|#py| #call)),
    };
    // The awaitable form records no call statistics (its work runs on the runtime, not in the call).
    let site_static = (!awaitable).then_some(site_static);
    (
        None,
        quote! {
            #(#attrs)*
            #vis #sig {
                #site_static
                #call
            }
        },
    )
}

/// `awaitable`: the future outlives the call, so it cannot borrow from the caller.
fn check_static_params(sig: &syn::Signature, errors: &mut Errors) {
    for input in &sig.inputs {
        let span = match input {
            syn::FnArg::Receiver(r) if matches!(r.kind, syn::ReceiverKind::Reference(..)) => {
                Some(r.self_token.span)
            }
            syn::FnArg::Typed(pt) if matches!(&*pt.ty, Type::Reference(_)) => Some(pt.ty.span()),
            _ => None,
        };
        if let Some(span) = span {
            errors.push(syn::Error::new(
                span,
                "an `awaitable` function's future runs after the call returns, so it cannot \
                 borrow its arguments\nhelp: take owned values (`String`, `Vec<u8>`, ...); for a \
                 method, take `slf: Py<Self>` on a `#[pyclass(frozen)]` and read it with \
                 `slf.get()`",
            ));
        }
    }
}

/// `Result<..>`, `PyResult<..>`, `io::Result<..>`: return types that can carry a `PyErr`.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Result" || s.ident == "PyResult"),
        _ => false,
    }
}

/// `()`, or a `Result` whose success type is `()`.
fn returns_unit(ty: &Type) -> bool {
    let is_unit = |ty: &Type| matches!(ty, Type::Tuple(t) if t.elems.is_empty());
    if is_unit(ty) {
        return true;
    }
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) if returns_result(ty) => matches!(
            args.args.first(),
            Some(syn::GenericArgument::Type(first)) if is_unit(first)
        ),
        _ => false,
    }
}

fn has_elided_lifetime_or_impl(ty: &Type) -> bool {
    let text = quote!(#ty).to_string();
    text.contains("impl ")
        || text.contains("'_")
        || text.contains("& ")
        || text.starts_with('&')
        || text.contains("dyn ")
}

/// The keyword that says what an item is (`struct`, `enum`, ...), for "not a function" errors.
fn item_keyword_span(item: &Item) -> Span {
    match item {
        Item::Struct(i) => i.struct_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::Const(i) => i.const_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Mod(i) => i.mod_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Use(i) => i.use_token.span,
        Item::Union(i) => i.union_token.span,
        other => other.span(),
    }
}

/// The error followed by the item as written, so that the rest of the crate still sees it.
fn with_original(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}
