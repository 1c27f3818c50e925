//! Labelled fields of a `#[runar::service]` service, written with `#[runar::message]` on a
//! hand-written prost message, across three nodes over QUIC: A serves, B holds `system`, C holds
//! `user` and `system`. The macro's fields are the `.proto`'s (`vault.Record`), so a `.proto`
//! client opens what a macro service sealed, and a macro client what a `.proto` service sealed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{key, network};
use runar::seal::{KeyPair, Keyring};
use runar::{Code, DiscoveryOptions, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::vault;
use runar_codegen_proto_tests::vault::GetRequest;

/// The code-first side, as a user's crate would write it.
#[allow(unreachable_pub)]
mod code_first {
    use runar_codegen_proto_tests::vault::GetRequest;

    /// `vault.Record`'s first three fields, written by hand.
    #[runar::message(package = "vault")]
    #[derive(Clone, PartialEq, runar::prost::Message)]
    #[prost(prost_path = "::runar::prost")]
    pub struct Record {
        #[prost(string, tag = "1")]
        pub id: String,
        #[runar(label = "user")]
        #[prost(string, tag = "2")]
        pub name: String,
        #[runar(label = "system")]
        #[prost(int64, tag = "3")]
        pub balance: i64,
    }

    #[runar::service(path = "vault")]
    pub trait Vault {
        async fn get(&self, req: GetRequest) -> runar::Result<Record>;
    }

    pub struct Store;

    impl Vault for Store {
        async fn get(&self, _req: GetRequest) -> runar::Result<Record> {
            Ok(record())
        }
    }

    pub fn record() -> Record {
        Record {
            id: "r1".into(),
            name: Some(runar::Sealed::new("Ada".to_string())),
            balance: Some(42.into()),
        }
    }
}

/// The `.proto` side: the same record.
struct ProtoStore;

impl vault::vault_server::Vault for ProtoStore {
    async fn get(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<vault::Record> {
        Ok(vault::Record {
            id: "r1".into(),
            name: Some("Ada".to_string().into()),
            balance: Some(42.into()),
            note: None,
            inner: None,
        })
    }
    async fn count(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<vault::Counter> {
        Ok(vault::Counter { n: Some(5.into()) })
    }
}

struct Keys {
    a: Arc<Keyring>,
    b: Arc<Keyring>,
    c: Arc<Keyring>,
}

fn keys() -> Keys {
    let user = KeyPair::generate();
    let system = KeyPair::generate();
    let a = Arc::new(Keyring::new());
    a.seal_to("user", 1, user.public());
    a.seal_to("system", 1, system.public());
    let b = Arc::new(Keyring::new());
    b.hold("system", 1, &system);
    let c = Arc::new(Keyring::new());
    c.hold("user", 1, &user);
    c.hold("system", 1, &system);
    Keys { a, b, c }
}

async fn sealed_node(name: &str, ring: &Arc<Keyring>, peers: &[&Node]) -> Node {
    let addrs: Vec<_> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    let config = NodeConfig::new(name, "test")
        .with_network_config(network(&key(), DiscoveryOptions::static_peers(addrs)))
        .with_key_resolver(ring.clone());
    Node::new(config).await.unwrap()
}

/// A serving (started), B and C dialing it, both trusting A's sealing key.
async fn mesh(keys: &Keys, serve: impl AsyncFnOnce(&Node)) -> (Node, Node, Node) {
    let a = sealed_node("a", &keys.a, &[]).await;
    serve(&a).await;
    a.start().await.unwrap();
    let b = sealed_node("b", &keys.b, &[&a]).await;
    let c = sealed_node("c", &keys.c, &[&a]).await;
    keys.b.trust_node(a.node_id(), a.sealing_key());
    keys.c.trust_node(a.node_id(), a.sealing_key());
    b.start().await.unwrap();
    c.start().await.unwrap();
    (a, b, c)
}

#[tokio::test]
async fn a_macro_service_seals_its_labelled_fields_for_their_holders_only() {
    let keys = keys();
    let (a, b, c) = mesh(&keys, async |a: &Node| {
        a.add_service(code_first::VaultServer::new(code_first::Store))
            .await
            .unwrap();
    })
    .await;

    // Local: moved, not sealed.
    let local = code_first::VaultClient::new(a.clone())
        .get(GetRequest::default())
        .await
        .unwrap();
    assert_eq!(local, code_first::record());
    assert_eq!(a.seal_stats().sealed, 0);

    // B (holds `system`), through the macro client.
    let r = code_first::VaultClient::new(b.clone())
        .with_wait_for_ready(true)
        .get(GetRequest::default())
        .await
        .unwrap();
    assert_eq!(r.id, "r1");
    assert_eq!(*r.balance.as_ref().unwrap().open().unwrap(), 42);
    let denied = r.name.as_ref().unwrap().open().unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(r.name.as_ref().unwrap().is_sealed());
    assert!(a.seal_stats().sealed >= 2);

    // C (holds both), through the client generated from the `.proto`: it opens what the
    // macro service sealed.
    let r = vault::vault_client::VaultClient::new(c.clone())
        .with_wait_for_ready(true)
        .get(GetRequest::default())
        .await
        .unwrap();
    assert_eq!(r.name.as_ref().unwrap().open().unwrap(), "Ada");
    assert_eq!(*r.balance.as_ref().unwrap().open().unwrap(), 42);
    assert!(c.seal_stats().opened >= 2);
}

#[tokio::test]
async fn a_macro_client_opens_what_a_proto_service_sealed() {
    let keys = keys();
    let (_a, b, c) = mesh(&keys, async |a: &Node| {
        a.add_service(vault::vault_server::VaultServer::new(ProtoStore))
            .await
            .unwrap();
    })
    .await;

    let at_c = code_first::VaultClient::new(c.clone()).with_wait_for_ready(true);
    assert_eq!(
        at_c.get(GetRequest::default()).await.unwrap(),
        code_first::record()
    );
    let r = code_first::VaultClient::new(b.clone())
        .with_wait_for_ready(true)
        .get(GetRequest::default())
        .await
        .unwrap();
    assert_eq!(*r.balance.as_ref().unwrap().open().unwrap(), 42);
    assert_eq!(
        r.name.as_ref().unwrap().open().unwrap_err().code(),
        Code::PermissionDenied
    );
}

/// The labels of a macro service's messages are in its schema, as for a `.proto` service:
/// `$runar/services`, asked over QUIC, defines `vault.Record` (a `#[runar::message]`) with
/// `[(runar.label) = "user"]` on `name` and `"system"` on `balance`, and `Get` returns it by
/// its full name.
#[tokio::test]
async fn a_macro_service_schema_shows_its_labels() {
    use prost::Message as _;
    let keys = keys();
    let (a, b, _c) = mesh(&keys, async |a: &Node| {
        a.add_service(code_first::VaultServer::new(code_first::Store))
            .await
            .unwrap();
    })
    .await;
    b.wait_for_action("vault/get", common::WAIT).await.unwrap();
    let list: runar::introspection::ServiceList = b
        .request_on(
            a.node_id(),
            "$runar/services",
            runar::introspection::ServiceListRequest::default(),
            runar::RequestOptions::default(),
        )
        .await
        .unwrap();
    let vault = list.services.iter().find(|s| s.path == "vault").unwrap();
    let set =
        runar::codegen::prost_types::FileDescriptorSet::decode(vault.schema.as_ref()).unwrap();
    let file = &set.file[0];
    let get = &file.service[0].method[0];
    assert_eq!(get.output_type(), ".vault.Record");
    let record = file
        .message_type
        .iter()
        .find(|m| m.name() == "Record")
        .expect("vault.Record is defined in the schema");
    let fields: Vec<_> = record
        .field
        .iter()
        .map(|f| (f.name(), f.number()))
        .collect();
    assert_eq!(fields, [("id", 1), ("name", 2), ("balance", 3)]);
    assert!(file.dependency.iter().any(|d| d == "runar/options.proto"));
    // The options' extension, `(runar.label)` (51702), as the `.proto` path writes it.
    for label in ["user", "system"] {
        let mut option = Vec::new();
        runar::prost::encoding::string::encode(51702, &label.to_owned(), &mut option);
        assert!(
            vault
                .schema
                .windows(option.len())
                .any(|w| w == option.as_slice()),
            "the `{label}` label is in the schema"
        );
    }
}
