//! Sealed (labelled) fields through the gateway: which messages of the served schemas carry
//! `(runar.label)` fields, and the rewrite of a message's bytes that opens them (replies) or
//! seals them (requests), as [`SealedFields`](crate::SealedFields) says.
//!
//! A labelled field from another node is an envelope, a length-delimited value in the field's
//! place whatever its declared type. The walk over the bytes is the runtime's
//! [`FieldSeal`](runar_runtime::seal::FieldSeal) (the one the CLI uses, with the same
//! [`Described`] schema); this module only says which messages to give it and turns its
//! answers into gRPC statuses. In `Open` mode the gateway node opens each envelope with its key
//! resolver; fields it cannot open (or that were redacted) fail the call with
//! `PERMISSION_DENIED` naming them. A request's labelled fields, in clear from the client, are
//! sealed the same way a generated message's are when it crosses to another node; a label the
//! node has no key for fails with `FAILED_PRECONDITION` naming the field.

use std::collections::{HashMap, HashSet};

use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use runar_runtime::Node;
use runar_runtime::seal::{FieldSealError, KeptSealed};
use tonic::Status;

use crate::schema::{Described, OPTIONS_FILE, field_name, label_of, options_file};

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
        // Messages with a labelled field, then those holding one of them, and so on (recursive
        // types included): walked back from each labelled message through the messages that
        // hold it, each message once, so a deep chain (schemas come from peers) costs its
        // length, not its length times the number of messages.
        let mut holders: HashMap<String, Vec<String>> = HashMap::new();
        let mut work: Vec<String> = Vec::new();
        for message in pool.all_messages() {
            let mut has_label = false;
            for field in message.fields() {
                has_label |= label_of(&field).is_some();
                if let Kind::Message(inner) = field.kind() {
                    holders
                        .entry(inner.full_name().to_owned())
                        .or_default()
                        .push(message.full_name().to_owned());
                }
            }
            if has_label {
                work.push(message.full_name().to_owned());
            }
        }
        let mut labelled: HashSet<String> = HashSet::new();
        while let Some(name) = work.pop() {
            if !labelled.insert(name.clone()) {
                continue;
            }
            if let Some(held_by) = holders.remove(&name) {
                work.extend(held_by.into_iter().filter(|h| !labelled.contains(h)));
            }
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

/// `bytes` (a `message` a peer sent, or this node encoded for one) with its labelled fields
/// opened by the node's [`FieldSeal`](runar_runtime::seal::FieldSeal); fields the gateway node
/// cannot open fail the call with `PERMISSION_DENIED` naming them.
pub(crate) fn open(
    node: &Node,
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<Vec<u8>, Status> {
    let opened = node
        .field_seal()
        .open(&Described(message.clone()), bytes)
        .map_err(|e| status(message, e, Way::Open))?;
    if opened.sealed.is_empty() {
        return Ok(opened.bytes);
    }
    let fields: Vec<String> = opened
        .sealed
        .iter()
        .map(|kept| kept_sealed(message, kept))
        .collect();
    Err(Status::permission_denied(fields.join("; ")))
}

/// `bytes` (a `message` from the client) with its labelled fields sealed by the node's
/// [`FieldSeal`](runar_runtime::seal::FieldSeal); a label the gateway node cannot seal to fails
/// with `FAILED_PRECONDITION` naming the field.
pub(crate) fn seal(
    node: &Node,
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<Vec<u8>, Status> {
    node.field_seal()
        .seal(&Described(message.clone()), bytes)
        .map_err(|e| status(message, e, Way::Seal))
}

/// Which way a message's labelled fields went.
#[derive(Clone, Copy)]
enum Way {
    /// A reply for the client: envelopes opened.
    Open,
    /// A request from the client: plain fields sealed.
    Seal,
}

/// Why a labelled field stayed closed, naming it.
fn kept_sealed(message: &MessageDescriptor, kept: &KeptSealed) -> String {
    let name = field_name(message, &kept.path);
    let label = &kept.label;
    if kept.redacted {
        format!(
            "field `{name}` (label `{label}`) was redacted: the node that sent it held no key \
             for its label"
        )
    } else {
        format!(
            "field `{name}` is sealed (label `{label}`) and this gateway holds no key to open it"
        )
    }
}

/// The gRPC status of a [`FieldSealError`] for `message`, going `way`.
fn status(message: &MessageDescriptor, error: FieldSealError, way: Way) -> Status {
    // Field `field` of the message named `name`, by its full name when the pool has it.
    let named = |name: &str, field: u32| {
        message
            .parent_pool()
            .get_message_by_name(name)
            .and_then(|m| m.get_field(field))
            .map(|f| f.full_name().to_owned())
            .unwrap_or_else(|| format!("{name}.{field}"))
    };
    match error {
        FieldSealError::Malformed { .. } => {
            let what = format!("a `{}` that is not valid protobuf", message.full_name());
            match way {
                Way::Open => Status::internal(format!("the reply is {what}: {error}")),
                Way::Seal => Status::invalid_argument(format!("the request is {what}: {error}")),
            }
        }
        FieldSealError::TooDeep { .. } => Status::resource_exhausted(error.to_string()),
        FieldSealError::NoKey {
            message: name,
            field,
            label,
        } => Status::failed_precondition(format!(
            "field `{}` is labelled `{label}` and this gateway has no key to seal it to",
            named(&name, field)
        )),
        FieldSealError::Refused {
            message: name,
            field,
            reason,
            ..
        } => Status::internal(format!("sealed field `{}`: {reason}", named(&name, field))),
        _ => Status::internal(error.to_string()),
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A message nested deep holds a labelled field: every message on the way is found
    /// labelled, in one walk back along the chain (a peer chooses the schema; the walk took
    /// the chain's length times the number of messages).
    #[test]
    fn a_label_deep_in_a_long_chain_marks_every_holder() {
        const DEPTH: usize = 20_000;
        let mut source =
            String::from("syntax = \"proto3\";\npackage deep;\nimport \"runar/options.proto\";\n");
        for i in 0..DEPTH {
            source.push_str(&format!("message M{i} {{ M{} next = 1; }}\n", i + 1));
        }
        source.push_str(&format!(
            "message M{DEPTH} {{ string secret = 1 [(runar.label) = \"user\"]; }}\n"
        ));
        source.push_str("message Plain { string text = 1; }\n");
        let dir = std::env::temp_dir().join(format!("runar-deep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("deep.proto"), source).unwrap();
        let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
        let mut compiler =
            protox::Compiler::new([dir.as_path(), std::path::Path::new(protos)]).unwrap();
        compiler.open_file("deep.proto").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        // Encoded as a node announces it: with its options (prost-types would drop them).
        let raw = compiler
            .descriptor_pool()
            .get_file_by_name("deep.proto")
            .unwrap()
            .encode_to_vec();
        let labels = Labels::new([raw.as_slice()]);
        assert_eq!(labels.labelled.len(), DEPTH + 1);
        assert!(labels.labelled.contains("deep.M0"));
        assert!(!labels.labelled.contains("deep.Plain"));
    }
}
