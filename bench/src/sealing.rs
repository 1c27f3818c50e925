//! Sealed fields (issue 16): the same unary echo between two Runar nodes over QUIC, of a
//! record with no labelled field, one, or three under two labels (`proto/sealing.proto`). Both
//! nodes hold both labels and trust each other's sealing key, so every labelled field is sealed
//! on send and opened on receive, both ways: the request at the server, the answer at the
//! client. Also a local call of the same actions, which must seal nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use runar::seal::{KeyPair, Keyring};
use runar::{AbstractService, LifecycleContext, Node, NodeConfig};

use crate::pb::sealing::{OneLabel, Plain, ThreeFields};
use crate::rpc::Rpc;
use crate::runar_side::network;

/// Which record the echo carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `Plain`: no labelled field.
    Plain,
    /// `OneLabel`: `name` labelled `user`.
    One,
    /// `ThreeFields`: `name` and `note` labelled `user`, `balance` labelled `system`.
    Three,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Plain, Variant::One, Variant::Three];

    pub fn label(self) -> &'static str {
        match self {
            Variant::Plain => "(a) no labelled field",
            Variant::One => "(b) one labelled field",
            Variant::Three => "(c) three labelled fields, two labels",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Variant::Plain => "seal/plain",
            Variant::One => "seal/one",
            Variant::Three => "seal/three",
        }
    }
}

const NAME: &str = "Ada Lovelace";
const BALANCE: i64 = 1815;
const NOTE: &str = "first program, 1843";

/// The echo actions; each checks that the labelled fields arrived open (its node holds them).
struct SealService;

impl AbstractService for SealService {
    fn name(&self) -> &str {
        "SealBench"
    }
    fn path(&self) -> &str {
        "seal"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("plain", |r: Plain, _ctx| async move { Ok(r) })
            .await?;
        ctx.register_action("one", |r: OneLabel, _ctx| async move {
            open(r.name.as_ref())?;
            Ok(r)
        })
        .await?;
        ctx.register_action("three", |r: ThreeFields, _ctx| async move {
            open(r.name.as_ref())?;
            open(r.balance.as_ref())?;
            open(r.note.as_ref())?;
            Ok(r)
        })
        .await
    }
}

/// The field's value; an error when it is unset or sealed.
fn open<T: runar::seal::SealedValue, F: runar::seal::SealedField>(
    field: Option<&runar::codegen::Sealed<T, F>>,
) -> runar::Result<&T> {
    field
        .ok_or_else(|| runar::Error::invalid_argument("a labelled field is unset"))?
        .open()
}

/// A keyring that holds both labels (the same keys on every node of the bench).
fn keyring(user: &KeyPair, system: &KeyPair) -> Arc<Keyring> {
    let ring = Arc::new(Keyring::new());
    ring.hold("user", 1, user);
    ring.hold("system", 1, system);
    ring
}

#[derive(Clone)]
pub struct SealRpc {
    client: Node,
    server: Node,
    variant: Variant,
    calls: Arc<AtomicU64>,
}

/// Starts the server node (serving `seal/*`), then a client node that dials it; both hold
/// both labels and trust each other's sealing key. Returns once the client routes the action.
pub async fn connect(variant: Variant) -> SealRpc {
    let (user, system) = (KeyPair::generate(), KeyPair::generate());
    let (server_ring, client_ring) = (keyring(&user, &system), keyring(&user, &system));
    let server = Node::new(
        NodeConfig::new("server", "bench")
            .with_network_config(network(vec![]))
            .with_key_resolver(server_ring.clone()),
    )
    .await
    .expect("server node");
    server.add_service(SealService).await.expect("service");
    server.start().await.expect("server start");
    let addr = server.local_addr().expect("server address");
    let client = Node::new(
        NodeConfig::new("client", "bench")
            .with_network_config(network(vec![addr]))
            .with_key_resolver(client_ring.clone()),
    )
    .await
    .expect("client node");
    server_ring.trust_node(client.node_id(), client.sealing_key());
    client_ring.trust_node(server.node_id(), server.sealing_key());
    client.start().await.expect("client start");
    client
        .wait_for_action(variant.action(), Duration::from_secs(10))
        .await
        .expect("the client node did not connect");
    SealRpc {
        client,
        server,
        variant,
        calls: Arc::default(),
    }
}

impl SealRpc {
    pub async fn stop(self) {
        let _ = self.client.stop().await;
        let _ = self.server.stop().await;
    }

    /// Labelled fields sealed by both nodes per call so far (`SealStats::sealed`, not the HPKE
    /// setups: those are `SealStats::envelopes`), and whether every one was opened.
    pub fn sealed_per_call(&self) -> (f64, bool) {
        let (c, s) = (self.client.seal_stats(), self.server.seal_stats());
        let calls = self.calls.load(Ordering::Relaxed) as f64;
        let sealed = c.sealed + s.sealed;
        let all_opened = c.opened + s.opened == sealed && c.kept_sealed + s.kept_sealed == 0;
        (sealed as f64 / calls, all_opened)
    }
}

/// One echo of `variant`'s record with `data` on `node`; the answer's fields must be open.
async fn echo(node: &Node, variant: Variant, data: Bytes) -> Bytes {
    let path = variant.action();
    match variant {
        Variant::Plain => {
            let r = Plain {
                data,
                name: NAME.into(),
                balance: BALANCE,
                note: NOTE.into(),
            };
            let a: Plain = node.request(path, r).await.expect("seal/plain");
            a.data
        }
        Variant::One => {
            let r = OneLabel {
                data,
                name: Some(String::from(NAME).into()),
                balance: BALANCE,
                note: NOTE.into(),
            };
            let a: OneLabel = node.request(path, r).await.expect("seal/one");
            assert_eq!(open(a.name.as_ref()).expect("name opens"), NAME);
            a.data
        }
        Variant::Three => {
            let r = ThreeFields {
                data,
                name: Some(String::from(NAME).into()),
                balance: Some(BALANCE.into()),
                note: Some(String::from(NOTE).into()),
            };
            let a: ThreeFields = node.request(path, r).await.expect("seal/three");
            assert_eq!(open(a.name.as_ref()).expect("name opens"), NAME);
            assert_eq!(*open(a.balance.as_ref()).expect("balance opens"), BALANCE);
            assert_eq!(open(a.note.as_ref()).expect("note opens"), NOTE);
            a.data
        }
    }
}

impl Rpc for SealRpc {
    async fn call(&self, payload: Bytes) -> Bytes {
        self.calls.fetch_add(1, Ordering::Relaxed);
        echo(&self.client, self.variant, payload).await
    }
}

/// A local call of each variant on one node that holds both labels: (variant, ns per call, the
/// node's `seal_stats().sealed` after it). Each is the median of `rounds` rounds of `iters`.
pub async fn local(iters: u32, rounds: usize) -> Vec<(Variant, f64, u64)> {
    let (user, system) = (KeyPair::generate(), KeyPair::generate());
    let node =
        Node::new(NodeConfig::new("local", "bench").with_key_resolver(keyring(&user, &system)))
            .await
            .expect("node");
    node.add_service(SealService).await.expect("service");
    node.start().await.expect("start");
    let data = Bytes::from(vec![0xA5u8; 100]);
    let mut out = Vec::new();
    for variant in Variant::ALL {
        let mut runs = Vec::new();
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(echo(&node, variant, data.clone()).await);
            }
            runs.push(t0.elapsed().as_nanos() as f64 / f64::from(iters));
        }
        runs.sort_by(f64::total_cmp);
        let ns = runs.get(runs.len() / 2).copied().unwrap_or(f64::NAN);
        out.push((variant, ns, node.seal_stats().sealed));
    }
    let _ = node.stop().await;
    out
}

/// The CPU time this thread has run, in nanoseconds (`/proc/thread-self/schedstat`, Linux);
/// 0 where it cannot be read.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
