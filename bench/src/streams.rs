//! Streaming rpcs, 64-byte messages, one call at a time: server streaming (the server sends as
//! fast as the client reads) and client streaming (the client sends as fast as the server
//! reads), in messages per second from the call's start to its last message. Runar through the
//! client `#[runar::service]` generates, over QUIC between two nodes, against tonic + TLS
//! through its generated client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt as _, stream};
use runar::{Node, NodeConfig};

use crate::pb::Blob;
use crate::runar_side::network;

/// The streaming service both sides serve.
#[runar::service(path = "bench_stream")]
pub trait StreamBench {
    /// Sends `count` copies of `payload`.
    async fn pull(
        &self,
        count: u64,
        payload: Bytes,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Blob>> + Send + 'static>;
    /// Counts the messages it reads.
    async fn push(&self, blobs: runar::Streaming<Blob>) -> runar::Result<u64>;
}

struct Impl;

impl StreamBench for Impl {
    async fn pull(
        &self,
        count: u64,
        payload: Bytes,
    ) -> runar::Result<impl runar::Stream<Item = runar::Result<Blob>> + Send + 'static> {
        Ok(stream::repeat(Blob { data: payload })
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(Ok))
    }

    async fn push(&self, mut blobs: runar::Streaming<Blob>) -> runar::Result<u64> {
        let mut n = 0;
        while blobs.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Which side streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One request, `n` responses.
    Server,
    /// `n` requests, one response.
    Client,
}

impl Kind {
    pub const BOTH: [Kind; 2] = [Kind::Server, Kind::Client];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Server => "server streaming",
            Kind::Client => "client streaming",
        }
    }
}

/// Streams `n` messages one way and returns when the last one has arrived.
pub trait Streamer {
    fn run(&self, kind: Kind, n: u64, payload: Bytes) -> impl Future<Output = ()> + Send;
}

/// Two Runar nodes over QUIC; the client node calls through the generated client.
pub struct RunarStreams {
    client: StreamBenchClient,
    nodes: [Node; 2],
}

/// Two nodes; `buffer` sets `NodeConfig::stream_buffer` on both (the default otherwise).
pub async fn runar(buffer: Option<usize>) -> RunarStreams {
    let config = |name: &str, peers| {
        let config = NodeConfig::new(name, "bench").with_network_config(network(peers));
        match buffer {
            Some(messages) => config.with_stream_buffer(messages),
            None => config,
        }
    };
    let server = Node::new(config("server", vec![]))
        .await
        .expect("server node");
    server
        .add_service(StreamBenchServer::new(Impl))
        .await
        .expect("service");
    server.start().await.expect("server start");
    let addr = server.local_addr().expect("server address");
    let client = Node::new(config("client", vec![addr]))
        .await
        .expect("client node");
    client.start().await.expect("client start");
    let started = Instant::now();
    while !["bench_stream/pull", "bench_stream/push"]
        .iter()
        .all(|p| client.actions().iter().any(|a| a == p))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the client node did not connect"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    RunarStreams {
        client: StreamBenchClient::new(client.clone()),
        nodes: [client, server],
    }
}

impl RunarStreams {
    pub async fn stop(self) {
        for node in self.nodes {
            let _ = node.stop().await;
        }
    }
}

impl Streamer for RunarStreams {
    async fn run(&self, kind: Kind, n: u64, payload: Bytes) {
        match kind {
            Kind::Server => {
                let mut blobs = self.client.pull(n, payload).await.expect("pull");
                let mut got = 0;
                while blobs.message().await.expect("a message").is_some() {
                    got += 1;
                }
                assert_eq!(got, n, "pull ended early");
            }
            Kind::Client => {
                let blobs = stream::repeat(Blob { data: payload })
                    .take(usize::try_from(n).unwrap_or(usize::MAX));
                let got = self.client.push(blobs).await.expect("push");
                assert_eq!(got, n, "push lost messages");
            }
        }
    }
}

/// Warms up, sizes one call to last about `measure`, and measures it: messages per second.
pub async fn rate<S: Streamer>(s: &S, kind: Kind, warmup: Duration, measure: Duration) -> f64 {
    let payload = Bytes::from(vec![0x5Au8; 64]);
    let mut n = 10_000u64;
    let until = Instant::now() + warmup;
    let mut per_sec;
    loop {
        let start = Instant::now();
        s.run(kind, n, payload.clone()).await;
        per_sec = n as f64 / start.elapsed().as_secs_f64();
        if Instant::now() >= until {
            break;
        }
        n = n.saturating_mul(2).min(1 << 24);
    }
    let n = ((per_sec * measure.as_secs_f64()) as u64).max(10_000);
    let start = Instant::now();
    s.run(kind, n, payload).await;
    n as f64 / start.elapsed().as_secs_f64()
}
