//! Labelled fields (`[(runar.label) = "user"]`): found in the descriptors, then rewritten in
//! prost's output into `Option<::runar::codegen::Sealed<T, Marker>>`, a one-field oneof whose
//! codec seals and opens (see `runar_runtime::seal`). Each field gets a marker type naming its
//! message, number and label, in a hidden `__runar_sealed` module of the package's file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use proc_macro2::{Span, TokenStream};
use prost_reflect::{DescriptorPool, Kind};
use quote::quote;
use runar_codegen::naming;
use syn::{Fields, Ident, Item, Type};

use crate::Error;
use crate::model::line_of;

/// The full name of the field option extension in `runar/options.proto`.
const LABEL_OPTION: &str = "runar.label";
/// The hidden module of marker types in each generated file.
const MARKERS: &str = "__runar_sealed";

/// One labelled field.
#[derive(Debug)]
pub(crate) struct Labelled {
    package: String,
    /// The message's name and its parents', outermost first.
    messages: Vec<String>,
    message_full_name: String,
    field_name: String,
    number: u32,
    label: String,
    /// The full name of the field's message type, when it is a message.
    message_type: Option<String>,
    file: String,
}

/// The labelled fields of `pool`, checked: singular fields with a valid label.
pub(crate) fn collect(pool: &DescriptorPool) -> Result<Vec<Labelled>, Error> {
    let Some(ext) = pool.get_extension_by_name(LABEL_OPTION) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for message in pool.all_messages() {
        if message.is_map_entry() {
            continue;
        }
        for field in message.fields() {
            let options = field.options();
            if !options.has_extension(&ext) {
                continue;
            }
            let label = options
                .get_extension(&ext)
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let file = message.parent_file();
            let unsupported = |reason: String| Error::Unsupported {
                file: file.name().to_owned(),
                line: line_of(&file, field.path()),
                construct: format!("field {}", field.full_name()),
                reason,
            };
            if let Some(problem) = runar_codegen::sealed::label_problem(&label) {
                return Err(unsupported(problem));
            }
            if field.is_list() || field.is_map() {
                return Err(unsupported(
                    "a labelled field must be singular (not repeated or a map); label a \
                     message field that holds the list instead"
                        .into(),
                ));
            }
            if field.containing_oneof().is_some() {
                return Err(unsupported(
                    "a labelled field cannot be in a oneof or proto3 `optional`".into(),
                ));
            }
            let mut messages = vec![message.name().to_owned()];
            let mut parent = message.parent_message();
            while let Some(p) = parent {
                messages.insert(0, p.name().to_owned());
                parent = p.parent_message();
            }
            out.push(Labelled {
                package: message.package_name().to_owned(),
                messages,
                message_full_name: message.full_name().to_owned(),
                field_name: field.name().to_owned(),
                number: field.number(),
                label,
                message_type: match field.kind() {
                    Kind::Message(m) => Some(m.full_name().to_owned()),
                    _ => None,
                },
                file: file.name().to_owned(),
            });
        }
    }
    Ok(out)
}

/// Rewrites the labelled fields in the files prost-build wrote into `out_dir`.
pub(crate) fn rewrite(out_dir: &Path, fields: &[Labelled]) -> Result<(), Error> {
    let mut by_package: BTreeMap<&str, Vec<&Labelled>> = BTreeMap::new();
    for field in fields {
        by_package.entry(&field.package).or_default().push(field);
    }
    for (package, fields) in by_package {
        let name = if package.is_empty() { "_" } else { package };
        let path = out_dir.join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&path)?;
        let mut file = syn::parse_file(&source).map_err(|e| {
            std::io::Error::other(format!(
                "cannot parse prost's output {}: {e}",
                path.display()
            ))
        })?;
        let mut markers = Vec::new();
        let mut sealed_messages = HashSet::new();
        for field in fields {
            markers.push(rewrite_field(&mut file.items, field, &mut sealed_messages)?);
        }
        let markers_ident = Ident::new(MARKERS, Span::call_site());
        file.items.push(syn::parse_quote! {
            /// Marker types of the labelled fields (`runar::codegen::SealedField`).
            #[doc(hidden)]
            #[allow(non_camel_case_types, missing_docs, unreachable_pub)]
            pub mod #markers_ident {
                #(#markers)*
            }
        });
        std::fs::write(&path, prettyplease::unparse(&file))?;
    }
    Ok(())
}

/// Rewrites one field in `items` (the file's), returning its marker type's definition.
fn rewrite_field(
    items: &mut Vec<Item>,
    field: &Labelled,
    sealed_messages: &mut HashSet<String>,
) -> Result<TokenStream, Error> {
    let not_found = || Error::Unsupported {
        file: field.file.clone(),
        line: None,
        construct: format!("field {}.{}", field.message_full_name, field.field_name),
        reason: "runar-build could not find prost's code for this labelled field".into(),
    };
    // Nested messages live in modules named after their parents.
    let (name, parents) = field.messages.split_last().ok_or_else(not_found)?;
    let mut scope = items;
    for parent in parents {
        let module = naming::snake_case(parent);
        scope = scope
            .iter_mut()
            .find_map(|item| match item {
                Item::Mod(m) if m.ident == module => m.content.as_mut().map(|(_, items)| items),
                _ => None,
            })
            .ok_or_else(not_found)?;
    }
    let struct_name = naming::upper_camel_case(name);
    let marker = Ident::new(
        &format!("{}_{}", field.messages.join("_"), field.field_name),
        Span::call_site(),
    );
    let supers = parents.iter().map(|_| quote!(super::));
    let markers_ident = Ident::new(MARKERS, Span::call_site());
    let marker_path = quote!(#(#supers)* #markers_ident::#marker);

    let mut message_type = None;
    {
        let item = scope
            .iter_mut()
            .find_map(|item| match item {
                Item::Struct(s) if s.ident == struct_name => Some(s),
                _ => None,
            })
            .ok_or_else(not_found)?;
        // A message with a sealed field is not `Copy`.
        for attr in &mut item.attrs {
            if attr.path().is_ident("derive") {
                let derives = attr.meta.to_token_stream_string();
                if derives.contains("Copy") {
                    let kept: Vec<syn::Path> = attr
                        .parse_args_with(
                            syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
                        )
                        .map_err(|_| not_found())?
                        .into_iter()
                        .filter(|p| !p.is_ident("Copy"))
                        .collect();
                    *attr = syn::parse_quote!(#[derive(#(#kept),*)]);
                }
            }
        }
        let Fields::Named(named) = &mut item.fields else {
            return Err(not_found());
        };
        let tag = format!("tag=\"{}\"", field.number);
        let target = named
            .named
            .iter_mut()
            .find(|f| {
                f.attrs.iter().any(|a| {
                    a.path().is_ident("prost") && a.meta.to_token_stream_string().contains(&tag)
                })
            })
            .ok_or_else(not_found)?;
        let value_type: Type = match &field.message_type {
            // prost holds a singular message as `Option<M>`.
            Some(_) => runar_codegen::sealed::option_inner(&target.ty).ok_or_else(not_found)?,
            None => target.ty.clone(),
        };
        if field.message_type.is_some() {
            message_type = Some(value_type.clone());
        }
        let sealed = quote!(::runar::codegen::Sealed::<#value_type, #marker_path>).to_string();
        let tags = field.number.to_string();
        target.attrs.retain(|a| !a.path().is_ident("prost"));
        target
            .attrs
            .push(syn::parse_quote!(#[prost(oneof = #sealed, tags = #tags)]));
        target.ty = syn::parse_quote!(
            ::core::option::Option<::runar::codegen::Sealed<#value_type, #marker_path>>
        );
    }
    if let (Some(ty), Some(full)) = (message_type, &field.message_type) {
        if sealed_messages.insert(full.clone()) {
            scope.push(syn::parse_quote!(::runar::codegen::sealed_message!(#ty);));
        }
    }
    Ok(runar_codegen::sealed::sealed_marker(
        &quote!(pub),
        &marker,
        &quote!(::runar),
        &field.message_full_name,
        &field.field_name,
        field.number,
        &field.label,
    ))
}

trait MetaString {
    fn to_token_stream_string(&self) -> String;
}

impl MetaString for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote!(#self).to_string().replace(' ', "")
    }
}
