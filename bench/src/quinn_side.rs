//! Raw quinn: one bidirectional stream per request, a 4-byte big-endian length prefix on the
//! request and on the answer. The floor under any RPC over QUIC streams: quinn's default
//! transport configuration, or the one a Runar node uses ([`Settings`]); rustls with ring, a
//! self-signed certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{Connection, Endpoint, RecvStream, SendStream};

use crate::certs;
use crate::rpc::Rpc;

#[derive(Clone)]
pub struct QuinnRpc {
    connection: Connection,
    /// Keeps the client endpoint (and its driver) alive.
    _endpoint: Endpoint,
    /// Keeps the server endpoint alive.
    _server: Endpoint,
}

/// Starts an echo server and connects a client to it, on the current runtime, with quinn's
/// default settings.
pub async fn connect() -> QuinnRpc {
    connect_with(Settings::Defaults).await
}

/// [`connect`] with `settings`.
pub async fn connect_with(settings: Settings) -> QuinnRpc {
    let (connection, endpoint, server) = connected(settings, serve).await;
    QuinnRpc {
        connection,
        _endpoint: endpoint,
        _server: server,
    }
}

/// Starts a server whose every accepted bidirectional stream is served by `serve` in a task of
/// its own, and connects a client to it, on the current runtime: (the client's connection, the
/// client endpoint, the server endpoint), both endpoints to be kept alive by the caller.
pub async fn connected<F, Fut>(settings: Settings, serve: F) -> (Connection, Endpoint, Endpoint)
where
    F: Fn(SendStream, RecvStream) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cert = certs::localhost();
    let mut server_config = quinn::ServerConfig::with_single_cert(
        vec![cert.cert_der.clone()],
        cert.key_der.clone_key().into(),
    )
    .expect("server config");
    server_config.transport_config(Arc::new(transport(settings)));
    let server = endpoint(settings, Some(server_config));
    let addr = server.local_addr().expect("server address");
    let accept = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((send, recv)) = connection.accept_bi().await {
                    tokio::spawn(serve(send, recv));
                }
            });
        }
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der).expect("root certificate");
    let mut client_config =
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config");
    client_config.transport_config(Arc::new(transport(settings)));
    let mut endpoint = endpoint(settings, None);
    endpoint.set_default_client_config(client_config);
    let connection = endpoint
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    (connection, endpoint, server)
}

/// The transport settings of the raw quinn floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settings {
    /// quinn's defaults (1,452-byte packets at most, windows for a 100 ms path, the system's
    /// socket buffers).
    Defaults,
    /// What a Runar node uses by default (`NetworkConfig`'s flow-control windows, largest UDP
    /// payload and socket buffers).
    Runar,
}

fn transport(settings: Settings) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    if settings == Settings::Runar {
        let runar = runar::NetworkConfig::default();
        let window = quinn::VarInt::from_u64(runar.receive_window).expect("a window");
        // As a Runar node's connections on loopback: the largest packets from the start, and
        // the initial congestion window RFC 9002 gives them (quinn's 14,720 bytes would not
        // let one leave), acknowledgements within 1 ms.
        let mtu = u64::from(runar.max_udp_payload_size);
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window((2 * mtu).max(14_720).min(10 * mtu));
        t.stream_receive_window(window)
            .receive_window(window)
            .send_window(runar.send_window)
            .mtu_discovery_config(None)
            .initial_mtu(runar.max_udp_payload_size)
            .congestion_controller_factory(Arc::new(cubic));
        // And acknowledgements asked of the peer within 1 ms (not QUIC's 25).
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(std::time::Duration::from_millis(1)));
        t.ack_frequency_config(Some(ack));
    }
    t
}

fn endpoint(settings: Settings, server: Option<quinn::ServerConfig>) -> Endpoint {
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let mut config = quinn::EndpointConfig::default();
    if settings == Settings::Runar {
        let runar = runar::NetworkConfig::default();
        config
            .max_udp_payload_size(runar.max_udp_payload_size)
            .expect("a UDP payload size");
        let s = socket2::SockRef::from(&socket);
        s.set_recv_buffer_size(runar.socket_buffer_size)
            .expect("SO_RCVBUF");
        s.set_send_buffer_size(runar.socket_buffer_size)
            .expect("SO_SNDBUF");
    }
    Endpoint::new(config, server, socket, Arc::new(quinn::TokioRuntime)).expect("endpoint")
}

async fn serve(mut send: SendStream, mut recv: RecvStream) {
    let Some(body) = read_frame(&mut recv).await else {
        return;
    };
    let _ = send.write_chunk(frame(&body)).await;
    let _ = send.finish();
}

fn frame(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// Reads one length-prefixed frame; without copying when it arrived in one chunk.
async fn read_frame(recv: &mut RecvStream) -> Option<Bytes> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes(header) as usize;
    let first = recv.read_chunk(len, true).await.ok()??.bytes;
    if first.len() >= len {
        return Some(first);
    }
    let mut body = BytesMut::with_capacity(len);
    body.put_slice(&first);
    while body.len() < len {
        let chunk = recv.read_chunk(len - body.len(), true).await.ok()??;
        body.put_slice(&chunk.bytes);
    }
    Some(body.freeze())
}

impl Rpc for QuinnRpc {
    async fn call(&self, payload: Bytes) -> Bytes {
        let (mut send, mut recv) = self.connection.open_bi().await.expect("open_bi");
        send.write_chunk(frame(&payload)).await.expect("write");
        let _ = send.finish();
        read_frame(&mut recv).await.expect("an answer")
    }

    /// The client connection's path and packet counts.
    fn report(&self) {
        let s = self.connection.stats();
        eprintln!(
            "quinn client: path mtu {} rtt {:?} cwnd {} lost {} sent {} datagrams ({} bytes) \
             in {} transmits, received {} datagrams ({} bytes)",
            s.path.current_mtu,
            s.path.rtt,
            s.path.cwnd,
            s.path.lost_packets,
            s.udp_tx.datagrams,
            s.udp_tx.bytes,
            s.udp_tx.ios,
            s.udp_rx.datagrams,
            s.udp_rx.bytes,
        );
    }
}
