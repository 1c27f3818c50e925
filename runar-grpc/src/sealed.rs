//! Sealed (labelled) fields through the gateway: which messages of the served schemas carry
//! `(runar.label)` fields, and the rewrite of a message's bytes that opens them (replies) or
//! seals them (requests), as [`SealedFields`](crate::SealedFields) says.
//!
//! A labelled field from another node is an envelope, a length-delimited value in the field's
//! place whatever its declared type. In `Open` mode the gateway node opens each one with its
//! key resolver and puts the field's plaintext (its key and value, as a generated message
//! encodes it) back in its place; one it cannot open fails the call with `PERMISSION_DENIED`
//! naming the field. A request's labelled fields, in clear from the client, are sealed the same
//! way a generated message's are when it crosses to another node.

use std::collections::{HashMap, HashSet};

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, encode_varint};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use runar_runtime::Node;
use runar_runtime::seal::{FieldOpened, SealFields};
use tonic::Status;

/// The full name of the field option that labels (seals) a field (`runar/options.proto`).
const LABEL_OPTION: &str = "runar.label";
/// The name of Runar's options file.
const OPTIONS_FILE: &str = "runar/options.proto";
/// How deep messages nest before the gateway refuses one: protobuf decoders' recursion limit
/// (prost's), which the node's own decode of the message has anyway.
const MAX_DEPTH: u32 = 100;

/// The served schemas in one pool, and which of their messages hold labelled fields.
pub(crate) struct Labels {
    pool: DescriptorPool,
    /// The messages that have a labelled field, or hold a message that has one (full names).
    labelled: HashSet<String>,
}

impl Labels {
    /// The pool of `files` (each an encoded `FileDescriptorProto`, with its extension options).
    /// A file that does not fit (an import no service serves) is left out, with a debug line:
    /// its messages are passed through as they are.
    pub(crate) fn new<'a>(files: impl IntoIterator<Item = &'a [u8]>) -> Labels {
        let mut pool = DescriptorPool::global();
        if pool.get_file_by_name(OPTIONS_FILE).is_none() {
            if let Err(e) = pool.add_file_descriptor_proto(options_file()) {
                tracing::debug!(error = %e, "runar/options.proto not added: no labels seen");
            }
        }
        for raw in files {
            let Ok(file) = <FileDescriptorProto as prost::Message>::decode(raw) else {
                continue;
            };
            if pool.get_file_by_name(file.name()).is_some() {
                continue;
            }
            if let Err(e) = pool.decode_file_descriptor_proto(raw) {
                tracing::debug!(file = file.name(), error = %e, "schema not read for labels");
            }
        }
        // Messages with a labelled field, then those holding one of them, until none is added
        // (recursive types included).
        let messages: Vec<MessageDescriptor> = pool.all_messages().collect();
        let mut labelled: HashSet<String> = messages
            .iter()
            .filter(|m| m.fields().any(|f| label_of(&f).is_some()))
            .map(|m| m.full_name().to_owned())
            .collect();
        loop {
            let more: Vec<String> = messages
                .iter()
                .filter(|m| !labelled.contains(m.full_name()))
                .filter(|m| {
                    m.fields().any(|f| match f.kind() {
                        Kind::Message(inner) => labelled.contains(inner.full_name()),
                        _ => false,
                    })
                })
                .map(|m| m.full_name().to_owned())
                .collect();
            if more.is_empty() {
                break;
            }
            labelled.extend(more);
        }
        Labels { pool, labelled }
    }

    /// The input and output of method `method` of service `service` (full name), each when it
    /// holds labelled fields.
    pub(crate) fn method(
        &self,
        service: &str,
        method: &str,
    ) -> (Option<MessageDescriptor>, Option<MessageDescriptor>) {
        let Some(method) = self
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
        else {
            return (None, None);
        };
        let keep = |m: MessageDescriptor| self.has_labels(&m).then_some(m);
        (keep(method.input()), keep(method.output()))
    }

    fn has_labels(&self, message: &MessageDescriptor) -> bool {
        self.labelled.contains(message.full_name())
    }

    /// The labelled fields of `file`'s messages (nested ones too): message full name → the
    /// field numbers.
    pub(crate) fn labelled_fields(&self, file: &str) -> HashMap<String, Vec<i32>> {
        let mut out = HashMap::new();
        let Some(file) = self.pool.get_file_by_name(file) else {
            return out;
        };
        let mut stack: Vec<MessageDescriptor> = file.messages().collect();
        while let Some(message) = stack.pop() {
            stack.extend(message.child_messages());
            let numbers: Vec<i32> = message
                .fields()
                .filter(|f| label_of(f).is_some())
                .filter_map(|f| i32::try_from(f.number()).ok())
                .collect();
            if !numbers.is_empty() {
                out.insert(message.full_name().to_owned(), numbers);
            }
        }
        out
    }
}

/// The label of `field` (`[(runar.label) = "user"]`), when its schema gives it one.
fn label_of(field: &FieldDescriptor) -> Option<String> {
    let ext = field.parent_pool().get_extension_by_name(LABEL_OPTION)?;
    let options = field.options();
    if !options.has_extension(&ext) {
        return None;
    }
    options
        .get_extension(&ext)
        .as_str()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

/// `runar/options.proto`'s `label` extension, which served schemas import without carrying.
fn options_file() -> FileDescriptorProto {
    use prost_types::FieldDescriptorProto;
    use prost_types::field_descriptor_proto::{Label, Type};
    FileDescriptorProto {
        name: Some(OPTIONS_FILE.into()),
        package: Some("runar".into()),
        dependency: vec!["google/protobuf/descriptor.proto".into()],
        extension: vec![FieldDescriptorProto {
            name: Some("label".into()),
            number: Some(51702),
            label: Some(Label::Optional.into()),
            r#type: Some(Type::String.into()),
            extendee: Some(".google.protobuf.FieldOptions".into()),
            json_name: Some("label".into()),
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// Which way a message's labelled fields go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A reply for the client: envelopes opened.
    Open,
    /// A request from the client: plain fields sealed.
    Seal,
}

/// `bytes` (a `message` a peer sent, or this node encoded for one) with its labelled fields
/// opened; a field the gateway node cannot open fails with `PERMISSION_DENIED` naming it.
pub(crate) fn open(
    node: &Node,
    labels: &Labels,
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<Vec<u8>, Status> {
    node.with_sealed_fields(|fields| rewrite(labels, message, bytes, 0, fields, Way::Open))
}

/// `bytes` (a `message` from the client) with its labelled fields sealed; a label the
/// gateway node cannot seal to fails with `FAILED_PRECONDITION` naming the field.
pub(crate) fn seal(
    node: &Node,
    labels: &Labels,
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<Vec<u8>, Status> {
    node.with_sealed_fields(|fields| rewrite(labels, message, bytes, 0, fields, Way::Seal))
}

fn malformed(message: &MessageDescriptor, way: Way) -> Status {
    let what = format!("a `{}` that is not valid protobuf", message.full_name());
    match way {
        Way::Open => Status::internal(format!("the reply is {what}")),
        Way::Seal => Status::invalid_argument(format!("the request is {what}")),
    }
}

/// Appends field `number` as a length-delimited `value`.
fn put_len(number: u32, value: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// One pass over `bytes`: labelled fields opened or sealed, messages that hold some rewritten
/// the same way, everything else copied as it is.
fn rewrite(
    labels: &Labels,
    message: &MessageDescriptor,
    bytes: &[u8],
    depth: u32,
    fields: &mut SealFields<'_>,
    way: Way,
) -> Result<Vec<u8>, Status> {
    if depth >= MAX_DEPTH {
        return Err(Status::resource_exhausted(format!(
            "a `{}` nests messages deeper than {MAX_DEPTH}",
            message.full_name()
        )));
    }
    let bad = || malformed(message, way);
    let mut out = Vec::with_capacity(bytes.len());
    let mut buf = bytes;
    while !buf.is_empty() {
        let start = buf;
        let (number, wire_type) = decode_key(&mut buf).map_err(|_| bad())?;
        let field = message.get_field(number);
        let label = field.as_ref().and_then(label_of);
        // A message field worth looking into: labelled itself, or holding labelled fields.
        let inner = field.as_ref().and_then(|f| match f.kind() {
            Kind::Message(m) if label.is_some() || labels.has_labels(&m) => Some(m),
            _ => None,
        });
        if wire_type != WireType::LengthDelimited || (label.is_none() && inner.is_none()) {
            if let (Some(field), Some(_), Way::Seal) = (&field, &label, way) {
                // A labelled scalar in clear: its plaintext is this whole field.
                prost::encoding::skip_field(wire_type, number, &mut buf, DecodeContext::default())
                    .map_err(|_| bad())?;
                let taken = start.len().checked_sub(buf.len()).ok_or_else(bad)?;
                let plaintext = start.get(..taken).ok_or_else(bad)?;
                let envelope = seal_one(fields, message, field, label.as_deref(), plaintext)?;
                put_len(number, &envelope, &mut out);
                continue;
            }
            if label.is_some() && way == Way::Open {
                return Err(Status::internal(format!(
                    "field `{}` of the reply is labelled but not an envelope",
                    field
                        .as_ref()
                        .map(|f| f.full_name().to_owned())
                        .unwrap_or_default()
                )));
            }
            prost::encoding::skip_field(wire_type, number, &mut buf, DecodeContext::default())
                .map_err(|_| bad())?;
            let taken = start.len().checked_sub(buf.len()).ok_or_else(bad)?;
            out.extend_from_slice(start.get(..taken).ok_or_else(bad)?);
            continue;
        }
        let len =
            usize::try_from(decode_varint(&mut buf).map_err(|_| bad())?).map_err(|_| bad())?;
        let value = buf.get(..len).ok_or_else(bad)?;
        buf = buf.get(len..).ok_or_else(bad)?;
        let Some(field) = field else {
            // Not reached: `inner` and `label` are only set with a field.
            put_len(number, value, &mut out);
            continue;
        };
        let depth = depth.saturating_add(1);
        match (way, label.as_deref()) {
            (Way::Open, Some(label)) => {
                let plaintext = open_one(fields, message, &field, label, value)?;
                match &inner {
                    // A labelled message field: its own labelled fields were sealed inside.
                    Some(inner) => {
                        let mut pt = plaintext.as_slice();
                        decode_key(&mut pt).map_err(|_| bad())?;
                        let len = usize::try_from(decode_varint(&mut pt).map_err(|_| bad())?)
                            .map_err(|_| bad())?;
                        let body = pt.get(..len).ok_or_else(bad)?;
                        let body = rewrite(labels, inner, body, depth, fields, way)?;
                        put_len(number, &body, &mut out);
                    }
                    None => out.extend_from_slice(&plaintext),
                }
            }
            (Way::Seal, Some(label)) => {
                let mut plaintext = Vec::with_capacity(value.len().saturating_add(8));
                match &inner {
                    Some(inner) => {
                        let body = rewrite(labels, inner, value, depth, fields, way)?;
                        put_len(number, &body, &mut plaintext);
                    }
                    None => put_len(number, value, &mut plaintext),
                }
                let envelope = seal_one(fields, message, &field, Some(label), &plaintext)?;
                put_len(number, &envelope, &mut out);
            }
            (_, None) => match inner {
                Some(inner) => {
                    let body = rewrite(labels, &inner, value, depth, fields, way)?;
                    put_len(number, &body, &mut out);
                }
                None => put_len(number, value, &mut out),
            },
        }
    }
    Ok(out)
}

/// Field `field`'s name for an error: `vault.Record.name`.
fn named(field: &FieldDescriptor) -> String {
    field.full_name().to_owned()
}

fn open_one(
    fields: &mut SealFields<'_>,
    message: &MessageDescriptor,
    field: &FieldDescriptor,
    label: &str,
    envelope: &[u8],
) -> Result<Vec<u8>, Status> {
    match fields.open(message.full_name(), field.number(), label, envelope) {
        Ok(FieldOpened::Open(plaintext)) => {
            // The plaintext is the field itself: it must name this field.
            let named_here = decode_key(&mut plaintext.as_slice())
                .is_ok_and(|(number, _)| number == field.number());
            if named_here {
                Ok(plaintext)
            } else {
                Err(Status::internal(format!(
                    "sealed field `{}` opened to another field",
                    named(field)
                )))
            }
        }
        Ok(FieldOpened::Redacted) => Err(Status::permission_denied(format!(
            "field `{}` (label `{label}`) was redacted: the node that sent it held no key for \
             its label",
            named(field)
        ))),
        Ok(_) => Err(Status::permission_denied(format!(
            "field `{}` is sealed (label `{label}`) and this gateway holds no key to open it",
            named(field)
        ))),
        Err(e) => Err(Status::internal(format!(
            "sealed field `{}`: {}",
            named(field),
            e.message()
        ))),
    }
}

fn seal_one(
    fields: &mut SealFields<'_>,
    message: &MessageDescriptor,
    field: &FieldDescriptor,
    label: Option<&str>,
    plaintext: &[u8],
) -> Result<Vec<u8>, Status> {
    let label = label.unwrap_or_default();
    fields
        .seal(message.full_name(), field.number(), label, plaintext)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "field `{}` is labelled `{label}` and this gateway has no key to seal it to",
                named(field)
            ))
        })
}

/// The files as the gateway's reflection serves them: the import of `runar/options.proto`
/// dropped (prost-types drops the options it declares, and the gateway does not serve it), and
/// with `as_bytes`, each labelled field's type `bytes`: the envelope the client gets in
/// pass-through mode.
pub(crate) fn served_files(
    files: Vec<FileDescriptorProto>,
    labels: &Labels,
    as_bytes: bool,
) -> Vec<FileDescriptorProto> {
    use prost_types::field_descriptor_proto::Type;
    files
        .into_iter()
        .map(|mut file| {
            if let Some(at) = file.dependency.iter().position(|d| d == OPTIONS_FILE) {
                file.dependency.remove(at);
                let at = i32::try_from(at).unwrap_or(i32::MAX);
                file.public_dependency.retain(|d| *d != at);
                file.weak_dependency.retain(|d| *d != at);
                for d in file
                    .public_dependency
                    .iter_mut()
                    .chain(&mut file.weak_dependency)
                {
                    if *d > at {
                        *d = d.saturating_sub(1);
                    }
                }
            }
            if as_bytes {
                let labelled = labels.labelled_fields(file.name());
                let package = file.package().to_owned();
                let mut stack: Vec<(String, &mut prost_types::DescriptorProto)> = file
                    .message_type
                    .iter_mut()
                    .map(|m| (qualify(&package, m.name()), m))
                    .collect();
                while let Some((name, message)) = stack.pop() {
                    if let Some(numbers) = labelled.get(&name) {
                        for field in &mut message.field {
                            if numbers.contains(&field.number()) {
                                field.set_type(Type::Bytes);
                                field.type_name = None;
                            }
                        }
                    }
                    stack.extend(
                        message
                            .nested_type
                            .iter_mut()
                            .map(|m| (format!("{name}.{}", m.name()), m)),
                    );
                }
            }
            file
        })
        .collect()
}

fn qualify(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_owned()
    } else {
        format!("{package}.{name}")
    }
}
