//! The wire codec: frames ([`Frame`], [`FrameDecoder`]) and what a frame's
//! data part means, per frame type ([`Message`] and every body), with the
//! [`Limits`] both are checked against, the [`Opcode`]s, the response
//! [`status`] codes and the [`DecodeError`]s. `docs/PROTOCOL.md` is the
//! specification; [`crate::examples`] holds its example frames.
//!
//! The message layer:
//!
//! ```text
//! request  data: opcode u32 | request_id u32 | timestamp_ms u64 | body
//! response data: opcode u32 | request_id u32 | timestamp_ms u64 | status u8 | code u16 | body
//! event    data: opcode u32 | request_id u32 | timestamp_ms u64 | body
//! ping/pong data: nonce u64
//! close    data: code u16 | reason (u16 length + UTF-8)
//! ```

mod body;
mod codec;
mod decode_error;
pub(crate) mod decoder;
pub(crate) mod frame;
mod limits;
mod opcode;
pub mod status;
#[cfg(test)]
pub(crate) mod strategy;
#[cfg(test)]
mod tests;

pub use body::*;

/// The length of a `refresh_keyed` retry key, in bytes.
pub const RETRY_KEY_LEN: usize = 32;
pub use codec::FieldValue;
pub use decode_error::DecodeError;
pub use decoder::FrameDecoder;
pub use frame::{Frame, FrameHeader, FrameType, HEADER_LEN, VERSION};
pub use limits::Limits;
pub use opcode::Opcode;
pub use status::Status;

use bytes::{Bytes, BytesMut};

use codec::{Reader, Sink};
use frame::encode_with;

macro_rules! body_enum {
    ($(#[$meta:meta])* $enum:ident { $( $variant:ident = $opcode:ident ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $enum {
            $( #[doc = concat!("Body of `", stringify!($opcode), "`.")] $variant($variant), )*
        }

        impl $enum {
            /// The opcode this body belongs to.
            #[must_use]
            pub fn opcode(&self) -> Opcode {
                match self { $( $enum::$variant(_) => Opcode::$opcode, )* }
            }

            /// Field names and kinds of `opcode`'s body, in wire order.
            #[must_use]
            pub fn layout(opcode: Opcode) -> Option<&'static [(&'static str, &'static str)]> {
                match opcode { $( Opcode::$opcode => Some($variant::LAYOUT), )* _ => None }
            }

            fn decode(opcode: Opcode, r: &mut Reader<'_>) -> Option<Result<Self, DecodeError>> {
                match opcode {
                    $( Opcode::$opcode => Some($variant::decode(r).map($enum::$variant)), )*
                    _ => None,
                }
            }

            fn encode<S: Sink>(&self, out: &mut S) {
                match self { $( $enum::$variant(b) => b.encode(out), )* }
            }

            /// Every field as `(name, value)`, in wire order.
            #[must_use]
            pub fn fields(&self) -> Vec<(&'static str, FieldValue<'_>)> {
                match self { $( $enum::$variant(b) => b.fields(), )* }
            }

            #[cfg(test)]
            pub(crate) fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                proptest::prop_oneof![ $( $variant::strategy().prop_map($enum::$variant), )* ].boxed()
            }
        }

        $( impl From<$variant> for $enum {
            fn from(b: $variant) -> Self { $enum::$variant(b) }
        } )*
    };
}

body_enum! {
    /// The body of a request frame, one variant per request opcode.
    RequestBody {
        Register = Register,
        Login = Login,
        Passphrase = Passphrase,
        CreateRoom = CreateRoom,
        JoinRoom = JoinRoom,
        SendRoom = SendRoom,
        RequestMp = RequestMp,
        AcceptMp = AcceptMp,
        SendMp = SendMp,
        Refresh = Refresh,
        Logout = Logout,
        LeaveRoom = LeaveRoom,
        RoomHistory = RoomHistory,
        CloseMp = CloseMp,
        FetchKey = FetchKey,
        DeliveryAck = DeliveryAck,
        IssueCode = IssueCode,
        VerifyCode = VerifyCode,
        Introspect = Introspect,
        Jwks = Jwks,
        DeleteRoom = DeleteRoom,
        SetIdentityKey = SetIdentityKey,
        RoomInfo = RoomInfo,
        RefreshKeyed = RefreshKeyed,
    }
}

body_enum! {
    /// The body of an event frame, one variant per event opcode.
    EventBody {
        Connected = Connected,
        UserMessage = UserMessage,
        RoomMessage = RoomMessage,
        MpRequest = MpRequest,
        MpAccepted = MpAccepted,
        MpClosed = MpClosed,
        PeerGone = PeerGone,
        ErrorEvent = Error,
        MpExpired = MpExpired,
    }
}

/// Which body shape a response carries, fixed by its opcode and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// No fields.
    Empty,
    /// [`ErrorBody`]: every response with status `error`.
    Error,
    /// [`Tokens`].
    Tokens,
    /// [`RoomJoined`].
    RoomJoined,
    /// [`History`].
    History,
    /// [`Sent`].
    Sent,
    /// [`PeerKeys`].
    PeerKeys,
    /// [`IdentityKey`].
    IdentityKey,
    /// [`CodeIssued`].
    CodeIssued,
    /// [`Jwt`].
    Jwt,
    /// [`JwksDoc`].
    Jwks,
    /// [`RoomDescribed`].
    RoomDescriptor,
}

impl ResponseKind {
    /// The rule: status `error` carries an [`ErrorBody`]; status `in_progress`
    /// carries nothing; `valid` and `finished` carry the opcode's result.
    #[must_use]
    pub fn of(opcode: Opcode, status: Status) -> ResponseKind {
        match status {
            Status::Error => return ResponseKind::Error,
            Status::InProgress => return ResponseKind::Empty,
            Status::Valid | Status::Finished => {}
        }
        match opcode {
            Opcode::Passphrase | Opcode::Refresh | Opcode::RefreshKeyed => ResponseKind::Tokens,
            Opcode::JoinRoom => ResponseKind::RoomJoined,
            Opcode::RoomHistory => ResponseKind::History,
            Opcode::SendRoom | Opcode::SendMp | Opcode::RequestMp | Opcode::CloseMp => ResponseKind::Sent,
            Opcode::AcceptMp => ResponseKind::PeerKeys,
            Opcode::FetchKey => ResponseKind::IdentityKey,
            Opcode::IssueCode => ResponseKind::CodeIssued,
            Opcode::Introspect => ResponseKind::Jwt,
            Opcode::Jwks => ResponseKind::Jwks,
            Opcode::RoomInfo => ResponseKind::RoomDescriptor,
            _ => ResponseKind::Empty,
        }
    }

    /// Field names and kinds of this body, in wire order.
    #[must_use]
    pub fn layout(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ResponseKind::Empty => &[],
            ResponseKind::Error => ErrorBody::LAYOUT,
            ResponseKind::Tokens => Tokens::LAYOUT,
            ResponseKind::RoomJoined => RoomJoined::LAYOUT,
            ResponseKind::History => History::LAYOUT,
            ResponseKind::Sent => Sent::LAYOUT,
            ResponseKind::PeerKeys => PeerKeys::LAYOUT,
            ResponseKind::IdentityKey => IdentityKey::LAYOUT,
            ResponseKind::CodeIssued => CodeIssued::LAYOUT,
            ResponseKind::Jwt => Jwt::LAYOUT,
            ResponseKind::Jwks => JwksDoc::LAYOUT,
            ResponseKind::RoomDescriptor => RoomDescribed::LAYOUT,
        }
    }
}

/// The body of a response frame. Its shape is given by [`ResponseKind::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(missing_docs)]
pub enum ResponseBody {
    Empty,
    Error(ErrorBody),
    Tokens(Tokens),
    RoomJoined(RoomJoined),
    History(History),
    Sent(Sent),
    PeerKeys(PeerKeys),
    IdentityKey(IdentityKey),
    CodeIssued(CodeIssued),
    Jwt(Jwt),
    Jwks(JwksDoc),
    RoomDescriptor(RoomDescribed),
}

impl ResponseBody {
    /// The shape of this body.
    #[must_use]
    pub fn kind(&self) -> ResponseKind {
        match self {
            ResponseBody::Empty => ResponseKind::Empty,
            ResponseBody::Error(_) => ResponseKind::Error,
            ResponseBody::Tokens(_) => ResponseKind::Tokens,
            ResponseBody::RoomJoined(_) => ResponseKind::RoomJoined,
            ResponseBody::History(_) => ResponseKind::History,
            ResponseBody::Sent(_) => ResponseKind::Sent,
            ResponseBody::PeerKeys(_) => ResponseKind::PeerKeys,
            ResponseBody::IdentityKey(_) => ResponseKind::IdentityKey,
            ResponseBody::CodeIssued(_) => ResponseKind::CodeIssued,
            ResponseBody::Jwt(_) => ResponseKind::Jwt,
            ResponseBody::Jwks(_) => ResponseKind::Jwks,
            ResponseBody::RoomDescriptor(_) => ResponseKind::RoomDescriptor,
        }
    }

    fn decode(kind: ResponseKind, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            ResponseKind::Empty => ResponseBody::Empty,
            ResponseKind::Error => ResponseBody::Error(ErrorBody::decode(r)?),
            ResponseKind::Tokens => ResponseBody::Tokens(Tokens::decode(r)?),
            ResponseKind::RoomJoined => ResponseBody::RoomJoined(RoomJoined::decode(r)?),
            ResponseKind::History => ResponseBody::History(History::decode(r)?),
            ResponseKind::Sent => ResponseBody::Sent(Sent::decode(r)?),
            ResponseKind::PeerKeys => ResponseBody::PeerKeys(PeerKeys::decode(r)?),
            ResponseKind::IdentityKey => ResponseBody::IdentityKey(IdentityKey::decode(r)?),
            ResponseKind::CodeIssued => ResponseBody::CodeIssued(CodeIssued::decode(r)?),
            ResponseKind::Jwt => ResponseBody::Jwt(Jwt::decode(r)?),
            ResponseKind::Jwks => ResponseBody::Jwks(JwksDoc::decode(r)?),
            ResponseKind::RoomDescriptor => ResponseBody::RoomDescriptor(RoomDescribed::decode(r)?),
        })
    }

    fn encode<S: Sink>(&self, out: &mut S) {
        match self {
            ResponseBody::Empty => {}
            ResponseBody::Error(b) => b.encode(out),
            ResponseBody::Tokens(b) => b.encode(out),
            ResponseBody::RoomJoined(b) => b.encode(out),
            ResponseBody::History(b) => b.encode(out),
            ResponseBody::Sent(b) => b.encode(out),
            ResponseBody::PeerKeys(b) => b.encode(out),
            ResponseBody::IdentityKey(b) => b.encode(out),
            ResponseBody::CodeIssued(b) => b.encode(out),
            ResponseBody::Jwt(b) => b.encode(out),
            ResponseBody::Jwks(b) => b.encode(out),
            ResponseBody::RoomDescriptor(b) => b.encode(out),
        }
    }

    /// Every field as `(name, value)`, in wire order.
    #[must_use]
    pub fn fields(&self) -> Vec<(&'static str, FieldValue<'_>)> {
        match self {
            ResponseBody::Empty => Vec::new(),
            ResponseBody::Error(b) => b.fields(),
            ResponseBody::Tokens(b) => b.fields(),
            ResponseBody::RoomJoined(b) => b.fields(),
            ResponseBody::History(b) => b.fields(),
            ResponseBody::Sent(b) => b.fields(),
            ResponseBody::PeerKeys(b) => b.fields(),
            ResponseBody::IdentityKey(b) => b.fields(),
            ResponseBody::CodeIssued(b) => b.fields(),
            ResponseBody::Jwt(b) => b.fields(),
            ResponseBody::Jwks(b) => b.fields(),
            ResponseBody::RoomDescriptor(b) => b.fields(),
        }
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client; echoed by the response; makes retries idempotent.
    pub request_id: u32,
    /// Client wall clock, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Opcode and fields.
    pub body: RequestBody,
}

/// The server's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The opcode of the request answered.
    pub opcode: Opcode,
    /// The request id answered.
    pub request_id: u32,
    /// Server wall clock, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Outcome.
    pub status: Status,
    /// Three-digit code (100-999), see [`status`].
    pub code: u16,
    /// Fields; their shape is [`ResponseKind::of`]`(opcode, status)`.
    pub body: ResponseBody,
}

/// A server event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The request that caused the event, or 0.
    pub request_id: u32,
    /// Server wall clock, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Opcode and fields.
    pub body: EventBody,
}

/// The decoded data part of any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Message {
    Request(Request),
    Response(Response),
    Event(Event),
    Ping(Ping),
    Pong(Pong),
    Close(Close),
}

impl Message {
    /// The frame type that carries this message.
    #[must_use]
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Request(_) => FrameType::Request,
            Message::Response(_) => FrameType::Response,
            Message::Event(_) => FrameType::Event,
            Message::Ping(_) => FrameType::Ping,
            Message::Pong(_) => FrameType::Pong,
            Message::Close(_) => FrameType::Close,
        }
    }

    /// The opcode, for requests, responses and events.
    #[must_use]
    pub fn opcode(&self) -> Option<Opcode> {
        match self {
            Message::Request(r) => Some(r.body.opcode()),
            Message::Response(r) => Some(r.opcode),
            Message::Event(e) => Some(e.body.opcode()),
            _ => None,
        }
    }

    /// Decodes a frame's data part. Offsets in errors count from the frame's first byte.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<Message, DecodeError> {
        let mut r = Reader::new(&frame.data, frame.data_offset(), limits);
        let frame_type = frame.frame_type;
        let msg = match frame_type {
            FrameType::Request => {
                let opcode = read_opcode(&mut r, frame_type, true)?;
                let request_id = r.u32("request_id")?;
                let timestamp_ms = r.u64("timestamp_ms")?;
                let body = RequestBody::decode(opcode, &mut r).expect("request opcode has a body")?;
                Message::Request(Request { request_id, timestamp_ms, body })
            }
            FrameType::Response => {
                let opcode = read_opcode(&mut r, frame_type, true)?;
                let request_id = r.u32("request_id")?;
                let timestamp_ms = r.u64("timestamp_ms")?;
                let at = r.offset();
                let byte = r.u8("status")?;
                let status = Status::from_u8(byte).ok_or(DecodeError::InvalidValue {
                    field: "status",
                    value: u64::from(byte),
                    offset: at,
                })?;
                let at = r.offset();
                let code = r.u16("code")?;
                if !(100..=999).contains(&code) {
                    return Err(DecodeError::InvalidValue { field: "code", value: u64::from(code), offset: at });
                }
                let body = ResponseBody::decode(ResponseKind::of(opcode, status), &mut r)?;
                Message::Response(Response { opcode, request_id, timestamp_ms, status, code, body })
            }
            FrameType::Event => {
                let opcode = read_opcode(&mut r, frame_type, false)?;
                let request_id = r.u32("request_id")?;
                let timestamp_ms = r.u64("timestamp_ms")?;
                let body = EventBody::decode(opcode, &mut r).expect("event opcode has a body")?;
                Message::Event(Event { request_id, timestamp_ms, body })
            }
            FrameType::Ping => Message::Ping(Ping::decode(&mut r)?),
            FrameType::Pong => Message::Pong(Pong::decode(&mut r)?),
            FrameType::Close => Message::Close(Close::decode(&mut r)?),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The opcode and request id of a request frame, when its first eight
    /// data bytes name a known request opcode, even if the rest does not
    /// decode: a server answers such a frame with an error response, and any
    /// other undecodable frame with an `error` event.
    #[must_use]
    pub fn request_header(frame: &Frame) -> Option<(Opcode, u32)> {
        if frame.frame_type != FrameType::Request || frame.data.len() < 8 {
            return None;
        }
        let opcode = Opcode::from_u32(u32::from_be_bytes(frame.data[0..4].try_into().ok()?))?;
        let request_id = u32::from_be_bytes(frame.data[4..8].try_into().ok()?);
        opcode.is_request().then_some((opcode, request_id))
    }

    /// Appends this message as one frame, with `auth` in the auth part, to `out`.
    pub fn encode(&self, auth: &[u8], out: &mut BytesMut) {
        encode_with(out, self.frame_type(), auth, |out| self.encode_data(out));
    }

    /// [`encode`](Self::encode) into a `Vec<u8>`: the same bytes, cheaper to append (the
    /// server's per-session output).
    pub fn encode_to_vec(&self, auth: &[u8], out: &mut Vec<u8>) {
        encode_with(out, self.frame_type(), auth, |out| self.encode_data(out));
    }

    /// This message as one frame in a new buffer.
    #[must_use]
    pub fn to_bytes(&self, auth: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(auth, &mut out);
        out.freeze()
    }

    fn encode_data<S: Sink>(&self, out: &mut S) {
        match self {
            Message::Request(r) => {
                out.put(&fixed_prefix(r.body.opcode().as_u32(), r.request_id, r.timestamp_ms));
                r.body.encode(out);
            }
            Message::Response(r) => {
                debug_assert_eq!(
                    r.body.kind(),
                    ResponseKind::of(r.opcode, r.status),
                    "response body does not fit its opcode and status"
                );
                let mut prefix = [0u8; 19];
                prefix[..16].copy_from_slice(&fixed_prefix(r.opcode.as_u32(), r.request_id, r.timestamp_ms));
                prefix[16] = r.status as u8;
                prefix[17..].copy_from_slice(&r.code.to_be_bytes());
                out.put(&prefix);
                r.body.encode(out);
            }
            Message::Event(e) => {
                out.put(&fixed_prefix(e.body.opcode().as_u32(), e.request_id, e.timestamp_ms));
                e.body.encode(out);
            }
            Message::Ping(p) => p.encode(out),
            Message::Pong(p) => p.encode(out),
            Message::Close(c) => c.encode(out),
        }
    }
}

/// Reads the opcode and checks it belongs in this frame type.
fn read_opcode(r: &mut Reader<'_>, frame_type: FrameType, want_request: bool) -> Result<Opcode, DecodeError> {
    let offset = r.offset();
    let n = r.u32("opcode")?;
    let opcode = Opcode::from_u32(n).ok_or(DecodeError::UnknownOpcode { opcode: n, offset })?;
    if opcode.is_request() != want_request {
        return Err(DecodeError::WrongDirection { opcode: n, frame_type: frame_type.name(), offset });
    }
    Ok(opcode)
}

/// The fields every request, response and event starts with (opcode,
/// request id, timestamp), as one array: written with one copy.
fn fixed_prefix(opcode: u32, request_id: u32, timestamp_ms: u64) -> [u8; 16] {
    let mut prefix = [0u8; 16];
    prefix[..4].copy_from_slice(&opcode.to_be_bytes());
    prefix[4..8].copy_from_slice(&request_id.to_be_bytes());
    prefix[8..].copy_from_slice(&timestamp_ms.to_be_bytes());
    prefix
}
