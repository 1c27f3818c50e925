//! zenoh 1.10 (default features off; its TCP and QUIC links only): two peer-mode sessions in
//! this process, one listening on 127.0.0.1, the other connecting to it, multicast scouting off.
//!
//! * pub/sub: a publisher (reliable, `CongestionControl::Block` so that nothing is dropped,
//!   zenoh's default batching) on the connecting session, a callback subscriber on the
//!   listening one;
//! * query/reply: a callback queryable on the listening session answering each query with its
//!   payload, a querier (no consolidation) on the connecting session taking the first reply of
//!   each `get`.
//!
//! zenoh runs on runtimes of its own (`zenoh-runtime`'s pools of multi-thread tokio runtimes,
//! created on first use and shared by every session of the process), and opening or closing a
//! session calls `block_in_place`, which panics on a current-thread runtime. So sessions are
//! opened and closed on a plain thread of their own ([`off_runtime`]); only the calls measured
//! (`put`, `get` and waiting for the reply) run on the runtime under test. Whatever that runtime
//! is, zenoh's own I/O and callbacks run on its own threads: its current-thread rows are not
//! single-threaded as the other systems' are.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zenoh::Wait as _;
use zenoh::qos::CongestionControl;
use zenoh::query::ConsolidationMode;

use crate::certs;
use crate::events::{Publisher, Sink};
use crate::rpc::Rpc;

/// The link zenoh's two sessions talk over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Tcp,
    /// QUIC (quinn, rustls with ring) with the suite's self-signed certificate.
    Quic,
}

const EVENTS_KEY: &str = "bench/events";
const ECHO_KEY: &str = "bench/echo";

/// How long opening the sessions and seeing each other's declarations may take.
const SETUP: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of its own, outside any tokio runtime (zenoh's blocking calls panic on
/// a current-thread runtime), and waits for it without blocking the caller's runtime.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("zenoh-setup".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("a thread for zenoh's setup");
    rx.await.expect("zenoh's setup thread panicked")
}

/// A port on 127.0.0.1 free at the time of asking, for the listening session's endpoint.
fn free_port(link: Link) -> u16 {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    match link {
        Link::Tcp => TcpListener::bind(any).and_then(|l| l.local_addr()),
        Link::Quic => UdpSocket::bind(any).and_then(|s| s.local_addr()),
    }
    .expect("a free port")
    .port()
}

/// The certificate and key files zenoh's QUIC link reads (it takes paths or base64).
struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    fn write() -> CertFiles {
        let cert = certs::localhost();
        let dir = std::env::temp_dir().join(format!(
            "runar-bench-zenoh-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for zenoh's certificate");
        std::fs::write(dir.join("cert.pem"), &cert.cert_pem).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), &cert.key_pem).expect("key.pem");
        CertFiles { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(link: Link, port: u16, listen: bool, certs: &CertFiles) -> zenoh::Config {
    let mut c = zenoh::Config::default();
    let endpoint = match link {
        Link::Tcp => format!("\"tcp/127.0.0.1:{port}\""),
        Link::Quic => format!("\"quic/127.0.0.1:{port}\""),
    };
    let set = |c: &mut zenoh::Config, key: &str, value: &str| {
        c.insert_json5(key, value)
            .unwrap_or_else(|e| panic!("zenoh config {key}: {e}"));
    };
    set(&mut c, "mode", "\"peer\"");
    set(&mut c, "scouting/multicast/enabled", "false");
    if listen {
        set(&mut c, "listen/endpoints", &format!("[{endpoint}]"));
    } else {
        set(&mut c, "listen/endpoints", "[]");
        set(&mut c, "connect/endpoints", &format!("[{endpoint}]"));
    }
    if link == Link::Quic {
        let quote = |name: &str| format!("\"{}\"", certs.path(name));
        set(
            &mut c,
            "transport/link/tls/root_ca_certificate",
            &quote("cert.pem"),
        );
        set(
            &mut c,
            "transport/link/tls/listen_certificate",
            &quote("cert.pem"),
        );
        set(
            &mut c,
            "transport/link/tls/listen_private_key",
            &quote("key.pem"),
        );
        // The certificate names `localhost`; the endpoint is an IP address.
        set(&mut c, "transport/link/tls/verify_name_on_connect", "false");
    }
    c
}

/// Two sessions connected over `link`: (listening, connecting).
fn open_pair(link: Link) -> (zenoh::Session, zenoh::Session) {
    let certs = CertFiles::write();
    let port = free_port(link);
    let listening = zenoh::open(config(link, port, true, &certs))
        .wait()
        .expect("the listening zenoh session");
    let connecting = zenoh::open(config(link, port, false, &certs))
        .wait()
        .expect("the connecting zenoh session");
    (listening, connecting)
}

/// Polls `matching` until it holds, for at most [`SETUP`].
fn wait_matching(what: &str, matching: impl Fn() -> bool) {
    let deadline = Instant::now() + SETUP;
    while !matching() {
        assert!(
            Instant::now() < deadline,
            "zenoh: {what} never saw its counterpart"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Closes both sessions off the runtime (closing blocks).
async fn close(sessions: Vec<zenoh::Session>) {
    off_runtime(move || {
        for s in sessions {
            let _ = s.close().wait();
        }
    })
    .await;
}

/// A publisher on one session, `sink` subscribed on the other.
pub struct ZenohPubSub {
    publisher: Option<zenoh::pubsub::Publisher<'static>>,
    subscriber: Option<zenoh::pubsub::Subscriber<()>>,
    sessions: Vec<zenoh::Session>,
}

pub async fn pubsub(link: Link, sink: Sink) -> ZenohPubSub {
    off_runtime(move || {
        let (listening, connecting) = open_pair(link);
        let subscriber = listening
            .declare_subscriber(EVENTS_KEY)
            .callback(move |sample| sink.received(sample.payload().len()))
            .wait()
            .expect("a zenoh subscriber");
        let publisher = connecting
            .declare_publisher(EVENTS_KEY)
            .congestion_control(CongestionControl::Block)
            .wait()
            .expect("a zenoh publisher");
        wait_matching("the publisher", || {
            publisher
                .matching_status()
                .wait()
                .is_ok_and(|s| s.matching())
        });
        ZenohPubSub {
            publisher: Some(publisher),
            subscriber: Some(subscriber),
            sessions: vec![connecting, listening],
        }
    })
    .await
}

impl ZenohPubSub {
    pub async fn stop(mut self) {
        let (publisher, subscriber) = (self.publisher.take(), self.subscriber.take());
        let sessions = std::mem::take(&mut self.sessions);
        off_runtime(move || {
            drop(publisher);
            drop(subscriber);
        })
        .await;
        close(sessions).await;
    }
}

impl Publisher for ZenohPubSub {
    async fn publish(&self, payload: Bytes) {
        self.publisher
            .as_ref()
            .expect("a publisher until stopped")
            .put(payload)
            .await
            .expect("a zenoh put");
    }
}

/// A queryable echoing each query's payload on one session, a querier on the other.
#[derive(Clone)]
pub struct ZenohQuery {
    querier: std::sync::Arc<zenoh::query::Querier<'static>>,
}

/// What [`ZenohQuery`] needs kept alive and closed at the end.
pub struct ZenohQueryHold {
    queryable: zenoh::query::Queryable<()>,
    sessions: Vec<zenoh::Session>,
}

pub async fn query(link: Link) -> (ZenohQuery, ZenohQueryHold) {
    off_runtime(move || {
        let (listening, connecting) = open_pair(link);
        let queryable = listening
            .declare_queryable(ECHO_KEY)
            .callback(|query| {
                let payload = query.payload().cloned().unwrap_or_default();
                let _ = query.reply(ECHO_KEY, payload).wait();
            })
            .wait()
            .expect("a zenoh queryable");
        // No consolidation: each reply is handed over as it arrives (the default, `Latest`,
        // holds replies until the queryable's final message).
        let querier = connecting
            .declare_querier(ECHO_KEY)
            .consolidation(ConsolidationMode::None)
            .wait()
            .expect("a zenoh querier");
        wait_matching("the querier", || {
            querier.matching_status().wait().is_ok_and(|s| s.matching())
        });
        (
            ZenohQuery {
                querier: std::sync::Arc::new(querier),
            },
            ZenohQueryHold {
                queryable,
                sessions: vec![connecting, listening],
            },
        )
    })
    .await
}

impl ZenohQueryHold {
    /// Undeclares the queryable and closes both sessions, once every [`ZenohQuery`] clone is
    /// gone.
    pub async fn stop(self, rpc: ZenohQuery) {
        let ZenohQueryHold {
            queryable,
            sessions,
        } = self;
        off_runtime(move || {
            drop(rpc);
            drop(queryable);
        })
        .await;
        close(sessions).await;
    }
}

impl Rpc for ZenohQuery {
    async fn call(&self, payload: Bytes) -> Bytes {
        let replies = self
            .querier
            .get()
            .payload(payload)
            .await
            .expect("a zenoh get");
        let reply = replies.recv_async().await.expect("a zenoh reply");
        let sample = reply.into_result().expect("a zenoh reply with a sample");
        Bytes::from(sample.payload().to_bytes().into_owned())
    }
}
