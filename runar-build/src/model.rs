//! What the generator needs to know about each service beyond what prost-build hands it: the
//! service path, which rpcs are events (custom options, which prost-types drops, so they are read
//! here with prost-reflect), the schema bytes, and whether everything is supported.
//!
//! All checks run here, before prost-build generates anything, because a
//! [`ServiceGenerator`](prost_build::ServiceGenerator) cannot return an error.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, FileDescriptor, MethodDescriptor,
    ReflectMessage, ServiceDescriptor,
};

use runar_codegen::{CallKind, naming};

use crate::Error;

/// The full name of the service option extension in `runar/options.proto`.
const SERVICE_PATH_OPTION: &str = "runar.service_path";
/// The full name of the method option extension in `runar/options.proto`.
const EVENT_OPTION: &str = "runar.event";

/// Everything known about the services of one compilation, by full name (`shop.Inventory`).
#[derive(Debug, Default)]
pub(crate) struct Model {
    services: HashMap<String, ServiceModel>,
}

impl Model {
    pub(crate) fn service(&self, full_name: &str) -> Option<&ServiceModel> {
        self.services.get(full_name)
    }
}

/// One service.
#[derive(Debug)]
pub(crate) struct ServiceModel {
    /// The path its actions and events live under (`inventory`).
    pub(crate) path: String,
    /// Names (as written in the .proto) of the rpcs marked `(runar.event) = true`.
    pub(crate) events: HashSet<String>,
    /// Action or event name per rpc name as written in the .proto (`GetItem` → `get_item`).
    pub(crate) endpoints: HashMap<String, String>,
    /// The encoded `FileDescriptorProto` of the service's file, without source info, with
    /// extension options.
    pub(crate) schema: std::sync::Arc<[u8]>,
}

/// Reads and checks every service of `pool`. `overrides` maps service full names to paths set
/// in build.rs; they win over `(runar.service_path)`.
pub(crate) fn analyze(
    pool: &DescriptorPool,
    overrides: &BTreeMap<String, String>,
) -> Result<Model, Error> {
    check_overrides(pool, overrides)?;

    let path_option = pool.get_extension_by_name(SERVICE_PATH_OPTION);
    let event_option = pool.get_extension_by_name(EVENT_OPTION);
    let mut schemas: HashMap<String, std::sync::Arc<[u8]>> = HashMap::new();
    let mut model = Model::default();
    // Module names (`inventory_server`, `inventory_client`) per package, to catch collisions.
    let mut modules: HashMap<(String, String), String> = HashMap::new();

    for service in pool.services() {
        let file = service.parent_file();
        let construct = format!("service {}", service.full_name());
        let path = service_path(&service, overrides, path_option.as_ref(), &construct)?;
        let (events, endpoints) = read_methods(&service, event_option.as_ref(), &construct)?;
        check_modules(pool, &service, &mut modules, &construct)?;
        let schema = schemas
            .entry(file.name().to_owned())
            .or_insert_with(|| schema_of(&file))
            .clone();
        model.services.insert(
            service.full_name().to_owned(),
            ServiceModel {
                path,
                events,
                endpoints,
                schema,
            },
        );
    }
    Ok(model)
}

/// Fails when build.rs sets the path of a service that no file defines.
fn check_overrides(
    pool: &DescriptorPool,
    overrides: &BTreeMap<String, String>,
) -> Result<(), Error> {
    for name in overrides.keys() {
        if pool.get_service_by_name(name).is_none() {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
            return Err(Error::UnknownService {
                service: name.clone(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// The service's path: set in build.rs, else by `(runar.service_path)`, else the snake_case
/// of its name. A path that is set is checked.
fn service_path(
    service: &ServiceDescriptor,
    overrides: &BTreeMap<String, String>,
    path_option: Option<&ExtensionDescriptor>,
    construct: &str,
) -> Result<String, Error> {
    let file = service.parent_file();
    if let Some(path) = overrides.get(service.full_name()) {
        check_path(path, "set in build.rs", &file, service, construct)?;
        return Ok(path.clone());
    }
    match string_option(&service.options(), path_option) {
        Some(path) => {
            check_path(
                &path,
                "set by (runar.service_path)",
                &file,
                service,
                construct,
            )?;
            Ok(path)
        }
        None => Ok(naming::snake_case(service.name())),
    }
}

/// Reads the service's rpcs: the names of those that are events, and the action or event name
/// of each. Fails on a streaming event and on a generated name that two rpcs, or an rpc and the
/// client itself, would share.
fn read_methods(
    service: &ServiceDescriptor,
    event_option: Option<&ExtensionDescriptor>,
    construct: &str,
) -> Result<(HashSet<String>, HashMap<String, String>), Error> {
    let file = service.parent_file();
    let file_name = file.name();
    let mut events = HashSet::new();
    let mut endpoints = HashMap::new();
    // Rust names the client takes, with the rpc that took each.
    let mut client_names: HashMap<String, String> = naming::CLIENT_RESERVED
        .iter()
        .map(|n| ((*n).to_owned(), String::new()))
        .collect();
    // Action and event names, with the rpc that took each.
    let mut endpoint_names: HashMap<String, String> = HashMap::new();

    for method in service.methods() {
        let line = line_of(&file, method.path());
        let method_construct = format!("{construct}, method {}", method.name());
        let is_event = bool_option(&method.options(), event_option);
        if is_event {
            check_event_does_not_stream(file_name, line, &method, &method_construct)?;
        }
        let endpoint = naming::snake_case(method.name());

        if let Some(other) = endpoint_names.insert(endpoint.clone(), method.name().to_owned()) {
            return Err(Error::Unsupported {
                file: file_name.to_owned(),
                line,
                construct: method_construct,
                reason: format!(
                    "its snake_case name `{endpoint}` is also the name of rpc {other}; \
                     rename one of them"
                ),
            });
        }
        let taken: Vec<String> = if is_event {
            vec![
                naming::publish_method(&endpoint),
                naming::subscribe_method(&endpoint),
            ]
        } else {
            vec![endpoint.clone()]
        };
        for name in taken {
            if let Some(reason) = claim_client_name(&mut client_names, name, method.name()) {
                return Err(Error::Unsupported {
                    file: file_name.to_owned(),
                    line,
                    construct: method_construct,
                    reason,
                });
            }
        }
        if is_event {
            events.insert(method.name().to_owned());
        }
        endpoints.insert(method.name().to_owned(), endpoint);
    }
    Ok((events, endpoints))
}

/// Claims the client method `name` for `rpc`; on a collision, says with what.
fn claim_client_name(
    client_names: &mut HashMap<String, String>,
    name: String,
    rpc: &str,
) -> Option<String> {
    let other = client_names.insert(name.clone(), rpc.to_owned())?;
    Some(if other.is_empty() {
        format!(
            "the generated client method `{name}` would collide with the client's own `{name}`; rename the rpc"
        )
    } else {
        format!(
            "the generated client method `{name}` would collide with the one generated for rpc {other}; rename one of them"
        )
    })
}

/// Fails when the service's generated modules (`<name>_server`, `<name>_client`) are also
/// generated for another service of its package, or for a message's nested types. `modules`
/// holds the modules taken so far, by package.
fn check_modules(
    pool: &DescriptorPool,
    service: &ServiceDescriptor,
    modules: &mut HashMap<(String, String), String>,
    construct: &str,
) -> Result<(), Error> {
    let file = service.parent_file();
    for module in [
        naming::server_module(service.name()),
        naming::client_module(service.name()),
    ] {
        let key = (service.package_name().to_owned(), module.clone());
        if let Some(other) = modules.insert(key, service.full_name().to_owned()) {
            return Err(Error::Unsupported {
                file: file.name().to_owned(),
                line: line_of(&file, service.path()),
                construct: construct.to_owned(),
                reason: format!(
                    "its generated module `{module}` is also generated for service {other}; rename one of them"
                ),
            });
        }
        if let Some(message) = colliding_message_module(pool, service.package_name(), &module) {
            return Err(Error::Unsupported {
                file: file.name().to_owned(),
                line: line_of(&file, service.path()),
                construct: construct.to_owned(),
                reason: format!(
                    "its generated module `{module}` collides with the module prost generates for the nested types of message {message}; rename one of them"
                ),
            });
        }
    }
    Ok(())
}

/// Fails on an event rpc that streams: an event is one message per publish.
fn check_event_does_not_stream(
    file: &str,
    line: Option<u32>,
    method: &MethodDescriptor,
    construct: &str,
) -> Result<(), Error> {
    let kind = CallKind::from_streaming(method.is_client_streaming(), method.is_server_streaming());
    if !kind.is_streaming() {
        return Ok(());
    }
    Err(Error::Unsupported {
        file: file.to_owned(),
        line,
        construct: construct.to_owned(),
        reason: format!(
            "streaming ({} streaming) is not allowed on an event: an event is one message per \
             publish; remove `stream`, or remove `(runar.event)` to make it a streaming rpc",
            kind.describe()
        ),
    })
}

/// A service path must be a concrete Runar path: `/`-separated non-empty segments of letters,
/// digits, `_`, `-` and `.`.
fn check_path(
    path: &str,
    origin: &str,
    file: &FileDescriptor,
    service: &ServiceDescriptor,
    construct: &str,
) -> Result<(), Error> {
    let valid = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if valid {
        return Ok(());
    }
    Err(Error::Unsupported {
        file: file.name().to_owned(),
        line: line_of(file, service.path()),
        construct: construct.to_owned(),
        reason: format!(
            "the service path `{path}` ({origin}) is not a valid Runar path: use `/`-separated, \
             non-empty segments of letters, digits, `_`, `-` and `.` (no `network:`, `*`, `>` or `{{…}}`)"
        ),
    })
}

/// The message of `package` whose nested-types module prost would name `module`, if any.
fn colliding_message_module(pool: &DescriptorPool, package: &str, module: &str) -> Option<String> {
    pool.all_messages()
        .filter(|m| m.package_name() == package && m.parent_message().is_none())
        .filter(|m| {
            // prost writes a module for nested messages (not map entries), enums and real
            // (not proto3 `optional`) oneofs.
            let raw = m.descriptor_proto();
            raw.nested_type
                .iter()
                .any(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()))
                || !raw.enum_type.is_empty()
                || raw
                    .field
                    .iter()
                    .any(|f| f.oneof_index.is_some() && !f.proto3_optional())
        })
        .find(|m| naming::snake_case(m.name()) == module)
        .map(|m| m.full_name().to_owned())
}

fn string_option(options: &DynamicMessage, ext: Option<&ExtensionDescriptor>) -> Option<String> {
    let ext = ext?;
    if !options.has_extension(ext) {
        return None;
    }
    options.get_extension(ext).as_str().map(str::to_owned)
}

fn bool_option(options: &DynamicMessage, ext: Option<&ExtensionDescriptor>) -> bool {
    ext.is_some_and(|ext| options.get_extension(ext).as_bool() == Some(true))
}

/// The 1-based line where the element at `path` (a `SourceCodeInfo` path) starts.
pub(crate) fn line_of(file: &FileDescriptor, path: &[i32]) -> Option<u32> {
    file.file_descriptor_proto()
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)
        .and_then(|l| l.span.first())
        .and_then(|line| u32::try_from(*line).ok())
        .map(|line| line + 1)
}

/// The encoded `FileDescriptorProto` of `file`, keeping extension options (which
/// prost-types would drop) and removing source info (comments and spans) to keep it small.
fn schema_of(file: &FileDescriptor) -> std::sync::Arc<[u8]> {
    let raw = file.encode_to_vec();
    let descriptor = prost_types::FileDescriptorProto::default().descriptor();
    match DynamicMessage::decode(descriptor, raw.as_slice()) {
        Ok(mut message) => {
            message.clear_field_by_name("source_code_info");
            message.encode_to_vec().into()
        }
        Err(_) => raw.into(),
    }
}
