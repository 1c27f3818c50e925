//! Profiling driver for sealed fields (issue 16): `n` unary echoes of a record with one labelled
//! field between two nodes over QUIC on 127.0.0.1. Each call seals the field twice (request at
//! the client, answer at the server) and opens it twice, so a call is two sealed messages.
//!
//! `cargo build --release -p runar-runtime --example prof_seal`, then
//! `valgrind --tool=callgrind --dump-instr=no target/release/examples/prof_seal 200` and again
//! with 400: the difference over 200 calls is the cost of a call, without the setup.
//! A second argument `plain` sends the field unlabelled, for the baseline.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use runar_runtime::codegen::Sealed;
use runar_runtime::seal::{KeyPair, Keyring, SealedField};
use runar_runtime::{
    AbstractService, DiscoveryOptions, LifecycleContext, NetworkConfig, NetworkKey, Node,
    NodeConfig, Result,
};

struct NameField;
impl SealedField for NameField {
    const MESSAGE: &'static str = "prof.Record";
    const FIELD: u32 = 2;
    const LABEL: &'static str = "user";
}

/// What `runar-build` generates for `message Record { bytes data = 1; string name = 2
/// [(runar.label) = "user"]; }`.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(oneof = "Sealed::<String, NameField>", tags = "2")]
    name: Option<Sealed<String, NameField>>,
}

/// The same record with the field unlabelled.
#[derive(Clone, PartialEq, prost::Message)]
struct Plain {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
    #[prost(string, tag = "2")]
    name: String,
}

struct Echo;
impl AbstractService for Echo {
    fn name(&self) -> &str {
        "Echo"
    }
    fn path(&self) -> &str {
        "echo"
    }
    async fn init(&self, ctx: &LifecycleContext) -> Result<()> {
        ctx.register_action("sealed", |r: Record, _| async move {
            r.name.as_ref().unwrap().open()?;
            Ok(r)
        })
        .await?;
        ctx.register_action("plain", |r: Plain, _| async move { Ok(r) })
            .await
    }
}

fn network(peers: Vec<std::net::SocketAddr>) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(NetworkKey::from_secret("prof_seal network secret"))
        .with_discovery(DiscoveryOptions::static_peers(peers))
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let plain = std::env::args().nth(2).as_deref() == Some("plain");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let user = KeyPair::generate();
        let ring = |user: &KeyPair| {
            let ring = Arc::new(Keyring::new());
            ring.hold("user", 1, user);
            ring
        };
        let server = Node::new(
            NodeConfig::new("server", "prof")
                .with_network_config(network(vec![]))
                .with_key_resolver(ring(&user)),
        )
        .await
        .unwrap();
        server.add_service(Echo).await.unwrap();
        server.start().await.unwrap();
        let client = Node::new(
            NodeConfig::new("client", "prof")
                .with_network_config(network(vec![server.local_addr().unwrap()]))
                .with_key_resolver(ring(&user)),
        )
        .await
        .unwrap();
        client.start().await.unwrap();
        client
            .wait_for_action("echo/sealed", Duration::from_secs(10))
            .await
            .unwrap();
        for _ in 0..n {
            if plain {
                let r = Plain {
                    data: vec![0xA5; 100],
                    name: "Ada Lovelace".into(),
                };
                let a: Plain = client.request("echo/plain", r).await.unwrap();
                assert_eq!(a.name, "Ada Lovelace");
            } else {
                let r = Record {
                    data: vec![0xA5; 100],
                    name: Some(Sealed::new("Ada Lovelace".into())),
                };
                let a: Record = client.request("echo/sealed", r).await.unwrap();
                assert_eq!(a.name.unwrap().open().unwrap(), "Ada Lovelace");
            }
        }
        let (c, s) = (client.seal_stats(), server.seal_stats());
        println!(
            "calls {n}: sealed {} envelopes {} opened {}",
            c.sealed + s.sealed,
            c.envelopes + s.envelopes,
            c.opened + s.opened
        );
        let _ = client.stop().await;
        let _ = server.stop().await;
    });
}
