//! The whole state of a [`SecureClient`] as plain data, for a stored profile.
//!
//! Without it a restarted client would start its sealing counters at 0 again
//! and reuse CTR key stream (docs/SECURITY.md). [`SecureClient::snapshot`]
//! exports: the wrapped client's [`ClientSnapshot`], the contact book (pinned
//! keys and any changed key awaiting acceptance), handshakes in flight (the
//! requester's ephemeral secret included), verified offers, MP sessions (keys,
//! next send counter, replay window), room sessions (room secret, next
//! counter, one replay window per sender), requests awaiting their answer
//! whose outcome changes e2e state, and the received MPs with their expiry.
//! [`SecureClient::restore`] is the inverse.
//!
//! **Durability rule**: a command that seals ([`SecureClient::send_mp`],
//! [`SecureClient::send_room`]) advances a counter; store the snapshot taken
//! after the command before writing the transmits that follow it. Restoring
//! an older snapshot would reuse counters.
//!
//! Every secret field is erased from memory when its struct is dropped.
//! The identity key is not part of the snapshot: the caller stores it
//! (encrypted) and hands it to `restore`.

use std::time::Duration;

use rand::rngs::StdRng;
use zeroize::Zeroize;

use super::{Contact, MP_LOCAL_RETENTION, MpPending, RoomPending, SecureClient};
use crate::client::{ClientSnapshot, SnapshotError};
use crate::e2e::{
    IdentityKey, MpOffer, MpRequest, MpSession, Opener, PublicIdentity, ReplayWindow, Role, RoomKeys, RoomSession,
    SealKeys, Sealer,
};
use crate::server::HashParams;
use crate::{Client, ClientConfig, Now};

/// The whole state of a [`SecureClient`] but its identity key: the client's
/// [`ClientSnapshot`], contacts, handshakes, MP and room sessions with their
/// counters and replay windows, pending requests and received MPs.
///
/// **Durability rule**: store the snapshot taken after a sealing command
/// before writing the transmits that follow it; restoring an older one would
/// reuse CTR counters. Secret fields are erased from memory on drop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SecureSnapshot {
    /// The wrapped client's resumable state.
    pub client: ClientSnapshot,
    /// The contact book.
    pub contacts: Vec<ContactSnapshot>,
    /// Handshakes this user started, awaiting acceptance ([`MpRequest::export`]; secret).
    pub requests: Vec<Vec<u8>>,
    /// Verified requests from peers awaiting this user's decision ([`MpOffer::export`]).
    pub offers: Vec<Vec<u8>>,
    /// Established MP sessions.
    pub sessions: Vec<SessionSnapshot>,
    /// Room sessions.
    pub rooms: Vec<RoomSnapshot>,
    /// Room requests awaiting their answer (the keys a `create`/`join` answer installs).
    pub room_pending: Vec<RoomPendingSnapshot>,
    /// MP requests/acceptances awaiting their answer (their state goes if refused).
    pub mp_pending: Vec<MpPendingSnapshot>,
    /// Received MPs still readable, oldest first.
    pub inbox: Vec<ReceivedMp>,
}

impl Drop for SecureSnapshot {
    fn drop(&mut self) {
        self.requests.iter_mut().for_each(Zeroize::zeroize);
    }
}

/// A pinned contact.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ContactSnapshot {
    /// The username.
    pub user: String,
    /// The pinned identity key (SPKI DER).
    pub pinned: Vec<u8>,
    /// A different key the contact presented, not accepted yet (SPKI DER).
    pub presented: Option<Vec<u8>>,
}

/// An established MP session (secret).
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionSnapshot {
    /// The peer.
    pub peer: String,
    /// This user sent the request.
    pub requester: bool,
    /// Sending keys ([`SealKeys::to_bytes`], 48 bytes).
    pub send_keys: Vec<u8>,
    /// The next unused send counter.
    pub send_next: u64,
    /// Receiving keys (48 bytes).
    pub recv_keys: Vec<u8>,
    /// Highest counter accepted from the peer.
    pub recv_highest: Option<u64>,
    /// Replay bitmap below it.
    pub recv_bitmap: u64,
}

/// A room session (secret).
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoomSnapshot {
    /// The room.
    pub room: String,
    /// The room secret ([`RoomKeys::secret`], 32 bytes).
    pub secret: Vec<u8>,
    /// This member's next unused counter.
    pub next_counter: u64,
    /// Per sender: highest accepted counter and replay bitmap.
    pub windows: Vec<(String, Option<u64>, u64)>,
}

/// A room request awaiting its answer.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoomPendingSnapshot {
    /// Its request id.
    pub request_id: u32,
    /// `"create"`, `"join"` or `"history"`.
    pub kind: String,
    /// The room.
    pub room: String,
    /// The room secret a create/join installs (32 bytes; empty for history).
    pub secret: Vec<u8>,
}

/// An MP request or acceptance awaiting its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MpPendingSnapshot {
    /// Its request id.
    pub request_id: u32,
    /// The peer.
    pub peer: String,
    /// An acceptance (else a request).
    pub accept: bool,
}

/// A received private message, readable until `expires_ms` (secret).
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReceivedMp {
    /// The sender.
    pub from: String,
    /// The plaintext.
    pub text: String,
    /// Received, Unix milliseconds.
    pub received_ms: u64,
    /// Deleted at, Unix milliseconds (receipt + [`MP_LOCAL_RETENTION`]).
    pub expires_ms: u64,
}

macro_rules! secret_debug_and_drop {
    ($ty:ident, $name:literal, [$($public:ident),*], [$($secret:ident),*]) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($name)$(.field(stringify!($public), &self.$public))*.finish_non_exhaustive()
            }
        }
        impl Drop for $ty {
            fn drop(&mut self) {
                $(self.$secret.zeroize();)*
            }
        }
    };
}
secret_debug_and_drop!(SessionSnapshot, "SessionSnapshot", [peer, send_next], [send_keys, recv_keys]);
secret_debug_and_drop!(RoomSnapshot, "RoomSnapshot", [room, next_counter], [secret]);
secret_debug_and_drop!(RoomPendingSnapshot, "RoomPendingSnapshot", [request_id, kind, room], [secret]);
secret_debug_and_drop!(ReceivedMp, "ReceivedMp", [from, expires_ms], [text]);

fn keys(bytes: &[u8]) -> Result<SealKeys, SnapshotError> {
    let array: &[u8; SealKeys::LEN] = bytes.try_into().map_err(|_| SnapshotError::Malformed("session keys"))?;
    Ok(SealKeys::from_bytes(array))
}

fn room_keys(room: &str, secret: &[u8]) -> Result<RoomKeys, SnapshotError> {
    let array: &[u8; 32] = secret.try_into().map_err(|_| SnapshotError::Malformed("room secret"))?;
    Ok(RoomKeys::from_secret(room, array))
}

impl SecureClient {
    /// Exports the whole state (see [`SecureSnapshot`]): store it
    /// durably before writing the transmits that follow a command.
    #[must_use]
    pub fn snapshot(&self) -> SecureSnapshot {
        let contacts = self.contacts.iter().map(|(user, c)| ContactSnapshot {
            user: user.clone(),
            pinned: c.pinned.spki_der().to_vec(),
            presented: c.presented.as_ref().map(|p| p.spki_der().to_vec()),
        });
        let sessions = self.sessions.iter().map(|(peer, s)| SessionSnapshot {
            peer: peer.clone(),
            requester: s.role() == Role::Requester,
            send_keys: s.sealer().keys().to_bytes().to_vec(),
            send_next: s.sealer().next_counter(),
            recv_keys: s.opener().keys().to_bytes().to_vec(),
            recv_highest: s.opener().window().highest(),
            recv_bitmap: s.opener().window().bitmap(),
        });
        let rooms = self.rooms.iter().map(|(room, s)| RoomSnapshot {
            room: room.clone(),
            secret: s.keys().secret().to_vec(),
            next_counter: s.next_counter(),
            windows: s.windows().into_iter().map(|(sender, w)| (sender, w.highest(), w.bitmap())).collect(),
        });
        let room_pending = self.room_pending.iter().map(|(id, p)| {
            let (kind, room, secret) = match p {
                RoomPending::Create(k) => ("create", k.room().to_owned(), k.secret().to_vec()),
                RoomPending::Join(k) => ("join", k.room().to_owned(), k.secret().to_vec()),
                RoomPending::History(room) => ("history", room.clone(), Vec::new()),
            };
            RoomPendingSnapshot { request_id: *id, kind: kind.to_owned(), room, secret }
        });
        let mp_pending = self.mp_pending.iter().map(|(id, p)| match p {
            MpPending::Request(peer) => MpPendingSnapshot { request_id: *id, peer: peer.clone(), accept: false },
            MpPending::Accept(peer) => MpPendingSnapshot { request_id: *id, peer: peer.clone(), accept: true },
        });
        let mut snapshot = SecureSnapshot {
            client: self.client.snapshot(),
            contacts: contacts.collect(),
            requests: self.requests.values().map(|r| r.export().to_vec()).collect(),
            offers: self.offers.values().map(MpOffer::export).collect(),
            sessions: sessions.collect(),
            rooms: rooms.collect(),
            room_pending: room_pending.collect(),
            mp_pending: mp_pending.collect(),
            inbox: self.snapshot_inbox(),
        };
        // Stable order: equal states give equal snapshots.
        snapshot.contacts.sort_by(|a, b| a.user.cmp(&b.user));
        snapshot.requests.sort();
        snapshot.offers.sort();
        snapshot.sessions.sort_by(|a, b| a.peer.cmp(&b.peer));
        snapshot.rooms.sort_by(|a, b| a.room.cmp(&b.room));
        snapshot.room_pending.sort_by_key(|p| p.request_id);
        snapshot.mp_pending.sort_by_key(|p| p.request_id);
        snapshot
    }

    /// A secure client, not connected, carrying on from `snapshot` (see
    /// [`Client::restore`]); received MPs whose hour is up at `now` are left out.
    pub fn restore(
        config: ClientConfig,
        snapshot: &SecureSnapshot,
        identity: IdentityKey,
        rng: StdRng,
        room_params: HashParams,
        now: Now,
    ) -> Result<SecureClient, SnapshotError> {
        let client = Client::restore(config, &snapshot.client, now)?;
        let me = client.username().map(str::to_owned);
        let mut sc = SecureClient::new(client, identity, rng, room_params, now);
        for c in &snapshot.contacts {
            let key = |der: &[u8]| PublicIdentity::from_spki_der(der).map_err(|_| SnapshotError::Malformed("contact"));
            let presented = c.presented.as_deref().map(key).transpose()?;
            sc.contacts.insert(c.user.clone(), Contact { pinned: key(&c.pinned)?, presented });
        }
        for bytes in &snapshot.requests {
            let request = MpRequest::restore(bytes).map_err(|_| SnapshotError::Malformed("MP request"))?;
            sc.requests.insert(request.accepter().to_owned(), request);
        }
        for bytes in &snapshot.offers {
            let offer = MpOffer::restore(bytes).map_err(|_| SnapshotError::Malformed("MP offer"))?;
            sc.offers.insert(offer.requester().to_owned(), offer);
        }
        let needs_me = !snapshot.sessions.is_empty() || !snapshot.rooms.is_empty();
        let me = match me {
            Some(me) => me,
            None if needs_me => return Err(SnapshotError::Malformed("sessions without a user")),
            None => String::new(),
        };
        for s in &snapshot.sessions {
            let role = if s.requester { Role::Requester } else { Role::Accepter };
            let sealer = Sealer::resume(keys(&s.send_keys)?, s.send_next);
            let window = ReplayWindow::from_parts(s.recv_highest, s.recv_bitmap);
            let opener = Opener::resume(keys(&s.recv_keys)?, window);
            sc.sessions.insert(s.peer.clone(), MpSession::resume(&me, &s.peer, role, sealer, opener));
        }
        for r in &snapshot.rooms {
            let mut session = RoomSession::resume(room_keys(&r.room, &r.secret)?, &me, r.next_counter);
            for (sender, highest, bitmap) in &r.windows {
                session.restore_window(sender, ReplayWindow::from_parts(*highest, *bitmap));
            }
            sc.rooms.insert(r.room.clone(), session);
        }
        for p in &snapshot.room_pending {
            let pending = match p.kind.as_str() {
                "create" => RoomPending::Create(room_keys(&p.room, &p.secret)?),
                "join" => RoomPending::Join(room_keys(&p.room, &p.secret)?),
                "history" => RoomPending::History(p.room.clone()),
                _ => return Err(SnapshotError::Malformed("room request")),
            };
            sc.room_pending.insert(p.request_id, pending);
        }
        for p in &snapshot.mp_pending {
            let pending = if p.accept { MpPending::Accept(p.peer.clone()) } else { MpPending::Request(p.peer.clone()) };
            sc.mp_pending.insert(p.request_id, pending);
        }
        for m in snapshot.inbox.iter().filter(|m| m.expires_ms > now.unix_ms) {
            let left = Duration::from_millis(m.expires_ms - now.unix_ms).min(MP_LOCAL_RETENTION);
            if let Some(at) = now.instant.checked_add(left) {
                sc.inbox.push_back((at, m.from.clone(), m.text.clone()));
            }
        }
        Ok(sc)
    }

    /// The received MPs still held, from every peer, oldest first, with
    /// their receipt and deletion times (Unix milliseconds).
    #[must_use]
    pub fn inbox(&self) -> Vec<ReceivedMp> {
        self.snapshot_inbox()
    }

    fn snapshot_inbox(&self) -> Vec<ReceivedMp> {
        let retention_ms = MP_LOCAL_RETENTION.as_millis() as u64;
        self.inbox
            .iter()
            .map(|(at, from, text)| {
                let left = at.saturating_duration_since(self.clock.instant).as_millis() as u64;
                let expires_ms = self.clock.unix_ms.saturating_add(left);
                ReceivedMp {
                    from: from.clone(),
                    text: text.clone(),
                    received_ms: expires_ms.saturating_sub(retention_ms),
                    expires_ms,
                }
            })
            .collect()
    }
}
