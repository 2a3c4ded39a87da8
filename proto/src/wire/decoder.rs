//! Streaming frame decoder: bytes in any chunking, frames out.

use bytes::{Bytes, BytesMut};

use crate::wire::frame::{Frame, FrameHeader, HEADER_LEN};
use crate::wire::{DecodeError, Limits};

/// An emptied buffer holding more than this is released, so that a
/// connection that once sent a large frame does not keep its allocation.
const IDLE_CAPACITY: usize = 16 << 10;

/// Splits a byte stream into [`Frame`]s.
///
/// Feed it whatever the transport read with [`push`](Self::push), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. Any chunking
/// gives the same frames, one byte at a time included. The header is checked
/// field by field as bytes arrive, so a wrong version or a length above the
/// [`Limits`] is reported before the payload is buffered or allocated.
///
/// Frames are cut out of the internal buffer without copying: their `auth`
/// and `data` are [`Bytes`] slices of it. After a fatal error the decoder
/// keeps returning that error: the stream has lost its framing.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limits: Limits,
    header: Option<FrameHeader>,
    error: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { buf: BytesMut::new(), limits, header: None, error: None }
    }

    /// Appends received bytes.
    ///
    /// The caller bounds memory by the size of its reads: the decoder holds at
    /// most what was pushed and not yet returned as frames (its allocation
    /// grows with what arrives, at most about twice it, never with a length a
    /// header declares), and refuses (through `next_frame`) any frame larger
    /// than the limits.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let want = self.buf.len() + bytes.len();
        if let Some(h) = self.header
            && want > self.buf.capacity()
        {
            // Double what is held, as a vector would, but never past the end
            // of the frame being received (unless these bytes go past it).
            // (`BytesMut::reserve` may round up to twice its capacity: allocate exactly.)
            let target = (2 * self.buf.len()).min(h.frame_len()).max(want);
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&self.buf);
            self.buf = grown;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed,
    /// or the error that broke the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        let header = match self.header {
            Some(h) => h,
            None => match FrameHeader::parse(&self.buf, &self.limits) {
                Ok(Some(h)) => {
                    // Nothing is reserved for the declared length: the buffer
                    // grows with the bytes that arrive, so a header that
                    // promises a large frame costs only what was sent.
                    self.header = Some(h);
                    h
                }
                Ok(None) => return Ok(None),
                Err(err) => {
                    self.error = Some(err.clone());
                    self.buf = BytesMut::new();
                    return Err(err);
                }
            },
        };
        let len = header.frame_len();
        if self.buf.len() < len {
            return Ok(None);
        }
        self.header = None;
        let frame: Bytes = self.buf.split_to(len).freeze();
        if self.buf.is_empty() && self.buf.capacity() > IDLE_CAPACITY {
            // The rest of a large allocation would stay alive with it.
            self.buf = BytesMut::new();
        }
        let auth_end = HEADER_LEN + header.len_auth as usize;
        Ok(Some(Frame {
            frame_type: header.frame_type,
            auth: frame.slice(HEADER_LEN..auth_end),
            data: frame.slice(auth_end..len),
        }))
    }

    /// How many more bytes the next frame needs before it can be returned
    /// (the rest of the header while it is incomplete, else the rest of the
    /// frame). Zero when a frame is ready.
    #[must_use]
    pub fn needed(&self) -> usize {
        let target = match self.header {
            Some(h) => h.frame_len(),
            None => match FrameHeader::parse(&self.buf, &self.limits) {
                Ok(Some(h)) => h.frame_len(),
                Ok(None) => HEADER_LEN,
                Err(_) => return 0,
            },
        };
        target.saturating_sub(self.buf.len())
    }

    /// Bytes buffered and not yet returned as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the decoder's buffer has room for (allocated): what a
    /// connection's decoder costs in memory.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The limits this decoder enforces.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header (type 2, request) declaring `len_data` bytes of data.
    fn header(len_data: u64) -> Vec<u8> {
        let mut h = vec![1, 2, 0, 0, 0, 0];
        h.extend_from_slice(&len_data.to_be_bytes());
        h
    }

    #[test]
    fn a_header_declaring_a_mebibyte_allocates_only_what_arrived() {
        let mut d = FrameDecoder::new(Limits::DEFAULT);
        d.push(&header(1 << 20));
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.capacity() < 4096, "a 14-byte header reserved {} bytes", d.capacity());
        // Growth follows what is received (at most twice it, as a vector grows), never the declared length.
        let mut pushed = 14;
        for step in [1_000usize, 10_000, 100_000] {
            d.push(&vec![0u8; step]);
            pushed += step;
            assert_eq!(d.next_frame(), Ok(None));
            assert!(d.capacity() <= 2 * pushed + 64, "{pushed} bytes pushed, capacity {}", d.capacity());
        }
        // The frame completes as declared, in an allocation no larger than the frame.
        for piece in vec![0u8; (1 << 20) + 14 - pushed].chunks(16 << 10) {
            d.push(piece);
        }
        assert!(d.capacity() <= (1 << 20) + 14, "capacity {} for a frame of 1 MiB", d.capacity());
        let frame = d.next_frame().unwrap().expect("the frame is complete");
        assert_eq!(frame.data.len(), 1 << 20);
    }

    #[test]
    fn an_emptied_buffer_gives_back_a_large_allocation() {
        let mut d = FrameDecoder::new(Limits::DEFAULT);
        let mut frame = header(512 << 10);
        frame.resize(frame.len() + (512 << 10), 7);
        // In pieces, so the buffer grows past the frame and would keep the rest.
        for piece in frame.chunks(4096) {
            d.push(piece);
        }
        let got = d.next_frame().unwrap().expect("a whole frame");
        drop(got);
        assert_eq!(d.buffered(), 0);
        assert!(d.capacity() <= IDLE_CAPACITY, "an idle decoder keeps {} bytes", d.capacity());
        // The next small frame still decodes.
        let mut small = header(3);
        small.extend_from_slice(b"abc");
        d.push(&small);
        assert_eq!(&d.next_frame().unwrap().unwrap().data[..], b"abc");
    }
}
