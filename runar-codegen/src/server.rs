//! The server side: the wrapper that hosts a trait implementation, and the `AbstractService`
//! impl whose `init` registers one handler per action and subscription.

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};

use crate::model::{Endpoint, Handler, Host, Method, Service};
use crate::{context_var, local, request_var, respan};

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
    let schema = if service.schema_messages.is_empty() {
        quote!(::core::option::Option::Some(#schema))
    } else {
        // Built once, at run time: which message types have a schema of their own is a trait
        // question, answered here by autoref on each concrete type.
        let entries = service.schema_messages.iter().map(|(name, ty, cfgs)| {
            quote! {
                #cfgs
                (#name, {
                    #[allow(unused_imports)]
                    use #codegen::{ProbeNone as _, ProbeSchema as _};
                    (&&#codegen::SchemaProbe::<#ty>::new()).message_info()
                })
            }
        });
        quote! {
            static SCHEMA: ::std::sync::OnceLock<::std::vec::Vec<u8>> =
                ::std::sync::OnceLock::new();
            ::core::option::Option::Some(
                SCHEMA
                    .get_or_init(|| #codegen::schema_with_messages(#schema, &[#(#entries),*]))
                    .as_slice(),
            )
        }
    };
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
                #schema
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
        Endpoint::Action { name } if method.kind.is_streaming() => {
            let call = stream_registration(service, method, handler, ctx, name, &reshare, &fn_path);
            return quote! {
                #cfgs
                {
                    let #service_var = #share;
                    #call
                }
            };
        }
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

/// Registers a streaming action with `register_stream`, adapting the method's shape (see
/// [`Handler`]) to the runtime's, where every stream is bidirectional: a server-streaming
/// handler reads its one request from the request stream, and a client-streaming handler's one
/// response becomes a one-item stream. A method's stream of responses is boxed on the way out,
/// so that its type no longer names the borrow of the service it was made from (the stream is
/// `'static`, but a return-position `impl Trait` captures the lifetime of `&self`).
fn stream_registration(
    service: &Service,
    method: &Method,
    handler: &Handler,
    ctx: &proc_macro2::Ident,
    name: &str,
    reshare: &TokenStream,
    fn_path: &TokenStream,
) -> TokenStream {
    let codegen = &service.codegen;
    let span = method.span;
    let service_var = local("service");
    let requests = local("requests");
    let responses = local("responses");
    let response = local("response");
    let request = request_var();
    let context = context_var();
    let kind = proc_macro2::Ident::new(method.kind.variant(), proc_macro2::Span::call_site());
    let register = respan(quote!(#codegen::LifecycleContext::register_stream), span);
    let request_ty = &handler.request_ty;
    let prelude = &handler.prelude;
    let args = &handler.args;
    let context_pat = if handler.uses_context {
        quote!(#context)
    } else {
        quote!(_)
    };
    let (requests_pat, read_request) = if method.kind.streams_requests() {
        (quote!(#request), TokenStream::new())
    } else {
        let request_pat = if handler.uses_request {
            quote!(#request)
        } else {
            quote!(_)
        };
        let message = format!(
            "`{}/{name}` is a server-streaming call and takes one request; none was sent",
            service.path
        );
        (
            quote!(mut #requests),
            quote! {
                let #request_pat = match #codegen::Streaming::message(&mut #requests).await? {
                    ::core::option::Option::Some(#request) => #request,
                    ::core::option::Option::None => {
                        return ::core::result::Result::Err(#codegen::Error::new(
                            #codegen::Code::InvalidArgument,
                            #message,
                        ));
                    }
                };
            },
        )
    };
    let call = quote_spanned!(span=> #fn_path(&*#service_var, #(#args),*).await?);
    let reply = if method.kind.streams_responses() {
        quote! {
            let #responses = #call;
            ::core::result::Result::Ok(
                ::std::boxed::Box::pin(#responses)
                    as ::core::pin::Pin<
                        ::std::boxed::Box<
                            dyn #codegen::Stream<Item = _> + ::core::marker::Send + 'static,
                        >,
                    >,
            )
        }
    } else {
        quote! {
            let #response = #call;
            ::core::result::Result::Ok(#codegen::stream_once(
                ::core::result::Result::Ok(#response),
            ))
        }
    };
    // Spanned at the method so that "future is not `Send`" points at it.
    quote_spanned! {span=>
        #register(
            #ctx,
            #name,
            #codegen::CallKind::#kind,
            move |#requests_pat: #codegen::Streaming<#request_ty>, #context_pat: #codegen::RequestContext| {
                let #service_var = #reshare;
                async move {
                    #read_request
                    #prelude
                    #reply
                }
            },
        )
        .await?;
    }
}
