//! A gRPC gateway for a Runar [`Node`]: any gRPC client (Python, Go, grpcurl, …) calls every
//! service the node can reach, local or on its peers, `.proto` or macro, at
//! `/{package}.{Service}/{Method}`, the names from the service's schema.
//!
//! ```no_run
//! # async fn run(node: runar_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = runar_grpc::Gateway::new(node.clone());
//! let addr = gateway.bind("127.0.0.1:50051".parse()?).await?; // port 0 works
//! println!("gRPC on {addr}");
//! gateway.serve().await?; // until the node stops or `gateway.shutdown()`
//! # Ok(())
//! # }
//! ```
//!
//! - **All four call kinds**: a unary rpc is a [`Node::request_value`], a server, client or
//!   bidirectional stream a [`Node::request_stream_value`], as the rpc's schema says.
//! - **Pass-through**: a message's protobuf bytes go to the node untouched
//!   (`Value::from_encoded`), and the replies' bytes come back as the node has them; the
//!   gateway decodes neither (but for the labelled fields of a message that has some).
//! - **Deadlines**: `grpc-timeout` becomes the Runar call's deadline (for a stream, the whole
//!   call's), less [`GatewayConfig::deadline_margin`]; without one, a unary call has the node's
//!   request timeout and a stream none.
//! - **Errors**: a Runar [`Code`] becomes the gRPC status code of the same name, with the
//!   error's message, mid-stream too (the replies before it are delivered first).
//! - **Cancellation**: a client that cancels (or goes away) drops the Runar call, which
//!   cancels the handler, on a peer too. A client stream that breaks (a message over
//!   [`GatewayConfig::max_message_size`], a reset) fails the call with that status; the handler
//!   never sees it as a clean end of the requests.
//! - **Metadata**: `traceparent` and `tracestate` cross (the W3C trace context); other headers
//!   do not.
//! - **Sealed fields**: a reply's labelled fields (`[(runar.label) = "user"]`) are opened with
//!   the gateway node's keys and a request's sealed, or both cross as envelopes that
//!   reflection types `bytes`, as [`GatewayConfig::sealed_fields`] says ([`SealedFields`]).
//!   A field the gateway cannot open fails the call with `PERMISSION_DENIED`, never a default.
//! - **Reflection**: gRPC server reflection v1 and v1alpha, built from the same schemas.
//! - **Current**: what is served is rebuilt when the node's services or peers change.
//!
//! Served: the services of the node's default network.

mod call;
mod catalog;
mod codec;
pub mod schema;
mod sealed;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use runar_runtime::{CallKind, Code, Metadata, Node, RequestOptions, TRACEPARENT};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::Grpc;
use tower_service::Service;

use call::Call;
use catalog::{BoxFuture, Table};
use codec::PassThrough;

pub use tonic::transport::{Identity, ServerTlsConfig};

/// The W3C trace-state header, which crosses with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// Errors of the gateway's own life (binding, serving); calls fail with a gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The listener could not be bound.
    #[error("cannot bind the gRPC gateway to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `serve` was called before `bind`, or twice.
    #[error("the gRPC gateway is not bound (call `bind` before `serve`, once)")]
    NotBound,
    /// The TLS configuration was refused, or the server failed.
    #[error("the gRPC gateway's server failed: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// What the gateway does with labelled (sealed) fields, `[(runar.label) = "user"]`: see
/// [`GatewayConfig::sealed_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SealedFields {
    /// The gateway node opens every labelled field of a reply, and the client gets the plain
    /// value in the field's declared type, as the schema (and reflection) says. A field it
    /// cannot open (it holds no key for the label, or the sender held none and redacted it)
    /// fails the call with `PERMISSION_DENIED` naming the field, never an empty or default
    /// value in its place. A request's labelled fields, in clear from the client, are sealed
    /// by the gateway node (it is the mesh's boundary) to the label's key; with no key to seal
    /// to, the call fails with `FAILED_PRECONDITION` naming the field, before it is sent.
    #[default]
    Open,
    /// Labelled fields cross as their envelopes, both ways: reflection serves each labelled
    /// field as `bytes`, so a client decodes a reply without error and gets the envelope
    /// (which it can send back in a request unchanged, for a node holding the label to
    /// open). The gateway node opens and seals nothing.
    PassThrough,
}

/// The gateway's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The largest request or reply message, in bytes (default 4 MiB, as a Runar node's
    /// `max_message_size`); a larger one fails the call with `OUT_OF_RANGE` (tonic's code
    /// for it), a request in a client stream too.
    pub max_message_size: usize,
    /// TLS on the listener (default none: plain HTTP/2).
    pub tls: Option<ServerTlsConfig>,
    /// How much shorter than the client's `grpc-timeout` the Runar call's deadline is
    /// (default 20 ms): the HTTP/2 server runs its own timer for `grpc-timeout` and answers
    /// `CANCELLED` when it fires, so the Runar call must expire first for the client to get
    /// `DEADLINE_EXCEEDED`.
    pub deadline_margin: Duration,
    /// Whether accepted connections set `TCP_NODELAY` (default `true`): without it the kernel
    /// holds a small reply back until the previous one is acknowledged (Nagle's algorithm),
    /// which cost a third of the calls per second at 64 calls in flight.
    pub tcp_nodelay: bool,
    /// What labelled (sealed) fields become (default [`SealedFields::Open`]: opened with the
    /// gateway node's keys, in their declared types).
    pub sealed_fields: SealedFields,
    /// The most calls one client connection may have open at once (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, default 128): further calls wait on the client's side
    /// until one ends, so one client's idle streaming calls cannot take every stream the
    /// serving node grants the gateway.
    pub max_concurrent_streams: u32,
    /// How often an idle client connection is pinged (HTTP/2 PING, default 30 s); a client that
    /// does not answer within [`keepalive_timeout`](Self::keepalive_timeout) is disconnected,
    /// and its calls with it. `None`: never pinged.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered (default 20 s).
    pub keepalive_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_message_size: 4 * 1024 * 1024,
            tls: None,
            deadline_margin: Duration::from_millis(20),
            tcp_nodelay: true,
            sealed_fields: SealedFields::Open,
            max_concurrent_streams: 128,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl GatewayConfig {
    /// Sets the largest request or reply message.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Serves TLS with this certificate chain and key (PEM), rustls with ring.
    pub fn with_tls_identity(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        self.tls = Some(ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)));
        self
    }

    /// Serves TLS as `tls` says.
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets how much shorter than `grpc-timeout` the Runar call's deadline is.
    pub fn with_deadline_margin(mut self, margin: Duration) -> Self {
        self.deadline_margin = margin;
        self
    }

    /// Sets whether accepted connections set `TCP_NODELAY`.
    pub fn with_tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.tcp_nodelay = nodelay;
        self
    }

    /// Sets what labelled (sealed) fields become.
    pub fn with_sealed_fields(mut self, sealed_fields: SealedFields) -> Self {
        self.sealed_fields = sealed_fields;
        self
    }

    /// Sets the most calls one client connection may have open at once (at least 1).
    pub fn with_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams.max(1);
        self
    }

    /// Sets how often idle client connections are pinged (`None`: never), and how long a ping
    /// may go unanswered.
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }
}

/// A gRPC server in front of a [`Node`]. Clone it to keep a handle (for
/// [`shutdown`](Self::shutdown)) while another task runs [`serve`](Self::serve).
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

struct Shared {
    node: Node,
    config: GatewayConfig,
    listener: Mutex<Option<TcpListener>>,
    table: RwLock<Arc<Table>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// A gateway for `node`, with the default [`GatewayConfig`].
    pub fn new(node: Node) -> Gateway {
        Gateway::with_config(node, GatewayConfig::default())
    }

    /// A gateway for `node` with `config`.
    pub fn with_config(node: Node, config: GatewayConfig) -> Gateway {
        let table = Table::build(&node, config.sealed_fields == SealedFields::PassThrough);
        Gateway {
            shared: Arc::new(Shared {
                node,
                config,
                listener: Mutex::new(None),
                table: RwLock::new(Arc::new(table)),
                shutdown: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// Binds the listener; returns the bound address (port 0 picks a free one).
    pub async fn bind(&self, addr: SocketAddr) -> Result<SocketAddr, GatewayError> {
        let bind_error = |source| GatewayError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        *lock(&self.shared.listener) = Some(listener);
        Ok(local)
    }

    /// Serves calls on the bound listener until the node stops or
    /// [`shutdown`](Self::shutdown) is called.
    pub async fn serve(&self) -> Result<(), GatewayError> {
        let listener = lock(&self.shared.listener)
            .take()
            .ok_or(GatewayError::NotBound)?;
        let config = &self.shared.config;
        let mut server = tonic::transport::Server::builder()
            .max_concurrent_streams(config.max_concurrent_streams.max(1))
            .http2_keepalive_interval(config.keepalive_interval)
            .http2_keepalive_timeout(Some(config.keepalive_timeout));
        if let Some(tls) = self.shared.config.tls.clone() {
            server = server.tls_config(tls)?;
        }
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(self.shared.config.tcp_nodelay));
        let signal = stopped(self.shared.clone());
        server
            .serve_with_incoming_shutdown(self.clone(), incoming, signal)
            .await?;
        Ok(())
    }

    /// Stops [`serve`](Self::serve): no new calls are taken; those in flight finish.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// The gRPC method names served now (`/{package}.{Service}/{Method}`), sorted.
    pub fn methods(&self) -> Vec<String> {
        let mut methods: Vec<String> = self.shared.table().routes.keys().cloned().collect();
        methods.sort();
        methods
    }
}

/// Resolves once the gateway is shut down, or the node stops.
async fn stopped(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        _ = shutdown.wait_for(|s| *s) => {}
        () = shared.node.stopped() => {}
    }
}

impl Shared {
    /// What is served now: rebuilt first when the node's catalog changed.
    fn table(&self) -> Arc<Table> {
        let current = read(&self.table).clone();
        if current.version == self.node.catalog_version() {
            return current;
        }
        let as_bytes = self.config.sealed_fields == SealedFields::PassThrough;
        let fresh = Arc::new(Table::build(&self.node, as_bytes));
        *write(&self.table) = fresh.clone();
        fresh
    }
}

impl Service<http::Request<Body>> for Gateway {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.dispatch(request).await) })
    }
}

const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/";
const REFLECTION_V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/";

impl Shared {
    async fn dispatch(self: Arc<Self>, request: http::Request<Body>) -> http::Response<Body> {
        let table = self.table();
        let path = request.uri().path();
        let reflection = if path.starts_with(REFLECTION_V1) {
            Some(&table.reflection_v1)
        } else if path.starts_with(REFLECTION_V1ALPHA) {
            Some(&table.reflection_v1alpha)
        } else {
            None
        };
        if let Some(handler) = reflection {
            return match handler {
                Some(handler) => handler(request).await,
                None => status(tonic::Status::unavailable(
                    "gRPC reflection is not available",
                )),
            };
        }
        let Some(route) = table.routes.get(path).cloned() else {
            let path = path.to_owned();
            return status(tonic::Status::unimplemented(format!(
                "no service this gateway reaches offers `{path}`"
            )));
        };
        let max = self.config.max_message_size;
        let mut grpc = Grpc::new(PassThrough).apply_max_message_size_config(Some(max), Some(max));
        let open = self.config.sealed_fields == SealedFields::Open;
        let call = Call {
            node: self.node.clone(),
            action: route.action,
            deadline_margin: self.config.deadline_margin,
            sealed: Arc::new(call::Sealed {
                input: route.input,
                output: route.output,
                open,
            }),
        };
        match route.kind {
            CallKind::Unary => grpc.unary(call, request).await,
            CallKind::ServerStreaming => grpc.server_streaming(call, request).await,
            CallKind::ClientStreaming => grpc.client_streaming(call, request).await,
            CallKind::Bidi => grpc.streaming(call, request).await,
        }
    }
}

/// The Runar call's options from the gRPC request's metadata: its deadline (`margin` before
/// the client's) and trace context.
pub(crate) fn call_options(
    metadata: &tonic::metadata::MetadataMap,
    margin: Duration,
) -> RequestOptions {
    let mut options = RequestOptions::default();
    if let Some(timeout) = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        options = options.with_timeout(timeout.saturating_sub(margin));
    }
    let mut crossing = Metadata::new();
    for key in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = metadata.get(key).and_then(|v| v.to_str().ok()) {
            if let Err(error) = crossing.insert(key, value) {
                tracing::debug!(%key, %error, "trace context not passed on");
            }
        }
    }
    if !crossing.is_empty() {
        options = options.with_metadata(crossing);
    }
    options
}

/// A `grpc-timeout` value (at most 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = (value.get(..split)?, value.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status code of a Runar [`Code`]: the one of the same name.
pub fn grpc_code(code: Code) -> tonic::Code {
    match code {
        Code::Cancelled => tonic::Code::Cancelled,
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Unavailable => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

/// The Runar [`Code`] of a gRPC status code (the ones Runar has no name for become
/// `Internal`, `Unavailable` or `InvalidArgument`, by what they mean for a caller).
pub fn runar_code(code: tonic::Code) -> Code {
    match code {
        tonic::Code::Cancelled => Code::Cancelled,
        tonic::Code::InvalidArgument
        | tonic::Code::OutOfRange
        | tonic::Code::FailedPrecondition => Code::InvalidArgument,
        tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::AlreadyExists => Code::AlreadyExists,
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Code::PermissionDenied,
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        tonic::Code::Unimplemented => Code::Unimplemented,
        tonic::Code::Unavailable | tonic::Code::Aborted => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// A response that is only a status.
fn status(status: tonic::Status) -> http::Response<Body> {
    status.into_http()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_bad_ones_do_not() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "9 digits");
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
        assert_eq!(parse_grpc_timeout("1é"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn codes_map_both_ways() {
        for code in Code::ALL {
            assert_eq!(runar_code(grpc_code(code)), code);
        }
    }
}
