//! `#[runar::message]`: labelled (sealed) fields on a hand-written prost message, the code-first
//! twin of `[(runar.label) = "user"]` in a `.proto` (which `runar-build` rewrites).
//!
//! A field `#[runar(label = "user")] #[prost(string, tag = "2")] name: String` becomes
//! `#[prost(oneof = "Sealed<String, Marker>", tags = "2")] name: Option<Sealed<String, Marker>>`,
//! the shape and wire format `runar-build` generates, with a marker type naming the message's
//! full protobuf name, the field number and the label.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Fields, ItemStruct, LitStr, Type};

/// Expands `#[runar::message(...)]` on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut package: Option<LitStr> = None;
    let mut krate: Option<syn::Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("package") {
            package = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("crate") {
            krate = Some(meta.value()?.parse::<LitStr>()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown `runar::message` argument; expected `package` or `crate`"))
        }
    });
    parser.parse2(attr)?;
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::runar));
    let mut item: ItemStruct = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[runar::message]` goes on a struct deriving `prost::Message`",
        )
    })?;
    let name = item.ident.to_string();
    let full_name = match &package {
        Some(p) if !p.value().is_empty() => format!("{}.{name}", p.value()),
        _ => name.clone(),
    };
    let vis = item.vis.clone();
    let Fields::Named(named) = &mut item.fields else {
        return Err(syn::Error::new(
            item.span(),
            "`#[runar::message]` needs a struct with named fields",
        ));
    };
    let package_name = package.as_ref().map(LitStr::value).unwrap_or_default();
    // The message's own schema, from the fields as written (before the labelled ones are
    // rewritten); `None` once a field has a shape it does not describe.
    let mut schema_fields = Some(Vec::new());
    let mut labelled = false;
    let mut markers = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let mut push_error = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    for field in named.named.iter_mut() {
        let mut label: Option<LitStr> = None;
        let mut keep = Vec::with_capacity(field.attrs.len());
        for attr in std::mem::take(&mut field.attrs) {
            if !attr.path().is_ident("runar") {
                keep.push(attr);
                continue;
            }
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("label") {
                    label = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error("unknown `runar` field attribute; expected `label = \"...\"`"))
                }
            });
            if let Err(e) = parsed {
                push_error(e);
            }
        }
        field.attrs = keep;
        let entry = crate::descriptor::field(
            field,
            label.as_ref().map(LitStr::value).as_deref(),
            &package_name,
        );
        match (&mut schema_fields, entry) {
            (Some(fields), Some(entry)) => fields.push(entry),
            (fields, _) => *fields = None,
        }
        let Some(label) = label else { continue };
        labelled = true;
        let field_name = field
            .ident
            .as_ref()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let value = label.value();
        if let Some(problem) = runar_codegen::sealed::label_problem(&value) {
            push_error(syn::Error::new(label.span(), problem));
            continue;
        }
        match seal_field(field, &name, &full_name, &field_name, &value, &vis, &krate) {
            Ok(marker) => markers.push(marker),
            Err(e) => push_error(e),
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }
    let ident = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let schema = schema_fields.map(|fields| {
        let descriptor =
            proc_macro2::Literal::byte_string(&crate::descriptor::message(&name, fields));
        quote! {
            impl #impl_generics #krate::codegen::MessageSchema for #ident #ty_generics #where_clause {
                const FULL_NAME: &'static str = #full_name;
                const DESCRIPTOR: &'static [u8] = #descriptor;
                const LABELLED: bool = #labelled;
            }
        }
    });
    Ok(quote! {
        #item
        #(#markers)*
        #schema
    })
}

/// Rewrites one labelled field; returns its marker type.
fn seal_field(
    field: &mut syn::Field,
    message: &str,
    full_name: &str,
    field_name: &str,
    label: &str,
    vis: &syn::Visibility,
    krate: &syn::Path,
) -> syn::Result<TokenStream> {
    let prost_index = field
        .attrs
        .iter()
        .position(|a| a.path().is_ident("prost"))
        .ok_or_else(|| {
            syn::Error::new(
                field.span(),
                "a labelled field needs its `#[prost(..., tag = \"N\")]` attribute",
            )
        })?;
    let mut tag: Option<u32> = None;
    let mut is_message = false;
    let mut bad: Option<&'static str> = None;
    let prost_attr = field.attrs.remove(prost_index);
    prost_attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "tag" => {
                let lit: LitStr = meta.value()?.parse()?;
                tag = Some(
                    lit.value()
                        .parse()
                        .map_err(|_| meta.error("not a field number"))?,
                );
            }
            "message" => is_message = true,
            "repeated" | "packed" => bad = Some("a labelled field must be singular (not repeated)"),
            "map" | "btree_map" | "hash_map" => bad = Some("a labelled field cannot be a map"),
            "optional" | "oneof" | "tags" | "enumeration" => {
                if key == "optional" && is_message {
                    // prost's `message, optional`: the ordinary singular message field.
                } else if key == "optional" {
                    bad = Some("a labelled field cannot be proto3 `optional`");
                } else {
                    bad = Some("a labelled field is a scalar, string, bytes or message field");
                }
                if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                }
            }
            _ => {
                if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                }
            }
        }
        Ok(())
    })?;
    if let Some(reason) = bad {
        return Err(syn::Error::new(prost_attr.span(), reason));
    }
    let tag = tag.ok_or_else(|| syn::Error::new(prost_attr.span(), "no `tag = \"N\"`"))?;
    let value_type: Type = if is_message {
        runar_codegen::sealed::option_inner(&field.ty).ok_or_else(|| {
            syn::Error::new(field.ty.span(), "a message field is `Option<Message>`")
        })?
    } else {
        field.ty.clone()
    };
    let marker = format_ident!("__RunarSealed_{}_{}", message, field_name);
    let sealed_path = quote!(#krate::codegen::Sealed::<#value_type, #marker>).to_string();
    let tags = tag.to_string();
    field
        .attrs
        .push(syn::parse_quote!(#[prost(oneof = #sealed_path, tags = #tags)]));
    field.ty = syn::parse_quote!(
        ::core::option::Option<#krate::codegen::Sealed<#value_type, #marker>>
    );
    Ok(runar_codegen::sealed::sealed_marker(
        vis, &marker, krate, full_name, field_name, tag, label,
    ))
}
