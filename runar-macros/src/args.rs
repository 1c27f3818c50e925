//! The macro's arguments and helper attributes: `#[runar::service(...)]`, `#[action]`,
//! `#[subscribe]` and `#[runar(...)]` on parameters.

use proc_macro2::Span;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr, Meta, Path, Visibility};

use crate::types::{ParamOptions, Scalar};

/// The arguments of `#[runar::service(...)]`.
#[derive(Default)]
pub(crate) struct ServiceArgs {
    pub(crate) path: Option<LitStr>,
    pub(crate) name: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) vis: Option<Visibility>,
    pub(crate) krate: Option<Path>,
}

impl ServiceArgs {
    pub(crate) fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Self> {
        let mut args = ServiceArgs::default();
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            match key.as_str() {
                "path" => args.path = Some(meta.value()?.parse()?),
                "name" => args.name = Some(meta.value()?.parse::<LitStr>()?.value()),
                "version" => args.version = Some(meta.value()?.parse::<LitStr>()?.value()),
                "description" => {
                    args.description = Some(meta.value()?.parse::<LitStr>()?.value());
                }
                "vis" => args.vis = Some(meta.value()?.parse::<LitStr>()?.parse()?),
                "crate" => args.krate = Some(meta.value()?.parse::<LitStr>()?.parse()?),
                _ => {
                    return Err(meta.error(
                        "unknown `runar::service` argument; expected `path`, `name`, \
                         `version`, `description`, `vis` or `crate`",
                    ));
                }
            }
            Ok(())
        });
        parser.parse2(tokens)?;
        Ok(args)
    }
}

/// What a method is, from its helper attribute.
pub(crate) enum Role {
    /// `#[action]` or `#[action("name")]` (or, in a trait, no attribute).
    Action { name: Option<LitStr> },
    /// `#[subscribe("topic")]`.
    Subscribe { topic: LitStr },
}

/// Takes `#[action]` / `#[subscribe]` out of `attrs`. `Ok(None)` when there is neither.
pub(crate) fn take_role(attrs: &mut Vec<Attribute>) -> syn::Result<Option<(Role, Span)>> {
    let mut role: Option<(Role, Span)> = None;
    let mut error: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut error {
        Some(all) => all.combine(e),
        None => error = Some(e),
    };
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        let which = if attr.path().is_ident("action") {
            Some(true)
        } else if attr.path().is_ident("subscribe") {
            Some(false)
        } else {
            None
        };
        let Some(is_action) = which else {
            kept.push(attr);
            continue;
        };
        let parsed = if is_action {
            parse_action(&attr)
        } else {
            parse_subscribe(&attr)
        };
        match parsed {
            Ok(r) => {
                if role.is_some() {
                    push(syn::Error::new_spanned(
                        &attr,
                        "a method is one action or one subscription; remove one of the attributes",
                    ));
                } else {
                    role = Some((r, attr.span()));
                }
            }
            Err(e) => push(e),
        }
    }
    *attrs = kept;
    match error {
        Some(e) => Err(e),
        None => Ok(role),
    }
}

fn parse_action(attr: &Attribute) -> syn::Result<Role> {
    match &attr.meta {
        Meta::Path(_) => Ok(Role::Action { name: None }),
        Meta::List(list) => {
            if let Ok(name) = syn::parse2::<LitStr>(list.tokens.clone()) {
                return Ok(Role::Action { name: Some(name) });
            }
            let mut name = None;
            list.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    name = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error("expected `#[action]`, `#[action(\"name\")]` or `#[action(name = \"name\")]`"))
                }
            })?;
            Ok(Role::Action { name })
        }
        Meta::NameValue(_) => Err(syn::Error::new_spanned(
            attr,
            "expected `#[action]`, `#[action(\"name\")]` or `#[action(name = \"name\")]`",
        )),
    }
}

fn parse_subscribe(attr: &Attribute) -> syn::Result<Role> {
    let usage = "expected `#[subscribe(\"topic/pattern\")]`";
    let Meta::List(list) = &attr.meta else {
        return Err(syn::Error::new_spanned(attr, usage));
    };
    if let Ok(topic) = syn::parse2::<LitStr>(list.tokens.clone()) {
        return Ok(Role::Subscribe { topic });
    }
    let mut topic = None;
    list.parse_nested_meta(|meta| {
        if meta.path.is_ident("topic") {
            topic = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(usage))
        }
    })?;
    match topic {
        Some(topic) => Ok(Role::Subscribe { topic }),
        None => Err(syn::Error::new_spanned(attr, usage)),
    }
}

/// Takes `#[runar(...)]` out of a parameter's attributes.
pub(crate) fn take_param_options(attrs: &mut Vec<Attribute>) -> syn::Result<ParamOptions> {
    let mut options = ParamOptions::default();
    let mut result = Ok(());
    attrs.retain(|attr| {
        if !attr.path().is_ident("runar") {
            return true;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let span = meta.path.span();
            let scalar = match key.as_str() {
                "enumeration" => {
                    options.enumeration = Some(span);
                    return Ok(());
                }
                "sint32" => Scalar::Sint32,
                "sint64" => Scalar::Sint64,
                "fixed32" => Scalar::Fixed32,
                "fixed64" => Scalar::Fixed64,
                "sfixed32" => Scalar::Sfixed32,
                "sfixed64" => Scalar::Sfixed64,
                _ => {
                    return Err(meta.error(
                        "expected `enumeration`, `sint32`, `sint64`, `fixed32`, `fixed64`, \
                         `sfixed32` or `sfixed64`",
                    ));
                }
            };
            if options.scalar.is_some() {
                return Err(meta.error("one encoding per parameter"));
            }
            options.scalar = Some((scalar, span));
            Ok(())
        });
        if let Err(e) = parsed {
            match &mut result {
                Ok(()) => result = Err(e),
                Err(all) => all.combine(e),
            }
        }
        false
    });
    result.map(|()| options)
}

/// The first paragraph of the `///` docs in `attrs`, on one line.
pub(crate) fn doc_summary(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        let Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &nv.value
        else {
            continue;
        };
        for line in s.value().lines() {
            let line = line.trim();
            if line.is_empty() {
                if !lines.is_empty() {
                    return lines.join(" ");
                }
            } else {
                lines.push(line.to_owned());
            }
        }
    }
    lines.join(" ")
}

/// The `#[doc]` attributes in `attrs`.
pub(crate) fn docs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect()
}

/// The `#[cfg]` attributes in `attrs`.
pub(crate) fn cfgs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect()
}

/// The `#[allow]` attributes in `attrs` (they carry over to the method's client twin).
pub(crate) fn allows(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("allow"))
        .cloned()
        .collect()
}
