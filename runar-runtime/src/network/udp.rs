//! The UDP socket under the QUIC endpoint: tokio's, with quinn's receive batch sized to what
//! the kernel can deliver rather than to the largest packet times the most segments.
//!
//! quinn gives every slot of its receive batch (32 slots) room for `max_receive_segments`
//! packets of the largest UDP payload, because with generic receive offload (GRO) one read can
//! return up to 64 coalesced packets. But the kernel coalesces at most 64 KiB into one read
//! (GRO's legacy size limit, and the most one segmentation-offload write can carry), so with
//! packets larger than 1 KiB the batch reserved room no read can fill: 12.8 MiB per endpoint at
//! 6,550-byte packets (32 MiB at 16,375), which the allocator hands back zeroed and resident
//! once it has been freed. Capping the segments at what 64 KiB holds keeps the batch at 2 to 4
//! MiB for any packet size (2.5 MiB at the default 16,375, 4 MiB at 65,500).

use std::{
    fmt,
    io::{self, IoSliceMut},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use quinn::{
    AsyncUdpSocket, UdpPoller,
    udp::{RecvMeta, Transmit},
};

/// The most bytes the kernel coalesces into one read of a UDP socket with GRO on.
const GRO_MAX_BYTES: usize = 64 * 1024;

/// An [`AsyncUdpSocket`] that reports no more receive segments than fit in [`GRO_MAX_BYTES`]
/// at the endpoint's largest UDP payload; everything else is the wrapped socket's.
pub(crate) struct GroCapped {
    inner: Arc<dyn AsyncUdpSocket>,
    max_receive_segments: usize,
}

impl GroCapped {
    /// Wraps `inner`, whose packets are at most `max_udp_payload_size` bytes.
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, max_udp_payload_size: u16) -> Self {
        let fit = GRO_MAX_BYTES.div_ceil(usize::from(max_udp_payload_size).max(1));
        let max_receive_segments = inner.max_receive_segments().min(fit).max(1);
        GroCapped {
            inner,
            max_receive_segments,
        }
    }
}

impl fmt::Debug for GroCapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroCapped")
            .field("inner", &self.inner)
            .field("max_receive_segments", &self.max_receive_segments)
            .finish()
    }
}

impl AsyncUdpSocket for GroCapped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.max_receive_segments
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quinn::Runtime;

    #[tokio::test]
    async fn the_receive_batch_holds_64_kib_per_read_whatever_the_packet_size() {
        for size in [1200u16, 1452, 6550, 16_375, 65_500] {
            let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let inner = quinn::TokioRuntime.wrap_udp_socket(std).unwrap();
            let uncapped = inner.max_receive_segments();
            let capped = GroCapped::new(inner, size);
            let segments = capped.max_receive_segments();
            assert!(segments <= uncapped);
            if uncapped > 1 {
                // Room for a whole 64 KiB read, and not a packet more.
                assert!(segments * usize::from(size) >= GRO_MAX_BYTES);
                assert!((segments - 1) * usize::from(size) < GRO_MAX_BYTES);
            }
        }
    }
}
