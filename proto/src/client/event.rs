//! What the client machine hands to its caller.

use bytes::Bytes;

use crate::machine::Output;
use crate::wire::{DecodeError, Opcode, ResponseBody};

/// What the client asks its caller to do: the [`Output`] of a committed
/// [`ClientTurn`](crate::machine::ClientTurn) of a [`Client`](super::Client).
///
/// Outputs come in this order: every `Event`, then one `Transmit` with all
/// pending frames, then `Close`, then `Timeout`. Acknowledgements of
/// delivered items therefore come out after the events that delivered them,
/// and after the checkpoint that stored them.
pub type ClientOutput = Output<ClientEvent>;

/// Something that happened, for the application.
///
/// Every request id a command returned gets exactly one outcome: `Done`,
/// `Failed`, `Indeterminate`, `LoggedIn` (for `login`) or `LoggedOut` (for `logout`).
/// Requests the client makes on its own (token refresh, delivery
/// acknowledgements) report only failures, and `LoggedIn` after a refresh;
/// the `fetch_key` that binds a new connection of an external-token session
/// reports nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A request succeeded (status `valid` or `finished`).
    Done {
        /// The id the command returned.
        request_id: u32,
        /// The request's opcode.
        opcode: Opcode,
        /// Three-digit code (200, 201, 202, ...).
        code: u16,
        /// The result, shaped by the opcode.
        body: ResponseBody,
    },
    /// A request failed. Codes are the server's, or 503 when the connection
    /// was lost before the answer of a request that cannot be retried on a
    /// new connection (`register`, `login`), or 401 when the session's
    /// tokens stopped working (logged out, revoked, expired refresh token).
    Failed {
        /// The id the command returned (for a login, the `login` request's id
        /// whichever step failed).
        request_id: u32,
        /// The opcode of the request that failed (`passphrase` when login step two failed).
        opcode: Opcode,
        /// Three-digit code.
        code: u16,
        /// Human-readable reason.
        reason: String,
        /// Milliseconds to wait before retrying (429, 503), else 0.
        retry_after_ms: u64,
    },
    /// A request written before the session ended (tokens revoked, refresh
    /// refused) whose answer never came: the server may or may not have
    /// performed it, and it cannot be retried safely under a new login. An
    /// application shows it as "not confirmed" rather than failed.
    Indeterminate {
        /// The id the command returned.
        request_id: u32,
        /// The request's opcode.
        opcode: Opcode,
        /// Why the answer will never come.
        reason: String,
    },
    /// The client holds a new token pair: after a login's passphrase step, or
    /// after a refresh (on reconnect, or when the access token expired). The
    /// refresh token rotated: store [`Client::refresh_token`](super::Client::refresh_token).
    LoggedIn {
        /// The `login` request's id, or the internal `refresh` request's id.
        request_id: u32,
        /// The logged-in user.
        username: String,
        /// Access token expiry, Unix milliseconds.
        access_expires_ms: u64,
        /// Refresh token expiry, Unix milliseconds.
        refresh_expires_ms: u64,
    },
    /// The server refused the external access token of an external-token
    /// session ([`Client::use_external_token`](super::Client::use_external_token)):
    /// 419 (expired) or 401 (refused: unknown key, wrong audience, ...).
    /// Authenticated requests wait in the outbox: get a fresh token from
    /// the provider and call [`Client::set_external_token`](super::Client::set_external_token).
    /// Emitted once per token.
    ExternalTokenNeeded {
        /// Three-digit code of the refusal.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The logout was answered: the client forgot its tokens.
    LoggedOut {
        /// The id `logout` returned.
        request_id: u32,
    },
    /// The connection is authenticated (`connected` event): queued items follow.
    Connected {
        /// The logged-in user.
        username: String,
        /// How many queued items the server is about to deliver (duplicates included).
        queued: u32,
    },
    /// Every item the server had queued for this user when the connection
    /// was bound (the `queued` count of [`ClientEvent::Connected`],
    /// duplicates included) has arrived and was reported: what follows is
    /// live. Once per connection, right after `Connected` when nothing was
    /// queued.
    CaughtUp,
    /// A private message (delivered once: replays are dropped).
    UserMessage {
        /// Sender.
        from: String,
        /// Sequence number in the sender's lane to this user.
        seq: u64,
        /// When the server accepted it, Unix milliseconds.
        sent_ms: u64,
        /// The sealed message.
        sealed: Bytes,
    },
    /// Another user asks for a private conversation.
    MpRequest {
        /// Requester.
        from: String,
        /// Sequence number in the requester's lane to this user.
        seq: u64,
        /// The requester's identity public key.
        identity_key: Bytes,
        /// The requester's signed ephemeral key.
        handshake: Bytes,
    },
    /// A conversation this user asked for was accepted.
    MpAccepted {
        /// The user who accepted.
        peer: String,
        /// Sequence number in the peer's lane to this user.
        seq: u64,
        /// Their identity public key.
        identity_key: Bytes,
        /// Their signed ephemeral key.
        handshake: Bytes,
    },
    /// The peer closed (or refused) a private conversation.
    MpClosed {
        /// The peer.
        peer: String,
        /// Sequence number in the peer's lane to this user.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A message in a room this user is a member of (delivered once).
    RoomMessage {
        /// Room name.
        room: String,
        /// Sender.
        from: String,
        /// Room sequence number.
        seq: u64,
        /// When the server accepted it, Unix milliseconds.
        sent_ms: u64,
        /// The sealed message.
        sealed: Bytes,
    },
    /// A peer with an open conversation disconnected.
    PeerGone {
        /// The peer.
        peer: String,
    },
    /// A private message this user sent was dropped undelivered after the server's retention period.
    MpExpired {
        /// The intended recipient.
        peer: String,
        /// The message's sequence number.
        seq: u64,
    },
    /// The server reported an error not tied to a request (`error` event).
    ServerError {
        /// Three-digit code.
        code: u16,
        /// Byte offset in the offending frame (0 if none).
        offset: u64,
        /// Human-readable reason.
        reason: String,
    },
    /// A frame from the server could not be decoded and was dropped. (An
    /// undecodable *response* whose request id could be read fails that
    /// request with [`ClientEvent::Failed`] instead.)
    BadFrame {
        /// Why.
        error: DecodeError,
    },
    /// The connection ended: the server sent a close frame, or the client
    /// gave up (idle timeout, undecodable stream, [`Client::close`](super::Client::close)).
    Closed {
        /// Three-digit code.
        code: u16,
        /// Why.
        reason: String,
    },
}
