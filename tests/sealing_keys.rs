//! Who holds a label (issue 16), over QUIC on 127.0.0.1: a network (every member derives the
//! key), a named node group (members given the group's key, here through keystores), and user
//! profiles registered at run time (key grants). Keystore file checks are unit tests in
//! `runar-runtime/src/seal/keystore.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{WAIT, config, wait_for};
use runar::codegen::Sealed;
use runar::seal::{KeyGrant, KeyPair, Keyring, Keystore, KeystoreConfig, SealedField};
use runar::{AbstractService, Code, LifecycleContext, NetworkKey, Node};

struct OpsField;
impl SealedField for OpsField {
    const MESSAGE: &'static str = "test.Record";
    const FIELD: u32 = 2;
    const LABEL: &'static str = "ops";
}

struct BillingField;
impl SealedField for BillingField {
    const MESSAGE: &'static str = "test.Record";
    const FIELD: u32 = 3;
    const LABEL: &'static str = "billing";
}

struct UserField;
impl SealedField for UserField {
    const MESSAGE: &'static str = "test.Record";
    const FIELD: u32 = 4;
    const LABEL: &'static str = "user";
}

/// `message Record { string id = 1; string ops = 2 [(runar.label) = "ops"];
/// int64 billing = 3 [(runar.label) = "billing"]; string user = 4 [(runar.label) = "user"]; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(oneof = "Sealed::<String, OpsField>", tags = "2")]
    ops: Option<Sealed<String, OpsField>>,
    #[prost(oneof = "Sealed::<i64, BillingField>", tags = "3")]
    billing: Option<Sealed<i64, BillingField>>,
    #[prost(oneof = "Sealed::<String, UserField>", tags = "4")]
    user: Option<Sealed<String, UserField>>,
}

impl Record {
    /// Which fields this node could open: (ops, billing, user).
    fn readable(&self) -> (bool, bool, bool) {
        (
            self.ops.as_ref().is_some_and(|f| f.open().is_ok()),
            self.billing.as_ref().is_some_and(|f| f.open().is_ok()),
            self.user.as_ref().is_some_and(|f| f.open().is_ok()),
        )
    }
}

/// Serves `records/get`: a record with all three labelled fields.
struct Records;

impl AbstractService for Records {
    fn name(&self) -> &str {
        "Records"
    }
    fn path(&self) -> &str {
        "records"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("get", |_: (), _ctx| async move {
            Ok(Record {
                id: "r1".into(),
                ops: Some(Sealed::new("restart at 3".into())),
                billing: Some(Sealed::new(4200)),
                user: Some(Sealed::new("Ada".into())),
            })
        })
        .await
    }
}

/// Serves `relay/get` (in another network): fetches `records/get` through its node's default
/// network and answers it.
struct Relay {
    node: Node,
}

impl AbstractService for Relay {
    fn name(&self) -> &str {
        "Relay"
    }
    fn path(&self) -> &str {
        "relay"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let node = self.node.clone();
        ctx.register_action("get", move |_: (), _ctx| {
            let node = node.clone();
            async move { node.request::<(), Record>("records/get", ()).await }
        })
        .await
    }
}

fn shop_key() -> NetworkKey {
    NetworkKey::from_secret("runar test shop-net secret")
}

fn ops_key() -> NetworkKey {
    NetworkKey::from_secret("runar test ops-net secret")
}

/// Every node of the test trusts every other's sealing key.
fn trust_all(nodes: &[(&Node, &Keyring)]) {
    for (_, ring) in nodes {
        for (other, _) in nodes {
            ring.trust_node(other.node_id(), other.sealing_key());
        }
    }
}

async fn get(node: &Node, path: &str) -> Record {
    node.wait_for_action(path, WAIT).await.unwrap();
    node.request(path, ()).await.unwrap()
}

#[tokio::test]
async fn a_label_held_by_a_network_opens_on_its_members_only() {
    common::init_tracing();
    let shop = shop_key();
    // Every member of shop-net holds `ops` of epoch 1, derived from the network key alone.
    let member_ring = || {
        let ring = Arc::new(Keyring::new());
        ring.hold("ops", 1, &shop.label_key("ops", 1));
        ring
    };
    let (a_ring, b_ring, g_ring) = (member_ring(), member_ring(), member_ring());
    // C is in ops-net: its `ops` is ops-net's, another key.
    let c_ring = Arc::new(Keyring::new());
    c_ring.hold("ops", 1, &ops_key().label_key("ops", 1));
    assert_ne!(
        shop.label_key("ops", 1).public(),
        ops_key().label_key("ops", 1).public()
    );
    assert_eq!(
        shop.label_key("ops", 1).public(),
        NetworkKey::from_secret("runar test shop-net secret")
            .label_key("ops", 1)
            .public(),
        "every holder of the network key derives the same label key"
    );
    assert_ne!(
        shop.label_key("ops", 1).public(),
        shop.label_key("ops", 2).public()
    );

    // G is in both networks and relays `records/get` to ops-net as `relay/get`.
    let g = Node::new(
        config("g", "shop-net", &shop, &[])
            .with_additional_network("ops-net", ops_key())
            .with_key_resolver(g_ring.clone()),
    )
    .await
    .unwrap();
    g.add_service_to("ops-net", Relay { node: g.clone() })
        .await
        .unwrap();
    g.start().await.unwrap();
    let a = Node::new(config("a", "shop-net", &shop, &[&g]).with_key_resolver(a_ring.clone()))
        .await
        .unwrap();
    a.add_service(Records).await.unwrap();
    a.start().await.unwrap();
    let b = Node::new(config("b", "shop-net", &shop, &[&a]).with_key_resolver(b_ring.clone()))
        .await
        .unwrap();
    b.start().await.unwrap();
    let c = Node::new(config("c", "ops-net", &ops_key(), &[&g]).with_key_resolver(c_ring.clone()))
        .await
        .unwrap();
    c.start().await.unwrap();
    trust_all(&[(&a, &a_ring), (&b, &b_ring), (&g, &g_ring), (&c, &c_ring)]);

    // B, a member of shop-net, opens `ops`.
    let at_b = get(&b, "records/get").await;
    assert_eq!(at_b.ops.as_ref().unwrap().open().unwrap(), "restart at 3");
    assert_eq!(at_b.ops.as_ref().unwrap().epoch(), None, "opened");

    // C gets the record through G, in both networks, and cannot open `ops`.
    let at_c = get(&c, "ops-net:relay/get").await;
    assert_eq!(at_c.id, "r1");
    let ops = at_c.ops.as_ref().unwrap();
    assert!(ops.is_sealed());
    assert_eq!(ops.epoch(), Some(1));
    assert_eq!(ops.open().unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(c.seal_stats().refused, 0, "kept sealed, not refused");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "runar-keys-{name}-{}-{:x}",
        std::process::id(),
        KeyPair::generate().public().key_id().as_bytes()[0]
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn a_label_held_by_a_node_group_opens_on_its_members_only() {
    common::init_tracing();
    let shop = shop_key();
    // The operator generates the `billing` group's key in one keystore and distributes it to
    // the group's members' keystores; the sender only knows the group's public key.
    let fast = || KeystoreConfig::default().with_iterations(1_000);
    let dirs = [temp_dir("operator"), temp_dir("m1"), temp_dir("m2")];
    let operator = Keystore::open_with(&dirs[0], "operator pass", fast()).unwrap();
    let epoch = operator.generate_label("billing").unwrap();
    let group_key = operator.export_label("billing", epoch).unwrap();

    let member_ring = |dir: &std::path::Path, pass: &str| {
        let store = Keystore::open_with(dir, pass, fast()).unwrap();
        store.import_label("billing", epoch, &group_key).unwrap();
        let ring = Arc::new(Keyring::new());
        assert_eq!(store.load_into(&ring).unwrap(), 1);
        ring
    };
    let m1_ring = member_ring(&dirs[1], "member one");
    let m2_ring = member_ring(&dirs[2], "member two");
    let a_ring = Arc::new(Keyring::new());
    a_ring.seal_to("billing", epoch, group_key.public());
    let x_ring = Arc::new(Keyring::new());

    let a = Node::new(config("a", "shop-net", &shop, &[]).with_key_resolver(a_ring.clone()))
        .await
        .unwrap();
    a.add_service(Records).await.unwrap();
    a.start().await.unwrap();
    let mut nodes = Vec::new();
    for (name, ring) in [("m1", &m1_ring), ("m2", &m2_ring), ("x", &x_ring)] {
        let n = Node::new(config(name, "shop-net", &shop, &[&a]).with_key_resolver(ring.clone()))
            .await
            .unwrap();
        n.start().await.unwrap();
        nodes.push(n);
    }
    let [m1, m2, x] = [&nodes[0], &nodes[1], &nodes[2]];
    trust_all(&[(&a, &a_ring), (m1, &m1_ring), (m2, &m2_ring), (x, &x_ring)]);

    for member in [m1, m2] {
        let r = get(member, "records/get").await;
        assert_eq!(*r.billing.as_ref().unwrap().open().unwrap(), 4200);
        assert_eq!(r.readable(), (false, true, false));
    }
    let r = get(x, "records/get").await;
    assert_eq!(r.readable(), (false, false, false));
    assert_eq!(
        r.billing.as_ref().unwrap().open().unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(r.billing.as_ref().unwrap().epoch(), Some(epoch));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn profiles_registered_at_run_time_open_until_removed() {
    common::init_tracing();
    let shop = shop_key();
    // A serves the records and keeps the `user` label; profiles are registered with it.
    let a_ring = Arc::new(Keyring::new());
    a_ring.hold("user", 1, &KeyPair::generate());
    let (alice, bob) = (KeyPair::generate(), KeyPair::generate());
    let (alice_ring, bob_ring) = (Arc::new(Keyring::new()), Arc::new(Keyring::new()));

    let a = Node::new(config("a", "shop-net", &shop, &[]).with_key_resolver(a_ring.clone()))
        .await
        .unwrap();
    a.add_service(Records).await.unwrap();
    a.start().await.unwrap();
    let b = Node::new(config("b", "shop-net", &shop, &[&a]).with_key_resolver(alice_ring.clone()))
        .await
        .unwrap();
    b.start().await.unwrap();
    let d = Node::new(config("d", "shop-net", &shop, &[&a]).with_key_resolver(bob_ring.clone()))
        .await
        .unwrap();
    d.start().await.unwrap();
    trust_all(&[(&a, &a_ring), (&b, &alice_ring), (&d, &bob_ring)]);

    // Before any profile is registered, neither opens `user`.
    assert_eq!(
        get(&b, "records/get").await.readable(),
        (false, false, false)
    );

    // Registering a profile answers a grant: the label key wrapped to the profile's key. Its
    // holder (on B, D) opens it with the profile's private key and holds the label.
    let receive = |grants: Vec<KeyGrant>, profile: &KeyPair, ring: &Keyring| {
        for grant in grants {
            let grant = KeyGrant::from_bytes(&grant.to_bytes()).unwrap();
            ring.hold(grant.label(), grant.epoch(), &grant.open(profile).unwrap());
        }
    };
    receive(
        a_ring.add_profile("user", "alice", alice.public()).unwrap(),
        &alice,
        &alice_ring,
    );
    receive(
        a_ring.add_profile("user", "bob", bob.public()).unwrap(),
        &bob,
        &bob_ring,
    );
    let grant = a_ring
        .add_profile("user", "carol", KeyPair::generate().public())
        .unwrap();
    assert_eq!(
        grant[0].open(&alice).unwrap_err().to_string(),
        "the key grant does not open with this profile key"
    );
    for n in [&b, &d] {
        let r = get(n, "records/get").await;
        assert_eq!(r.user.as_ref().unwrap().open().unwrap(), "Ada");
    }

    // Removing alice rotates `user`: new messages are sealed to epoch 2, granted to the
    // profiles still registered (bob, carol) only.
    let grants = a_ring.remove_profile("user", "alice").unwrap();
    let mut to = grants
        .iter()
        .map(|g| (g.profile_id().to_owned(), g.epoch()))
        .collect::<Vec<_>>();
    to.sort();
    assert_eq!(to, [("bob".into(), 2), ("carol".into(), 2)]);
    let for_bob = grants
        .into_iter()
        .filter(|g| g.profile_id() == "bob")
        .collect();
    receive(for_bob, &bob, &bob_ring);
    let at_b = get(&b, "records/get").await;
    assert_eq!(at_b.user.as_ref().unwrap().epoch(), Some(2));
    assert_eq!(
        at_b.user.as_ref().unwrap().open().unwrap_err().code(),
        Code::PermissionDenied
    );
    let at_d = get(&d, "records/get").await;
    assert_eq!(at_d.user.as_ref().unwrap().open().unwrap(), "Ada");
    wait_for("the counts", || b.seal_stats().kept_sealed >= 1).await;
    assert_eq!(
        a_ring
            .profiles("user")
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        ["bob", "carol"].into()
    );
}
