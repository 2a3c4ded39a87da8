//! Typed bodies, one struct per message shape. The field order in each struct
//! is the order on the wire; `docs/PROTOCOL.md` gives the same tables.
//!
//! Field kinds: `name` (u16 length + UTF-8, at most `max_name` bytes),
//! `text` (u16 length + UTF-8, at most `max_text`), `long_text` (u32 length +
//! UTF-8), `blob` (u32 length + opaque bytes), `u16`/`u32`/`u64`
//! (big-endian), `names` (u16 count + names), `entries` (u16 count + history
//! entries).

use bytes::Bytes;

use super::codec::{FieldValue, Reader, Sink, put};
use crate::wire::DecodeError;

macro_rules! field_type {
    (name) => { String };
    (text) => { String };
    (long_text) => { String };
    (blob) => { Bytes };
    (u16) => { u16 };
    (u32) => { u32 };
    (u64) => { u64 };
    (names) => { Vec<String> };
    (entries) => { Vec<HistoryEntry> };
}

macro_rules! bodies {
    ($(
        $(#[$meta:meta])*
        $name:ident { $( $(#[$fmeta:meta])* $field:ident : $kind:ident ),* $(,)? }
    )*) => { $(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: field_type!($kind), )*
        }

        impl $name {
            /// Field names and kinds in wire order.
            pub const LAYOUT: &'static [(&'static str, &'static str)] =
                &[$( (stringify!($field), stringify!($kind)), )*];

            #[allow(unused_variables)]
            pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($name { $( $field: r.$kind(stringify!($field))?, )* })
            }

            #[allow(unused_variables)]
            pub(crate) fn encode<S: Sink>(&self, out: &mut S) {
                $( put::$kind(out, &self.$field); )*
            }

            /// Every field as `(name, value)`, in wire order.
            #[must_use]
            pub fn fields(&self) -> Vec<(&'static str, FieldValue<'_>)> {
                vec![$( (stringify!($field), FieldValue::from(&self.$field)), )*]
            }
        }

        #[cfg(test)]
        impl $name {
            /// Any value of this body within the default limits.
            pub(crate) fn strategy() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::{Just, Strategy};
                (Just(()), $( super::strategy::$kind(), )*)
                    .prop_map(|((), $($field,)*)| $name { $($field,)* })
                    .boxed()
            }
        }
    )* };
}

bodies! {
    // ---- requests ----

    /// `register` (100001): create an account.
    Register {
        /// 3-32 of `a-z 0-9 _ . -` (checked by the server).
        username: name,
        /// The account password.
        password: text,
        /// At least three words (checked by the server).
        passphrase: text,
        /// The user's identity public key (opaque to the codec).
        identity_key: blob,
    }
    /// `login` (100002): step one of login.
    Login {
        /// Account name.
        username: name,
        /// Account password.
        password: text,
    }
    /// `passphrase` (100003): step two of login, on the same connection.
    Passphrase {
        /// The passphrase given at registration.
        passphrase: text,
    }
    /// `create_room` (100004).
    CreateRoom {
        /// Room name.
        room: name,
        /// Join verifier derived on the client from the room password.
        verifier: blob,
        /// The room's public descriptor (random room id, key-derivation
        /// costs), opaque to the server, handed to joiners by `room_info`.
        descriptor: blob,
    }
    /// `join_room` (100005).
    JoinRoom {
        /// Room name.
        room: name,
        /// Join verifier; compared in constant time with the stored one.
        verifier: blob,
    }
    /// `send_room` (100006).
    SendRoom {
        /// Room name.
        room: name,
        /// Sealed message, opaque to the server.
        sealed: blob,
    }
    /// `request_mp` (100007): ask `peer` for a private conversation.
    RequestMp {
        /// The user asked.
        peer: name,
        /// Signed ephemeral key (opaque to the server).
        handshake: blob,
    }
    /// `accept_mp` (100008): accept `peer`'s request.
    AcceptMp {
        /// The user who asked.
        peer: name,
        /// Signed ephemeral key (opaque to the server).
        handshake: blob,
    }
    /// `send_mp` (100009).
    SendMp {
        /// Recipient.
        peer: name,
        /// Sealed message, opaque to the server.
        sealed: blob,
    }
    /// `refresh` (100010): rotate the token pair.
    Refresh {
        /// The current refresh token.
        refresh_token: text,
    }
    /// `logout` (100011): revoke this session's tokens. No fields.
    Logout {}
    /// `leave_room` (100012).
    LeaveRoom {
        /// Room name.
        room: name,
    }
    /// `room_history` (100013).
    RoomHistory {
        /// Room name.
        room: name,
    }
    /// `close_mp` (100014).
    CloseMp {
        /// The conversation's peer.
        peer: name,
    }
    /// `fetch_key` (100015).
    FetchKey {
        /// Whose identity key.
        username: name,
    }
    /// `delivery_ack` (100016): every private message from `peer` up to `seq` is delivered.
    DeliveryAck {
        /// The conversation's peer.
        peer: name,
        /// Highest sequence number received.
        seq: u64,
    }
    /// `issue_code` (100017).
    IssueCode {
        /// The third party the code is for.
        audience: name,
    }
    /// `verify_code` (100018).
    VerifyCode {
        /// The user the code claims to be from.
        username: name,
        /// The verifying third party.
        audience: name,
        /// The code.
        code: text,
    }
    /// `introspect` (100019): phantom-token translation.
    Introspect {
        /// The opaque token to translate.
        token: text,
    }
    /// `jwks` (100020). No fields.
    Jwks {}
    /// `delete_room` (100021).
    DeleteRoom {
        /// Room name.
        room: name,
    }
    /// `set_identity_key` (100022).
    SetIdentityKey {
        /// The identity public key.
        identity_key: blob,
    }
    /// `room_info` (100023): a room's public descriptor, needed to derive its keys.
    RoomInfo {
        /// Room name.
        room: name,
    }
    /// `refresh_keyed` (100024): `refresh` with a retry key, so that the
    /// exchange can be retried from another connection if its answer is lost.
    RefreshKeyed {
        /// The current refresh token.
        refresh_token: text,
        /// [`RETRY_KEY_LEN`](crate::wire::RETRY_KEY_LEN) random bytes, drawn
        /// for this token and stored by the client before the request is
        /// written; the same token presented again with the same key is a retry.
        retry_key: blob,
        /// The client's attempt at this exchange, from 1, one more at every
        /// send (stored before the request is written): a retry carries a
        /// greater number than the attempt that made the exchange.
        attempt: u32,
    }

    // ---- response bodies ----

    /// Body of every response whose status is `error`.
    ErrorBody {
        /// Human-readable reason.
        reason: text,
        /// Milliseconds to wait before retrying (429), else 0.
        retry_after_ms: u64,
    }
    /// Answer to `passphrase` and `refresh`.
    Tokens {
        /// Opaque access token (`cfa_...`), carried in the auth field of later frames.
        access_token: text,
        /// Opaque refresh token (`cfr_...`).
        refresh_token: text,
        /// Access token expiry, Unix milliseconds.
        access_expires_ms: u64,
        /// Refresh token expiry, Unix milliseconds.
        refresh_expires_ms: u64,
    }
    /// Answer to `join_room`.
    RoomJoined {
        /// Current members.
        members: names,
        /// Retained sealed history, oldest first.
        history: entries,
    }
    /// Answer to `room_history`.
    History {
        /// Retained sealed history, oldest first.
        messages: entries,
    }
    /// Answer to `send_room`, `send_mp`, `request_mp` and `close_mp`.
    Sent {
        /// Sequence number given to the message in its conversation.
        seq: u64,
    }
    /// Answer to `accept_mp`: the requester's keys.
    PeerKeys {
        /// The requester.
        peer: name,
        /// Requester's identity public key.
        identity_key: blob,
        /// Requester's signed ephemeral key.
        handshake: blob,
    }
    /// Answer to `fetch_key`.
    IdentityKey {
        /// Key owner.
        username: name,
        /// Identity public key.
        identity_key: blob,
    }
    /// Answer to `issue_code`.
    CodeIssued {
        /// The single-use code.
        code: text,
        /// Expiry, Unix milliseconds.
        expires_ms: u64,
    }
    /// Answer to `introspect`.
    Jwt {
        /// Compact JWS.
        jwt: long_text,
        /// Expiry, Unix milliseconds.
        expires_ms: u64,
    }
    /// Answer to `room_info`.
    RoomDescribed {
        /// The descriptor the room's creator stored (opaque to the server).
        descriptor: blob,
    }
    /// Answer to `jwks`.
    JwksDoc {
        /// The JWK Set as JSON.
        jwks: long_text,
    }

    // ---- list item ----

    /// One retained room message.
    HistoryEntry {
        /// Sender.
        from: name,
        /// Room sequence number.
        seq: u64,
        /// When the server accepted it, Unix milliseconds.
        sent_ms: u64,
        /// Sealed message.
        sealed: blob,
    }

    // ---- events ----

    /// `connected` (10001): login completed.
    Connected {
        /// The logged-in user.
        username: name,
        /// Queued items about to be delivered.
        queued: u32,
    }
    /// `user_message` (10002): a private message.
    UserMessage {
        /// Sender.
        from: name,
        /// Sequence number in the conversation; acknowledge with `delivery_ack`.
        seq: u64,
        /// When the server accepted it, Unix milliseconds.
        sent_ms: u64,
        /// Sealed message.
        sealed: blob,
    }
    /// `room_message` (10003).
    RoomMessage {
        /// Room name.
        room: name,
        /// Sender.
        from: name,
        /// Room sequence number.
        seq: u64,
        /// When the server accepted it, Unix milliseconds.
        sent_ms: u64,
        /// Sealed message.
        sealed: blob,
    }
    /// `mp_request` (10004): `from` asks for a private conversation.
    MpRequest {
        /// Requester.
        from: name,
        /// Sequence number in the requester-to-this-user direction; acknowledge with `delivery_ack`.
        seq: u64,
        /// Requester's identity public key.
        identity_key: blob,
        /// Requester's signed ephemeral key.
        handshake: blob,
    }
    /// `mp_accepted` (10005): `peer` accepted this user's request.
    MpAccepted {
        /// The user who accepted.
        peer: name,
        /// Sequence number in the peer-to-this-user direction; acknowledge with `delivery_ack`.
        seq: u64,
        /// Their identity public key.
        identity_key: blob,
        /// Their signed ephemeral key.
        handshake: blob,
    }
    /// `mp_closed` (10006).
    MpClosed {
        /// The peer who closed.
        peer: name,
        /// Sequence number in the peer-to-this-user direction; acknowledge with `delivery_ack`.
        seq: u64,
        /// Why.
        reason: text,
    }
    /// `peer_gone` (10007): a conversation peer disconnected.
    PeerGone {
        /// The peer.
        peer: name,
    }
    /// `error` (10008): an error not tied to a request.
    ErrorEvent {
        /// Three-digit code.
        code: u16,
        /// Byte offset in the offending frame, if any (else 0).
        offset: u64,
        /// Human-readable reason.
        reason: text,
    }
    /// `mp_expired` (10009): a private message was dropped undelivered.
    MpExpired {
        /// Intended recipient.
        peer: name,
        /// Its sequence number.
        seq: u64,
    }

    // ---- control frames ----

    /// Data of a ping frame.
    Ping {
        /// Echoed by the pong.
        nonce: u64,
    }
    /// Data of a pong frame.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    }
    /// Data of a close frame.
    Close {
        /// Three-digit code.
        code: u16,
        /// Human-readable reason.
        reason: text,
    }
}

impl HistoryEntry {
    /// Smallest encoding of an entry: empty sender and blob.
    pub(crate) const MIN_LEN: usize = 2 + 8 + 8 + 4;
}
