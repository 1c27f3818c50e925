//! Real processes finding each other by multicast: discovery, round-robin, failover after
//! SIGKILL, and a restarted server rejoining with the same id on a new port.
//!
//! The test binary runs itself as the server processes (`server_process`, which does nothing
//! unless `RUNAR_TEST_SERVER` is set; see `common::process`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{key, wait_for};
use runar::{Code, DiscoveryOptions, Node, NodeConfig};

#[runar::service(path = "greeter")]
trait Greeter {
    async fn hello(&self, name: String) -> runar::Result<String>;
    async fn peer_count(&self) -> runar::Result<u64>;
}

struct Server {
    name: String,
    node: Node,
}

impl Greeter for Server {
    async fn hello(&self, name: String) -> runar::Result<String> {
        Ok(format!("hello {name} from {}", self.name))
    }
    async fn peer_count(&self) -> runar::Result<u64> {
        Ok(self.node.peers().len() as u64)
    }
}

/// The server role: runs when spawned by the test below, until its stdin closes.
#[test]
fn server_process() {
    let Ok(name) = std::env::var("RUNAR_TEST_SERVER") else {
        return;
    };
    let group = std::env::var("RUNAR_TEST_GROUP").unwrap();
    let keypair = std::env::var("RUNAR_TEST_KEYPAIR").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let discovery =
            DiscoveryOptions::multicast(group).multicast_interface(std::net::Ipv4Addr::LOCALHOST);
        let network = common::network(&key(), discovery).with_keypair_path(keypair);
        let node = Node::new(NodeConfig::new(name.clone(), "test").with_network_config(network))
            .await
            .unwrap();
        node.add_service(GreeterServer::new(Server {
            name,
            node: node.clone(),
        }))
        .await
        .unwrap();
        node.start().await.unwrap();
        println!("READY {}", node.node_id());
        // Serve until the parent closes our stdin (or kills us).
        common::process::until_stdin_closes().await;
        node.stop().await.unwrap();
    });
}

/// A server process and its node id; killed when dropped.
struct ServerProcess {
    process: common::process::ServerProcess,
    id: String,
}

impl ServerProcess {
    fn spawn(name: &str, group: &str, keypair: &Path) -> ServerProcess {
        let process = common::process::ServerProcess::spawn(
            "server_process",
            [
                ("RUNAR_TEST_SERVER", OsStr::new(name)),
                ("RUNAR_TEST_GROUP", OsStr::new(group)),
                ("RUNAR_TEST_KEYPAIR", keypair.as_os_str()),
            ],
        );
        let id = process.ready.clone();
        ServerProcess { process, id }
    }
}

fn temp_keypair(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runar-mp-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("node.key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_discover_balance_fail_over_and_rejoin() {
    common::init_tracing();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.255.{}.{}:{port}", port >> 8, port & 0xff);
    let discovery = DiscoveryOptions::multicast(group.clone())
        .multicast_interface(std::net::Ipv4Addr::LOCALHOST);
    let client = common::node("client", &key(), discovery).await;
    client.start().await.unwrap();
    let greeter = GreeterClient::new(client.clone()).with_timeout(Duration::from_secs(1));

    let (alpha_key, beta_key) = (temp_keypair("alpha"), temp_keypair("beta"));
    let alpha = ServerProcess::spawn("alpha", &group, &alpha_key);
    let mut beta = ServerProcess::spawn("beta", &group, &beta_key);
    let ready = Instant::now();
    let has = |id: &str| client.peers().iter().any(|p| p.to_string() == id);
    wait_for("the client to connect to both servers", || {
        has(&alpha.id) && has(&beta.id)
    })
    .await;
    let discovered = ready.elapsed();
    println!("three processes connected {discovered:?} after the servers were ready");
    assert!(discovered < Duration::from_secs(1), "{discovered:?}");
    // The servers found each other too.
    let deadline = Instant::now() + common::WAIT;
    loop {
        let counts = [
            greeter.peer_count().await.unwrap(),
            greeter.peer_count().await.unwrap(),
        ];
        if counts == [2, 2] {
            break;
        }
        assert!(Instant::now() < deadline, "servers see {counts:?} peers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Round-robin across the two server processes.
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        *count
            .entry(greeter.hello("test".into()).await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(count["hello test from alpha"], 10, "{count:?}");
    assert_eq!(count["hello test from beta"], 10, "{count:?}");

    // SIGKILL beta: calls succeed through alpha within 3 s.
    beta.process.kill();
    let killed = Instant::now();
    let mut consecutive = 0;
    while consecutive < 10 {
        match greeter.hello("test".into()).await {
            Ok(who) if who.ends_with("alpha") => consecutive += 1,
            Ok(who) => panic!("answered by {who} after SIGKILL"),
            Err(e) => {
                assert!(
                    matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
                    "{e}"
                );
                consecutive = 0;
            }
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no failover");
    }
    let failover = killed.elapsed();
    println!("calls succeed through alpha {failover:?} after SIGKILL of beta");
    assert!(failover < Duration::from_secs(3), "{failover:?}");
    assert!(!has(&beta.id));

    // Restarted with its key, beta keeps its id on a new port and rejoins.
    let old_id = beta.id.clone();
    drop(beta);
    let beta = ServerProcess::spawn("beta", &group, &beta_key);
    assert_eq!(beta.id, old_id, "same key, same id");
    let restarted = Instant::now();
    wait_for("beta to rejoin", || has(&beta.id)).await;
    println!(
        "restarted beta rejoined {:?} after it was ready",
        restarted.elapsed()
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let who = greeter.hello("again".into()).await.unwrap();
        seen.insert(who);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    drop(alpha);
    drop(beta);
    client.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(alpha_key.parent().unwrap());
    let _ = std::fs::remove_dir_all(beta_key.parent().unwrap());
}
