//! The main demo: several processes find each other by multicast and call typed remote methods.
//!
//! `cargo run --example mesh` starts two server processes (this same program, run as
//! `mesh server NAME`) and a client node, then shows discovery, round-robin between the
//! servers, the failover when one of them is killed (SIGKILL, no goodbye), and its return.
//!
//! The demo keeps multicast on the loopback interface so it runs anywhere; on a LAN, drop the
//! `multicast_interface` line and bind `0.0.0.0:0` so nodes on other hosts join.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};

/// Greets, and says which process answered.
#[runar::service(path = "greeter")]
pub trait Greeter {
    /// Says hello to `name`.
    async fn hello(&self, name: String) -> runar::Result<String>;
}

struct Server {
    name: String,
}

impl Greeter for Server {
    async fn hello(&self, name: String) -> runar::Result<String> {
        Ok(format!(
            "hello {name}, from {} (pid {})",
            self.name,
            std::process::id()
        ))
    }
}

fn network(group: &str) -> NetworkConfig {
    NetworkConfig::default()
        .with_bind_address(([127, 0, 0, 1], 0).into())
        .with_key(NetworkKey::from_secret(
            "runar mesh demo: use a long random secret",
        ))
        .with_discovery(DiscoveryOptions::multicast(group).multicast_interface(Ipv4Addr::LOCALHOST))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [role, name, group, key_path] if role == "server" => serve(name, group, key_path).await,
        [] => demo().await,
        _ => bail!("usage: mesh            (the demo)\n       mesh server NAME GROUP KEY_PATH"),
    }
}

/// A server process: hosts the greeter until its stdin closes.
async fn serve(name: &str, group: &str, key_path: &str) -> anyhow::Result<()> {
    let config = NodeConfig::new(name, "demo")
        .with_network_config(network(group).with_keypair_path(key_path));
    let node = Node::new(config).await?;
    node.add_service(GreeterServer::new(Server { name: name.into() }))
        .await?;
    node.start().await?;
    println!(
        "  [{name}] serving as node {} on {:?}",
        node.node_id(),
        node.local_addr()
    );
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await?;
    node.stop().await?;
    Ok(())
}

/// A server process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(name: &str, group: &str, key_path: &PathBuf) -> anyhow::Result<Process> {
    let child = Command::new(std::env::current_exe()?)
        .args(["server", name, group])
        .arg(key_path)
        .stdin(Stdio::piped())
        .spawn()
        .context("spawning a server process")?;
    Ok(Process(child))
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

async fn demo() -> anyhow::Result<()> {
    // A group and port of our own, so several demos on one host do not mix.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let group = format!("239.255.42.98:{port}");
    let dir = std::env::temp_dir().join(format!("runar-mesh-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_of = |name: &str| dir.join(format!("{name}.key"));

    println!("1. Discovery: a client node and two server processes on multicast group {group}");
    let client =
        Node::new(NodeConfig::new("client", "demo").with_network_config(network(&group))).await?;
    client.start().await?;
    let alpha = spawn_server("alpha", &group, &key_of("alpha"))?;
    let mut beta = spawn_server("beta", &group, &key_of("beta"))?;
    let took = wait_until("both servers", Duration::from_secs(30), || {
        client.peers().len() == 2
    })
    .await?;
    println!(
        "   the client is connected to {} peers ({took:?} after spawning them)\n",
        client.peers().len()
    );

    let greeter = GreeterClient::new(client.clone()).with_timeout(Duration::from_millis(500));
    println!("2. Round-robin: typed remote calls alternate between the two servers");
    for i in 0..4 {
        println!("   call {i}: {}", greeter.hello("world".into()).await?);
    }

    println!("\n3. Failover: SIGKILL beta (no goodbye); calls fail over to alpha");
    beta.0.kill()?;
    beta.0.wait()?;
    let killed = Instant::now();
    let mut answered = 0;
    while answered < 3 {
        match greeter.hello("world".into()).await {
            Ok(text) => {
                println!("   {:>5} ms: {text}", killed.elapsed().as_millis());
                if text.contains("alpha") && client.peers().len() == 1 {
                    answered += 1;
                }
            }
            Err(e) => println!(
                "   {:>6.0?}: {} ({})",
                killed.elapsed(),
                e.code(),
                e.message()
            ),
        }
        if killed.elapsed() > Duration::from_secs(10) {
            bail!("no failover");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "   beta was dropped from the registry {:?} after it died",
        killed.elapsed()
    );

    println!("\n4. Rejoin: beta restarts with its key (same node id, new port)");
    drop(beta);
    let beta = spawn_server("beta", &group, &key_of("beta"))?;
    let took = wait_until("beta to rejoin", Duration::from_secs(30), || {
        client.peers().len() == 2
    })
    .await?;
    println!("   beta is back after {took:?}");
    for i in 0..2 {
        println!("   call {i}: {}", greeter.hello("again".into()).await?);
    }

    drop((alpha, beta));
    client.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ndone");
    Ok(())
}
