//! Decode errors. Every variant carries the byte offset, counted from the first
//! byte of the frame, at which the problem was found.

/// Why a frame or a message could not be decoded.
///
/// The first three variants ([`UnknownVersion`](Self::UnknownVersion),
/// [`UnknownFrameType`](Self::UnknownFrameType) and a
/// [`LimitExceeded`](Self::LimitExceeded) on `len_auth`/`len_data`) lose the
/// framing: the stream cannot be resynchronised and the connection must be
/// closed (see [`DecodeError::is_fatal`]). The others concern one well-framed
/// frame: the peer gets an error and the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The version byte is not one this implementation speaks.
    #[error("unknown protocol version {version} at byte {offset} (this peer speaks version 1)")]
    UnknownVersion {
        /// The version byte received.
        version: u8,
        /// Byte offset of the version byte.
        offset: usize,
    },
    /// The frame type byte is not a known frame type.
    #[error("unknown frame type {frame_type} at byte {offset}")]
    UnknownFrameType {
        /// The type byte received.
        frame_type: u8,
        /// Byte offset of the type byte.
        offset: usize,
    },
    /// A length or count is above its configured maximum.
    #[error("{what} is {value}, above the limit of {max}, at byte {offset}")]
    LimitExceeded {
        /// Which length: `len_auth`, `len_data`, or a list field's name.
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The configured maximum.
        max: u64,
        /// Byte offset of the length field.
        offset: usize,
    },
    /// The opcode is not in the catalog.
    #[error("unknown opcode {opcode} at byte {offset}")]
    UnknownOpcode {
        /// The opcode received.
        opcode: u32,
        /// Byte offset of the opcode.
        offset: usize,
    },
    /// The opcode exists but not in a frame of this type, or not in this direction.
    #[error("opcode {opcode} is not valid in a {frame_type} frame at byte {offset}")]
    WrongDirection {
        /// The opcode received.
        opcode: u32,
        /// The frame type it arrived in.
        frame_type: &'static str,
        /// Byte offset of the opcode.
        offset: usize,
    },
    /// The data ended inside a field.
    #[error("truncated field `{field}` at byte {offset}: {needed} more byte(s) needed")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the first missing-or-short part: the field itself, or
        /// its content after the length prefix for length-prefixed fields.
        offset: usize,
        /// How many more bytes the field needed.
        needed: usize,
    },
    /// A length-prefixed field declares more bytes than its maximum.
    #[error("field `{field}` is {len} bytes long, above its maximum of {max}, at byte {offset}")]
    OverlongField {
        /// The field being read.
        field: &'static str,
        /// The declared length.
        len: u64,
        /// The field's maximum.
        max: u64,
        /// Byte offset of the length prefix.
        offset: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("field `{field}` is not valid UTF-8 at byte {offset}")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A field holds a value outside its enumeration (for example a status byte).
    #[error("field `{field}` has invalid value {value} at byte {offset}")]
    InvalidValue {
        /// The field being read.
        field: &'static str,
        /// The value received.
        value: u64,
        /// Byte offset of the field.
        offset: usize,
    },
    /// Bytes remain after the last field of the body.
    #[error("{count} trailing byte(s) after the last field at byte {offset}")]
    TrailingBytes {
        /// Byte offset of the first unexpected byte.
        offset: usize,
        /// How many bytes were left.
        count: usize,
    },
}

impl DecodeError {
    /// The byte offset, from the start of the frame, where decoding failed.
    #[must_use]
    pub fn offset(&self) -> usize {
        let mut copy = self.clone();
        *copy.offset_mut()
    }

    /// The same error with its offset moved by `base`: counted from the
    /// start of a stream rather than from the start of its frame.
    #[must_use]
    pub fn rebased(&self, base: usize) -> DecodeError {
        let mut error = self.clone();
        *error.offset_mut() += base;
        error
    }

    fn offset_mut(&mut self) -> &mut usize {
        match self {
            DecodeError::UnknownVersion { offset, .. }
            | DecodeError::UnknownFrameType { offset, .. }
            | DecodeError::LimitExceeded { offset, .. }
            | DecodeError::UnknownOpcode { offset, .. }
            | DecodeError::WrongDirection { offset, .. }
            | DecodeError::Truncated { offset, .. }
            | DecodeError::OverlongField { offset, .. }
            | DecodeError::InvalidUtf8 { offset, .. }
            | DecodeError::InvalidValue { offset, .. }
            | DecodeError::TrailingBytes { offset, .. } => offset,
        }
    }

    /// A short stable name for the error kind (used in logs and by `confab inspect`).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::UnknownVersion { .. } => "unknown_version",
            DecodeError::UnknownFrameType { .. } => "unknown_frame_type",
            DecodeError::LimitExceeded { .. } => "limit_exceeded",
            DecodeError::UnknownOpcode { .. } => "unknown_opcode",
            DecodeError::WrongDirection { .. } => "wrong_direction",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::OverlongField { .. } => "overlong_field",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::InvalidValue { .. } => "invalid_value",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
        }
    }

    /// Whether the error loses the framing, so the connection must be closed.
    ///
    /// Errors in the fixed header (version, type, `len_auth`, `len_data`) are
    /// fatal; errors inside a frame's data are not.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        match self {
            DecodeError::UnknownVersion { .. } | DecodeError::UnknownFrameType { .. } => true,
            DecodeError::LimitExceeded { what, .. } => *what == "len_auth" || *what == "len_data",
            _ => false,
        }
    }

    /// The three-digit protocol code a peer answers this error with
    /// (`docs/PROTOCOL.md`, "Errors").
    #[must_use]
    pub fn code(&self) -> u16 {
        match self {
            DecodeError::UnknownVersion { .. } => crate::wire::status::UNSUPPORTED_VERSION,
            DecodeError::LimitExceeded { .. } | DecodeError::OverlongField { .. } => crate::wire::status::TOO_LARGE,
            _ => crate::wire::status::BAD_REQUEST,
        }
    }
}
