//! The items one partition mails another (docs/PARTITIONS.md, "Mail"): a
//! versioned binary encoding, kept in the store's outbox until the target
//! applied them.
//!
//! Layout, integers big-endian: `ticket u64 | role u8 | version u8 | kind u8
//! | body`. The ticket and the role (0: a request, 1: an answer, 2: a
//! notice) are the same in every version, so that a target that cannot
//! read the rest (a version it does not know, during a rolling upgrade) can
//! still refuse a request, and never answers an answer or a notice. A
//! request's ticket is its own number in its sender's mail to the target;
//! its answer carries it back. A notice's ticket is its own number too
//! (nothing answers it). Text is `u16` length + UTF-8; a blob is `u32`
//! length + bytes.
//!
//! | role | kind | item | body |
//! | --- | --- | --- | --- |
//! | 0 | 1 | [`MailItem::FetchKey`] | `peer: text` |
//! | 1 | 2 | [`MailItem::KeyFound`] | `username: text, identity_key: blob` |
//! | 1 | 3 | [`MailItem::Refused`] | `code: u16, reason: text` |
//! | 0 | 4 | [`MailItem::MpRequest`] | `from: text, to: text, identity_key: blob, handshake: blob` |
//! | 0 | 5 | [`MailItem::MpAccept`] | `from: text, to: text, identity_key: blob, handshake: blob` |
//! | 0 | 6 | [`MailItem::MpSend`] | `from: text, to: text, sealed: blob` |
//! | 0 | 7 | [`MailItem::MpClose`] | `from: text, to: text` |
//! | 1 | 8 | [`MailItem::MpQueued`] | `code: u16, seq: u64` |
//! | 1 | 9 | [`MailItem::MpAccepted`] | `identity_key: blob, handshake: blob` |
//! | 2 | 10 | [`MailItem::MpExpired`] | `user: text, peer: text, seq: u64` |
//! | 2 | 11 | [`MailItem::PeerGone`] | `peer: text, count: u16, users: text × count` |
//! | 0 | 12 | [`MailItem::Forward`] | `user: text, frame: blob` |
//! | 1 | 13 | [`MailItem::Replied`] | `frame: blob` |
//! | 2 | 14 | [`MailItem::RoomPush`] | `count: u16, users: text × count, frame: blob` |
//!
//! A `frame` is a whole protocol frame (docs/PROTOCOL.md) with an empty auth
//! part: the request a user of the sender made, its response, or the
//! `room_message` event pushed to members.
//!
//! The answers of version 1 ([`MailItem::Refused`], [`MailItem::MpQueued`],
//! [`MailItem::MpAccepted`]) are frozen: every later version reads them, so
//! a refusal for a version it cannot read always gets through, and an
//! answer is never misread as a failure of a request the other side
//! applied (which would undo the tentative state its request left).

use bytes::{BufMut, Bytes, BytesMut};

/// The version this build writes and reads.
pub const MAIL_VERSION: u8 = 1;
/// The role of a request (it asks for an answer).
pub const ROLE_REQUEST: u8 = 0;
/// The role of an answer.
pub const ROLE_ANSWER: u8 = 1;
/// The role of a notice (nothing answers it).
pub const ROLE_NOTICE: u8 = 2;

/// One item of mail between partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailItem {
    /// A session asks for `peer`'s identity key (`fetch_key`); the
    /// answer comes back under the same ticket.
    FetchKey {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// The user asked about.
        peer: String,
    },
    /// The answer to [`MailItem::FetchKey`]: the key.
    KeyFound {
        /// The request's ticket.
        ticket: u64,
        /// The user.
        username: String,
        /// Its identity key (empty if it has none).
        identity_key: Bytes,
    },
    /// A request refused by its target, with the code and reason its
    /// client gets.
    Refused {
        /// The request's ticket.
        ticket: u64,
        /// The three-digit code.
        code: u16,
        /// Why.
        reason: String,
    },
    /// `from` asks `to` for a conversation (`request_mp`); decided by the
    /// copy of `to`'s home, which queues the request in the lane `from -> to`.
    MpRequest {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// The requester (of the sending partition).
        from: String,
        /// The user asked (of the target).
        to: String,
        /// The requester's identity key.
        identity_key: Bytes,
        /// The requester's signed ephemeral key.
        handshake: Bytes,
    },
    /// `from` accepts the request of `to` (`accept_mp`); decided by the
    /// copy of `to`'s home, which queues the acceptance in `from -> to`.
    MpAccept {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// The accepter (of the sending partition).
        from: String,
        /// The requester (of the target).
        to: String,
        /// The accepter's identity key.
        identity_key: Bytes,
        /// The accepter's signed ephemeral key.
        handshake: Bytes,
    },
    /// A sealed message of `from` to `to` (`send_mp`), queued by `to`'s home.
    MpSend {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// The sender.
        from: String,
        /// The recipient.
        to: String,
        /// The sealed bytes.
        sealed: Bytes,
    },
    /// `from` closed its conversation with `to` (`close_mp`): `to`'s home
    /// closes its copy and queues the notice. Never refused.
    MpClose {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// Who closed.
        from: String,
        /// The peer.
        to: String,
    },
    /// The answer to [`MailItem::MpRequest`], [`MailItem::MpSend`] and
    /// [`MailItem::MpClose`]: the item was queued as `seq` of its lane, its
    /// recipient online (200) or not (202).
    MpQueued {
        /// The request's ticket.
        ticket: u64,
        /// 200 or 202.
        code: u16,
        /// The item's sequence number in its lane.
        seq: u64,
    },
    /// The answer to [`MailItem::MpAccept`]: the requester's keys.
    MpAccepted {
        /// The request's ticket.
        ticket: u64,
        /// The requester's identity key.
        identity_key: Bytes,
        /// The requester's signed ephemeral key.
        handshake: Bytes,
    },
    /// The message `seq` of `user` (of the target) to `peer` was dropped
    /// unread after the retention period.
    MpExpired {
        /// The notice's own number in its sender's mail to the target.
        ticket: u64,
        /// The sender of the dropped message, told.
        user: String,
        /// Its recipient.
        peer: String,
        /// The dropped message's sequence number.
        seq: u64,
    },
    /// A request of `user` (of the sender) that the target decides (a room
    /// request: the target is the room's home), as the frame its client sent.
    Forward {
        /// The request's number in its sender's mail to the target.
        ticket: u64,
        /// The user who asked.
        user: String,
        /// The request frame (empty auth).
        frame: Bytes,
    },
    /// The answer to [`MailItem::Forward`]: the response frame its client gets.
    Replied {
        /// The request's ticket.
        ticket: u64,
        /// The response frame (empty auth).
        frame: Bytes,
    },
    /// A room message for the online members among `users` (of the target),
    /// as the event frame they get.
    RoomPush {
        /// The notice's own number in its sender's mail to the target.
        ticket: u64,
        /// The members of the target's home.
        users: Vec<String>,
        /// The `room_message` event frame (empty auth).
        frame: Bytes,
    },
    /// `peer` went offline: `users` (of the target), in open conversations
    /// with it, are told if online (best effort, as on one server). One
    /// notice per target partition, whatever the number of its users.
    PeerGone {
        /// The notice's own number in its sender's mail to the target.
        ticket: u64,
        /// Who left.
        peer: String,
        /// Who is told (at most 65,535; more are cut).
        users: Vec<String>,
    },
}

/// An item that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Fewer bytes than the layout needs.
    #[error("mail item truncated")]
    Truncated,
    /// A version this build does not read.
    #[error("mail item of version {0}, this build reads version {MAIL_VERSION}")]
    UnknownVersion(u8),
    /// A kind this version does not have.
    #[error("mail item of unknown kind {0}")]
    UnknownKind(u8),
    /// Text that is not UTF-8.
    #[error("mail item with text that is not UTF-8")]
    BadText,
    /// A role other than request (0), answer (1) or notice (2).
    #[error("mail item of unknown role {0}")]
    UnknownRole(u8),
    /// A kind that does not go with the role.
    #[error("mail item of kind {kind} given as {}", role_name(*.role))]
    WrongRole {
        /// The role given.
        role: u8,
        /// The kind.
        kind: u8,
    },
    /// Bytes after the item.
    #[error("mail item followed by {0} bytes")]
    Trailing(usize),
}

impl MailItem {
    /// The ticket of the request the item belongs to.
    #[must_use]
    pub fn ticket(&self) -> u64 {
        match self {
            MailItem::FetchKey { ticket, .. }
            | MailItem::KeyFound { ticket, .. }
            | MailItem::Refused { ticket, .. }
            | MailItem::MpRequest { ticket, .. }
            | MailItem::MpAccept { ticket, .. }
            | MailItem::MpSend { ticket, .. }
            | MailItem::MpClose { ticket, .. }
            | MailItem::MpQueued { ticket, .. }
            | MailItem::MpAccepted { ticket, .. }
            | MailItem::MpExpired { ticket, .. }
            | MailItem::PeerGone { ticket, .. }
            | MailItem::Forward { ticket, .. }
            | MailItem::Replied { ticket, .. }
            | MailItem::RoomPush { ticket, .. } => *ticket,
        }
    }

    /// [`ROLE_REQUEST`], [`ROLE_ANSWER`] or [`ROLE_NOTICE`].
    #[must_use]
    pub fn role(&self) -> u8 {
        match self {
            MailItem::FetchKey { .. }
            | MailItem::MpRequest { .. }
            | MailItem::MpAccept { .. }
            | MailItem::MpSend { .. }
            | MailItem::MpClose { .. }
            | MailItem::Forward { .. } => ROLE_REQUEST,
            MailItem::KeyFound { .. }
            | MailItem::Refused { .. }
            | MailItem::MpQueued { .. }
            | MailItem::MpAccepted { .. }
            | MailItem::Replied { .. } => ROLE_ANSWER,
            MailItem::MpExpired { .. } | MailItem::PeerGone { .. } | MailItem::RoomPush { .. } => ROLE_NOTICE,
        }
    }

    /// The item's name, for logs.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            MailItem::FetchKey { .. } => "fetch_key",
            MailItem::KeyFound { .. } => "key_found",
            MailItem::Refused { .. } => "refused",
            MailItem::MpRequest { .. } => "mp_request",
            MailItem::MpAccept { .. } => "mp_accept",
            MailItem::MpSend { .. } => "mp_send",
            MailItem::MpClose { .. } => "mp_close",
            MailItem::MpQueued { .. } => "mp_queued",
            MailItem::MpAccepted { .. } => "mp_accepted",
            MailItem::MpExpired { .. } => "mp_expired",
            MailItem::PeerGone { .. } => "peer_gone",
            MailItem::Forward { .. } => "forward",
            MailItem::Replied { .. } => "replied",
            MailItem::RoomPush { .. } => "room_push",
        }
    }

    /// The item's bytes.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u64(self.ticket());
        b.put_u8(self.role());
        b.put_u8(MAIL_VERSION);
        match self {
            MailItem::FetchKey { peer, .. } => {
                b.put_u8(1);
                put_text(&mut b, peer);
            }
            MailItem::KeyFound { username, identity_key, .. } => {
                b.put_u8(2);
                put_text(&mut b, username);
                put_blob(&mut b, identity_key);
            }
            MailItem::Refused { code, reason, .. } => {
                b.put_u8(3);
                b.put_u16(*code);
                put_text(&mut b, reason);
            }
            MailItem::MpRequest { from, to, identity_key, handshake, .. }
            | MailItem::MpAccept { from, to, identity_key, handshake, .. } => {
                b.put_u8(if matches!(self, MailItem::MpRequest { .. }) { 4 } else { 5 });
                put_text(&mut b, from);
                put_text(&mut b, to);
                put_blob(&mut b, identity_key);
                put_blob(&mut b, handshake);
            }
            MailItem::MpSend { from, to, sealed, .. } => {
                b.put_u8(6);
                put_text(&mut b, from);
                put_text(&mut b, to);
                put_blob(&mut b, sealed);
            }
            MailItem::MpClose { from, to, .. } => {
                b.put_u8(7);
                put_text(&mut b, from);
                put_text(&mut b, to);
            }
            MailItem::MpQueued { code, seq, .. } => {
                b.put_u8(8);
                b.put_u16(*code);
                b.put_u64(*seq);
            }
            MailItem::MpAccepted { identity_key, handshake, .. } => {
                b.put_u8(9);
                put_blob(&mut b, identity_key);
                put_blob(&mut b, handshake);
            }
            MailItem::MpExpired { user, peer, seq, .. } => {
                b.put_u8(10);
                put_text(&mut b, user);
                put_text(&mut b, peer);
                b.put_u64(*seq);
            }
            MailItem::PeerGone { peer, users, .. } => {
                b.put_u8(11);
                put_text(&mut b, peer);
                put_texts(&mut b, users);
            }
            MailItem::Forward { user, frame, .. } => {
                b.put_u8(12);
                put_text(&mut b, user);
                put_blob(&mut b, frame);
            }
            MailItem::Replied { frame, .. } => {
                b.put_u8(13);
                put_blob(&mut b, frame);
            }
            MailItem::RoomPush { users, frame, .. } => {
                b.put_u8(14);
                put_texts(&mut b, users);
                put_blob(&mut b, frame);
            }
        }
        b.freeze()
    }

    /// Reads an item.
    ///
    /// # Errors
    /// The bytes are not an item of this version.
    pub fn decode(bytes: &[u8]) -> Result<MailItem, MailError> {
        let mut r = Reader(bytes);
        let ticket = r.u64()?;
        let role = r.u8()?;
        if role > ROLE_NOTICE {
            return Err(MailError::UnknownRole(role));
        }
        let version = r.u8()?;
        if version != MAIL_VERSION {
            return Err(MailError::UnknownVersion(version));
        }
        let kind = r.u8()?;
        let item = match kind {
            1 => MailItem::FetchKey { ticket, peer: r.text()? },
            2 => MailItem::KeyFound { ticket, username: r.text()?, identity_key: r.blob()? },
            3 => MailItem::Refused { ticket, code: r.u16()?, reason: r.text()? },
            4 => MailItem::MpRequest {
                ticket,
                from: r.text()?,
                to: r.text()?,
                identity_key: r.blob()?,
                handshake: r.blob()?,
            },
            5 => MailItem::MpAccept {
                ticket,
                from: r.text()?,
                to: r.text()?,
                identity_key: r.blob()?,
                handshake: r.blob()?,
            },
            6 => MailItem::MpSend { ticket, from: r.text()?, to: r.text()?, sealed: r.blob()? },
            7 => MailItem::MpClose { ticket, from: r.text()?, to: r.text()? },
            8 => MailItem::MpQueued { ticket, code: r.u16()?, seq: r.u64()? },
            9 => MailItem::MpAccepted { ticket, identity_key: r.blob()?, handshake: r.blob()? },
            10 => MailItem::MpExpired { ticket, user: r.text()?, peer: r.text()?, seq: r.u64()? },
            11 => MailItem::PeerGone { ticket, peer: r.text()?, users: r.texts()? },
            12 => MailItem::Forward { ticket, user: r.text()?, frame: r.blob()? },
            13 => MailItem::Replied { ticket, frame: r.blob()? },
            14 => MailItem::RoomPush { ticket, users: r.texts()?, frame: r.blob()? },
            kind => return Err(MailError::UnknownKind(kind)),
        };
        if item.role() != role {
            return Err(MailError::WrongRole { role, kind });
        }
        match r.0.len() {
            0 => Ok(item),
            n => Err(MailError::Trailing(n)),
        }
    }

    /// The ticket and role of an item, if its first 9 bytes are there and
    /// the role is known (whatever the rest holds: any version).
    #[must_use]
    pub fn ticket_and_role(bytes: &[u8]) -> Option<(u64, u8)> {
        let mut r = Reader(bytes);
        let (ticket, role) = (r.u64().ok()?, r.u8().ok()?);
        (role <= ROLE_NOTICE).then_some((ticket, role))
    }
}

fn role_name(role: u8) -> &'static str {
    match role {
        ROLE_REQUEST => "a request",
        ROLE_ANSWER => "an answer",
        _ => "a notice",
    }
}

fn put_text(b: &mut BytesMut, s: &str) {
    // Texts here are names and reasons, far below 64 KiB; a longer one is cut at a character.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.put_u16(end as u16);
    b.put_slice(&s.as_bytes()[..end]);
}

/// At most 65,535 texts (a room's members or a user's peers are far fewer; more are cut).
fn put_texts(b: &mut BytesMut, texts: &[String]) {
    let texts = &texts[..texts.len().min(usize::from(u16::MAX))];
    b.put_u16(texts.len() as u16);
    for text in texts {
        put_text(b, text);
    }
}

fn put_blob(b: &mut BytesMut, blob: &[u8]) {
    // Identity keys are bounded far below 4 GiB by the configuration.
    b.put_u32(u32::try_from(blob.len()).unwrap_or(u32::MAX));
    b.put_slice(&blob[..blob.len().min(u32::MAX as usize)]);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], MailError> {
        if self.0.len() < n {
            return Err(MailError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MailError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, MailError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, MailError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn text(&mut self) -> Result<String, MailError> {
        let n = usize::from(self.u16()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| MailError::BadText)
    }

    fn texts(&mut self) -> Result<Vec<String>, MailError> {
        (0..self.u16()?).map(|_| self.text()).collect()
    }

    fn blob(&mut self) -> Result<Bytes, MailError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        let n = u32::from_be_bytes(a) as usize;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<MailItem> {
        vec![
            MailItem::FetchKey { ticket: 7, peer: "bob".into() },
            MailItem::KeyFound { ticket: 7, username: "bob".into(), identity_key: Bytes::from_static(&[1, 2, 3]) },
            MailItem::Refused { ticket: u64::MAX, code: 404, reason: "no user zoé".into() },
            MailItem::MpRequest {
                ticket: 3,
                from: "al".into(),
                to: "bo".into(),
                identity_key: Bytes::from_static(b"ik"),
                handshake: Bytes::from_static(b"hs"),
            },
            MailItem::MpAccept {
                ticket: 4,
                from: "bo".into(),
                to: "al".into(),
                identity_key: Bytes::from_static(b"ik2"),
                handshake: Bytes::from_static(b"hs2"),
            },
            MailItem::MpSend { ticket: 5, from: "al".into(), to: "bo".into(), sealed: Bytes::from_static(b"s") },
            MailItem::MpClose { ticket: 6, from: "al".into(), to: "bo".into() },
            MailItem::MpQueued { ticket: 5, code: 202, seq: 9 },
            MailItem::MpAccepted {
                ticket: 4,
                identity_key: Bytes::from_static(b"ik"),
                handshake: Bytes::from_static(b"hs"),
            },
            MailItem::MpExpired { ticket: 7, user: "al".into(), peer: "bo".into(), seq: 9 },
            MailItem::PeerGone { ticket: 8, peer: "bo".into(), users: vec!["al".into(), "cy".into()] },
            MailItem::PeerGone { ticket: 9, peer: "bo".into(), users: vec![] },
            MailItem::Forward { ticket: 10, user: "al".into(), frame: Bytes::from_static(b"frame") },
            MailItem::Replied { ticket: 10, frame: Bytes::from_static(b"response") },
            MailItem::RoomPush { ticket: 11, users: vec!["al".into()], frame: Bytes::from_static(b"event") },
        ]
    }

    #[test]
    fn items_round_trip() {
        for item in items() {
            assert_eq!(MailItem::decode(&item.encode()), Ok(item.clone()));
            assert_eq!(MailItem::ticket_and_role(&item.encode()), Some((item.ticket(), item.role())));
        }
    }

    /// The layout of the module docs, byte for byte.
    #[test]
    fn the_encoding_is_the_documented_one() {
        let fetch = MailItem::FetchKey { ticket: 0x0102_0304_0506_0708, peer: "bob".into() }.encode();
        assert_eq!(&fetch[..], b"\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x01\x00\x03bob");
        let found =
            MailItem::KeyFound { ticket: 1, username: "b".into(), identity_key: Bytes::from_static(b"k") }.encode();
        assert_eq!(&found[..], b"\0\0\0\0\0\0\0\x01\x01\x01\x02\x00\x01b\x00\x00\x00\x01k");
        let refused = MailItem::Refused { ticket: 2, code: 404, reason: "no".into() }.encode();
        assert_eq!(&refused[..], b"\0\0\0\0\0\0\0\x02\x01\x01\x03\x01\x94\x00\x02no");
        let send = MailItem::MpSend { ticket: 5, from: "al".into(), to: "bo".into(), sealed: Bytes::from_static(b"s") };
        assert_eq!(&send.encode()[..], b"\0\0\0\0\0\0\0\x05\x00\x01\x06\x00\x02al\x00\x02bo\x00\x00\x00\x01s");
        let queued = MailItem::MpQueued { ticket: 5, code: 202, seq: 9 }.encode();
        assert_eq!(&queued[..], b"\0\0\0\0\0\0\0\x05\x01\x01\x08\x00\xca\0\0\0\0\0\0\0\x09");
        let gone = MailItem::PeerGone { ticket: 8, peer: "bo".into(), users: vec!["al".into(), "cy".into()] };
        assert_eq!(&gone.encode()[..], b"\0\0\0\0\0\0\0\x08\x02\x01\x0b\x00\x02bo\x00\x02\x00\x02al\x00\x02cy");
    }

    #[test]
    fn malformed_items_are_refused_with_their_reason() {
        let good = items()[1].encode();
        for cut in 0..good.len() {
            assert_eq!(MailItem::decode(&good[..cut]), Err(MailError::Truncated), "cut at {cut}");
        }
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(MailItem::decode(&longer), Err(MailError::Trailing(1)));
        let mut newer = good.to_vec();
        newer[9] = 2;
        assert_eq!(MailItem::decode(&newer), Err(MailError::UnknownVersion(2)));
        assert_eq!(MailItem::ticket_and_role(&newer), Some((7, ROLE_ANSWER)), "ticket and role survive a version");
        let mut kind = good.to_vec();
        kind[10] = 99;
        assert_eq!(MailItem::decode(&kind), Err(MailError::UnknownKind(99)));
        let mut role = good.to_vec();
        role[8] = ROLE_REQUEST;
        assert_eq!(MailItem::decode(&role), Err(MailError::WrongRole { role: ROLE_REQUEST, kind: 2 }));
        role[8] = 7;
        assert_eq!(MailItem::decode(&role), Err(MailError::UnknownRole(7)));
        assert_eq!(MailItem::ticket_and_role(&role), None);
        let bad_text = b"\0\0\0\0\0\0\0\x01\x00\x01\x01\x00\x02\xff\xfe";
        assert_eq!(MailItem::decode(bad_text), Err(MailError::BadText));
    }

    /// The fuzz seeds of `fuzz/corpus/message_decode/mail_*` are items.
    #[test]
    fn the_fuzz_seeds_are_items() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/message_decode");
        let names =
            ["mail_fetch_key", "mail_key_found", "mail_refused", "mail_mp_send", "mail_peer_gone", "mail_forward"];
        for name in names {
            let bytes = std::fs::read(dir.join(name)).expect("the seed");
            assert!(MailItem::decode(&bytes).is_ok(), "{name}");
        }
    }

    /// Any bytes decode to an item or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            let _ = MailItem::decode(&bytes);
        }
    }
}
