//! The [`ServiceGenerator`] prost-build calls once per service: fills the shared generator's
//! model (`runar-codegen`) from the descriptors and writes the `<service>_server` and
//! `<service>_client` modules around what it emits.
//!
//! Generated code names the runtime only through `::runar::codegen` and writes every other
//! path in full (`::core::…`, `::std::sync::Arc`), so it compiles when the user's crate shadows
//! `Result`, `Option`, `Box` or `std`.

use proc_macro2::{Ident, Span, TokenStream};
use prost_build::{Comments, Method, Service, ServiceGenerator};
use quote::{format_ident, quote};
use runar_codegen::{doc, naming};

use crate::model::{Model, ServiceModel};

/// Lints allowed in the generated modules: the user's crate may deny them, and generated
/// code that is not called (a client in a server-only crate) must not warn.
fn module_allows() -> TokenStream {
    quote! {
        #![allow(
            dead_code,
            unused_variables,
            unused_imports,
            missing_docs,
            unreachable_pub,
            clippy::all,
            clippy::pedantic,
            clippy::nursery
        )]
    }
}

pub(crate) struct Generator {
    model: Model,
}

impl Generator {
    pub(crate) fn new(model: Model) -> Self {
        Generator { model }
    }
}

impl ServiceGenerator for Generator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        // `analyze` saw every service of the descriptor set prost-build generates from.
        let Some(model) = self.model.service(&full_name) else {
            buf.push_str(&format!(
                "::core::compile_error!(\"runar-build: no analysis for service {full_name}; please report this bug\");\n"
            ));
            return;
        };
        let service_gen = ServiceGen {
            service: &service,
            full_name: &full_name,
            model,
        };
        let codegen_model = service_gen.codegen_model();
        buf.push_str(&service_gen.server(&codegen_model).to_string());
        buf.push('\n');
        buf.push_str(&service_gen.client(&codegen_model).to_string());
        buf.push('\n');
    }
}

/// Fills the shared generator's model for one service and wraps its output in the
/// `<service>_server` and `<service>_client` modules.
struct ServiceGen<'a> {
    service: &'a Service,
    full_name: &'a str,
    model: &'a ServiceModel,
}

impl ServiceGen<'_> {
    fn trait_ident(&self) -> Ident {
        format_ident!("{}", self.service.name)
    }

    fn is_event(&self, method: &Method) -> bool {
        self.model.events.contains(&method.proto_name)
    }

    /// `get_item` for rpc `GetItem`.
    fn endpoint_name(&self, method: &Method) -> String {
        self.model
            .endpoints
            .get(&method.proto_name)
            .cloned()
            .unwrap_or_else(|| naming::snake_case(&method.proto_name))
    }

    /// `inventory/get_item` for rpc `GetItem`.
    fn endpoint_path(&self, method: &Method) -> String {
        format!("{}/{}", self.model.path, self.endpoint_name(method))
    }

    /// The service in the shared generator's model.
    fn codegen_model(&self) -> runar_codegen::Service {
        let full_name = self.full_name;
        let path = &self.model.path;
        let trait_ident = self.trait_ident();
        let server_ident = naming::server_ident(&self.service.name);
        let client_ident = naming::client_ident(&self.service.name);
        let server_docs = doc(&format!(
            "Hosts an implementation of [`{trait_ident}`] on a node as the service \
             `{full_name}`, path `{path}`.\n\n\
             Its [`version`](runar::codegen::AbstractService::version) is the version of the \
             crate that includes the generated code, and its \
             [`schema`](runar::codegen::AbstractService::schema) the encoded \
             `FileDescriptorProto` of the `.proto` file that defines the service."
        ));
        let client_docs = docs_or(
            &self.service.comments,
            &format!("A typed client of the `{full_name}` service."),
            "Calls go through a [`Node`](runar::codegen::Node), so they reach the service \
             whether it runs on that node or on a remote one. The client is cheap to clone; \
             its methods take `&self`.",
        );
        runar_codegen::Service {
            codegen: quote!(::runar::codegen),
            vis: quote!(pub),
            name: full_name.to_owned(),
            path: path.clone(),
            version: None,
            description: description(&self.service.comments),
            schema: self.model.schema.to_vec(),
            schema_messages: Vec::new(),
            host: runar_codegen::Host::Wrapper {
                trait_ident,
                server_ident,
                docs: server_docs,
            },
            client_ident,
            client_docs,
            methods: self
                .service
                .methods
                .iter()
                .map(|m| self.method(m))
                .collect(),
        }
    }

    /// One rpc in the shared generator's model: an action, or an event.
    fn method(&self, method: &Method) -> runar_codegen::Method {
        let ident = method_ident(&method.name);
        let request = rust_type(&method.input_type);
        let response = rust_type(&method.output_type);
        let name = self.endpoint_name(method);
        let endpoint = self.endpoint_path(method);
        let kind = runar_codegen::CallKind::from_streaming(
            method.client_streaming,
            method.server_streaming,
        );
        if self.is_event(method) {
            let publish_docs = docs_or(
                &method.comments,
                &format!("The `{}` event.", method.proto_name),
                &format!("Publishes the event on `{endpoint}`."),
            );
            let subscribe_docs = docs_or(
                &method.comments,
                &format!("The `{}` event.", method.proto_name),
                &format!(
                    "Subscribes `handler` to the events published on `{endpoint}`; see \
                     [`Node::subscribe`](runar::codegen::Node::subscribe)."
                ),
            );
            return runar_codegen::Method {
                ident,
                span: Span::call_site(),
                kind,
                endpoint: runar_codegen::Endpoint::Event {
                    name,
                    payload: request,
                    publish_docs,
                    subscribe_docs,
                },
                cfgs: TokenStream::new(),
                handler: None,
                client: None,
            };
        }
        let docs = docs_or(
            &method.comments,
            &format!("Calls the `{}` rpc.", method.proto_name),
            &format!("Requests the action `{endpoint}`{}.", stream_note(kind)),
        );
        let request_var = runar_codegen::request_var();
        let context_var = runar_codegen::context_var();
        // A call that streams requests takes the stream as its one parameter.
        let (params, build) = if kind.streams_requests() {
            (quote!(requests), TokenStream::new())
        } else {
            (quote!(request: #request), quote!(request))
        };
        runar_codegen::Method {
            ident,
            span: Span::call_site(),
            kind,
            endpoint: runar_codegen::Endpoint::Action { name },
            cfgs: TokenStream::new(),
            handler: Some(runar_codegen::Handler {
                request_ty: request.clone(),
                uses_request: true,
                uses_context: true,
                prelude: TokenStream::new(),
                args: vec![quote!(#context_var), quote!(#request_var)],
            }),
            client: Some(runar_codegen::ClientMethod {
                docs,
                attrs: TokenStream::new(),
                params,
                build,
                request_ty: request,
                request_span: Span::call_site(),
                response_ty: response,
                response_span: Span::call_site(),
            }),
        }
    }

    /// The `<service>_server` module: the trait to implement and the service that hosts it.
    fn server(&self, codegen_model: &runar_codegen::Service) -> TokenStream {
        let module = format_ident!("{}", naming::server_module(&self.service.proto_name));
        let client_module = format_ident!("{}", naming::client_module(&self.service.proto_name));
        let allows = module_allows();
        let trait_ident = self.trait_ident();
        let server = naming::server_ident(&self.service.name);
        let client = &codegen_model.client_ident;
        let full_name = self.full_name;
        let path = &self.model.path;

        let module_doc = doc(&format!(
            "Server side of the `{full_name}` service: implement [`{trait_ident}`]({module}::{trait_ident}) \
             and host it on a node with [`{server}`]({module}::{server})."
        ));
        let trait_doc = docs_or(
            &self.service.comments,
            &format!("The `{full_name}` service."),
            &format!(
                "Implement it (with plain `async fn`s) and add [`{server}`]`::new(implementation)` \
                 to a node; its actions live under `{path}/`. Call it with \
                 [`{client}`](super::{client_module}::{client})."
            ),
        );

        let trait_methods = self
            .service
            .methods
            .iter()
            .filter(|m| !self.is_event(m))
            .map(|method| {
                let ident = method_ident(&method.name);
                let request = rust_type(&method.input_type);
                let response = rust_type(&method.output_type);
                let kind = runar_codegen::CallKind::from_streaming(
                    method.client_streaming,
                    method.server_streaming,
                );
                let docs = docs_or(
                    &method.comments,
                    &format!("Serves the `{}` rpc.", method.proto_name),
                    &format!(
                        "Action `{}`{}.",
                        self.endpoint_path(method),
                        stream_note(kind)
                    ),
                );
                let param = if kind.streams_requests() {
                    quote!(requests: ::runar::codegen::Streaming<#request>)
                } else {
                    quote!(request: #request)
                };
                let output = if kind.streams_responses() {
                    quote! {
                        ::runar::codegen::Result<
                            impl ::runar::codegen::Stream<
                                Item = ::runar::codegen::Result<#response>,
                            > + ::core::marker::Send + 'static,
                        >
                    }
                } else {
                    quote!(::runar::codegen::Result<#response>)
                };
                quote! {
                    #docs
                    fn #ident(
                        &self,
                        ctx: ::runar::codegen::RequestContext,
                        #param,
                    ) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
                }
            });

        let path_doc = doc(&format!(
            "The path of the service's actions and events: `{path}`."
        ));
        let wrapper = runar_codegen::server_wrapper(codegen_model);
        let service_impl = runar_codegen::service_impl(codegen_model);

        quote! {
            #module_doc
            pub mod #module {
                #allows

                #path_doc
                pub const SERVICE_PATH: &str = #path;

                #trait_doc
                pub trait #trait_ident:
                    ::core::marker::Send + ::core::marker::Sync + 'static
                {
                    #(#trait_methods)*
                }

                #wrapper

                #service_impl
            }
        }
    }

    /// The `<service>_client` module: the typed client.
    fn client(&self, codegen_model: &runar_codegen::Service) -> TokenStream {
        let module = format_ident!("{}", naming::client_module(&self.service.proto_name));
        let allows = module_allows();
        let client = &codegen_model.client_ident;
        let full_name = self.full_name;
        let path = &self.model.path;
        let module_doc = doc(&format!(
            "Client side of the `{full_name}` service: [`{client}`]({module}::{client})."
        ));
        let path_doc = doc(&format!(
            "The path of the service's actions and events: `{path}`."
        ));
        let client_items = runar_codegen::client(codegen_model);
        quote! {
            #module_doc
            pub mod #module {
                #allows

                #path_doc
                pub const SERVICE_PATH: &str = #path;

                #client_items
            }
        }
    }
}

/// How a streaming rpc's docs describe it: ` (server streaming: …)`; empty for a unary rpc.
fn stream_note(kind: runar_codegen::CallKind) -> &'static str {
    use runar_codegen::CallKind;
    match kind {
        CallKind::Unary => "",
        CallKind::ServerStreaming => {
            " (server streaming: one request, a stream of responses; the call returns once \
             started, and dropping the stream of responses cancels it)"
        }
        CallKind::ClientStreaming => {
            " (client streaming: a stream of requests, one response, sent when the requests end)"
        }
        CallKind::Bidi => {
            " (bidirectional streaming: a stream of requests, a stream of responses; the call \
             returns once started, and dropping the stream of responses cancels it)"
        }
    }
}

/// The Rust type of a message as seen from a generated module, one level below the package's
/// module: prost-build's relative paths get a `super::`.
fn rust_type(prost_type: &str) -> TokenStream {
    let absolute = prost_type.starts_with("::")
        || prost_type.starts_with("crate::")
        || matches!(
            prost_type,
            "()" | "bool" | "f32" | "f64" | "i32" | "i64" | "u32" | "u64"
        );
    let text = if absolute {
        prost_type.to_owned()
    } else {
        format!("super::{prost_type}")
    };
    match syn::parse_str::<syn::Type>(&text) {
        Ok(ty) => quote!(#ty),
        Err(_) => {
            let message = format!("runar-build: cannot parse the Rust type `{text}`");
            quote!(::core::compile_error!(#message))
        }
    }
}

/// The identifier of a method from prost's Rust name (`get_item`, `r#type`).
fn method_ident(name: &str) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, Span::call_site()),
        None => Ident::new(name, Span::call_site()),
    }
}

/// The `.proto` comments as `#[doc]` attributes (prettyplease drops plain `//` comments, so
/// they must be attributes), or `fallback` when there are none; then `extra` as a paragraph.
fn docs_or(comments: &Comments, fallback: &str, extra: &str) -> TokenStream {
    let mut lines = comment_lines(comments);
    if lines.is_empty() {
        lines.push(format!(" {fallback}"));
    }
    lines.push(String::new());
    lines.extend(extra.lines().map(|l| format!(" {l}")));
    let attrs = lines.iter().map(|line| quote!(#[doc = #line]));
    quote!(#(#attrs)*)
}

/// The leading and trailing comments as rustdoc lines, sanitized by prost-build (URLs and
/// brackets escaped) like its own message docs. Detached comments are left out.
fn comment_lines(comments: &Comments) -> Vec<String> {
    let detached_free = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut text = String::new();
    detached_free.append_with_indent(0, &mut text);
    text.lines()
        .filter_map(|line| line.strip_prefix("///"))
        .map(str::to_owned)
        .collect()
}

/// A one-line description: the first paragraph of the leading comment, on one line.
fn description(comments: &Comments) -> String {
    comments
        .leading
        .iter()
        .map(|l| l.trim())
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_types_get_super_and_absolute_ones_stay() {
        assert_eq!(rust_type("Item").to_string(), "super :: Item");
        assert_eq!(
            rust_type("super::common::Money").to_string(),
            "super :: super :: common :: Money"
        );
        assert_eq!(
            rust_type("item::Location").to_string(),
            "super :: item :: Location"
        );
        assert_eq!(rust_type("()").to_string(), "()");
        assert_eq!(rust_type("u64").to_string(), "u64");
        assert_eq!(
            rust_type("::runar::codegen::prost_types::Timestamp").to_string(),
            ":: runar :: codegen :: prost_types :: Timestamp"
        );
    }

    #[test]
    fn keywords_become_raw_identifiers() {
        assert_eq!(method_ident("r#type").to_string(), "r#type");
        assert_eq!(method_ident("get_item").to_string(), "get_item");
    }

    #[test]
    fn description_is_the_first_paragraph_on_one_line() {
        let comments = Comments {
            leading_detached: vec![vec![" detached".into()]],
            leading: vec![
                "".into(),
                " Keeps track".into(),
                " of the items.".into(),
                "".into(),
                " More.".into(),
            ],
            trailing: Vec::new(),
        };
        assert_eq!(description(&comments), "Keeps track of the items.");
        assert_eq!(description(&Comments::default()), "");
    }

    #[test]
    fn docs_use_comments_or_the_fallback_and_drop_detached_comments() {
        let comments = Comments {
            leading_detached: vec![vec![" detached".into()]],
            leading: vec![" See [this] and https://example.com".into()],
            trailing: Vec::new(),
        };
        let docs = docs_or(&comments, "fallback", "extra").to_string();
        assert!(
            docs.contains(r"See \\[this\\] and <https://example.com>"),
            "{docs}"
        );
        assert!(
            !docs.contains("detached") && !docs.contains("fallback"),
            "{docs}"
        );
        let docs = docs_or(&Comments::default(), "fallback", "extra").to_string();
        assert!(
            docs.contains("fallback") && docs.contains("extra"),
            "{docs}"
        );
    }
}
