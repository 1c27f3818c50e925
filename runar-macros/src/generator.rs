//! The macro's generator: the rewritten item and the parameter messages are its own; the server
//! wrapper, the `AbstractService` impl and the client come from the shared generator
//! (`runar-codegen`), filled from what the macro read. Assembled by `ToTokens` (the design of
//! tarpc's `ServiceGenerator`).

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use runar_codegen::{local, naming};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, LitStr, TraitItem};

use crate::model::{Arg, Field, Item, Kind, Method, Payload, Service};
use crate::schema;
use crate::types::{Elem, Shape};

/// Generates the code for one service.
pub(crate) struct ServiceGenerator<'a> {
    service: &'a Service,
    /// `::runar::codegen`.
    codegen: TokenStream,
    /// `"::runar::codegen::prost"`, for prost-derive's `prost_path`.
    prost_path: LitStr,
    client_ident: Ident,
    server_ident: Ident,
}

fn lit(value: &str) -> LitStr {
    LitStr::new(value, Span::call_site())
}

impl<'a> ServiceGenerator<'a> {
    pub(crate) fn new(service: &'a Service) -> Self {
        let krate = &service.krate;
        let codegen = quote!(#krate::codegen);
        let prost_path = format!("{}::codegen::prost", quote!(#krate)).replace(' ', "");
        let base = service.ident.unraw();
        ServiceGenerator {
            service,
            codegen,
            prost_path: lit(&prost_path),
            client_ident: naming::client_ident(&base.to_string()),
            server_ident: naming::server_ident(&base.to_string()),
        }
    }

    /// The annotated item, rewritten: a trait's `async fn`s become `fn .. -> impl Future + Send`
    /// and the trait gets `Send + Sync + 'static`; an impl block loses the helper attributes.
    pub(crate) fn item(&self) -> TokenStream {
        match &self.service.item {
            Item::Impl(item) => item.to_token_stream(),
            Item::Trait(item) => {
                let mut item = item.clone();
                item.colon_token.get_or_insert_with(Default::default);
                item.supertraits
                    .push(syn::parse_quote!(::core::marker::Send));
                item.supertraits
                    .push(syn::parse_quote!(::core::marker::Sync));
                item.supertraits.push(syn::parse_quote!('static));
                for trait_item in &mut item.items {
                    let TraitItem::Fn(f) = trait_item else {
                        continue;
                    };
                    if f.sig.asyncness.take().is_none() {
                        continue;
                    }
                    let output = match &f.sig.output {
                        syn::ReturnType::Type(_, ty) => ty.to_token_stream(),
                        syn::ReturnType::Default => quote!(()),
                    };
                    f.sig.output = syn::parse_quote! {
                        -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
                    };
                    if let Some(block) = f.default.take() {
                        f.default = Some(syn::parse_quote!({ async move #block }));
                    }
                }
                item.to_token_stream()
            }
        }
    }

    /// One prost message per method whose parameters need one.
    fn messages(&self) -> TokenStream {
        let Self {
            service,
            codegen,
            prost_path,
            ..
        } = self;
        let vis = &service.vis;
        let mut out = TokenStream::new();
        for method in &service.methods {
            let Payload::Synthesized(name) = method.payload(&service.ident) else {
                continue;
            };
            let cfgs = &method.cfgs;
            let doc = lit(&format!(
                "The parameters of {} as one protobuf message (`{}`): one field per parameter, \
                 numbered in parameter order.",
                self.describe(method),
                method.message_name(),
            ));
            let fields = method.fields().map(|f| {
                let ident = &f.ident;
                let ty = field_type(f);
                let attr = prost_attr(f);
                let doc = lit(&format!(
                    "The parameter `{}` (field {}).",
                    ident.unraw(),
                    f.tag
                ));
                quote! {
                    #[doc = #doc]
                    #[prost(#attr)]
                    pub #ident: #ty,
                }
            });
            out.extend(quote! {
                #(#cfgs)*
                #[doc = #doc]
                #[derive(::core::clone::Clone, ::core::cmp::PartialEq, #codegen::prost::Message)]
                #[prost(prost_path = #prost_path)]
                #vis struct #name {
                    #(#fields)*
                }
            });
        }
        out
    }

    /// The service in the shared generator's model.
    fn model(&self) -> runar_codegen::Service {
        let service = self.service;
        let vis = &service.vis;
        let host = match &service.item {
            Item::Trait(_) => {
                let trait_ident = service.ident.clone();
                let server_ident = self.server_ident.clone();
                let docs = runar_codegen::doc(&format!(
                    "Serves an implementation of [`{trait_ident}`] on a Runar node, at the path \
                     `{}`: `node.add_service({server_ident}::new(service))`.",
                    service.path
                ));
                runar_codegen::Host::Wrapper {
                    trait_ident,
                    server_ident,
                    docs,
                }
            }
            Item::Impl(item) => {
                let (impl_generics, _, where_clause) = item.generics.split_for_impl();
                runar_codegen::Host::SelfType {
                    impl_generics: impl_generics.to_token_stream(),
                    self_ty: item.self_ty.to_token_stream(),
                    where_clause: where_clause.to_token_stream(),
                    span: item.self_ty.span(),
                }
            }
        };
        let client_docs = runar_codegen::doc(&format!(
            "A typed client of the `{}` service ({}): one method per action. Calls go through a \
             node, to a local or a remote instance; the client is cheap to clone.",
            service.path, service.name
        ));
        runar_codegen::Service {
            codegen: self.codegen.clone(),
            vis: vis.to_token_stream(),
            name: service.name.clone(),
            path: service.path.clone(),
            version: service.version.clone(),
            description: service.description.clone(),
            schema: schema::file_descriptor(service),
            schema_messages: schema::messages(service),
            host,
            client_ident: self.client_ident.clone(),
            client_docs,
            methods: service.methods.iter().map(|m| self.method(m)).collect(),
        }
    }

    /// One method in the shared generator's model.
    fn method(&self, method: &Method) -> runar_codegen::Method {
        let endpoint = match &method.kind {
            Kind::Action { name } => runar_codegen::Endpoint::Action { name: name.clone() },
            Kind::Subscribe { topic } => runar_codegen::Endpoint::Subscription {
                topic: topic.value(),
                span: topic.span(),
            },
        };
        let cfgs = &method.cfgs;
        runar_codegen::Method {
            ident: method.ident.clone(),
            span: method.ident.span(),
            kind: method.call,
            endpoint,
            cfgs: quote!(#(#cfgs)*),
            handler: Some(self.handler(method)),
            client: method.is_action().then(|| self.client_method(method)),
        }
    }

    /// How the handler decodes the request into the method's arguments.
    fn handler(&self, method: &Method) -> runar_codegen::Handler {
        let request = runar_codegen::request_var();
        let context = runar_codegen::context_var();
        let payload = method.payload(&self.service.ident);
        let request_ty = match &payload {
            Payload::Unit => quote!(()),
            Payload::Direct(f) => f.ty.to_token_stream(),
            Payload::Synthesized(name) => name.to_token_stream(),
        };
        let mut bindings = Vec::new();
        let mut args = Vec::new();
        let mut uses_context = false;
        for (i, arg) in method.args.iter().enumerate() {
            match arg {
                Arg::Context => {
                    uses_context = true;
                    args.push(context.to_token_stream());
                }
                Arg::Field(f) => {
                    let var = local(&format!("arg{i}"));
                    let value = match &payload {
                        Payload::Direct(_) => request.to_token_stream(),
                        _ => {
                            let field = &f.ident;
                            quote!(#request.#field)
                        }
                    };
                    let value = self.decode_enum(f, value);
                    bindings.push(quote!(let #var = #value;));
                    args.push(var.to_token_stream());
                }
            }
        }
        runar_codegen::Handler {
            request_ty,
            uses_request: !matches!(payload, Payload::Unit),
            uses_context,
            prelude: quote!(#(#bindings)*),
            args,
        }
    }
    /// Turns a field's wire value (`i32` for enums) into the parameter's value; an unknown enum
    /// value fails the request with `InvalidArgument`.
    fn decode_enum(&self, f: &Field, value: TokenStream) -> TokenStream {
        let Elem::Enum { ty: enum_ty, proto } = &f.field.elem else {
            return value;
        };
        let codegen = &self.codegen;
        let raw = local("raw");
        let out = local("out");
        let key = local("key");
        let message = lit(&format!(
            "{{}} is not a value of the enum `{proto}` (parameter `{}`)",
            f.ident.unraw()
        ));
        let convert = |input: TokenStream| {
            quote! {{
                let #raw: i32 = #input;
                match <#enum_ty as ::core::convert::TryFrom<i32>>::try_from(#raw) {
                    ::core::result::Result::Ok(value) => value,
                    ::core::result::Result::Err(_) => {
                        return ::core::result::Result::Err(#codegen::Error::invalid_argument(
                            ::std::format!(#message, #raw),
                        ));
                    }
                }
            }}
        };
        let param_ty = &f.ty;
        match &f.field.shape {
            Shape::Single => convert(value),
            Shape::Optional => {
                let one = convert(raw.to_token_stream());
                quote! {
                    match #value {
                        ::core::option::Option::Some(#raw) => ::core::option::Option::Some(#one),
                        ::core::option::Option::None => ::core::option::Option::None,
                    }
                }
            }
            Shape::Repeated => {
                let one = convert(raw.to_token_stream());
                quote! {{
                    let mut #out: #param_ty = ::std::vec::Vec::new();
                    for #raw in #value {
                        #out.push(#one);
                    }
                    #out
                }}
            }
            Shape::Map { .. } => {
                let one = convert(raw.to_token_stream());
                quote! {{
                    let mut #out = <#param_ty as ::core::default::Default>::default();
                    for (#key, #raw) in #value {
                        #out.insert(#key, #one);
                    }
                    #out
                }}
            }
        }
    }

    /// Turns a parameter into its field's wire value (`i32` for enums).
    fn encode_enum(&self, f: &Field) -> TokenStream {
        let ident = &f.ident;
        let Elem::Enum { ty: enum_ty, .. } = &f.field.elem else {
            return ident.to_token_stream();
        };
        let value = local("value");
        let out = local("out");
        let key = local("key");
        let one = quote!(<i32 as ::core::convert::From<#enum_ty>>::from(#value));
        let field_ty = field_type(f);
        match &f.field.shape {
            Shape::Single => quote!(<i32 as ::core::convert::From<#enum_ty>>::from(#ident)),
            Shape::Optional => quote! {
                match #ident {
                    ::core::option::Option::Some(#value) => ::core::option::Option::Some(#one),
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            },
            Shape::Repeated => quote! {{
                let mut #out: #field_ty = ::std::vec::Vec::new();
                for #value in #ident {
                    #out.push(#one);
                }
                #out
            }},
            Shape::Map { .. } => quote! {{
                let mut #out = <#field_ty as ::core::default::Default>::default();
                for (#key, #value) in #ident {
                    #out.insert(#key, #one);
                }
                #out
            }},
        }
    }

    /// The client method of an action: the same parameters, sent as the action's request.
    fn client_method(&self, method: &Method) -> runar_codegen::ClientMethod {
        let full_path = match &method.kind {
            Kind::Action { name } => format!("{}/{name}", self.service.path),
            Kind::Subscribe { topic } => topic.value(),
        };
        let params: Vec<TokenStream> = if method.call.streams_requests() {
            // The stream's name; the shared emitter types it.
            method.fields().map(|f| f.ident.to_token_stream()).collect()
        } else {
            method
                .fields()
                .map(|f| {
                    let ident = &f.ident;
                    let ty = &f.ty;
                    quote!(#ident: #ty)
                })
                .collect()
        };
        let (build, request_ty, request_span) = match method.payload(&self.service.ident) {
            Payload::Unit => (quote!(()), quote!(()), Span::call_site()),
            Payload::Direct(f) => (
                f.ident.to_token_stream(),
                f.ty.to_token_stream(),
                f.ty.span(),
            ),
            Payload::Synthesized(struct_name) => {
                let fields = method.fields().map(|f| {
                    let ident = &f.ident;
                    let value = self.encode_enum(f);
                    quote!(#ident: #value)
                });
                (
                    quote!(#struct_name { #(#fields),* }),
                    struct_name.to_token_stream(),
                    Span::call_site(),
                )
            }
        };
        let docs = &method.docs;
        let allows = &method.allows;
        let call_doc = lit(&format!("Calls the action `{full_path}`."));
        let separator = if docs.is_empty() {
            quote!()
        } else {
            quote!(#[doc = ""])
        };
        let ret = &method.ret;
        runar_codegen::ClientMethod {
            docs: quote! {
                #(#docs)*
                #separator
                #[doc = #call_doc]
            },
            attrs: quote!(#(#allows)*),
            params: quote!(#(#params),*),
            build,
            request_ty,
            request_span,
            response_ty: ret.to_token_stream(),
            response_span: ret.span(),
        }
    }
    /// "the action `math/add` (`Math::add`)".
    fn describe(&self, method: &Method) -> String {
        let owner = self.service.ident.unraw();
        let rust = method.ident.unraw();
        match &method.kind {
            Kind::Action { name } => {
                format!(
                    "the action `{}/{name}` (`{owner}::{rust}`)",
                    self.service.path
                )
            }
            Kind::Subscribe { topic } => {
                format!("the event `{}` (`{owner}::{rust}`)", topic.value())
            }
        }
    }
}

/// The Rust type of a message field: the parameter's type, with prost enums as `i32`.
fn field_type(f: &Field) -> TokenStream {
    if !f.field.has_enum() {
        return f.ty.to_token_stream();
    }
    match &f.field.shape {
        Shape::Single => quote!(i32),
        Shape::Optional => quote!(::core::option::Option<i32>),
        Shape::Repeated => quote!(::std::vec::Vec<i32>),
        Shape::Map {
            btree: false,
            key_ty,
            ..
        } => quote!(::std::collections::HashMap<#key_ty, i32>),
        Shape::Map {
            btree: true,
            key_ty,
            ..
        } => quote!(::std::collections::BTreeMap<#key_ty, i32>),
    }
}

/// The contents of a field's `#[prost(...)]`.
fn prost_attr(f: &Field) -> TokenStream {
    let tag = lit(&f.tag.to_string());
    let label = match &f.field.shape {
        Shape::Single => match f.field.elem {
            Elem::Message { .. } => quote!(required,),
            _ => quote!(),
        },
        Shape::Optional => quote!(optional,),
        Shape::Repeated => quote!(repeated,),
        Shape::Map { btree, key, .. } => {
            let kind = Ident::new(if *btree { "btree_map" } else { "map" }, Span::call_site());
            let value = match &f.field.elem {
                Elem::Scalar(s) => s.prost_name().to_owned(),
                Elem::Message { .. } => "message".to_owned(),
                // An enum is an `int32` on the wire. Not telling prost-derive it is an enum keeps
                // its output free of the prelude-dependent code it generates for enums.
                Elem::Enum { .. } => "int32".to_owned(),
            };
            let spec = lit(&format!("{}, {value}", key.prost_name()));
            return quote!(#kind = #spec, tag = #tag);
        }
    };
    let kind = match &f.field.elem {
        Elem::Scalar(s) => s.prost_attr(),
        Elem::Message { .. } => quote!(message),
        Elem::Enum { .. } => quote!(int32),
    };
    quote!(#kind, #label tag = #tag)
}

impl ToTokens for ServiceGenerator<'_> {
    fn to_tokens(&self, output: &mut TokenStream) {
        let model = self.model();
        output.extend([
            self.item(),
            self.messages(),
            runar_codegen::server_wrapper(&model),
            runar_codegen::service_impl(&model),
            runar_codegen::client(&model),
        ]);
    }
}
