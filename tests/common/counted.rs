//! `Counted`: a message that counts how often it is encoded and decoded, for the tests that
//! prove a local call never encodes (late serialization, local streams).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Encodes of any `Counted` in this test binary.
pub static ENCODES: AtomicUsize = AtomicUsize::new(0);
/// Decodes of any `Counted` in this test binary.
pub static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A message that counts its encodes and decodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counted {
    /// The value.
    pub n: i64,
}

impl prost::Message for Counted {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        ENCODES.fetch_add(1, Ordering::SeqCst);
        if self.n != 0 {
            prost::encoding::int64::encode(1, &self.n, buf);
        }
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        if tag == 1 {
            prost::encoding::int64::merge(wire_type, &mut self.n, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }
    fn encoded_len(&self) -> usize {
        if self.n != 0 {
            prost::encoding::int64::encoded_len(1, &self.n)
        } else {
            0
        }
    }
    fn clear(&mut self) {
        self.n = 0;
    }
}
