//! Spans across nodes: the serving node's `rpc.server` span is a child, by W3C ids, of the
//! calling node's `rpc.client` span, whose id the request's `traceparent` carries; a caller's
//! own `traceparent` continues its trace.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::fixture::PATH;
use runar::{Metadata, RequestOptions, TRACEPARENT};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// A span's name and its fields.
type Seen = (String, HashMap<String, String>);

/// Every span seen, by span id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<u64, Seen>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let name = attrs.metadata().name().to_owned();
        self.0.lock().unwrap().insert(id.into_u64(), (name, fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, fields)) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .values()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

#[tokio::test]
async fn the_server_span_is_a_child_of_the_client_span_across_nodes() {
    let spans = Spans::default();
    // Current-thread runtime: both nodes' tasks see this thread's subscriber.
    let _guard = tracing_subscriber::registry()
        .with(spans.clone())
        .set_default();
    let (a, b, _probe) = common::pair().await;

    let _: String = b.request(format!("{PATH}/who"), ()).await.unwrap();
    let clients = spans.named("rpc.client");
    let servers = spans.named("rpc.server");
    assert_eq!((clients.len(), servers.len()), (1, 1));
    let (client, server) = (&clients[0], &servers[0]);
    assert_eq!(client["rpc.service"], PATH);
    assert_eq!(client["rpc.method"], "who");
    assert_eq!(client["peer"], a.node_id().to_string());
    assert_eq!(server["rpc.service"], PATH);
    assert_eq!(server["rpc.method"], "who");
    assert_eq!(server["peer"], b.node_id().to_string());
    assert_eq!(server["trace_id"], client["trace_id"]);
    assert_eq!(server["parent_id"], client["span_id"], "the parent link");
    assert_ne!(server["span_id"], client["span_id"]);
    assert_eq!(client["trace_id"].len(), 32);

    // A caller's own trace context is continued: same trace, its span as the client's parent.
    let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut metadata = Metadata::new();
    metadata.insert(TRACEPARENT, upstream).unwrap();
    let _: String = b
        .request_with(
            format!("{PATH}/who"),
            (),
            RequestOptions::default().with_metadata(metadata),
        )
        .await
        .unwrap();
    let client = spans
        .named("rpc.client")
        .into_iter()
        .find(|c| c.get("parent_id").map(String::as_str) == Some("00f067aa0ba902b7"))
        .expect("the second client span");
    assert_eq!(client["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let server = spans
        .named("rpc.server")
        .into_iter()
        .find(|s| s.get("parent_id") == client.get("span_id"))
        .expect("its server span");
    assert_eq!(server["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
