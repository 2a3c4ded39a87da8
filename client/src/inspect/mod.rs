//! `confab inspect`: decode captured frames and print each one as a JSON line.
//!
//! The input is hex text (`--hex`, or standard input) or a file of raw bytes
//! (`--file`). It may hold one frame or several back to back: they are cut
//! with [`FrameDecoder`](confab_proto::wire::FrameDecoder) and each frame's data is decoded with
//! [`Message::decode`](confab_proto::wire::Message::decode), exactly as a peer would.
//!
//! Each frame becomes one compact JSON object whose keys keep a fixed order:
//! `version`, `type`, `len_auth`, `len_data`, `auth` (the auth part as a
//! string when it is printable ASCII, else `null`), `auth_hex`; then for
//! requests, responses and events `opcode`, `opcode_name`, `request_id`,
//! `timestamp_ms` (and `status`, `code` for responses); and last `body`, every
//! body field in wire order. Blobs are hex strings; history entries are
//! objects `{from, seq, sent_ms, sealed}`.
//!
//! ```
//! use confab_client::inspect::{inspect_bytes, parse_hex};
//! use confab_client::proto::wire::Limits;
//!
//! let bytes = parse_hex("0x0104 00000000 0000000000000008 000000000000002a").unwrap();
//! let inspection = inspect_bytes(&bytes, Limits::default());
//! assert!(inspection.error.is_none());
//! assert_eq!(
//!     inspection.frames[0].to_json(),
//!     r#"{"version":1,"type":"ping","len_auth":0,"len_data":8,"auth":"","auth_hex":"","body":{"nonce":42}}"#,
//! );
//! ```
//!
//! Decoding stops at the first bad frame: the frames before it are kept and
//! the error says what went wrong and at which byte, counted from the start of
//! the whole input.//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | the arguments, [`run`], [`InspectError`] |
//! | `hex_text.rs` | [`parse_hex`] and [`HexError`] |
//! | `frames.rs` | [`inspect_bytes`]: cutting and decoding the input |
//! | `json.rs` | [`InspectedFrame::to_json`]: one ordered JSON object per frame |

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use confab_proto::wire::{DecodeError, HEADER_LEN, Limits};

mod frames;
mod hex_text;
mod json;

pub use frames::{InspectedFrame, Inspection, inspect_bytes};
pub use hex_text::{HexError, parse_hex};

/// Largest value accepted for `--max-data` and `--max-auth` (1 GiB).
///
/// The decoder reserves a whole frame as soon as its header is validated, so
/// the limits are what bound memory; inspecting a frame bigger than this from
/// a capture is not a use case.
pub const MAX_LIMIT: u32 = 1 << 30;

/// Arguments of `confab inspect`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct InspectArgs {
    /// Frames as hex text (whitespace ignored, optional 0x prefix).
    #[arg(long, value_name = "HEX", conflicts_with = "file")]
    pub hex: Option<String>,

    /// A file holding raw frame bytes. With neither --hex nor --file, hex
    /// text is read from standard input.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Largest accepted len_data, in bytes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = Limits::DEFAULT.max_data,
        value_parser = clap::value_parser!(u64).range(0..=u64::from(MAX_LIMIT)),
    )]
    pub max_data: u64,

    /// Largest accepted len_auth, in bytes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = Limits::DEFAULT.max_auth,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_LIMIT)),
    )]
    pub max_auth: u32,
}

impl InspectArgs {
    /// The decoding limits: the defaults with `--max-data` and `--max-auth` applied.
    #[must_use]
    pub fn limits(&self) -> Limits {
        Limits { max_data: self.max_data, max_auth: self.max_auth, ..Limits::DEFAULT }
    }
}

/// Runs `confab inspect`: reads the input, prints one JSON line per frame to
/// `out`, and at most one `error: ...` line to `err`.
///
/// Returns the process exit status: 0 when every byte of the input decoded
/// into frames, 1 otherwise.
pub fn run(args: &InspectArgs, stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = read_input(args, stdin).and_then(|input| {
        let inspection = inspect_bytes(&input, args.limits());
        for frame in &inspection.frames {
            if let Err(e) = writeln!(out, "{}", frame.to_json()) {
                return Err(InspectError::Write(e.kind()));
            }
        }
        match inspection.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    // Frames first, then the error, even when both streams are one terminal.
    let flushed = out.flush();
    match result.and(flushed.map_err(|e| InspectError::Write(e.kind()))) {
        Ok(()) => 0,
        // The reader went away (`confab inspect ... | head -1`): nothing to say.
        Err(InspectError::Write(io::ErrorKind::BrokenPipe)) => 1,
        Err(e) => {
            // Nowhere left to report a failure to write to stderr.
            let _ = writeln!(err, "error: {e}");
            1
        }
    }
}

fn read_input(args: &InspectArgs, stdin: &mut dyn Read) -> Result<Vec<u8>, InspectError> {
    if let Some(text) = &args.hex {
        return parse_hex(text).map_err(InspectError::InvalidHex);
    }
    if let Some(path) = &args.file {
        return std::fs::read(path)
            .map_err(|e| InspectError::Read { source: path.display().to_string(), reason: e.to_string() });
    }
    let mut text = Vec::new();
    stdin
        .read_to_end(&mut text)
        .map_err(|e| InspectError::Read { source: "standard input".to_owned(), reason: e.to_string() })?;
    parse_hex(&text).map_err(InspectError::InvalidHex)
}

/// Why `confab inspect` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InspectError {
    /// The hex text is malformed.
    InvalidHex(HexError),
    /// The input could not be read.
    Read {
        /// What was being read: a path or `standard input`.
        source: String,
        /// The I/O error.
        reason: String,
    },
    /// Writing the output failed.
    Write(io::ErrorKind),
    /// The input holds no bytes.
    Empty,
    /// A frame failed to decode (its header or its data).
    Decode {
        /// The codec's error; its offset counts from the frame's first byte.
        error: DecodeError,
        /// 1-based index of the frame in the input.
        frame: usize,
        /// Byte offset of the frame's first byte in the input.
        frame_start: usize,
    },
    /// The input ends in the middle of a frame.
    Incomplete {
        /// 1-based index of the unfinished frame.
        frame: usize,
        /// Byte offset of its first byte in the input.
        frame_start: usize,
        /// Length of the whole input: where the missing bytes would start.
        input_len: usize,
        /// How many more bytes the frame needs ([`FrameDecoder::needed`](confab_proto::wire::FrameDecoder::needed)).
        needed: usize,
    },
}

impl InspectError {
    /// The byte offset, from the start of the whole input, where the problem
    /// was found, if the error is about the input's content.
    #[must_use]
    pub fn offset(&self) -> Option<usize> {
        match self {
            InspectError::InvalidHex(HexError::InvalidChar { position, .. }) => Some(*position),
            InspectError::Decode { error, frame_start, .. } => Some(frame_start + error.offset()),
            InspectError::Incomplete { input_len, .. } => Some(*input_len),
            _ => None,
        }
    }

    /// A short stable name for the error kind: the codec's
    /// [`DecodeError::kind`] for decode errors, else `invalid_hex`, `read`,
    /// `write`, `empty` or `incomplete`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            InspectError::InvalidHex(_) => "invalid_hex",
            InspectError::Read { .. } => "read",
            InspectError::Write(_) => "write",
            InspectError::Empty => "empty",
            InspectError::Decode { error, .. } => error.kind(),
            InspectError::Incomplete { .. } => "incomplete",
        }
    }
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::InvalidHex(e) => e.fmt(f),
            InspectError::Read { source, reason } => write!(f, "cannot read {source}: {reason}"),
            InspectError::Write(kind) => write!(f, "cannot write the output: {kind}"),
            InspectError::Empty => write!(f, "empty input: there is no frame to inspect"),
            InspectError::Decode { error, frame, frame_start } => write!(
                f,
                "{} [{}; frame {frame}, which starts at byte {frame_start}]",
                error.rebased(*frame_start),
                error.kind()
            ),
            InspectError::Incomplete { frame, frame_start, input_len, needed } => {
                let have = input_len - frame_start;
                if have < HEADER_LEN {
                    write!(
                        f,
                        "truncated header at byte {input_len}: the input ends after {have} of the \
                         {HEADER_LEN} header bytes of frame {frame}, which starts at byte \
                         {frame_start}; {needed} more byte(s) needed [incomplete]"
                    )
                } else {
                    write!(
                        f,
                        "truncated frame at byte {input_len}: frame {frame}, which starts at byte \
                         {frame_start}, is {} bytes long but the input ends after {have}; \
                         {needed} more byte(s) needed [incomplete]",
                        have + needed
                    )
                }
            }
        }
    }
}

impl std::error::Error for InspectError {}

#[cfg(test)]
mod tests;
