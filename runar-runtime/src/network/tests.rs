//! Network layer tests: real QUIC on 127.0.0.1 with ephemeral ports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use quinn::VarInt;
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::{net::UdpSocket, task::JoinHandle};

use super::{
    tls::{UNKNOWN_SERVER_NAME, node_id_of_certificate},
    *,
};
use crate::Code;
use crate::identity::{NodeId, NodeKeypair, ParseNodeIdError, verify};

/// Generous bound for anything that should take milliseconds; only hit on failure.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn local_config() -> TransportConfig {
    TransportConfig {
        bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    }
}

struct Node {
    key: NodeKeypair,
    transport: Transport,
}

fn node(network: &NetworkKey, config: TransportConfig) -> Node {
    let key = NodeKeypair::generate().unwrap();
    let transport = Transport::bind(config, &key, network).unwrap();
    Node { key, transport }
}

/// Accepts one connection attempt and completes its handshake.
fn accept_one(t: &Transport) -> JoinHandle<Result<(quinn::Connection, NodeId), TransportError>> {
    let t = t.clone();
    tokio::spawn(async move {
        let incoming = t.accept().await.expect("endpoint closed");
        incoming.handshake().await
    })
}

/// Echoes every frame of every bidi stream of `conn`, each stream in its own task.
fn echo_server(conn: quinn::Connection, max: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut recv, max).await {
                    if write_frame(&mut send, &frame, max).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            });
        }
    })
}

async fn round_trip(conn: &quinn::Connection, payload: &[u8], max: usize) -> Bytes {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, payload, max).await.unwrap();
    send.finish().unwrap();
    let reply = read_frame(&mut recv, max).await.unwrap().unwrap();
    assert!(read_frame(&mut recv, max).await.unwrap().is_none());
    reply
}

const MAX: usize = 4 * 1024 * 1024;

#[tokio::test]
async fn same_network_connects_with_verified_ids_and_round_trips() {
    let network = NetworkKey::from_secret("test network one");
    let server = node(&network, local_config());
    let client = node(&network, local_config());
    let addr = server.transport.local_addr().unwrap();

    // Dialing a known node id.
    let accepted = accept_one(&server.transport);
    let (conn, server_id) = within(
        "connect",
        client.transport.connect(addr, Some(&server.key.node_id())),
    )
    .await
    .unwrap();
    assert_eq!(server_id, server.key.node_id());
    assert_eq!(server_id, NodeId::from_public_key(&server.key.public_key()));
    assert_eq!(peer_node_id(&conn).unwrap(), server_id);
    let (server_conn, client_id) = within("accept", accepted).await.unwrap().unwrap();
    assert_eq!(client_id, client.key.node_id());
    assert_eq!(peer_node_id(&server_conn).unwrap(), client_id);

    echo_server(server_conn, MAX);
    let reply = within("round trip", round_trip(&conn, b"hello runar", MAX)).await;
    assert_eq!(&reply[..], b"hello runar");
    // Empty and multi-packet frames too.
    assert!(
        within("empty", round_trip(&conn, b"", MAX))
            .await
            .is_empty()
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(within("big", round_trip(&conn, &big, MAX)).await, big);

    // Dialing an address without knowing the node: the id is reported.
    let accepted = accept_one(&server.transport);
    let (_conn2, id) = within("connect unknown", client.transport.connect(addr, None))
        .await
        .unwrap();
    assert_eq!(id, server.key.node_id());
    let (_, client_id) = within("accept 2", accepted).await.unwrap().unwrap();
    assert_eq!(client_id, client.key.node_id());
    assert_eq!(server.transport.connection_count(), 2);
}

#[tokio::test]
async fn foreign_network_fails_handshake_on_both_sides() {
    // Shows the server's refusal log with `--nocapture`.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let server = node(&NetworkKey::from_secret("network A"), local_config());
    let client = node(&NetworkKey::from_secret("network B"), local_config());
    let addr = server.transport.local_addr().unwrap();

    let accepted = accept_one(&server.transport);
    let err = within("connect", client.transport.connect(addr, None))
        .await
        .unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
    assert_eq!(crate::Error::from(err).code(), Code::PermissionDenied);
    let server_err = within("accept", accepted).await.unwrap().unwrap_err();
    assert!(server_err.is_handshake_refused(), "{server_err}");
}

#[tokio::test]
async fn unexpected_node_id_fails() {
    let network = NetworkKey::from_secret("test network");
    let server = node(&network, local_config());
    let client = node(&network, local_config());
    let someone_else = NodeKeypair::generate().unwrap().node_id();
    let addr = server.transport.local_addr().unwrap();

    let accepted = accept_one(&server.transport);
    let err = within(
        "connect",
        client.transport.connect(addr, Some(&someone_else)),
    )
    .await
    .unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
    assert!(err.to_string().contains(&someone_else.to_string()), "{err}");
    assert!(within("accept", accepted).await.unwrap().is_err());
}

/// Accepts any server certificate (still checking handshake signatures), so the tests can
/// exercise the server's verification of client certificates on its own.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A raw quinn client that trusts any server and presents a certificate issued by `issuer`
/// for `key` (or no certificate).
fn rogue_client(
    cert: Option<(&NetworkKey, &NodeKeypair)>,
) -> (quinn::Endpoint, quinn::ClientConfig) {
    rogue_client_naming(cert, b"runar/1".to_vec())
}

/// [`rogue_client`] offering the ALPN `alpn`.
fn rogue_client_naming(
    cert: Option<(&NetworkKey, &NodeKeypair)>,
    alpn: Vec<u8>,
) -> (quinn::Endpoint, quinn::ClientConfig) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
    let mut tls = match cert {
        Some((issuer, key)) => builder
            .with_client_auth_cert(
                vec![issuer.issue_node_certificate(key).unwrap()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    (endpoint, config)
}

/// Connects a rogue client; returns the server's handshake result and the client's view.
async fn rogue_attempt(
    server: &Transport,
    cert: Option<(&NetworkKey, &NodeKeypair)>,
) -> Result<(quinn::Connection, NodeId), TransportError> {
    let (endpoint, config) = rogue_client(cert);
    let accepted = accept_one(server);
    let addr = server.local_addr().unwrap();
    let connecting = endpoint
        .connect_with(config, addr, UNKNOWN_SERVER_NAME)
        .unwrap();
    let result = within("rogue accept", accepted).await.unwrap();
    // The client may believe the handshake done before the server refuses; either way, a
    // refused client ends up closed with an error.
    if result.is_err() {
        let client_side = within("rogue client", async {
            match connecting.await {
                Ok(conn) => conn.closed().await,
                Err(e) => e,
            }
        })
        .await;
        assert!(
            TransportError::from(client_side).is_handshake_refused(),
            "client should see a TLS refusal"
        );
    }
    result
}

#[tokio::test]
async fn server_verifies_client_certificates() {
    let network = NetworkKey::from_secret("network A");
    let server = node(&network, local_config());
    let key = NodeKeypair::generate().unwrap();

    // The harness works: a rogue client with a proper certificate is admitted, with its id.
    let (_conn, id) = rogue_attempt(&server.transport, Some((&network, &key)))
        .await
        .unwrap();
    assert_eq!(id, key.node_id());

    // A certificate from another network is refused by the server.
    let foreign = NetworkKey::from_secret("network B");
    let err = rogue_attempt(&server.transport, Some((&foreign, &key)))
        .await
        .unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");

    // No certificate at all is refused.
    let err = rogue_attempt(&server.transport, None).await.unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
}

#[tokio::test]
async fn a_certificate_of_one_network_is_refused_for_another() {
    let shop = NetworkKey::from_secret("network shop");
    let ops = NetworkKey::from_secret("network ops");
    let server_key = NodeKeypair::generate().unwrap();
    let networks = [shop.clone(), ops.clone()];
    let server = Transport::bind_networks(local_config(), &server_key, &networks).unwrap();
    let addr = server.local_addr().unwrap();
    let client = NodeKeypair::generate().unwrap();
    let attempt = |cert: &NetworkKey, alpn: Vec<u8>| {
        let (endpoint, config) = rogue_client_naming(Some((cert, &client)), alpn);
        let accepted = accept_one(&server);
        async move {
            let _connecting = endpoint
                .connect_with(config, addr, UNKNOWN_SERVER_NAME)
                .unwrap();
            within("rogue accept", accepted).await.unwrap()
        }
    };
    // Each network's certificate naming its network is admitted to that network; bare
    // `runar/1` names the default one.
    for (index, network) in networks.iter().enumerate() {
        let (conn, id) = attempt(network, tls::alpn_of(network)).await.unwrap();
        assert_eq!(
            (server.network_of(&conn), id),
            (Some(index), client.node_id())
        );
    }
    let (conn, _) = attempt(&shop, b"runar/1".to_vec()).await.unwrap();
    assert_eq!(server.network_of(&conn), Some(0));
    // A client holding the ops key that names shop-net (ignoring the shop certificate the
    // server presents) completes TLS, and is refused before a byte of the protocol.
    for alpn in [tls::alpn_of(&shop), b"runar/1".to_vec()] {
        let err = attempt(&ops, alpn).await.unwrap_err();
        assert!(err.is_handshake_refused(), "{err}");
    }
    // A network the server is not in is refused in the handshake.
    let other = NetworkKey::from_secret("network other");
    let err = attempt(&other, tls::alpn_of(&other)).await.unwrap_err();
    assert!(err.is_handshake_refused(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_echo() {
    let network = NetworkKey::from_secret("test network");
    let server = node(&network, local_config());
    let client = node(&network, local_config());
    let addr = server.transport.local_addr().unwrap();
    let accepted = accept_one(&server.transport);
    let (conn, _) = within("connect", client.transport.connect(addr, None))
        .await
        .unwrap();
    let (server_conn, _) = within("accept", accepted).await.unwrap().unwrap();
    echo_server(server_conn, MAX);

    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let payload = format!("stream {i} says hello").into_bytes();
                let reply = round_trip(&conn, &payload, MAX).await;
                assert_eq!(reply, payload);
            })
        })
        .collect();
    within("200 streams", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
}

/// A connected pair: (client connection, server connection).
async fn connected_pair(
    network: &NetworkKey,
) -> (Node, Node, quinn::Connection, quinn::Connection) {
    let server = node(network, local_config());
    let client = node(network, local_config());
    let addr = server.transport.local_addr().unwrap();
    let accepted = accept_one(&server.transport);
    let (conn, _) = within("connect", client.transport.connect(addr, None))
        .await
        .unwrap();
    let (server_conn, _) = within("accept", accepted).await.unwrap().unwrap();
    (server, client, conn, server_conn)
}

#[tokio::test]
async fn oversized_frames_are_refused_and_the_connection_survives() {
    let network = NetworkKey::from_secret("test network");
    let (_s, _c, conn, server_conn) = connected_pair(&network).await;

    // Send side: refused before anything is written.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let err = write_frame(&mut send, &[0u8; 1025], 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{err}"
    );
    assert_eq!(crate::Error::from(err).code(), Code::ResourceExhausted);

    // Read side: a header declaring ~4 GiB and no body. If the reader tried to allocate or read
    // the body it would fail or hang; it must answer at once.
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let (_server_send, mut server_recv) =
        within("accept_bi", server_conn.accept_bi()).await.unwrap();
    let err = within("read", read_frame(&mut server_recv, MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { len, max } if len == u64::from(u32::MAX) && max == MAX),
        "{err}"
    );
    assert_eq!(crate::Error::from(err).code(), Code::ResourceExhausted);
    server_recv.stop(VarInt::from_u32(1)).unwrap();

    // The connection still carries new streams.
    echo_server(server_conn, MAX);
    let reply = within("round trip after", round_trip(&conn, b"still here", MAX)).await;
    assert_eq!(&reply[..], b"still here");
}

/// Sends `bytes` raw on a new stream, finishes it, and returns what `read_frame` makes of the
/// stream on the server side, frame after frame, until an error or the end.
async fn read_all_frames(
    conn: &quinn::Connection,
    server_conn: &quinn::Connection,
    bytes: &[u8],
    max: usize,
) -> Result<Vec<Bytes>, TransportError> {
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    // The stream only exists for the peer once something is sent.
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let (_send, mut recv) = within("accept_bi", server_conn.accept_bi()).await.unwrap();
    let mut frames = Vec::new();
    within("read frames", async {
        while let Some(frame) = read_frame(&mut recv, max).await? {
            frames.push(frame);
        }
        Ok(frames)
    })
    .await
}

#[tokio::test]
async fn truncated_frames_and_garbage_give_errors() {
    let network = NetworkKey::from_secret("test network");
    let (_s, _c, conn, server_conn) = connected_pair(&network).await;

    // Two whole frames then a clean end.
    let mut good = Vec::new();
    for payload in [&b"one"[..], b"two!"] {
        good.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        good.extend_from_slice(payload);
    }
    let frames = read_all_frames(&conn, &server_conn, &good, MAX)
        .await
        .unwrap();
    assert_eq!(
        frames,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two!")]
    );

    // Truncated header.
    let err = read_all_frames(&conn, &server_conn, &[0, 0], MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Truncated {
                expected: 4,
                got: 2
            }
        ),
        "{err}"
    );
    // Truncated body.
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(&[7; 10]);
    let err = read_all_frames(&conn, &server_conn, &short, MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Truncated {
                expected: 100,
                got: 10
            }
        ),
        "{err}"
    );
    assert_eq!(crate::Error::from(err).code(), Code::InvalidArgument);

    // Garbage: never a panic, always an end (clean or with an error). Small maxima make many
    // random headers plausible, so frames are parsed as well as refused.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..12 {
        let len = (rng.next() % 4096) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 {
            // Plausible small length prefixes.
            for chunk in bytes.chunks_mut(37) {
                if let Some(first) = chunk.first_mut() {
                    *first = 0;
                }
                if let Some(second) = chunk.get_mut(1) {
                    *second = 0;
                }
            }
        }
        let max = [64usize, 4096, MAX][round % 3];
        let _ = read_all_frames(&conn, &server_conn, &bytes, max).await;
    }
}

/// Sends `pieces` on a new stream, each in its own packet (a pause between them, so that frames
/// and headers straddle received chunks), and reads the stream on the server side with
/// [`FrameReader`] (`buffered`: `ready`, then `next` when it needs bytes) or repeated
/// [`read_frame`] calls.
async fn read_pieces(
    conn: &quinn::Connection,
    server_conn: &quinn::Connection,
    pieces: &[Vec<u8>],
    max: usize,
    buffered: bool,
) -> Result<Vec<Bytes>, TransportError> {
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    for piece in pieces {
        send.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    send.finish().unwrap();
    let (_send, mut recv) = within("accept_bi", server_conn.accept_bi()).await.unwrap();
    let mut frames = Vec::new();
    let mut reader = framing::FrameReader::new(max, Some(std::time::Duration::from_secs(10)));
    within("read frames", async {
        loop {
            let frame = if buffered {
                // Every other frame as a streaming call's reader takes it: already received
                // in full (`ready`), else read.
                match (frames.len() % 2 == 0).then(|| reader.ready()).flatten() {
                    Some(frame) => Some(frame?),
                    None => reader.next(&mut recv).await?,
                }
            } else {
                read_frame(&mut recv, max).await?
            };
            match frame {
                Some(frame) => frames.push(frame),
                None => return Ok(frames),
            }
        }
    })
    .await
}

#[tokio::test]
async fn frame_reader_reads_what_read_frame_reads() {
    let network = NetworkKey::from_secret("test network");
    let (_s, _c, conn, server_conn) = connected_pair(&network).await;
    let frame = |len: usize, fill: u8| {
        let mut f = (len as u32).to_be_bytes().to_vec();
        f.extend(std::iter::repeat_n(fill, len));
        f
    };
    let mut stream = Vec::new();
    for (i, len) in [0usize, 1, 3, 4, 5000, 1, 200_000, 0, 77]
        .into_iter()
        .enumerate()
    {
        stream.extend(frame(len, i as u8));
    }
    // Cut points: inside headers, inside bodies, on boundaries.
    let cuts = |bytes: &[u8], at: &[usize]| -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut from = 0;
        for &to in at.iter().chain([bytes.len()].iter()) {
            let to = to.min(bytes.len());
            if to > from {
                pieces.push(bytes[from..to].to_vec());
                from = to;
            }
        }
        pieces
    };
    let cases: Vec<(Vec<Vec<u8>>, usize)> = vec![
        (vec![stream.clone()], MAX),
        (
            cuts(&stream, &[2, 5, 6, 9, 11, 13, 15, 16, 3000, 5016, 5019]),
            MAX,
        ),
        (cuts(&stream, &[5022, 5025, 105_000, 205_030, 205_031]), MAX),
        // Truncated header, truncated body, oversized frame after good ones.
        (cuts(&stream[..5019], &[2, 9]), MAX),
        (cuts(&stream[..3000], &[1, 2000]), MAX),
        (vec![stream.clone()], 4096),
        (vec![vec![0, 0]], MAX),
        (vec![], MAX),
    ];
    for (i, (pieces, max)) in cases.iter().enumerate() {
        let plain = read_pieces(&conn, &server_conn, pieces, *max, false).await;
        let buffered = read_pieces(&conn, &server_conn, pieces, *max, true).await;
        match (&plain, &buffered) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "case {i}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "case {i}"),
            _ => panic!("case {i}: read_frame gave {plain:?}, FrameReader {buffered:?}"),
        }
    }
}

#[test]
fn garbage_never_panics_parsers() {
    let mut rng = XorShift(42);
    let network = NetworkKey::from_secret("x");
    let key = NodeKeypair::generate().unwrap();
    let cert = network.issue_node_certificate(&key).unwrap();
    assert_eq!(node_id_of_certificate(&cert), Some(key.node_id()));
    // Every truncation and many corruptions of a real certificate.
    for cut in 0..cert.len() {
        let _ = node_id_of_certificate(&CertificateDer::from(&cert[..cut]));
    }
    for _ in 0..2000 {
        let mut bytes = cert.to_vec();
        let i = (rng.next() as usize) % bytes.len();
        bytes[i] = rng.next() as u8;
        let _ = node_id_of_certificate(&CertificateDer::from(bytes));
        let len = (rng.next() % 200) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(node_id_of_certificate(&CertificateDer::from(junk.clone())).is_none());
        assert!(NodeKeypair::from_pkcs8(&junk).is_err());
        let text = String::from_utf8_lossy(&junk);
        let _ = text.parse::<NodeId>();
        assert!(!verify(&key.public_key(), &junk, &junk));
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A UDP relay between one client and `server` that can be cut: afterwards it drops every
/// datagram, so each side sees its peer vanish without a word.
async fn cuttable_relay(server: SocketAddr) -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let task = {
        let cut = cut.clone();
        tokio::spawn(async move {
            let mut client = None;
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Some(datagram) = buf.get(..n) else {
                    continue;
                };
                let to = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                let _ = socket.send_to(datagram, to).await;
            }
        })
    };
    (addr, cut, task)
}

#[tokio::test]
async fn vanished_peer_is_noticed_within_the_idle_timeout() {
    let network = NetworkKey::from_secret("test network");
    let server = node(&network, local_config());
    let client = node(&network, local_config());
    let (relay, cut, relay_task) = cuttable_relay(server.transport.local_addr().unwrap()).await;

    let accepted = accept_one(&server.transport);
    let (conn, id) = within("connect via relay", client.transport.connect(relay, None))
        .await
        .unwrap();
    assert_eq!(id, server.key.node_id());
    let (server_conn, _) = within("accept", accepted).await.unwrap().unwrap();
    echo_server(server_conn.clone(), MAX);
    assert_eq!(
        &within("round trip", round_trip(&conn, b"ping", MAX)).await[..],
        b"ping"
    );

    cut.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let limit = Duration::from_secs(5);
    let (client_err, server_err) = tokio::time::timeout(limit, async {
        tokio::join!(conn.closed(), server_conn.closed())
    })
    .await
    .expect("a vanished peer must be noticed within 5 s");
    let elapsed = started.elapsed();
    assert!(
        matches!(client_err, quinn::ConnectionError::TimedOut),
        "{client_err}"
    );
    assert!(
        matches!(server_err, quinn::ConnectionError::TimedOut),
        "{server_err}"
    );
    // Keep-alives held the connection up until the cut; the idle timeout ended it (not before
    // the idle timeout less one keep-alive interval after the cut).
    let config = local_config();
    let earliest = config.idle_timeout - config.keep_alive_interval;
    assert!(elapsed >= earliest, "closed too early: {elapsed:?}");
    // The echo was the last packet heard, just before the cut: the idle timeout counts from
    // it, not from the keep-alive sent one interval later (which would close at the idle
    // timeout plus that interval).
    let latest = config.idle_timeout + config.keep_alive_interval / 2;
    assert!(elapsed < latest, "closed too late: {elapsed:?}");
    relay_task.abort();
}

#[tokio::test]
async fn connection_limit_refuses_extra_peers() {
    let network = NetworkKey::from_secret("test network");
    let server = node(
        &network,
        TransportConfig {
            max_connections: 1,
            ..local_config()
        },
    );
    let first = node(&network, local_config());
    let second = node(&network, local_config());
    let addr = server.transport.local_addr().unwrap();

    let server_t = server.transport.clone();
    let acceptor = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Some(incoming) = server_t.accept().await {
            if let Ok(c) = incoming.handshake().await {
                connections.push(c);
            }
        }
        connections
    });
    let (_conn, _) = within("first", first.transport.connect(addr, None))
        .await
        .unwrap();
    let err = within("second", second.transport.connect(addr, None))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connection(_)), "{err}");

    // The local side of the limit: a transport at its limit does not dial.
    let err = within(
        "dial at limit",
        server
            .transport
            .connect(second.transport.local_addr().unwrap(), None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::TooManyConnections(1)),
        "{err}"
    );
    assert_eq!(crate::Error::from(err).code(), Code::ResourceExhausted);
    server.transport.close();
    let accepted = within("acceptor", acceptor).await.unwrap();
    assert_eq!(accepted.len(), 1);
}

#[test]
fn network_key_is_deterministic_and_id_is_public() {
    let secret = "correct horse battery staple";
    let a = NetworkKey::from_secret(secret);
    let b = NetworkKey::from_secret(secret.as_bytes());
    assert_eq!(a.network_id(), b.network_id());
    assert_eq!(a.network_id().len(), 26);
    assert_eq!(a.ca_certificate().unwrap(), b.ca_certificate().unwrap());

    let other = NetworkKey::from_secret("another secret");
    assert_ne!(a.network_id(), other.network_id());
    assert_ne!(a.ca_certificate().unwrap(), other.ca_certificate().unwrap());

    let id = a.network_id();
    assert!(!id.contains("horse"));
    assert!(!format!("{a:?}").contains("horse"));
    assert!(format!("{a:?}").contains(&id));
    // The id is neither the secret nor the CA seed in any readable form.
    let hex: String = a
        .ca_seed_for_tests()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!hex.contains(&id) && !id.contains(&hex[..8]));

    // 32-byte secrets: from_bytes is from_secret.
    let raw = NetworkKey::generate_secret().unwrap();
    assert_eq!(
        NetworkKey::from_bytes(raw).network_id(),
        NetworkKey::from_secret(raw).network_id()
    );
}

#[test]
fn leaf_certificates_carry_the_node_name() {
    let network = NetworkKey::from_secret("x");
    let key = NodeKeypair::generate().unwrap();
    let cert = network.issue_node_certificate(&key).unwrap();
    let name = format!("{}.runar", key.node_id());
    assert!(
        cert.windows(name.len()).any(|w| w == name.as_bytes()),
        "SAN {name} missing"
    );
}

#[test]
fn node_id_text_round_trips_and_rejects_bad_input() {
    for _ in 0..50 {
        let id = NodeKeypair::generate().unwrap().node_id();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
        );
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_eq!(format!("{id:?}"), format!("NodeId({text})"));
    }
    assert_eq!("abc".parse::<NodeId>(), Err(ParseNodeIdError::Length(3)));
    assert_eq!(
        "aaaaaaaaaaaaaaaaaaaaaaaaa1".parse::<NodeId>(),
        Err(ParseNodeIdError::Character('1'))
    );
    assert_eq!(
        "AAAAAAAAAAAAAAAAAAAAAAAAAA".parse::<NodeId>(),
        Err(ParseNodeIdError::Character('A'))
    );
    // The last character may only use its top 3 bits.
    assert_eq!(
        "aaaaaaaaaaaaaaaaaaaaaaaaab".parse::<NodeId>(),
        Err(ParseNodeIdError::NonCanonical)
    );
    assert_eq!(
        "aaaaaaaaaaaaaaaaaaaaaaaaae".parse::<NodeId>().unwrap(),
        NodeId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    );
    // Multi-byte characters don't confuse the length check.
    assert!("ééééééééééééé".parse::<NodeId>().is_err());
    // Ordering is by bytes.
    assert!(NodeId::from_bytes([0; 16]) < NodeId::from_bytes([1; 16]));
}

#[test]
fn keypair_signs_and_persists() {
    let dir = std::env::temp_dir().join(format!(
        "runar-net-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let path = dir.join("keys").join("node.key");
    let created = NodeKeypair::load_or_generate(&path).unwrap();
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = NodeKeypair::load_or_generate(&path).unwrap();
    assert_eq!(created.node_id(), loaded.node_id());
    assert_eq!(created.public_key(), loaded.public_key());
    // Only the key file is left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    let sig = loaded.sign(b"announce");
    assert!(verify(&created.public_key(), b"announce", &sig));
    assert!(!verify(&created.public_key(), b"announcE", &sig));
    assert!(!verify(&created.public_key(), b"announce", &sig[..63]));
    let stranger = NodeKeypair::generate().unwrap();
    assert!(!verify(&stranger.public_key(), b"announce", &sig));
    assert!(!format!("{created:?}").contains("pkcs8"));

    std::fs::write(dir.join("bad.key"), b"not a key").unwrap();
    assert!(NodeKeypair::load_or_generate(dir.join("bad.key")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Round-trip latency of a small request on a fresh bidi stream, framed, against raw quinn
/// (same streams, no framing). Run in release:
/// `cargo test --release -p runar-runtime --lib rtt -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark; run in release"]
async fn rtt() {
    let network = NetworkKey::from_secret("bench");
    let (_s, _c, conn, server_conn) = connected_pair(&network).await;
    let raw_server = server_conn.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = raw_server.accept_bi().await {
            tokio::spawn(async move {
                // First byte tells framed (1) from raw (0).
                let mut kind = [0u8; 1];
                if recv.read_exact(&mut kind).await.is_err() {
                    return;
                }
                if kind[0] == 1 {
                    if let Ok(Some(frame)) = read_frame(&mut recv, MAX).await {
                        let _ = write_frame(&mut send, &frame, MAX).await;
                    }
                } else if let Ok(data) = recv.read_to_end(MAX).await {
                    let _ = send.write_all(&data).await;
                }
                let _ = send.finish();
            });
        }
    });
    let payload = [7u8; 64];
    for framed in [false, true, false, true] {
        let mut samples = Vec::with_capacity(20_000);
        for i in 0..20_000 {
            let start = Instant::now();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            if framed {
                send.write_all(&[1]).await.unwrap();
                write_frame(&mut send, &payload, MAX).await.unwrap();
                send.finish().unwrap();
                let reply = read_frame(&mut recv, MAX).await.unwrap().unwrap();
                assert_eq!(reply.len(), payload.len());
            } else {
                send.write_all(&[0]).await.unwrap();
                send.write_all(&payload).await.unwrap();
                send.finish().unwrap();
                let reply = recv.read_to_end(MAX).await.unwrap();
                assert_eq!(reply.len(), payload.len());
            }
            if i >= 2_000 {
                samples.push(start.elapsed());
            }
        }
        samples.sort();
        let pct = |p: usize| samples[samples.len() * p / 100];
        println!(
            "{}: p50 {:?} p90 {:?} p99 {:?}",
            if framed { "framed" } else { "raw quinn" },
            pct(50),
            pct(90),
            pct(99)
        );
    }
}

/// Connects a client of `config` to a server of `config`, echoing frames; the client's side.
async fn echo_pair(config: TransportConfig) -> (quinn::Connection, Node, Node) {
    let network = NetworkKey::from_secret("packet size");
    let server = node(&network, config.clone());
    let client = node(&network, config);
    let accepted = accept_one(&server.transport);
    let addr = server.transport.local_addr().unwrap();
    let (conn, _) = within("connect", client.transport.connect(addr, None))
        .await
        .unwrap();
    let (server_conn, _) = within("accept", accepted).await.unwrap().unwrap();
    echo_server(server_conn, MAX);
    (conn, server, client)
}

/// Echoes 256 KiB until the connection's path MTU is `want`, or the deadline passes.
async fn mtu_reaches(conn: &quinn::Connection, want: u16) -> u16 {
    let payload = vec![7u8; 256 * 1024];
    let until = Instant::now() + DEADLINE;
    loop {
        let reply = within("round trip", round_trip(conn, &payload, MAX)).await;
        assert_eq!(reply.len(), payload.len());
        let mtu = conn.stats().path.current_mtu;
        if mtu >= want || Instant::now() > until {
            return mtu;
        }
    }
}

#[tokio::test]
async fn packets_grow_to_max_udp_payload_size_on_loopback() {
    // Loopback's MTU is 65,536: discovery grows packets to the configured most, not further.
    let most = super::transport::MAX_UDP_PAYLOAD;
    let (conn, _server, _client) = echo_pair(TransportConfig {
        max_udp_payload_size: most,
        ..local_config()
    })
    .await;
    assert_eq!(mtu_reaches(&conn, most).await, most);

    // A smaller setting is honoured: packets stop there.
    let (conn, _server, _client) = echo_pair(TransportConfig {
        max_udp_payload_size: 1300,
        ..local_config()
    })
    .await;
    assert_eq!(mtu_reaches(&conn, 1300).await, 1300);
    let payload = vec![7u8; 64 * 1024];
    within("round trip", round_trip(&conn, &payload, MAX)).await;
    assert_eq!(conn.stats().path.current_mtu, 1300);
}

#[tokio::test]
async fn udp_payload_sizes_out_of_range_are_refused() {
    let network = NetworkKey::from_secret("packet size");
    let key = NodeKeypair::generate().unwrap();
    for size in [0, 1199, super::transport::MAX_UDP_PAYLOAD + 1, u16::MAX] {
        let config = TransportConfig {
            max_udp_payload_size: size,
            ..local_config()
        };
        let err = Transport::bind(config, &key, &network).unwrap_err();
        assert!(
            matches!(err, TransportError::InvalidConfig(ref m) if m.contains("max_udp_payload_size")),
            "{size}: {err}"
        );
    }
}

/// On loopback both ends send packets of the largest payload from the start and probe no
/// path MTU (see `transport::Loopback`); a 64 KiB frame then crosses in four packets.
#[tokio::test]
async fn loopback_connections_use_the_largest_packets_without_probing() {
    let network = NetworkKey::from_secret("test network");
    let (_s, _c, conn, server_conn) = connected_pair(&network).await;
    let most = TransportConfig::default().max_udp_payload_size;
    for c in [&conn, &server_conn] {
        assert_eq!(c.stats().path.current_mtu, most);
    }
    let _echo = echo_server(server_conn.clone(), 1 << 20);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = vec![7u8; 64 * 1024];
    write_frame(&mut send, &frame, 1 << 20).await.unwrap();
    let back = within("the echo", read_frame(&mut recv, 1 << 20)).await;
    assert_eq!(back.unwrap().unwrap().len(), frame.len());
    for c in [&conn, &server_conn] {
        let path = c.stats().path;
        assert_eq!(path.current_mtu, most);
        assert_eq!(path.sent_plpmtud_probes, 0, "{path:?}");
    }
}

/// An idle connection's keep-alive asks for an immediate acknowledgement (the vendored
/// quinn-proto's patch): the answering side acknowledges each in the pass that read it, with no
/// acknowledgement-delay timer of its own.
#[tokio::test]
async fn keep_alives_ask_for_an_immediate_acknowledgement() {
    let network = NetworkKey::from_secret("test network");
    let (_server, _client, conn, server_conn) = connected_pair(&network).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = conn.stats().frame_tx;
        let received = server_conn.stats().frame_rx;
        if sent.ping >= 2 && received.immediate_ack >= 2 {
            assert!(
                sent.immediate_ack >= 2,
                "keep-alives without IMMEDIATE_ACK: {sent:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keep-alive with IMMEDIATE_ACK within 10 s: sent {sent:?}, received {received:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the dialer probes.
    assert_eq!(server_conn.stats().frame_tx.immediate_ack, 0);
}
