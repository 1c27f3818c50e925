//! The nodes' schemas in one prost-reflect pool: JSON ⇄ protobuf (the proto3 JSON mapping) and
//! `.proto` text for `describe`.

use std::fmt::Write as _;

use prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, SerializeOptions, ServiceDescriptor,
};
use runar::introspection::ServiceList;

use crate::error::CliError;

/// Every schema the nodes serve, with the well-known types.
pub(crate) struct Schemas {
    pub(crate) pool: DescriptorPool,
    /// Schemas that could not be added (an import no node serves), as messages.
    pub(crate) skipped: Vec<String>,
}

impl Schemas {
    /// The pool of the schemas in `lists` (each service's `FileDescriptorSet`). A file served
    /// by several services or nodes is added once.
    pub(crate) fn new<'a>(lists: impl IntoIterator<Item = &'a ServiceList>) -> Schemas {
        let mut pool = DescriptorPool::global();
        let mut skipped = Vec::new();
        for service in lists.into_iter().flat_map(|l| &l.services) {
            if service.schema.is_empty() {
                continue;
            }
            let set = match prost_types::FileDescriptorSet::decode(service.schema.as_ref()) {
                Ok(set) => set,
                Err(e) => {
                    skipped.push(format!("{}: {e}", service.path));
                    continue;
                }
            };
            for file in set.file {
                if pool.get_file_by_name(file.name()).is_some() {
                    continue;
                }
                let name = file.name().to_owned();
                if let Err(e) = pool.add_file_descriptor_proto(file) {
                    skipped.push(format!("{name} (service {}): {e}", service.path));
                }
            }
        }
        Schemas { pool, skipped }
    }

    /// The message named `name` (full name, leading `.` allowed).
    pub(crate) fn message(&self, name: &str) -> Result<MessageDescriptor, CliError> {
        let name = name.trim_start_matches('.');
        self.pool.get_message_by_name(name).ok_or_else(|| {
            let mut error = CliError::not_found(format!("no schema names the message `{name}`"));
            if !self.skipped.is_empty() {
                error = error.with_hint(format!(
                    "some schemas could not be read: {}",
                    self.skipped.join("; ")
                ));
            }
            error
        })
    }

    /// The service whose full name or name is `name`.
    pub(crate) fn service(&self, name: &str) -> Option<ServiceDescriptor> {
        self.pool
            .services()
            .find(|s| s.full_name() == name || s.name() == name)
    }
}

/// `json` (proto3 JSON mapping) as the protobuf encoding of `message`.
pub(crate) fn encode_json(message: &MessageDescriptor, json: &str) -> Result<Vec<u8>, CliError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(message.clone(), &mut deserializer)
        .and_then(|m| deserializer.end().map(|()| m))
        .map_err(|e| {
            CliError::invalid(format!("the JSON is not a `{}`: {e}", message.full_name()))
        })?;
    Ok(dynamic.encode_to_vec())
}

/// The protobuf `bytes` of a `message`, as proto3 JSON.
pub(crate) fn decode_to_json(
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<serde_json::Value, CliError> {
    let dynamic = DynamicMessage::decode(message.clone(), bytes).map_err(|e| {
        CliError::new(
            runar::Code::Internal,
            format!(
                "the reply does not decode as `{}`: {e}",
                message.full_name()
            ),
        )
    })?;
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| CliError::internal(format!("cannot write the reply as JSON: {e}")))
}

/// A service as `.proto` text.
pub(crate) fn service_text(service: &ServiceDescriptor) -> String {
    let mut out = format!(
        "// {}\nservice {} {{\n",
        service.parent_file().name(),
        service.name()
    );
    for method in service.methods() {
        let stream = |yes: bool| if yes { "stream " } else { "" };
        let _ = writeln!(
            out,
            "  rpc {}({}{}) returns ({}{});",
            method.name(),
            stream(method.is_client_streaming()),
            method.input().full_name(),
            stream(method.is_server_streaming()),
            method.output().full_name()
        );
    }
    out.push_str("}\n");
    out
}

/// A message (with its nested messages and enums) as `.proto` text. Nesting follows the
/// schema's own nesting, which a `FileDescriptorProto` bounds.
pub(crate) fn message_text(message: &MessageDescriptor) -> String {
    let mut out = String::new();
    write_message(&mut out, message, 0);
    out
}

fn write_message(out: &mut String, message: &MessageDescriptor, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}message {} {{", message.name());
    for nested in message.child_messages().filter(|m| !m.is_map_entry()) {
        write_message(out, &nested, depth + 1);
    }
    for nested in message.child_enums() {
        write_enum(out, &nested, depth + 1);
    }
    let mut oneof_seen = Vec::new();
    for field in message.fields() {
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            if oneof_seen.contains(&oneof.name().to_owned()) {
                continue;
            }
            oneof_seen.push(oneof.name().to_owned());
            let _ = writeln!(out, "{pad}  oneof {} {{", oneof.name());
            for f in oneof.fields() {
                let _ = writeln!(
                    out,
                    "{pad}    {} {} = {};",
                    type_name(&f),
                    f.name(),
                    f.number()
                );
            }
            let _ = writeln!(out, "{pad}  }}");
            continue;
        }
        let label = if field.is_map() {
            ""
        } else if field.is_list() {
            "repeated "
        } else if field.supports_presence() && field.cardinality() == Cardinality::Optional {
            "optional "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{pad}  {label}{} {} = {};",
            type_name(&field),
            field.name(),
            field.number()
        );
    }
    let _ = writeln!(out, "{pad}}}");
}

fn write_enum(out: &mut String, e: &EnumDescriptor, depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}enum {} {{", e.name());
    for value in e.values() {
        let _ = writeln!(out, "{pad}  {} = {};", value.name(), value.number());
    }
    let _ = writeln!(out, "{pad}}}");
}

/// An enum as `.proto` text.
pub(crate) fn enum_text(e: &EnumDescriptor) -> String {
    let mut out = String::new();
    write_enum(&mut out, e, 0);
    out
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
    }
}

fn type_name(field: &FieldDescriptor) -> String {
    if field.is_map() {
        if let Kind::Message(entry) = field.kind() {
            let key = entry.map_entry_key_field().kind();
            let value = entry.map_entry_value_field().kind();
            return format!("map<{}, {}>", kind_name(&key), kind_name(&value));
        }
    }
    kind_name(&field.kind())
}
