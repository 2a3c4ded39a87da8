//! proptest strategies for every field kind and message, within the default limits.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::wire::{Opcode, Status};

pub(crate) fn name() -> BoxedStrategy<String> {
    // At most 16 chars of at most 4 bytes: within the 64-byte default.
    "\\PC{0,16}".boxed()
}
pub(crate) fn text() -> BoxedStrategy<String> {
    "\\PC{0,64}".boxed()
}
pub(crate) fn long_text() -> BoxedStrategy<String> {
    "\\PC{0,300}".boxed()
}
pub(crate) fn blob() -> BoxedStrategy<Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from).boxed()
}
pub(crate) fn u16() -> BoxedStrategy<u16> {
    any::<u16>().boxed()
}
pub(crate) fn u32() -> BoxedStrategy<u32> {
    any::<u32>().boxed()
}
pub(crate) fn u64() -> BoxedStrategy<u64> {
    any::<u64>().boxed()
}
pub(crate) fn names() -> BoxedStrategy<Vec<String>> {
    proptest::collection::vec(name(), 0..6).boxed()
}
pub(crate) fn entries() -> BoxedStrategy<Vec<HistoryEntry>> {
    proptest::collection::vec(HistoryEntry::strategy(), 0..4).boxed()
}

fn status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

fn request_opcode() -> impl Strategy<Value = Opcode> {
    proptest::sample::select(Opcode::ALL.iter().copied().filter(|o| o.is_request()).collect::<Vec<_>>())
}

fn response_body(kind: ResponseKind) -> BoxedStrategy<ResponseBody> {
    match kind {
        ResponseKind::Empty => Just(ResponseBody::Empty).boxed(),
        ResponseKind::Error => ErrorBody::strategy().prop_map(ResponseBody::Error).boxed(),
        ResponseKind::Tokens => Tokens::strategy().prop_map(ResponseBody::Tokens).boxed(),
        ResponseKind::RoomJoined => RoomJoined::strategy().prop_map(ResponseBody::RoomJoined).boxed(),
        ResponseKind::History => History::strategy().prop_map(ResponseBody::History).boxed(),
        ResponseKind::Sent => Sent::strategy().prop_map(ResponseBody::Sent).boxed(),
        ResponseKind::PeerKeys => PeerKeys::strategy().prop_map(ResponseBody::PeerKeys).boxed(),
        ResponseKind::IdentityKey => IdentityKey::strategy().prop_map(ResponseBody::IdentityKey).boxed(),
        ResponseKind::CodeIssued => CodeIssued::strategy().prop_map(ResponseBody::CodeIssued).boxed(),
        ResponseKind::Jwt => Jwt::strategy().prop_map(ResponseBody::Jwt).boxed(),
        ResponseKind::Jwks => JwksDoc::strategy().prop_map(ResponseBody::Jwks).boxed(),
        ResponseKind::RoomDescriptor => RoomDescribed::strategy().prop_map(ResponseBody::RoomDescriptor).boxed(),
    }
}

/// Any response whose body fits its opcode and status.
pub(crate) fn response() -> BoxedStrategy<Response> {
    (request_opcode(), status(), any::<u32>(), any::<u64>(), 100u16..=999)
        .prop_flat_map(|(opcode, status, request_id, timestamp_ms, code)| {
            response_body(ResponseKind::of(opcode, status)).prop_map(move |body| Response {
                opcode,
                request_id,
                timestamp_ms,
                status,
                code,
                body,
            })
        })
        .boxed()
}

/// Any message of any frame type.
pub(crate) fn message() -> BoxedStrategy<Message> {
    prop_oneof![
        (any::<u32>(), any::<u64>(), RequestBody::strategy()).prop_map(|(request_id, timestamp_ms, body)| {
            Message::Request(Request { request_id, timestamp_ms, body })
        }),
        response().prop_map(Message::Response),
        (any::<u32>(), any::<u64>(), EventBody::strategy())
            .prop_map(|(request_id, timestamp_ms, body)| Message::Event(Event { request_id, timestamp_ms, body })),
        Ping::strategy().prop_map(Message::Ping),
        Pong::strategy().prop_map(Message::Pong),
        Close::strategy().prop_map(Message::Close),
    ]
    .boxed()
}

/// Any auth part within the default limit.
pub(crate) fn auth() -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64).boxed()
}
