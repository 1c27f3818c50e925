//! Frames encoded straight from their parts: the `Request` and `Response` of a request stream
//! from the payload [`Value`], and `Event`s from an [`EventRef`].
//!
//! Building a `wire::Request` needs the payload as `Bytes` (encode it into a buffer of its own)
//! and owned copies of the network and path; `encode_frame` then copies all of it again into the
//! frame. Here the fields are written once, into the frame's buffer, with prost's own field
//! encoders: the bytes are exactly those of `encode_frame(.., &wire::Request { .. })` (fields in
//! number order, proto3 defaults omitted), which the tests check. Likewise for `wire::Event`,
//! whose network and topic would otherwise be copied into `String`s for every event.

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::encoding::{WireType, encoded_len_varint, key_len};

use super::error::TransportError;
use super::framing::{FRAME_HEADER_LEN, checked_len};
use super::interface::{EventPayload, EventRef, SubscriptionIds};
use crate::metadata::{Metadata, RESERVED_PREFIX, TIMEOUT_KEY};
use crate::value::Value;

/// `Request.network`, `.path`, `.payload`, `.payload_type`, `.metadata`; `Response.payload`.
const NETWORK: u32 = 1;
const PATH: u32 = 2;
const PAYLOAD: u32 = 3;
const PAYLOAD_TYPE: u32 = 5;
/// `Request.metadata` and `Event.metadata`.
const METADATA: u32 = 6;
const CALL: u32 = 7;
const CANCEL: u32 = 8;
const RESPONSE_CALL: u32 = 3;
const RESPONSE_PAYLOAD: u32 = 1;
/// A map entry's `key` and `value`.
const ENTRY_KEY: u32 = 1;
const ENTRY_VALUE: u32 = 2;
/// `Event.topic`, `.subscription_ids`, `.retained` (network and payload as in `Request`).
const TOPIC: u32 = 2;
const SUBSCRIPTION_IDS: u32 = 4;
const RETAINED: u32 = 5;
/// `Event.more_payloads`.
const MORE_PAYLOADS: u32 = 7;

fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The bytes [`put_bytes_field`] writes for `bytes` under `tag`: none when it is empty (a
/// proto3 default).
fn bytes_field_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        len_delimited_len(tag, bytes.len())
    }
}

/// A `string` or `bytes` field: its key, its length and `bytes`; nothing when it is empty.
fn put_bytes_field(buf: &mut BytesMut, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_delimited_header(buf, tag, bytes.len());
        buf.put_slice(bytes);
    }
}

/// A length-delimited field's key and length, in one write: the same bytes as prost's
/// `encode_key` and `encode_varint`, which write a byte at a time (a call, and a capacity
/// check, each).
fn put_len_delimited_header(buf: &mut BytesMut, tag: u32, len: usize) {
    let mut header = [0u8; 20];
    buf.put_slice(len_delimited_header(&mut header, tag, len));
}

/// The bytes [`put_varint_field`] writes for `value` under `tag`.
fn varint_field_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}

/// A varint field (`uint64`, `bool`): its key and `value`, in one write.
fn put_varint_field(buf: &mut BytesMut, tag: u32, value: u64) {
    let mut field = [0u8; 20];
    let key_end = put_varint(&mut field, (u64::from(tag) << 3) | WireType::Varint as u64);
    let end = key_end + put_varint(field.get_mut(key_end..).unwrap_or_default(), value);
    buf.put_slice(field.get(..end).unwrap_or_default());
}

/// A length-delimited field's key and length, written into `out`.
fn len_delimited_header(out: &mut [u8; 20], tag: u32, len: usize) -> &[u8] {
    let key = (u64::from(tag) << 3) | WireType::LengthDelimited as u64;
    let key_end = put_varint(out, key);
    let end = key_end + put_varint(out.get_mut(key_end..).unwrap_or_default(), len as u64);
    out.get(..end).unwrap_or_default()
}

/// Writes `value` as a protobuf varint at the start of `out` (10 bytes hold any `u64`);
/// returns how many bytes it took.
fn put_varint(out: &mut [u8], mut value: u64) -> usize {
    for (written, slot) in out.iter_mut().enumerate() {
        if value < 0x80 {
            // Under 0x80: the cast cannot truncate.
            *slot = value as u8;
            return written + 1;
        }
        *slot = (value & 0x7f) as u8 | 0x80;
        value >>= 7;
    }
    out.len()
}

/// The length of one map entry's message (an empty key or value is omitted, as prost does).
fn entry_len(key: &[u8], value: &[u8]) -> usize {
    let mut len = 0;
    if !key.is_empty() {
        len += len_delimited_len(ENTRY_KEY, key.len());
    }
    if !value.is_empty() {
        len += len_delimited_len(ENTRY_VALUE, value.len());
    }
    len
}

/// The encoded length of `metadata`'s map entries (field [`METADATA`]).
fn metadata_len(metadata: &Metadata) -> usize {
    metadata
        .raw_entries()
        .iter()
        .map(|(k, v)| len_delimited_len(METADATA, entry_len(k.as_bytes(), v)))
        .sum()
}

/// Writes one entry of the metadata map: a small one (such as the `runar-timeout` of every
/// request) gathered on the stack and written at once, a larger one part by part.
fn put_entry(buf: &mut BytesMut, key: &[u8], value: &[u8]) {
    let mut staged = [0u8; 64];
    if let Some(len) = stage_entry(&mut staged, key, value) {
        buf.put_slice(staged.get(..len).unwrap_or_default());
        return;
    }
    put_len_delimited_header(buf, METADATA, entry_len(key, value));
    if !key.is_empty() {
        put_len_delimited_header(buf, ENTRY_KEY, key.len());
        buf.put_slice(key);
    }
    if !value.is_empty() {
        put_len_delimited_header(buf, ENTRY_VALUE, value.len());
        buf.put_slice(value);
    }
}

/// The bytes [`put_entry`] writes, written into `out`; `None` (and `out` partly written) when
/// they do not fit.
fn stage_entry(out: &mut [u8], key: &[u8], value: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    let mut put = |part: &[u8]| -> Option<()> {
        let end = at.checked_add(part.len())?;
        out.get_mut(at..end)?.copy_from_slice(part);
        at = end;
        Some(())
    };
    let mut header = [0u8; 20];
    put(len_delimited_header(
        &mut header,
        METADATA,
        entry_len(key, value),
    ))?;
    if !key.is_empty() {
        put(len_delimited_header(&mut header, ENTRY_KEY, key.len()))?;
        put(key)?;
    }
    if !value.is_empty() {
        put(len_delimited_header(&mut header, ENTRY_VALUE, value.len()))?;
        put(value)?;
    }
    Some(at)
}

/// Writes `metadata`'s entries.
fn put_metadata(buf: &mut BytesMut, metadata: &Metadata) {
    for (key, value) in metadata.raw_entries() {
        put_entry(buf, key.as_bytes(), value);
    }
}

/// `n` in decimal ASCII, written into `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        // `n % 10` is a digit: the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    digits.get(start..).unwrap_or_default()
}

/// A payload and the length of its encoding, measured once: a frame's header needs the length
/// before the bytes, and a typed value's length walks the whole message.
#[derive(Clone, Copy)]
pub(crate) struct Measured<'a> {
    value: &'a Value,
    len: usize,
}

impl<'a> Measured<'a> {
    /// Measures `value`.
    pub(crate) fn new(value: &'a Value) -> Self {
        Measured {
            value,
            len: value.encoded_len(),
        }
    }

    /// The length of the payload's encoding.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The kind byte `kind` (when the frame starts a stream), then one frame holding
/// `Request { network, path, payload, payload_type, metadata, call }` (the type name when prost
/// names the payload's type; the metadata being the reserved `runar-timeout` entry, when
/// `timeout_ms` is not zero, then `metadata`'s entries; `call` when not zero, on a call
/// stream).
pub(crate) struct RequestFrame<'a> {
    pub(crate) kind: Option<u8>,
    /// The call's id on a call stream (`lane`); 0 elsewhere (not written).
    pub(crate) call: u64,
    pub(crate) network: &'a str,
    pub(crate) path: &'a str,
    pub(crate) payload: Measured<'a>,
    pub(crate) timeout_ms: u64,
    pub(crate) metadata: &'a Metadata,
}

impl RequestFrame<'_> {
    /// The frame's bytes; a message over `max` is refused.
    pub(crate) fn encode(&self, max: usize) -> Result<Bytes, TransportError> {
        let mut buf = BytesMut::new();
        self.append_to(&mut buf, max)?;
        Ok(buf.freeze())
    }

    /// Appends the frame's bytes to `buf`. A message over `max` is refused and `buf` is left
    /// as it was.
    pub(crate) fn append_to(&self, buf: &mut BytesMut, max: usize) -> Result<(), TransportError> {
        let &RequestFrame {
            kind,
            call,
            network,
            path,
            payload:
                Measured {
                    value: payload,
                    len: payload_len,
                },
            timeout_ms,
            metadata,
        } = self;
        let mut digits = [0u8; 20];
        let timeout = decimal(timeout_ms, &mut digits);
        let payload_type = payload.known_name().unwrap_or_default();
        let mut len = bytes_field_len(NETWORK, network.as_bytes())
            + bytes_field_len(PATH, path.as_bytes())
            + bytes_field_len(PAYLOAD_TYPE, payload_type.as_bytes());
        if payload_len != 0 {
            len += len_delimited_len(PAYLOAD, payload_len);
        }
        if timeout_ms != 0 {
            len += len_delimited_len(METADATA, entry_len(TIMEOUT_KEY.as_bytes(), timeout));
        }
        len += metadata_len(metadata);
        if call != 0 {
            len += varint_field_len(CALL, call);
        }
        let header = checked_len(len, max)?;

        let kind_len = usize::from(kind.is_some());
        buf.reserve(kind_len + FRAME_HEADER_LEN + len);
        let start = buf.len();
        if let Some(kind) = kind {
            buf.put_u8(kind);
        }
        buf.put_u32(header);
        if call != 0 {
            put_varint_field(buf, CALL, call);
        }
        put_bytes_field(buf, NETWORK, network.as_bytes());
        put_bytes_field(buf, PATH, path.as_bytes());
        if payload_len != 0 {
            put_len_delimited_header(buf, PAYLOAD, payload_len);
            payload.encode_into(buf);
        }
        put_bytes_field(buf, PAYLOAD_TYPE, payload_type.as_bytes());
        if timeout_ms != 0 {
            put_entry(buf, TIMEOUT_KEY.as_bytes(), timeout);
        }
        put_metadata(buf, metadata);
        debug_assert_eq!(buf.len() - start, kind_len + FRAME_HEADER_LEN + len);
        Ok(())
    }
}

/// One frame holding `Response { payload }` (a oneof member: encoded even when empty).
pub(crate) fn response_frame(payload: Measured<'_>, max: usize) -> Result<Bytes, TransportError> {
    let mut buf = BytesMut::new();
    append_response_frame(&mut buf, payload, max)?;
    Ok(buf.freeze())
}

/// Appends one frame holding `Response { payload }` to `buf` (a streaming call's
/// `StreamFrame { message }` has the same bytes). A payload over `max` is refused and `buf` is
/// left as it was.
pub(crate) fn append_response_frame(
    buf: &mut BytesMut,
    payload: Measured<'_>,
    max: usize,
) -> Result<(), TransportError> {
    append_answer_frame(buf, 0, payload, max)
}

/// Appends one frame holding `Response { call, payload }` to `buf`, `call` first (not written
/// when 0: then the frame is [`append_response_frame`]'s). A payload over `max` is refused and
/// `buf` is left as it was.
pub(crate) fn append_answer_frame(
    buf: &mut BytesMut,
    call: u64,
    payload: Measured<'_>,
    max: usize,
) -> Result<(), TransportError> {
    append_answer(buf, call, payload.len, max, |buf| {
        payload.value.encode_into(buf)
    })
}

/// [`append_response_frame`] for a typed message (sealed as the current seal scope says, as a
/// [`Value`]'s encoding is): the same bytes, without a `Value`.
pub(crate) fn append_message_frame<M: prost::Message>(
    buf: &mut BytesMut,
    message: &M,
    max: usize,
) -> Result<(), TransportError> {
    append_answer(buf, 0, message.encoded_len(), max, |buf| {
        message.encode_raw(buf)
    })
}

/// The frame of [`append_answer_frame`], its payload of `payload_len` bytes written by
/// `encode`.
fn append_answer(
    buf: &mut BytesMut,
    call: u64,
    payload_len: usize,
    max: usize,
    encode: impl FnOnce(&mut BytesMut),
) -> Result<(), TransportError> {
    let mut len = len_delimited_len(RESPONSE_PAYLOAD, payload_len);
    if call != 0 {
        len += varint_field_len(RESPONSE_CALL, call);
    }
    let header = checked_len(len, max)?;
    buf.reserve(FRAME_HEADER_LEN + len);
    let start = buf.len();
    // The frame's header and the fields before the payload, in one write.
    let mut head = [0u8; 48];
    let (size, rest) = head.split_at_mut(FRAME_HEADER_LEN);
    size.copy_from_slice(&header.to_be_bytes());
    let mut at = FRAME_HEADER_LEN;
    if call != 0 {
        at += put_varint(
            rest,
            (u64::from(RESPONSE_CALL) << 3) | WireType::Varint as u64,
        );
        at += put_varint(head.get_mut(at..).unwrap_or_default(), call);
    }
    at += put_varint(
        head.get_mut(at..).unwrap_or_default(),
        (u64::from(RESPONSE_PAYLOAD) << 3) | WireType::LengthDelimited as u64,
    );
    at += put_varint(head.get_mut(at..).unwrap_or_default(), payload_len as u64);
    buf.put_slice(head.get(..at).unwrap_or_default());
    encode(buf);
    debug_assert_eq!(buf.len() - start, FRAME_HEADER_LEN + len);
    Ok(())
}

/// Appends one frame holding `Request { call, cancel: true }` to `buf`: the caller of call
/// `call` on a call stream stopped waiting.
pub(crate) fn append_cancel_frame(buf: &mut BytesMut, call: u64) {
    let len = varint_field_len(CALL, call) + varint_field_len(CANCEL, 1);
    // A few bytes: within any maximum and `u32`.
    buf.reserve(FRAME_HEADER_LEN + len);
    buf.put_u32(len as u32);
    put_varint_field(buf, CALL, call);
    put_varint_field(buf, CANCEL, 1);
}

/// Decodes a `Response` frame's body exactly as `wire::Response::decode` does. The usual
/// answers, a body that is one `payload` field and nothing else, or the `call` and then the
/// `payload` (as [`append_answer_frame`] writes them), are taken as they are (the payload a
/// slice of the frame) without prost's generic field loop; anything else is prost's to decode.
pub(crate) fn decode_response(body: Bytes) -> Result<crate::wire::Response, prost::DecodeError> {
    use crate::wire::{Response, response};
    const PAYLOAD_KEY: u8 = ((RESPONSE_PAYLOAD as u8) << 3) | WireType::LengthDelimited as u8;
    const CALL_KEY: u8 = ((RESPONSE_CALL as u8) << 3) | WireType::Varint as u8;
    let mut rest = &body[..];
    let mut call = 0;
    if let Some((&CALL_KEY, mut after)) = rest.split_first() {
        match prost::encoding::decode_varint(&mut after) {
            Ok(id) => (call, rest) = (id, after),
            Err(_) => return prost::Message::decode(body),
        }
    }
    if let Some((&PAYLOAD_KEY, mut after)) = rest.split_first() {
        let spans_the_rest = prost::encoding::decode_varint(&mut after)
            .is_ok_and(|len| usize::try_from(len) == Ok(after.len()));
        // `after` is a suffix of `body`: where it starts is within `body`.
        if let (true, Some(start)) = (spans_the_rest, body.len().checked_sub(after.len())) {
            return Ok(Response {
                result: Some(response::Result::Payload(body.slice(start..))),
                call,
            });
        }
    }
    prost::Message::decode(body)
}

/// Appends one frame holding
/// `Event { network, topic, subscription_ids, retained, metadata, payload }` to `buf`, its
/// fields in that order: the payload last, so that more events can join the frame (see
/// [`append_more_payload`]). A message over `max` is refused and `buf` is left as it was.
pub(crate) fn append_event_frame(
    buf: &mut BytesMut,
    event: &EventRef<'_>,
    max: usize,
) -> Result<(), TransportError> {
    let (network, topic) = (event.network, event.topic);
    let ids = event.subscription_ids;
    // `repeated uint64`, packed: the varints' length, then the varints.
    let ids_len: usize = ids.iter().map(encoded_len_varint).sum();
    let payload_len = event.payload.len();
    let mut len =
        bytes_field_len(NETWORK, network.as_bytes()) + bytes_field_len(TOPIC, topic.as_bytes());
    if payload_len != 0 {
        len += len_delimited_len(PAYLOAD, payload_len);
    }
    if ids_len != 0 {
        len += len_delimited_len(SUBSCRIPTION_IDS, ids_len);
    }
    if event.retained {
        len += key_len(RETAINED) + 1;
    }
    len += metadata_len(event.metadata);
    let header = checked_len(len, max)?;

    buf.reserve(FRAME_HEADER_LEN + len);
    let start = buf.len();
    buf.put_u32(header);
    put_bytes_field(buf, NETWORK, network.as_bytes());
    put_bytes_field(buf, TOPIC, topic.as_bytes());
    if ids_len != 0 {
        put_len_delimited_header(buf, SUBSCRIPTION_IDS, ids_len);
        for id in ids.iter() {
            prost::encoding::encode_varint(id, buf);
        }
    }
    if event.retained {
        prost::encoding::bool::encode(RETAINED, &true, buf);
    }
    put_metadata(buf, event.metadata);
    if payload_len != 0 {
        put_len_delimited_header(buf, PAYLOAD, payload_len);
        event.payload.encode_into(buf);
    }
    debug_assert_eq!(buf.len() - start, FRAME_HEADER_LEN + len);
    Ok(())
}

/// Appends `payload` to the `Event` frame that starts at `start` and ends `buf`, as one more
/// event of it (`more_payloads`), and rewrites the frame's length: the bytes it added. A
/// frame that would grow over `max` is refused and `buf` is left as it was.
pub(crate) fn append_more_payload(
    buf: &mut BytesMut,
    start: usize,
    payload: &EventPayload<'_>,
    max: usize,
) -> Result<usize, TransportError> {
    let payload_len = payload.len();
    let added = len_delimited_len(MORE_PAYLOADS, payload_len);
    let header_at = start..start.saturating_add(FRAME_HEADER_LEN);
    let old: [u8; FRAME_HEADER_LEN] = buf
        .get(header_at.clone())
        .and_then(|h| h.try_into().ok())
        .ok_or(TransportError::FrameTooLarge { len: 0, max })?;
    let old = u32::from_be_bytes(old) as usize;
    let header = checked_len(old.saturating_add(added), max)?;
    put_len_delimited_header(buf, MORE_PAYLOADS, payload_len);
    payload.encode_into(buf);
    if let Some(h) = buf.get_mut(header_at) {
        h.copy_from_slice(&header.to_be_bytes());
    }
    Ok(added)
}

/// A `Request` frame's body, decoded: what `wire::Request::decode` gives, with the metadata as
/// a list in wire order (the `runar-timeout` entry parsed and taken out, other reserved
/// entries dropped) instead of a hash map. A map field is a repeated entry message on the wire,
/// so the bytes accepted are exactly prost's; decoding into a list spares hashing every key and
/// allocating a table for the one entry most requests carry.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DecodedRequest {
    pub(crate) network: String,
    pub(crate) path: String,
    pub(crate) payload: Bytes,
    pub(crate) payload_type: String,
    /// `runar-timeout` (the last one, as in a map); `None` when absent.
    pub(crate) timeout_ms: Option<u64>,
    /// The other entries, reserved ones (`runar-…`) left out; a later entry for the same key
    /// replaces an earlier one where the node builds its `Metadata`, as in a map.
    pub(crate) metadata: Vec<(String, Bytes)>,
    /// The call's id on a call stream; 0 elsewhere.
    pub(crate) call: u64,
    /// On a call stream: the caller stopped waiting for call `call`.
    pub(crate) cancel: bool,
}

/// Why a `Request` frame did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestDecodeError {
    /// Not a valid `Request` message (prost's reason).
    #[error("malformed request: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The `runar-timeout` entry is not a decimal number of milliseconds.
    #[error("malformed `{TIMEOUT_KEY}`: expected milliseconds in decimal")]
    Timeout,
    /// A metadata entry's key is not UTF-8 (where prost says "invalid string value").
    #[error("malformed request: a metadata key is not UTF-8")]
    KeyNotUtf8,
}

/// Decodes a `Request` frame's body (see [`DecodedRequest`]); fails exactly where
/// `wire::Request::decode` fails, and on a malformed `runar-timeout`.
pub(crate) fn decode_request(mut buf: Bytes) -> Result<DecodedRequest, RequestDecodeError> {
    use prost::encoding::{DecodeContext, bool, bytes, decode_key, skip_field, string, uint64};
    let mut request = DecodedRequest::default();
    let mut timeout: Option<Bytes> = None;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        let ctx = DecodeContext::default();
        match tag {
            NETWORK => string::merge(wire_type, &mut request.network, &mut buf, ctx)?,
            PATH => string::merge(wire_type, &mut request.path, &mut buf, ctx)?,
            PAYLOAD => bytes::merge(wire_type, &mut request.payload, &mut buf, ctx)?,
            PAYLOAD_TYPE => string::merge(wire_type, &mut request.payload_type, &mut buf, ctx)?,
            CALL => uint64::merge(wire_type, &mut request.call, &mut buf, ctx)?,
            CANCEL => bool::merge(wire_type, &mut request.cancel, &mut buf, ctx)?,
            METADATA => {
                // The key stays in the frame's buffer: only an entry the node keeps is copied
                // into a `String` (the `runar-timeout` most requests carry is not).
                let (key, value) = decode_entry(&mut buf)?;
                if key == TIMEOUT_KEY.as_bytes() {
                    timeout = Some(value);
                } else if !key.starts_with(RESERVED_PREFIX.as_bytes()) {
                    let key =
                        std::str::from_utf8(&key).map_err(|_| RequestDecodeError::KeyNotUtf8)?;
                    request.metadata.push((key.to_owned(), value));
                }
            }
            _ => skip_field(wire_type, tag, &mut buf, ctx)?,
        }
    }
    if let Some(text) = timeout {
        request.timeout_ms = Some(parse_decimal(&text).ok_or(RequestDecodeError::Timeout)?);
    }
    Ok(request)
}

/// One `map<string, bytes>` entry (a length-delimited message: key = 1, value = 2, unknown
/// fields skipped, absent fields empty), read as prost's map decoding reads it.
///
/// Like prost, it reads the entry as length-delimited whatever wire type its key said, and
/// checks every occurrence of the key for UTF-8, not only the last (the request_frames fuzz
/// target found both differences). The key is returned as the frame's bytes (checked to be
/// UTF-8), not copied into a `String`.
fn decode_entry(buf: &mut Bytes) -> Result<(Bytes, Bytes), RequestDecodeError> {
    use prost::encoding::{DecodeContext, bytes, decode_key, merge_loop, skip_field};
    let mut entry = (Bytes::new(), Bytes::new());
    let mut utf8 = true;
    merge_loop(
        &mut entry,
        buf,
        DecodeContext::default(),
        |(key, value), buf, ctx| {
            let (tag, wire_type) = decode_key(buf)?;
            match tag {
                ENTRY_KEY => {
                    bytes::merge(wire_type, key, buf, ctx)?;
                    // As prost's `string::merge`: each occurrence must be UTF-8.
                    utf8 &= std::str::from_utf8(key).is_ok();
                    Ok(())
                }
                ENTRY_VALUE => bytes::merge(wire_type, value, buf, ctx),
                _ => skip_field(wire_type, tag, buf, ctx),
            }
        },
    )?;
    if !utf8 {
        return Err(RequestDecodeError::KeyNotUtf8);
    }
    Ok(entry)
}

/// A string a peer sent, checked to be UTF-8 and left in the frame it came in rather than
/// copied into a `String`. Made here, by the decoder, only from UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Text(Bytes);

impl Text {
    /// The text. Its UTF-8 is checked again (never in vain: a `Text` is only made from UTF-8),
    /// so where the bytes will do the node uses [`as_bytes`](Self::as_bytes) instead.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the text is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An `Event` frame's body, decoded where it lies: the network, the topic and the payload are
/// slices of the frame, the subscription ids inline (see [`SubscriptionIds`]). The node shares
/// one copy of a topic it has seen before (its route cache's), copying only a new one.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DecodedEvent {
    pub(crate) network: Text,
    pub(crate) topic: Text,
    pub(crate) payload: Bytes,
    pub(crate) more: MorePayloads,
    /// The body's length: what the events, slices of it, keep in memory.
    pub(crate) frame_len: usize,
    pub(crate) subscription_ids: SubscriptionIds,
    pub(crate) retained: bool,
    pub(crate) metadata: std::collections::HashMap<String, Bytes>,
}

/// The further events of an `Event` frame (`more_payloads`), read from the frame's body one at
/// a time, in order: a frame joining thousands of events costs nothing more to hold. The body
/// was checked by [`decode_event`]; should a field not parse after all, the payloads end there.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct MorePayloads {
    /// The body from the first of them on.
    rest: Bytes,
    /// How many are left.
    left: usize,
}

impl MorePayloads {
    /// How many are left.
    pub(crate) fn len(&self) -> usize {
        self.left
    }

    /// `payloads` as a frame would carry them (for the node's tests).
    #[cfg(test)]
    pub(crate) fn of(payloads: &[Bytes]) -> Self {
        let mut rest = bytes::BytesMut::new();
        for payload in payloads {
            prost::encoding::bytes::encode(MORE_PAYLOADS, payload, &mut rest);
        }
        MorePayloads {
            rest: rest.freeze(),
            left: payloads.len(),
        }
    }
}

impl Iterator for MorePayloads {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        use prost::encoding::{DecodeContext, bytes, decode_key, skip_field};
        while self.left > 0 && !self.rest.is_empty() {
            let (tag, wire_type) = decode_key(&mut self.rest).ok()?;
            let ctx = DecodeContext::default();
            if tag == MORE_PAYLOADS {
                let mut payload = Bytes::new();
                bytes::merge(wire_type, &mut payload, &mut self.rest, ctx).ok()?;
                self.left -= 1;
                return Some(payload);
            }
            // Another field between them: stepped over as `decode_event` read it (a metadata
            // entry is read as a length-delimited field, as prost reads map entries).
            let wire_type = if tag == METADATA {
                prost::encoding::WireType::LengthDelimited
            } else {
                wire_type
            };
            skip_field(wire_type, tag, &mut self.rest, ctx).ok()?;
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Decodes an `Event` frame's body (see [`DecodedEvent`]); fails exactly where
/// `wire::Event::decode` fails (the tests and the `request_frames` fuzz target check it).
pub(crate) fn decode_event(mut buf: Bytes) -> Result<DecodedEvent, EventDecodeError> {
    use prost::encoding::{DecodeContext, bool, bytes, decode_key, hash_map, skip_field, string};
    let body = buf.clone();
    let mut event = DecodedEvent {
        frame_len: body.len(),
        ..DecodedEvent::default()
    };
    let mut ids = IdCount::default();
    // How many `more_payloads`, and where the first one's key starts in `body`.
    let (mut more, mut more_from) = (0usize, 0usize);
    while !buf.is_empty() {
        // `buf` is what is left of `body`.
        let field_at = body.len().saturating_sub(buf.len());
        let (tag, wire_type) = decode_key(&mut buf)?;
        let ctx = DecodeContext::default();
        match tag {
            // As prost's `string::merge`: each occurrence must be UTF-8, the last one wins.
            NETWORK => {
                let mut text = Bytes::new();
                bytes::merge(wire_type, &mut text, &mut buf, ctx)?;
                std::str::from_utf8(&text).map_err(|_| EventDecodeError::NotUtf8)?;
                event.network = Text(text);
            }
            TOPIC => {
                let mut text = Bytes::new();
                bytes::merge(wire_type, &mut text, &mut buf, ctx)?;
                std::str::from_utf8(&text).map_err(|_| EventDecodeError::NotUtf8)?;
                event.topic = Text(text);
            }
            PAYLOAD => bytes::merge(wire_type, &mut event.payload, &mut buf, ctx)?,
            MORE_PAYLOADS => {
                // Checked and stepped over as `bytes::merge` would read it, without taking
                // it: `MorePayloads` takes each in turn.
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                skip_field(wire_type, tag, &mut buf, ctx)?;
                if more == 0 {
                    more_from = field_at;
                }
                more = more.saturating_add(1);
            }
            SUBSCRIPTION_IDS => merge_ids(wire_type, &mut ids, &mut buf, ctx)?,
            RETAINED => bool::merge(wire_type, &mut event.retained, &mut buf, ctx)?,
            METADATA => hash_map::merge(
                string::merge,
                bytes::merge,
                &mut event.metadata,
                &mut buf,
                ctx,
            )?,
            _ => skip_field(wire_type, tag, &mut buf, ctx)?,
        }
    }
    event.subscription_ids = match ids {
        IdCount { count: 0, .. } => SubscriptionIds::default(),
        IdCount { count: 1, first } => SubscriptionIds::One(first),
        IdCount { count, .. } => SubscriptionIds::InFrame {
            body: body.clone(),
            count,
        },
    };
    if more > 0 {
        event.more = MorePayloads {
            rest: body.slice(more_from..),
            left: more,
        };
    }
    Ok(event)
}

/// How many subscription ids an `Event` frame names, and the first.
#[derive(Default)]
struct IdCount {
    count: usize,
    first: u64,
}

impl IdCount {
    fn add(&mut self, id: u64) {
        if self.count == 0 {
            self.first = id;
        }
        self.count = self.count.saturating_add(1);
    }
}

/// The subscription ids of an `Event` frame's body, read from it again, in order. The body was
/// checked by [`decode_event`]; should a field not parse after all, the ids end there.
#[derive(Debug)]
pub(crate) struct IdsInFrame {
    /// The fields not read yet.
    body: Bytes,
    /// What is left of the packed run being read.
    run: Bytes,
}

impl IdsInFrame {
    pub(crate) fn new(body: Bytes) -> Self {
        IdsInFrame {
            body,
            run: Bytes::new(),
        }
    }
}

impl Iterator for IdsInFrame {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        use prost::encoding::{DecodeContext, decode_key, decode_varint, skip_field};
        loop {
            if !self.run.is_empty() {
                return decode_varint(&mut self.run).ok();
            }
            if self.body.is_empty() {
                return None;
            }
            let (tag, wire_type) = decode_key(&mut self.body).ok()?;
            // Each field is stepped over as `decode_event` read it: a metadata entry is read
            // as length-delimited whatever wire type its key says (as prost reads map
            // entries; the request_frames fuzz target found this), the rest by wire type.
            if tag == SUBSCRIPTION_IDS && wire_type != WireType::LengthDelimited {
                return decode_varint(&mut self.body).ok();
            } else if tag == SUBSCRIPTION_IDS || tag == METADATA {
                let len = usize::try_from(decode_varint(&mut self.body).ok()?).ok()?;
                if len > self.body.len() {
                    return None;
                }
                let field = self.body.split_to(len);
                if tag == SUBSCRIPTION_IDS {
                    self.run = field;
                }
            } else {
                skip_field(wire_type, tag, &mut self.body, DecodeContext::default()).ok()?;
            }
        }
    }
}

/// Why an `Event` frame did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventDecodeError {
    /// Not a valid `Event` message (prost's reason).
    #[error("malformed event: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The network or the topic is not UTF-8 (where prost says "invalid string value").
    #[error("malformed event: a string is not UTF-8")]
    NotUtf8,
}

/// A `repeated uint64` field read as prost's `uint64::merge_repeated` reads it (packed or
/// not; occurrences add up), counted into `ids`.
fn merge_ids(
    wire_type: WireType,
    ids: &mut IdCount,
    buf: &mut Bytes,
    ctx: prost::encoding::DecodeContext,
) -> Result<(), prost::DecodeError> {
    use prost::encoding::{check_wire_type, decode_varint, merge_loop};
    if wire_type == WireType::LengthDelimited {
        merge_loop(ids, buf, ctx, |ids, buf, _| {
            ids.add(decode_varint(buf)?);
            Ok(())
        })
    } else {
        check_wire_type(WireType::Varint, wire_type)?;
        ids.add(decode_varint(buf)?);
        Ok(())
    }
}

/// Checks [`decode_event`] against prost's decoding of the same bytes as `wire::Event`: both
/// refuse, or both give the same event (for the tests and the fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_decode_event(body: &[u8]) {
    use prost::Message as _;
    let ours = decode_event(Bytes::copy_from_slice(body));
    match (ours, crate::wire::Event::decode(body)) {
        (Err(_), Err(_)) => {}
        (Ok(ours), Ok(prost)) => {
            let ids: Vec<u64> = ours.subscription_ids.iter().collect();
            assert_eq!(ours.more.len(), prost.more_payloads.len(), "more payloads");
            let more: Vec<Bytes> = ours.more.collect();
            assert_eq!(more, prost.more_payloads, "decode_event and prost differ");
            assert_eq!(
                (
                    ours.network.as_str(),
                    ours.topic.as_str(),
                    &ours.payload,
                    &ids,
                    ours.retained,
                    &ours.metadata,
                ),
                (
                    prost.network.as_str(),
                    prost.topic.as_str(),
                    &prost.payload,
                    &prost.subscription_ids,
                    prost.retained,
                    &prost.metadata,
                ),
                "decode_event and prost differ"
            );
        }
        (ours, prost) => panic!(
            "decode_event {} what prost {}",
            if ours.is_ok() { "accepts" } else { "refuses" },
            if prost.is_ok() { "refuses" } else { "accepts" },
        ),
    }
}

/// A non-empty run of ASCII digits as a number, `None` on anything else or on overflow.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Checks [`decode_request`] against prost's decoding of the same bytes as `wire::Request`:
/// both refuse, or both give the same request (for the tests and the fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_decode_request(body: &[u8]) {
    use prost::Message as _;
    let ours = decode_request(Bytes::copy_from_slice(body));
    let Ok(mut prost) = crate::wire::Request::decode(body) else {
        assert!(ours.is_err(), "prost refuses what decode_request accepts");
        return;
    };
    let timeout = prost.metadata.remove(TIMEOUT_KEY);
    let timeout_ms = match timeout.as_deref().map(parse_decimal) {
        Some(None) => {
            assert!(
                matches!(ours, Err(RequestDecodeError::Timeout)),
                "a malformed timeout is refused"
            );
            return;
        }
        Some(Some(ms)) => Some(ms),
        None => None,
    };
    prost
        .metadata
        .retain(|key, _| !key.starts_with(RESERVED_PREFIX));
    let Ok(ours) = ours else {
        panic!("decode_request refuses what prost accepts");
    };
    let metadata: std::collections::HashMap<String, Bytes> = ours.metadata.into_iter().collect();
    assert_eq!(
        (
            ours.network,
            ours.path,
            ours.payload,
            ours.payload_type,
            ours.timeout_ms,
            metadata,
            ours.call,
            ours.cancel
        ),
        (
            prost.network,
            prost.path,
            prost.payload,
            prost.payload_type,
            timeout_ms,
            prost.metadata,
            prost.call,
            prost.cancel
        ),
        "decode_request and prost differ"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::network::OutboundEvent;
    use crate::network::framing::encode_frame;
    use crate::wire;

    /// The frame of a request.
    fn request<'a>(
        kind: u8,
        network: &'a str,
        path: &'a str,
        payload: &'a Value,
        timeout_ms: u64,
        metadata: &'a Metadata,
    ) -> RequestFrame<'a> {
        RequestFrame {
            kind: Some(kind),
            call: 0,
            network,
            path,
            payload: Measured::new(payload),
            timeout_ms,
            metadata,
        }
    }

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

    fn metadatas() -> Vec<Metadata> {
        let mut one = Metadata::new();
        one.insert("tenant", "acme").unwrap();
        let mut several = one.clone();
        several.insert("empty", "").unwrap();
        several.insert_bin("blob-bin", vec![0u8, 255, 7]).unwrap();
        // Too long to be staged on the stack: written part by part.
        let mut long = several.clone();
        long.insert("long", "x".repeat(100)).unwrap();
        vec![Metadata::new(), one, several, long]
    }

    /// The wire map of a request: the timeout entry, then the metadata's.
    fn wire_map(timeout_ms: u64, metadata: &Metadata) -> HashMap<String, Bytes> {
        let mut map: HashMap<String, Bytes> = metadata
            .raw_entries()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if timeout_ms != 0 {
            map.insert(TIMEOUT_KEY.into(), timeout_ms.to_string().into());
        }
        map
    }

    #[test]
    fn field_headers_are_what_prost_encodes() {
        use prost::encoding::{encode_key, encode_varint};
        let lens = [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as usize,
            usize::MAX,
        ];
        for tag in [1, 15, 16, 2047, 2048, (1 << 29) - 1] {
            for len in lens {
                let mut ours = BytesMut::new();
                put_len_delimited_header(&mut ours, tag, len);
                let mut prost = BytesMut::new();
                encode_key(tag, WireType::LengthDelimited, &mut prost);
                encode_varint(len as u64, &mut prost);
                assert_eq!(ours, prost, "tag {tag}, length {len}");
            }
        }
    }

    #[test]
    fn request_frames_are_what_prost_encodes() {
        let max = 1 << 20;
        for payload in payloads() {
            for (network, path) in [("default", "math/add"), ("", ""), ("n", "")] {
                for timeout_ms in [0, 1, 30_000, u64::MAX] {
                    for metadata in metadatas() {
                        let message = wire::Request {
                            call: 0,
                            cancel: false,
                            network: network.into(),
                            path: path.into(),
                            payload: payload.to_bytes(),
                            payload_type: payload.known_name().unwrap_or_default().into(),
                            metadata: wire_map(timeout_ms, &metadata),
                        };
                        let got = request(7, network, path, &payload, timeout_ms, &metadata)
                            .encode(max)
                            .unwrap();
                        let what = format!("{payload:?} {network:?} {path:?} {timeout_ms}");
                        if message.metadata.len() <= 1 {
                            // One map entry at most: prost's order is ours, byte for byte.
                            let expected = encode_frame(Some(7), &message, max).unwrap();
                            assert_eq!(got, expected, "{what}");
                        }
                        let body = got.slice(1 + FRAME_HEADER_LEN..);
                        let decoded = <wire::Request as prost::Message>::decode(body).unwrap();
                        assert_eq!(decoded, message, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn requests_decode_as_prost_decodes_them() {
        let max = 1 << 20;
        for payload in payloads() {
            for timeout_ms in [0, 1, 30_000, u64::MAX] {
                for metadata in metadatas() {
                    let frame = request(7, "net", "math/add", &payload, timeout_ms, &metadata)
                        .encode(max)
                        .unwrap();
                    let body = frame.slice(1 + FRAME_HEADER_LEN..);
                    check_decode_request(&body);
                    let decoded = decode_request(body).unwrap();
                    assert_eq!(decoded.timeout_ms.unwrap_or(0), timeout_ms);
                    assert_eq!(decoded.metadata.len(), metadata.len());
                }
            }
        }
        // What a peer may send that the encoder never writes: repeated keys (the last wins),
        // reserved and unknown entries, a malformed or non-canonical timeout, unknown fields,
        // a key that is not UTF-8, a truncated entry.
        let entry = |key: &[u8], value: &[u8]| {
            let mut buf = BytesMut::new();
            put_entry(&mut buf, key, value);
            buf.to_vec()
        };
        let cases: Vec<Vec<u8>> = vec![
            [entry(b"a", b"1"), entry(b"a", b"2")].concat(),
            [entry(b"runar-timeout", b"5"), entry(b"runar-timeout", b"7")].concat(),
            entry(b"runar-timeout", b"007"),
            entry(b"runar-timeout", b"+5"),
            entry(b"runar-timeout", b""),
            entry(b"runar-timeout", b"99999999999999999999999"),
            entry(b"runar-future", b"x"),
            entry(b"", b""),
            entry(&[0xff, 0xfe], b"x"),
            [entry(b"k", b"v"), vec![0x58, 0x01]].concat(),
            vec![0x32, 0x05, 0x0a, 0x01],
            vec![0x32, 0x02, 0x18, 0x01],
            vec![0x33],
            // A map entry under a key with the 64-bit wire type: prost reads it all the same.
            vec![0x31, 0x05, 0x0a, 0x01, b'k', 0x12, 0x00],
            // An entry whose first key is not UTF-8 and a later one is: prost checks each
            // (found by the request_frames fuzz target).
            vec![0x32, 0x06, 0x0a, 0x01, 0x81, 0x0a, 0x01, b'k'],
        ];
        for case in cases {
            check_decode_request(&case);
        }
    }

    #[test]
    fn response_frames_are_what_prost_encodes() {
        for payload in payloads() {
            let message = wire::Response {
                call: 0,
                result: Some(wire::response::Result::Payload(payload.to_bytes())),
            };
            let expected = encode_frame(None, &message, 1 << 20).unwrap();
            assert_eq!(
                response_frame(Measured::new(&payload), 1 << 20).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn responses_decode_as_prost_decodes_them() {
        use prost::Message as _;
        let error = wire::Response {
            call: 0,
            result: Some(wire::response::Result::Error(wire::ErrorStatus {
                code: 5,
                message: "gone".into(),
            })),
        }
        .encode_to_vec();
        let bodies: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x0a, 0],
            vec![0x0a, 3, 1, 2, 3],
            vec![0x0a, 0x80, 0x01],
            // Shorter or longer than it says; a second payload; an unknown field after.
            vec![0x0a, 4, 1, 2, 3],
            vec![0x0a, 2, 1, 2, 3],
            vec![0x0a, 1, 7, 0x0a, 1, 8],
            vec![0x0a, 1, 7, 0x18, 1],
            // A varint too long, a bad wire type for the key.
            vec![
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            vec![0x08, 1],
            error.clone(),
            [vec![0x0a, 1, 7], error].concat(),
        ];
        for body in bodies {
            let ours = decode_response(Bytes::from(body.clone()));
            let prost = wire::Response::decode(&body[..]);
            assert_eq!(ours.is_ok(), prost.is_ok(), "{body:?}");
            assert_eq!(ours.ok(), prost.ok(), "{body:?}");
        }
    }

    /// The `wire::Event` a frame decodes to, by prost, and the frame's length.
    fn prost_event(frame: &[u8]) -> (wire::Event, usize) {
        use prost::Message as _;
        let header: [u8; 4] = frame[..4].try_into().unwrap();
        let len = u32::from_be_bytes(header) as usize;
        (wire::Event::decode(&frame[4..4 + len]).unwrap(), 4 + len)
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
                            subscription_ids: ids.iter().copied().collect(),
                            retained,
                            metadata: metadatas().swap_remove(1),
                        };
                        let message = wire::Event {
                            network: network.into(),
                            topic: topic.into(),
                            payload: payload.to_bytes(),
                            subscription_ids: ids.clone(),
                            retained,
                            metadata: wire_map(0, &event.metadata),
                            more_payloads: vec![],
                        };
                        let one = encode_frame(None, &message, max).unwrap();
                        let mut alone = BytesMut::new();
                        append_event_frame(&mut alone, &event.borrowed(), max).unwrap();
                        // The same fields, the payload last (prost writes them in number
                        // order): the same length, the same message.
                        assert_eq!(alone.len(), one.len(), "{message:?}");
                        assert_eq!(prost_event(&alone), (message.clone(), one.len()));
                        // The value itself encodes to the same frame as its bytes.
                        let mut direct = BytesMut::new();
                        let by_value = EventRef {
                            payload: EventPayload::Value(
                                crate::value::ValueRef::Value(&payload),
                                None,
                            ),
                            ..event.borrowed()
                        };
                        append_event_frame(&mut direct, &by_value, max).unwrap();
                        assert_eq!(direct, alone);
                        // Appended after other frames, as in a queue.
                        append_event_frame(&mut batch, &event.borrowed(), max).unwrap();
                        expected.push(message);
                    }
                }
            }
        }
        let mut rest = &batch[..];
        for message in expected {
            let (decoded, len) = prost_event(rest);
            assert_eq!(decoded, message);
            rest = &rest[len..];
        }
        assert!(rest.is_empty());

        let event = OutboundEvent {
            network: "n".into(),
            topic: "t".into(),
            payload: Bytes::from(vec![1u8; 100]),
            subscription_ids: SubscriptionIds::One(1),
            retained: false,
            metadata: Metadata::new(),
        };
        let message = wire::Event {
            network: "n".into(),
            topic: "t".into(),
            payload: event.payload.clone(),
            subscription_ids: vec![1],
            ..Default::default()
        };
        let mut untouched = BytesMut::from(&b"before"[..]);
        let err = append_event_frame(&mut untouched, &event.borrowed(), 50).unwrap_err();
        let prost = encode_frame(None, &message, 50).unwrap_err();
        assert_eq!(err.to_string(), prost.to_string());
        assert_eq!(untouched, &b"before"[..]);
    }

    #[test]
    fn events_join_a_frame_as_more_payloads_up_to_the_maximum_size() {
        let event = OutboundEvent {
            network: "net".into(),
            topic: "math/computed".into(),
            payload: Bytes::from_static(b"first"),
            subscription_ids: SubscriptionIds::One(9),
            retained: false,
            metadata: Metadata::new(),
        };
        let max = 60;
        let mut buf = BytesMut::from(&b"earlier"[..]);
        let start = buf.len();
        append_event_frame(&mut buf, &event.borrowed(), max).unwrap();
        let second = Value::new(b"second".to_vec());
        let added = append_more_payload(
            &mut buf,
            start,
            &EventPayload::Value(crate::value::ValueRef::Value(&second), None),
            max,
        )
        .unwrap();
        assert_eq!(added, 1 + 1 + second.encoded_len());
        append_more_payload(&mut buf, start, &EventPayload::Encoded(b""), max).unwrap();
        let (message, len) = prost_event(&buf[start..]);
        assert_eq!(len, buf.len() - start);
        assert_eq!(message.payload, Bytes::from_static(b"first"));
        assert_eq!(message.more_payloads, vec![second.to_bytes(), Bytes::new()]);
        // Our decoder gives the same events, in order.
        let decoded = decode_event(buf.clone().freeze().slice(start + 4..)).unwrap();
        assert_eq!(decoded.more.len(), 2);
        assert_eq!(
            decoded.more.collect::<Vec<_>>(),
            vec![second.to_bytes(), Bytes::new()]
        );
        // A payload that would take the frame over the maximum is refused; nothing written.
        let before = buf.clone();
        let big = [7u8; 40];
        let err = append_more_payload(&mut buf, start, &EventPayload::Encoded(&big), max);
        assert!(err.is_err());
        assert_eq!(buf, before);
    }

    #[test]
    fn events_decode_as_prost_decodes_them() {
        use prost::Message as _;
        for payload in payloads() {
            for ids in [vec![], vec![7], vec![3, 1, 3, 2], (0..40).rev().collect()] {
                let event = wire::Event {
                    network: "net".into(),
                    topic: "math/computed".into(),
                    payload: payload.to_bytes(),
                    subscription_ids: ids,
                    retained: true,
                    metadata: wire_map(0, &metadatas().swap_remove(1)),
                    more_payloads: vec![Bytes::new(), payload.to_bytes()],
                };
                check_decode_event(&event.encode_to_vec());
            }
        }
        // What a peer may send that the encoder never writes: unpacked and repeated ids, a
        // repeated topic (the last wins), a packed run that overruns its length, a topic that
        // is not UTF-8 (even when a later one is), a bool over one byte, unknown fields,
        // wrong wire types, truncation.
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x20, 5, 0x20, 6, 0x22, 2, 7, 8],
            vec![0x12, 1, b'a', 0x12, 1, b'b'],
            vec![0x22, 1, 0x80, 0x01],
            vec![0x12, 1, 0xff, 0x12, 1, b'b'],
            vec![0x0a, 2, 0xc3, 0x28],
            vec![0x28, 0x80, 0x01],
            vec![0x38, 1, 0x42, 0],
            vec![0x12, 0x05, b'a'],
            vec![0x21, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![0x2a, 0],
            vec![0x22, 0x80],
            vec![0x32, 4, 0x0a, 2, 0xff, 0xfe],
            // Ids, then a metadata entry whose key says fixed64 (read as length-delimited, as
            // prost reads map entries), then more ids (found by the request_frames target).
            vec![0x20, 1, 0x22, 2, 2, 3, 0x31, 0, 0x20, 0, 0x20, 32, 0x20, 18],
            // More payloads: two, between other fields (a metadata entry whose key says
            // fixed64, ids); with a wrong wire type; truncated.
            vec![0x3a, 1, 5, 0x32, 2, 0x09, 0, 0x20, 3, 0x3a, 0, 0x1a, 1, 4],
            vec![0x1a, 1, 4, 0x3a, 2, 0x31, 0, 0x3a, 1, 6],
            vec![0x38, 1],
            vec![0x3a, 5, 1],
        ];
        for case in cases {
            check_decode_event(&case);
        }
        // Ids left in the frame read back in order, whatever their encoding.
        let mut body = vec![0x20, 5, 0x12, 1, b't', 0x22, 3, 1, 0x80, 0x01, 0x20, 9];
        body.extend_from_slice(&[0x22, 0]);
        let event = decode_event(Bytes::from(body)).unwrap();
        assert!(matches!(
            event.subscription_ids,
            SubscriptionIds::InFrame { count: 4, .. }
        ));
        assert_eq!(
            event.subscription_ids.iter().collect::<Vec<_>>(),
            [5, 1, 128, 9]
        );
        let mut ids = event.subscription_ids.clone();
        ids.push(3);
        assert_eq!(ids, SubscriptionIds::Many(vec![5, 1, 128, 9, 3]));
        let one = decode_event(Bytes::from_static(&[0x22, 1, 7])).unwrap();
        assert_eq!(one.subscription_ids, SubscriptionIds::One(7));
    }

    #[test]
    fn oversized_messages_are_refused_with_their_length() {
        let payload = Value::new(vec![0u8; 100]);
        let err = request(2, "n", "p", &payload, 5, &Metadata::new())
            .encode(50)
            .unwrap_err();
        let expected = wire::Request {
            call: 0,
            cancel: false,
            network: "n".into(),
            path: "p".into(),
            payload: payload.to_bytes(),
            payload_type: payload.known_name().unwrap_or_default().into(),
            metadata: wire_map(5, &Metadata::new()),
        };
        let prost = encode_frame(None, &expected, 50).unwrap_err();
        assert_eq!(err.to_string(), prost.to_string());
        let response = wire::Response {
            call: 0,
            result: Some(wire::response::Result::Payload(payload.to_bytes())),
        };
        assert_eq!(
            response_frame(Measured::new(&payload), 50)
                .unwrap_err()
                .to_string(),
            encode_frame(None, &response, 50).unwrap_err().to_string()
        );
    }
}
