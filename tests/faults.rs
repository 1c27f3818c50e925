//! Fault injection with real processes: 10,000 requests in flight over two server instances
//! while one is SIGKILLed or partitioned (through a UDP proxy), calls and events resuming
//! after a partition heals, and both crossing a lossy, slow link.
//!
//! The test binary runs itself as the server processes (`fault_server`, which does nothing
//! unless `RUNAR_FAULTS_SERVER` is set). The client runs in the test process and reaches the
//! servers as static peers, directly or through a [`UdpProxy`] per server. The measured figures
//! are printed with `eprintln!` (run with `--nocapture` to see them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{ServerProcess, until_stdin_closes};
use common::udp_proxy::UdpProxy;
use common::{key, wait_for};
use runar::{
    AbstractService, Code, DiscoveryOptions, LifecycleContext, Node, NodeConfig, NodeId,
    RequestOptions,
};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// The environment variable that makes `fault_server` serve, under that name.
const SERVER_ENV: &str = "RUNAR_FAULTS_SERVER";
/// The action every server offers: answers with the server's name.
const WHO: &str = "echo/who";
/// Requests in flight at once in the flood tests.
const REQUESTS: usize = 10_000;
/// The fault strikes once this many of them have been answered.
const FAULT_AFTER: usize = 2_000;
/// The deadline of each flood request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How late past its deadline a request may end (scheduling on a loaded 2-core machine).
const LATE_MARGIN: Duration = Duration::from_millis(500);
/// How soon calls and events must resume after a partition heals.
const RESUME_WITHIN: Duration = Duration::from_secs(2);

/// The flood tests each load the machine fully: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Answers `who` with the name of the server it runs on.
struct Echo(String);

impl AbstractService for Echo {
    fn name(&self) -> &str {
        "Echo"
    }
    fn path(&self) -> &str {
        "echo"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        let name = self.0.clone();
        ctx.register_action("who", move |_: u64, _| {
            let name = name.clone();
            async move { Ok(name) }
        })
        .await
    }
}

/// The server role: runs when spawned by the tests below, until its stdin closes. Serves `WHO`,
/// publishes a beat on `beat/<name>` every 10 ms, and prints `READY <node id> <address>`.
#[test]
fn fault_server() {
    let Ok(name) = std::env::var(SERVER_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = common::node(&name, &key(), DiscoveryOptions::none()).await;
        node.add_service(Echo(name.clone())).await.unwrap();
        node.start().await.unwrap();
        let publisher = node.clone();
        let topic = format!("beat/{name}");
        tokio::spawn(async move {
            for beat in 0u64.. {
                // No subscriber yet, or the peer is partitioned: the next beat tries again.
                let _ = publisher.publish(&topic, beat).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        println!(
            "READY {} {}",
            node.node_id(),
            node.local_addr().expect("a networked node has an address")
        );
        until_stdin_closes().await;
        node.stop().await.unwrap();
    });
}

/// A server process and where it listens.
struct Server {
    process: ServerProcess,
    id: NodeId,
    addr: SocketAddr,
}

impl Server {
    fn spawn(name: &str) -> Server {
        let process = ServerProcess::spawn("fault_server", [(SERVER_ENV, name)]);
        let mut ready = process.ready.split_whitespace();
        let id = ready.next().unwrap().parse().unwrap();
        let addr = ready.next().unwrap().parse().unwrap();
        Server { process, id, addr }
    }
}

/// When each server's beats last arrived at the client.
type Beats = Arc<Mutex<HashMap<String, Instant>>>;

/// A started client that dials `peers` and records the beats it receives.
async fn client(peers: Vec<SocketAddr>) -> (Node, Beats) {
    let client = Node::new(
        NodeConfig::new("client", "test").with_network_config(common::network(
            &key(),
            DiscoveryOptions::static_peers(peers),
        )),
    )
    .await
    .unwrap();
    let beats = Beats::default();
    let seen = beats.clone();
    client
        .subscribe("beat/{server}", move |_: u64, ctx| {
            if let Some(server) = ctx.param("server") {
                seen.lock()
                    .unwrap()
                    .insert(server.to_owned(), Instant::now());
            }
            async { Ok(()) }
        })
        .await
        .unwrap();
    client.start().await.unwrap();
    (client, beats)
}

/// Waits until the client is connected to every server in `servers` and both answer calls.
async fn wait_connected(client: &Node, servers: &[&Server]) {
    wait_for("the client to connect to the servers", || {
        let peers = client.peers();
        servers.iter().all(|s| peers.contains(&s.id))
    })
    .await;
    let deadline = Instant::now() + common::WAIT;
    let mut answered = std::collections::HashSet::new();
    while answered.len() < servers.len() {
        assert!(Instant::now() < deadline, "only {answered:?} answered");
        if let Ok(who) = who(client, Duration::from_secs(1)).await {
            answered.insert(who);
        }
    }
}

/// One call of `WHO` with `timeout`.
async fn who(client: &Node, timeout: Duration) -> runar::Result<String> {
    client
        .request_with(WHO, 0u64, RequestOptions::timeout(timeout))
        .await
}

/// The outcome of a flood.
#[derive(Debug, Default)]
struct Tally {
    /// Successful answers per server name.
    ok: HashMap<String, usize>,
    /// Errors per code.
    errors: HashMap<Code, usize>,
    /// The latest any request ended past its deadline (zero when none was late).
    max_late: Duration,
    /// The longest a failed request took.
    slowest_error: Duration,
    /// The longest a successful request took.
    slowest_ok: Duration,
    /// From the first request to the last answer.
    elapsed: Duration,
}

impl Tally {
    fn ok(&self, server: &str) -> usize {
        self.ok.get(server).copied().unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.ok.values().sum::<usize>() + self.errors.values().sum::<usize>()
    }
}

/// Sends [`REQUESTS`] calls of `WHO` at once, each with [`REQUEST_TIMEOUT`]; once all are
/// sent and [`FAULT_AFTER`] have ended, runs `fault` (and returns when it struck). Every
/// request must end by its deadline plus [`LATE_MARGIN`]: one that has not by then fails the
/// test as hung.
async fn flood(client: &Node, fault: impl FnOnce()) -> (Tally, Instant) {
    let (sent, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut requests = JoinSet::new();
    let first = Instant::now();
    for _ in 0..REQUESTS {
        let (client, sent, done) = (client.clone(), sent.clone(), done.clone());
        requests.spawn(async move {
            let started = Instant::now();
            sent.fetch_add(1, Ordering::Relaxed);
            let result = who(&client, REQUEST_TIMEOUT).await;
            let ended = Instant::now();
            done.fetch_add(1, Ordering::Relaxed);
            (started, ended, result)
        });
    }
    wait_for("every request sent and the first answers", || {
        sent.load(Ordering::Relaxed) == REQUESTS && done.load(Ordering::Relaxed) >= FAULT_AFTER
    })
    .await;
    fault();
    let struck = Instant::now();

    let mut tally = Tally::default();
    // No request may outlive its deadline by more than the margin: every one started before
    // `struck`, so this bounds them all.
    let bound = struck + REQUEST_TIMEOUT + LATE_MARGIN;
    let collect = async {
        while let Some(joined) = requests.join_next().await {
            let (started, ended, result) = joined.unwrap();
            let took = ended - started;
            tally.max_late = tally.max_late.max(took.saturating_sub(REQUEST_TIMEOUT));
            tally.elapsed = tally.elapsed.max(ended - first);
            match result {
                Ok(who) => {
                    tally.slowest_ok = tally.slowest_ok.max(took);
                    *tally.ok.entry(who).or_default() += 1;
                }
                Err(e) => {
                    tally.slowest_error = tally.slowest_error.max(took);
                    *tally.errors.entry(e.code()).or_default() += 1;
                }
            }
        }
    };
    if tokio::time::timeout_at(bound.into(), collect)
        .await
        .is_err()
    {
        panic!(
            "{} of {REQUESTS} requests still pending {:?} after their deadline",
            requests.len(),
            LATE_MARGIN
        );
    }
    (tally, struck)
}

/// The checks shared by the SIGKILL and partition floods: every request ended in time with an
/// answer or an expected error, and the survivor answered everything sent to it.
fn check_flood(what: &str, tally: &Tally) {
    eprintln!(
        "{what}: {REQUESTS} requests in {:?}: ok {:?}, errors {:?}; slowest answer {:?}, \
         slowest error {:?}, max lateness past the {REQUEST_TIMEOUT:?} deadline {:?}",
        tally.elapsed,
        tally.ok,
        tally.errors,
        tally.slowest_ok,
        tally.slowest_error,
        tally.max_late
    );
    assert_eq!(tally.total(), REQUESTS);
    assert!(tally.max_late <= LATE_MARGIN, "{tally:?}");
    for code in tally.errors.keys() {
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "unexpected error code {code:?}: {tally:?}"
        );
    }
    // Round-robin sends alpha at least every other request, then every one once beta is gone:
    // alpha answered at least half, so none of its requests failed.
    assert!(tally.ok("alpha") >= REQUESTS / 2, "{tally:?}");
    assert!(
        tally.ok("beta") > 0,
        "beta answered before the fault: {tally:?}"
    );
}

/// After the fault: the client drops beta, and then every call succeeds through alpha.
async fn check_survivor(what: &str, client: &Node, beta: &Server, struck: Instant) {
    wait_for("the client to drop beta", || {
        !client.peers().contains(&beta.id)
    })
    .await;
    let dropped = struck.elapsed();
    let mut calls = JoinSet::new();
    for _ in 0..1_000 {
        let client = client.clone();
        calls.spawn(async move { who(&client, REQUEST_TIMEOUT).await });
    }
    let mut alpha = 0;
    while let Some(answer) = calls.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), "alpha");
        alpha += 1;
    }
    eprintln!(
        "{what}: the client dropped beta {dropped:?} after the fault; then {alpha} of 1000 calls \
         answered by alpha"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_10k_requests_fails_fast_and_the_survivor_serves() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let alpha = Server::spawn("alpha");
    let mut beta = Server::spawn("beta");
    let (client, _) = client(vec![alpha.addr, beta.addr]).await;
    wait_connected(&client, &[&alpha, &beta]).await;

    let (tally, killed) = flood(&client, || beta.process.kill()).await;
    check_flood("SIGKILL", &tally);
    check_survivor("SIGKILL", &client, &beta, killed).await;
    client.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_during_10k_requests_fails_fast_and_the_survivor_serves() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let alpha = Server::spawn("alpha");
    let beta = Server::spawn("beta");
    let (to_alpha, to_beta) = (
        UdpProxy::start(alpha.addr).await,
        UdpProxy::start(beta.addr).await,
    );
    let (client, _) = client(vec![to_alpha.addr(), to_beta.addr()]).await;
    wait_connected(&client, &[&alpha, &beta]).await;

    let (tally, partitioned) = flood(&client, || to_beta.partition()).await;
    check_flood("partition", &tally);
    check_survivor("partition", &client, &beta, partitioned).await;
    eprintln!(
        "partition: proxy to beta {:?}, to alpha {:?}",
        to_beta.stats(),
        to_alpha.stats()
    );
    client.stop().await.unwrap();
}

/// How long a partition lasts.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// This long.
    For(Duration),
    /// Until the client has dropped the partitioned peer, and this much longer.
    PastDrop(Duration),
}

/// How long after `healed` a call was answered by beta and a beat of beta's arrived.
async fn time_to_resume(client: &Node, beats: &Beats, healed: Instant) -> (Duration, Duration) {
    let (mut call, mut event) = (None, None);
    let deadline = healed + common::WAIT;
    while call.is_none() || event.is_none() {
        assert!(
            Instant::now() < deadline,
            "not resumed {:?} after the heal: call {call:?}, event {event:?}",
            common::WAIT
        );
        // Two calls: round-robin gives beta one of them once it is back.
        let short = Duration::from_millis(250);
        let (first, second) = tokio::join!(who(client, short), who(client, short));
        if call.is_none() && [first, second].iter().any(|r| r.as_deref() == Ok("beta")) {
            call = Some(healed.elapsed());
        }
        let last_beat = beats.lock().unwrap().get("beta").copied();
        if event.is_none() && last_beat.is_some_and(|t| t > healed) {
            event = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (call.unwrap(), event.unwrap())
}

/// Partitions beta from the client (through a proxy) for each `hold` in turn, heals, and
/// measures how soon a call is answered by beta and a beat of beta's arrives. Returns the
/// partitions after which either took longer than [`RESUME_WITHIN`].
async fn resume_after_heals(holds: &[Hold]) -> Vec<String> {
    let alpha = Server::spawn("alpha");
    let beta = Server::spawn("beta");
    let to_beta = UdpProxy::start(beta.addr).await;
    let (client, beats) = client(vec![alpha.addr, to_beta.addr()]).await;
    wait_connected(&client, &[&alpha, &beta]).await;
    wait_for("beats from both servers", || {
        beats.lock().unwrap().len() == 2
    })
    .await;

    let mut late = Vec::new();
    for &hold in holds {
        to_beta.partition();
        let partitioned = Instant::now();
        match hold {
            Hold::For(held) => tokio::time::sleep(held).await,
            Hold::PastDrop(extra) => {
                wait_for("the client to drop beta", || {
                    !client.peers().contains(&beta.id)
                })
                .await;
                tokio::time::sleep(extra).await;
            }
        }
        let held = partitioned.elapsed();
        to_beta.heal();
        let healed = Instant::now();
        let (call, event) = time_to_resume(&client, &beats, healed).await;
        eprintln!(
            "heal after {hold:?} (partitioned {held:?}): calls resumed {call:?} and events \
             {event:?} after the heal"
        );
        if call.max(event) > RESUME_WITHIN {
            late.push(format!("{hold:?}: call {call:?}, event {event:?}"));
        }
    }
    client.stop().await.unwrap();
    late
}

/// A partition shorter than the idle timeout (the connection survives it), and partitions that
/// outlast it (the client drops beta and dials it again), healed at different points of the
/// first redial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_events_resume_within_2s_of_a_heal() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let late = resume_after_heals(&[
        Hold::For(Duration::from_secs(1)),
        Hold::PastDrop(Duration::ZERO),
        Hold::PastDrop(Duration::from_secs(2)),
    ])
    .await;
    assert!(
        late.is_empty(),
        "resumed later than {RESUME_WITHIN:?}: {late:?}"
    );
}

/// A partition that outlasts many failed redials. Before static peers were probed, each redial
/// waited for its handshake to idle out (about 3 s, its Initial sent at 0 and 1 s) and then for
/// the backoff (up to 5 s): a heal after an attempt's last Initial waited for the next attempt,
/// 3.3 s after healing a 24 s partition. Now the client probes beta about once a second
/// (`unreachable_probe_interval`), so a heal is noticed within about a second whenever it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_events_resume_within_2s_of_healing_a_long_partition() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let late = resume_after_heals(&[Hold::PastDrop(Duration::from_secs(21))]).await;
    assert!(
        late.is_empty(),
        "resumed later than {RESUME_WITHIN:?}: {late:?}"
    );
}

/// A lossy, slow link (10% of the datagrams dropped each way, 20 ms added each way): every
/// call still succeeds, and events keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_events_cross_a_lossy_slow_link() {
    let _serial = SERIAL.lock().await;
    common::init_tracing();
    let beta = Server::spawn("beta");
    let to_beta = UdpProxy::start(beta.addr).await;
    let (client, beats) = client(vec![to_beta.addr()]).await;
    wait_connected(&client, &[&beta]).await;

    to_beta.set_drop(0.1);
    to_beta.set_delay(Duration::from_millis(20));
    let lossy = Instant::now();
    let mut calls = JoinSet::new();
    for _ in 0..500 {
        let client = client.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let answer = who(&client, common::WAIT).await;
            (answer, started.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    while let Some(joined) = calls.join_next().await {
        let (answer, took) = joined.unwrap();
        assert_eq!(answer.unwrap(), "beta");
        slowest = slowest.max(took);
    }
    let elapsed = lossy.elapsed();
    wait_for("a beat over the lossy link", || {
        beats
            .lock()
            .unwrap()
            .get("beta")
            .is_some_and(|t| *t > lossy + elapsed)
    })
    .await;
    eprintln!(
        "lossy link (10% drop, 20 ms delay each way): 500 concurrent calls ok in {elapsed:?}, \
         slowest {slowest:?}; proxy {:?}",
        to_beta.stats()
    );
    client.stop().await.unwrap();
}

/// The next datagram on `socket` (connected), if one comes `within`.
async fn recv_within(socket: &UdpSocket, buf: &mut [u8], within: Duration) -> Option<usize> {
    tokio::time::timeout(within, socket.recv(buf))
        .await
        .ok()
        .map(|r| r.unwrap())
}

/// The proxy itself: forwards both ways (one upstream socket per client), drops a seeded
/// fraction, delays, partitions and heals.
#[tokio::test]
async fn udp_proxy_forwards_drops_delays_and_partitions() {
    // A UDP echo server as the target.
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..len], from).await;
        }
    });
    let proxy = UdpProxy::start(target).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(proxy.addr()).await.unwrap();
    let mut buf = [0u8; 2048];
    // Forwarding, both ways.
    client.send(b"ping").await.unwrap();
    let len = recv_within(&client, &mut buf, common::WAIT)
        .await
        .expect("an echo");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(proxy.stats().forwarded, 2);

    // Delay: both ways, so a round trip takes at least twice as long.
    proxy.set_delay(Duration::from_millis(100));
    let sent = Instant::now();
    client.send(b"slow").await.unwrap();
    let len = recv_within(&client, &mut buf, common::WAIT)
        .await
        .expect("a delayed echo");
    assert_eq!(&buf[..len], b"slow");
    let round_trip = sent.elapsed();
    assert!(round_trip >= Duration::from_millis(200), "{round_trip:?}");
    proxy.set_delay(Duration::ZERO);

    // Partition: nothing gets through; after the heal, everything does.
    proxy.partition();
    let before = proxy.stats();
    client.send(b"lost").await.unwrap();
    wait_for("the proxy to drop the datagram", || {
        proxy.stats().dropped > before.dropped
    })
    .await;
    assert_eq!(
        recv_within(&client, &mut buf, Duration::from_millis(100)).await,
        None
    );
    proxy.heal();
    client.send(b"back").await.unwrap();
    let len = recv_within(&client, &mut buf, common::WAIT)
        .await
        .expect("an echo after the heal");
    assert_eq!(&buf[..len], b"back");

    // A seeded fraction of drops, one decision per datagram in either direction. One datagram
    // at a time, so that no socket buffer overflows and the decisions come in a fixed order.
    proxy.set_drop(0.25);
    let before = proxy.stats();
    let sent = 400u64;
    let mut received = 0u64;
    for i in 0..sent {
        let dropped_before = proxy.stats().dropped;
        client.send(&i.to_le_bytes()).await.unwrap();
        let deadline = Instant::now() + common::WAIT;
        // Its echo arrives, or the proxy drops it (on the way there or back).
        loop {
            if recv_within(&client, &mut buf, Duration::from_millis(2))
                .await
                .is_some()
            {
                assert_eq!(buf[..8], i.to_le_bytes());
                received += 1;
                break;
            }
            if proxy.stats().dropped > dropped_before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "datagram {i} neither echoed nor dropped"
            );
        }
    }
    let stats = proxy.stats();
    let (forwarded, dropped) = (
        stats.forwarded - before.forwarded,
        stats.dropped - before.dropped,
    );
    assert_eq!(received + dropped, sent, "{stats:?}");
    let fraction = dropped as f64 / (forwarded + dropped) as f64;
    assert!((0.2..0.3).contains(&fraction), "{fraction}");
    eprintln!("udp proxy, 25% drop: {sent} sent, {received} echoed, {dropped} dropped");

    // Two clients get two upstream sockets: the target sees two peers.
    proxy.set_drop(0.0);
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(proxy.addr()).await.unwrap();
    other.send(b"other").await.unwrap();
    client.send(b"mine").await.unwrap();
    let len = recv_within(&other, &mut buf, common::WAIT)
        .await
        .expect("an echo");
    assert_eq!(&buf[..len], b"other");
    let len = recv_within(&client, &mut buf, common::WAIT)
        .await
        .expect("an echo");
    assert_eq!(&buf[..len], b"mine");
    echo_task.abort();
}
