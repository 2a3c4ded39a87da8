//! `confab inspect`: decode captured frames and print each one as a JSON line.
//!
//! The input is hex text (`--hex`, or standard input) or a file of raw bytes
//! (`--file`). It may hold one frame or several back to back: they are cut
//! with [`FrameDecoder`] and each frame's data is decoded with
//! [`Message::decode`], exactly as a peer would.
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
//! use confab_client::proto::Limits;
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
//! the whole input.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use confab_proto::{DecodeError, FieldValue, Frame, FrameDecoder, HEADER_LEN, Limits, Message};
use serde::{Serialize, Serializer};

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
        /// How many more bytes the frame needs ([`FrameDecoder::needed`]).
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

/// One decoded frame of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectedFrame {
    /// Byte offset of the frame's first byte in the input.
    pub offset: usize,
    /// The version byte.
    pub version: u8,
    /// The frame as cut by the decoder.
    pub frame: Frame,
    /// Its decoded data part.
    pub message: Message,
}

/// The outcome of decoding an input: the good frames, then the error that
/// stopped decoding, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Every frame decoded before the error (all of them when there is none).
    pub frames: Vec<InspectedFrame>,
    /// Why decoding stopped before the end of the input.
    pub error: Option<InspectError>,
}

/// Decodes `input` as a stream of frames under `limits`.
///
/// Stops at the first frame that fails to decode, and reports an input that
/// ends inside a frame (or holds no bytes at all) as an error too.
#[must_use]
pub fn inspect_bytes(input: &[u8], limits: Limits) -> Inspection {
    let mut frames = Vec::new();
    if input.is_empty() {
        return Inspection { frames, error: Some(InspectError::Empty) };
    }
    let mut decoder = FrameDecoder::new(limits);
    decoder.push(input);
    let mut frame_start = 0;
    let error = loop {
        let index = frames.len() + 1;
        let decode_error = |error| InspectError::Decode { error, frame: index, frame_start };
        match decoder.next_frame() {
            Ok(Some(frame)) => match Message::decode(&frame, decoder.limits()) {
                Ok(message) => {
                    let len = HEADER_LEN + frame.auth.len() + frame.data.len();
                    frames.push(InspectedFrame { offset: frame_start, version: input[frame_start], frame, message });
                    frame_start += len;
                }
                Err(e) => break Some(decode_error(e)),
            },
            Ok(None) if decoder.buffered() == 0 => break None,
            Ok(None) => {
                break Some(InspectError::Incomplete {
                    frame: index,
                    frame_start,
                    input_len: input.len(),
                    needed: decoder.needed(),
                });
            }
            Err(e) => break Some(decode_error(e)),
        }
    };
    Inspection { frames, error }
}

impl InspectedFrame {
    /// The frame as one compact JSON object (no trailing newline), keys in
    /// the order described in the [module docs](self).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.json()).expect("an ordered JSON tree always serialises")
    }

    fn json(&self) -> Json {
        let auth = &self.frame.auth;
        let printable = auth.iter().all(|b| (0x20..=0x7e).contains(b));
        let mut obj = vec![
            ("version", Json::Int(u64::from(self.version))),
            ("type", Json::str(self.frame.frame_type.name())),
            ("len_auth", Json::Int(auth.len() as u64)),
            ("len_data", Json::Int(self.frame.data.len() as u64)),
            ("auth", if printable { Json::Str(String::from_utf8_lossy(auth).into_owned()) } else { Json::Null }),
            ("auth_hex", Json::Str(hex::encode(auth))),
        ];
        let opcode = self.message.opcode();
        let mut head = |request_id: u32, timestamp_ms: u64| {
            if let Some(opcode) = opcode {
                obj.push(("opcode", Json::Int(u64::from(opcode.as_u32()))));
                obj.push(("opcode_name", Json::str(opcode.name())));
            }
            obj.push(("request_id", Json::Int(u64::from(request_id))));
            obj.push(("timestamp_ms", Json::Int(timestamp_ms)));
        };
        let body = match &self.message {
            Message::Request(r) => {
                head(r.request_id, r.timestamp_ms);
                r.body.fields()
            }
            Message::Response(r) => {
                head(r.request_id, r.timestamp_ms);
                obj.push(("status", Json::str(r.status.name())));
                obj.push(("code", Json::Int(u64::from(r.code))));
                r.body.fields()
            }
            Message::Event(e) => {
                head(e.request_id, e.timestamp_ms);
                e.body.fields()
            }
            Message::Ping(p) => p.fields(),
            Message::Pong(p) => p.fields(),
            Message::Close(c) => c.fields(),
        };
        obj.push(("body", fields_json(body)));
        Json::Obj(obj)
    }
}

fn fields_json(fields: Vec<(&'static str, FieldValue<'_>)>) -> Json {
    Json::Obj(fields.into_iter().map(|(name, value)| (name, field_json(value))).collect())
}

fn field_json(value: FieldValue<'_>) -> Json {
    match value {
        FieldValue::Int(n) => Json::Int(n),
        FieldValue::Str(s) => Json::str(s),
        FieldValue::Bytes(b) => Json::Str(hex::encode(b)),
        FieldValue::Names(names) => Json::Arr(names.iter().map(|n| Json::str(n)).collect()),
        FieldValue::Entries(entries) => Json::Arr(entries.iter().map(|e| fields_json(e.fields())).collect()),
    }
}

/// A JSON value whose objects keep their keys in insertion order (the
/// workspace's `serde_json::Map` sorts them).
#[derive(Debug)]
enum Json {
    Null,
    Int(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Int(n) => serializer.serialize_u64(*n),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Arr(items) => serializer.collect_seq(items),
            Json::Obj(entries) => serializer.collect_map(entries.iter().map(|(k, v)| (k, v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_proto::examples;

    fn args() -> InspectArgs {
        InspectArgs { hex: None, file: None, max_data: Limits::DEFAULT.max_data, max_auth: Limits::DEFAULT.max_auth }
    }

    /// Runs with `input` on stdin; returns (status, stdout, stderr).
    fn run_stdin(input: &str) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run(&args(), &mut input.as_bytes(), &mut out, &mut err);
        (status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn hex_accepts_whitespace_prefix_and_case() {
        assert_eq!(parse_hex(" 0xDe ad\n\tBE ef \r\n"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(parse_hex("0X01"), Ok(vec![1]));
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert_eq!(parse_hex("  0x  "), Ok(vec![]));
    }

    #[test]
    fn hex_errors_say_where() {
        assert_eq!(parse_hex("01 0g"), Err(HexError::InvalidChar { byte: b'g', position: 4 }));
        // `0x` is only a prefix at the start.
        assert_eq!(parse_hex("01 0x02"), Err(HexError::InvalidChar { byte: b'x', position: 4 }));
        assert_eq!(parse_hex("012"), Err(HexError::OddDigits { digits: 3 }));
        let e = parse_hex("é").unwrap_err();
        assert_eq!(e.to_string(), "invalid hex: unexpected byte 0xc3 at position 0");
    }

    #[test]
    fn every_example_round_trips_through_json() {
        for example in examples::all() {
            let inspection = inspect_bytes(&example.to_bytes(), Limits::default());
            assert_eq!(inspection.error, None, "{}", example.label);
            assert_eq!(inspection.frames.len(), 1, "{}", example.label);
            let frame = &inspection.frames[0];
            assert_eq!(frame.message, example.message, "{}", example.label);
            let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
            assert_eq!(json["type"], example.message.frame_type().name(), "{}", example.label);
            assert_eq!(json["auth_hex"], hex::encode(&example.auth), "{}", example.label);
        }
    }

    #[test]
    fn keys_keep_wire_order() {
        let example = examples::responses().into_iter().find(|e| e.label == "response_tokens").unwrap();
        let line = inspect_bytes(&example.to_bytes(), Limits::default()).frames[0].to_json();
        let keys = [
            "version",
            "type",
            "len_auth",
            "len_data",
            "auth",
            "auth_hex",
            "opcode",
            "opcode_name",
            "request_id",
            "timestamp_ms",
            "status",
            "code",
            "body",
            "access_token",
            "refresh_token",
            "access_expires_ms",
            "refresh_expires_ms",
        ];
        let mut from = 0;
        for key in keys {
            let at = line[from..].find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {line}"));
            from += at + 1;
        }
    }

    #[test]
    fn unprintable_auth_is_null() {
        let ping = Message::Ping(confab_proto::Ping { nonce: 1 });
        let line = inspect_bytes(&ping.to_bytes(b"\x00tok"), Limits::default()).frames[0].to_json();
        assert!(line.contains(r#""auth":null,"auth_hex":"00746f6b""#), "{line}");
    }

    #[test]
    fn decode_error_offsets_count_from_the_input_start() {
        let mut input = Message::Ping(confab_proto::Ping { nonce: 1 }).to_bytes(b"").to_vec();
        let first = input.len();
        input.extend_from_slice(&[1, 9]);
        let inspection = inspect_bytes(&input, Limits::default());
        assert_eq!(inspection.frames.len(), 1);
        let error = inspection.error.unwrap();
        assert_eq!(error.offset(), Some(first + 1));
        assert_eq!(error.kind(), "unknown_frame_type");
        assert_eq!(
            error.to_string(),
            format!(
                "unknown frame type 9 at byte {} [unknown_frame_type; frame 2, which starts at byte {first}]",
                first + 1
            )
        );
    }

    #[test]
    fn incomplete_input_says_how_much_is_missing() {
        let ping = Message::Ping(confab_proto::Ping { nonce: 1 }).to_bytes(b"");
        let inspection = inspect_bytes(&ping[..ping.len() - 3], Limits::default());
        assert_eq!(
            inspection.error,
            Some(InspectError::Incomplete { frame: 1, frame_start: 0, input_len: ping.len() - 3, needed: 3 })
        );
        let inspection = inspect_bytes(&ping[..5], Limits::default());
        let error = inspection.error.unwrap();
        assert_eq!(error.kind(), "incomplete");
        assert!(error.to_string().contains("9 more byte(s) needed"), "{error}");
    }

    #[test]
    fn run_prints_frames_then_one_error() {
        let ping = hex::encode(Message::Ping(confab_proto::Ping { nonce: 1 }).to_bytes(b""));
        let (status, out, err) = run_stdin(&format!("{ping}\n{ping}\n07"));
        assert_eq!(status, 1);
        assert_eq!(out.lines().count(), 2);
        assert_eq!(err.lines().count(), 1);
        assert!(err.starts_with("error: unknown protocol version 7 at byte 44 "), "{err}");
    }

    #[test]
    fn run_rejects_empty_input() {
        let (status, out, err) = run_stdin(" \n");
        assert_eq!((status, out.as_str()), (1, ""));
        assert_eq!(err, "error: empty input: there is no frame to inspect\n");
    }

    #[test]
    fn limits_flags_apply() {
        let limits = InspectArgs { max_data: 10, max_auth: 3, ..args() }.limits();
        assert_eq!((limits.max_data, limits.max_auth), (10, 3));
        assert_eq!(limits.max_name, Limits::DEFAULT.max_name);
    }
}
