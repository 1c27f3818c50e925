//! The real `runar` binary against a node serving labelled (sealed) fields: the CLI holds no
//! label keys, so it prints each sealed field as `"<sealed:LABEL>"` (the rest of the message as
//! usual), and `describe` shows the labels.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use runar::seal::{KeyPair, Keyring};
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, RequestContext};
use runar_codegen_proto_tests::vault::vault_server::{Vault, VaultServer};
use runar_codegen_proto_tests::vault::{Counter, GetRequest, Note, Record, record};

const SECRET: &str = "a runar-cli sealed test network secret";
const WAIT: Duration = Duration::from_secs(20);

struct Store;

impl Vault for Store {
    async fn get(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<Record> {
        Ok(Record {
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
        })
    }
    async fn count(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<Counter> {
        Ok(Counter { n: Some(5.into()) })
    }
}

async fn runar(peer: &Node, args: &[&str]) -> Output {
    let addr = peer.local_addr().unwrap().to_string();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"));
    command
        .arg("--peer")
        .arg(addr)
        .args(args)
        .env("RUNAR_KEY", SECRET)
        .env("RUNAR_NETWORK", "vault-net")
        .kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("runar did not finish")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "runar failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_fields_print_as_their_label_and_describe_shows_labels() {
    let ring = Arc::new(Keyring::new());
    ring.seal_to("user", 1, KeyPair::generate().public());
    ring.seal_to("system", 1, KeyPair::generate().public());
    let network = NetworkConfig::default()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_key(NetworkKey::from_secret(SECRET))
        .with_discovery(DiscoveryOptions::static_peers(Vec::new()));
    let node = Node::new(
        NodeConfig::new("vault", "vault-net")
            .with_network_config(network)
            .with_key_resolver(ring),
    )
    .await
    .unwrap();
    node.add_service(VaultServer::new(Store)).await.unwrap();
    node.start().await.unwrap();

    let out = stdout(&runar(&node, &["--json", "call", "vault/get", "-d", "{}"]).await);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["id"], "r1", "{json}");
    assert_eq!(json["name"], "<sealed:user>", "{json}");
    assert_eq!(json["balance"], "<sealed:system>", "{json}");
    assert_eq!(json["note"], "<sealed:user>", "{json}");
    assert_eq!(json["inner"]["secret"], "<sealed:system>", "{json}");
    assert_eq!(json["inner"]["plain"], 7, "{json}");
    assert!(node.seal_stats().sealed >= 4);

    let described = stdout(&runar(&node, &["describe", "vault.Record"]).await);
    assert!(
        described.contains(r#"string name = 2 [(runar.label) = "user"];"#),
        "{described}"
    );
    assert!(
        described.contains(r#"bytes secret = 1 [(runar.label) = "system"];"#),
        "{described}"
    );
    assert!(described.contains("string id = 1;"), "{described}");
    node.stop().await.unwrap();
}
