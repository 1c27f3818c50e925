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
use runar::seal::{FieldSeal, FieldSealError, KeptSealed};
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
    // In the bytes' order: an element taken out of a list goes back at its index before a
    // later element is looked up by its own.
    for kept in &opened.sealed {
        mark_sealed(&mut json, message, &opened.bytes, kept);
    }
    Ok(json)
}

/// Puts `"<sealed:LABEL>"` where `kept` was in `json` (the JSON of `message`, whose `bytes`
/// it was decoded from): a field by its name, an element of a list at its index, a field in
/// a map's value under the entry's key (read from the entry's bytes). A place the JSON does
/// not have is left as it is.
fn mark_sealed(
    json: &mut serde_json::Value,
    message: &MessageDescriptor,
    bytes: &[u8],
    kept: &KeptSealed,
) {
    let marker = serde_json::Value::String(format!("<sealed:{}>", kept.label));
    let mut node = json;
    let mut message = message.clone();
    let mut bytes = Some(bytes);
    let mut steps = kept
        .path
        .iter()
        .copied()
        .zip(kept.occurrences.iter().copied())
        .peekable();
    while let Some((number, occurrence)) = steps.next() {
        let Some(field) = message.get_field(number) else {
            return;
        };
        let Some(object) = node.as_object_mut() else {
            return;
        };
        let name = field.json_name();
        let index = usize::try_from(occurrence).unwrap_or(usize::MAX);
        if steps.peek().is_none() {
            if field.is_list() {
                let list = object
                    .entry(name)
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let Some(list) = list.as_array_mut() {
                    list.insert(index.min(list.len()), marker);
                }
            } else {
                object.insert(name.to_owned(), marker);
            }
            return;
        }
        let Kind::Message(inner) = field.kind() else {
            return;
        };
        let value = bytes.and_then(|b| nth_field(b, number, occurrence));
        let Some(child) = object.get_mut(name) else {
            return;
        };
        if field.is_map() {
            // The next step is the entry's value (field 2), under the entry's key.
            let (Some(key), Some((2, _))) = (value.and_then(|v| map_key(&inner, v)), steps.next())
            else {
                return;
            };
            let Some(entries) = child.as_object_mut() else {
                return;
            };
            if steps.peek().is_none() {
                entries.insert(key, marker);
                return;
            }
            let (Some(entry), Kind::Message(value_type)) =
                (entries.get_mut(&key), inner.map_entry_value_field().kind())
            else {
                return;
            };
            node = entry;
            bytes = value.and_then(|v| nth_field(v, 2, 0));
            message = value_type;
            continue;
        }
        node = if field.is_list() {
            match child.as_array_mut().and_then(|list| list.get_mut(index)) {
                Some(element) => element,
                None => return,
            }
        } else {
            child
        };
        bytes = value;
        message = inner;
    }
}

/// The value of the `n`th occurrence (from 0) of the length-delimited field `number` in a
/// message's `bytes`.
fn nth_field(mut bytes: &[u8], number: u32, n: u32) -> Option<&[u8]> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut seen = 0u32;
    while !bytes.is_empty() {
        let (tag, wire_type) = decode_key(&mut bytes).ok()?;
        if wire_type != WireType::LengthDelimited {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).ok()?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
        let value = bytes.get(..len)?;
        bytes = bytes.get(len..)?;
        if tag == number {
            if seen == n {
                return Some(value);
            }
            seen = seen.saturating_add(1);
        }
    }
    None
}

/// The JSON key of a map entry (`entry`'s bytes), as the proto3 JSON mapping writes it.
fn map_key(entry: &MessageDescriptor, bytes: &[u8]) -> Option<String> {
    let decoded = DynamicMessage::decode(entry.clone(), bytes).ok()?;
    let key = decoded.get_field(&entry.map_entry_key_field());
    Some(match &*key {
        prost_reflect::Value::String(s) => s.clone(),
        prost_reflect::Value::Bool(b) => b.to_string(),
        prost_reflect::Value::I32(n) => n.to_string(),
        prost_reflect::Value::I64(n) => n.to_string(),
        prost_reflect::Value::U32(n) => n.to_string(),
        prost_reflect::Value::U64(n) => n.to_string(),
        _ => return None,
    })
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
