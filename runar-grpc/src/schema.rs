//! Runtime schemas (prost-reflect descriptors) as the runtime's
//! [`FieldSeal`](runar_runtime::seal::FieldSeal) reads them: the label of a field
//! (`[(runar.label) = "user"]`, from `runar/options.proto`) and the message types to search for
//! labelled fields. One copy for the gateway and the `runar` CLI.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use prost_types::FileDescriptorProto;
use runar_runtime::seal::{FieldSchema, MessageSchema};

/// The full name of the field option that labels (seals) a field (`runar/options.proto`).
pub const LABEL_OPTION: &str = "runar.label";

/// The name of Runar's options file (`proto/runar/options.proto`).
pub const OPTIONS_FILE: &str = "runar/options.proto";

/// The label of `field` (`[(runar.label) = "user"]`), when its schema gives it one (its pool
/// must hold [`options_file`] for the option to be read).
pub fn label_of(field: &FieldDescriptor) -> Option<String> {
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

/// `runar/options.proto`'s descriptor (its three extensions: `service_path`, `event`,
/// `label`), which served schemas import without carrying: add it to a pool before them so
/// their options are read. Its numbers must match `proto/runar/options.proto`.
pub fn options_file() -> FileDescriptorProto {
    use prost_types::FieldDescriptorProto;
    use prost_types::field_descriptor_proto::{Label, Type};
    let extension = |name: &str, number: i32, ty: Type, extendee: &str| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional.into()),
        r#type: Some(ty.into()),
        extendee: Some(extendee.into()),
        json_name: Some(name.into()),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some(OPTIONS_FILE.into()),
        package: Some("runar".into()),
        dependency: vec!["google/protobuf/descriptor.proto".into()],
        extension: vec![
            extension(
                "service_path",
                51700,
                Type::String,
                ".google.protobuf.ServiceOptions",
            ),
            extension("event", 51701, Type::Bool, ".google.protobuf.MethodOptions"),
            extension(
                "label",
                51702,
                Type::String,
                ".google.protobuf.FieldOptions",
            ),
        ],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// A message's descriptor as [`FieldSeal`](runar_runtime::seal::FieldSeal) asks about it:
/// each field's label, and the message type of each message field (singular, repeated, map
/// entries), searched for labelled fields in turn.
#[derive(Clone, Debug)]
pub struct Described(pub MessageDescriptor);

impl MessageSchema for Described {
    fn full_name(&self) -> &str {
        self.0.full_name()
    }

    fn field(&self, number: u32) -> Option<FieldSchema<Self>> {
        let field = self.0.get_field(number)?;
        let message = match field.kind() {
            Kind::Message(inner) => Some(Described(inner)),
            _ => None,
        };
        Some(FieldSchema::new(label_of(&field), message))
    }
}

/// The name of the field at `path` (field numbers from `message` down, as
/// [`KeptSealed::path`](runar_runtime::seal::KeptSealed) gives them): `vault.Record.name`; the
/// numbers themselves where the schema has no such field.
pub fn field_name(message: &MessageDescriptor, path: &[u32]) -> String {
    let mut at = Some(message.clone());
    let mut name = None;
    for number in path {
        let field = at.as_ref().and_then(|m| m.get_field(*number));
        name = Some(match &field {
            Some(field) => field.full_name().to_owned(),
            None => format!(
                "{}.{number}",
                name.as_deref().unwrap_or(message.full_name())
            ),
        });
        at = field.and_then(|f| match f.kind() {
            Kind::Message(inner) => Some(inner),
            _ => None,
        });
    }
    name.unwrap_or_else(|| message.full_name().to_owned())
}
