//! One gRPC call through the gateway, of any of the four kinds, as tonic's server runs it: a
//! unary rpc becomes [`Node::request_value`], a streaming one [`Node::request_stream_value`],
//! the messages' bytes passed through both ways.
//!
//! Cancellation crosses both ways: a client that cancels (or goes away) drops the reply stream
//! or the pending call, which drops the Runar call and so cancels the handler, on a peer within
//! one round trip; a handler that fails, mid-stream too, ends the gRPC call with its status. A
//! client's request stream that breaks (a message too large, a reset) fails the call with that
//! status rather than looking like a clean end of the requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt as _};
use runar_runtime::{Node, Value};
use tokio::sync::oneshot;
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::BoxFuture;
use crate::sealed;
use crate::{call_options, grpc_code};

/// What one gRPC method's labelled (sealed) fields need.
pub(crate) struct Sealed {
    /// The request's message, when it holds labelled fields.
    pub(crate) input: Option<prost_reflect::MessageDescriptor>,
    /// The reply's message, when it holds labelled fields.
    pub(crate) output: Option<prost_reflect::MessageDescriptor>,
    /// `SealedFields::Open`: seal the requests' fields, open the replies'.
    pub(crate) open: bool,
}

impl Sealed {
    /// The Runar value of a request's bytes: labelled fields sealed in `Open` mode (they came
    /// in clear), and taken as a peer's (envelopes) in either mode, so a local handler opens
    /// those the node holds keys for.
    fn request(&self, node: &Node, bytes: Bytes) -> Result<Value, Status> {
        let Some(message) = &self.input else {
            return Ok(Value::from_encoded(bytes));
        };
        let bytes = if self.open {
            Bytes::from(sealed::seal(node, message, &bytes)?)
        } else {
            bytes
        };
        Ok(node.sealed_value(bytes))
    }

    /// A reply's bytes for the client: labelled fields as envelopes (a local handler's reply
    /// is encoded as for a peer), opened in `Open` mode.
    fn reply(&self, node: &Node, reply: &Value) -> Result<Bytes, Status> {
        let Some(message) = &self.output else {
            return Ok(reply.to_bytes());
        };
        let bytes = if reply.is_encoded() {
            reply.to_bytes()
        } else {
            node.encode_for_peers(reply)
        };
        if self.open {
            Ok(Bytes::from(sealed::open(node, message, &bytes)?))
        } else {
            Ok(bytes)
        }
    }
}

/// The replies of a streaming call, as tonic sends them.
pub(crate) type Replies = BoxStream<'static, Result<Bytes, Status>>;

/// One call to the Runar action a gRPC method maps to.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) node: Node,
    pub(crate) action: String,
    /// How much shorter than `grpc-timeout` the Runar call's deadline is.
    pub(crate) deadline_margin: Duration,
    /// Its labelled fields.
    pub(crate) sealed: Arc<Sealed>,
}

/// The gRPC status of a Runar error: the code of the same name, the same message.
fn status(error: &runar_runtime::Error) -> Status {
    Status::new(grpc_code(error.code()), error.message())
}

impl Call {
    /// Starts the Runar streaming call with `requests` (and, for a client stream, the status
    /// that ends it when it breaks); returns its replies as gRPC messages, ending at the first
    /// error.
    fn start_stream(
        self,
        metadata: &tonic::metadata::MetadataMap,
        requests: impl Stream<Item = Value> + Send + 'static,
        broken: Option<oneshot::Receiver<Status>>,
    ) -> BoxFuture<Result<Replies, Status>> {
        let options = call_options(metadata, self.deadline_margin);
        Box::pin(async move {
            let replies = self
                .node
                .request_stream_value(&self.action, requests, options)
                .await
                .map_err(|e| status(&e))?;
            Ok(relay(self.node, self.sealed, replies, broken))
        })
    }
}

/// The replies as gRPC messages; a broken request stream's status ends them first. After the
/// first error nothing more is sent (dropping the Runar stream cancels the call).
fn relay(
    node: Node,
    sealed: Arc<Sealed>,
    replies: BoxStream<'static, runar_runtime::Result<Value>>,
    broken: Option<oneshot::Receiver<Status>>,
) -> Replies {
    let state = Some((replies, broken));
    futures::stream::unfold(state, move |state| {
        let (node, sealed) = (node.clone(), sealed.clone());
        async move {
            let (mut replies, broken) = state?;
            let next = match broken {
                Some(mut broken) => tokio::select! {
                    biased;
                    why = &mut broken => match why {
                        Ok(why) => return Some((Err(why), None)),
                        // The requests ended cleanly: nothing left to watch.
                        Err(_) => (replies.next().await, None),
                    },
                    next = replies.next() => (next, Some(broken)),
                },
                None => (replies.next().await, None),
            };
            match next {
                (Some(Ok(reply)), broken) => match sealed.reply(&node, &reply) {
                    Ok(bytes) => Some((Ok(bytes), Some((replies, broken)))),
                    Err(why) => Some((Err(why), None)),
                },
                (Some(Err(error)), _) => Some((Err(status(&error)), None)),
                (None, _) => None,
            }
        }
    })
    .boxed()
}

/// The client's request stream as Runar values. When it breaks, its status goes to the
/// returned receiver and the stream stays open (never a clean end the handler would answer).
fn requests(
    node: Node,
    sealed: Arc<Sealed>,
    incoming: Streaming<Bytes>,
) -> (
    impl Stream<Item = Value> + Send + 'static,
    oneshot::Receiver<Status>,
) {
    let (tx, rx) = oneshot::channel();
    let stream = futures::stream::unfold((incoming, Some(tx)), move |(mut incoming, tx)| {
        let (node, sealed) = (node.clone(), sealed.clone());
        async move {
            let next = incoming
                .message()
                .await
                .and_then(|m| m.map(|bytes| sealed.request(&node, bytes)).transpose());
            match next {
                Ok(Some(value)) => Some((value, (incoming, tx))),
                Ok(None) => None,
                Err(why) => {
                    if let Some(tx) = tx {
                        let _ = tx.send(why);
                    }
                    // Open until the call, which the status ends, drops it.
                    futures::future::pending().await
                }
            }
        }
    });
    (stream, rx)
}

impl UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let node = self.node.clone();
        let action = self.action.clone();
        let options = call_options(request.metadata(), self.deadline_margin);
        let sealed = self.sealed.clone();
        Box::pin(async move {
            let value = sealed.request(&node, request.into_inner())?;
            // Dropped with this future when the client cancels: the Runar call goes with it.
            match node.request_value(&action, value, options).await {
                Ok(reply) => Ok(Response::new(sealed.reply(&node, &reply)?)),
                Err(error) => Err(status(&error)),
            }
        })
    }
}

impl ServerStreamingService<Bytes> for Call {
    type Response = Bytes;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (metadata, _, message) = request.into_parts();
        let value = match self.sealed.request(&self.node, message) {
            Ok(value) => value,
            Err(why) => return Box::pin(async move { Err(why) }),
        };
        let one = futures::stream::once(async move { value });
        let started = self.clone().start_stream(&metadata, one, None);
        Box::pin(async move { Ok(Response::new(started.await?)) })
    }
}

impl ClientStreamingService<Bytes> for Call {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (metadata, _, incoming) = request.into_parts();
        let (incoming, broken) = requests(self.node.clone(), self.sealed.clone(), incoming);
        let started = self.clone().start_stream(&metadata, incoming, Some(broken));
        let action = self.action.clone();
        Box::pin(async move {
            let mut replies = started.await?;
            match replies.next().await {
                Some(reply) => Ok(Response::new(reply?)),
                None => Err(Status::internal(format!(
                    "`{action}` ended without a reply"
                ))),
            }
        })
    }
}

impl StreamingService<Bytes> for Call {
    type Response = Bytes;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<Response<Replies>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (metadata, _, incoming) = request.into_parts();
        let (incoming, broken) = requests(self.node.clone(), self.sealed.clone(), incoming);
        let started = self.clone().start_stream(&metadata, incoming, Some(broken));
        Box::pin(async move { Ok(Response::new(started.await?)) })
    }
}
