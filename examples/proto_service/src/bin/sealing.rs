//! Sealed fields across three nodes over QUIC, in one process: node A serves an account record
//! whose `user_note` is labelled `user` and whose `risk_score` is labelled `system`
//! (`proto/records.proto`). B holds the `system` key, C holds both. Each asks A for the record
//! through the generated client and prints what it can read; then A reads it locally, which
//! seals nothing.
//!
//! Run with `cargo run -p proto_service --bin sealing`.

use std::sync::Arc;
use std::time::Duration;

use runar::codegen::Sealed;
use runar::seal::{KeyPair, Keyring, SealedField, SealedValue};
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig, RequestContext};

/// The code generated from `proto/records.proto`.
pub mod records {
    runar::include_proto!("records");
}

use records::accounts_client::AccountsClient;
use records::accounts_server::{Accounts, AccountsServer};
use records::{Account, GetAccount};

/// A's service: one account for any id.
struct Bank;

impl Accounts for Bank {
    async fn get(&self, _ctx: RequestContext, request: GetAccount) -> runar::Result<Account> {
        Ok(Account {
            id: request.id,
            user_note: Some(String::from("prefers paper statements").into()),
            risk_score: Some(17.into()),
        })
    }
}

fn network(key: &NetworkKey, discovery: DiscoveryOptions) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address(([127, 0, 0, 1], 0).into())
        .with_key(key.clone())
        .with_discovery(discovery)
}

/// A field as its node sees it: the opened value, or `<sealed:label>` and why.
fn show<T: SealedValue, F: SealedField>(field: Option<&Sealed<T, F>>) -> String {
    match field.map(|f| (f, f.open())) {
        None => "<unset>".to_owned(),
        Some((_, Ok(value))) => format!("{value:?}"),
        Some((f, Err(e))) => format!("<sealed:{}> ({:?})", f.label(), e.code()),
    }
}

fn print(who: &str, account: &Account) {
    println!(
        "{who}: id {:?}, user_note {}, risk_score {}",
        account.id,
        show(account.user_note.as_ref()),
        show(account.risk_score.as_ref())
    );
}

/// Prints the node's sealing counters.
fn stats(who: &str, node: &Node) {
    let s = node.seal_stats();
    println!(
        "{who}: sealed {}, opened {}, kept sealed {}",
        s.sealed, s.opened, s.kept_sealed
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = NetworkKey::from_secret("sealing example");
    // The labels' keys. A seals to both and opens neither; B holds `system`; C holds both.
    let (user, system) = (KeyPair::generate(), KeyPair::generate());
    let a_ring = Arc::new(Keyring::new());
    a_ring.seal_to("user", 1, user.public());
    a_ring.seal_to("system", 1, system.public());
    let b_ring = Arc::new(Keyring::new());
    b_ring.hold("system", 1, &system);
    let c_ring = Arc::new(Keyring::new());
    c_ring.hold("user", 1, &user);
    c_ring.hold("system", 1, &system);

    let a = Node::new(
        NodeConfig::new("a", "records-net")
            .with_network_config(network(&key, DiscoveryOptions::none()))
            .with_key_resolver(a_ring),
    )
    .await?;
    a.add_service(AccountsServer::new(Bank)).await?;
    a.start().await?;
    let address = a.local_addr().ok_or("node A has no address")?;

    let mut readers = Vec::new();
    for (name, ring) in [("b", b_ring), ("c", c_ring)] {
        // B and C open what A sealed: they know A's sealing key.
        ring.trust_node(a.node_id(), a.sealing_key());
        let node = Node::new(
            NodeConfig::new(name, "records-net")
                .with_network_config(network(&key, DiscoveryOptions::static_peers([address])))
                .with_key_resolver(ring),
        )
        .await?;
        node.start().await?;
        node.wait_for_action("accounts/get", Duration::from_secs(5))
            .await?;
        readers.push((name, node));
    }

    for (name, node) in &readers {
        let who = format!(
            "{} (holds {})",
            name.to_uppercase(),
            match *name {
                "b" => "system",
                _ => "user, system",
            }
        );
        let account = AccountsClient::new(node.clone())
            .get(GetAccount {
                id: "acct-7".into(),
            })
            .await?;
        print(&who, &account);
    }

    // A local call moves the record: nothing is sealed, whatever A's keys.
    let local = AccountsClient::new(a.clone())
        .get(GetAccount {
            id: "acct-7".into(),
        })
        .await?;
    print("A, local call", &local);
    stats(
        "A (two remote answers of two labelled fields each, one local)",
        &a,
    );
    for (name, node) in &readers {
        stats(&name.to_uppercase(), node);
    }

    for (_, node) in readers {
        node.stop().await?;
    }
    a.stop().await?;
    Ok(())
}
