//! Labelled fields generated from `proto/vault/vault.proto`, across three nodes over QUIC:
//! A serves and publishes records; B holds `system`, C holds `user` and `system`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, key, network};
use runar::seal::{KeyPair, Keyring};
use runar::{Code, DiscoveryOptions, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::vault::vault_client::VaultClient;
use runar_codegen_proto_tests::vault::vault_server::{Vault, VaultServer};
use runar_codegen_proto_tests::vault::{Counter, GetRequest, Note, Record, record};
use tokio::sync::mpsc;

fn full_record() -> Record {
    Record {
        id: "r1".into(),
        name: Some("Ada".to_string().into()),
        balance: Some(42.into()),
        note: Some(
            Note {
                text: "private".into(),
            }
            .into(),
        ),
        inner: Some(record::Inner {
            secret: Some(vec![1, 2, 3].into()),
            plain: 7,
        }),
    }
}

struct Store;

impl Vault for Store {
    async fn get(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<Record> {
        Ok(full_record())
    }
    async fn count(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<Counter> {
        Ok(Counter { n: Some(5.into()) })
    }
}

async fn sealed_node(name: &str, ring: &Arc<Keyring>, peers: &[&Node]) -> Node {
    let addrs: Vec<_> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    let config = NodeConfig::new(name, "test")
        .with_network_config(network(&key(), DiscoveryOptions::static_peers(addrs)))
        .with_key_resolver(ring.clone());
    Node::new(config).await.unwrap()
}

#[tokio::test]
async fn generated_labelled_fields_open_only_where_their_keys_are() {
    let user = KeyPair::generate();
    let system = KeyPair::generate();
    let a_ring = Arc::new(Keyring::new());
    a_ring.seal_to("user", 1, user.public());
    a_ring.seal_to("system", 1, system.public());
    let b_ring = Arc::new(Keyring::new());
    b_ring.hold("system", 1, &system);
    let c_ring = Arc::new(Keyring::new());
    c_ring.hold("user", 1, &user);
    c_ring.hold("system", 1, &system);

    let a = sealed_node("a", &a_ring, &[]).await;
    a.add_service(VaultServer::new(Store)).await.unwrap();
    a.start().await.unwrap();
    let b = sealed_node("b", &b_ring, &[&a]).await;
    let c = sealed_node("c", &c_ring, &[&a]).await;
    b_ring.trust_node(a.node_id(), a.sealing_key());
    c_ring.trust_node(a.node_id(), a.sealing_key());
    b.start().await.unwrap();
    c.start().await.unwrap();

    // Local: moved, not sealed.
    let local = VaultClient::new(a.clone())
        .get(GetRequest::default())
        .await
        .unwrap();
    assert_eq!(local, full_record());
    assert_eq!(a.seal_stats().sealed, 0);

    let at_b = VaultClient::new(b.clone()).with_wait_for_ready(true);
    let r = at_b.get(GetRequest::default()).await.unwrap();
    assert_eq!(r.id, "r1");
    assert_eq!(*r.balance.as_ref().unwrap().open().unwrap(), 42);
    assert_eq!(
        r.inner
            .as_ref()
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .open()
            .unwrap(),
        &vec![1, 2, 3]
    );
    assert_eq!(r.inner.as_ref().unwrap().plain, 7);
    for denied in [
        r.name.as_ref().unwrap().open().map(|_| ()),
        r.note.as_ref().unwrap().open().map(|_| ()),
    ] {
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }
    let counter = at_b.count(GetRequest::default()).await.unwrap();
    assert_eq!(*counter.n.unwrap().open().unwrap(), 5);

    let at_c = VaultClient::new(c.clone()).with_wait_for_ready(true);
    assert_eq!(
        at_c.get(GetRequest::default()).await.unwrap(),
        full_record()
    );

    // Events: C subscribes through the generated client, A publishes through its own.
    let (tx, mut rx) = mpsc::unbounded_channel();
    at_c.subscribe_changed(move |r: Record, _ctx| {
        let tx = tx.clone();
        async move {
            tx.send(r).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();
    let publisher = VaultClient::new(a.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        assert!(tokio::time::Instant::now() < deadline, "no event delivered");
        publisher.publish_changed(full_record()).await.unwrap();
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            break r;
        }
    };
    assert_eq!(got, full_record());
    assert!(c.seal_stats().opened >= 8);
}
