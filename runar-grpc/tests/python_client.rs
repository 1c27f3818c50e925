//! A real foreign client through the gateway: Python `grpcio` (from PyPI, in a virtual
//! environment kept under `target/`), with stubs `grpcio-tools` generates from the same
//! `tests/proto/greeter.proto` the Runar service is built from, calls a service on another
//! node: a unary reply, `NOT_FOUND` with its message, an expiring deadline (which cancels the
//! handler on the far node), a server stream (with an error mid-stream and an expiring
//! deadline), a client stream, a bidirectional stream (also in lock-step, and with an error), a
//! cancelled call and a cancelled stream (which cancel their handlers too), the trace context
//! crossing, and server reflection v1alpha and v1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use runar::{DiscoveryOptions, NetworkKey, Node, NodeConfig};

mod common;
use common::greeter::greeter_server::GreeterServer;
use common::{Hello, METHODS, WAIT, network, serve, stop, two_nodes, wait_for};

/// Output that says pip could not reach its index.
fn unreachable_index(output: &str) -> bool {
    [
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "ConnectTimeoutError",
        "ProxyError",
        "No matching distribution found",
    ]
    .iter()
    .any(|m| output.contains(m))
}

/// The virtual environment's python with grpcio, grpcio-tools and grpcio-reflection, created
/// once under `target/`; `None` (the test is skipped) only when PyPI cannot be reached.
fn python() -> Option<PathBuf> {
    // The tests of this file run at once: one creates the environment, the others wait.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpc-python-venv");
    let python = dir.join("bin").join("python");
    let marker = dir.join(".installed");
    if marker.exists() {
        return Some(python);
    }
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .expect("python3 runs");
    assert!(
        venv.status.success(),
        "python3 -m venv failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "-q"])
        .args(["grpcio", "grpcio-tools", "grpcio-reflection"])
        .output()
        .expect("pip runs");
    if !pip.status.success() {
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&pip.stdout),
            String::from_utf8_lossy(&pip.stderr)
        );
        if unreachable_index(&output) {
            eprintln!("SKIPPED: PyPI cannot be reached, so grpcio cannot be installed:\n{output}");
            return None;
        }
        panic!("pip install grpcio grpcio-tools grpcio-reflection failed:\n{output}");
    }
    std::fs::write(&marker, b"").unwrap();
    Some(python)
}

/// Generates the Python stubs of `greeter.proto` into a fresh directory (one per test: each
/// removes its own when done).
fn stubs(python: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "grpc-python-stubs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&out).unwrap();
    let generated = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&protos)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg("greeter.proto")
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    out
}

/// Runs `tests/python/client.py` against `addr` (over TLS trusting `ca` when given) and
/// checks that every check passed.
async fn run_python_client(python: &Path, stubs: &Path, addr: &str, ca: Option<&Path>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let mut command = tokio::process::Command::new(python);
    command.arg(&script).arg(addr);
    if let Some(ca) = ca {
        command.arg(ca);
    }
    let client = command.env("PYTHONPATH", stubs).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the Python client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all ok"),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the Python client through a gateway with `config` on node B; `ca` is the certificate
/// the client trusts when the gateway serves TLS.
async fn python_client_through(config: runar_grpc::GatewayConfig, ca: Option<&Path>) {
    let Some(python) = tokio::task::spawn_blocking(python).await.unwrap() else {
        return;
    };
    let stubs = stubs(&python);
    let (a, b, counts) = two_nodes().await;

    let (gateway, addr, serving) = serve(&b, config).await;
    assert_eq!(gateway.methods(), METHODS);

    let target = match ca {
        Some(_) => format!("localhost:{}", addr.port()),
        None => addr.to_string(),
    };
    run_python_client(&python, &stubs, &target, ca).await;

    // The expired deadline cancelled the handler on node A, and the streams all ended.
    wait_for("the sleeping handler to be dropped", || {
        counts.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for("every stream to be dropped", || {
        counts.streams_dropped.load(Ordering::SeqCst)
            == counts.streams_started.load(Ordering::SeqCst)
    })
    .await;

    stop(gateway, serving).await;
    let _ = std::fs::remove_dir_all(&stubs);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_calls_a_service_on_another_node() {
    python_client_through(runar_grpc::GatewayConfig::default(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_calls_over_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.pem();
    let ca = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("grpc-gateway-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, &cert).unwrap();
    let config = runar_grpc::GatewayConfig::default()
        .with_tls_identity(cert, certified.signing_key.serialize_pem());
    python_client_through(config, Some(&ca)).await;
    let _ = std::fs::remove_file(&ca);
}

/// What the gateway serves follows the mesh: a service a peer adds after the gateway started is
/// served, and one it removes is no longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_services_as_they_come_and_go() {
    let key = NetworkKey::from_secret("runar gateway test secret");
    let a = Node::new(
        NodeConfig::new("node-a", "test")
            .with_network_config(network(&key, DiscoveryOptions::none())),
    )
    .await
    .unwrap();
    a.start().await.unwrap();
    let b = Node::new(
        NodeConfig::new("node-b", "test").with_network_config(network(
            &key,
            DiscoveryOptions::static_peers([a.local_addr().unwrap()]),
        )),
    )
    .await
    .unwrap();
    b.start().await.unwrap();
    let gateway = runar_grpc::Gateway::new(b.clone());
    assert!(gateway.methods().is_empty());

    a.add_service(GreeterServer::new(Hello {
        counts: Arc::default(),
    }))
    .await
    .unwrap();
    wait_for("the peer's service to be served", || {
        gateway.methods() == METHODS
    })
    .await;
    a.remove_service("greeter").await.unwrap();
    wait_for("the removed service to be gone", || {
        gateway.methods().is_empty()
    })
    .await;

    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

/// A client that cancels its call or its stream drops the Runar call: the handlers on the far
/// node are cancelled long before their own deadline or end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_grpc_call_cancels_the_handler_on_the_far_node() {
    let Some(python) = tokio::task::spawn_blocking(python).await.unwrap() else {
        return;
    };
    let stubs = stubs(&python);
    let (a, b, counts) = two_nodes().await;
    let (gateway, addr, serving) = serve(&b, runar_grpc::GatewayConfig::default()).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/cancel.py");
    let mut client = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(addr.to_string())
        .env("PYTHONPATH", &stubs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    wait_for("the sleep call and the stream to reach node A", || {
        counts.started.load(Ordering::SeqCst) == 1
            && counts.streams_started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(counts.cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(counts.streams_dropped.load(Ordering::SeqCst), 0);
    stdin.write_all(b"cancel\n").await.unwrap();
    stdin.flush().await.unwrap();
    wait_for("the handlers on node A to be cancelled", || {
        counts.cancelled.load(Ordering::SeqCst) == 1
            && counts.streams_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the client reports")
        .unwrap();
    assert_eq!(line.as_deref(), Some("cancelled"));
    let status = tokio::time::timeout(WAIT, client.wait())
        .await
        .expect("the client exits")
        .unwrap();
    assert!(status.success());

    stop(gateway, serving).await;
    let _ = std::fs::remove_dir_all(&stubs);
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
