//! Runar's one code generator, shared by `runar-build` (which fills the model from protobuf
//! descriptors) and `runar-macros` (which fills it from the annotated trait or impl block), as
//! `tonic-build` serves both prost-generated and hand-written definitions.
//!
//! - [`model`]: one service/method model, which already knows the four call kinds;
//! - [`naming`]: one set of naming rules (heck's case conversion, the generated items' names);
//! - [`server_wrapper`], [`service_impl`] and [`client`]: one emitter for the server wrapper
//!   (`new`, `from_arc`, `get_ref`), the `AbstractService` impl and the typed client (`new`,
//!   `with_timeout`, `node`, one method per action, `publish_`/`subscribe_` per event).
//!
//! Emitted code names the runtime only through the model's `codegen` path (`::runar::codegen`)
//! and every other item by its full path (`::core::…`, `::std::sync::Arc`), so it compiles when
//! the user's crate shadows `Result`, `Option`, `std` or has no prelude. Local variables use
//! mixed-site hygiene ([`local`]), so they cannot collide with the user's parameter names.

pub mod model;
pub mod naming;

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

/// A `compile_error!` for a call kind the emitters do not generate yet.
fn unsupported_kind(method: &Method) -> Option<TokenStream> {
    if !method.kind.is_streaming() {
        return None;
    }
    let message = format!(
        "`{}`: streaming rpcs are not supported yet ({} streaming)",
        method.ident,
        method.kind.describe()
    );
    let span = method.span;
    Some(quote::quote_spanned!(span=> ::core::compile_error!(#message);))
}
