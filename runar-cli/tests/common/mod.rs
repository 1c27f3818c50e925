//! What the CLI tests share: a node on 127.0.0.1 of a test network, the real `runar` binary
//! run against it (bounded by [`WAIT`]), its output, and a temporary directory.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runar::seal::KeyResolver;
use runar::{DiscoveryOptions, NetworkConfig, NetworkKey, Node, NodeConfig};

/// How long one `runar` run may take (it finishes in well under a second when all is well).
pub const WAIT: Duration = Duration::from_secs(20);

/// A test network: its name and secret.
#[derive(Clone, Copy)]
pub struct Net {
    pub name: &'static str,
    pub secret: &'static str,
}

impl Net {
    /// A started node of the network on 127.0.0.1 (an ephemeral port) that dials no one, with
    /// `resolver` as its key resolver when given.
    pub async fn node(&self, name: &str, resolver: Option<Arc<dyn KeyResolver>>) -> Node {
        let network = NetworkConfig::default()
            .with_bind_address("127.0.0.1:0".parse().unwrap())
            .with_key(NetworkKey::from_secret(self.secret))
            .with_discovery(DiscoveryOptions::static_peers(Vec::new()));
        let mut config = NodeConfig::new(name, self.name).with_network_config(network);
        if let Some(resolver) = resolver {
            config = config.with_key_resolver(resolver);
        }
        Node::new(config).await.unwrap()
    }

    /// Runs `runar args…` with the network's key and name in its environment, plus `env`.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runar"));
        command
            .args(args)
            .env("RUNAR_KEY", self.secret)
            .env("RUNAR_NETWORK", self.name)
            .env_remove("RUNAR_KEYSTORE")
            .env_remove("RUNAR_KEYSTORE_PASSPHRASE")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        tokio::time::timeout(WAIT, command.output())
            .await
            .expect("runar did not finish")
            .unwrap()
    }

    /// Runs `runar --peer NODE args…`.
    pub async fn run_at(&self, node: &Node, args: &[&str], env: &[(&str, &str)]) -> Output {
        let addr = node.local_addr().unwrap().to_string();
        let mut all = vec!["--peer", addr.as_str()];
        all.extend_from_slice(args);
        self.run(&all, env).await
    }
}

/// Its stdout, after checking that it succeeded.
pub fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "runar failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Its stdout as one JSON value.
pub fn json(output: &Output) -> serde_json::Value {
    let out = stdout(output);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Its exit code and stderr, after checking that it failed.
pub fn failure(output: &Output) -> (i32, String) {
    assert!(
        !output.status.success(),
        "runar succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A fresh path under the system's temporary directory (not created), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "runar-cli-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The permission bits of `path`.
#[cfg(unix)]
pub fn mode(path: impl AsRef<Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
