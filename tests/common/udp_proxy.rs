//! A UDP proxy for fault injection on 127.0.0.1 (no root needed).
//!
//! [`UdpProxy::start`] listens on an ephemeral port and forwards every datagram to a target;
//! each client address gets an upstream socket of its own, so the target sees one peer per
//! client and its answers go back to the right one. Point a node's static peer at
//! [`UdpProxy::addr`] instead of the server's address and the proxy sits on that QUIC path.
//!
//! At run time the proxy can drop a fraction of the datagrams, delay them, or blackhole
//! everything (a partition) and heal, in both directions at once. Drops are decided by a
//! seeded generator ([`UdpProxy::with_seed`]), so the same sequence of datagrams sees the same
//! drops. Dropping the proxy stops it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// The default seed of the drop decisions.
const DEFAULT_SEED: u64 = 0x5EED_F00D;

/// A running proxy; stopped when dropped.
pub struct UdpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What the proxy does to each datagram.
struct Faults {
    /// Drop every datagram (a partition).
    blackhole: bool,
    /// The fraction of datagrams dropped, in millionths.
    drop_per_million: u64,
    /// How long each forwarded datagram is held first.
    delay: Duration,
    /// The state of the drop generator (SplitMix64).
    rng: u64,
}

/// Counts of datagrams, both directions together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Datagrams forwarded (to the target or back to a client).
    pub forwarded: u64,
    /// Datagrams dropped (by the drop fraction or the blackhole).
    pub dropped: u64,
}

struct Shared {
    target: SocketAddr,
    faults: Mutex<Faults>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    /// Whether to forward the next datagram, and after how long.
    fn decide(&self) -> Option<Duration> {
        let mut faults = self.faults.lock().unwrap();
        let dropped = faults.blackhole || {
            let draw = splitmix64(&mut faults.rng) % 1_000_000;
            draw < faults.drop_per_million
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            Some(faults.delay)
        }
    }

    /// Sends `packet` from `socket` to `to`, subject to the faults in force.
    async fn forward(&self, socket: &Arc<UdpSocket>, packet: &[u8], to: SocketAddr) {
        match self.decide() {
            None => {}
            Some(delay) if delay.is_zero() => {
                // A full socket buffer or an unreachable target is packet loss, as on a network.
                let _ = socket.send_to(packet, to).await;
            }
            Some(delay) => {
                let (socket, packet) = (socket.clone(), packet.to_vec());
                // Short-lived: it ends after `delay` even if the proxy is stopped.
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&packet, to).await;
                });
            }
        }
    }
}

impl UdpProxy {
    /// Starts a proxy on 127.0.0.1 (an ephemeral port) to `target`, forwarding everything.
    pub async fn start(target: SocketAddr) -> UdpProxy {
        UdpProxy::with_seed(target, DEFAULT_SEED).await
    }

    /// [`start`](Self::start) with the seed of the drop decisions.
    pub async fn with_seed(target: SocketAddr, seed: u64) -> UdpProxy {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = listen.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            faults: Mutex::new(Faults {
                blackhole: false,
                drop_per_million: 0,
                delay: Duration::ZERO,
                rng: seed,
            }),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let task = tokio::spawn(downstream(listen, shared.clone()));
        UdpProxy { addr, shared, task }
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every datagram, both ways, until [`heal`](Self::heal).
    pub fn partition(&self) {
        self.shared.faults.lock().unwrap().blackhole = true;
    }

    /// Ends a partition (the drop fraction and delay stay as set).
    pub fn heal(&self) {
        self.shared.faults.lock().unwrap().blackhole = false;
    }

    /// Drops `fraction` (0.0 to 1.0) of the datagrams, both ways.
    pub fn set_drop(&self, fraction: f64) {
        let per_million = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.shared.faults.lock().unwrap().drop_per_million = per_million;
    }

    /// Holds every forwarded datagram for `delay` (zero: none), both ways.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.faults.lock().unwrap().delay = delay;
    }

    /// The datagrams forwarded and dropped so far.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            forwarded: self.shared.forwarded.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        // Its JoinSet of upstream tasks goes with it.
        self.task.abort();
    }
}

/// Reads what clients send and forwards it, creating each client's upstream socket (and the
/// task that carries the target's answers back) on its first datagram.
async fn downstream(listen: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Errors on a UDP socket (an ICMP report about an earlier datagram) are not fatal.
        let Ok((len, client)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let upstream = match upstreams.get(&client) {
            Some(upstream) => upstream.clone(),
            None => {
                let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                upstreams.insert(client, upstream.clone());
                tasks.spawn(upstream_task(
                    upstream.clone(),
                    listen.clone(),
                    client,
                    shared.clone(),
                ));
                upstream
            }
        };
        shared.forward(&upstream, &buf[..len], shared.target).await;
    }
}

/// Carries the target's answers on `upstream` back to `client`.
async fn upstream_task(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, from)) = upstream.recv_from(&mut buf).await else {
            continue;
        };
        if from == shared.target {
            shared.forward(&listen, &buf[..len], client).await;
        }
    }
}

/// SplitMix64: a small, seeded, well-mixed generator (enough for drop decisions).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
