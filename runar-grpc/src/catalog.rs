//! What the gateway serves: a gRPC method name for every rpc of every service the node can
//! reach, mapped to its Runar action, and the reflection services built from the same
//! schemas. Rebuilt when the node's catalog changes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use prost_reflect::MessageDescriptor;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use runar_runtime::{CallKind, Node};
use tonic::body::Body;
use tower_service::Service;

use crate::sealed::{self, Labels};

/// A boxed future, as the HTTP service returns.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased HTTP service (the reflection servers, whose types cannot be named).
pub(crate) type HttpHandler =
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<http::Response<Body>> + Send + Sync>;

/// Where one gRPC method goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The Runar action path (in the node's default network).
    pub(crate) action: String,
    /// How many messages each side sends, as the schema says.
    pub(crate) kind: CallKind,
    /// The request's message, when it holds labelled (sealed) fields.
    pub(crate) input: Option<MessageDescriptor>,
    /// The reply's message, when it holds labelled (sealed) fields.
    pub(crate) output: Option<MessageDescriptor>,
}

/// One build of what the gateway serves.
pub(crate) struct Table {
    /// The node's catalog version this was built from.
    pub(crate) version: u64,
    /// `/{package}.{Service}/{Method}` → its action.
    pub(crate) routes: HashMap<String, Route>,
    /// gRPC server reflection, v1 and v1alpha, over the same files.
    pub(crate) reflection_v1: Option<HttpHandler>,
    pub(crate) reflection_v1alpha: Option<HttpHandler>,
}

impl Table {
    /// What `node` can reach now; with `sealed_as_bytes`, reflection gives labelled fields the
    /// type `bytes` (their envelopes).
    pub(crate) fn build(node: &Node, sealed_as_bytes: bool) -> Table {
        // Read first: a change while building makes the next call build again.
        let version = node.catalog_version();
        let network = node.network();
        let services: Vec<_> = node
            .reachable_services()
            .into_iter()
            .filter(|s| s.network == network && !s.schema.is_empty())
            .collect();
        let labels = Labels::new(services.iter().map(|s| s.schema.as_ref()));
        let mut routes = HashMap::new();
        let mut files: Vec<FileDescriptorProto> = Vec::new();
        for service in services {
            let Ok(file) = FileDescriptorProto::decode(service.schema.clone()) else {
                tracing::debug!(service = %service.path, "a schema that does not decode is skipped");
                continue;
            };
            add_routes(
                &mut routes,
                &file,
                &service.path,
                &service.name,
                &service.actions,
                Some(&labels),
            );
            if !files.iter().any(|f| f.name == file.name) {
                files.push(file);
            }
        }
        let files = sealed::served_files(files, &labels, sealed_as_bytes);
        let set = FileDescriptorSet { file: files };
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(set.clone())
            .build_v1()
            .map(boxed)
            .map_err(|e| tracing::warn!(error = %e, "gRPC reflection v1 not served"))
            .ok();
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(set)
            .build_v1alpha()
            .map(boxed)
            .map_err(|e| tracing::warn!(error = %e, "gRPC reflection v1alpha not served"))
            .ok();
        Table {
            version,
            routes,
            reflection_v1,
            reflection_v1alpha,
        }
    }
}

/// Adds a route for each rpc of `file` that is an action of the Runar service at `path`: the
/// action whose last segment is the rpc's name without case and underscores (the naming rule
/// of both code generators, and of the runtime's type checks). Events (rpcs marked
/// `(runar.event)`) are not actions, so they get none. When the file holds several services,
/// only the one the Runar service is named after is taken, if there is one.
fn add_routes(
    routes: &mut HashMap<String, Route>,
    file: &FileDescriptorProto,
    path: &str,
    name: &str,
    actions: &[String],
    labels: Option<&Labels>,
) {
    let package = file.package();
    let named: Vec<_> = file
        .service
        .iter()
        .filter(|s| {
            let full = qualified(package, s.name());
            s.name() == name || full == name || normalize(s.name()) == normalize(path)
        })
        .collect();
    let services = if named.is_empty() || file.service.len() == 1 {
        file.service.iter().collect()
    } else {
        named
    };
    // The service's actions by their last segment, normalized (the first of equals wins):
    // looked up once per rpc, so a schema of many rpcs and many actions (a peer's to choose)
    // costs their sum, not their product.
    let prefix = format!("{path}/");
    let mut by_name: HashMap<String, &String> = HashMap::with_capacity(actions.len());
    for action in actions {
        if let Some(rest) = action.strip_prefix(&prefix).filter(|r| !r.contains('/')) {
            by_name.entry(normalize(rest)).or_insert(action);
        }
    }
    for service in services {
        let full = qualified(package, service.name());
        for method in &service.method {
            let Some(&action) = by_name.get(&normalize(method.name())) else {
                continue;
            };
            routes
                .entry(format!("/{full}/{}", method.name()))
                .or_insert_with(|| {
                    let (input, output) = labels
                        .map(|l| l.method(&full, method.name()))
                        .unwrap_or_default();
                    Route {
                        action: action.clone(),
                        input,
                        output,
                        kind: match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => CallKind::Unary,
                            (false, true) => CallKind::ServerStreaming,
                            (true, false) => CallKind::ClientStreaming,
                            (true, true) => CallKind::Bidi,
                        },
                    }
                });
        }
    }
}

/// `package.Service`, or `Service` without a package.
fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_owned()
    } else {
        format!("{package}.{name}")
    }
}

/// `GetItem` and `get_item` both become `getitem`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Erases a tonic-generated server's type (they are ready at once and never fail).
fn boxed<S>(service: S) -> HttpHandler
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Arc::new(move |request| {
        let mut service = service.clone();
        Box::pin(async move {
            match service.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{MethodDescriptorProto, ServiceDescriptorProto};

    fn file() -> FileDescriptorProto {
        let method = |name: &str, streaming: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".shop.Req".into()),
            output_type: Some(".shop.Rep".into()),
            server_streaming: Some(streaming),
            ..Default::default()
        };
        FileDescriptorProto {
            name: Some("shop.proto".into()),
            package: Some("shop".into()),
            service: vec![ServiceDescriptorProto {
                name: Some("Inventory".into()),
                method: vec![
                    method("GetItem", false),
                    method("WatchStock", true),
                    method("StockChanged", false),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rpcs_map_to_their_actions_and_events_to_none() {
        let mut routes = HashMap::new();
        let actions = ["stock/get_item".to_owned(), "stock/watch_stock".to_owned()];
        add_routes(&mut routes, &file(), "stock", "Inventory", &actions, None);
        assert_eq!(
            routes.get("/shop.Inventory/GetItem"),
            Some(&Route {
                action: "stock/get_item".into(),
                kind: CallKind::Unary,
                input: None,
                output: None,
            })
        );
        assert_eq!(
            routes.get("/shop.Inventory/WatchStock").map(|r| r.kind),
            Some(CallKind::ServerStreaming)
        );
        assert!(!routes.contains_key("/shop.Inventory/StockChanged"));
        assert_eq!(routes.len(), 2);
    }

    /// A schema and action list a peer announces can be large: routing them looks each rpc up
    /// once (it scanned and re-normalized every action for every rpc: 40,000 of each took
    /// minutes, which every call that saw a changed catalog waited for).
    #[test]
    fn many_rpcs_and_actions_are_routed_in_one_pass() {
        const N: usize = 40_000;
        let mut file = file();
        file.service[0].method = (0..N)
            .map(|i| MethodDescriptorProto {
                name: Some(format!("Get{i}")),
                input_type: Some(".shop.Req".into()),
                output_type: Some(".shop.Rep".into()),
                ..Default::default()
            })
            .collect();
        let actions: Vec<String> = (0..N).rev().map(|i| format!("stock/get_{i}")).collect();
        let mut routes = HashMap::new();
        add_routes(&mut routes, &file, "stock", "Inventory", &actions, None);
        assert_eq!(routes.len(), N);
        assert_eq!(
            routes
                .get("/shop.Inventory/Get12345")
                .map(|r| r.action.as_str()),
            Some("stock/get_12345")
        );
    }
}
