//! Real server processes: the test binary runs one of its own tests as the server.
//!
//! The server role is a `#[test]` that returns at once unless an environment variable says it
//! is the server (so a normal test run passes it). It prints `READY <details>` when it serves,
//! and serves until its stdin closes. [`ServerProcess::spawn`] runs it and waits for that line.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a server process may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A server process running a test of this binary; SIGKILLed when dropped.
pub struct ServerProcess {
    child: Child,
    /// What the server printed after `READY `.
    pub ready: String,
}

impl ServerProcess {
    /// Runs the test named `role` of the current test binary with `env` and waits until it
    /// prints `READY <details>`.
    pub fn spawn<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        role: &str,
        env: impl IntoIterator<Item = (K, V)>,
    ) -> ServerProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([role, "--exact", "--nocapture", "--test-threads=1"])
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = role.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print its own `test … ...` before ours on the same line.
                if let Some((_, ready)) = line.split_once("READY ") {
                    let _ = tx.send(ready.trim().to_owned());
                } else if !line.trim().is_empty() {
                    // The server's log lines, marked as its own.
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let ready = rx
            .recv_timeout(READY_TIMEOUT)
            .expect("server never got ready");
        ServerProcess { child, ready }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no goodbye, no cleanup) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Blocks until stdin closes: a server process's parent closes it (or kills the process)
/// when it is done with it.
pub async fn until_stdin_closes() {
    tokio::task::spawn_blocking(|| std::io::stdin().lines().count())
        .await
        .unwrap();
}
