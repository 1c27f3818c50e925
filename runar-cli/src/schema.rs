//! The nodes' schemas in one prost-reflect pool: JSON ⇄ protobuf (the proto3 JSON mapping, with
//! labelled fields sealed and opened by the runtime's `FieldSeal`) and `.proto` text for
//! `describe`.

use std::fmt::Write as _;

use prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, SerializeOptions, ServiceDescriptor,
};
use runar::introspection::ServiceList;
use runar::seal::{FieldSeal, FieldSealError};
use runar_grpc::schema::{Described, OPTIONS_FILE, label_of, options_file};

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
        // Served schemas import `runar/options.proto` without carrying it.
        if pool.get_file_by_name(OPTIONS_FILE).is_none() {
            if let Err(e) = pool.add_file_descriptor_proto(options_file()) {
                skipped.push(format!("{OPTIONS_FILE}: {e}"));
            }
        }
        for service in lists.into_iter().flat_map(|l| &l.services) {
            if service.schema.is_empty() {
                continue;
            }
            // Each file's own bytes, not prost-types' decoding of them, which would drop the
            // extension options (`(runar.label)`).
            let files = match raw_files(service.schema.as_ref()) {
                Ok(files) => files,
                Err(e) => {
                    skipped.push(format!("{}: {e}", service.path));
                    continue;
                }
            };
            for raw in files {
                let name = match prost_types::FileDescriptorProto::decode(raw.as_ref()) {
                    Ok(file) => file.name().to_owned(),
                    Err(e) => {
                        skipped.push(format!("{}: {e}", service.path));
                        continue;
                    }
                };
                if pool.get_file_by_name(&name).is_some() {
                    continue;
                }
                if let Err(e) = pool.decode_file_descriptor_proto(raw) {
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

/// The encoded files of an encoded `FileDescriptorSet` (its field 1).
fn raw_files(mut set: &[u8]) -> Result<Vec<bytes::Bytes>, prost::DecodeError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
    let mut files = Vec::new();
    while !set.is_empty() {
        let (number, wire_type) = decode_key(&mut set)?;
        if number == 1 && wire_type == WireType::LengthDelimited {
            let mut file = bytes::Bytes::new();
            prost::encoding::bytes::merge(
                wire_type,
                &mut file,
                &mut set,
                DecodeContext::default(),
            )?;
            files.push(file);
        } else {
            skip_field(wire_type, number, &mut set, DecodeContext::default())?;
        }
    }
    Ok(files)
}

/// `json` (proto3 JSON mapping) as the protobuf encoding of `message`, as it is.
fn encode_plain(message: &MessageDescriptor, json: &str) -> Result<Vec<u8>, CliError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(message.clone(), &mut deserializer)
        .and_then(|m| deserializer.end().map(|()| m))
        .map_err(|e| {
            CliError::invalid(format!("the JSON is not a `{}`: {e}", message.full_name()))
        })?;
    Ok(dynamic.encode_to_vec())
}

/// A [`FieldSeal`] error as the CLI reports it.
fn seal_error(e: FieldSealError) -> CliError {
    match e {
        FieldSealError::NoKey { ref label, .. } => {
            let hint = format!(
                "give --keystore DIR holding label `{label}`'s key (`runar keys import {label} \
                 EPOCH FILE`), or only its public key (a file of `runar keys export {label} \
                 EPOCH --public`) to seal to it"
            );
            CliError::invalid(e.to_string()).with_hint(hint)
        }
        FieldSealError::Malformed { .. } => CliError::invalid(e.to_string()),
        _ => CliError::internal(e.to_string()),
    }
}

/// `json` (proto3 JSON mapping) as the protobuf encoding of `message`, its labelled fields
/// sealed with `seal` (an error, before anything is sent, when the CLI has no key for one).
pub(crate) fn encode_json(
    message: &MessageDescriptor,
    json: &str,
    seal: &FieldSeal,
) -> Result<Vec<u8>, CliError> {
    let bytes = encode_plain(message, json)?;
    seal.seal(&Described(message.clone()), &bytes)
        .map_err(seal_error)
}

/// The protobuf `bytes` of a `message`, as proto3 JSON: the labelled fields `seal` opens as
/// plain values, the others as `"<sealed:LABEL>"`.
pub(crate) fn decode_to_json(
    message: &MessageDescriptor,
    bytes: &[u8],
    seal: &FieldSeal,
) -> Result<serde_json::Value, CliError> {
    let opened = seal
        .open(&Described(message.clone()), bytes)
        .map_err(seal_error)?;
    let mut json = decode_plain(message, &opened.bytes)?;
    for kept in opened.sealed {
        // The JSON names along the field numbers' path.
        let mut names = Vec::with_capacity(kept.path.len());
        let mut at = Some(message.clone());
        for number in &kept.path {
            let Some(field) = at.as_ref().and_then(|m| m.get_field(*number)) else {
                break;
            };
            names.push(field.json_name().to_owned());
            at = match field.kind() {
                Kind::Message(inner) => Some(inner),
                _ => None,
            };
        }
        let Some((last, parents)) = names.split_last() else {
            continue;
        };
        let parent: String = parents.iter().map(|key| format!("/{key}")).collect();
        if let Some(object) = json
            .pointer_mut(&parent)
            .and_then(serde_json::Value::as_object_mut)
        {
            object.insert(
                last.clone(),
                serde_json::Value::String(format!("<sealed:{}>", kept.label)),
            );
        }
    }
    Ok(json)
}

fn decode_plain(message: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value, CliError> {
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
        let sealed = label_of(&field)
            .map(|l| format!(" [(runar.label) = \"{l}\"]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{pad}  {label}{} {} = {}{sealed};",
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
