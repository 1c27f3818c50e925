//! Late serialization: a local typed request or event is handed over as the value itself,
//! never encoded; another Rust type of the same schema falls back to encoding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;

use common::counted::{Counted, DECODES, ENCODES};
use common::next;
use runar::{AbstractService, LifecycleContext, Node, NodeConfig};
use tokio::sync::mpsc;

async fn node() -> Node {
    Node::new(NodeConfig::new("test-node", "test"))
        .await
        .unwrap()
}

/// Same schema as `Counted`, another Rust type (as two crates generated from one .proto).
#[derive(Clone, PartialEq, prost::Message)]
struct Twin {
    #[prost(int64, tag = "1")]
    n: i64,
}

struct Doubler;

impl AbstractService for Doubler {
    fn name(&self) -> &str {
        "Doubler"
    }
    fn path(&self) -> &str {
        "doubler"
    }
    async fn init(&self, ctx: &LifecycleContext) -> runar::Result<()> {
        ctx.register_action("double", |c: Counted, _| async move {
            Ok(Counted { n: c.n * 2 })
        })
        .await
    }
}

#[tokio::test]
async fn a_local_typed_request_performs_zero_encodes() {
    let node = node().await;
    node.add_service(Doubler).await.unwrap();
    node.start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.subscribe("counted", move |c: Counted, _| {
        let tx = tx.clone();
        async move {
            tx.send(c.n).unwrap();
            Ok(())
        }
    })
    .await
    .unwrap();

    let (e0, d0) = (
        ENCODES.load(Ordering::SeqCst),
        DECODES.load(Ordering::SeqCst),
    );
    for i in 1..=100 {
        let r: Counted = node
            .request("doubler/double", Counted { n: i })
            .await
            .unwrap();
        assert_eq!(r.n, 2 * i);
    }
    node.publish("counted", Counted { n: 5 }).await.unwrap();
    assert_eq!(next(&mut rx).await, 5);
    assert_eq!(
        ENCODES.load(Ordering::SeqCst) - e0,
        0,
        "no encode on the local path"
    );
    assert_eq!(
        DECODES.load(Ordering::SeqCst) - d0,
        0,
        "no decode on the local path"
    );

    // Control: a caller with another Rust type for the same schema falls back to one encode
    // of the request (and one of the response), so the counter above can see encodes.
    let r: Twin = node
        .request("doubler/double", Twin { n: 21 })
        .await
        .unwrap();
    assert_eq!(r.n, 42);
    assert_eq!(
        ENCODES.load(Ordering::SeqCst) - e0,
        1,
        "only the response is re-encoded"
    );
}
