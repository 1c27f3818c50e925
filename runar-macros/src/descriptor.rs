//! A `#[runar::message]`'s own schema: its `DescriptorProto`, read from the struct's
//! `#[prost(..)]` field attributes, each labelled field with its `(runar.label)` option, so a
//! `#[runar::service]` using the message defines it in its schema (`runar::codegen::MessageSchema`).

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type as ProtoType};
use prost_types::{DescriptorProto, FieldDescriptorProto, OneofDescriptorProto};
use syn::ext::IdentExt;
use syn::{LitStr, Type};

use runar_codegen::naming;

/// The extension number of `(runar.label)` on `google.protobuf.FieldOptions`.
const LABEL_OPTION: u32 = 51702;

/// One field, read from its `#[prost(..)]` attribute.
pub(crate) struct FieldEntry {
    descriptor: FieldDescriptorProto,
    label: Option<String>,
}

/// The field `field` (its `#[prost]` attribute as written) labelled `label`, or `None` when its
/// attribute has a shape this schema does not describe (a map or a oneof): the message then
/// gets no schema of its own.
pub(crate) fn field(field: &syn::Field, label: Option<&str>, package: &str) -> Option<FieldEntry> {
    let attr = field.attrs.iter().find(|a| a.path().is_ident("prost"))?;
    let name = field.ident.as_ref()?.unraw().to_string();
    let mut kind: Option<ProtoType> = None;
    let mut enumeration: Option<String> = None;
    let mut tag: Option<i32> = None;
    let mut repeated = false;
    let mut optional = false;
    let mut unsupported = false;
    attr.parse_nested_meta(|meta| {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let value: Option<syn::Expr> = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse()?)
        } else {
            None
        };
        let text = || match &value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            })) => Some(LitStr::value(s)),
            _ => None,
        };
        match key.as_str() {
            "tag" => tag = text().and_then(|t| t.parse().ok()),
            "repeated" | "packed" => repeated = true,
            "optional" => optional = true,
            "enumeration" => {
                kind = Some(ProtoType::Enum);
                enumeration = text();
            }
            "map" | "btree_map" | "hash_map" | "oneof" | "tags" | "group" => unsupported = true,
            other => {
                if let Some(t) = scalar(other) {
                    kind = Some(t);
                }
            }
        }
        Ok(())
    })
    .ok()?;
    if unsupported {
        return None;
    }
    let kind = kind?;
    let mut descriptor = FieldDescriptorProto {
        name: Some(name.clone()),
        number: Some(tag?),
        json_name: Some(naming::lower_camel_case(&name)),
        label: Some(if repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(kind as i32),
        ..Default::default()
    };
    let qualify = |rust: &str| match package {
        "" => format!(".{rust}"),
        p => format!(".{p}.{rust}"),
    };
    match kind {
        ProtoType::Message => descriptor.type_name = Some(qualify(&element_name(&field.ty)?)),
        ProtoType::Enum => {
            let rust = enumeration?;
            descriptor.type_name = Some(qualify(rust.rsplit("::").next().unwrap_or(&rust)));
        }
        _ => {}
    }
    if optional && kind != ProtoType::Message {
        descriptor.proto3_optional = Some(true);
    }
    Some(FieldEntry {
        descriptor,
        label: label.map(str::to_owned),
    })
}

/// The message's encoded `DescriptorProto`.
pub(crate) fn message(name: &str, fields: Vec<FieldEntry>) -> Vec<u8> {
    let mut message = DescriptorProto {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    let mut entries = Vec::with_capacity(fields.len());
    for mut entry in fields {
        if entry.descriptor.proto3_optional == Some(true) {
            // proto3 `optional`: a synthetic one-field oneof.
            entry.descriptor.oneof_index = i32::try_from(message.oneof_decl.len()).ok();
            message.oneof_decl.push(OneofDescriptorProto {
                name: Some(format!("_{}", entry.descriptor.name())),
                ..Default::default()
            });
        }
        let mut bytes = entry.descriptor.encode_to_vec();
        if let Some(label) = &entry.label {
            // `options` (8): FieldOptions with the extension, which prost-types cannot hold.
            let mut options = Vec::new();
            prost::encoding::string::encode(LABEL_OPTION, label, &mut options);
            prost::encoding::bytes::encode(8, &options, &mut bytes);
        }
        entries.push(bytes);
    }
    let mut out = message.encode_to_vec();
    for entry in entries {
        // `field` (2).
        prost::encoding::bytes::encode(2, &entry, &mut out);
    }
    out
}

/// The protobuf type of prost's scalar attribute `kind`, or `message`.
fn scalar(kind: &str) -> Option<ProtoType> {
    Some(match kind {
        "string" => ProtoType::String,
        "bytes" => ProtoType::Bytes,
        "bool" => ProtoType::Bool,
        "int32" => ProtoType::Int32,
        "int64" => ProtoType::Int64,
        "uint32" => ProtoType::Uint32,
        "uint64" => ProtoType::Uint64,
        "sint32" => ProtoType::Sint32,
        "sint64" => ProtoType::Sint64,
        "fixed32" => ProtoType::Fixed32,
        "fixed64" => ProtoType::Fixed64,
        "sfixed32" => ProtoType::Sfixed32,
        "sfixed64" => ProtoType::Sfixed64,
        "float" => ProtoType::Float,
        "double" => ProtoType::Double,
        "message" => ProtoType::Message,
        _ => return None,
    })
}

/// The Rust name of a message field's element type: `Inner` of `Option<Inner>`,
/// `Vec<a::Inner>` or `Box<Inner>`.
fn element_name(ty: &Type) -> Option<String> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
        if let Some(syn::GenericArgument::Type(inner)) = args.args.first() {
            return element_name(inner);
        }
    }
    Some(last.ident.unraw().to_string())
}
