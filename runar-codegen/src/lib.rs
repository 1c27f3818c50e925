//! Runar's one code generator, shared by `runar-build` (which fills the model from protobuf
//! descriptors) and `runar-macros` (which fills it from the annotated trait or impl block), as
//! `tonic-build` serves both prost-generated and hand-written definitions.
//!
//! - [`model`]: one service/method model, with the four call kinds (unary, server, client and
//!   bidirectional streaming);
//! - [`naming`]: one set of naming rules (heck's case conversion, the generated items' names);
//! - [`server_wrapper`], [`service_impl`] and [`client`]: one emitter for the server wrapper
//!   (`new`, `from_arc`, `get_ref`), the `AbstractService` impl and the typed client (`new`,
//!   `with_timeout`, `with_wait_for_ready`, `with_metadata`, `with_interceptor`, `node`, one
//!   method per action, `publish_`/`subscribe_` per event). Unary actions register with
//!   `register_action` and call `Node::request_value`; streaming actions register with
//!   `register_stream` and call `Node::request_stream_with` (the runtime's streams are all
//!   bidirectional: the emitted adapters give each kind its shape).
//!
//! Emitted code names the runtime only through the model's `codegen` path (`::runar::codegen`)
//! and every other item by its full path (`::core::…`, `::std::sync::Arc`), so it compiles when
//! the user's crate shadows `Result`, `Option`, `std` or has no prelude. Local variables use
//! mixed-site hygiene ([`local`]), so they cannot collide with the user's parameter names.

pub mod model;
pub mod naming;
pub mod sealed;

mod client;
mod server;

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

pub use client::client;
pub use model::{CallKind, ClientMethod, Endpoint, Handler, Host, Method, Service};
pub use server::{server_wrapper, service_impl};

/// A local variable of generated code, invisible to the user's code (mixed-site hygiene).
pub fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The variable holding a handler's decoded request.
pub fn request_var() -> Ident {
    local("request")
}

/// The variable holding a handler's context.
pub fn context_var() -> Ident {
    local("context")
}

/// `tokens` with every span set to `span`, so that an error about the whole expression points at
/// the user's code rather than at the attribute.
pub fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(g) = &tree {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tree = proc_macro2::TokenTree::Group(group);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// `#[doc]` attributes for `text`, one per line.
pub fn doc(text: &str) -> TokenStream {
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

#[cfg(test)]
mod tests {
    use quote::format_ident;

    use super::*;

    fn action(name: &str, kind: CallKind) -> Method {
        let request = request_var();
        Method {
            ident: format_ident!("{}", name),
            span: Span::call_site(),
            kind,
            endpoint: Endpoint::Action {
                name: name.to_owned(),
            },
            cfgs: TokenStream::new(),
            handler: Some(Handler {
                request_ty: quote!(f64),
                uses_request: true,
                uses_context: false,
                prelude: TokenStream::new(),
                args: vec![quote!(#request)],
            }),
            client: Some(ClientMethod {
                docs: doc("Calls it."),
                attrs: TokenStream::new(),
                params: quote!(x: f64),
                build: quote!(x),
                request_ty: quote!(f64),
                request_span: Span::call_site(),
                response_ty: quote!(f64),
                response_span: Span::call_site(),
            }),
        }
    }

    fn service(methods: Vec<Method>) -> Service {
        Service {
            codegen: quote!(::runar::codegen),
            vis: quote!(pub),
            name: "Math".to_owned(),
            path: "math".to_owned(),
            version: None,
            description: String::new(),
            schema: Vec::new(),
            schema_messages: Vec::new(),
            host: Host::Wrapper {
                trait_ident: format_ident!("Math"),
                server_ident: naming::server_ident("Math"),
                docs: TokenStream::new(),
            },
            client_ident: naming::client_ident("Math"),
            client_docs: TokenStream::new(),
            methods,
        }
    }

    #[test]
    fn one_emitter_gives_the_wrapper_the_service_and_the_client() {
        let service = service(vec![action("double", CallKind::Unary)]);
        let wrapper = server_wrapper(&service).to_string();
        for item in ["struct MathServer", "fn new", "fn from_arc", "fn get_ref"] {
            assert!(wrapper.contains(item), "{item} in {wrapper}");
        }
        let service_impl = service_impl(&service).to_string();
        assert!(
            service_impl.contains("AbstractService for MathServer")
                && service_impl.contains("register_action")
                && service_impl.contains("\"double\""),
            "{service_impl}"
        );
        let client = client(&service).to_string();
        for item in [
            "struct MathClient",
            "fn new",
            "fn with_timeout",
            "fn with_metadata",
            "fn with_interceptor",
            "fn with_wait_for_ready",
            "fn node",
            "async fn double",
            "\"math/double\"",
        ] {
            assert!(client.contains(item), "{item} in {client}");
        }
    }

    #[test]
    fn streaming_kinds_register_streams_and_start_stream_calls() {
        assert_eq!(CallKind::from_streaming(false, false), CallKind::Unary);
        assert_eq!(CallKind::from_streaming(true, true), CallKind::Bidi);
        let streams_requests = |name, kind| {
            let mut method = action(name, kind);
            if let Some(client) = &mut method.client {
                client.params = quote!(items);
            }
            method
        };
        let service = service(vec![
            action("watch", CallKind::ServerStreaming),
            streams_requests("upload", CallKind::ClientStreaming),
            streams_requests("chat", CallKind::Bidi),
        ]);
        let server = service_impl(&service).to_string();
        for item in [
            "register_stream",
            "CallKind :: ServerStreaming",
            "CallKind :: ClientStreaming",
            "CallKind :: Bidi",
            "stream_once",
            "Streaming :: message",
            "is a server-streaming call and takes one request",
        ] {
            assert!(server.contains(item), "{item} in {server}");
        }
        assert!(!server.contains("register_action"), "{server}");
        let client = client(&service).to_string();
        for item in [
            "async fn watch (& self , x : f64) -> :: runar :: codegen :: Result < :: runar :: codegen :: Streaming < f64 >>",
            "async fn upload (& self , items : impl :: runar :: codegen :: Stream < Item = f64 >",
            "async fn chat (& self , items : impl :: runar :: codegen :: Stream < Item = f64 >",
            "request_stream_with :: < f64 , f64 >",
            "\"math/upload\"",
            "`math/upload` ended without a response",
        ] {
            assert!(client.contains(item), "{item} in {client}");
        }
        assert!(!client.contains("compile_error"), "{client}");
    }

    #[test]
    fn a_self_type_host_has_no_wrapper() {
        let mut service = service(vec![action("double", CallKind::Unary)]);
        service.host = Host::SelfType {
            impl_generics: TokenStream::new(),
            self_ty: quote!(Calc),
            where_clause: TokenStream::new(),
            span: Span::call_site(),
        };
        assert!(server_wrapper(&service).is_empty());
        assert!(
            service_impl(&service)
                .to_string()
                .contains("AbstractService for Calc")
        );
    }
}
