//! Raw quinn with one long-lived bidirectional stream carrying every call: each request and
//! each answer is a frame `[u32 id][u32 length][payload]` (big-endian), the client matches
//! answers to calls by id. What multiplexing small requests on one stream could reach, against
//! [`crate::quinn_side`]'s stream per call. Same endpoints, certificate and quinn defaults.
//!
//! The client writes each call's frame under a lock on the stream (quinn buffers it; its
//! connection task packs what is buffered into datagrams); one reader task hands answers to the
//! waiting calls. The server reads whatever has arrived, and answers every complete frame in it
//! with one write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quinn::{Endpoint, RecvStream, SendStream};
use tokio::sync::oneshot;

use crate::quinn_side;
use crate::rpc::Rpc;

/// Calls waiting for their answer, by id.
type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Bytes>>>>;

#[derive(Clone)]
pub struct QuinnFramed {
    send: Arc<tokio::sync::Mutex<SendStream>>,
    pending: Pending,
    next: Arc<AtomicU32>,
    /// Keeps the client endpoint (and its driver) alive.
    _endpoint: Endpoint,
    /// Keeps the server endpoint alive.
    _server: Endpoint,
}

/// Starts an echo server and connects a client to it, on the current runtime.
pub async fn connect() -> QuinnFramed {
    let (connection, endpoint, server) =
        quinn_side::connected(quinn_side::Settings::Defaults, serve).await;
    let (send, recv) = connection.open_bi().await.expect("open_bi");
    let pending: Pending = Arc::default();
    tokio::spawn(read_answers(recv, pending.clone()));
    QuinnFramed {
        send: Arc::new(tokio::sync::Mutex::new(send)),
        pending,
        next: Arc::default(),
        _endpoint: endpoint,
        _server: server,
    }
}

fn put_frame(buf: &mut BytesMut, id: u32, payload: &[u8]) {
    buf.reserve(8 + payload.len());
    buf.put_u32(id);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
}

/// Takes the next complete frame off the front of `buf`: (id, payload).
fn take_frame(buf: &mut BytesMut) -> Option<(u32, Bytes)> {
    let header = buf.get(..8)?;
    let id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if buf.len() < 8 + len {
        return None;
    }
    buf.advance(8);
    Some((id, buf.split_to(len).freeze()))
}

/// The server's side of the stream: echoes every frame back with its id.
async fn serve(mut send: SendStream, mut recv: RecvStream) {
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        input.extend_from_slice(&chunk.bytes);
        while let Some((id, payload)) = take_frame(&mut input) {
            put_frame(&mut output, id, &payload);
        }
        if !output.is_empty() && send.write_all(&output.split()).await.is_err() {
            return;
        }
    }
}

/// The client's reader: hands each answer to the call waiting for it.
async fn read_answers(mut recv: RecvStream, pending: Pending) {
    let mut input = BytesMut::new();
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        input.extend_from_slice(&chunk.bytes);
        while let Some((id, payload)) = take_frame(&mut input) {
            let waiting = pending.lock().expect("pending calls").remove(&id);
            if let Some(tx) = waiting {
                let _ = tx.send(payload);
            }
        }
    }
}

impl Rpc for QuinnFramed {
    async fn call(&self, payload: Bytes) -> Bytes {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending calls").insert(id, tx);
        let mut frame = BytesMut::new();
        put_frame(&mut frame, id, &payload);
        self.send
            .lock()
            .await
            .write_all(&frame)
            .await
            .expect("write");
        rx.await.expect("an answer")
    }
}
