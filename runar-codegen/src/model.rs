//! The service model both paths fill: runar-build from protobuf descriptors, runar-macros from
//! the annotated trait or impl block. The emitters in this crate read nothing else.

use proc_macro2::{Ident, Span, TokenStream};

/// How many messages each side of a call sends (gRPC's four kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// A stream of requests, a stream of responses.
    Bidi,
}

impl CallKind {
    /// The kind of an rpc from whether its client and its server stream.
    pub fn from_streaming(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => CallKind::Unary,
            (false, true) => CallKind::ServerStreaming,
            (true, false) => CallKind::ClientStreaming,
            (true, true) => CallKind::Bidi,
        }
    }

    /// Whether either side streams.
    pub fn is_streaming(self) -> bool {
        self != CallKind::Unary
    }

    /// Whether the client sends a stream of requests (client streaming and bidirectional).
    pub fn streams_requests(self) -> bool {
        matches!(self, CallKind::ClientStreaming | CallKind::Bidi)
    }

    /// Whether the server sends a stream of responses (server streaming and bidirectional).
    pub fn streams_responses(self) -> bool {
        matches!(self, CallKind::ServerStreaming | CallKind::Bidi)
    }

    /// The variant's name (`ServerStreaming`), as `runar::codegen::CallKind` spells it.
    pub fn variant(self) -> &'static str {
        match self {
            CallKind::Unary => "Unary",
            CallKind::ServerStreaming => "ServerStreaming",
            CallKind::ClientStreaming => "ClientStreaming",
            CallKind::Bidi => "Bidi",
        }
    }

    /// `server`, `client` or `bidirectional` for a streaming kind, `unary` otherwise (as in
    /// "server streaming").
    pub fn describe(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::ServerStreaming => "server",
            CallKind::ClientStreaming => "client",
            CallKind::Bidi => "bidirectional",
        }
    }
}

/// One service, as the emitters need it.
pub struct Service {
    /// Where generated code finds the runtime: `::runar::codegen`.
    pub codegen: TokenStream,
    /// The visibility of the generated items (`pub`, `pub(crate)`).
    pub vis: TokenStream,
    /// `AbstractService::name`: `shop.Inventory` or `Math`.
    pub name: String,
    /// The path its actions and events live under (`inventory`).
    pub path: String,
    /// The version; `None` for the `CARGO_PKG_VERSION` of the crate that includes the code.
    pub version: Option<String>,
    /// A one-line description.
    pub description: String,
    /// The encoded `FileDescriptorProto` the service serves as its schema.
    pub schema: Vec<u8>,
    /// Message types the schema names by their Rust name (`Record`), each with its type: at
    /// run time, those with a `runar::codegen::MessageSchema` (`#[runar::message]`) are
    /// named by their full name and defined in the schema; each with the `#[cfg]`s of the
    /// method that names it. Empty for a `.proto` service.
    pub schema_messages: Vec<(String, TokenStream, TokenStream)>,
    /// What implements `AbstractService`.
    pub host: Host,
    /// The client's name (`MathClient`).
    pub client_ident: Ident,
    /// The client's `#[doc]` attributes.
    pub client_docs: TokenStream,
    /// Actions, events and subscriptions, in declaration order.
    pub methods: Vec<Method>,
}

/// What implements `AbstractService`.
pub enum Host {
    /// A generated wrapper (`MathServer<T: Math>`, with `new`, `from_arc`, `get_ref`) hosts an
    /// implementation of the trait `trait_ident`.
    Wrapper {
        /// The service trait (`Math`).
        trait_ident: Ident,
        /// The wrapper's name (`MathServer`).
        server_ident: Ident,
        /// The wrapper's `#[doc]` attributes.
        docs: TokenStream,
    },
    /// The user's own type implements it (`#[runar::service] impl Calc { .. }`); each handler
    /// holds one clone of it.
    SelfType {
        /// `impl<..>` generics.
        impl_generics: TokenStream,
        /// The type (`Calc`).
        self_ty: TokenStream,
        /// The where clause, if any.
        where_clause: TokenStream,
        /// Where an error about `Clone` points (the type).
        span: Span,
    },
}

/// One action, event or subscription.
pub struct Method {
    /// The Rust method name, of the handler and of the client method.
    pub ident: Ident,
    /// Where errors about the generated handler point (the user's method, or the call site).
    pub span: Span,
    /// Unary or streaming (actions only; events and subscriptions are [`CallKind::Unary`]).
    /// The kind decides the handler's registration (`register_action` or `register_stream`)
    /// and the client method's shape: see [`Handler`] and [`ClientMethod`].
    pub kind: CallKind,
    /// What it is on the node.
    pub endpoint: Endpoint,
    /// `#[cfg]` attributes, repeated on every item generated for the method.
    pub cfgs: TokenStream,
    /// The server side: how the handler decodes its request and calls the method. `None` when
    /// the service has no handler for it (an event).
    pub handler: Option<Handler>,
    /// The client side of an action; `None` for no client method.
    pub client: Option<ClientMethod>,
}

/// What a method is on the node.
pub enum Endpoint {
    /// An action at `<service path>/<name>`.
    Action {
        /// The last path segment (`get_item`).
        name: String,
    },
    /// An event published on `<service path>/<name>`: the client gets typed
    /// `publish_<name>` and `subscribe_<name>`.
    Event {
        /// The last path segment (`stock_changed`).
        name: String,
        /// The payload's Rust type.
        payload: TokenStream,
        /// `#[doc]` attributes of `publish_<name>`.
        publish_docs: TokenStream,
        /// `#[doc]` attributes of `subscribe_<name>`.
        subscribe_docs: TokenStream,
    },
    /// A subscription of the service to `topic`.
    Subscription {
        /// The topic pattern.
        topic: String,
        /// Where the topic was written.
        span: Span,
    },
}

/// How the generated handler calls the method: `|request: <request_ty>, context| { prelude;
/// method(&*service, args..).await }`. The request and the context are bound to
/// [`request_var`](crate::request_var) and [`context_var`](crate::context_var).
///
/// By [`CallKind`]: for a unary or server-streaming action the request variable holds the one
/// request (the adapter reads it from the request stream first); for a client-streaming or
/// bidirectional action it holds the `runar::codegen::Streaming<request_ty>` of requests. A
/// method of a kind that streams responses returns `Result<impl Stream<Item = Result<T>> +
/// Send + 'static>`; the others return `Result<T>`.
pub struct Handler {
    /// The Rust type the request decodes into (of each request, for a stream of them).
    pub request_ty: TokenStream,
    /// Whether `prelude` or `args` read the request.
    pub uses_request: bool,
    /// Whether `args` pass the context.
    pub uses_context: bool,
    /// Statements run before the call (field bindings); they may `return` an error.
    pub prelude: TokenStream,
    /// The arguments after the receiver.
    pub args: Vec<TokenStream>,
}

/// A typed client method: `async fn <ident>(&self, <params>) -> Result<<response_ty>>`, which
/// sends `build` as the action's request.
///
/// By [`CallKind`]: a call that streams requests takes one parameter, `<params>: impl
/// Stream<Item = <request_ty>> + Send + 'static` (`params` is then the parameter's name alone,
/// and `build` is unused); a call that streams responses returns
/// `Result<Streaming<<response_ty>>>`.
pub struct ClientMethod {
    /// `#[doc]` attributes.
    pub docs: TokenStream,
    /// Other attributes (`#[allow(..)]`).
    pub attrs: TokenStream,
    /// The parameters after `&self` (`a: f64, b: f64`); the name of the request stream
    /// (`items`) for a call that streams requests.
    pub params: TokenStream,
    /// The request, built from the parameters (unused for a call that streams requests).
    pub build: TokenStream,
    /// The request's Rust type (of each request, for a stream of them).
    pub request_ty: TokenStream,
    /// Where "not a payload" errors about the request point.
    pub request_span: Span,
    /// The response's Rust type (of each response, for a stream of them).
    pub response_ty: TokenStream,
    /// Where "not a payload" errors about the response point.
    pub response_span: Span,
}
