//! The service model: what the macro read from the trait or impl block, checked.

use proc_macro2::Span;
use quote::{ToTokens, format_ident};
use runar_codegen::{CallKind, naming};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ImplItem, ItemImpl, ItemTrait, LitStr, Pat, PatType, Path, ReturnType,
    Signature, TraitItem, Type, Visibility,
};

use crate::args::{self, Role, ServiceArgs};
use crate::types::{self, FieldType, ReturnKind};

/// Collects errors so that one expansion reports every mistake at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>, usize);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        self.1 += 1;
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// How many errors were pushed.
    pub(crate) fn count(&self) -> usize {
        self.1
    }

    pub(crate) fn push_new(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// An error covering all of `tokens` (on stable Rust, `Spanned::span` is only the first
    /// token).
    pub(crate) fn push_spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The annotated item, after the macro's helper attributes were taken out of it.
pub(crate) enum Item {
    Trait(ItemTrait),
    Impl(ItemImpl),
}

/// A service read from a trait or an impl block.
pub(crate) struct Service {
    pub(crate) item: Item,
    /// `Math` for `trait Math`, `Calc` for `impl Calc`.
    pub(crate) ident: Ident,
    /// The visibility of the generated items.
    pub(crate) vis: Visibility,
    /// The service path (`math`).
    pub(crate) path: String,
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) description: String,
    /// The path of the runar facade (`::runar`).
    pub(crate) krate: Path,
    pub(crate) methods: Vec<Method>,
}

/// One action or subscription.
pub(crate) struct Method {
    /// The Rust method name.
    pub(crate) ident: Ident,
    pub(crate) kind: Kind,
    /// The parameters after `&self`, in order.
    pub(crate) args: Vec<Arg>,
    /// Unary, or which sides stream: a `runar::Streaming<T>` parameter streams requests, a
    /// `runar::Result<impl runar::Stream<Item = runar::Result<T>> + Send + 'static>` return
    /// streams responses.
    pub(crate) call: CallKind,
    /// The `T` of `runar::Result<T>` (of each response, for a stream of them).
    pub(crate) ret: Type,
    pub(crate) ret_kind: ReturnKind,
    pub(crate) docs: Vec<Attribute>,
    pub(crate) cfgs: Vec<Attribute>,
    /// `#[allow(..)]`s, repeated on the client method.
    pub(crate) allows: Vec<Attribute>,
}

pub(crate) enum Kind {
    /// An action; `name` is its last path segment (`add` in `math/add`).
    Action { name: String },
    /// A subscription to `topic`.
    Subscribe { topic: LitStr },
}

/// One parameter after `&self`.
pub(crate) enum Arg {
    /// `ctx: RequestContext` (actions) or `ctx: EventContext` (subscriptions): the handler's
    /// context, not part of the message.
    Context,
    /// A message field.
    Field(Box<Field>),
}

pub(crate) struct Field {
    /// The parameter's name, which names the field.
    pub(crate) ident: Ident,
    /// The parameter's type as written; for a `runar::Streaming<T>` parameter, the `T` of each
    /// request.
    pub(crate) ty: Type,
    pub(crate) field: FieldType,
    /// The field number: the parameter's position among the message parameters, from 1.
    pub(crate) tag: u32,
}

/// How a method's parameters travel.
pub(crate) enum Payload<'a> {
    /// No parameters: `()`, an empty message.
    Unit,
    /// One parameter whose Rust type is itself a prost message with the right encoding (a
    /// message, or a scalar prost wraps as field 1): sent as itself.
    Direct(&'a Field),
    /// A generated message with one field per parameter.
    Synthesized(Ident),
}

impl Method {
    pub(crate) fn fields(&self) -> impl Iterator<Item = &Field> {
        self.args.iter().filter_map(|a| match a {
            Arg::Field(f) => Some(&**f),
            Arg::Context => None,
        })
    }

    pub(crate) fn is_action(&self) -> bool {
        matches!(self.kind, Kind::Action { .. })
    }

    /// The rpc name in the schema (`Add` for the action `add`), or for a subscription the
    /// CamelCase method name.
    pub(crate) fn camel_name(&self) -> String {
        match &self.kind {
            Kind::Action { name } => naming::upper_camel_case(name),
            Kind::Subscribe { .. } => naming::upper_camel_case(&self.ident.unraw().to_string()),
        }
    }

    /// The name of the message that carries the parameters (`AddRequest`, `OnComputedEvent`).
    pub(crate) fn message_name(&self) -> String {
        let suffix = if self.is_action() { "Request" } else { "Event" };
        format!("{}{suffix}", self.camel_name())
    }

    pub(crate) fn payload(&self, service: &Ident) -> Payload<'_> {
        let mut fields = self.fields();
        match (fields.next(), fields.next()) {
            (None, _) => Payload::Unit,
            (Some(f), None) if f.field.is_direct_payload() => Payload::Direct(f),
            _ => Payload::Synthesized(format_ident!(
                "{}{}",
                service.unraw(),
                self.message_name(),
                span = self.ident.span()
            )),
        }
    }
}

impl Service {
    pub(crate) fn from_trait(
        args: ServiceArgs,
        mut item: ItemTrait,
        errors: &mut Errors,
    ) -> Service {
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.push_spanned(
                &item.generics,
                "a runar service trait cannot be generic; remove the generic parameters",
            );
        }
        let mut methods = Vec::new();
        for trait_item in &mut item.items {
            let TraitItem::Fn(f) = trait_item else {
                errors.push_spanned(
                    &*trait_item,
                    "a runar service trait holds only `async fn` methods; move this item elsewhere",
                );
                continue;
            };
            let role = match args::take_role(&mut f.attrs) {
                Ok(Some((role, _))) => role,
                Ok(None) => Role::Action { name: None },
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(m) = read_method(&mut f.sig, &f.attrs, role, &[], errors) {
                methods.push(m);
            }
        }
        let ident = item.ident.clone();
        let vis = args.vis.clone().unwrap_or_else(|| item.vis.clone());
        let description = args
            .description
            .clone()
            .unwrap_or_else(|| args::doc_summary(&item.attrs));
        Service::finish(
            args,
            Item::Trait(item),
            ident,
            vis,
            description,
            methods,
            errors,
        )
    }

    pub(crate) fn from_impl(args: ServiceArgs, mut item: ItemImpl, errors: &mut Errors) -> Service {
        if let Some((_, path, _)) = &item.trait_ {
            errors.push_spanned(
                path,
                "`#[runar::service]` goes on a trait or on an inherent impl block \
                 (`impl Calc { .. }`), not on a trait impl",
            );
        }
        let ident = match types::last_segment(&item.self_ty) {
            Some((_, _, p)) => p.path.segments.last().map(|s| s.ident.clone()),
            None => None,
        };
        let ident = ident.unwrap_or_else(|| {
            errors.push_spanned(
                &item.self_ty,
                "`#[runar::service]` needs a named type here (`impl Calc { .. }`)",
            );
            Ident::new("Service", item.self_ty.span())
        });
        let generic_types: Vec<Ident> = item
            .generics
            .type_params()
            .map(|p| p.ident.clone())
            .collect();
        let mut methods = Vec::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(f) = impl_item else {
                continue;
            };
            let role = match args::take_role(&mut f.attrs) {
                Ok(Some((role, _))) => role,
                Ok(None) => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(m) = read_method(&mut f.sig, &f.attrs, role, &generic_types, errors) {
                methods.push(m);
            }
        }
        let vis = args.vis.clone().unwrap_or_else(|| syn::parse_quote!(pub));
        let description = args
            .description
            .clone()
            .unwrap_or_else(|| args::doc_summary(&item.attrs));
        Service::finish(
            args,
            Item::Impl(item),
            ident,
            vis,
            description,
            methods,
            errors,
        )
    }

    fn finish(
        args: ServiceArgs,
        item: Item,
        ident: Ident,
        vis: Visibility,
        description: String,
        methods: Vec<Method>,
        errors: &mut Errors,
    ) -> Service {
        let path = match &args.path {
            Some(lit) => {
                let path = lit.value();
                if let Err(why) = check_service_path(&path) {
                    errors.push_new(lit.span(), why);
                }
                path
            }
            None => naming::snake_case(&ident.unraw().to_string()),
        };
        // Two actions may not share a name: the second would replace the first.
        let mut seen: Vec<(&str, &Ident)> = Vec::new();
        for m in &methods {
            if let Kind::Action { name } = &m.kind {
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                    errors.push_new(
                        m.ident.span(),
                        format!(
                            "duplicate action name `{name}`: `{first}` is already the action \
                             `{path}/{name}`; give one of them another name with \
                             `#[action(\"other_name\")]`"
                        ),
                    );
                } else {
                    seen.push((name, &m.ident));
                }
                let client_name = m.ident.unraw().to_string();
                if naming::CLIENT_RESERVED.contains(&client_name.as_str()) {
                    errors.push_new(
                        m.ident.span(),
                        format!(
                            "method name conflicts with the generated `{ident}Client::{client_name}`; \
                             rename the method (the action name can stay: \
                             `#[action(\"{client_name}\")]`)"
                        ),
                    );
                }
            }
        }
        Service {
            item,
            name: args.name.unwrap_or_else(|| ident.unraw().to_string()),
            ident,
            vis,
            path,
            version: args.version,
            description,
            krate: args.krate.unwrap_or_else(|| syn::parse_quote!(::runar)),
            methods,
        }
    }
}

/// Reads and checks one method. Takes `#[runar(...)]` out of its parameters.
fn read_method(
    sig: &mut Signature,
    attrs: &[Attribute],
    role: Role,
    generic_types: &[Ident],
    errors: &mut Errors,
) -> Option<Method> {
    let errors_before = errors.count();
    check_signature(sig, errors);
    let kind = read_kind(sig, role, errors);
    let is_action = matches!(kind, Kind::Action { .. });
    check_receiver(sig, errors);
    let (args, streams_requests) = read_params(sig, is_action, generic_types, errors);
    let (ret, ret_kind, streams_responses) = read_return(sig, is_action, errors)?;
    (errors.count() == errors_before).then(|| Method {
        ident: sig.ident.clone(),
        kind,
        args,
        call: CallKind::from_streaming(streams_requests, streams_responses),
        ret,
        ret_kind,
        docs: args::docs(attrs),
        cfgs: args::cfgs(attrs),
        allows: args::allows(attrs),
    })
}

/// Refuses what a service method cannot be: not async, const, unsafe, extern, generic,
/// variadic.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push_new(
            sig.fn_token.span,
            "runar service methods must be `async fn`; add `async`".to_owned(),
        );
    }
    if let Some(c) = &sig.constness {
        errors.push_new(c.span, "a service method cannot be `const`".to_owned());
    }
    if let Some(u) = &sig.unsafety {
        errors.push_new(u.span, "a service method cannot be `unsafe`".to_owned());
    }
    if let Some(abi) = &sig.abi {
        errors.push_spanned(abi, "a service method cannot be `extern`".to_owned());
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push_spanned(
            &sig.generics,
            "runar service methods cannot be generic: every parameter becomes a protobuf \
             field of one fixed type; remove the generic parameters"
                .to_owned(),
        );
    }
    if let Some(v) = &sig.variadic {
        errors.push_spanned(v, "a service method cannot be variadic".to_owned());
    }
}

/// The method's kind from its role: an action (its name checked) or a subscription (its topic
/// checked).
fn read_kind(sig: &Signature, role: Role, errors: &mut Errors) -> Kind {
    match role {
        Role::Action { name } => {
            let (name, span) = match name {
                Some(lit) => (lit.value(), lit.span()),
                None => (sig.ident.unraw().to_string(), sig.ident.span()),
            };
            if !naming::is_snake_case(&name) {
                errors.push_new(
                    span,
                    format!(
                        "action name `{name}` is not snake_case: use lowercase words joined by \
                         `_`, like `get_item` (an action maps to an rpc: `get_item` is `GetItem`)"
                    ),
                );
            }
            Kind::Action { name }
        }
        Role::Subscribe { topic } => {
            if topic.value().trim().is_empty() {
                errors.push_new(topic.span(), "the topic is empty".to_owned());
            }
            Kind::Subscribe { topic }
        }
    }
}

/// Requires `&self` as the first parameter.
fn check_receiver(sig: &Signature, errors: &mut Errors) {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => {
            errors.push_spanned(
                r,
                "runar service methods take `&self` (a service serves concurrent requests); \
                 use `&self`"
                    .to_owned(),
            );
        }
        _ => {
            errors.push_new(
                sig.paren_token.span.join(),
                "runar service methods take `&self`; add `&self` as the first parameter".to_owned(),
            );
        }
    }
}

/// The parameters after `&self`: the context, and one protobuf field each (tags in order), and
/// whether they are one stream of requests (a `runar::Streaming<T>` parameter). Takes
/// `#[runar(...)]` out of them.
fn read_params(
    sig: &mut Signature,
    is_action: bool,
    generic_types: &[Ident],
    errors: &mut Errors,
) -> (Vec<Arg>, bool) {
    let (context_name, other_context) = if is_action {
        ("RequestContext", "EventContext")
    } else {
        ("EventContext", "RequestContext")
    };
    let mut args = Vec::new();
    let mut tag = 0u32;
    let mut has_context = false;
    // The `runar::Streaming<T>` parameter, if any.
    let mut stream: Option<Type> = None;
    let mut has_field = false;
    for input in sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = input else {
            continue; // the receiver, checked above
        };
        let options = match args::take_param_options(&mut pt.attrs) {
            Ok(o) => o,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let ident = match &*pt.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push_spanned(
                    other,
                    "name this parameter with a plain identifier: it names a protobuf field"
                        .to_owned(),
                );
                continue;
            }
        };
        let context_type = types::last_segment(&pt.ty).map(|(name, _, _)| name);
        if context_type.as_deref() == Some(context_name) {
            if has_context {
                errors.push_spanned(
                    &pt.ty,
                    format!("one `{context_name}` parameter is enough; remove this one"),
                );
            }
            has_context = true;
            args.push(Arg::Context);
            continue;
        }
        if context_type.as_deref() == Some(other_context) {
            errors.push_spanned(
                &pt.ty,
                format!(
                    "{} receive a `{context_name}`, not a `{other_context}`",
                    if is_action {
                        "actions"
                    } else {
                        "subscriptions"
                    }
                ),
            );
            continue;
        }
        let streamed = match types::last_segment(&pt.ty) {
            Some((name, elems, _)) if name == "Streaming" => match elems.as_slice() {
                [elem] => Some((*elem).clone()),
                _ => {
                    errors.push_spanned(
                        &pt.ty,
                        "a stream of requests is `runar::Streaming<T>`, with one type `T`",
                    );
                    continue;
                }
            },
            _ => None,
        };
        if let Some(elem) = &streamed {
            if !is_action {
                errors.push_spanned(
                    &pt.ty,
                    "a subscription receives one event at a time; a `runar::Streaming<T>` \
                     parameter makes an action a client-streaming call",
                );
                continue;
            }
            if stream.is_some() || has_field {
                errors.push_spanned(
                    &pt.ty,
                    "a `runar::Streaming<T>` parameter is the whole request of a \
                     client-streaming action: it can only come with a `RequestContext`; put \
                     other values into the messages of the stream",
                );
                continue;
            }
            stream = Some((*pt.ty).clone());
            let mut elem_param = pt.clone();
            *elem_param.ty = elem.clone();
            let Some(field) = field_param(&elem_param, ident, &options, generic_types, 1, errors)
            else {
                continue;
            };
            if !field.field.is_direct_payload() {
                errors.push_spanned(
                    elem,
                    format!(
                        "unsupported stream item type `{}`: each message of a stream is a prost \
                         message, a scalar (f64, f32, i32, i64, u32, u64, bool, String, \
                         Vec<u8>, Bytes) or (); wrap anything else in a prost message",
                        types::display(elem)
                    ),
                );
                continue;
            }
            tag = 1;
            args.push(Arg::Field(Box::new(field)));
            continue;
        }
        if let Some(streamed) = &stream {
            errors.push_spanned(
                &pt.ty,
                format!(
                    "`{}` is the whole request of this client-streaming action: it can only \
                     come with a `RequestContext`; put this value into the messages of the stream",
                    types::display(streamed)
                ),
            );
            continue;
        }
        has_field = true;
        if let Some(field) = field_param(pt, ident, &options, generic_types, tag + 1, errors) {
            tag += 1;
            args.push(Arg::Field(Box::new(field)));
        }
    }
    (args, stream.is_some())
}

/// The protobuf field of the parameter `ident: pt.ty`, with `tag`.
fn field_param(
    pt: &PatType,
    ident: Ident,
    options: &types::ParamOptions,
    generic_types: &[Ident],
    tag: u32,
    errors: &mut Errors,
) -> Option<Field> {
    if let Some(generic) = generic_types.iter().find(|g| mentions(&pt.ty, g)) {
        errors.push_spanned(
            &pt.ty,
            format!(
                "unsupported parameter type `{}`: the impl's generic type `{generic}` has no \
                 fixed protobuf form; use a concrete type",
                types::display(&pt.ty)
            ),
        );
        return None;
    }
    match types::classify_param(&pt.ty, options) {
        Ok(field) => Some(Field {
            ident,
            ty: (*pt.ty).clone(),
            field,
            tag,
        }),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// The `T` of `runar::Result<T>` and how it travels, and whether it is a stream of `T`s
/// (`runar::Result<impl runar::Stream<Item = runar::Result<T>> + Send + 'static>`); `None`
/// (with an error) when the return type is not a supported `runar::Result`.
fn read_return(
    sig: &Signature,
    is_action: bool,
    errors: &mut Errors,
) -> Option<(Type, ReturnKind, bool)> {
    let mut streams = false;
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Ok(ret) => ret,
            Err(e) => {
                errors.push(e);
                return None;
            }
        },
        ReturnType::Default => {
            errors.push_new(
                sig.paren_token.span.close(),
                "runar service methods return `runar::Result<T>`; add `-> runar::Result<()>`"
                    .to_owned(),
            );
            return None;
        }
    };
    let ret = match stream_item(&ret) {
        Ok(Some(item)) if is_action => {
            streams = true;
            item
        }
        Ok(Some(_)) => {
            errors.push_spanned(
                &ret,
                "a subscription returns `runar::Result<()>`, not a stream".to_owned(),
            );
            return None;
        }
        Ok(None) => ret,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let ret_kind = if is_action {
        match types::classify_return(&ret) {
            Ok(k) => k,
            Err(e) => {
                errors.push(e);
                return None;
            }
        }
    } else {
        if !matches!(types::peel(&ret), Type::Tuple(t) if t.elems.is_empty()) {
            errors.push_spanned(
                &ret,
                "a subscription returns `runar::Result<()>`; publish a result as an event instead"
                    .to_owned(),
            );
        }
        ReturnKind::WellKnown(types::EMPTY)
    };
    Some((ret, ret_kind, streams))
}

/// For `impl Stream<Item = runar::Result<T>> + Send + 'static` (the `Stream` named by any path
/// ending in `Stream`), `T`; `None` for a type that is not an `impl Trait`; an error for an
/// `impl Stream` of another shape.
fn stream_item(ty: &Type) -> syn::Result<Option<Type>> {
    const SHAPE: &str = "a stream of responses is returned as \
        `runar::Result<impl runar::Stream<Item = runar::Result<T>> + Send + 'static>`";
    let Type::ImplTrait(imp) = types::peel(ty) else {
        return Ok(None);
    };
    let mut item = None;
    let mut send = false;
    let mut is_static = false;
    for bound in &imp.bounds {
        match bound {
            syn::TypeParamBound::Trait(t) => {
                let Some(last) = t.path.segments.last() else {
                    continue;
                };
                if last.ident == "Send" {
                    send = true;
                } else if last.ident == "Stream" {
                    let syn::PathArguments::AngleBracketed(a) = &last.arguments else {
                        return Err(syn::Error::new_spanned(ty, SHAPE));
                    };
                    item = a.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::AssocType(assoc) if assoc.ident == "Item" => {
                            Some(assoc.ty.clone())
                        }
                        _ => None,
                    });
                }
            }
            syn::TypeParamBound::Lifetime(l) if l.ident == "static" => is_static = true,
            _ => {}
        }
    }
    let Some(item) = item else {
        return Err(syn::Error::new_spanned(
            ty,
            format!("unsupported return type `{}`: {SHAPE}", types::display(ty)),
        ));
    };
    if !(send && is_static) {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "the stream must be `Send + 'static` (the node polls it on its own task): {SHAPE}"
            ),
        ));
    }
    // `Item = runar::Result<T>`: each message may be an error, which ends the stream.
    result_ok_type(&item).map(Some).map_err(|_| {
        syn::Error::new_spanned(
            &item,
            format!(
                "each item of a stream of responses is a `runar::Result<T>` (an error ends the \
                 stream): write `Item = runar::Result<{}>`",
                types::display(&item)
            ),
        )
    })
}

/// True when `ty` names the identifier `ident` anywhere.
fn mentions(ty: &Type, ident: &Ident) -> bool {
    fn walk(tokens: proc_macro2::TokenStream, ident: &Ident) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(i) => i == *ident,
            proc_macro2::TokenTree::Group(g) => walk(g.stream(), ident),
            _ => false,
        })
    }
    walk(ty.to_token_stream(), ident)
}

/// `T` in `Result<T>` / `runar::Result<T>` / `Result<T, runar::Error>`; an error at the return
/// type for anything else (a bare `T`, `Result<T, String>`).
fn result_ok_type(ty: &Type) -> syn::Result<Type> {
    let ok = match types::last_segment(ty) {
        Some((name, args, _)) if name == "Result" => {
            args.first().map(|t| (*t, args.get(1).copied()))
        }
        _ => None,
    };
    let Some((ok, error)) = ok else {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "runar service methods return `runar::Result<T>`; write `runar::Result<{}>`",
                types::display(ty)
            ),
        ));
    };
    // The error type can only be checked by name here; `runar::Error` (or a re-export of it
    // named `Error`) passes, and the compiler checks the rest at the method.
    if let Some(error) = error {
        if types::last_segment(error).is_none_or(|(name, _, _)| name != "Error") {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "runar service methods return `runar::Result<T>`, whose error is \
                     `runar::Error`, not `{}`; write `runar::Result<{}>` and fail with \
                     `runar::Error::new(runar::Code::…, message)`",
                    types::display(error),
                    types::display(ok)
                ),
            ));
        }
    }
    Ok((*ok).clone())
}

fn check_service_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the service path is empty; use a name like `math`".to_owned());
    }
    for segment in path.split('/') {
        let valid = !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "invalid service path `{path}`: use `/`-separated segments of letters, digits, \
                 `_` and `-` (like `math` or `shop/inventory`)"
            ));
        }
    }
    Ok(())
}
