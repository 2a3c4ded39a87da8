//! Streaming frame decoder: bytes in any chunking, frames out.

use bytes::{Bytes, BytesMut};

use crate::wire::frame::{Frame, FrameHeader, HEADER_LEN};
use crate::wire::{DecodeError, Limits};

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
    /// most what was pushed and not yet returned as frames, and refuses
    /// (through `next_frame`) any frame larger than the limits.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(bytes);
        }
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
                    // The lengths are validated: reserving the rest of the frame is bounded.
                    self.buf.reserve(h.frame_len().saturating_sub(self.buf.len()));
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

    /// The limits this decoder enforces.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
