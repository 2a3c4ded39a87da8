//! The outbox: every request from the moment it is made until its answer
//! arrives, whatever the answer. Requests survive reconnections and are sent
//! again with their original id (the server answers a retried `send_mp`,
//! `send_room`, `request_mp`, `accept_mp` or `close_mp` from its record
//! instead of performing it twice).

use std::collections::BTreeMap;

use crate::wire::{Opcode, RequestBody};

/// Who made a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The application, through a command: its outcome is reported.
    User,
    /// The client, acknowledging delivered lane items: only failures are reported.
    Ack,
    /// The client, binding a new connection of an external-token session
    /// (a `fetch_key` of its own name): nothing is reported.
    Hello,
}

/// One request waiting for its answer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: u32,
    /// The client's wall clock when the request was made (kept across resends).
    pub(crate) timestamp_ms: u64,
    pub(crate) body: RequestBody,
    pub(crate) origin: Origin,
    /// Written on the current connection and not answered yet.
    pub(crate) sent: bool,
    /// Written on some connection: the server may have performed it.
    pub(crate) written: bool,
    /// The token generation it was last written with.
    pub(crate) sent_gen: u64,
    /// Times the server refused the newest token for it (419, 401).
    pub(crate) auth_refusals: u8,
}

impl Entry {
    pub(crate) fn new(id: u32, timestamp_ms: u64, body: RequestBody, origin: Origin) -> Entry {
        Entry { id, timestamp_ms, body, origin, sent: false, written: false, sent_gen: 0, auth_refusals: 0 }
    }

    pub(crate) fn opcode(&self) -> Opcode {
        self.body.opcode()
    }

    pub(crate) fn needs_auth(&self) -> bool {
        needs_auth(self.opcode())
    }
}

/// Whether requests with this opcode carry the access token
/// (`docs/PROTOCOL.md`, "Authentication").
pub(crate) fn needs_auth(opcode: Opcode) -> bool {
    !opcode.has_empty_auth()
}

/// Requests by id; ids only grow, so id order is the order they were made.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    entries: BTreeMap<u32, Entry>,
    /// Entries whose origin is [`Origin::User`] (the ones `max_outbox` bounds).
    user: usize,
    /// An entry was added or removed since the last checkpoint.
    changed: bool,
}

impl Outbox {
    /// Every entry, acknowledgements included.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries made by the application.
    pub(crate) fn user_len(&self) -> usize {
        self.user
    }

    /// Every entry, in id order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Whether an entry was added or removed since the last checkpoint.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// The store holds the current entries.
    pub(crate) fn checkpointed(&mut self) {
        self.changed = false;
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.changed = true;
        if entry.origin == Origin::User {
            self.user += 1;
        }
        if let Some(old) = self.entries.insert(entry.id, entry)
            && old.origin == Origin::User
        {
            // Ids are never reused; this keeps the count exact if one were.
            self.user -= 1;
        }
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.get_mut(&id)
    }

    /// Removes the entry `id` if it is a request with this opcode.
    pub(crate) fn take(&mut self, id: u32, opcode: Opcode) -> Option<Entry> {
        if self.entries.get(&id)?.opcode() != opcode {
            return None;
        }
        self.remove(id)
    }

    /// Ids of the entries not yet written on this connection that may be
    /// written now, in order: anonymous ones always, authenticated ones when
    /// `authed` (the connection is logged in and no refresh is under way).
    pub(crate) fn ready(&self, authed: bool) -> Vec<u32> {
        self.entries.values().filter(|e| !e.sent && (authed || !e.needs_auth())).map(|e| e.id).collect()
    }

    /// The connection is gone: authenticated entries wait for the next one;
    /// anonymous entries already written (a `register`) cannot be retried
    /// safely and are removed and returned.
    pub(crate) fn connection_lost(&mut self) -> Vec<Entry> {
        let lost: Vec<u32> = self.entries.values().filter(|e| e.sent && !e.needs_auth()).map(|e| e.id).collect();
        for e in self.entries.values_mut() {
            e.sent = false;
        }
        lost.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns the application's entries written on the
    /// current connection and not answered, in order.
    pub(crate) fn take_written_here(&mut self) -> Vec<Entry> {
        let ids: Vec<u32> =
            self.entries.values().filter(|e| e.sent && e.origin == Origin::User).map(|e| e.id).collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns every authenticated entry, in order.
    pub(crate) fn drain_auth(&mut self) -> Vec<Entry> {
        let ids: Vec<u32> = self.entries.values().filter(|e| e.needs_auth()).map(|e| e.id).collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Whether an entry of this origin is waiting.
    pub(crate) fn has_origin(&self, origin: Origin) -> bool {
        self.entries.values().any(|e| e.origin == origin)
    }

    /// Whether an acknowledgement of `peer`'s items up to `seq` or beyond is already waiting.
    pub(crate) fn ack_covers(&self, peer: &str, seq: u64) -> bool {
        self.entries.values().any(|e| {
            e.origin == Origin::Ack && matches!(&e.body, RequestBody::DeliveryAck(a) if a.peer == peer && a.seq >= seq)
        })
    }

    /// The acknowledgement for `peer` not written yet, if any (it can be raised instead of adding another).
    pub(crate) fn unsent_ack_mut(&mut self, peer: &str) -> Option<&mut Entry> {
        self.entries.values_mut().find(|e| {
            e.origin == Origin::Ack && !e.sent && matches!(&e.body, RequestBody::DeliveryAck(a) if a.peer == peer)
        })
    }

    fn remove(&mut self, id: u32) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.changed = true;
        if entry.origin == Origin::User {
            self.user -= 1;
        }
        Some(entry)
    }
}
