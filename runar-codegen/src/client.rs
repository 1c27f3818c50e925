//! The typed client: `new`, `with_timeout`, `with_wait_for_ready`, `with_metadata`,
//! `with_interceptor`, `with_network`, `node`, one method per action, and typed publish and
//! subscribe per event.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::{Endpoint, Method, Service};
use crate::naming::{publish_method, subscribe_method};
use crate::{local, respan, unsupported_kind};

/// The client struct and its methods.
pub fn client(service: &Service) -> TokenStream {
    let codegen = &service.codegen;
    let vis = &service.vis;
    let client_ident = &service.client_ident;
    let docs = &service.client_docs;
    let methods = service.methods.iter().map(|m| client_method(service, m));
    quote! {
        #docs
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client_ident {
            node: #codegen::Node,
            options: #codegen::RequestOptions,
        }

        #[allow(dead_code)]
        impl #client_ident {
            /// A client that calls the service through `node`.
            #vis fn new(node: #codegen::Node) -> Self {
                Self {
                    node,
                    options: ::core::default::Default::default(),
                }
            }

            /// Sets the timeout of every call this client makes (the node's request timeout
            /// otherwise).
            #vis fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                self.options = self.options.with_timeout(timeout);
                self
            }

            /// Sets whether every call this client makes waits, within its timeout, for an
            /// instance of the action to appear instead of failing at once with `NotFound`
            /// (gRPC's wait-for-ready; off by default).
            #vis fn with_wait_for_ready(mut self, wait: bool) -> Self {
                self.options = self.options.with_wait_for_ready(wait);
                self
            }

            /// Adds `metadata` to every call this client makes (replacing entries with the
            /// same key); handlers read it with `RequestContext::metadata`.
            #vis fn with_metadata(mut self, metadata: #codegen::Metadata) -> Self {
                self.options = self.options.with_metadata(metadata);
                self
            }

            /// Adds an outgoing interceptor to every call this client makes, run after the
            /// node's: it may add metadata or refuse the call.
            #vis fn with_interceptor(mut self, interceptor: impl #codegen::Interceptor) -> Self {
                self.options = self.options.with_interceptor(interceptor);
                self
            }

            /// Calls the service (and publishes and subscribes to its events) in `network`, one
            /// of the node's networks, instead of the node's default network.
            #vis fn with_network(mut self, network: impl ::core::convert::Into<::std::string::String>) -> Self {
                self.options = self.options.with_network(network);
                self
            }

            /// The node this client calls through.
            #vis fn node(&self) -> &#codegen::Node {
                &self.node
            }

            #(#methods)*
        }
    }
}

fn client_method(service: &Service, method: &Method) -> TokenStream {
    let codegen = &service.codegen;
    let vis = &service.vis;
    let cfgs = &method.cfgs;
    match &method.endpoint {
        Endpoint::Action { name } => {
            let Some(client) = &method.client else {
                return TokenStream::new();
            };
            if let Some(error) = unsupported_kind(method) {
                return quote!(#cfgs #error);
            }
            let full_path = format!("{}/{name}", service.path);
            let ident = &method.ident;
            let docs = &client.docs;
            let attrs = &client.attrs;
            let params = &client.params;
            let build = &client.build;
            let request_ty = &client.request_ty;
            let response_ty = &client.response_ty;
            let request = local("request");
            let response = local("response");
            // `Node::request_with` in two steps, so that a type that is not a payload is
            // reported at the parameter or at the return type.
            let new_value = respan(
                quote!(#codegen::Value::new::<#request_ty>),
                client.request_span,
            );
            let into_typed = respan(
                quote!(#codegen::Value::into_typed::<#response_ty>),
                client.response_span,
            );
            quote! {
                #cfgs
                #docs
                #attrs
                #vis async fn #ident(&self, #params) -> #codegen::Result<#response_ty> {
                    let #request = #new_value(#build);
                    let #response = #codegen::Node::request_value(
                        &self.node,
                        #full_path,
                        #request,
                        ::core::clone::Clone::clone(&self.options),
                    )
                    .await?;
                    #into_typed(#response)
                }
            }
        }
        Endpoint::Event {
            name,
            payload,
            publish_docs,
            subscribe_docs,
        } => {
            let full_path = format!("{}/{name}", service.path);
            let publish = format_ident!("{}", publish_method(name));
            let subscribe = format_ident!("{}", subscribe_method(name));
            let path = local("path");
            quote! {
                #cfgs
                #publish_docs
                #vis async fn #publish(&self, event: #payload) -> #codegen::Result<()> {
                    let #path = self.options.path_in_network(#full_path);
                    #codegen::Node::publish(&self.node, #path, event).await
                }

                #cfgs
                #subscribe_docs
                #vis async fn #subscribe<F, Fut>(
                    &self,
                    handler: F,
                ) -> #codegen::Result<#codegen::SubscriptionId>
                where
                    F: ::core::ops::Fn(#payload, #codegen::EventContext) -> Fut
                        + ::core::marker::Send
                        + ::core::marker::Sync
                        + 'static,
                    Fut: ::core::future::Future<Output = #codegen::Result<()>>
                        + ::core::marker::Send
                        + 'static,
                {
                    let #path = self.options.path_in_network(#full_path);
                    #codegen::Node::subscribe(&self.node, #path, handler).await
                }
            }
        }
        Endpoint::Subscription { .. } => TokenStream::new(),
    }
}
