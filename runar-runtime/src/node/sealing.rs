//! The node's side of sealed fields (see `crate::seal`): its sealing key, its seal scope, which
//! it attaches to the values it sends to peers (sealed as they encode) and receives from them
//! (opened as they decode). Local calls never see it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _};

use super::Node;
use crate::error::Result;
use crate::network::{MessageStream, Messages, TransportError, ValueStream};
use crate::seal::{KeyPair, NodeSeal, PublicKey, SealStats};
use crate::value::scope::Scope;
use crate::value::{Value, ValueRef};

/// The node's sealing key and, with a resolver configured, its seal scope.
pub(crate) struct Sealing {
    public: PublicKey,
    seal: Option<Arc<NodeSeal>>,
    /// The same scope, as the value layer holds it.
    scope: Option<Arc<dyn Scope>>,
}

impl Sealing {
    pub(crate) fn new(config: &super::NodeConfig, node: crate::NodeId) -> Self {
        let key = config.sealing_key.clone().unwrap_or_else(KeyPair::generate);
        let public = key.public();
        let seal = config
            .key_resolver
            .as_ref()
            .map(|r| Arc::new(NodeSeal::new(node, key, r.0.clone())));
        if let Some(seal) = &seal {
            // The node opens what it sealed itself (a record handed back to it).
            seal.announce(node, public);
        }
        let scope = seal.clone().map(|s| s as Arc<dyn Scope>);
        Sealing {
            public,
            seal,
            scope,
        }
    }
}

impl Node {
    /// The public half of the node's X25519 sealing key: the nodes that open fields this node
    /// sealed must know it. Its peers learn it from the node's hello; a node that receives
    /// its envelopes through another (a relay) is told it with `Keyring::trust_node`.
    pub fn sealing_key(&self) -> PublicKey {
        self.inner.sealing.public
    }

    /// How many labelled fields this node sealed, redacted, opened, kept sealed and refused.
    pub fn seal_stats(&self) -> SealStats {
        self.inner
            .sealing
            .seal
            .as_ref()
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    /// The node's sealing for encoded messages whose schema is known only at run time (a
    /// tool converting JSON with served descriptors, a gateway). Without a key
    /// resolver (`NodeConfig::with_key_resolver`) it seals nothing (`FieldSealError::NoKey`)
    /// and opens nothing (every labelled field stays sealed).
    pub fn field_seal(&self) -> crate::seal::FieldSeal {
        crate::seal::FieldSeal::new(self.inner.sealing.seal.clone())
    }

    /// Records the sealing key `peer` announced in its hello (the connection's mutual TLS binds
    /// it to the peer's id): envelopes the peer seals open here without `Keyring::trust_node`.
    pub(crate) fn peer_sealing_key(&self, peer: crate::NodeId, key: PublicKey) {
        if let Some(seal) = &self.inner.sealing.seal {
            seal.announce(peer, key);
        }
    }

    /// Forgets `peer`'s announced sealing key once no connection to it remains.
    pub(crate) fn peer_gone(&self, peer: &crate::NodeId) {
        if let Some(seal) = &self.inner.sealing.seal {
            if !self.meshes().iter().any(|mesh| mesh.peer(peer).is_some()) {
                seal.forget(peer);
            }
        }
    }

    /// The node's seal scope, within which values bound for peers are encoded (none without
    /// a resolver).
    pub(crate) fn seal_scope(&self) -> Option<&Arc<dyn Scope>> {
        self.inner.sealing.scope.as_ref()
    }

    /// `value`'s encoding as this node sends it to a peer: labelled fields sealed (redacted
    /// without a resolver or a key for their label). For a value that already holds bytes,
    /// those bytes.
    pub fn encode_for_peers(&self, value: &Value) -> Bytes {
        self.encode_ref_for_peers(ValueRef::Value(value))
    }

    /// [`encode_for_peers`](Self::encode_for_peers) of a value or of a typed message not boxed
    /// into one.
    pub(crate) fn encode_ref_for_peers(&self, value: ValueRef<'_>) -> Bytes {
        match &self.inner.sealing.scope {
            Some(scope) => crate::value::scope::within(scope, || value.to_bytes()),
            None => value.to_bytes(),
        }
    }

    /// The messages of a streaming call, bound for a peer or received from one, each with the
    /// node's seal scope (see [`sealed_scope`](Self::sealed_scope)).
    pub(crate) fn sealed_stream(&self, messages: ValueStream) -> ValueStream {
        match self.inner.sealing.scope.clone() {
            Some(scope) => messages
                .map(move |message| message.map(|value| value.scoped(scope.clone())))
                .boxed(),
            None => messages,
        }
    }

    /// A call's messages bound for a peer, sealed as they are written (see
    /// [`sealed_scope`](Self::sealed_scope)).
    pub(crate) fn sealed_messages(&self, messages: MessageStream) -> MessageStream {
        match self.inner.sealing.scope.clone() {
            Some(scope) => Box::pin(Sealed { messages, scope }),
            None => messages,
        }
    }

    /// `value`, bound for a peer or received from one, with the node's seal scope.
    pub(crate) fn sealed_scope(&self, value: Value) -> Value {
        value.within(self.inner.sealing.scope.as_ref())
    }

    /// A value holding `bytes` as a peer sends them (labelled fields as envelopes): decoded
    /// by a local handler, it opens the fields this node holds keys for. For front ends that
    /// carry messages as bytes (the gRPC gateway).
    pub fn sealed_value(&self, bytes: Bytes) -> Value {
        self.sealed_scope(Value::from_encoded(bytes))
    }
}

/// Messages bound for a peer, each with the node's seal scope: as values, or encoded within
/// the scope (see [`Node::sealed_messages`]).
struct Sealed {
    messages: MessageStream,
    scope: Arc<dyn Scope>,
}

impl Stream for Sealed {
    type Item = Result<Value>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let scope = self.scope.clone();
        self.messages
            .as_mut()
            .poll_next(cx)
            .map(|next| next.map(|message| message.map(|value| value.scoped(scope))))
    }
}

impl Messages for Sealed {
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
        max: usize,
        _scope: Option<&Arc<dyn Scope>>,
    ) -> Poll<Option<Result<std::result::Result<(), TransportError>>>> {
        let this = &mut *self;
        this.messages
            .as_mut()
            .poll_frame(cx, out, max, Some(&this.scope))
    }
}
