//! Hex text to bytes, for `--hex` and standard input.

use std::fmt;

/// Why hex text could not be turned into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HexError {
    /// A byte that is neither a hex digit nor whitespace.
    InvalidChar {
        /// The offending byte of the text.
        byte: u8,
        /// Its byte offset in the text.
        position: usize,
    },
    /// The digits do not pair up into bytes.
    OddDigits {
        /// How many hex digits the text holds.
        digits: usize,
    },
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HexError::InvalidChar { byte, position } if byte.is_ascii_graphic() => {
                write!(f, "invalid hex: unexpected character '{}' at position {position}", char::from(byte))
            }
            HexError::InvalidChar { byte, position } => {
                write!(f, "invalid hex: unexpected byte 0x{byte:02x} at position {position}")
            }
            HexError::OddDigits { digits } => {
                write!(f, "invalid hex: odd number of hex digits ({digits}), the last byte is incomplete")
            }
        }
    }
}

impl std::error::Error for HexError {}

/// Decodes hex text: ASCII whitespace anywhere is ignored, and the text may
/// start with `0x` or `0X`. Digits may be upper or lower case.
pub fn parse_hex(text: impl AsRef<[u8]>) -> Result<Vec<u8>, HexError> {
    let text = text.as_ref();
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let body_start = match text.get(start..start + 2) {
        Some(b"0x" | b"0X") => start + 2,
        _ => start,
    };
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0;
    for (position, &byte) in text.iter().enumerate().skip(body_start) {
        if byte.is_ascii_whitespace() {
            continue;
        }
        let nibble = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return Err(HexError::InvalidChar { byte, position }),
        };
        digits += 1;
        match high.take() {
            Some(h) => out.push(h << 4 | nibble),
            None => high = Some(nibble),
        }
    }
    if high.is_some() {
        return Err(HexError::OddDigits { digits });
    }
    Ok(out)
}
