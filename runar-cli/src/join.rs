//! Joining the network as a transient node, finding the nodes, and asking them through their
//! `$runar` service.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runar::introspection::{self, NodeInfo, ServiceList};
use runar::seal::{FieldSeal, Keyring};
use runar::{
    Code, DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, NodeId, Payload,
    RefusalReason, RequestOptions,
};

use crate::Global;
use crate::error::CliError;

/// Shorter secrets get a warning: the network id is broadcast and derived one-way from the
/// key, so a weak secret can be guessed offline.
const SHORT_SECRET: usize = 16;

/// How long discovery must bring no new node before the CLI takes the set as complete.
const SETTLE: Duration = Duration::from_millis(300);

/// The CLI's node in the network.
pub(crate) struct Mesh {
    pub(crate) node: Node,
    pub(crate) global: Global,
    /// Seals the labelled fields the CLI sends, opens those it receives (see `schema`).
    pub(crate) seal: FieldSeal,
}

/// The network secret: `--key-file`, else `RUNAR_KEY`.
fn load_key(global: &Global) -> Result<NetworkKey, CliError> {
    let secret: Vec<u8> = match (&global.key_file, std::env::var_os("RUNAR_KEY")) {
        (Some(path), _) => std::fs::read(path)
            .map_err(|e| {
                CliError::new(
                    Code::NotFound,
                    format!("cannot read the key file {}: {e}", path.display()),
                )
            })?
            .trim_ascii()
            .to_vec(),
        (None, Some(key)) => key.into_encoded_bytes().trim_ascii().to_vec(),
        (None, None) => {
            return Err(CliError::invalid("no network key").with_hint(
                "set RUNAR_KEY to the network secret, or pass --key-file PATH (`runar keygen` makes one)",
            ));
        }
    };
    if secret.is_empty() {
        return Err(CliError::invalid("the network key is empty"));
    }
    if secret.len() < SHORT_SECRET {
        eprintln!(
            "warning: the network secret is short ({} bytes): the network id is broadcast and \
             derived one-way from the key, so a weak secret can be guessed offline; \
             `runar keygen` makes a strong one",
            secret.len()
        );
    }
    Ok(NetworkKey::from_secret(secret))
}

/// A spinner on stderr while the CLI discovers, only when stderr is a terminal.
fn spinner(global: &Global) -> Option<indicatif::ProgressBar> {
    if global.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("finding nodes…");
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

impl Mesh {
    /// Joins the network and waits (up to `--timeout`) until the nodes are found: every static
    /// peer connected or refused, and multicast bringing no new node for a moment.
    pub(crate) async fn join(global: &Global) -> Result<Mesh, CliError> {
        let key = load_key(global)?;
        let mut discovery = DiscoveryOptions::none();
        if !global.peers.is_empty() {
            discovery = discovery.and(DiscoveryOptions::static_peers(global.peers.clone()));
        }
        if let Some(group) = &global.multicast {
            let mut multicast = DiscoveryOptions::multicast(group.as_str());
            if let Some(interface) = global.interface {
                multicast = multicast.multicast_interface(interface);
            }
            discovery = discovery.and(multicast);
        }
        if discovery.is_none() {
            return Err(CliError::invalid("no way to find the nodes")
                .with_hint("give --peer ADDR (repeatable) or --multicast GROUP"));
        }
        // Loopback only when every way in is loopback (a mesh on this host).
        let loopback = global.peers.iter().all(|p| p.ip().is_loopback())
            && global.interface.is_none_or(|i| i.is_loopback())
            && (global.multicast.is_none() || global.interface.is_some());
        let bind: SocketAddr = if loopback {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let network = NetworkConfig::default()
            .with_bind_address(bind)
            .with_key(key)
            .with_connect_timeout(global.timeout)
            .with_discovery(discovery);
        // Transient: no services, no `$runar` actions, so nothing is ever routed to it.
        let mut config = NodeConfig::new("runar-cli", global.network.clone())
            .with_introspection(false)
            .with_request_timeout(global.timeout)
            .with_network_config(network);
        // The keystore's label keys and sealing key; without one, a keyring that holds none,
        // so the CLI still tells a sealed field from a plain one.
        let ring = Arc::new(Keyring::new());
        if let Some(dir) = &global.keystore {
            let store = crate::keys::open(dir)?;
            store.load_into(&ring)?;
            config = config.with_sealing_key(store.sealing_key()?);
        }
        let node = Node::new(config.with_key_resolver(ring)).await?;
        let seal = node.field_seal();
        let spinner = spinner(global);
        let started = node.start().await;
        let mesh = Mesh {
            node,
            global: global.clone(),
            seal,
        };
        let found = match started {
            Ok(()) => mesh.discover().await,
            Err(e) => Err(e.into()),
        };
        if let Some(spinner) = spinner {
            spinner.finish_and_clear();
        }
        match found {
            Ok(()) => Ok(mesh),
            Err(e) => {
                mesh.leave().await;
                Err(e)
            }
        }
    }

    async fn discover(&self) -> Result<(), CliError> {
        let deadline = Instant::now() + self.global.timeout;
        let statics = self.global.peers.len();
        let mut last_change = Instant::now();
        let mut last_count = 0;
        loop {
            let count = self.node.peers().len();
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            let refused = self.node.refused_peers();
            let statics_done = count + refused.len() >= statics;
            let settled = self.global.multicast.is_none() || last_change.elapsed() >= SETTLE;
            if count > 0 && statics_done && settled {
                return Ok(());
            }
            if count == 0 && statics > 0 && statics_done && self.global.multicast.is_none() {
                return Err(refusal_error(&refused));
            }
            if Instant::now() >= deadline {
                if count > 0 {
                    return Ok(());
                }
                return Err(if refused.is_empty() {
                    CliError::not_found(format!(
                        "no node of network `{}` found within {:?}",
                        self.global.network, self.global.timeout
                    ))
                    .with_hint(
                        "no peers? check --peer / --multicast (and --interface); wrong key or \
                         network name? nodes of another network stay silent",
                    )
                } else {
                    refusal_error(&refused)
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Leaves the network (goodbyes sent).
    pub(crate) async fn leave(&self) {
        let _ = self.node.stop().await;
    }

    /// The nodes found, sorted by id.
    pub(crate) fn node_ids(&self) -> Vec<NodeId> {
        self.node.peers()
    }

    /// A request to one node's `$runar` (or any) action, within `--timeout`.
    pub(crate) async fn ask<Req: Payload, Resp: Payload>(
        &self,
        node: NodeId,
        path: &str,
        request: Req,
    ) -> Result<Resp, CliError> {
        let options = RequestOptions::default().with_timeout(self.global.timeout);
        Ok(self.node.request_on(node, path, request, options).await?)
    }

    pub(crate) async fn info(&self, node: NodeId) -> Result<NodeInfo, CliError> {
        self.ask(node, introspection::INFO, introspection::NodeInfoRequest {})
            .await
    }

    pub(crate) async fn services(&self, node: NodeId) -> Result<ServiceList, CliError> {
        self.ask(
            node,
            introspection::SERVICES,
            introspection::ServiceListRequest {},
        )
        .await
    }

    /// Every node's services, node by node.
    pub(crate) async fn all_services(&self) -> Result<Vec<(NodeId, ServiceList)>, CliError> {
        let mut all = Vec::new();
        for id in self.node_ids() {
            all.push((id, self.services(id).await?));
        }
        Ok(all)
    }

    /// The node named by `text`: a full id, an id prefix, or a node name (exactly one match).
    pub(crate) async fn resolve(&self, text: &str) -> Result<NodeId, CliError> {
        let mut matches = Vec::new();
        for id in self.node_ids() {
            let id_text = id.to_string();
            if id_text == text {
                return Ok(id);
            }
            if id_text.starts_with(text) || self.info(id).await?.name == text {
                matches.push(id);
            }
        }
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(CliError::not_found(format!("no node `{text}`"))
                .with_hint("`runar nodes` lists the nodes found")),
            _ => Err(CliError::invalid(format!(
                "`{text}` names {} nodes: give more of the id",
                matches.len()
            ))),
        }
    }

    /// The nodes to ask: the one named, or all.
    pub(crate) async fn selected(&self, node: Option<&str>) -> Result<Vec<NodeId>, CliError> {
        match node {
            Some(text) => Ok(vec![self.resolve(text).await?]),
            None => Ok(self.node_ids()),
        }
    }
}

/// No node admitted the CLI: say why, from the refused handshakes.
fn refusal_error(refused: &[(SocketAddr, RefusalReason)]) -> CliError {
    let wrong_key = refused.iter().any(|(_, r)| *r == RefusalReason::NetworkKey);
    let list: Vec<String> = refused
        .iter()
        .map(|(addr, reason)| format!("{addr}: {}", reason.as_str()))
        .collect();
    let error = CliError::new(
        Code::PermissionDenied,
        format!("the nodes refused the connection ({})", list.join(", ")),
    );
    if wrong_key {
        error.with_hint(
            "wrong key? RUNAR_KEY / --key-file must hold the network's secret (`runar keygen`)",
        )
    } else {
        error.with_hint("check --network (the nodes' network name) and the Runar versions")
    }
}
