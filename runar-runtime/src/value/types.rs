//! Message type names, so that a dynamic call with the wrong message type fails with
//! `InvalidArgument` instead of decoding bytes that happen to fit.
//!
//! What is known:
//! - an action's request and response type names, from its service's schema (an encoded
//!   `FileDescriptorProto`, which both code generators embed), for local and remote actions;
//! - the Rust type a local handler takes;
//! - the protobuf name of the types prost names itself ([`prost::Name`]): the scalars, `String`,
//!   bytes and `()`, which encode like the `google.protobuf` wrappers and `Empty`.
//!
//! A call is refused when the caller's type has a known name that is not the action's. A call
//! with the handler's own Rust type is never looked at (the value's downcast already succeeds),
//! so generated clients pay nothing; nor is one whose type has no known name (another crate's
//! types generated from the same `.proto`, which is how they are meant to meet).

use std::any::TypeId;

use crate::error::Error;

/// The protobuf full name of `T` when prost names it (the wrapper types and `()`), without a
/// lookup: for a given `T` this folds to a constant.
pub(crate) fn known_name<T: 'static>() -> Option<&'static str> {
    let id = TypeId::of::<T>();
    let names: [(TypeId, &'static str); 11] = [
        (TypeId::of::<f64>(), "google.protobuf.DoubleValue"),
        (TypeId::of::<f32>(), "google.protobuf.FloatValue"),
        (TypeId::of::<i64>(), "google.protobuf.Int64Value"),
        (TypeId::of::<u64>(), "google.protobuf.UInt64Value"),
        (TypeId::of::<i32>(), "google.protobuf.Int32Value"),
        (TypeId::of::<u32>(), "google.protobuf.UInt32Value"),
        (TypeId::of::<bool>(), "google.protobuf.BoolValue"),
        (TypeId::of::<String>(), "google.protobuf.StringValue"),
        (TypeId::of::<Vec<u8>>(), "google.protobuf.BytesValue"),
        (TypeId::of::<bytes::Bytes>(), "google.protobuf.BytesValue"),
        (TypeId::of::<()>(), "google.protobuf.Empty"),
    ];
    names.into_iter().find(|(t, _)| *t == id).map(|(_, n)| n)
}

/// True when two protobuf type names name the same message. A leading `.` is ignored, and an
/// unqualified name (the macro describes a Rust message type by its last path segment) matches
/// a qualified one with that last segment.
pub(crate) fn names_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('.'), b.trim_start_matches('.'));
    if a == b {
        return true;
    }
    match (a.rsplit_once('.'), b.rsplit_once('.')) {
        (Some(_), Some(_)) | (None, None) => false,
        (Some((_, a_last)), None) => a_last == b,
        (None, Some((_, b_last))) => a == b_last,
    }
}

/// What an action's messages are, when its service has a schema.
#[derive(Debug)]
pub(crate) struct MessageTypes {
    /// The request message's full name (from the schema).
    pub(crate) request: Box<str>,
    /// The response message's full name (from the schema).
    pub(crate) response: Box<str>,
    /// The Rust type a local handler takes (`None` for a remote instance).
    pub(crate) request_rust: Option<TypeId>,
    /// The name of that Rust type when prost names it: a handler that takes a `String` also
    /// takes a `google.protobuf.StringValue` (the macro sends a lone scalar parameter as itself,
    /// and describes it as a one-field message in the schema).
    pub(crate) request_alias: Option<&'static str>,
}

impl MessageTypes {
    /// Checks a request sent as a message named `sent` (when known).
    pub(crate) fn check_request(&self, path: &str, sent: Option<&str>) -> Result<(), Error> {
        let Some(sent) = sent else { return Ok(()) };
        if names_match(sent, &self.request) || self.request_alias.is_some_and(|a| a == sent) {
            return Ok(());
        }
        Err(mismatch(path, "takes", &self.request, sent))
    }

    /// Checks that a caller expecting a message named `wanted` (when known) can read the
    /// action's response.
    pub(crate) fn check_response(&self, path: &str, wanted: Option<&str>) -> Result<(), Error> {
        let Some(wanted) = wanted else { return Ok(()) };
        if names_match(wanted, &self.response) {
            return Ok(());
        }
        Err(mismatch(path, "returns", &self.response, wanted))
    }
}

fn mismatch(path: &str, verb: &str, expected: &str, got: &str) -> Error {
    let what = if verb == "takes" {
        "the request is"
    } else {
        "the caller expects"
    };
    Error::invalid_argument(format!(
        "message type mismatch: `{path}` {verb} a `{}`, but {what} a `{}`",
        expected.trim_start_matches('.'),
        got.trim_start_matches('.'),
    ))
}

/// The request and response type names of the action `action` (relative to its service's
/// path) of the service named `service` in a service's schema: the method whose name, without
/// case and underscores, is the action's (see [`method_in`]). `None` when the schema names no
/// such method exactly once (an action renamed from its rpc, say).
pub(crate) fn types_in(
    file: &prost_types::FileDescriptorProto,
    service: &str,
    action: &str,
) -> Option<(Box<str>, Box<str>)> {
    let method = method_in(file, service, action)?;
    let name = |n: &str| n.trim_start_matches('.').into();
    Some((name(method.input_type()), name(method.output_type())))
}

/// The one rpc of a decoded schema that the action `action` (a name under its service) of the
/// service named `service` serves: `add_todo` is the rpc `AddTodo`. A file of several services
/// (two with a `Get`, say) is searched in the one named `service` (`pkg.Name` or `Name`, as
/// generated services are named), when it has one, else in all of them. `None` when none or
/// several match.
pub(crate) fn method_in<'a>(
    file: &'a prost_types::FileDescriptorProto,
    service: &str,
    action: &str,
) -> Option<&'a prost_types::MethodDescriptorProto> {
    let wanted = normalize(action);
    let named = |s: &&prost_types::ServiceDescriptorProto| {
        s.name() == service
            || service
                .strip_prefix(file.package())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|name| name == s.name())
    };
    let own = file.service.iter().any(|s| named(&s));
    let mut found = file
        .service
        .iter()
        .filter(|s| !own || named(s))
        .flat_map(|s| s.method.iter())
        .filter(|m| normalize(m.name()) == wanted);
    let method = found.next()?;
    if found.next().is_some() {
        return None;
    }
    Some(method)
}

/// `AddTodo` and `add_todo` both become `addtodo`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name as _;

    #[test]
    fn known_names_are_prosts() {
        assert_eq!(
            known_name::<String>().map(str::to_owned),
            Some(String::full_name())
        );
        assert_eq!(
            known_name::<f64>().map(str::to_owned),
            Some(f64::full_name())
        );
        assert_eq!(
            known_name::<f32>().map(str::to_owned),
            Some(f32::full_name())
        );
        assert_eq!(
            known_name::<i64>().map(str::to_owned),
            Some(i64::full_name())
        );
        assert_eq!(
            known_name::<u64>().map(str::to_owned),
            Some(u64::full_name())
        );
        assert_eq!(
            known_name::<i32>().map(str::to_owned),
            Some(i32::full_name())
        );
        assert_eq!(
            known_name::<u32>().map(str::to_owned),
            Some(u32::full_name())
        );
        assert_eq!(
            known_name::<bool>().map(str::to_owned),
            Some(bool::full_name())
        );
        assert_eq!(
            known_name::<Vec<u8>>().map(str::to_owned),
            Some(Vec::<u8>::full_name())
        );
        assert_eq!(
            known_name::<()>().map(str::to_owned),
            Some(<()>::full_name())
        );
        assert_eq!(known_name::<prost_types::Timestamp>(), None);
    }

    #[test]
    fn names_match_qualified_and_last_segment() {
        assert!(names_match(".todo.Todo", "todo.Todo"));
        assert!(names_match("Todo", "todo.Todo"));
        assert!(!names_match("todo.Todo", "other.Todo"));
        assert!(!names_match(
            "google.protobuf.StringValue",
            "todo.AddTodoRequest"
        ));
    }

    #[test]
    fn an_rpc_is_looked_up_in_its_own_service_of_a_file_of_several() {
        use prost_types::{FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
        let service = |name: &str, output: &str| ServiceDescriptorProto {
            name: Some(name.into()),
            method: vec![MethodDescriptorProto {
                name: Some("Get".into()),
                input_type: Some(".vault.GetRequest".into()),
                output_type: Some(output.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            package: Some("vault".into()),
            service: vec![
                service("Vault", ".vault.Record"),
                service("Ledgers", ".vault.Ledger"),
            ],
            ..Default::default()
        };
        let output = |service: &str| types_in(&file, service, "get").map(|(_, out)| out);
        // Generated services are named `package.Service`; a plain `Service` also counts.
        assert_eq!(output("vault.Vault").as_deref(), Some("vault.Record"));
        assert_eq!(output("vault.Ledgers").as_deref(), Some("vault.Ledger"));
        assert_eq!(output("Ledgers").as_deref(), Some("vault.Ledger"));
        // A service the file does not name finds the rpc in all of them: two, so none.
        assert_eq!(output("Inbox"), None);
    }
}
