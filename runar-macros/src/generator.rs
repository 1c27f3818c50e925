//! The code generator: one method per generated item, assembled by `ToTokens` (the design of
//! tarpc's `ServiceGenerator`).

use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
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

/// A local variable of the generated code, invisible to the user's code (mixed-site hygiene).
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// `tokens` with every span set to `span`, so that an error about the whole expression points
/// at the user's code rather than at the attribute.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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
            client_ident: format_ident!("{}Client", base),
            server_ident: format_ident!("{}Server", base),
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

    /// `MathServer<T>`, which serves a trait implementation (trait form only).
    fn server_struct(&self) -> TokenStream {
        let Item::Trait(_) = &self.service.item else {
            return TokenStream::new();
        };
        let Self { server_ident, .. } = self;
        let vis = &self.service.vis;
        let trait_ident = &self.service.ident;
        let doc = lit(&format!(
            "Serves an implementation of [`{trait_ident}`] on a Runar node, at the path `{}`: \
             `node.add_service({server_ident}::new(service))`.",
            self.service.path
        ));
        quote! {
            #[doc = #doc]
            #vis struct #server_ident<T> {
                inner: ::std::sync::Arc<T>,
            }

            #[allow(dead_code)]
            impl<T: #trait_ident> #server_ident<T> {
                /// Wraps an implementation.
                #vis fn new(inner: T) -> Self {
                    Self::from_arc(::std::sync::Arc::new(inner))
                }

                /// Wraps an implementation that is shared with other code.
                #vis fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                    Self { inner }
                }

                /// The wrapped implementation.
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
                    f.debug_struct(::core::stringify!(#server_ident)).finish_non_exhaustive()
                }
            }
        }
    }

    /// `impl AbstractService`: metadata, the schema, and `init`, which registers one handler
    /// per action and subscription.
    fn service_impl(&self) -> TokenStream {
        let Self {
            service, codegen, ..
        } = self;
        let name = lit(&service.name);
        let path = lit(&service.path);
        let description = lit(&service.description);
        let version = match &service.version {
            Some(v) => {
                let v = lit(v);
                quote!(#v)
            }
            None => quote! {
                match ::core::option_env!("CARGO_PKG_VERSION") {
                    ::core::option::Option::Some(version) => version,
                    ::core::option::Option::None => "0.0.0",
                }
            },
        };
        let schema = Literal::byte_string(&schema::file_descriptor(service));
        let ctx = local("ctx");
        let registrations = service.methods.iter().map(|m| self.registration(m, &ctx));
        let header = match &service.item {
            Item::Trait(_) => {
                let server = &self.server_ident;
                let trait_ident = &service.ident;
                quote!(impl<T: #trait_ident> #codegen::AbstractService for #server<T>)
            }
            Item::Impl(item) => {
                let (impl_generics, _, where_clause) = item.generics.split_for_impl();
                let self_ty = &item.self_ty;
                quote!(impl #impl_generics #codegen::AbstractService for #self_ty #where_clause)
            }
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
    fn registration(&self, method: &Method, ctx: &Ident) -> TokenStream {
        let codegen = &self.codegen;
        let service_var = local("service");
        let request = local("request");
        let context = local("context");
        let ident = &method.ident;
        let (share, reshare, fn_path, receiver) = match &self.service.item {
            Item::Trait(_) => {
                let trait_ident = &self.service.ident;
                (
                    quote!(<::std::sync::Arc<T> as ::core::clone::Clone>::clone(
                        &self.inner
                    )),
                    quote!(<::std::sync::Arc<T> as ::core::clone::Clone>::clone(&#service_var)),
                    quote!(<T as #trait_ident>::#ident),
                    quote!(&*#service_var),
                )
            }
            Item::Impl(item) => {
                // One clone of the service per handler; each request shares it through an `Arc`.
                let clone = quote_spanned!(item.self_ty.span()=> ::core::clone::Clone::clone(self));
                (
                    quote!(::std::sync::Arc::new(#clone)),
                    quote!(<::std::sync::Arc<Self> as ::core::clone::Clone>::clone(&#service_var)),
                    quote!(Self::#ident),
                    quote!(&*#service_var),
                )
            }
        };
        let payload = method.payload(&self.service.ident);
        let (request_pat, request_ty) = match &payload {
            Payload::Unit => (quote!(_), quote!(())),
            Payload::Direct(f) => (request.to_token_stream(), f.ty.to_token_stream()),
            Payload::Synthesized(name) => (request.to_token_stream(), name.to_token_stream()),
        };
        let mut bindings = Vec::new();
        let mut call_args = Vec::new();
        let mut uses_context = false;
        for (i, arg) in method.args.iter().enumerate() {
            match arg {
                Arg::Context => {
                    uses_context = true;
                    call_args.push(context.to_token_stream());
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
                    call_args.push(var.to_token_stream());
                }
            }
        }
        let context_pat = if uses_context {
            context.to_token_stream()
        } else {
            quote!(_)
        };
        let (register, context_ty, target) = match &method.kind {
            Kind::Action { name } => (
                respan(
                    quote!(#codegen::LifecycleContext::register_action),
                    ident.span(),
                ),
                quote!(#codegen::RequestContext),
                lit(name),
            ),
            Kind::Subscribe { topic } => (
                respan(quote!(#codegen::LifecycleContext::subscribe), ident.span()),
                quote!(#codegen::EventContext),
                topic.clone(),
            ),
        };
        // Spanned at the method so that "future is not `Send`" points at it.
        let handler = quote_spanned! {ident.span()=>
            async move {
                #(#bindings)*
                #fn_path(#receiver, #(#call_args),*).await
            }
        };
        let closure = quote_spanned! {ident.span()=>
            move |#request_pat: #request_ty, #context_pat: #context_ty| {
                let #service_var = #reshare;
                #handler
            }
        };
        let call = quote_spanned! {ident.span()=>
            #register(#ctx, #target, #closure).await?;
        };
        let cfgs = &method.cfgs;
        quote! {
            #(#cfgs)*
            {
                let #service_var = #share;
                #call
            }
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

    /// `MathClient`: a typed stub with one method per action.
    fn client(&self) -> TokenStream {
        let Self {
            service,
            codegen,
            client_ident,
            ..
        } = self;
        let vis = &service.vis;
        let doc = lit(&format!(
            "A typed client of the `{}` service ({}): one method per action. Calls go through a \
             node, to a local or a remote instance; the client is cheap to clone.",
            service.path, service.name
        ));
        let methods = service
            .methods
            .iter()
            .filter(|m| m.is_action())
            .map(|m| self.client_method(m));
        quote! {
            #[doc = #doc]
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

                /// Sets the timeout of every call this client makes (the node's request
                /// timeout otherwise).
                #vis fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                    self.options = self.options.with_timeout(timeout);
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

    fn client_method(&self, method: &Method) -> TokenStream {
        let codegen = &self.codegen;
        let vis = &self.service.vis;
        let Kind::Action { name } = &method.kind else {
            return TokenStream::new();
        };
        let full_path = lit(&format!("{}/{name}", self.service.path));
        let request = local("request");
        let params = method.fields().map(|f| {
            let ident = &f.ident;
            let ty = &f.ty;
            quote!(#ident: #ty)
        });
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
        let ident = &method.ident;
        let ret = &method.ret;
        let docs = &method.docs;
        let cfgs = &method.cfgs;
        let allows = &method.allows;
        let call_doc = lit(&format!("Calls the action `{}`.", full_path.value()));
        let separator = if docs.is_empty() {
            quote!()
        } else {
            quote!(#[doc = ""])
        };
        // `Node::request_with`, in two steps so that a type that is not a message is reported
        // at the parameter or at the return type.
        let new_value = respan(quote!(#codegen::Value::new::<#request_ty>), request_span);
        let into_typed = respan(quote!(#codegen::Value::into_typed::<#ret>), ret.span());
        let response = local("response");
        quote! {
            #(#cfgs)*
            #(#docs)*
            #separator
            #[doc = #call_doc]
            #(#allows)*
            #vis async fn #ident(&self, #(#params),*) -> #codegen::Result<#ret> {
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
        output.extend([
            self.item(),
            self.messages(),
            self.server_struct(),
            self.service_impl(),
            self.client(),
        ]);
    }
}
