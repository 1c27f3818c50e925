//! The service's schema: an encoded `google.protobuf.FileDescriptorProto`, built while the macro
//! expands and embedded in the generated code as a byte string.

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type as ProtoType};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MessageOptions,
    MethodDescriptorProto, OneofDescriptorProto, ServiceDescriptorProto,
};
use syn::ext::IdentExt;

use runar_codegen::naming;

use crate::model::{Field, Method, Payload, Service};
use crate::types::{EMPTY, Elem, FieldType, ReturnKind, Shape};

/// The protobuf package of a service path: `shop/inventory` → `shop.inventory`.
pub(crate) fn package(path: &str) -> String {
    path.split('/')
        .map(|s| s.replace('-', "_"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Builds and encodes the service's `FileDescriptorProto`.
pub(crate) fn file_descriptor(service: &Service) -> Vec<u8> {
    let package = package(&service.path);
    let mut uses_wrappers = false;
    let mut uses_empty = false;
    let mut note = |type_name: &str| {
        if type_name == EMPTY {
            uses_empty = true;
        } else if type_name.starts_with(".google.protobuf.") {
            uses_wrappers = true;
        }
    };

    let mut messages = Vec::new();
    let mut rpcs = Vec::new();
    for method in service.methods.iter().filter(|m| m.is_action()) {
        let input = match method.payload(&service.ident) {
            Payload::Direct(Field {
                field:
                    FieldType {
                        shape: Shape::Single,
                        elem: Elem::Message { proto },
                    },
                ..
            }) => proto.clone(),
            // Scalars sent as prost's wrapper types and `()` are wire-identical to the
            // one-field (or empty) request message, which names the fields: describe that.
            _ => {
                let message = request_message(method, &package);
                for field in &message.field {
                    if let Some(t) = &field.type_name {
                        note(t);
                    }
                }
                messages.push(message);
                format!(".{package}.{}", method.message_name())
            }
        };
        let output = match &method.ret_kind {
            ReturnKind::WellKnown(name) => (*name).to_owned(),
            ReturnKind::Message(name) => name.clone(),
        };
        note(&input);
        note(&output);
        rpcs.push(MethodDescriptorProto {
            name: Some(method.camel_name()),
            input_type: Some(input),
            output_type: Some(output),
            client_streaming: method.call.streams_requests().then_some(true),
            server_streaming: method.call.streams_responses().then_some(true),
            ..Default::default()
        });
    }

    let mut dependency = Vec::new();
    if uses_empty {
        dependency.push("google/protobuf/empty.proto".to_owned());
    }
    if uses_wrappers {
        dependency.push("google/protobuf/wrappers.proto".to_owned());
    }
    let file = FileDescriptorProto {
        name: Some(format!("{}.proto", service.path)),
        package: Some(package),
        dependency,
        message_type: messages,
        service: vec![ServiceDescriptorProto {
            name: Some(service.ident.unraw().to_string()),
            method: rpcs,
            ..Default::default()
        }],
        syntax: Some("proto3".to_owned()),
        ..Default::default()
    };
    file.encode_to_vec()
}

/// The prost message types the schema names by their Rust name: each action's request (when
/// it is one message) and response, each name once, with its type (see
/// `runar_codegen::Service::schema_messages`).
pub(crate) fn messages(
    service: &Service,
) -> Vec<(String, proc_macro2::TokenStream, proc_macro2::TokenStream)> {
    use quote::ToTokens as _;
    let mut out = Vec::new();
    for method in service.methods.iter().filter(|m| m.is_action()) {
        let cfgs = &method.cfgs;
        let cfgs = quote::quote!(#(#cfgs)*);
        // A type of a configured-out method may not exist: each entry keeps its method's cfgs.
        let mut add = |name: &str, ty: &syn::Type| {
            if !name.starts_with('.') {
                out.push((name.to_owned(), ty.to_token_stream(), cfgs.clone()));
            }
        };
        if let Payload::Direct(Field {
            ty,
            field:
                FieldType {
                    shape: Shape::Single,
                    elem: Elem::Message { proto },
                },
            ..
        }) = method.payload(&service.ident)
        {
            add(proto, ty);
        }
        if let ReturnKind::Message(name) = &method.ret_kind {
            add(name, &method.ret);
        }
    }
    out
}

/// The request message of an action: one field per parameter.
fn request_message(method: &Method, package: &str) -> DescriptorProto {
    let mut message = DescriptorProto {
        name: Some(method.message_name()),
        ..Default::default()
    };
    for field in method.fields() {
        add_field(&mut message, field, package);
    }
    message
}

fn add_field(message: &mut DescriptorProto, field: &Field, package: &str) {
    let name = field.ident.unraw().to_string();
    let mut descriptor = FieldDescriptorProto {
        name: Some(name.clone()),
        number: Some(field.tag as i32),
        json_name: Some(naming::lower_camel_case(&name)),
        ..Default::default()
    };
    match &field.field.shape {
        Shape::Map { key, .. } => {
            let entry_name = format!("{}Entry", naming::upper_camel_case(&name));
            let mut key_field = FieldDescriptorProto {
                name: Some("key".to_owned()),
                number: Some(1),
                label: Some(Label::Optional as i32),
                json_name: Some("key".to_owned()),
                ..Default::default()
            };
            key_field.r#type = Some(key.proto_type() as i32);
            let mut value_field = FieldDescriptorProto {
                name: Some("value".to_owned()),
                number: Some(2),
                label: Some(Label::Optional as i32),
                json_name: Some("value".to_owned()),
                ..Default::default()
            };
            set_elem(&mut value_field, &field.field.elem);
            let entry_type = format!(
                ".{package}.{}.{entry_name}",
                message.name.as_deref().unwrap_or_default()
            );
            message.nested_type.push(DescriptorProto {
                name: Some(entry_name),
                field: vec![key_field, value_field],
                options: Some(MessageOptions {
                    map_entry: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            });
            descriptor.label = Some(Label::Repeated as i32);
            descriptor.r#type = Some(ProtoType::Message as i32);
            descriptor.type_name = Some(entry_type);
        }
        Shape::Repeated => {
            descriptor.label = Some(Label::Repeated as i32);
            set_elem(&mut descriptor, &field.field.elem);
        }
        Shape::Optional => {
            descriptor.label = Some(Label::Optional as i32);
            set_elem(&mut descriptor, &field.field.elem);
            // A message field is optional by nature; a scalar or enum needs proto3 `optional`,
            // which is a synthetic one-field oneof.
            if !matches!(field.field.elem, Elem::Message { .. }) {
                descriptor.proto3_optional = Some(true);
                descriptor.oneof_index = Some(message.oneof_decl.len() as i32);
                message.oneof_decl.push(OneofDescriptorProto {
                    name: Some(format!("_{name}")),
                    ..Default::default()
                });
            }
        }
        Shape::Single => {
            descriptor.label = Some(Label::Optional as i32);
            set_elem(&mut descriptor, &field.field.elem);
        }
    }
    message.field.push(descriptor);
}

fn set_elem(descriptor: &mut FieldDescriptorProto, elem: &Elem) {
    match elem {
        Elem::Scalar(s) => descriptor.r#type = Some(s.proto_type() as i32),
        Elem::Message { proto } => {
            descriptor.r#type = Some(ProtoType::Message as i32);
            descriptor.type_name = Some(proto.clone());
        }
        Elem::Enum { proto, .. } => {
            descriptor.r#type = Some(ProtoType::Enum as i32);
            descriptor.type_name = Some(proto.clone());
        }
    }
}
