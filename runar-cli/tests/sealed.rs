//! The real `runar` binary against nodes serving labelled (sealed) fields: without a keystore
//! it prints each sealed field as `"<sealed:LABEL>"` and refuses to send one; with
//! `--keystore` it opens the labels it holds and seals what it sends; `runar keys` manages the
//! keystore. `describe` shows the labels.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Net, TempDir, failure, json, mode, stdout};
use runar::seal::{KeyPair, Keyring};
use runar::{AbstractService, LifecycleContext, RequestContext};
use runar_codegen_proto_tests::vault::ledgers_server::{Ledgers, LedgersServer};
use runar_codegen_proto_tests::vault::vault_server::{Vault, VaultServer};
use runar_codegen_proto_tests::vault::{Counter, GetRequest, Ledger, Note, Record, record};
use tokio::sync::mpsc;

const NET: Net = Net {
    name: "vault-net",
    secret: "a runar-cli sealed test network secret",
};
/// The keystores' passphrase, as the CLI reads it.
const PASS: (&str, &str) = ("RUNAR_KEYSTORE_PASSPHRASE", "correct horse battery staple");

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

/// Labelled fields inside the elements of a list and the values of a map.
struct Books;

impl Ledgers for Books {
    async fn get(&self, _ctx: RequestContext, _req: GetRequest) -> runar::Result<Ledger> {
        let inner = |plain: u32| record::Inner {
            secret: Some(vec![plain as u8].into()),
            plain,
        };
        Ok(Ledger {
            entries: vec![inner(1), inner(2)],
            by_name: [("ada".to_string(), inner(3)), ("bob".to_string(), inner(4))].into(),
            owner: "o".into(),
        })
    }
}

/// A service taking a `vault.Record`: its action `changed` (the schema's rpc of that name
/// takes one) hands the record's `name` over, opened or the error opening it.
struct Inbox {
    heard: mpsc::UnboundedSender<runar::Result<String>>,
}

impl AbstractService for Inbox {
    fn name(&self) -> &str {
        "Inbox"
    }
    fn path(&self) -> &str {
        "inbox"
    }
    fn schema(&self) -> Option<&'static [u8]> {
        VaultServer::new(Store).schema()
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let heard = self.heard.clone();
        ctx.register_action("changed", move |record: Record, _| {
            let name = match &record.name {
                Some(name) => name.open().cloned(),
                None => Ok(String::new()),
            };
            let _ = heard.send(name);
            async { Ok::<(), runar::Error>(()) }
        })
        .await
    }
}

/// Runs `runar keys ARGS…` on the keystore `dir` (with the passphrase).
async fn keys(dir: &TempDir, args: &[&str]) -> std::process::Output {
    let path = dir.join("");
    let mut all = vec!["--keystore", path.as_str(), "keys"];
    all.extend_from_slice(args);
    NET.run(&all, &[PASS]).await
}

/// A keystore made with `runar keys init` (few PBKDF2 iterations: a test).
async fn init(dir: &TempDir) {
    stdout(&keys(dir, &["init", "--iterations", "1000"]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_fields_print_as_their_label_and_describe_shows_labels() {
    let ring = Arc::new(Keyring::new());
    ring.seal_to("user", 1, KeyPair::generate().public());
    ring.seal_to("system", 1, KeyPair::generate().public());
    let node = NET.node("vault", Some(ring)).await;
    node.add_service(VaultServer::new(Store)).await.unwrap();
    node.start().await.unwrap();

    let out = stdout(
        &NET.run_at(&node, &["--json", "call", "vault/get", "-d", "{}"], &[])
            .await,
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["id"], "r1", "{json}");
    assert_eq!(json["name"], "<sealed:user>", "{json}");
    assert_eq!(json["balance"], "<sealed:system>", "{json}");
    assert_eq!(json["note"], "<sealed:user>", "{json}");
    assert_eq!(json["inner"]["secret"], "<sealed:system>", "{json}");
    assert_eq!(json["inner"]["plain"], 7, "{json}");
    assert!(node.seal_stats().sealed >= 4);

    let described = stdout(&NET.run_at(&node, &["describe", "vault.Record"], &[]).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_fields_inside_lists_and_maps_print_where_they_are() {
    let ring = Arc::new(Keyring::new());
    ring.seal_to("system", 1, KeyPair::generate().public());
    let node = NET.node("ledger", Some(ring)).await;
    node.add_service(LedgersServer::new(Books)).await.unwrap();
    node.start().await.unwrap();

    let out = stdout(
        &NET.run_at(&node, &["--json", "call", "ledgers/get", "-d", "{}"], &[])
            .await,
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (at, plain) in [(0, 1), (1, 2)] {
        let entry = &json["entries"][at];
        assert_eq!(entry["secret"], "<sealed:system>", "{json}");
        assert_eq!(entry["plain"], plain, "{json}");
    }
    for (key, plain) in [("ada", 3), ("bob", 4)] {
        let value = &json["byName"][key];
        assert_eq!(value["secret"], "<sealed:system>", "{json}");
        assert_eq!(value["plain"], plain, "{json}");
    }
    assert_eq!(json["owner"], "o", "{json}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_init_generate_rotate_list_export_import_revoke() {
    let a = TempDir::new("keys-a");
    init(&a).await;
    assert_eq!(mode(a.path()), 0o700);
    for file in ["keystore", "sealing.key"] {
        assert_eq!(mode(a.path().join(file)), 0o600, "{file}");
    }
    // A second init, a wrong passphrase, no passphrase: refused.
    let (code, err) = failure(&keys(&a, &["init"]).await);
    assert_eq!(code, 16, "AlreadyExists: {err}");
    let a_path = a.join("");
    let wrong = NET
        .run(
            &["--keystore", &a_path, "keys", "list"],
            &[("RUNAR_KEYSTORE_PASSPHRASE", "wrong")],
        )
        .await;
    let (code, err) = failure(&wrong);
    assert_eq!(code, 17, "PermissionDenied: {err}");
    let (code, err) = failure(&NET.run(&["--keystore", &a_path, "keys", "list"], &[]).await);
    assert_eq!(code, 13, "InvalidArgument: {err}");
    assert!(err.contains("RUNAR_KEYSTORE_PASSPHRASE"), "{err}");

    let generated = json(&keys(&a, &["--json", "generate", "user"]).await);
    assert_eq!(generated["epoch"], 1);
    assert_eq!(generated["new"], true);
    assert_eq!(
        json(&keys(&a, &["--json", "generate", "user"]).await)["new"],
        false
    );
    assert_eq!(mode(a.path().join("label.user.key")), 0o600);
    let rotated = json(&keys(&a, &["--json", "rotate", "user"]).await);
    assert_eq!(rotated["epoch"], 2);
    stdout(&keys(&a, &["generate", "system"]).await);

    let listed = keys(&a, &["--json", "list"]).await;
    let text = stdout(&listed);
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = list["keys"].as_array().unwrap();
    let row = |label: &str, epoch: u64| {
        rows.iter()
            .find(|r| r["label"] == label && r["epoch"] == epoch)
            .unwrap_or_else(|| panic!("no {label} {epoch} in {list}"))
    };
    assert_eq!(row("user", 1)["state"], "retired");
    assert_eq!(row("user", 2)["state"], "current");
    assert_eq!(row("user", 2)["key_id"], rotated["key_id"]);
    assert_eq!(row("system", 1)["state"], "current");
    assert!(!text.contains("secret"), "no private material: {text}");
    assert!(stdout(&keys(&a, &["list"]).await).contains("retired"));

    // Export the key pair to a 0600 file, the public key to stdout.
    let files = TempDir::new("keys-files");
    std::fs::create_dir_all(files.path()).unwrap();
    let pair_file = files.join("user-2.json");
    stdout(&keys(&a, &["export", "user", "2", "--out", &pair_file]).await);
    assert_eq!(mode(&pair_file), 0o600);
    assert!(
        std::fs::read_to_string(&pair_file)
            .unwrap()
            .contains("secret")
    );
    let (code, _) = failure(&keys(&a, &["export", "user", "2", "--out", &pair_file]).await);
    assert_eq!(code, 16, "an existing file is not overwritten");
    let public = stdout(&keys(&a, &["export", "system", "1", "--public"]).await);
    assert!(!public.contains("secret"), "{public}");

    // Another keystore holds user epoch 2 and seals to system.
    let b = TempDir::new("keys-b");
    init(&b).await;
    let public_file = files.join("system-1.pub.json");
    std::fs::write(&public_file, &public).unwrap();
    let imported = json(&keys(&b, &["--json", "import", "user", "2", &pair_file]).await);
    assert_eq!(imported["public_only"], false);
    assert_eq!(imported["key_id"], rotated["key_id"]);
    let (code, err) = failure(&keys(&b, &["import", "user", "3", &pair_file]).await);
    assert_eq!(code, 13, "another epoch than the file's: {err}");
    let imported = json(&keys(&b, &["--json", "import", "system", "1", &public_file]).await);
    assert_eq!(imported["public_only"], true);
    assert_eq!(mode(b.path().join("label.user.key")), 0o600);
    assert_eq!(mode(b.path().join("public.system.key")), 0o600);
    let list = json(&keys(&b, &["--json", "list"]).await);
    let states: Vec<_> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["label"].as_str().unwrap().to_owned(),
                r["epoch"].as_u64().unwrap(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("user".to_owned(), 2, "current".to_owned()),
            ("system".to_owned(), 1, "seal-to".to_owned())
        ]
    );

    // Revoke: a key pair's secret is erased; a public key is removed.
    let revoked = json(&keys(&a, &["--json", "revoke", "user", "1"]).await);
    assert_eq!(revoked["revoked"], true);
    let list = json(&keys(&a, &["--json", "list"]).await);
    let user1 = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "user" && r["epoch"] == 1)
        .unwrap()
        .clone();
    assert_eq!(user1["state"], "revoked");
    assert_eq!(user1["key_id"], serde_json::Value::Null);
    let (code, _) = failure(&keys(&a, &["export", "user", "1"]).await);
    assert_eq!(code, 15, "NotFound once revoked");
    let removed = json(&keys(&b, &["--json", "revoke", "system", "1"]).await);
    assert_eq!(removed["public_removed"], true);
    assert!(!b.path().join("public.system.key").exists());
    let (code, _) = failure(&keys(&b, &["revoke", "system", "1"]).await);
    assert_eq!(code, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_keystore_the_cli_opens_the_labels_it_holds() {
    let dir = TempDir::new("open");
    init(&dir).await;
    stdout(&keys(&dir, &["generate", "system"]).await);
    let export: serde_json::Value = serde_json::from_str(&stdout(
        &keys(&dir, &["export", "system", "1", "--public"]).await,
    ))
    .unwrap();
    let public = export["public"].as_str().unwrap();
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&public[2 * i..2 * i + 2], 16).unwrap();
    }
    // The node seals `system` to the CLI's keystore's key, `user` to a key the CLI lacks.
    let ring = Arc::new(Keyring::new());
    ring.seal_to("user", 1, KeyPair::generate().public());
    ring.seal_to(
        "system",
        1,
        runar::seal::PublicKey::from_bytes(bytes).unwrap(),
    );
    let node = NET.node("vault", Some(ring)).await;
    node.add_service(VaultServer::new(Store)).await.unwrap();
    node.start().await.unwrap();

    let path = dir.join("");
    let args = ["--keystore", path.as_str(), "--json", "call", "vault/get"];
    let record = json(&NET.run_at(&node, &args, &[PASS]).await);
    assert_eq!(record["balance"], "42", "opened: {record}");
    assert_eq!(
        record["inner"]["secret"], "AQID",
        "opened (bytes in base64): {record}"
    );
    assert_eq!(record["inner"]["plain"], 7, "{record}");
    assert_eq!(record["name"], "<sealed:user>", "{record}");
    assert_eq!(record["note"], "<sealed:user>", "{record}");
    assert_eq!(record["id"], "r1", "{record}");
    // The other action, and a stream of them would go the same way.
    let args = ["--keystore", path.as_str(), "--json", "call", "vault/count"];
    assert_eq!(json(&NET.run_at(&node, &args, &[PASS]).await)["n"], "5");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_seals_a_labelled_field_it_sends_or_refuses_before_sending() {
    // The node holds `user`.
    let user = KeyPair::generate();
    let ring = Arc::new(Keyring::new());
    ring.hold("user", 1, &user);
    let node = NET.node("inbox", Some(ring)).await;
    let (tx, mut heard) = mpsc::unbounded_channel();
    node.add_service(Inbox { heard: tx }).await.unwrap();
    node.start().await.unwrap();
    let data = r#"{"id":"r9","name":"Grace"}"#;

    // No keystore: refused before anything is sent.
    let out = NET
        .run_at(&node, &["call", "inbox/changed", "-d", data], &[])
        .await;
    let (code, err) = failure(&out);
    assert_eq!(code, 13, "InvalidArgument: {err}");
    assert!(err.contains("no key to seal label `user`"), "{err}");
    assert!(err.contains("hint:") && err.contains("--keystore"), "{err}");
    assert!(heard.try_recv().is_err(), "nothing reached the node");
    // A message without the labelled field goes as it is.
    stdout(
        &NET.run_at(
            &node,
            &["call", "inbox/changed", "-d", r#"{"id":"r0"}"#],
            &[],
        )
        .await,
    );
    assert_eq!(heard.recv().await.unwrap().unwrap(), "");

    // A keystore that only seals to `user` (its public key imported): the node opens it.
    let dir = TempDir::new("send");
    init(&dir).await;
    let files = TempDir::new("send-files");
    std::fs::create_dir_all(files.path()).unwrap();
    let public_file = files.join("user-1.pub.json");
    let public: String = user
        .public()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &public_file,
        serde_json::json!({ "label": "user", "epoch": 1, "public": public }).to_string(),
    )
    .unwrap();
    stdout(&keys(&dir, &["import", "user", "1", &public_file]).await);
    let before = node.seal_stats();
    let path = dir.join("");
    let args = [
        "--keystore",
        path.as_str(),
        "call",
        "inbox/changed",
        "-d",
        data,
    ];
    stdout(&NET.run_at(&node, &args, &[PASS]).await);
    assert_eq!(
        heard.recv().await.unwrap().unwrap(),
        "Grace",
        "opened by the node"
    );
    assert_eq!(node.seal_stats().opened, before.opened + 1);
    node.stop().await.unwrap();
}
