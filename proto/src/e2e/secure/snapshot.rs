//! The whole state of a [`SecureClient`] as plain data, for a stored profile.
//!
//! [`SecureClient::snapshot`] exports: the wrapped client's
//! [`ClientSnapshot`], the contact book (pinned keys and any changed key
//! awaiting acceptance), handshakes in flight (the requester's ephemeral
//! secret included), verified offers and the request keys already seen, MP
//! sessions (stream keys and what was accepted), room sessions (descriptor,
//! room secret, what was accepted per sender), requests awaiting their
//! answer whose outcome changes e2e state, and the received MPs with their
//! expiry. [`SecureClient::restore`] is the inverse.
//!
//! No sending state is in it: a restored client seals in new random epochs
//! (docs/E2E.md), so restoring any snapshot, however old, never reuses a
//! (key, nonce) pair. **Durability rule**: store the snapshot taken after a
//! command before writing the transmits that follow it, so that the outbox
//! and what was accepted survive a crash (an older snapshot could accept a
//! replay of what was received after it, never reuse key stream).
//!
//! Every secret field is erased from memory when its struct is dropped.
//! The identity key is not part of the snapshot: the caller stores it
//! (encrypted) and hands it to `restore`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use zeroize::Zeroize;

use super::mp::MpPending;
use super::{Contact, MP_LOCAL_RETENTION, Received, RoomPending, SecureClient};
use crate::client::{ClientSnapshot, SnapshotError};
use crate::e2e::{
    EpochRecord, IdentityKey, MpOffer, MpRequest, MpSession, Opener, PublicIdentity, ReplayState, Role, RoomDescriptor,
    RoomKeys, RoomSession, StreamKey,
};
use crate::server::HashParams;
use crate::{Client, ClientConfig, Now};

/// The whole state of a [`SecureClient`] but its identity key: the client's
/// [`ClientSnapshot`], contacts, handshakes, MP and room sessions with their
/// counters and replay windows, pending requests and received MPs.
///
/// **Durability rule**: store the snapshot taken after a command before
/// writing the transmits that follow it (outbox, replay state). Restoring
/// an older one never reuses key stream. Secret fields are erased from
/// memory on drop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SecureSnapshot {
    /// The wrapped client's resumable state.
    pub client: ClientSnapshot,
    /// The contact book.
    pub contacts: Vec<ContactSnapshot>,
    /// Handshakes this user started that the server may hold, awaiting acceptance
    /// ([`MpRequest::export`]; secret): peer by peer, oldest first. Requests still
    /// awaiting their answer keep theirs in [`MpPendingSnapshot::handshake`].
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
    /// Request ephemeral keys seen per peer (a replayed request is refused).
    pub seen_requests: Vec<SeenRequestsSnapshot>,
    /// What was accepted in room incarnations no session holds, oldest first.
    pub retired_rooms: Vec<RetiredRoomSnapshot>,
}

/// What was accepted in a room incarnation that a later join or create replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetiredRoomSnapshot {
    /// The room.
    pub room: String,
    /// The incarnation's room id (16 bytes).
    pub room_id: Vec<u8>,
    /// What was accepted, per sender.
    pub received: Vec<ReceivedSnapshot>,
}

impl Drop for SecureSnapshot {
    fn drop(&mut self) {
        self.requests.iter_mut().for_each(Zeroize::zeroize);
        self.mp_pending.iter_mut().filter_map(|p| p.handshake.as_mut()).for_each(Zeroize::zeroize);
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

/// An established MP session (secret). The sending epoch is not part of
/// it: a restored session always sends in a new epoch.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SessionSnapshot {
    /// The peer.
    pub peer: String,
    /// This user sent the request.
    pub requester: bool,
    /// Sending stream key (32 bytes).
    pub send_stream: Vec<u8>,
    /// Receiving stream key (32 bytes).
    pub recv_stream: Vec<u8>,
    /// What was accepted from the peer.
    pub received: ReceivedSnapshot,
    /// The `close_mp` (its request id) that set this session aside, awaiting
    /// its answer; `None`: the peer's current session.
    #[cfg_attr(feature = "serde", serde(default))]
    pub closing: Option<u32>,
}

/// What a receiver accepted of one stream (see [`ReplayState`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReceivedSnapshot {
    /// The sender (room streams; empty for an MP session).
    pub sender: String,
    /// The epochs remembered.
    pub epochs: Vec<EpochRecord>,
    /// The floor for unknown epochs.
    pub floor_ms: Option<u64>,
}

impl ReceivedSnapshot {
    fn of(sender: &str, state: &ReplayState) -> Self {
        Self { sender: sender.to_owned(), epochs: state.records(), floor_ms: state.floor_ms() }
    }

    fn state(&self) -> ReplayState {
        ReplayState::from_parts(&self.epochs, self.floor_ms)
    }
}

/// A room session (secret). As for MP sessions, the sending epoch is not part of it.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoomSnapshot {
    /// The room.
    pub room: String,
    /// The room's descriptor (room id and costs).
    pub descriptor: Vec<u8>,
    /// The room secret ([`RoomKeys::secret`], 32 bytes).
    pub secret: Vec<u8>,
    /// What was accepted, per sender.
    pub received: Vec<ReceivedSnapshot>,
}

/// A room request awaiting its answer. The first step of a join
/// (`room_info`, which holds the password) is never part of a snapshot: a
/// restored client reports nothing for it and the join is started again.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RoomPendingSnapshot {
    /// Its request id.
    pub request_id: u32,
    /// `"create"`, `"join"` or `"history"`.
    pub kind: String,
    /// The room.
    pub room: String,
    /// The room's descriptor (empty for history).
    pub descriptor: Vec<u8>,
    /// The room secret a create/join installs (32 bytes; empty for history).
    pub secret: Vec<u8>,
    /// For a join: the id the caller holds for the whole join.
    pub op: u32,
}

/// The request ephemeral keys seen from one peer (SHA-256 each).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SeenRequestsSnapshot {
    /// The peer.
    pub peer: String,
    /// SHA-256 of each ephemeral key, oldest first.
    pub digests: Vec<Vec<u8>>,
}

/// An MP request or acceptance awaiting its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MpPendingSnapshot {
    /// Its request id.
    pub request_id: u32,
    /// The peer.
    pub peer: String,
    /// An acceptance (else a request, or a close).
    pub accept: bool,
    /// A close (absent in profiles written before closes were kept).
    #[cfg_attr(feature = "serde", serde(default))]
    pub close: bool,
    /// A request's handshake ([`MpRequest::export`]; secret), while its
    /// answer has not said whether the server holds it. Absent in profiles
    /// written before it existed: their in-flight handshakes are among
    /// [`SecureSnapshot::requests`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub handshake: Option<Vec<u8>>,
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
secret_debug_and_drop!(SessionSnapshot, "SessionSnapshot", [peer, received], [send_stream, recv_stream]);
secret_debug_and_drop!(RoomSnapshot, "RoomSnapshot", [room, received], [secret]);
secret_debug_and_drop!(RoomPendingSnapshot, "RoomPendingSnapshot", [request_id, kind, room], [secret]);
secret_debug_and_drop!(ReceivedMp, "ReceivedMp", [from, expires_ms], [text]);

fn stream(bytes: &[u8]) -> Result<StreamKey, SnapshotError> {
    let array: [u8; StreamKey::LEN] = bytes.try_into().map_err(|_| SnapshotError::Malformed("session keys"))?;
    Ok(StreamKey::from_bytes(array))
}

fn room_keys(room: &str, descriptor: &[u8], secret: &[u8]) -> Result<RoomKeys, SnapshotError> {
    let descriptor = RoomDescriptor::from_bytes(descriptor).map_err(|_| SnapshotError::Malformed("room descriptor"))?;
    let array: &[u8; 32] = secret.try_into().map_err(|_| SnapshotError::Malformed("room secret"))?;
    Ok(RoomKeys::from_secret(room, &descriptor, array))
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
        let session_of = |peer: &String, s: &MpSession, closing: Option<u32>| SessionSnapshot {
            peer: peer.clone(),
            requester: s.role() == Role::Requester,
            send_stream: s.send_stream().as_bytes().to_vec(),
            recv_stream: s.opener().stream().as_bytes().to_vec(),
            received: ReceivedSnapshot::of("", s.opener().state()),
            closing,
        };
        let closing = self.mp_pending.iter().filter_map(|(id, p)| match p {
            MpPending::Close { peer, session: Some(s) } => Some(session_of(peer, s, Some(*id))),
            _ => None,
        });
        let sessions = self.sessions.iter().map(|(peer, s)| session_of(peer, s, None)).chain(closing);
        let rooms = self.rooms.iter().map(|(room, s)| RoomSnapshot {
            room: room.clone(),
            descriptor: s.keys().descriptor().to_bytes().to_vec(),
            secret: s.keys().secret().to_vec(),
            received: s.received_all().iter().map(|(sender, state)| ReceivedSnapshot::of(sender, state)).collect(),
        });
        let room_pending = self.room_pending.iter().filter_map(|(id, p)| {
            let keys_of = |k: &RoomKeys| (k.room().to_owned(), k.descriptor().to_bytes().to_vec(), k.secret().to_vec());
            let (kind, (room, descriptor, secret), op) = match p {
                RoomPending::Create(k) => ("create", keys_of(k), 0),
                RoomPending::Join { keys, op } => ("join", keys_of(keys), *op),
                RoomPending::History(room) => ("history", (room.clone(), Vec::new(), Vec::new()), 0),
                RoomPending::Info { .. } => return None,
            };
            Some(RoomPendingSnapshot { request_id: *id, kind: kind.to_owned(), room, descriptor, secret, op })
        });
        let seen_requests = self.seen_requests.iter().map(|(peer, digests)| SeenRequestsSnapshot {
            peer: peer.clone(),
            digests: digests.iter().map(|d| d.to_vec()).collect(),
        });
        // A request awaiting its answer keeps its handshake with it, so that
        // the answer still settles it after a restart (a refusal drops it).
        let mp_pending = self.mp_pending.iter().map(|(id, p)| match p {
            MpPending::Request { peer, handshake } => MpPendingSnapshot {
                request_id: *id,
                peer: peer.clone(),
                accept: false,
                close: false,
                handshake: handshake.as_ref().map(|h| h.export().to_vec()),
            },
            MpPending::Accept(peer) => {
                MpPendingSnapshot { request_id: *id, peer: peer.clone(), accept: true, close: false, handshake: None }
            }
            MpPending::Close { peer, .. } => {
                MpPendingSnapshot { request_id: *id, peer: peer.clone(), accept: false, close: true, handshake: None }
            }
        });
        // The settled candidates, peer by peer, oldest first (the order says
        // which one goes when a peer has too many).
        let requests = self.requests.values().flatten().map(|r| r.export().to_vec());
        let mut snapshot = SecureSnapshot {
            client: self.client.snapshot(),
            contacts: contacts.collect(),
            requests: requests.collect(),
            offers: self.offers.values().map(MpOffer::export).collect(),
            sessions: sessions.collect(),
            rooms: rooms.collect(),
            room_pending: room_pending.collect(),
            mp_pending: mp_pending.collect(),
            inbox: self.snapshot_inbox(),
            seen_requests: seen_requests.collect(),
            retired_rooms: self
                .retired_rooms
                .iter()
                .map(|(room, id, received)| RetiredRoomSnapshot {
                    room: room.clone(),
                    room_id: id.to_vec(),
                    received: received.iter().map(|(sender, state)| ReceivedSnapshot::of(sender, state)).collect(),
                })
                .collect(),
        };
        // Stable order: equal states give equal snapshots.
        snapshot.contacts.sort_by(|a, b| a.user.cmp(&b.user));
        snapshot.offers.sort();
        snapshot.sessions.sort_by(|a, b| (&a.peer, a.closing).cmp(&(&b.peer, b.closing)));
        snapshot.rooms.sort_by(|a, b| a.room.cmp(&b.room));
        snapshot.room_pending.sort_by_key(|p| p.request_id);
        snapshot.mp_pending.sort_by_key(|p| p.request_id);
        snapshot.seen_requests.sort_by(|a, b| a.peer.cmp(&b.peer));
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
            sc.keep_candidate(request.accepter().to_owned(), request);
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
        let mut closing = BTreeMap::new();
        for s in &snapshot.sessions {
            let role = if s.requester { Role::Requester } else { Role::Accepter };
            let opener = Opener::resume(stream(&s.recv_stream)?, s.received.state());
            let session = MpSession::resume(&me, &s.peer, role, stream(&s.send_stream)?, opener, &mut sc.rng);
            match s.closing {
                Some(id) => drop(closing.insert(id, (s.peer.clone(), session))),
                None => drop(sc.sessions.insert(s.peer.clone(), session)),
            }
        }
        for r in &snapshot.rooms {
            let keys = room_keys(&r.room, &r.descriptor, &r.secret)?;
            let mut session = RoomSession::new(keys, &me, &mut sc.rng);
            for received in &r.received {
                session.restore_received(&received.sender, received.state());
            }
            sc.rooms.insert(r.room.clone(), session);
        }
        for r in &snapshot.retired_rooms {
            let id: [u8; 16] = r.room_id.as_slice().try_into().map_err(|_| SnapshotError::Malformed("room id"))?;
            let received = r.received.iter().map(|s| (s.sender.clone(), s.state())).collect();
            sc.retired_rooms.push_back((r.room.clone(), id, received));
        }
        for seen in &snapshot.seen_requests {
            let digests = seen.digests.iter().filter_map(|d| <[u8; 32]>::try_from(d.as_slice()).ok()).collect();
            sc.seen_requests.insert(seen.peer.clone(), digests);
        }
        for p in &snapshot.room_pending {
            let pending = match p.kind.as_str() {
                "create" => RoomPending::Create(room_keys(&p.room, &p.descriptor, &p.secret)?),
                "join" => RoomPending::Join { keys: room_keys(&p.room, &p.descriptor, &p.secret)?, op: p.op },
                "history" => RoomPending::History(p.room.clone()),
                _ => return Err(SnapshotError::Malformed("room request")),
            };
            sc.room_pending.insert(p.request_id, pending);
        }
        for p in &snapshot.mp_pending {
            let pending = if p.accept {
                MpPending::Accept(p.peer.clone())
            } else if p.close {
                let session = closing.remove(&p.request_id).map(|(_, s)| s);
                MpPending::Close { peer: p.peer.clone(), session }
            } else {
                // Without its handshake (an older profile), the request's
                // handshake is among the candidates restored above.
                let restore = |b: &Vec<u8>| MpRequest::restore(b).map_err(|_| SnapshotError::Malformed("MP request"));
                MpPending::Request { peer: p.peer.clone(), handshake: p.handshake.as_ref().map(restore).transpose()? }
            };
            sc.mp_pending.insert(p.request_id, pending);
        }
        // A session set aside by a close the snapshot no longer holds: kept, if the peer has no other.
        for (peer, session) in closing.into_values() {
            sc.sessions.entry(peer).or_insert(session);
        }
        for m in snapshot.inbox.iter().filter(|m| m.expires_ms > now.unix_ms) {
            let left = Duration::from_millis(m.expires_ms - now.unix_ms).min(MP_LOCAL_RETENTION);
            if let Some(at) = now.instant.checked_add(left) {
                let received = Received { at, expires_ms: m.expires_ms, from: m.from.clone(), text: m.text.clone() };
                sc.inbox.push_back(received);
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
            .map(|m| ReceivedMp {
                from: m.from.clone(),
                text: m.text.clone(),
                received_ms: m.expires_ms.saturating_sub(retention_ms),
                expires_ms: m.expires_ms,
            })
            .collect()
    }
}
