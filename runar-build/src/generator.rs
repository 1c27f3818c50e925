//! The [`ServiceGenerator`] prost-build calls once per service: writes the `<service>_server`
//! and `<service>_client` modules.
//!
//! Generated code names the runtime only through `::runar::codegen` and writes every other
//! path in full (`::core::…`, `::std::sync::Arc`), so it compiles when the user's crate shadows
//! `Result`, `Option`, `Box` or `std`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use prost_build::{Comments, Method, Service, ServiceGenerator};
use quote::{format_ident, quote};

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
        buf.push_str(&service_gen.server().to_string());
        buf.push('\n');
        buf.push_str(&service_gen.client().to_string());
        buf.push('\n');
    }
}

/// Generates the code of one service; one method per generated item.
struct ServiceGen<'a> {
    service: &'a Service,
    full_name: &'a str,
    model: &'a ServiceModel,
}

impl ServiceGen<'_> {
    fn snake(&self) -> String {
        heck::ToSnakeCase::to_snake_case(self.service.proto_name.as_str())
    }

    fn trait_ident(&self) -> Ident {
        format_ident!("{}", self.service.name)
    }

    fn server_ident(&self) -> Ident {
        format_ident!("{}Server", self.service.name)
    }

    fn client_ident(&self) -> Ident {
        format_ident!("{}Client", self.service.name)
    }

    fn is_event(&self, method: &Method) -> bool {
        self.model.events.contains(&method.proto_name)
    }

    fn actions(&self) -> impl Iterator<Item = &Method> {
        self.service.methods.iter().filter(|m| !self.is_event(m))
    }

    fn events(&self) -> impl Iterator<Item = &Method> {
        self.service.methods.iter().filter(|m| self.is_event(m))
    }

    /// `inventory/get_item` for rpc `GetItem`.
    fn endpoint_path(&self, method: &Method) -> String {
        let name = self
            .model
            .endpoints
            .get(&method.proto_name)
            .cloned()
            .unwrap_or_else(|| heck::ToSnakeCase::to_snake_case(method.proto_name.as_str()));
        format!("{}/{}", self.model.path, name)
    }

    fn endpoint_name(&self, method: &Method) -> String {
        self.model
            .endpoints
            .get(&method.proto_name)
            .cloned()
            .unwrap_or_else(|| heck::ToSnakeCase::to_snake_case(method.proto_name.as_str()))
    }

    /// The `<service>_server` module: the trait to implement and the service that hosts it.
    fn server(&self) -> TokenStream {
        let module = format_ident!("{}_server", self.snake());
        let allows = module_allows();
        let trait_ident = self.trait_ident();
        let server = self.server_ident();
        let client = self.client_ident();
        let client_module = format_ident!("{}_client", self.snake());
        let full_name = self.full_name;
        let path = &self.model.path;
        let schema = Literal::byte_string(&self.model.schema);
        let description = description(&self.service.comments);

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

        let trait_methods = self.actions().map(|method| {
            let ident = method_ident(&method.name);
            let request = rust_type(&method.input_type);
            let response = rust_type(&method.output_type);
            let docs = docs_or(
                &method.comments,
                &format!("Serves the `{}` rpc.", method.proto_name),
                &format!("Action `{}`.", self.endpoint_path(method)),
            );
            quote! {
                #docs
                fn #ident(
                    &self,
                    ctx: ::runar::codegen::RequestContext,
                    request: #request,
                ) -> impl ::core::future::Future<
                    Output = ::runar::codegen::Result<#response>,
                > + ::core::marker::Send;
            }
        });

        let registrations = self.actions().map(|method| {
            let ident = method_ident(&method.name);
            let request = rust_type(&method.input_type);
            let name = self.endpoint_name(method);
            quote! {
                {
                    let inner = ::core::clone::Clone::clone(&self.inner);
                    ctx.register_action(
                        #name,
                        move |request: #request, ctx: ::runar::codegen::RequestContext| {
                            let inner = ::core::clone::Clone::clone(&inner);
                            async move { <T as #trait_ident>::#ident(&*inner, ctx, request).await }
                        },
                    )
                    .await?;
                }
            }
        });

        let server_doc = doc(&format!(
            "Hosts an implementation of [`{trait_ident}`] on a node as the service \
             `{full_name}`, path `{path}`.\n\n\
             Its [`version`](runar::codegen::AbstractService::version) is the version of the \
             crate that includes the generated code, and its \
             [`schema`](runar::codegen::AbstractService::schema) the encoded \
             `FileDescriptorProto` of the `.proto` file that defines the service."
        ));
        let path_doc = doc(&format!(
            "The path of the service's actions and events: `{path}`."
        ));

        quote! {
            #module_doc
            pub mod #module {
                #allows

                #path_doc
                pub const SERVICE_PATH: &str = #path;

                /// The encoded `FileDescriptorProto` of the file that defines the service.
                const FILE_DESCRIPTOR: &[u8] = #schema;

                #trait_doc
                pub trait #trait_ident:
                    ::core::marker::Send + ::core::marker::Sync + 'static
                {
                    #(#trait_methods)*
                }

                #server_doc
                pub struct #server<T> {
                    inner: ::std::sync::Arc<T>,
                }

                impl<T: #trait_ident> #server<T> {
                    /// Wraps an implementation.
                    pub fn new(inner: T) -> Self {
                        Self::from_arc(::std::sync::Arc::new(inner))
                    }

                    /// Wraps an implementation that is already shared.
                    pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                        #server { inner }
                    }

                    /// The implementation.
                    pub fn get_ref(&self) -> &T {
                        &self.inner
                    }
                }

                impl<T> ::core::clone::Clone for #server<T> {
                    fn clone(&self) -> Self {
                        #server {
                            inner: ::core::clone::Clone::clone(&self.inner),
                        }
                    }
                }

                impl<T> ::core::fmt::Debug for #server<T> {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.debug_struct(::core::stringify!(#server))
                            .field("service", &#full_name)
                            .field("path", &SERVICE_PATH)
                            .finish_non_exhaustive()
                    }
                }

                impl<T: #trait_ident> ::runar::codegen::AbstractService for #server<T> {
                    fn name(&self) -> &str {
                        #full_name
                    }

                    fn path(&self) -> &str {
                        SERVICE_PATH
                    }

                    fn version(&self) -> &str {
                        ::core::env!("CARGO_PKG_VERSION")
                    }

                    fn description(&self) -> &str {
                        #description
                    }

                    fn schema(&self) -> ::core::option::Option<&'static [u8]> {
                        ::core::option::Option::Some(FILE_DESCRIPTOR)
                    }

                    async fn init(
                        &self,
                        ctx: &::runar::codegen::LifecycleContext,
                    ) -> ::runar::codegen::Result<()> {
                        #(#registrations)*
                        ::core::result::Result::Ok(())
                    }
                }
            }
        }
    }

    /// The `<service>_client` module: the typed client.
    fn client(&self) -> TokenStream {
        let module = format_ident!("{}_client", self.snake());
        let allows = module_allows();
        let client = self.client_ident();
        let full_name = self.full_name;
        let path = &self.model.path;

        let module_doc = doc(&format!(
            "Client side of the `{full_name}` service: [`{client}`]({module}::{client})."
        ));
        let client_doc = docs_or(
            &self.service.comments,
            &format!("A typed client of the `{full_name}` service."),
            "Calls go through a [`Node`](runar::codegen::Node), so they reach the service \
             whether it runs on that node or on a remote one. The client is cheap to clone; \
             its methods take `&self`.",
        );
        let path_doc = doc(&format!(
            "The path of the service's actions and events: `{path}`."
        ));

        let calls = self.actions().map(|method| {
            let ident = method_ident(&method.name);
            let request = rust_type(&method.input_type);
            let response = rust_type(&method.output_type);
            let endpoint = self.endpoint_path(method);
            let docs = docs_or(
                &method.comments,
                &format!("Calls the `{}` rpc.", method.proto_name),
                &format!("Requests the action `{endpoint}`."),
            );
            quote! {
                #docs
                pub async fn #ident(
                    &self,
                    request: #request,
                ) -> ::runar::codegen::Result<#response> {
                    self.node
                        .request_with(
                            #endpoint,
                            request,
                            ::core::clone::Clone::clone(&self.options),
                        )
                        .await
                }
            }
        });

        let events = self.events().map(|method| {
            let name = self.endpoint_name(method);
            let publish = format_ident!("publish_{}", name);
            let subscribe = format_ident!("subscribe_{}", name);
            let event = rust_type(&method.input_type);
            let endpoint = self.endpoint_path(method);
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
            quote! {
                #publish_docs
                pub async fn #publish(&self, event: #event) -> ::runar::codegen::Result<()> {
                    self.node.publish(#endpoint, event).await
                }

                #subscribe_docs
                pub async fn #subscribe<F, Fut>(
                    &self,
                    handler: F,
                ) -> ::runar::codegen::Result<::runar::codegen::SubscriptionId>
                where
                    F: ::core::ops::Fn(#event, ::runar::codegen::EventContext) -> Fut
                        + ::core::marker::Send
                        + ::core::marker::Sync
                        + 'static,
                    Fut: ::core::future::Future<Output = ::runar::codegen::Result<()>>
                        + ::core::marker::Send
                        + 'static,
                {
                    self.node.subscribe(#endpoint, handler).await
                }
            }
        });

        quote! {
            #module_doc
            pub mod #module {
                #allows

                #path_doc
                pub const SERVICE_PATH: &str = #path;

                #client_doc
                #[derive(::core::clone::Clone, ::core::fmt::Debug)]
                pub struct #client {
                    node: ::runar::codegen::Node,
                    options: ::runar::codegen::RequestOptions,
                }

                impl #client {
                    /// A client that calls the service through `node`.
                    pub fn new(node: ::runar::codegen::Node) -> Self {
                        #client {
                            node,
                            options: ::core::default::Default::default(),
                        }
                    }

                    /// Sets the timeout of each call made through this client (the node's
                    /// request timeout otherwise).
                    pub fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                        self.options = self.options.with_timeout(timeout);
                        self
                    }

                    /// The node calls go through.
                    pub fn node(&self) -> &::runar::codegen::Node {
                        &self.node
                    }

                    #(#calls)*

                    #(#events)*
                }
            }
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

/// `#[doc]` attributes for `text`, one per line.
fn doc(text: &str) -> TokenStream {
    let lines = text.lines().map(|line| {
        let line = if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        };
        quote!(#[doc = #line])
    });
    quote!(#(#lines)*)
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
