//! Spans of requests between nodes, linked by the W3C trace context (`traceparent`).
//!
//! The calling node wraps a request to a peer in an `rpc.client` span; the serving node runs
//! the handler in an `rpc.server` span. Both carry `rpc.service`, `rpc.method`, `peer`, and the
//! W3C ids: `trace_id`, their own `span_id`, and `parent_id`. The client's `span_id` travels
//! as the parent in the request's `traceparent` entry, so the server span's `parent_id` is the
//! client span's `span_id` and both share the `trace_id` (a request that arrives with a
//! `traceparent` continues that trace; one without starts a new one). An exporter such as
//! tracing-opentelemetry can link them from these fields.
//!
//! No cost when no subscriber listens: the spans are created disabled, and ids are generated
//! and metadata copied only for an enabled span.

use std::fmt::Write as _;

use ring::rand::SecureRandom as _;
use tracing::Span;
use tracing::field::Empty;

use crate::identity::NodeId;
use crate::metadata::{Metadata, TRACEPARENT};

/// `traceparent`'s parts: (trace id, parent span id, flags), when it is a valid version-00
/// header (32 and 16 lowercase hex digits, not all zero; 2 hex digits of flags).
fn parse(traceparent: &str) -> Option<(&str, &str, &str)> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2))
    .then_some((trace, parent, flags))
}

/// `bytes` random bytes as lowercase hex (never all zero).
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() || bytes.iter().all(|b| *b == 0) {
        // No randomness: a fixed, valid id rather than none (tracing must never fail a call).
        bytes = [1; N];
    }
    let mut out = String::with_capacity(N * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `inventory/get_item` → (`inventory`, `get_item`).
fn service_and_method(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The span of a request this node sends to `peer`, and the metadata to send when the span is
/// enabled (the trace context with this span as the parent); `None`: send `metadata` as it is.
pub(crate) fn client_span(
    path: &str,
    peer: NodeId,
    metadata: &Metadata,
) -> (Span, Option<Metadata>) {
    // The fields are evaluated only for an enabled span: a call without a subscriber does not
    // split its path.
    let span = tracing::info_span!(
        "rpc.client",
        rpc.service = service_and_method(path).0,
        rpc.method = service_and_method(path).1,
        peer = %peer,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
    );
    if span.is_disabled() {
        return (span, None);
    }
    let incoming = metadata.get(TRACEPARENT).and_then(parse);
    let span_id = random_hex::<8>();
    let (trace_id, flags) = match incoming {
        Some((trace, parent, flags)) => {
            span.record("parent_id", parent);
            (trace.to_owned(), flags.to_owned())
        }
        None => (random_hex::<16>(), "01".to_owned()),
    };
    span.record("trace_id", trace_id.as_str());
    span.record("span_id", span_id.as_str());
    let mut outgoing = metadata.clone();
    // Valid by construction: lowercase key, printable value.
    let _ = outgoing.insert(TRACEPARENT, format!("00-{trace_id}-{span_id}-{flags}"));
    (span, Some(outgoing))
}

/// The span a request from `peer` is served in: a child (by W3C ids) of the caller's span
/// named in its `traceparent`.
pub(crate) fn server_span(path: &str, peer: NodeId, metadata: &Metadata) -> Span {
    // The fields are evaluated only for an enabled span: a call without a subscriber does not
    // split its path.
    let span = tracing::info_span!(
        "rpc.server",
        rpc.service = service_and_method(path).0,
        rpc.method = service_and_method(path).1,
        peer = %peer,
        trace_id = Empty,
        span_id = Empty,
        parent_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some((trace, parent, _)) = metadata.get(TRACEPARENT).and_then(parse) {
        span.record("trace_id", trace);
        span.record("parent_id", parent);
    }
    span.record("span_id", random_hex::<8>().as_str());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse(good),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01"))
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(random_hex::<8>().len(), 16);
        assert_eq!(service_and_method("a/b/c"), ("a/b", "c"));
    }
}
