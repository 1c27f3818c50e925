//! Length-delimited frames on QUIC streams.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. A stream carries any
//! number of frames; a clean end of stream between frames ends the sequence.
//!
//! Both directions enforce a maximum frame size: a sender refuses an oversized message before
//! writing anything, and a receiver refuses an oversized declared length before reading or
//! allocating the body (see [`TransportError::FrameTooLarge`]). Either way the stream is left for
//! the caller to reset or stop; the connection stays usable.

use std::sync::Arc;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use quinn::{ReadExactError, RecvStream, SendStream};

use super::budget::{Held, PeerBudget};
use super::error::TransportError;

/// Length of a frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 4;

/// The frame length of `len` bytes as a header value, if it is within `max` (and `u32`).
pub(super) fn checked_len(len: usize, max: usize) -> Result<u32, TransportError> {
    match u32::try_from(len) {
        Ok(n) if len <= max => Ok(n),
        _ => Err(TransportError::FrameTooLarge {
            len: len as u64,
            max,
        }),
    }
}

/// The length a frame at the start of `bytes` declares, if its header is there and the
/// length is within `max`.
fn frame_len(bytes: &[u8], max: usize) -> Option<usize> {
    let header: [u8; FRAME_HEADER_LEN] = bytes.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(header))
        .ok()
        .filter(|&len| len <= max)
}

/// Takes the first frame of a run ([`FrameReader::ready_run`]) off it: its body, or `None`
/// when the run holds no whole frame.
pub(crate) fn split_frame(run: &mut Bytes) -> Option<Bytes> {
    let len = frame_len(run, usize::MAX)?;
    if run.len().saturating_sub(FRAME_HEADER_LEN) < len {
        return None;
    }
    run.advance(FRAME_HEADER_LEN);
    Some(run.split_to(len))
}

/// Encodes `message` as one frame, preceded by the stream-kind byte `kind` when given, ready for
/// a single write. A message longer than `max` is refused with [`TransportError::FrameTooLarge`].
pub(crate) fn encode_frame(
    kind: Option<u8>,
    message: &impl prost::Message,
    max: usize,
) -> Result<Bytes, TransportError> {
    let len = checked_len(message.encoded_len(), max)?;
    let mut buf = BytesMut::with_capacity(1 + FRAME_HEADER_LEN + len as usize);
    if let Some(kind) = kind {
        buf.put_u8(kind);
    }
    buf.put_u32(len);
    // Cannot fail: the buffer grows as needed.
    message.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// Writes `payload` as one frame. A payload over `max` bytes is refused with
/// [`TransportError::FrameTooLarge`] before anything is written.
///
/// Allocates exactly one buffer (header + payload), which quinn takes without copying.
pub async fn write_frame(
    send: &mut SendStream,
    payload: &[u8],
    max: usize,
) -> Result<(), TransportError> {
    let len = checked_len(payload.len(), max)?;
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + payload.len());
    buf.put_u32(len);
    buf.put_slice(payload);
    send.write_chunk(buf.freeze()).await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes.
///
/// Returns `Ok(None)` when the stream ends cleanly before a frame starts,
/// [`TransportError::FrameTooLarge`] when the declared length exceeds `max` (nothing more is
/// read or allocated), and [`TransportError::Truncated`] when the stream ends mid-frame.
///
/// A frame that arrived in one piece is returned without copying or allocating; otherwise a
/// buffer of the declared length (at most `max`) is reserved once its first bytes arrived:
/// address space, its pages used only as the body arrives.
pub async fn read_frame(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<Bytes>, TransportError> {
    match read_header(recv, max).await? {
        Some(len) => read_body(recv, len).await.map(Some),
        None => Ok(None),
    }
}

/// [`read_frame`], with the frame's body (once its header arrived) due within `timeout`:
/// waiting for a frame to start is not limited, a peer that starts one and stalls is.
pub(crate) async fn read_frame_within(
    recv: &mut RecvStream,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Option<Bytes>, TransportError> {
    let Some(len) = read_header(recv, max).await? else {
        return Ok(None);
    };
    tokio::time::timeout(timeout, read_body(recv, len))
        .await
        .map_err(|_| TransportError::ReadTimeout(timeout))?
        .map(Some)
}

/// Reads a frame header and checks the declared length against `max`. `Ok(None)` when the
/// stream ends cleanly before it.
pub(crate) async fn read_header(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<usize>, TransportError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(got)) => {
            return Err(TransportError::Truncated {
                expected: FRAME_HEADER_LEN,
                got,
            });
        }
        Err(ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let declared = u32::from_be_bytes(header);
    let len = match usize::try_from(declared) {
        Ok(len) if len <= max => len,
        _ => {
            return Err(TransportError::FrameTooLarge {
                len: u64::from(declared),
                max,
            });
        }
    };
    Ok(Some(len))
}

/// Reads a frame body of `len` bytes (checked against the maximum by [`read_header`]).
pub(crate) async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, TransportError> {
    read_body_in(recv, len, None).await
}

/// [`read_body`]; a body of [`LARGE_FRAME`] bytes or more that arrives in pieces is gathered in
/// `spare` (see [`LargeFrames`]).
pub(crate) async fn read_body_in(
    recv: &mut RecvStream,
    len: usize,
    spare: Option<&BufferPool>,
) -> Result<Bytes, TransportError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let truncated = |got| TransportError::Truncated { expected: len, got };

    // Fast path: the whole body is in one received chunk.
    let first = recv
        .read_chunk(len, true)
        .await?
        .ok_or_else(|| truncated(0))?
        .bytes;
    if first.len() >= len {
        return Ok(first);
    }
    // Room for the whole body at once: growing it as bytes arrived copied a 1 MiB body eight
    // times over. What a peer can make this node reserve is bounded as before (a request's
    // `len` is held in the peer's budget before its body is read; a frame is at most the
    // maximum message size), and a large allocation's pages cost memory only once written.
    let spare = spare.filter(|_| len >= LARGE_FRAME);
    let mut body = match spare {
        Some(spare) => spare.take(len),
        None => BytesMut::with_capacity(len),
    };
    body.put_slice(&first);
    while body.len() < len {
        let chunk = recv
            .read_chunk(len - body.len(), true)
            .await?
            .ok_or_else(|| truncated(body.len()))?;
        body.put_slice(&chunk.bytes);
    }
    Ok(match spare {
        Some(spare) => spare.freeze(body),
        None => body.freeze(),
    })
}

/// Frames of this many bytes or more are made in a node's [`LargeFrames`].
pub(crate) const LARGE_FRAME: usize = 64 * 1024;

/// A node's spare buffers for large frames: one pool for the frames it reads, one for those
/// it writes. A frame of [`LARGE_FRAME`] bytes or more is made in a buffer of the pool,
/// reusing an allocation once nothing made from it earlier is still alive, instead of a new
/// allocation each time: glibc maps a fresh allocation that large and trims it back when it is
/// freed, so each 1 MiB frame cost about 256 page faults (tonic reuses its read buffer the same
/// way). Each pool keeps at most one allocation, of at most the largest frame made in it (so at
/// most the maximum message size).
#[derive(Debug)]
pub(crate) struct LargeFrames {
    /// For the bodies of frames read.
    pub(crate) read: BufferPool,
    /// For frames written.
    pub(crate) write: BufferPool,
}

impl Default for LargeFrames {
    fn default() -> Self {
        LargeFrames {
            read: BufferPool::new(1, usize::MAX),
            write: BufferPool::new(1, usize::MAX),
        }
    }
}

/// A writer's batch buffers, recycled: each batch is made in a buffer from the pool, handed to
/// QUIC as [`Bytes`] that give the buffer back when QUIC drops them (once the batch is
/// acknowledged), so a writer that keeps writing reuses a few warm allocations instead of
/// allocating, growing and freeing one per batch. (The freed batches made glibc trim its heap
/// and fault the pages in again: ~5 page faults per kilobyte-sized batch, 12% of a streaming
/// call's CPU on two threads.) The pool keeps at most `keep` buffers of at most `max_capacity`
/// bytes each, and goes away with its last [`BufferPool`] handle: buffers coming back after
/// that are freed.
#[derive(Clone)]
pub(crate) struct BufferPool(Arc<PoolShelf>);

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("kept", &self.0.lock().len())
            .field("keep", &self.0.keep)
            .finish_non_exhaustive()
    }
}

struct PoolShelf {
    free: std::sync::Mutex<Vec<BytesMut>>,
    keep: usize,
    max_capacity: usize,
}

impl BufferPool {
    /// A pool keeping at most `keep` buffers of at most `max_capacity` bytes.
    pub(crate) fn new(keep: usize, max_capacity: usize) -> Self {
        BufferPool(Arc::new(PoolShelf {
            free: std::sync::Mutex::new(Vec::new()),
            keep,
            max_capacity,
        }))
    }

    /// An empty buffer with room for at least `len` bytes: one given back, its allocation
    /// kept, else a new one.
    pub(crate) fn take(&self, len: usize) -> BytesMut {
        let mut buf = self.0.lock().pop().unwrap_or_default();
        buf.reserve(len);
        buf
    }

    /// `buf`'s bytes, shared; the buffer comes back to the pool when the last of them is
    /// dropped.
    pub(crate) fn freeze(&self, buf: BytesMut) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            pool: Arc::downgrade(&self.0),
        })
    }
}

impl PoolShelf {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BytesMut>> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A buffer of a [`BufferPool`] out as [`Bytes`].
struct Lent {
    buf: BytesMut,
    pool: std::sync::Weak<PoolShelf>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if self.buf.capacity() > pool.max_capacity {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut free = pool.lock();
        if free.len() < pool.keep {
            free.push(buf);
        }
    }
}

/// Where a [`FrameReader`] gets its bytes: a QUIC stream, or chunks in memory (the fuzz tests).
pub(crate) trait ChunkSource {
    /// The next chunk of the stream, `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError>;
}

impl ChunkSource for RecvStream {
    async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        Ok(self.read_chunk(usize::MAX, true).await?.map(|c| c.bytes))
    }
}

/// Reads consecutive frames from one stream, taking whatever data has arrived with one read
/// rather than two reads per frame. For streams that carry many small frames (events).
///
/// Behaves as repeated [`read_frame`] calls: `Ok(None)` at a clean end between frames,
/// [`TransportError::FrameTooLarge`] before reading an oversized body,
/// [`TransportError::Truncated`] when the stream ends mid-frame. A frame that arrived within
/// one received chunk is returned without copying.
/// Once a frame's header has arrived, its body is due within `timeout`
/// ([`TransportError::ReadTimeout`]).
pub(crate) struct FrameReader {
    /// Received bytes not yet returned as frames.
    pending: Bytes,
    max: usize,
    timeout: Option<std::time::Duration>,
    /// Where a frame that arrives in pieces takes room for its body, if anywhere.
    budget: Option<PeerBudget>,
    /// Wait for that room (within `timeout`) rather than fail at once.
    wait: bool,
    /// That room, for the last frame returned (released at the next call).
    held: Option<Held>,
}

impl FrameReader {
    /// A reader of frames up to `max` bytes, each body due within `timeout` once its header
    /// arrived (`None`: no deadline, for sources already in memory).
    pub(crate) fn new(max: usize, timeout: Option<std::time::Duration>) -> Self {
        FrameReader {
            pending: Bytes::new(),
            max,
            timeout,
            budget: None,
            wait: false,
            held: None,
        }
    }

    /// Takes room in `budget` for each frame whose body does not arrive with its header, until
    /// the next frame is asked for; a frame that finds no room is [`TransportError::OverBudget`].
    pub(crate) fn with_budget(mut self, budget: PeerBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// [`with_budget`](Self::with_budget), waiting for room (within the timeout) instead of
    /// failing at once: for a stream whose frames each hold their room until they are done
    /// with ([`take_held`](Self::take_held)).
    pub(crate) fn waiting_for_budget(mut self, budget: PeerBudget) -> Self {
        self.budget = Some(budget);
        self.wait = true;
        self
    }

    /// The room the last frame returned took in the budget (when it arrived in pieces), for
    /// the caller to hold as long as it keeps the frame.
    pub(crate) fn take_held(&mut self) -> Option<Held> {
        self.held.take()
    }

    /// The next frame if it has already arrived in full, without reading (`None`: more bytes
    /// are needed, so [`next`](Self::next) must read). Lets a reader take every frame of a
    /// received chunk before waiting again. An oversized declared length is
    /// [`TransportError::FrameTooLarge`], as from [`next`](Self::next).
    pub(crate) fn ready(&mut self) -> Option<Result<Bytes, TransportError>> {
        let header: [u8; FRAME_HEADER_LEN] =
            self.pending.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let declared = u32::from_be_bytes(header);
        let len = match usize::try_from(declared) {
            Ok(len) if len <= self.max => len,
            _ => {
                return Some(Err(TransportError::FrameTooLarge {
                    len: u64::from(declared),
                    max: self.max,
                }));
            }
        };
        if self.pending.len().saturating_sub(FRAME_HEADER_LEN) < len {
            return None;
        }
        self.held = None;
        self.pending.advance(FRAME_HEADER_LEN);
        Some(Ok(self.pending.split_to(len)))
    }

    /// The longest run of frames that have already arrived in full and whose bodies `accept`
    /// (within the maximum size), as one slice of the received bytes, headers included, and
    /// how many frames it holds (at most `most`): a reader hands a run on whole, so whoever
    /// takes its frames apart does so where they are consumed. An empty run when the next
    /// frame is incomplete, too large or not accepted ([`ready`](Self::ready) then says
    /// which).
    pub(crate) fn ready_run(
        &mut self,
        accept: impl Fn(&[u8]) -> bool,
        most: usize,
    ) -> (Bytes, usize) {
        let mut end = 0usize;
        let mut count = 0usize;
        while count < most {
            let Some(rest) = self.pending.get(end..) else {
                break;
            };
            let Some(len) = frame_len(rest, self.max) else {
                break;
            };
            let Some(body) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN.saturating_add(len))
            else {
                break;
            };
            if !accept(body) {
                break;
            }
            end = end.saturating_add(FRAME_HEADER_LEN + len);
            count += 1;
        }
        if count > 0 {
            self.held = None;
        }
        (self.pending.split_to(end), count)
    }

    /// Reads the next frame.
    pub(crate) async fn next(
        &mut self,
        recv: &mut impl ChunkSource,
    ) -> Result<Option<Bytes>, TransportError> {
        self.held = None;
        while self.pending.len() < FRAME_HEADER_LEN {
            let Some(chunk) = recv.chunk().await? else {
                return match self.pending.len() {
                    0 => Ok(None),
                    got => Err(TransportError::Truncated {
                        expected: FRAME_HEADER_LEN,
                        got,
                    }),
                };
            };
            self.pending = if self.pending.is_empty() {
                chunk
            } else {
                // A header split across chunks: join the (under 4) bytes left with the next.
                let mut joined = BytesMut::with_capacity(self.pending.len() + chunk.len());
                joined.put_slice(&self.pending);
                joined.put_slice(&chunk);
                joined.freeze()
            };
        }
        let declared = self.pending.get_u32();
        let len = match usize::try_from(declared) {
            Ok(len) if len <= self.max => len,
            _ => {
                return Err(TransportError::FrameTooLarge {
                    len: u64::from(declared),
                    max: self.max,
                });
            }
        };
        if self.pending.len() >= len {
            return Ok(Some(self.pending.split_to(len)));
        }
        // The body continues in later chunks: gather it in a buffer of its own, which grows as
        // bytes arrive, within the deadline, and counts against the budget.
        if let Some(budget) = &self.budget {
            let held = match (self.wait, self.timeout) {
                (false, _) => budget.try_acquire(len),
                (true, Some(timeout)) => tokio::time::timeout(timeout, budget.acquire(len))
                    .await
                    .ok()
                    .flatten(),
                (true, None) => budget.acquire(len).await,
            };
            self.held = Some(held.ok_or(TransportError::OverBudget(len))?);
        }
        let first = std::mem::take(&mut self.pending);
        let mut body = BytesMut::with_capacity(first.len().saturating_mul(2).min(len));
        body.put_slice(&first);
        let gather = async {
            while body.len() < len {
                let Some(mut chunk) = recv.chunk().await? else {
                    return Err(TransportError::Truncated {
                        expected: len,
                        got: body.len(),
                    });
                };
                let need = len - body.len();
                if chunk.len() > need {
                    self.pending = chunk.split_off(need);
                }
                body.put_slice(&chunk);
            }
            Ok(())
        };
        match self.timeout {
            Some(timeout) => tokio::time::timeout(timeout, gather)
                .await
                .map_err(|_| TransportError::ReadTimeout(timeout))??,
            None => gather.await?,
        }
        Ok(Some(body.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large frame reuses the spare allocation once the previous frame made in it is gone,
    /// and gets a new one while it is still alive.
    #[test]
    fn a_spare_buffer_is_reused_only_when_its_last_frame_is_gone() {
        let spare = LargeFrames::default().write;
        let mut buf = spare.take(1 << 20);
        buf.put_bytes(7, 1 << 20);
        let frame = spare.freeze(buf);
        let first = frame.as_ptr();
        drop(frame);

        let mut buf = spare.take(1 << 20);
        assert_eq!(buf.as_ptr(), first, "the allocation is reused");
        buf.put_bytes(1, 1 << 20);
        let held = spare.freeze(buf);
        assert_eq!(held.as_ptr(), first);
        assert!(held.iter().all(|&b| b == 1));

        let buf = spare.take(1 << 20);
        assert_ne!(
            buf.as_ptr(),
            first,
            "a frame still alive is never written over"
        );
        assert!(buf.capacity() >= 1 << 20);
        assert!(held.iter().all(|&b| b == 1));
    }

    /// A pooled buffer comes back only once every slice of its batch is gone, keeps its
    /// allocation, and the pool never holds more than it keeps or a buffer over its size.
    #[test]
    fn a_pooled_buffer_comes_back_when_its_batch_is_dropped() {
        let pool = BufferPool::new(2, 1024);
        let mut buf = pool.take(0);
        buf.put_bytes(7, 512);
        let first = buf.as_ptr();
        let batch = pool.freeze(buf);
        let slice = batch.slice(100..200);
        drop(batch);
        assert_eq!(pool.0.lock().len(), 0, "a slice still holds the buffer");
        assert!(slice.iter().all(|&b| b == 7));
        drop(slice);

        let reused = pool.take(0);
        assert_eq!(reused.as_ptr(), first, "the allocation is reused");
        assert!(reused.is_empty() && reused.capacity() >= 512);

        let batches: Vec<Bytes> = (0..3)
            .map(|_| {
                let mut buf = pool.take(0);
                buf.put_bytes(1, 64);
                pool.freeze(buf)
            })
            .collect();
        drop(batches);
        assert_eq!(pool.0.lock().len(), 2, "at most `keep` buffers are kept");

        let mut big = BytesMut::with_capacity(4096);
        big.put_bytes(1, 4096);
        drop(pool.freeze(big));
        assert_eq!(pool.0.lock().len(), 2, "a buffer over the size is freed");

        let late = pool.freeze(pool.take(0));
        drop(pool);
        drop(late);
    }
}
