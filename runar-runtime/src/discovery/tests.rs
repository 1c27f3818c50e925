//! Discovery tests: real multicast on the loopback interface, one free group and port per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::mpsc::{Receiver, channel};

use super::{
    packet::{Kind, Outgoing, signed_bytes, unix_millis},
    *,
};
use crate::{Code, wire};

/// Generous bound for conditions that take milliseconds; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(10);

/// A multicast group of its own for one test: a port that is free on this host (kept bound
/// on 127.0.0.1 by the returned socket for the test's duration, so no parallel test gets it) and
/// a group address derived from it.
fn free_group() -> (SocketAddr, StdUdpSocket) {
    let probe = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    let [hi, lo] = port.to_be_bytes();
    let group = SocketAddr::from((Ipv4Addr::new(239, 255, hi, lo), port));
    (group, probe)
}

/// A network as discovery sees it: only its public id.
struct TestNetwork(String);

impl TestNetwork {
    fn network_id(&self) -> String {
        self.0.clone()
    }
}

fn network(name: &str) -> TestNetwork {
    TestNetwork(format!("discovery-test-network-{name}"))
}

fn peer(network: &TestNetwork, addr: &str) -> LocalPeer {
    LocalPeer {
        keypair: Arc::new(NodeKeypair::generate().unwrap()),
        network_id: network.network_id(),
        addresses: vec![addr.parse().unwrap()],
    }
}

/// Multicast on `group`, on the loopback interface only.
fn on_loopback(group: SocketAddr) -> DiscoveryOptions {
    DiscoveryOptions::multicast(group).multicast_interface(Ipv4Addr::LOCALHOST)
}

struct Started {
    id: NodeId,
    discovery: Discovery,
    events: Receiver<DiscoveryEvent>,
}

/// Logs to the test output when `RUST_LOG` is set (e.g. `RUST_LOG=runar_runtime=debug`).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn start(options: &DiscoveryOptions, local: LocalPeer) -> Started {
    init_tracing();
    let id = local.keypair.node_id();
    let (tx, events) = channel(1024);
    let discovery = Discovery::start(options, local, tx).await.unwrap();
    Started {
        id,
        discovery,
        events,
    }
}

/// The first event for which `f` returns `Some`, within `limit`; panics with `what` otherwise.
async fn wait_for<T>(
    events: &mut Receiver<DiscoveryEvent>,
    limit: Duration,
    what: &str,
    mut f: impl FnMut(DiscoveryEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(limit, async {
        loop {
            let event = events.recv().await.expect("event channel closed");
            if let Some(found) = f(event) {
                return found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

/// The next event, within `limit`.
async fn next_event(events: &mut Receiver<DiscoveryEvent>, what: &str) -> DiscoveryEvent {
    wait_for(events, DEADLINE, what, Some).await
}

#[tokio::test]
async fn two_nodes_find_each_other_fast_and_never_themselves() {
    let (group, _port) = free_group();
    let net = network("a");
    let options = on_loopback(group);
    let t0 = Instant::now();
    let mut a = start(&options, peer(&net, "0.0.0.0:40001")).await;
    let mut b = start(&options, peer(&net, "127.0.0.1:40002")).await;

    // Each side sees the other, with the right address, and never itself.
    let (a_id, b_id) = (a.id, b.id);
    let a_saw = wait_for(
        &mut a.events,
        Duration::from_secs(1),
        "a finds b",
        |e| match e {
            DiscoveryEvent::Discovered { node_id, addresses } => {
                assert_ne!(node_id, a_id, "a reported itself");
                (node_id == b_id).then_some(addresses)
            }
            DiscoveryEvent::Goodbye { .. } => panic!("unexpected {e}"),
        },
    )
    .await;
    let a_found = t0.elapsed();
    let b_saw = wait_for(
        &mut b.events,
        Duration::from_secs(1),
        "b finds a",
        |e| match e {
            DiscoveryEvent::Discovered { node_id, addresses } => {
                assert_ne!(node_id, b_id, "b reported itself");
                (node_id == a_id).then_some(addresses)
            }
            DiscoveryEvent::Goodbye { .. } => panic!("unexpected {e}"),
        },
    )
    .await;
    let b_found = t0.elapsed();
    eprintln!("first discovery: a found b after {a_found:?}, b found a after {b_found:?}");
    assert_eq!(a_saw, vec!["127.0.0.1:40002".parse().unwrap()]);
    // a is bound to 0.0.0.0: on the loopback interface that is 127.0.0.1.
    assert_eq!(b_saw, vec!["127.0.0.1:40001".parse().unwrap()]);

    // Through several more announcements (the fast schedule), still never itself.
    for (me, other, events) in [(a_id, b_id, &mut a.events), (b_id, a_id, &mut b.events)] {
        let mut seen = 0;
        wait_for(events, DEADLINE, "three more announcements", |e| match e {
            DiscoveryEvent::Discovered { node_id, .. } => {
                assert_ne!(node_id, me, "reported itself");
                assert_eq!(node_id, other);
                seen += 1;
                (seen == 3).then_some(())
            }
            DiscoveryEvent::Goodbye { .. } => panic!("unexpected {e}"),
        })
        .await;
    }
    a.discovery.stop().await;
    b.discovery.stop().await;
}

#[tokio::test]
async fn a_new_peer_gets_a_prompt_answer() {
    // `quiet` would not announce on its own for an hour: `late` can only learn of it from the
    // answer `quiet` sends when it hears a new peer.
    let (group, _port) = free_group();
    let net = network("a");
    let quiet_options = on_loopback(group).first_announce_delay(Duration::from_secs(3600));
    let quiet = start(&quiet_options, peer(&net, "127.0.0.1:40011")).await;
    let mut late = start(&on_loopback(group), peer(&net, "127.0.0.1:40012")).await;
    let t0 = Instant::now();
    let quiet_id = quiet.id;
    wait_for(
        &mut late.events,
        Duration::from_secs(1),
        "late finds quiet",
        |e| {
            matches!(e, DiscoveryEvent::Discovered { node_id, .. } if node_id == quiet_id)
                .then_some(())
        },
    )
    .await;
    eprintln!("answered after {:?}", t0.elapsed());
    quiet.discovery.stop().await;
    late.discovery.stop().await;
}

#[tokio::test]
async fn announce_now_announces_at_once() {
    // Neither node would announce on its own during the test.
    let (group, _port) = free_group();
    let net = network("a");
    let options = on_loopback(group).first_announce_delay(Duration::from_secs(3600));
    let mut a = start(&options, peer(&net, "127.0.0.1:40041")).await;
    let mut b = start(&options, peer(&net, "127.0.0.1:40042")).await;
    a.discovery.announce_now();
    let (a_id, b_id) = (a.id, b.id);
    wait_for(&mut b.events, Duration::from_secs(1), "b hears a", |e| {
        matches!(e, DiscoveryEvent::Discovered { node_id, .. } if node_id == a_id).then_some(())
    })
    .await;
    // b answers the new peer.
    wait_for(&mut a.events, Duration::from_secs(1), "a hears b", |e| {
        matches!(e, DiscoveryEvent::Discovered { node_id, .. } if node_id == b_id).then_some(())
    })
    .await;
    a.discovery.stop().await;
    b.discovery.stop().await;
}

#[tokio::test]
async fn stop_and_drop_send_goodbye() {
    let (group, _port) = free_group();
    let net = network("a");
    let options = on_loopback(group);
    let mut a = start(&options, peer(&net, "127.0.0.1:40021")).await;
    let b = start(&options, peer(&net, "127.0.0.1:40022")).await;
    let c = start(&options, peer(&net, "127.0.0.1:40023")).await;
    let mut pending: HashSet<NodeId> = [b.id, c.id].into();
    wait_for(&mut a.events, DEADLINE, "a finds b and c", |e| {
        if let DiscoveryEvent::Discovered { node_id, .. } = e {
            pending.remove(&node_id);
        }
        pending.is_empty().then_some(())
    })
    .await;

    let b_id = b.id;
    let t0 = Instant::now();
    b.discovery.stop().await;
    wait_for(
        &mut a.events,
        Duration::from_secs(1),
        "goodbye from b",
        |e| (e == DiscoveryEvent::Goodbye { node_id: b_id }).then_some(()),
    )
    .await;
    eprintln!("goodbye after stop() received in {:?}", t0.elapsed());

    let c_id = c.id;
    let t0 = Instant::now();
    drop(c.discovery);
    wait_for(
        &mut a.events,
        Duration::from_secs(1),
        "goodbye from c",
        |e| (e == DiscoveryEvent::Goodbye { node_id: c_id }).then_some(()),
    )
    .await;
    eprintln!("goodbye after drop received in {:?}", t0.elapsed());
    a.discovery.stop().await;
}

/// An announcement with every field chosen by the test.
fn announcement(
    key: &NodeKeypair,
    network_id: &str,
    kind: wire::DiscoveryKind,
    sequence: u64,
) -> wire::DiscoveryAnnouncement {
    wire::DiscoveryAnnouncement {
        protocol_version: 1,
        kind: kind as i32,
        node_id: Bytes::copy_from_slice(key.node_id().as_bytes()),
        public_key: Bytes::copy_from_slice(&key.public_key()),
        network_id: network_id.to_owned(),
        addresses: vec![wire::DiscoveryAddress {
            ip: Bytes::from_static(&[127, 0, 0, 1]),
            port: 40099,
        }],
        instance: 7,
        sequence,
        timestamp_ms: unix_millis(),
    }
}

/// `announcement` encoded and signed by `signer`.
fn sign(announcement: &wire::DiscoveryAnnouncement, signer: &NodeKeypair) -> Vec<u8> {
    let bytes = announcement.encode_to_vec();
    let signature = signer.sign(&signed_bytes(&bytes));
    wire::DiscoveryPacket {
        announcement: Bytes::from(bytes),
        signature: Bytes::copy_from_slice(&signature),
    }
    .encode_to_vec()
}

fn valid(key: &NodeKeypair, network_id: &str, kind: wire::DiscoveryKind, seq: u64) -> Vec<u8> {
    sign(&announcement(key, network_id, kind, seq), key)
}

#[tokio::test]
async fn forged_and_malformed_datagrams_add_no_peer() {
    use wire::DiscoveryKind::{Announce, Goodbye};

    let (group, _port) = free_group();
    let net = network("a");
    let ours = net.network_id();
    let theirs = network("b").network_id();
    let local = peer(&net, "127.0.0.1:40031");
    let receiver_key = Arc::clone(&local.keypair);
    let mut r = start(&on_loopback(group), local).await;
    let raw = multicast::sending_socket(Ipv4Addr::LOCALHOST, 1).unwrap();
    let send = |datagram: &[u8]| {
        raw.send_to(datagram, group).unwrap();
    };
    let x = NodeKeypair::generate().unwrap();
    let y = NodeKeypair::generate().unwrap();
    let z = NodeKeypair::generate().unwrap();

    // A genuine announcement from x is accepted.
    let x1 = valid(&x, &ours, Announce, 1);
    send(&x1);
    let first = next_event(&mut r.events, "x's genuine announcement").await;
    assert_eq!(
        first,
        DiscoveryEvent::Discovered {
            node_id: x.node_id(),
            addresses: vec!["127.0.0.1:40099".parse().unwrap()]
        }
    );

    // Wrong signature: x's announcement (with another address) signed by y.
    let mut wrong_signer = announcement(&x, &ours, Announce, 2);
    wrong_signer.addresses[0].port = 40097;
    send(&sign(&wrong_signer, &y));
    // Node id not matching the key: y's id with z's key, signed by z.
    let mut mismatched = announcement(&z, &ours, Announce, 2);
    mismatched.node_id = Bytes::copy_from_slice(y.node_id().as_bytes());
    send(&sign(&mismatched, &z));
    // Another network's id, properly signed.
    send(&valid(&z, &theirs, Announce, 2));
    // An unsupported version, properly signed.
    let mut future = announcement(&z, &ours, Announce, 2);
    future.protocol_version = 2;
    send(&sign(&future, &z));
    // No kind, properly signed.
    send(&valid(&z, &ours, wire::DiscoveryKind::Unspecified, 2));
    // A public key of the wrong length.
    let mut short_key = announcement(&z, &ours, Announce, 2);
    short_key.public_key = Bytes::from_static(&[1; 31]);
    send(&sign(&short_key, &z));
    // The receiver's own id with a stranger's key.
    let mut own = announcement(&z, &ours, Announce, 2);
    own.node_id = Bytes::copy_from_slice(receiver_key.node_id().as_bytes());
    send(&sign(&own, &z));
    // x's genuine datagram replayed.
    send(&x1);
    // x's datagram modified: another address, the original signature.
    let mut packet = wire::DiscoveryPacket::decode(x1.as_slice()).unwrap();
    let mut modified = wire::DiscoveryAnnouncement::decode(packet.announcement.clone()).unwrap();
    modified.addresses[0].port = 40098;
    modified.sequence = 5;
    packet.announcement = Bytes::from(modified.encode_to_vec());
    send(&packet.encode_to_vec());
    // A goodbye for x signed by y.
    send(&sign(&announcement(&x, &ours, Goodbye, 6), &y));
    // Garbage: empty, random bytes, a packet whose announcement is garbage, oversized.
    send(&[]);
    send(&[0xff; 64]);
    send(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    send(
        &wire::DiscoveryPacket {
            announcement: Bytes::from_static(&[0x08, 0x80]),
            signature: Bytes::from_static(&[0; 64]),
        }
        .encode_to_vec(),
    );
    let mut big = announcement(&z, &ours, Announce, 2);
    big.network_id = "n".repeat(1500);
    send(&sign(&big, &z));

    // The channel stayed silent: the next event is the control announcement.
    let control = NodeKeypair::generate().unwrap();
    send(&valid(&control, &ours, Announce, 1));
    let next = next_event(&mut r.events, "control announcement").await;
    assert!(
        matches!(next, DiscoveryEvent::Discovered { node_id, .. } if node_id == control.node_id()),
        "a forged datagram got through: {next}"
    );

    // A genuine goodbye from x is accepted...
    let x_bye = valid(&x, &ours, Goodbye, 7);
    send(&x_bye);
    let next = next_event(&mut r.events, "x's goodbye").await;
    assert_eq!(
        next,
        DiscoveryEvent::Goodbye {
            node_id: x.node_id()
        }
    );
    // ... but neither its replay, nor x's older announcement, nor a stale goodbye.
    send(&x_bye);
    send(&x1);
    let mut stale = announcement(&control, &ours, Goodbye, 9);
    stale.timestamp_ms = unix_millis() - 10 * 60 * 1000;
    send(&sign(&stale, &control));
    let control2 = NodeKeypair::generate().unwrap();
    send(&valid(&control2, &ours, Announce, 1));
    let next = next_event(&mut r.events, "second control announcement").await;
    assert!(
        matches!(next, DiscoveryEvent::Discovered { node_id, .. } if node_id == control2.node_id()),
        "a replayed or stale datagram got through: {next}"
    );
    r.discovery.stop().await;
}

#[test]
fn each_forgery_is_rejected_for_its_reason() {
    use wire::DiscoveryKind::Announce;

    let net = network("a");
    let ours = net.network_id();
    let me = NodeKeypair::generate().unwrap();
    let checker = packet::Checker {
        network_id: ours.clone(),
        own: me.node_id(),
        max_size: 1200,
    };
    let check = |datagram: &[u8]| checker.parse(datagram).and_then(|p| p.verify());
    let (x, y) = (
        NodeKeypair::generate().unwrap(),
        NodeKeypair::generate().unwrap(),
    );

    let genuine = check(&valid(&x, &ours, Announce, 1)).unwrap();
    assert_eq!(genuine.node_id, x.node_id());
    assert_eq!(genuine.kind, Kind::Announce);

    let reason = |datagram: &[u8]| format!("{:?}", check(datagram).unwrap_err());
    assert!(reason(&sign(&announcement(&x, &ours, Announce, 1), &y)).starts_with("BadSignature"));
    let mut mismatched = announcement(&y, &ours, Announce, 1);
    mismatched.node_id = Bytes::copy_from_slice(x.node_id().as_bytes());
    assert!(reason(&sign(&mismatched, &y)).starts_with("NodeIdMismatch"));
    let other = network("b").network_id();
    assert!(reason(&valid(&x, &other, Announce, 1)).starts_with("OtherNetwork"));
    assert!(reason(&valid(&me, &ours, Announce, 1)).starts_with("Own"));
    let mut future = announcement(&x, &ours, Announce, 1);
    future.protocol_version = 2;
    assert!(reason(&sign(&future, &x)).starts_with("Version(2)"));
    let mut short = announcement(&x, &ours, Announce, 1);
    short.public_key = Bytes::from_static(&[7; 31]);
    assert!(reason(&sign(&short, &x)).starts_with("BadKey"));
    assert!(
        reason(&valid(&x, &ours, wire::DiscoveryKind::Unspecified, 1)).starts_with("UnknownKind")
    );
    let mut bad_kind = announcement(&x, &ours, Announce, 1);
    bad_kind.kind = 99;
    assert!(reason(&sign(&bad_kind, &x)).starts_with("UnknownKind(99)"));
    assert!(reason(&[0xff; 40]).starts_with("Malformed"));
    assert!(reason(&[0u8; 1201]).starts_with("TooLarge"));
    // Truncations of a genuine datagram never panic and never pass.
    let datagram = valid(&x, &ours, Announce, 1);
    for len in 0..datagram.len() {
        assert!(check(&datagram[..len]).is_err(), "truncated to {len}");
    }
    // Nor does flipping a bit in any byte (a different bit in each).
    for i in 0..datagram.len() {
        let mut flipped = datagram.clone();
        flipped[i] ^= 1 << (i % 8);
        assert!(
            check(&flipped).is_err(),
            "bit {} of byte {i} flipped",
            i % 8
        );
    }
}

#[tokio::test]
async fn loopback_addresses_are_not_accepted_from_other_hosts() {
    // Only the receiving filter can be tested on a loopback-only setup: a datagram from a
    // non-loopback source is simulated by calling the check directly.
    let net = network("a");
    let x = NodeKeypair::generate().unwrap();
    let checker = packet::Checker {
        network_id: net.network_id(),
        own: NodeKeypair::generate().unwrap().node_id(),
        max_size: 1200,
    };
    let datagram = Outgoing {
        keypair: &x,
        network_id: &net.network_id(),
        kind: Kind::Announce,
        addresses: &[
            "127.0.0.1:4000".parse().unwrap(),
            "192.0.2.5:4000".parse().unwrap(),
            "0.0.0.0:4000".parse().unwrap(),
        ],
        instance: 1,
        sequence: 1,
        timestamp_ms: unix_millis(),
    }
    .encode(1200);
    let verified = checker.parse(&datagram).unwrap().verify().unwrap();
    let remote: SocketAddr = "192.0.2.5:5000".parse().unwrap();
    let usable: Vec<_> = verified
        .addresses
        .iter()
        .filter(|a| multicast::usable_from(a, remote.ip()))
        .collect();
    assert_eq!(
        usable,
        vec![&"192.0.2.5:4000".parse::<SocketAddr>().unwrap()]
    );
}

#[tokio::test]
async fn oversized_address_lists_are_cut_to_fit() {
    let net = network("a");
    let x = NodeKeypair::generate().unwrap();
    let addresses: Vec<SocketAddr> = (1..=40)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 4000)))
        .collect();
    let datagram = Outgoing {
        keypair: &x,
        network_id: &net.network_id(),
        kind: Kind::Announce,
        addresses: &addresses,
        instance: 1,
        sequence: 1,
        timestamp_ms: unix_millis(),
    }
    .encode(512);
    assert!(datagram.len() <= 512, "{} bytes", datagram.len());
    let checker = packet::Checker {
        network_id: net.network_id(),
        own: NodeKeypair::generate().unwrap().node_id(),
        max_size: 512,
    };
    let verified = checker.parse(&datagram).unwrap().verify().unwrap();
    assert!(!verified.addresses.is_empty());
    assert!(verified.addresses.len() < addresses.len());
}

#[tokio::test]
async fn twenty_nodes_see_each_other() {
    const N: usize = 20;
    let (group, _port) = free_group();
    let net = network("a");
    let options = on_loopback(group);
    let t0 = Instant::now();
    let mut nodes = Vec::with_capacity(N);
    for i in 0..N {
        let addr = format!("127.0.0.1:{}", 41000 + i);
        nodes.push(start(&options, peer(&net, &addr)).await);
    }
    let ids: HashSet<NodeId> = nodes.iter().map(|n| n.id).collect();
    for node in &mut nodes {
        let me = node.id;
        let mut pending: HashSet<NodeId> = ids.iter().copied().filter(|id| *id != me).collect();
        let limit = Duration::from_secs(3).saturating_sub(t0.elapsed());
        wait_for(&mut node.events, limit, "all others", |e| {
            if let DiscoveryEvent::Discovered { node_id, .. } = e {
                assert_ne!(node_id, me, "reported itself");
                assert!(ids.contains(&node_id), "unknown node {node_id}");
                pending.remove(&node_id);
            }
            pending.is_empty().then_some(())
        })
        .await;
    }
    eprintln!("{N} nodes saw all others after {:?}", t0.elapsed());
    for node in nodes {
        node.discovery.stop().await;
    }
}

#[tokio::test]
async fn memory_hub_three_nodes_one_stranger() {
    let hub = MemoryHub::new();
    let options = DiscoveryOptions::memory(&hub);
    let net = network("a");
    let mut a = start(&options, peer(&net, "0.0.0.0:42001")).await;
    let mut b = start(&options, peer(&net, "127.0.0.1:42002")).await;
    let mut stranger = start(&options, peer(&network("b"), "127.0.0.1:42009")).await;
    let mut c = start(&options, peer(&net, "127.0.0.1:42003")).await;
    assert_eq!(hub.len(), 4);

    let addr = |s: &str| vec![s.parse::<SocketAddr>().unwrap()];
    let expect = |node: &mut Started, peers: [(NodeId, Vec<SocketAddr>); 2]| {
        let mut got = HashSet::new();
        while let Ok(event) = node.events.try_recv() {
            match event {
                DiscoveryEvent::Discovered { node_id, addresses } => {
                    let (_, want) = peers
                        .iter()
                        .find(|(id, _)| *id == node_id)
                        .unwrap_or_else(|| panic!("unexpected node {node_id}"));
                    assert_eq!(&addresses, want);
                    got.insert(node_id);
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(got.len(), 2);
    };
    // Attaching is synchronous: every event is already there.
    let (a_addr, b_addr, c_addr) = (
        addr("127.0.0.1:42001"),
        addr("127.0.0.1:42002"),
        addr("127.0.0.1:42003"),
    );
    expect(&mut a, [(b.id, b_addr.clone()), (c.id, c_addr.clone())]);
    expect(&mut b, [(a.id, a_addr.clone()), (c.id, c_addr)]);
    expect(&mut c, [(a.id, a_addr), (b.id, b_addr)]);
    assert!(stranger.events.try_recv().is_err(), "other network visible");

    // announce_now reports the node again.
    c.discovery.announce_now();
    for node in [&mut a, &mut b] {
        assert!(matches!(
            node.events.try_recv(),
            Ok(DiscoveryEvent::Discovered { node_id, .. }) if node_id == c.id
        ));
    }

    let c_id = c.id;
    c.discovery.stop().await;
    for node in [&mut a, &mut b] {
        assert_eq!(
            node.events.try_recv(),
            Ok(DiscoveryEvent::Goodbye { node_id: c_id })
        );
        assert!(node.events.try_recv().is_err());
    }
    assert!(stranger.events.try_recv().is_err(), "other network visible");
    drop(b.discovery);
    assert_eq!(
        a.events.try_recv(),
        Ok(DiscoveryEvent::Goodbye { node_id: b.id })
    );
    assert_eq!(hub.len(), 2);
    a.discovery.stop().await;
    stranger.discovery.stop().await;
    assert!(hub.is_empty());
}

#[tokio::test]
async fn bad_options_fail_in_start_without_panicking() {
    let net = network("a");
    for group in [
        "not an address",
        "10.0.0.1:5000",
        "[ff02::1]:5000",
        "239.255.1.1:0",
        "239.255.1.1",
    ] {
        let (tx, _rx) = channel(1024);
        let err = Discovery::start(
            &DiscoveryOptions::multicast(group),
            peer(&net, "127.0.0.1:1"),
            tx,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{group}: {err}");
    }
    let (group, _port) = free_group();
    for options in [
        on_loopback(group).announce_interval(Duration::ZERO),
        on_loopback(group).multicast_ttl(256),
        on_loopback(group).max_datagram_size(100),
        on_loopback(group).max_datagram_size(70_000),
    ] {
        let (tx, _rx) = channel(1024);
        let err = Discovery::start(&options, peer(&net, "127.0.0.1:1"), tx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{options:?}: {err}");
    }
    // An interface that is not on this host.
    let (tx, _rx) = channel(1024);
    let err = Discovery::start(
        &DiscoveryOptions::multicast(group).multicast_interface(Ipv4Addr::new(192, 0, 2, 200)),
        peer(&net, "127.0.0.1:1"),
        tx,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[test]
fn options_combine() {
    let hub = MemoryHub::new();
    let a: SocketAddr = "192.0.2.1:7000".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:7000".parse().unwrap();
    let options = DiscoveryOptions::static_peers([a])
        .and(DiscoveryOptions::memory(&hub))
        .and(DiscoveryOptions::static_peers([b, a]))
        .and(DiscoveryOptions::none());
    assert_eq!(options.static_peer_addrs(), vec![a, b]);
    assert!(!options.is_none());
    assert!(DiscoveryOptions::none().is_none());
    assert!(DiscoveryOptions::none().static_peer_addrs().is_empty());
    // Settings reach every multicast provider.
    let options = DiscoveryOptions::multicast("239.255.0.1:1000")
        .and(DiscoveryOptions::multicast(String::from(
            "239.255.0.2:1000",
        )))
        .announce_interval(Duration::from_secs(1))
        .multicast_ttl(4);
    let multicast: Vec<_> = options
        .providers
        .iter()
        .filter_map(|p| match p {
            Provider::Multicast(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(multicast.len(), 2);
    assert!(
        multicast
            .iter()
            .all(|m| m.announce_interval == Duration::from_secs(1) && m.ttl == 4)
    );
}

/// Environment variable that turns [`child_process_node`] into the other process of
/// [`two_processes_find_each_other`]: `group;network secret;parent node id`.
const CHILD_ENV: &str = "RUNAR_DISCOVERY_TEST_CHILD";

/// In a normal run, does nothing. As the child process: runs a node, waits until it has found
/// the parent and the parent has closed its stdin, then stops (saying goodbye) and exits.
#[tokio::test]
async fn child_process_node() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(';');
    let (group, secret, parent) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<NodeId>().unwrap(),
    );
    let net = TestNetwork(secret.to_owned());
    let mut me = start(
        &DiscoveryOptions::multicast(group).multicast_interface(Ipv4Addr::LOCALHOST),
        peer(&net, "127.0.0.1:43002"),
    )
    .await;
    wait_for(&mut me.events, DEADLINE, "the parent", |e| {
        matches!(e, DiscoveryEvent::Discovered { node_id, .. } if node_id == parent).then_some(())
    })
    .await;
    println!("child found the parent");
    // Stay until the parent has found us too: it closes our stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    })
    .await
    .unwrap();
    me.discovery.stop().await;
}

#[tokio::test]
async fn two_processes_find_each_other() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (group, _port) = free_group();
    let secret = "discovery test two processes";
    let net = TestNetwork(secret.to_owned());
    let mut parent = start(&on_loopback(group), peer(&net, "127.0.0.1:43001")).await;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "discovery::tests::child_process_node",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{group};{secret};{}", parent.id))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let child_id = wait_for(
        &mut parent.events,
        DEADLINE,
        "the child process",
        |e| match e {
            DiscoveryEvent::Discovered { node_id, addresses } => {
                assert_eq!(addresses, vec!["127.0.0.1:43002".parse().unwrap()]);
                Some(node_id)
            }
            DiscoveryEvent::Goodbye { .. } => panic!("unexpected {e}"),
        },
    )
    .await;
    eprintln!("found the child process after {:?}", t0.elapsed());
    // Let the child stop: it then says goodbye.
    drop(child.stdin.take());
    wait_for(&mut parent.events, DEADLINE, "the child's goodbye", |e| {
        (e == DiscoveryEvent::Goodbye { node_id: child_id }).then_some(())
    })
    .await;
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        (status, out)
    })
    .await
    .unwrap();
    assert!(output.0.success(), "child failed: {}", output.1);
    assert!(output.1.contains("child found the parent"), "{}", output.1);
    parent.discovery.stop().await;
}

#[test]
fn types_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Discovery>();
    send_sync::<DiscoveryOptions>();
    send_sync::<MemoryHub>();
    send_sync::<DiscoveryEvent>();
    send_sync::<LocalPeer>();
    let options = DiscoveryOptions::none();
    let (tx, _rx) = channel(1024);
    let start = Discovery::start(&options, peer(&network("a"), "127.0.0.1:1"), tx);
    send(&start);
}

/// A flood of genuine announcements with fresh ids (anyone on the LAN can make them) while the
/// node takes none: the queue never holds more than its capacity; the rest is dropped and
/// counted, and the queue works again once drained (issue 9, item 6).
#[tokio::test]
async fn a_flood_of_fresh_ids_is_dropped_at_the_bounded_queue() {
    const CAPACITY: usize = 16;
    const FLOOD: u64 = 300;
    init_tracing();
    let (group, _port) = free_group();
    let net = network("a");
    let (tx, mut events) = channel(CAPACITY);
    let discovery = Discovery::start(&on_loopback(group), peer(&net, "127.0.0.1:40061"), tx)
        .await
        .unwrap();
    let raw = multicast::sending_socket(Ipv4Addr::LOCALHOST, 1).unwrap();
    let announce = |key: &NodeKeypair| {
        let datagram = valid(key, &net.network_id(), wire::DiscoveryKind::Announce, 1);
        raw.send_to(&datagram, group).unwrap();
    };
    // In batches, each taken in (queued or dropped) before the next: no datagram is lost to a
    // socket buffer, so every one is accounted for.
    let taken =
        |events: &Receiver<DiscoveryEvent>| events.len() as u64 + discovery.events_dropped();
    let mut sent = 0;
    while sent < FLOOD {
        for _ in 0..10 {
            announce(&NodeKeypair::generate().unwrap());
            sent += 1;
        }
        let deadline = Instant::now() + DEADLINE;
        while taken(&events) < sent {
            assert!(
                Instant::now() < deadline,
                "{} of {sent} taken",
                taken(&events)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            events.len() <= CAPACITY,
            "the queue grew to {}",
            events.len()
        );
    }
    assert_eq!(events.len(), CAPACITY);
    assert_eq!(discovery.events_dropped(), FLOOD - CAPACITY as u64);

    // Drained, it takes announcements again.
    while events.try_recv().is_ok() {}
    let late = NodeKeypair::generate().unwrap();
    announce(&late);
    let found = next_event(&mut events, "an announcement after the flood").await;
    assert!(
        matches!(found, DiscoveryEvent::Discovered { node_id, .. } if node_id == late.node_id())
    );
    assert_eq!(discovery.events_dropped(), FLOOD - CAPACITY as u64);
    discovery.stop().await;
}
