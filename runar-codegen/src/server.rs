//! The server side: the wrapper that hosts a trait implementation, and the `AbstractService`
//! impl whose `init` registers one handler per action and subscription.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};

use crate::model::{Endpoint, Host, Method, Service};
use crate::{context_var, local, request_var, respan, unsupported_kind};

/// The wrapper (`MathServer<T: Math>` with `new`, `from_arc`, `get_ref`, `Clone`, `Debug`) for a
/// [`Host::Wrapper`]; nothing for a [`Host::SelfType`].
pub fn server_wrapper(service: &Service) -> TokenStream {
    let Host::Wrapper {
        trait_ident,
        server_ident,
        docs,
    } = &service.host
    else {
        return TokenStream::new();
    };
    let vis = &service.vis;
    let name = &service.name;
    let path = &service.path;
    quote! {
        #docs
        #vis struct #server_ident<T> {
            inner: ::std::sync::Arc<T>,
        }

        #[allow(dead_code)]
        impl<T: #trait_ident> #server_ident<T> {
            /// Wraps an implementation.
            #vis fn new(inner: T) -> Self {
                Self::from_arc(::std::sync::Arc::new(inner))
            }

            /// Wraps an implementation that is already shared.
            #vis fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                Self { inner }
            }

            /// The implementation.
            #vis fn get_ref(&self) -> &T {
                &self.inner
            }
        }

        impl<T> ::core::clone::Clone for #server_ident<T> {
            fn clone(&self) -> Self {
                Self {
                    inner: <::std::sync::Arc<T> as ::core::clone::Clone>::clone(&self.inner),
                }
            }
        }

        impl<T> ::core::fmt::Debug for #server_ident<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server_ident))
                    .field("service", &#name)
                    .field("path", &#path)
                    .finish_non_exhaustive()
            }
        }
    }
}

/// `impl AbstractService`: name, path, version, description, schema, and `init`, which registers
/// one handler per action and subscription.
pub fn service_impl(service: &Service) -> TokenStream {
    let codegen = &service.codegen;
    let name = &service.name;
    let path = &service.path;
    let description = &service.description;
    let version = match &service.version {
        Some(v) => quote!(#v),
        None => quote! {
            match ::core::option_env!("CARGO_PKG_VERSION") {
                ::core::option::Option::Some(version) => version,
                ::core::option::Option::None => "0.0.0",
            }
        },
    };
    let schema = Literal::byte_string(&service.schema);
    let ctx = local("ctx");
    let registrations = service
        .methods
        .iter()
        .map(|m| registration(service, m, &ctx));
    let header = match &service.host {
        Host::Wrapper {
            trait_ident,
            server_ident,
            ..
        } => quote!(impl<T: #trait_ident> #codegen::AbstractService for #server_ident<T>),
        Host::SelfType {
            impl_generics,
            self_ty,
            where_clause,
            ..
        } => quote!(impl #impl_generics #codegen::AbstractService for #self_ty #where_clause),
    };
    quote! {
        #header {
            fn name(&self) -> &str {
                #name
            }

            fn path(&self) -> &str {
                #path
            }

            fn version(&self) -> &str {
                #version
            }

            fn description(&self) -> &str {
                #description
            }

            fn schema(&self) -> ::core::option::Option<&'static [u8]> {
                ::core::option::Option::Some(#schema)
            }

            async fn init(&self, #ctx: &#codegen::LifecycleContext) -> #codegen::Result<()> {
                #(#registrations)*
                ::core::result::Result::Ok(())
            }
        }
    }
}

/// Registers one action or subscription in `init`.
fn registration(service: &Service, method: &Method, ctx: &proc_macro2::Ident) -> TokenStream {
    let Some(handler) = &method.handler else {
        return TokenStream::new();
    };
    let cfgs = &method.cfgs;
    if let Some(error) = unsupported_kind(method) {
        return quote!(#cfgs #error);
    }
    let codegen = &service.codegen;
    let span = method.span;
    let service_var = local("service");
    let request = request_var();
    let context = context_var();
    let ident = &method.ident;
    let (share, reshare, fn_path) = match &service.host {
        Host::Wrapper { trait_ident, .. } => (
            quote!(<::std::sync::Arc<T> as ::core::clone::Clone>::clone(
                &self.inner
            )),
            quote!(<::std::sync::Arc<T> as ::core::clone::Clone>::clone(&#service_var)),
            quote!(<T as #trait_ident>::#ident),
        ),
        Host::SelfType { span, .. } => {
            // One clone of the service per handler; each request shares it through an `Arc`.
            let clone = quote_spanned!(*span=> ::core::clone::Clone::clone(self));
            (
                quote!(::std::sync::Arc::new(#clone)),
                quote!(<::std::sync::Arc<Self> as ::core::clone::Clone>::clone(&#service_var)),
                quote!(Self::#ident),
            )
        }
    };
    let (register, context_ty, target) = match &method.endpoint {
        Endpoint::Action { name } => (
            respan(quote!(#codegen::LifecycleContext::register_action), span),
            quote!(#codegen::RequestContext),
            quote!(#name),
        ),
        Endpoint::Subscription {
            topic,
            span: topic_span,
        } => {
            let mut topic = Literal::string(topic);
            topic.set_span(*topic_span);
            (
                respan(quote!(#codegen::LifecycleContext::subscribe), span),
                quote!(#codegen::EventContext),
                quote!(#topic),
            )
        }
        Endpoint::Event { .. } => return TokenStream::new(),
    };
    let request_pat = if handler.uses_request {
        quote!(#request)
    } else {
        quote!(_)
    };
    let context_pat = if handler.uses_context {
        quote!(#context)
    } else {
        quote!(_)
    };
    let request_ty = &handler.request_ty;
    let prelude = &handler.prelude;
    let args = &handler.args;
    // Spanned at the method so that "future is not `Send`" points at it.
    let call = quote_spanned! {span=>
        #register(
            #ctx,
            #target,
            move |#request_pat: #request_ty, #context_pat: #context_ty| {
                let #service_var = #reshare;
                async move {
                    #prelude
                    #fn_path(&*#service_var, #(#args),*).await
                }
            },
        )
        .await?;
    };
    quote! {
        #cfgs
        {
            let #service_var = #share;
            #call
        }
    }
}
