//! The frame layer (seed 000): a fixed 14-byte header and two opaque parts.
//!
//! ```text
//! version u8 | type u8 | len_auth u32 | len_data u64 | auth [len_auth] | data [len_data]
//! ```
//!
//! All integers are big-endian. This module knows nothing about opcodes: it
//! splits a byte stream into [`Frame`]s and writes them back.

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u8, be_u32, be_u64};

use crate::wire::codec::Sink;
use crate::wire::{DecodeError, Limits};

/// The only protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 14;

/// What a frame carries. The numbering is part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FrameType {
    /// A client request: `opcode | request_id | timestamp_ms | body`.
    Request = 1,
    /// The server's answer to a request: adds `status | code` after the timestamp.
    Response = 2,
    /// A server event not asked for by the receiving request (message delivery, ...).
    Event = 3,
    /// Keepalive probe: `nonce u64`.
    Ping = 4,
    /// Keepalive answer echoing the ping's nonce.
    Pong = 5,
    /// The sender is closing the connection: `code u16 | reason`.
    Close = 6,
}

impl FrameType {
    /// Every frame type, in wire order.
    pub const ALL: [FrameType; 6] =
        [FrameType::Request, FrameType::Response, FrameType::Event, FrameType::Ping, FrameType::Pong, FrameType::Close];

    /// Parses the type byte.
    #[must_use]
    pub fn from_u8(byte: u8) -> Option<FrameType> {
        FrameType::ALL.into_iter().find(|t| *t as u8 == byte)
    }

    /// Lower-case name used in docs, logs and `confab inspect`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Request => "request",
            FrameType::Response => "response",
            FrameType::Event => "event",
            FrameType::Ping => "ping",
            FrameType::Pong => "pong",
            FrameType::Close => "close",
        }
    }
}

/// A decoded, validated fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame type.
    pub frame_type: FrameType,
    /// Length of the auth part.
    pub len_auth: u32,
    /// Length of the data part.
    pub len_data: u64,
}

impl FrameHeader {
    /// Parses and validates as much of a header as `input` holds.
    ///
    /// Returns `Ok(None)` when more bytes are needed. Each field is checked as
    /// soon as it is complete, so a bad version is reported after one byte and
    /// a length bomb after the length field, before any allocation.
    pub fn parse(input: &[u8], limits: &Limits) -> Result<Option<FrameHeader>, DecodeError> {
        type E<'a> = nom::error::Error<&'a [u8]>;
        let Ok((_, version)) = be_u8::<_, E<'_>>(input) else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(DecodeError::UnknownVersion { version, offset: 0 });
        }
        let Ok((_, type_byte)) = be_u8::<_, E<'_>>(&input[1..]) else {
            return Ok(None);
        };
        let frame_type =
            FrameType::from_u8(type_byte).ok_or(DecodeError::UnknownFrameType { frame_type: type_byte, offset: 1 })?;
        let Ok((_, len_auth)) = be_u32::<_, E<'_>>(&input[2..]) else {
            return Ok(None);
        };
        if len_auth > limits.max_auth {
            return Err(DecodeError::LimitExceeded {
                what: "len_auth",
                value: u64::from(len_auth),
                max: u64::from(limits.max_auth),
                offset: 2,
            });
        }
        let Ok((_, len_data)) = be_u64::<_, E<'_>>(&input[6..]) else {
            return Ok(None);
        };
        if len_data > limits.max_data {
            return Err(DecodeError::LimitExceeded {
                what: "len_data",
                value: len_data,
                max: limits.max_data,
                offset: 6,
            });
        }
        // Even with huge configured limits, the whole frame must be addressable.
        let fits = (HEADER_LEN as u64)
            .checked_add(u64::from(len_auth))
            .and_then(|n| n.checked_add(len_data))
            .is_some_and(|n| usize::try_from(n).is_ok_and(|n| n <= isize::MAX as usize));
        if !fits {
            return Err(DecodeError::LimitExceeded {
                what: "len_data",
                value: len_data,
                max: (isize::MAX as u64).saturating_sub(HEADER_LEN as u64 + u64::from(len_auth)),
                offset: 6,
            });
        }
        Ok(Some(FrameHeader { frame_type, len_auth, len_data }))
    }

    /// Total frame length (header + auth + data). [`FrameHeader::parse`]
    /// checked that it fits in `usize`, whatever the limits.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len_auth as usize + self.len_data as usize
    }
}

/// One frame: its type and its two opaque parts, sharing the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type.
    pub frame_type: FrameType,
    /// The auth part: the access token on authenticated requests, else empty.
    pub auth: Bytes,
    /// The data part: a message whose layout depends on the frame type.
    pub data: Bytes,
}

impl Frame {
    /// Parses one frame from the front of `input` without copying: the
    /// frame's parts are slices of `input`.
    ///
    /// Returns the frame and the number of bytes it took, or `Ok(None)` when
    /// `input` holds only part of a frame.
    pub fn parse(input: &Bytes, limits: &Limits) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(header) = FrameHeader::parse(input, limits)? else {
            return Ok(None);
        };
        let len = header.frame_len();
        if input.len() < len {
            return Ok(None);
        }
        let auth_end = HEADER_LEN + header.len_auth as usize;
        Ok(Some((
            Frame {
                frame_type: header.frame_type,
                auth: input.slice(HEADER_LEN..auth_end),
                data: input.slice(auth_end..len),
            },
            len,
        )))
    }

    /// Byte offset of the data part within the encoded frame.
    #[must_use]
    pub fn data_offset(&self) -> usize {
        HEADER_LEN + self.auth.len()
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        write_header(out, self.frame_type, self.auth.len(), self.data.len());
        out.put_slice(&self.auth);
        out.put_slice(&self.data);
    }

    /// The encoded frame as a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + self.auth.len() + self.data.len());
        self.encode(&mut out);
        out.freeze()
    }
}

/// Writes a frame header. `len_auth` must fit in a `u32`.
pub(crate) fn write_header<S: Sink>(out: &mut S, frame_type: FrameType, len_auth: usize, len_data: usize) {
    // One copy of the whole header (each `put_*` is a call and a copy of its own).
    let mut header = [0u8; HEADER_LEN];
    header[0] = VERSION;
    header[1] = frame_type as u8;
    header[2..6].copy_from_slice(&u32::try_from(len_auth).expect("auth part longer than u32::MAX").to_be_bytes());
    header[6..].copy_from_slice(&(len_data as u64).to_be_bytes());
    out.put(&header);
}

/// Writes a frame whose data is produced by `write_data` directly into `out`
/// (no intermediate buffer): the `len_data` field is patched afterwards.
pub(crate) fn encode_with<S: Sink>(out: &mut S, frame_type: FrameType, auth: &[u8], write_data: impl FnOnce(&mut S)) {
    let start = out.written();
    write_header(out, frame_type, auth.len(), 0);
    if !auth.is_empty() {
        out.put(auth);
    }
    let data_start = out.written();
    write_data(out);
    let len_data = (out.written() - data_start) as u64;
    out.patch(start + 6, &len_data.to_be_bytes());
}
