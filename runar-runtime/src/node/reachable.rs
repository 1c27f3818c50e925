//! The services a node can call, local or offered by its peers, with their schemas: what a
//! gateway or a tool needs to describe the mesh without asking every peer.

use bytes::Bytes;

use super::Node;
use crate::identity::NodeId;
use crate::lock::lock;

/// A service this node can call: one of its own running services, or one a connected peer
/// offers (as the peer announced it, so its schema is the peer's).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReachableService {
    /// The network the service's actions live in.
    pub network: String,
    /// The service's path (`inventory` for `inventory/get_item`).
    pub path: String,
    /// The service's name.
    pub name: String,
    /// Its action paths, relative to the network.
    pub actions: Vec<String>,
    /// An encoded `google.protobuf.FileDescriptorProto` describing the service; empty when it
    /// has none (or the peer's access policy does not show it).
    pub schema: Bytes,
    /// The node that runs it: `None` for this node.
    pub node: Option<NodeId>,
}

impl Node {
    /// Every service this node can call in every network it is in: its own running services
    /// first, then those its connected peers offer (one entry per peer that offers one).
    pub fn reachable_services(&self) -> Vec<ReachableService> {
        let mut services: Vec<ReachableService> = lock(&self.inner.catalog)
            .values()
            .map(|d| ReachableService {
                network: d.network.clone(),
                path: d.path.clone(),
                name: d.name.clone(),
                actions: d.actions.clone(),
                schema: d.schema.clone(),
                node: None,
            })
            .collect();
        let views = lock(&self.inner.remote_views);
        for (peer, offered) in views.values().filter_map(|v| v.services.as_ref()) {
            services.extend(offered.iter().map(|d| ReachableService {
                network: d.network.clone(),
                path: d.path.clone(),
                name: d.name.clone(),
                actions: d.actions.clone(),
                schema: d.schema.clone(),
                node: Some(*peer),
            }));
        }
        services
    }

    /// A number that changes whenever what [`reachable_services`](Self::reachable_services)
    /// returns may have changed (an action, a service or a peer came or went): compare it with
    /// the last one seen to know when to look again.
    pub fn catalog_version(&self) -> u64 {
        *self.inner.registry.changes().borrow()
    }
}
