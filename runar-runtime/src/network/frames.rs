//! Frames encoded straight from their parts: the `Request` and `Response` of a request stream
//! from the payload [`Value`], and `Event`s from an [`OutboundEvent`].
//!
//! Building a `wire::Request` needs the payload as `Bytes` (encode it into a buffer of its own)
//! and owned copies of the network and path; `encode_frame` then copies all of it again into the
//! frame. Here the fields are written once, into the frame's buffer, with prost's own field
//! encoders: the bytes are exactly those of `encode_frame(.., &wire::Request { .. })` (fields in
//! number order, proto3 defaults omitted), which the tests check. Likewise for `wire::Event`,
//! whose network and topic would otherwise be copied into `String`s for every event.

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::error::TransportError;
use super::framing::{FRAME_HEADER_LEN, checked_len};
use super::interface::OutboundEvent;
use crate::value::Value;

/// `Request.network`, `.path`, `.payload`, `.timeout_ms`; `Response.payload`.
const NETWORK: u32 = 1;
const PATH: u32 = 2;
const PAYLOAD: u32 = 3;
const TIMEOUT_MS: u32 = 4;
const PAYLOAD_TYPE: u32 = 5;
const RESPONSE_PAYLOAD: u32 = 1;
/// `Event.topic`, `.subscription_ids`, `.retained` (network and payload as in `Request`).
const TOPIC: u32 = 2;
const SUBSCRIPTION_IDS: u32 = 4;
const RETAINED: u32 = 5;

fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_delimited_header(buf: &mut BytesMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The kind byte `kind`, then one frame holding
/// `Request { network, path, payload, timeout_ms, payload_type }` (the type name when prost
/// names the payload's type).
pub(crate) fn request_frame(
    kind: u8,
    network: &str,
    path: &str,
    payload: &Value,
    timeout_ms: u64,
    max: usize,
) -> Result<Bytes, TransportError> {
    let payload_len = payload.encoded_len();
    let mut len = 0;
    if !network.is_empty() {
        len += len_delimited_len(NETWORK, network.len());
    }
    if !path.is_empty() {
        len += len_delimited_len(PATH, path.len());
    }
    if payload_len != 0 {
        len += len_delimited_len(PAYLOAD, payload_len);
    }
    if timeout_ms != 0 {
        len += key_len(TIMEOUT_MS) + encoded_len_varint(timeout_ms);
    }
    let payload_type = payload.known_name().unwrap_or_default();
    if !payload_type.is_empty() {
        len += len_delimited_len(PAYLOAD_TYPE, payload_type.len());
    }
    let header = checked_len(len, max)?;

    let mut buf = BytesMut::with_capacity(1 + FRAME_HEADER_LEN + len);
    buf.put_u8(kind);
    buf.put_u32(header);
    if !network.is_empty() {
        put_len_delimited_header(&mut buf, NETWORK, network.len());
        buf.put_slice(network.as_bytes());
    }
    if !path.is_empty() {
        put_len_delimited_header(&mut buf, PATH, path.len());
        buf.put_slice(path.as_bytes());
    }
    if payload_len != 0 {
        put_len_delimited_header(&mut buf, PAYLOAD, payload_len);
        payload.encode_into(&mut buf);
    }
    if timeout_ms != 0 {
        encode_key(TIMEOUT_MS, WireType::Varint, &mut buf);
        encode_varint(timeout_ms, &mut buf);
    }
    if !payload_type.is_empty() {
        put_len_delimited_header(&mut buf, PAYLOAD_TYPE, payload_type.len());
        buf.put_slice(payload_type.as_bytes());
    }
    debug_assert_eq!(buf.len(), 1 + FRAME_HEADER_LEN + len);
    Ok(buf.freeze())
}

/// One frame holding `Response { payload }` (a oneof member: encoded even when empty).
pub(crate) fn response_frame(payload: &Value, max: usize) -> Result<Bytes, TransportError> {
    let payload_len = payload.encoded_len();
    let len = len_delimited_len(RESPONSE_PAYLOAD, payload_len);
    let header = checked_len(len, max)?;
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    buf.put_u32(header);
    put_len_delimited_header(&mut buf, RESPONSE_PAYLOAD, payload_len);
    payload.encode_into(&mut buf);
    debug_assert_eq!(buf.len(), FRAME_HEADER_LEN + len);
    Ok(buf.freeze())
}

/// Appends one frame holding `Event { network, topic, payload, subscription_ids, retained }`
/// to `buf`. A message over `max` is refused and `buf` is left as it was.
pub(crate) fn append_event_frame(
    buf: &mut BytesMut,
    event: &OutboundEvent,
    max: usize,
) -> Result<(), TransportError> {
    use prost::encoding::uint64;
    let (network, topic, payload) = (&*event.network, &*event.topic, &event.payload);
    let ids = event.subscription_ids.as_slice();
    let mut len = 0;
    if !network.is_empty() {
        len += len_delimited_len(NETWORK, network.len());
    }
    if !topic.is_empty() {
        len += len_delimited_len(TOPIC, topic.len());
    }
    if !payload.is_empty() {
        len += len_delimited_len(PAYLOAD, payload.len());
    }
    if !ids.is_empty() {
        len += uint64::encoded_len_packed(SUBSCRIPTION_IDS, ids);
    }
    if event.retained {
        len += key_len(RETAINED) + 1;
    }
    let header = checked_len(len, max)?;

    buf.reserve(FRAME_HEADER_LEN + len);
    let start = buf.len();
    buf.put_u32(header);
    if !network.is_empty() {
        put_len_delimited_header(buf, NETWORK, network.len());
        buf.put_slice(network.as_bytes());
    }
    if !topic.is_empty() {
        put_len_delimited_header(buf, TOPIC, topic.len());
        buf.put_slice(topic.as_bytes());
    }
    if !payload.is_empty() {
        put_len_delimited_header(buf, PAYLOAD, payload.len());
        buf.put_slice(payload);
    }
    uint64::encode_packed(SUBSCRIPTION_IDS, ids, buf);
    if event.retained {
        prost::encoding::bool::encode(RETAINED, &true, buf);
    }
    debug_assert_eq!(buf.len() - start, FRAME_HEADER_LEN + len);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::network::framing::encode_frame;
    use crate::wire;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Point {
        #[prost(int32, tag = "1")]
        x: i32,
        #[prost(string, tag = "2")]
        label: String,
    }

    fn payloads() -> Vec<Value> {
        vec![
            Value::empty(),
            Value::new(Point::default()),
            Value::new(Point {
                x: -7,
                label: "seven".into(),
            }),
            Value::new(vec![0xA5u8; 300]),
            Value::from_encoded(Bytes::from_static(&[8, 1])),
            Value::from_encoded(Bytes::new()),
        ]
    }

    #[test]
    fn request_frames_are_what_prost_encodes() {
        let max = 1 << 20;
        for payload in payloads() {
            for (network, path) in [("default", "math/add"), ("", ""), ("n", "")] {
                for timeout_ms in [0, 1, 30_000, u64::MAX] {
                    let message = wire::Request {
                        network: network.into(),
                        path: path.into(),
                        payload: payload.to_bytes(),
                        timeout_ms,
                        payload_type: payload.known_name().unwrap_or_default().into(),
                    };
                    let expected = encode_frame(Some(7), &message, max).unwrap();
                    let got = request_frame(7, network, path, &payload, timeout_ms, max).unwrap();
                    assert_eq!(
                        got, expected,
                        "{payload:?} {network:?} {path:?} {timeout_ms}"
                    );
                }
            }
        }
    }

    #[test]
    fn response_frames_are_what_prost_encodes() {
        for payload in payloads() {
            let message = wire::Response {
                result: Some(wire::response::Result::Payload(payload.to_bytes())),
            };
            let expected = encode_frame(None, &message, 1 << 20).unwrap();
            assert_eq!(response_frame(&payload, 1 << 20).unwrap(), expected);
        }
    }

    #[test]
    fn event_frames_are_what_prost_encodes() {
        let max = 1 << 20;
        let mut batch = BytesMut::new();
        let mut expected = Vec::new();
        for payload in payloads() {
            for (network, topic) in [("default", "math/computed"), ("", ""), ("n", "")] {
                for ids in [vec![], vec![1], vec![0, 300, u64::MAX]] {
                    for retained in [false, true] {
                        let event = OutboundEvent {
                            network: network.into(),
                            topic: topic.into(),
                            payload: payload.to_bytes(),
                            subscription_ids: ids.clone(),
                            retained,
                        };
                        let message = wire::Event {
                            network: network.into(),
                            topic: topic.into(),
                            payload: payload.to_bytes(),
                            subscription_ids: ids.clone(),
                            retained,
                        };
                        let one = encode_frame(None, &message, max).unwrap();
                        let mut alone = BytesMut::new();
                        append_event_frame(&mut alone, &event, max).unwrap();
                        assert_eq!(alone, one, "{message:?}");
                        // Appended after other frames, as in a batch.
                        append_event_frame(&mut batch, &event, max).unwrap();
                        expected.extend_from_slice(&one);
                    }
                }
            }
        }
        assert_eq!(batch, expected);

        let event = OutboundEvent {
            network: "n".into(),
            topic: "t".into(),
            payload: Bytes::from(vec![1u8; 100]),
            subscription_ids: vec![1],
            retained: false,
        };
        let message = wire::Event {
            network: "n".into(),
            topic: "t".into(),
            payload: event.payload.clone(),
            subscription_ids: vec![1],
            retained: false,
        };
        let mut untouched = BytesMut::from(&b"before"[..]);
        let err = append_event_frame(&mut untouched, &event, 50).unwrap_err();
        let prost = encode_frame(None, &message, 50).unwrap_err();
        assert_eq!(err.to_string(), prost.to_string());
        assert_eq!(untouched, &b"before"[..]);
    }

    #[test]
    fn oversized_messages_are_refused_with_their_length() {
        let payload = Value::new(vec![0u8; 100]);
        let err = request_frame(2, "n", "p", &payload, 5, 50).unwrap_err();
        let expected = wire::Request {
            network: "n".into(),
            path: "p".into(),
            payload: payload.to_bytes(),
            timeout_ms: 5,
            payload_type: payload.known_name().unwrap_or_default().into(),
        };
        let prost = encode_frame(None, &expected, 50).unwrap_err();
        assert_eq!(err.to_string(), prost.to_string());
        let response = wire::Response {
            result: Some(wire::response::Result::Payload(payload.to_bytes())),
        };
        assert_eq!(
            response_frame(&payload, 50).unwrap_err().to_string(),
            encode_frame(None, &response, 50).unwrap_err().to_string()
        );
    }
}
