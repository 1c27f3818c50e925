//! The node's counters as metrics named `runar_…`: one list ([`Node::metric_samples`]) read
//! from the stats the node keeps anyway, so metrics cost nothing per call. With the `metrics`
//! feature they go to the [`metrics`](https://docs.rs/metrics) facade (any exporter plugs in),
//! with the `prometheus` feature the node can serve them as Prometheus text over HTTP.

use super::Node;

/// What kind of value a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    /// Only ever grows (since the node was created).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One value of one metric.
#[derive(Debug, Clone)]
pub(crate) struct MetricSample {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: MetricKind,
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: f64,
}

fn sample(
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    labels: Vec<(&'static str, String)>,
    value: f64,
) -> MetricSample {
    MetricSample {
        name,
        help,
        kind,
        labels,
        value,
    }
}

impl Node {
    /// Every metric of the node, from its stats: per action, per peer, per subscription, and
    /// the node's event counters.
    pub(crate) fn metric_samples(&self) -> Vec<MetricSample> {
        use MetricKind::{Counter, Gauge};
        let report = self.stats_report();
        let mut out = Vec::new();
        let node = self.name().to_owned();
        for a in &report.actions {
            let path = || vec![("node", node.clone()), ("path", a.path.clone())];
            out.push(sample(
                "runar_requests_total",
                "Calls of a local action.",
                Counter,
                path(),
                a.requests as f64,
            ));
            out.push(sample(
                "runar_requests_in_flight",
                "Calls of a local action running now.",
                Gauge,
                path(),
                a.in_flight as f64,
            ));
            for (code, n) in &a.errors {
                let mut labels = path();
                labels.push(("code", code.clone()));
                out.push(sample(
                    "runar_request_errors_total",
                    "Calls of a local action that failed, by code.",
                    Counter,
                    labels,
                    *n as f64,
                ));
            }
            for (quantile, micros) in [("0.5", a.p50_us), ("0.9", a.p90_us), ("0.99", a.p99_us)] {
                let mut labels = path();
                labels.push(("quantile", quantile.to_owned()));
                out.push(sample(
                    "runar_request_latency_seconds",
                    "Latency of a local action's timed calls (an upper bound: the histogram bucket).",
                    Gauge,
                    labels,
                    micros as f64 / 1e6,
                ));
            }
        }
        for p in &report.peers {
            let peer = || {
                vec![
                    ("node", node.clone()),
                    ("peer", p.node_id.clone()),
                    ("peer_name", p.name.clone()),
                ]
            };
            out.push(sample(
                "runar_peer_rtt_seconds",
                "The connection's round-trip time estimate.",
                Gauge,
                peer(),
                p.rtt_us as f64 / 1e6,
            ));
            out.push(sample(
                "runar_peer_sent_bytes_total",
                "UDP bytes sent to the peer on this connection.",
                Counter,
                peer(),
                p.bytes_sent as f64,
            ));
            out.push(sample(
                "runar_peer_received_bytes_total",
                "UDP bytes received from the peer on this connection.",
                Counter,
                peer(),
                p.bytes_received as f64,
            ));
            out.push(sample(
                "runar_peer_lost_packets_total",
                "Packets QUIC declared lost on this connection.",
                Counter,
                peer(),
                p.lost_packets as f64,
            ));
        }
        for s in &report.subscriptions {
            let sub = || {
                vec![
                    ("node", node.clone()),
                    ("subscription", s.id.to_string()),
                    ("pattern", s.pattern.clone()),
                ]
            };
            out.push(sample(
                "runar_subscription_delivered_total",
                "Events handed to a local subscription's handler.",
                Counter,
                sub(),
                s.delivered as f64,
            ));
            out.push(sample(
                "runar_subscription_dropped_total",
                "Events a local subscription's full queue dropped.",
                Counter,
                sub(),
                s.dropped as f64,
            ));
        }
        let events = [
            (
                "runar_events_published_total",
                "Events published on this node.",
                report.events_published,
            ),
            (
                "runar_events_received_total",
                "Events that arrived from peers.",
                report.events_received,
            ),
            (
                "runar_events_delivered_total",
                "Deliveries to local handlers and peers' event streams.",
                report.events_delivered,
            ),
            (
                "runar_events_dropped_total",
                "Deliveries lost at full queues or gone peers.",
                report.events_dropped,
            ),
            (
                "runar_events_rejected_total",
                "What peers sent that was refused.",
                report.events_rejected,
            ),
            (
                "runar_slow_consumers_total",
                "Peers disconnected as slow consumers.",
                report.slow_consumers,
            ),
        ];
        for (name, help, value) in events {
            out.push(sample(
                name,
                help,
                Counter,
                vec![("node", node.clone())],
                value as f64,
            ));
        }
        out.push(sample(
            "runar_peers",
            "Peers connected now.",
            Gauge,
            vec![("node", node.clone())],
            report.peers.len() as f64,
        ));
        out
    }

    /// Hands every metric of the node to the [`metrics`](https://docs.rs/metrics) facade's
    /// recorder: counters with their absolute values, gauges set. The node does this every
    /// [`NodeConfig::metrics_interval`](crate::NodeConfig::metrics_interval) while it runs;
    /// call it to record at another moment (before a scrape, say).
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        let mut described: Vec<&'static str> = Vec::new();
        for s in self.metric_samples() {
            if !described.contains(&s.name) {
                described.push(s.name);
                match s.kind {
                    MetricKind::Counter => metrics::describe_counter!(s.name, s.help),
                    MetricKind::Gauge => metrics::describe_gauge!(s.name, s.help),
                }
            }
            let labels: Vec<metrics::Label> = s
                .labels
                .into_iter()
                .map(|(k, v)| metrics::Label::new(k, v))
                .collect();
            match s.kind {
                MetricKind::Counter => {
                    metrics::counter!(s.name, labels).absolute(s.value as u64);
                }
                MetricKind::Gauge => metrics::gauge!(s.name, labels).set(s.value),
            }
        }
    }

    /// Starts recording metrics every `metrics_interval` until the node stops or is dropped.
    #[cfg(feature = "metrics")]
    pub(super) fn spawn_metrics_recorder(&self) {
        let Some(interval) = self.inner.config.metrics_interval else {
            return;
        };
        let node = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval(interval.max(std::time::Duration::from_millis(1)));
            loop {
                ticks.tick().await;
                let Some(inner) = node.upgrade() else { break };
                let node = Node::from_inner(inner);
                if node.check_not_stopped().is_err() {
                    break;
                }
                node.record_metrics();
            }
        });
    }
}

/// The metrics in the Prometheus text exposition format (version 0.0.4).
#[cfg(feature = "prometheus")]
pub(crate) fn prometheus_text(samples: &[MetricSample]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut described: Vec<&str> = Vec::new();
    for s in samples {
        if !described.contains(&s.name) {
            described.push(s.name);
            let kind = match s.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", s.name, s.help);
            let _ = writeln!(out, "# TYPE {} {kind}", s.name);
        }
        out.push_str(s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let escaped = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{escaped}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", s.value);
    }
    out
}

#[cfg(feature = "prometheus")]
mod http {
    use std::net::SocketAddr;
    use std::sync::Weak;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::prometheus_text;
    use crate::error::{Error, Result};
    use crate::node::{Node, NodeInner};

    /// How the Prometheus endpoint treats its clients.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub struct PrometheusOptions {
        /// The longest request head read (default 8 KiB); a longer one is answered 431.
        pub max_request_bytes: usize,
        /// How long a client may take to send its request (default 5 s).
        pub read_timeout: Duration,
    }

    impl Default for PrometheusOptions {
        fn default() -> Self {
            PrometheusOptions {
                max_request_bytes: 8 * 1024,
                read_timeout: Duration::from_secs(5),
            }
        }
    }

    impl Node {
        /// Serves the node's metrics as Prometheus text at `GET /metrics` on `addr` (port 0
        /// picks one) until the node stops or is dropped; returns the bound address. Clients
        /// are served one at a time, each bounded by `options`.
        pub async fn serve_prometheus(
            &self,
            addr: SocketAddr,
            options: PrometheusOptions,
        ) -> Result<SocketAddr> {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| Error::unavailable(format!("cannot bind {addr}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| Error::internal(format!("no local address: {e}")))?;
            let node = std::sync::Arc::downgrade(&self.inner);
            tokio::spawn(accept_loop(listener, node, options));
            Ok(bound)
        }
    }

    async fn accept_loop(listener: TcpListener, node: Weak<NodeInner>, options: PrometheusOptions) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Some(inner) = node.upgrade() else { break };
            let node = Node::from_inner(inner);
            if node.check_not_stopped().is_err() {
                break;
            }
            let _ =
                tokio::time::timeout(options.read_timeout, serve(stream, &node, &options)).await;
        }
    }

    async fn serve(
        mut stream: TcpStream,
        node: &Node,
        options: &PrometheusOptions,
    ) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
            if head.len() > options.max_request_bytes {
                let reply = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                return stream.write_all(reply.as_bytes()).await;
            }
        }
        let reply = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
            let body = prometheus_text(&node.metric_samples());
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
        };
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(feature = "prometheus")]
pub use http::PrometheusOptions;

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_describes_each_metric_once_and_escapes_labels() {
        let samples = vec![
            sample(
                "runar_x_total",
                "X.",
                MetricKind::Counter,
                vec![("path", "a\"b".into())],
                2.0,
            ),
            sample(
                "runar_x_total",
                "X.",
                MetricKind::Counter,
                vec![("path", "c".into())],
                3.0,
            ),
        ];
        let text = prometheus_text(&samples);
        assert_eq!(
            text,
            "# HELP runar_x_total X.\n# TYPE runar_x_total counter\n\
             runar_x_total{path=\"a\\\"b\"} 2\nrunar_x_total{path=\"c\"} 3\n"
        );
    }
}
