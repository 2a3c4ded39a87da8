//! MP handshakes: requests this user makes (and keeps until the peer's
//! acceptance), acceptances, and what the server's answers mean for them.
//!
//! The server holds at most one request per pair of users. Which of this
//! user's handshakes that is, is not always known: a `request_mp` written
//! before the login ended may or may not have been performed
//! (indeterminate), and asking again then gets 409 "already asked" when it
//! was. So every handshake the server may hold stays a candidate
//! ([`PENDING_HANDSHAKES`] per peer at most) until an answer settles it, and
//! an acceptance is completed with whichever candidate it signs. A close
//! notice from the peer ends the candidates settled so far, not a request
//! still awaiting its answer: on a new connection the queued notices arrive
//! before the answers to what the client sends again, so the notice may be
//! about an older conversation.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{SEEN_REQUESTS, SecureClient, SecureError, SecureEvent};
use crate::Now;
use crate::e2e::{HandshakeError, MpOffer, MpRequest, MpSession, safety_number};
use crate::wire::status;

/// How many handshakes to one peer are kept while it is unknown which one
/// the server holds (requests whose outcome was lost, asked again).
pub const PENDING_HANDSHAKES: usize = 4;

/// An MP request or acceptance awaiting its answer.
#[derive(Debug)]
pub(super) enum MpPending {
    /// A `request_mp`, with the handshake it carries until the answer says
    /// whether the server holds it (`None`: restored from a snapshot, which
    /// keeps it among the candidates, or already completed).
    Request { peer: String, handshake: Option<MpRequest> },
    /// An `accept_mp`: its session goes if the server refuses it.
    Accept(String),
    /// A `close_mp`, holding the session it closes (taken out of the
    /// sessions at the call, so that one accepted after the call is not
    /// closed by its answer). The held session still opens what the peer
    /// sent before the server closed the conversation; it goes with a
    /// success or 404, and comes back if the close failed.
    Close { peer: String, session: Option<MpSession> },
}

/// What the server said about a pending MP request or acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Done,
    /// Refused, with this code.
    Failed(u16),
    Indeterminate,
}

impl SecureClient {
    /// Asks `peer` for a private conversation with a signed ephemeral key.
    pub fn request_mp(&mut self, now: Now, peer: &str) -> Result<u32, SecureError> {
        self.clock = now;
        self.check_unblocked(peer)?;
        let me = self.me()?;
        let (handshake, blob) = MpRequest::new(&mut self.rng, &self.identity, &me, peer)?;
        let id = self.client.request_mp(now, peer, blob.into())?;
        self.mp_pending.insert(id, MpPending::Request { peer: peer.to_owned(), handshake: Some(handshake) });
        self.dirty = true;
        Ok(id)
    }

    /// Accepts `peer`'s verified request ([`SecureEvent::MpOffered`]); the
    /// session is ready at once (MPs from `peer` may follow the acceptance),
    /// and dropped again if the server refuses the acceptance.
    pub fn accept_mp(&mut self, now: Now, peer: &str) -> Result<u32, SecureError> {
        self.clock = now;
        self.check_unblocked(peer)?;
        let offer = self.offers.get(peer).ok_or_else(|| SecureError::NoOffer(peer.to_owned()))?;
        let (session, blob) = offer.accept(&mut self.rng, &self.identity)?;
        let id = self.client.accept_mp(now, peer, blob.into())?;
        self.offers.remove(peer);
        self.sessions.insert(peer.to_owned(), session);
        self.mp_pending.insert(id, MpPending::Accept(peer.to_owned()));
        self.dirty = true;
        self.events.push_back(SecureEvent::MpReady { peer: peer.to_owned() });
        Ok(id)
    }

    /// Closes the conversation with `peer` (or withdraws this user's request
    /// to `peer`, or refuses `peer`'s). This user's handshakes to `peer` and
    /// `peer`'s offer go at once, so an acceptance of a withdrawn request
    /// completes nothing. The session is set aside with the request: it
    /// still opens what the peer sent before the server closed the
    /// conversation, goes when the server answers that it closed it (or
    /// 404, nothing open), and comes back if the close failed (401, 503, a
    /// lost connection) and no new session was made meanwhile. A session
    /// accepted after the call is not touched by the answer.
    pub fn close_mp(&mut self, now: Now, peer: &str) -> Result<u32, SecureError> {
        self.clock = now;
        let id = self.client.close_mp(now, peer)?;
        self.offers.remove(peer);
        self.forget_requests(peer);
        let session = self.sessions.remove(peer);
        self.mp_pending.insert(id, MpPending::Close { peer: peer.to_owned(), session });
        self.dirty = true;
        Ok(id)
    }

    /// The sessions set aside by closes awaiting their answer, for `peer`.
    pub(super) fn closing_sessions(&mut self, peer: &str) -> impl Iterator<Item = &mut MpSession> {
        self.mp_pending.values_mut().filter_map(move |p| match p {
            MpPending::Close { peer: p, session: Some(s) } if p == peer => Some(s),
            _ => None,
        })
    }

    /// The answer to `request_id`, if it is a pending MP request or acceptance.
    pub(super) fn on_mp_answer(&mut self, request_id: u32, answer: Answer) {
        let Some(pending) = self.mp_pending.remove(&request_id) else { return };
        self.dirty = true;
        match (pending, answer) {
            // The server holds this one now: no earlier one of ours is pending there.
            (MpPending::Request { peer, handshake: Some(h) }, Answer::Done) => {
                self.requests.insert(peer, vec![h]);
            }
            // Performed or not: it may be the one the server holds.
            (MpPending::Request { peer, handshake: Some(h) }, Answer::Indeterminate) => self.keep_candidate(peer, h),
            // Refused: this handshake is not at the server. With 409
            // "already asked", an earlier one of ours is (kept among the
            // candidates); any other refusal says nothing about those.
            (MpPending::Request { .. }, Answer::Failed(_)) => {}
            (MpPending::Accept(peer), Answer::Failed(_)) => drop(self.sessions.remove(&peer)),
            // Closed, or nothing was open: the server holds nothing of it any more.
            (MpPending::Close { .. }, Answer::Done | Answer::Failed(status::NOT_FOUND)) => {}
            // Not closed (or unknown): the conversation stays as the server has it.
            (MpPending::Close { peer, session: Some(s) }, Answer::Failed(_) | Answer::Indeterminate) => {
                self.sessions.entry(peer).or_insert(s);
            }
            (MpPending::Close { session: None, .. }, _) => {}
            (MpPending::Request { handshake: None, .. }, _)
            | (MpPending::Accept(_), Answer::Done | Answer::Indeterminate) => {}
        }
    }

    /// Keeps `handshake` among those the server may hold for `peer`.
    pub(super) fn keep_candidate(&mut self, peer: String, handshake: MpRequest) {
        let candidates = self.requests.entry(peer).or_default();
        candidates.push(handshake);
        if candidates.len() > PENDING_HANDSHAKES {
            candidates.remove(0);
        }
    }

    /// Every handshake to `peer` the server may hold: settled candidates,
    /// then requests still awaiting their answer (oldest first).
    fn candidates<'a>(
        requests: &'a BTreeMap<String, Vec<MpRequest>>,
        mp_pending: &'a BTreeMap<u32, MpPending>,
        peer: &str,
    ) -> Vec<&'a MpRequest> {
        let mut in_flight: Vec<(u32, &MpRequest)> = mp_pending
            .iter()
            .filter_map(|(id, p)| match p {
                MpPending::Request { peer: p, handshake: Some(h) } if p == peer => Some((*id, h)),
                _ => None,
            })
            .collect();
        in_flight.sort_by_key(|(id, _)| *id);
        let settled = requests.get(peer).into_iter().flatten();
        settled.chain(in_flight.into_iter().map(|(_, h)| h)).collect()
    }

    /// Forgets every handshake to `peer`, those awaiting their answer too
    /// (the conversation opened, or the peer's key changed).
    pub(super) fn forget_requests(&mut self, peer: &str) {
        self.requests.remove(peer);
        for pending in self.mp_pending.values_mut() {
            if let MpPending::Request { peer: p, handshake } = pending
                && p == peer
            {
                *handshake = None;
            }
        }
    }

    pub(super) fn on_request(&mut self, from: &str, identity_key: &[u8], handshake: &[u8]) {
        let Some(key) = self.pin(from, identity_key) else { return };
        let Some(me) = self.client.username().map(str::to_owned) else { return };
        match MpOffer::verify(from, &key, &me, handshake) {
            Ok(offer) => {
                // A request is answered once: the same signed ephemeral key
                // again is a replay (it would replace a working session).
                let digest: [u8; 32] = Sha256::digest(offer.ephemeral()).into();
                let seen = self.seen_requests.entry(from.to_owned()).or_default();
                if seen.contains(&digest) {
                    let reason = "replayed request (this ephemeral key was already offered)".to_owned();
                    return self.events.push_back(SecureEvent::HandshakeRejected { peer: from.to_owned(), reason });
                }
                seen.push_back(digest);
                while seen.len() > SEEN_REQUESTS {
                    seen.pop_front();
                }
                self.offers.insert(from.to_owned(), offer);
                let number = safety_number(&me, self.identity.public(), from, &key);
                self.events.push_back(SecureEvent::MpOffered { from: from.to_owned(), safety_number: number });
            }
            Err(error) => {
                let reason = error.to_string();
                self.events.push_back(SecureEvent::HandshakeRejected { peer: from.to_owned(), reason });
            }
        }
    }

    /// `peer` accepted a request of ours: completed with the candidate whose
    /// ephemeral key the acceptance signs.
    pub(super) fn on_accepted(&mut self, peer: &str, identity_key: &[u8], handshake: &[u8]) {
        let Some(key) = self.pin(peer, identity_key) else { return };
        let mut outcome: Option<Result<_, HandshakeError>> = None;
        for candidate in Self::candidates(&self.requests, &self.mp_pending, peer) {
            match candidate.complete(&mut self.rng, &key, handshake) {
                Ok(session) => {
                    outcome = Some(Ok(session));
                    break;
                }
                Err(error) => outcome = Some(Err(error)),
            }
        }
        match outcome {
            Some(Ok(session)) => {
                self.forget_requests(peer);
                self.sessions.insert(peer.to_owned(), session);
                self.events.push_back(SecureEvent::MpReady { peer: peer.to_owned() });
            }
            Some(Err(error)) => {
                let reason = error.to_string();
                self.events.push_back(SecureEvent::HandshakeRejected { peer: peer.to_owned(), reason });
            }
            None => {
                let reason = "no request of ours pending".to_owned();
                self.events.push_back(SecureEvent::HandshakeRejected { peer: peer.to_owned(), reason });
            }
        }
    }
}
