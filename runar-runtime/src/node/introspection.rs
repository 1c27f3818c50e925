//! The built-in `$runar` service: what a node is, serves, is connected to and has counted,
//! for the node itself, its peers and the `runar` CLI. Its messages are in
//! `proto/runar/v1/introspection.proto` ([`crate::introspection`]).
//!
//! It is registered as local actions on every node (unless
//! [`NodeConfig::introspection`](crate::NodeConfig) is off), never announced to peers as a
//! service, and so never routed to another node: a peer asks one chosen node with
//! [`Node::request_on`].

use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use prost::Message as _;

use super::Node;
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::node::RequestOptions;
use crate::node::service::{ActionHandler, Caller, action_handler};
use crate::routing::TopicPath;
use crate::value::{Payload, Value};
use crate::wire;

/// The path every built-in introspection action lives under.
pub const SERVICE_PATH: &str = "$runar";
/// `$runar/info`: [`wire::NodeInfoRequest`] → [`wire::NodeInfo`].
pub const INFO: &str = "$runar/info";
/// `$runar/services`: [`wire::ServiceListRequest`] → [`wire::ServiceList`].
pub const SERVICES: &str = "$runar/services";
/// `$runar/peers`: [`wire::PeerListRequest`] → [`wire::PeerList`].
pub const PEERS: &str = "$runar/peers";
/// `$runar/stats`: [`wire::NodeStatsRequest`] → [`wire::NodeStatsReport`].
pub const STATS: &str = "$runar/stats";
/// `$runar/ping`: [`wire::PingRequest`] → [`wire::PingReply`].
pub const PING: &str = "$runar/ping";

/// The extension number of `(runar.event)` on `google.protobuf.MethodOptions`
/// (`proto/runar/options.proto`).
const EVENT_OPTION: u32 = 51701;

impl Node {
    /// Registers the `$runar` actions (at start, when the configuration asks for them).
    pub(super) fn register_introspection(&self) -> Result<()> {
        /// The action answering with `answer`: about the whole node to a caller on this node,
        /// about the network the call came in alone to a peer (a peer learns nothing of the
        /// node's other networks).
        fn handler<Req: Payload + Default, Resp: Payload>(
            answer: fn(&Node, Option<&str>) -> Resp,
        ) -> ActionHandler {
            action_handler(move |_: Req, ctx| {
                let scope = match ctx.caller() {
                    Caller::Local => None,
                    Caller::Remote(_) => Some(ctx.network()),
                };
                let reply = answer(ctx.node(), scope);
                async move { Ok(reply) }
            })
        }
        let actions: [(&str, ActionHandler); 5] = [
            (
                INFO,
                handler::<wire::NodeInfoRequest, _>(Node::node_info_in),
            ),
            (
                SERVICES,
                handler::<wire::ServiceListRequest, _>(Node::service_list_in),
            ),
            (
                PEERS,
                handler::<wire::PeerListRequest, _>(Node::peer_list_in),
            ),
            (
                STATS,
                handler::<wire::NodeStatsRequest, _>(Node::stats_report_in),
            ),
            (
                PING,
                handler::<wire::PingRequest, _>(|node, _| wire::PingReply {
                    node_id: node.node_id().to_string(),
                }),
            ),
        ];
        for network in self.networks() {
            for (path, handler) in &actions {
                let pattern = TopicPath::parse(path)?;
                self.register_action(&network, pattern, SERVICE_PATH, handler.clone(), None, None)?;
            }
        }
        Ok(())
    }

    /// The node's networks a `$runar` answer covers: all of them, or the one `scope` names.
    fn networks_in(&self, scope: Option<&str>) -> Vec<String> {
        match scope {
            Some(network) => vec![network.to_owned()],
            None => self.networks(),
        }
    }

    /// What this node is: id, name, version, networks, addresses, uptime (what `$runar/info`
    /// answers a caller on this node).
    pub fn node_info(&self) -> wire::NodeInfo {
        self.node_info_in(None)
    }

    /// [`node_info`](Self::node_info) about the whole node (`None`), or as a peer in the
    /// network `scope` sees it: that network alone, its services and peers.
    fn node_info_in(&self, scope: Option<&str>) -> wire::NodeInfo {
        let networks = self.networks_in(scope);
        let services = crate::lock::lock(&self.inner.catalog)
            .keys()
            .filter(|(network, _)| scope.is_none_or(|s| s == &**network))
            .count();
        let peers = match scope {
            Some(network) => self.peers_in(network).len(),
            None => self.peers().len(),
        };
        wire::NodeInfo {
            node_id: self.node_id().to_string(),
            name: self.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            network: scope.unwrap_or(self.network()).to_owned(),
            networks,
            addresses: self
                .local_addr()
                .map(|a| a.to_string())
                .into_iter()
                .collect(),
            uptime_ms: millis(self.inner.created.elapsed()),
            service_count: u32::try_from(services).unwrap_or(u32::MAX),
            peer_count: u32::try_from(peers).unwrap_or(u32::MAX),
        }
    }

    /// The user services this node runs, with their actions, events and schemas (what
    /// `$runar/services` answers a caller on this node).
    pub fn service_list(&self) -> wire::ServiceList {
        self.service_list_in(None)
    }

    /// [`service_list`](Self::service_list) in every network (`None`) or in `scope`.
    fn service_list_in(&self, scope: Option<&str>) -> wire::ServiceList {
        let services = self
            .networks_in(scope)
            .iter()
            .flat_map(|network| self.catalog(network))
            .map(|service| describe_service(&service))
            .collect();
        wire::ServiceList { services }
    }

    /// The peers this node is connected to, with their connection's statistics (what
    /// `$runar/peers` answers a caller on this node).
    pub fn peer_list(&self) -> wire::PeerList {
        self.peer_list_in(None)
    }

    /// [`peer_list`](Self::peer_list) in every network (`None`) or in `scope`.
    fn peer_list_in(&self, scope: Option<&str>) -> wire::PeerList {
        let peers = self
            .networks()
            .into_iter()
            .zip(self.meshes())
            .filter(|(network, _)| scope.is_none_or(|s| s == network))
            .flat_map(|(network, mesh)| {
                mesh.connected_peers()
                    .into_iter()
                    .map(move |peer| (network.clone(), peer))
            })
            .map(|(network, peer)| {
                let stats = peer.connection.stats();
                wire::PeerDescription {
                    node_id: peer.id.to_string(),
                    name: peer.name.clone(),
                    addresses: vec![peer.connection.remote_address().to_string()],
                    rtt_us: micros(peer.connection.rtt()),
                    connected_since_ms: peer
                        .connected_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, millis),
                    bytes_sent: stats.udp_tx.bytes,
                    bytes_received: stats.udp_rx.bytes,
                    lost_packets: stats.path.lost_packets,
                    requests_in_flight: u64::try_from(peer.requests_in_flight())
                        .unwrap_or(u64::MAX),
                    events_delivered: peer.event_counts.written.load(Ordering::Relaxed),
                    events_dropped: peer.event_counts.dropped.load(Ordering::Relaxed),
                    network,
                }
            })
            .collect();
        wire::PeerList { peers }
    }

    /// Everything the node counts: events, per action, per peer, per subscription (what
    /// `$runar/stats` answers a caller on this node).
    pub fn stats_report(&self) -> wire::NodeStatsReport {
        self.stats_report_in(None)
    }

    /// [`stats_report`](Self::stats_report) for the whole node (`None`: the actions of the
    /// default network), or with the actions, peers and subscriptions of `scope` alone (the
    /// event counts are the node's).
    fn stats_report_in(&self, scope: Option<&str>) -> wire::NodeStatsReport {
        let events = self.stats();
        let subscriptions = self
            .inner
            .registry
            .local_subscriptions()
            .into_iter()
            .filter(|(network, _)| scope.is_none_or(|s| s == &**network))
            .filter_map(|(_, sub)| {
                let stats = self.subscription_stats(sub.id)?;
                Some(wire::SubscriptionReport {
                    id: sub.id.0,
                    pattern: sub.pattern.path().to_owned(),
                    delivered: stats.delivered,
                    dropped: stats.dropped,
                })
            })
            .collect();
        wire::NodeStatsReport {
            events_published: events.events_published,
            events_received: events.events_received,
            events_delivered: events.events_delivered,
            events_dropped: events.events_dropped,
            events_rejected: events.events_rejected,
            slow_consumers: events.slow_consumers,
            actions: self.action_stats_in(scope.unwrap_or(self.network())),
            peers: self.peer_list_in(scope).peers,
            subscriptions,
            uptime_ms: millis(self.inner.created.elapsed()),
        }
    }

    /// Sends `request` to the action at `path` on the node `node` (this node, or a connected
    /// peer), never to another instance of it: for the `$runar` introspection actions, and
    /// wherever the caller must choose the node. Fails with `Unavailable` when `node` is not
    /// connected.
    pub async fn request_on<Req: Payload, Resp: Payload>(
        &self,
        node: NodeId,
        path: impl AsRef<str>,
        request: Req,
        options: RequestOptions,
    ) -> Result<Resp> {
        let path = path.as_ref();
        if node == self.node_id() {
            return self.request_with(path, request, options).await;
        }
        self.check_not_stopped()?;
        // The first of the node's networks (the default one first) in which `node` is a peer.
        let (network, peer) = self
            .networks()
            .into_iter()
            .zip(self.meshes())
            .find_map(|(network, mesh)| mesh.peer(&node).map(|peer| (network, peer)))
            .ok_or_else(|| Error::unavailable(format!("node {node} is not connected")))?;
        let config = &self.inner.config;
        options
            .metadata
            .check_limits(config.max_metadata_size, config.max_metadata_entries)?;
        let timeout = options.timeout.unwrap_or(config.request_timeout);
        let request = Value::new(request);
        let call = peer.request(&network, path, &request, timeout, &options.metadata);
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer?.into_typed(),
            Err(_) => Err(Error::deadline_exceeded(format!(
                "`{path}` on node {node} did not answer within {timeout:?}"
            ))),
        }
    }

    /// What the node `node` (this one or a connected peer) is: its `$runar/info`.
    pub async fn describe_peer(&self, node: NodeId) -> Result<wire::NodeInfo> {
        self.request_on(
            node,
            INFO,
            wire::NodeInfoRequest {},
            RequestOptions::default(),
        )
        .await
    }

    /// The services of the node `node` with their schemas: its `$runar/services`.
    pub async fn list_schemas(&self, node: NodeId) -> Result<wire::ServiceList> {
        self.request_on(
            node,
            SERVICES,
            wire::ServiceListRequest {},
            RequestOptions::default(),
        )
        .await
    }
}

/// Milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A running service as introspection describes it.
fn describe_service(service: &wire::ServiceDescriptor) -> wire::ServiceDescription {
    let file = prost_types::FileDescriptorProto::decode(service.schema.as_ref()).ok();
    let prefix = format!("{}/", service.path);
    let actions = service
        .actions
        .iter()
        .map(|path| {
            let action = path.strip_prefix(&prefix).unwrap_or(path);
            let method = file
                .as_ref()
                .and_then(|f| crate::value::types::method_in(f, &service.name, action));
            let name = |n: &str| n.trim_start_matches('.').to_owned();
            let (request_type, response_type) = method
                .map(|m| (name(m.input_type()), name(m.output_type())))
                .unwrap_or_default();
            // The schema says how many messages each side sends (a service without one, or an
            // action it does not name, is taken as unary).
            let kind = match method.map(|m| (m.client_streaming(), m.server_streaming())) {
                Some((false, true)) => wire::CallKind::ServerStreaming,
                Some((true, false)) => wire::CallKind::ClientStreaming,
                Some((true, true)) => wire::CallKind::Bidi,
                _ => wire::CallKind::Unary,
            };
            wire::ActionDescription {
                path: path.clone(),
                kind: kind.into(),
                request_type,
                response_type,
            }
        })
        .collect();
    let events = event_methods(&service.schema)
        .into_iter()
        .map(|(method, payload)| wire::EventDescription {
            topic: format!("{}/{}", service.path, snake_case(&method)),
            payload_type: payload.trim_start_matches('.').to_owned(),
        })
        .collect();
    let schema = if service.schema.is_empty() {
        bytes::Bytes::new()
    } else {
        // A FileDescriptorSet is `repeated FileDescriptorProto file = 1`: the file's own bytes
        // (with the extension options prost-types would drop) behind one field key.
        let mut set = Vec::with_capacity(service.schema.len().saturating_add(8));
        prost::encoding::bytes::encode(1, &service.schema, &mut set);
        set.into()
    };
    wire::ServiceDescription {
        path: service.path.clone(),
        name: service.name.clone(),
        version: service.version.clone(),
        description: service.description.clone(),
        network: service.network.clone(),
        state: "running".to_owned(),
        actions,
        events,
        schema,
    }
}

/// `StockChanged` → `stock_changed`, as the code generators name an rpc's action or topic.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len().saturating_add(4));
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The rpcs of an encoded `FileDescriptorProto` marked `(runar.event) = true`, as (rpc name,
/// input type). The option is an extension, which prost-types drops, so the raw bytes are
/// read: file field 6 (service) → field 2 (method) → field 4 (options) → field 51701.
fn event_methods(schema: &[u8]) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for service in fields(schema).filter(|(n, _)| *n == 6) {
        for method in fields(service.1).filter(|(n, _)| *n == 2) {
            let mut name = String::new();
            let mut input = String::new();
            let mut event = false;
            for (number, value) in fields(method.1) {
                match number {
                    1 => name = String::from_utf8_lossy(value).into_owned(),
                    2 => input = String::from_utf8_lossy(value).into_owned(),
                    4 => {
                        event = fields(value).any(|(n, v)| n == EVENT_OPTION && v != [0]);
                    }
                    _ => {}
                }
            }
            if event {
                events.push((name, input));
            }
        }
    }
    events
}

/// The fields of an encoded message, as (number, bytes): a length-delimited field's content,
/// a varint's encoding. Stops at the first malformed field or group.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let key = prost::encoding::decode_varint(&mut buf).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        let start = buf;
        let len = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut buf).ok()?;
                start.len().checked_sub(buf.len())?
            }
            1 => 8,
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut buf).ok()?).ok()?;
                let (value, rest) = buf.split_at_checked(len)?;
                buf = rest;
                return Some((number, value));
            }
            5 => 4,
            _ => return None,
        };
        let (value, rest) = start.split_at_checked(len)?;
        buf = rest;
        Some((number, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_of_rpc_names() {
        assert_eq!(snake_case("StockChanged"), "stock_changed");
        assert_eq!(snake_case("get"), "get");
    }

    #[test]
    fn events_are_the_rpcs_marked_runar_event() {
        use prost::encoding::{WireType, encode_key, encode_varint};
        // `rpc StockChanged(shop.StockChanged) returns (google.protobuf.Empty)
        //  { option (runar.event) = true; }` and a plain rpc, as raw bytes: prost-types
        // cannot hold the extension.
        let method = |name: &str, input: &str, event: bool| {
            let mut bytes = prost_types::MethodDescriptorProto {
                name: Some(name.into()),
                input_type: Some(input.into()),
                output_type: Some(".google.protobuf.Empty".into()),
                ..Default::default()
            }
            .encode_to_vec();
            if event {
                let mut options = Vec::new();
                encode_key(EVENT_OPTION, WireType::Varint, &mut options);
                encode_varint(1, &mut options);
                prost::encoding::bytes::encode(4, &options, &mut bytes);
            }
            bytes
        };
        let mut service = prost_types::ServiceDescriptorProto {
            name: Some("Inventory".into()),
            ..Default::default()
        }
        .encode_to_vec();
        prost::encoding::bytes::encode(2, &method("GetItem", ".shop.GetItem", false), &mut service);
        prost::encoding::bytes::encode(
            2,
            &method("StockChanged", ".shop.StockChanged", true),
            &mut service,
        );
        let mut file = Vec::new();
        prost::encoding::bytes::encode(6, &service, &mut file);
        assert_eq!(
            event_methods(&file),
            vec![("StockChanged".to_owned(), ".shop.StockChanged".to_owned())]
        );
        let described = describe_service(&wire::ServiceDescriptor {
            path: "inventory".into(),
            schema: file.into(),
            ..Default::default()
        });
        assert_eq!(described.events.len(), 1);
        assert_eq!(described.events[0].topic, "inventory/stock_changed");
        assert_eq!(described.events[0].payload_type, "shop.StockChanged");
    }

    #[test]
    fn fields_stop_at_garbage() {
        assert_eq!(fields(&[0xff]).count(), 0);
        assert_eq!(fields(&[0x0a, 0x05, 1]).count(), 0);
        let two: Vec<_> = fields(&[0x08, 0x96, 0x01, 0x12, 0x01, b'x']).collect();
        assert_eq!(two, vec![(1, &[0x96, 0x01][..]), (2, &b"x"[..])]);
    }
}
