//! What the secure client hands to its caller, and why it refuses commands.

use crate::e2e::{Fingerprint, HandshakeError, OpenError, RoomError, SafetyNumber, SealError};
use crate::machine::Output;
use crate::{ClientEvent, CommandError};

/// What the secure client asks its caller to do: the [`Output`] of a
/// committed [`ClientTurn`](crate::machine::ClientTurn) of a
/// [`SecureClient`](super::SecureClient) (like [`ClientOutput`](crate::ClientOutput)).
pub type SecureOutput = Output<SecureEvent>;

/// Something that happened, decrypted and verified where it carried a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureEvent {
    /// A plain client event (outcomes, connection, catching up, ...).
    /// `UserMessage`, `RoomMessage`, `MpRequest` and `MpAccepted` never
    /// appear here: they become the events below.
    Plain(ClientEvent),
    /// A verified request for a private conversation: answer with
    /// [`SecureClient::accept_mp`](super::SecureClient::accept_mp) (or refuse with [`SecureClient::close_mp`](super::SecureClient::close_mp)).
    MpOffered {
        /// Requester.
        from: String,
        /// The safety number of this pair, to compare out of band.
        safety_number: SafetyNumber,
    },
    /// Session keys with `peer` are derived: MPs can go both ways.
    MpReady {
        /// The peer.
        peer: String,
    },
    /// A private message, opened and verified.
    Mp {
        /// Sender.
        from: String,
        /// The sender's clock when it sealed, Unix milliseconds (authenticated).
        sent_ms: u64,
        /// The plaintext.
        text: String,
    },
    /// A room message, opened and verified as coming from a holder of the room key.
    Room {
        /// Room name.
        room: String,
        /// Sender, as the server names it (bound into the MAC).
        from: String,
        /// Room sequence number (the server's order, not authenticated).
        seq: u64,
        /// The sender's clock when it sealed, Unix milliseconds (authenticated).
        sent_ms: u64,
        /// The plaintext.
        text: String,
        /// It came from the history a join or `room_history` returned.
        history: bool,
    },
    /// A pinned contact's identity key changed: nothing from or to `user`
    /// until [`SecureClient::accept_new_key`](super::SecureClient::accept_new_key).
    KeyChanged {
        /// The contact.
        user: String,
        /// The pinned key's fingerprint.
        pinned: Fingerprint,
        /// The fingerprint of the key now presented.
        presented: Fingerprint,
    },
    /// A handshake blob did not verify against the pinned key (or was malformed).
    HandshakeRejected {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A blob that did not open: tampered, replayed, foreign, or no key for it.
    DecryptFailed {
        /// The sender the server named.
        from: String,
        /// The room, for a room message.
        room: Option<String>,
        /// Why.
        reason: DecryptError,
    },
    /// A received MP from `from` was deleted locally (one hour after receipt).
    MpExpiredLocally {
        /// The sender.
        from: String,
    },
}

/// Why a received blob yielded no text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// No MP session with the sender (no handshake, or it was rejected).
    #[error("no session with the sender")]
    NoSession,
    /// No key for this room on this device.
    #[error("no key for this room")]
    NoRoomKey,
    /// The sender's key changed and is not accepted yet.
    #[error("the sender's identity key changed")]
    KeyChanged,
    /// Not authentic or not new.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Authentic, but not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
}

/// Why a secure command was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The underlying client refused it.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The user is not known yet (log in first).
    #[error("not logged in")]
    NotLoggedIn,
    /// The contact's identity key changed: accept it first.
    #[error("the identity key of {0} changed: compare safety numbers and accept it first")]
    KeyChanged(String),
    /// No established session with this peer.
    #[error("no private session with {0}")]
    NoSession(String),
    /// No verified request from this peer to accept.
    #[error("no request from {0} to accept")]
    NoOffer(String),
    /// No key for this room (not joined or created through this client).
    #[error("no key for room {0}")]
    NoRoomKey(String),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Making a handshake blob failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Deriving the room keys failed.
    #[error(transparent)]
    Room(#[from] RoomError),
}
