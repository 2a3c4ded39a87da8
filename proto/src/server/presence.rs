//! [`Presence`]: the open sessions, who is online where, and the keepalive
//! timers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use crate::Instant;

use super::keyed::{Keyed, KeyedMap};
use super::session::{Bound, LoginStep, Session};
use super::{OpenError, SessionId, SourceKey};
use crate::wire::Limits;

/// Sessions and the online map. Keeps them consistent: a user is online on
/// at most one session, and that session is open and bound to the user.
#[derive(Debug)]
pub(crate) struct Presence {
    sessions: BTreeMap<SessionId, Session>,
    online: KeyedMap<Arc<str>, SessionId>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Each partial frame's deadline (exact: an entry is removed when its
    /// deadline moves or its session goes).
    frame_deadlines: BTreeSet<(Instant, SessionId)>,
    next_session: u64,
    next_ping: u64,
    /// Counts the changes of the online map (for caches of who is online).
    generation: u64,
}

/// What a session's keepalive timer found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing received for the idle timeout: close it.
    Idle,
    /// Quiet for the keepalive interval: send a ping with this nonce.
    Ping(u64),
    /// Nothing to do yet.
    Wait,
}

impl Presence {
    pub(crate) fn new(hasher: Keyed) -> Presence {
        Presence {
            sessions: BTreeMap::new(),
            online: KeyedMap::with_hasher(hasher),
            timers: BinaryHeap::new(),
            frame_deadlines: BTreeSet::new(),
            next_session: 1,
            next_ping: 1,
            generation: 0,
        }
    }

    /// Changes with every change of who is online where.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Opens a session (at most `max`), its first keepalive due after `keepalive`.
    pub(crate) fn open(
        &mut self,
        now: Instant,
        limits: Limits,
        source: SourceKey,
        keepalive: Duration,
        max: usize,
    ) -> Result<SessionId, OpenError> {
        if self.sessions.len() >= max {
            return Err(OpenError::TooManySessions(max));
        }
        let id = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(id, Session::new(limits, now, source));
        self.timers.push(Reverse((now + keepalive, id)));
        Ok(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    /// Every open session, in order.
    pub(crate) fn ids(&self) -> Vec<SessionId> {
        self.sessions.keys().copied().collect()
    }

    /// The session `user` is online on.
    pub(crate) fn online(&self, user: &str) -> Option<SessionId> {
        self.online.get(user).copied()
    }

    /// The session `user` is online on, with the name as the session holds it (shared).
    pub(crate) fn online_named(&self, user: &str) -> Option<(&Arc<str>, SessionId)> {
        self.online.get_key_value(user).map(|(name, s)| (name, *s))
    }

    /// The user and token family a session acts for.
    pub(crate) fn bound(&self, id: SessionId) -> Option<&Bound> {
        self.sessions.get(&id)?.user.as_ref()
    }

    /// Bytes arrived: the session is alive. With a ping outstanding, its timer was set for the
    /// idle deadline: the next keepalive is brought forward.
    pub(crate) fn received(&mut self, id: SessionId, now: Instant, keepalive: Duration) -> Option<&mut Session> {
        let s = self.sessions.get_mut(&id)?;
        s.last_rx = now;
        if s.ping.take().is_some() {
            self.timers.push(Reverse((now + keepalive, id)));
        }
        Some(s)
    }

    /// Forgets a session. Returns it, and its user if the user was online on it (and now is not).
    pub(crate) fn remove(&mut self, id: SessionId) -> Option<(Session, Option<Arc<str>>)> {
        let s = self.sessions.remove(&id)?;
        if let Some(deadline) = s.frame_deadline {
            self.frame_deadlines.remove(&(deadline, id));
        }
        let gone = s.user.as_ref().filter(|b| self.online.get(&*b.username) == Some(&id)).map(|b| b.username.clone());
        if let Some(user) = &gone {
            self.online.remove(&**user);
            self.generation += 1;
        }
        Some((s, gone))
    }

    /// Makes `id` act for `username` in `family` and puts the user online there. Returns the
    /// session the user was online on before, if another.
    pub(crate) fn bind(&mut self, id: SessionId, username: &str, family: u64) -> Option<SessionId> {
        let name: Arc<str> = Arc::from(username);
        let previous = self.online.insert(name.clone(), id).filter(|old| *old != id);
        self.generation += 1;
        if let Some(s) = self.sessions.get_mut(&id) {
            s.user = Some(Bound { username: name, family });
            s.login = LoginStep::Idle;
            s.token_cache = None;
        }
        previous
    }

    /// The session no longer acts for anyone (logout). Returns its user if the user was online
    /// on it (and now is not).
    pub(crate) fn unbind(&mut self, id: SessionId) -> Option<Arc<str>> {
        let s = self.sessions.get_mut(&id)?;
        s.token_cache = None;
        let bound = s.user.take()?;
        if self.online.get(&*bound.username) == Some(&id) {
            self.online.remove(&*bound.username);
            self.generation += 1;
            return Some(bound.username);
        }
        None
    }

    /// The sessions bound under token `family`, but `except`.
    pub(crate) fn of_family(&self, family: u64, except: Option<SessionId>) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(id, s)| Some(**id) != except && s.user.as_ref().is_some_and(|b| b.family == family))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a session other than `except` exchanged the refresh token
    /// whose SHA-256 is `hash` (and is still open).
    pub(crate) fn exchanged_elsewhere(&self, hash: [u8; 32], except: SessionId) -> bool {
        self.sessions.iter().any(|(id, s)| *id != except && s.refreshed == Some(hash))
    }

    /// Forgets cached access tokens that `revoked` says are revoked.
    pub(crate) fn forget_tokens(&mut self, revoked: impl Fn(&[u8]) -> bool) {
        for s in self.sessions.values_mut() {
            if s.token_cache.as_ref().is_some_and(|(t, _)| revoked(t)) {
                s.token_cache = None;
            }
        }
    }

    /// The session of the earliest timer due at `now`, taken off the timers.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<SessionId> {
        let Reverse((at, id)) = *self.timers.peek()?;
        if at > now {
            return None;
        }
        self.timers.pop();
        Some(id)
    }

    /// When the next timer is due: a keepalive or a frame deadline.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        let keepalive = self.timers.peek().map(|Reverse((at, _))| *at);
        let frame = self.frame_deadlines.first().map(|(at, _)| *at);
        keepalive.into_iter().chain(frame).min()
    }

    /// After input or a finished job: starts, moves or clears the deadline
    /// of the session's partial frame. `grace` and `rate` (bytes per
    /// second, at least 1) are the configuration's `frame_grace` and
    /// `min_frame_rate`.
    pub(crate) fn track_frame(&mut self, id: SessionId, now: Instant, grace: Duration, rate: u32) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let got = s.decoder.buffered() + s.held_outside;
        let deadline = if s.held() || got == 0 {
            s.frame_started = None;
            None
        } else {
            let started = *s.frame_started.get_or_insert(now);
            let earned = Duration::from_millis((got as u64).saturating_mul(1000) / u64::from(rate.max(1)));
            Some(started.checked_add(grace.saturating_add(earned)).unwrap_or(started + grace))
        };
        if s.frame_deadline != deadline {
            if let Some(old) = s.frame_deadline {
                self.frame_deadlines.remove(&(old, id));
            }
            if let Some(new) = deadline {
                self.frame_deadlines.insert((new, id));
            }
            s.frame_deadline = deadline;
        }
    }

    /// A session whose partial frame's deadline is due at `now`, taken off the deadlines.
    pub(crate) fn pop_frame_due(&mut self, now: Instant) -> Option<SessionId> {
        let &(at, id) = self.frame_deadlines.first()?;
        if at > now {
            return None;
        }
        self.frame_deadlines.pop_first();
        if let Some(s) = self.sessions.get_mut(&id) {
            s.frame_deadline = None;
        }
        Some(id)
    }

    /// A session's timer fired: what to do, the next timer set (unless it is idle or gone).
    pub(crate) fn tick(&mut self, id: SessionId, now: Instant, keepalive: Duration, idle: Duration) -> Option<Tick> {
        let s = self.sessions.get_mut(&id)?;
        let silent = now.saturating_duration_since(s.last_rx);
        if silent >= idle {
            return Some(Tick::Idle);
        }
        let (tick, next) = if silent >= keepalive && s.ping.is_none() {
            let nonce = self.next_ping;
            self.next_ping += 1;
            s.ping = Some(nonce);
            (Tick::Ping(nonce), s.last_rx + idle)
        } else if s.ping.is_some() {
            (Tick::Wait, s.last_rx + idle)
        } else {
            (Tick::Wait, s.last_rx + keepalive)
        };
        self.timers.push(Reverse((next, id)));
        Some(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(90);

    fn presence() -> Presence {
        Presence::new(Keyed::derive(&[0; 32], "test"))
    }

    fn open(p: &mut Presence, now: Instant) -> SessionId {
        p.open(now, Limits::DEFAULT, SourceKey::Local, KEEPALIVE, 10).unwrap()
    }

    #[test]
    fn a_user_is_online_on_its_latest_session_only() {
        let now = Instant::now();
        let mut p = presence();
        let (a, b) = (open(&mut p, now), open(&mut p, now));
        assert_eq!(p.bind(a, "al", 1), None);
        assert_eq!(p.bind(a, "al", 1), None, "binding again is not a replacement");
        assert_eq!(p.bind(b, "al", 2), Some(a));
        assert_eq!(p.online("al"), Some(b));
        // The replaced session going away does not take the user offline.
        assert_eq!(p.remove(a).map(|(_, gone)| gone), Some(None));
        assert_eq!(p.online("al"), Some(b));
        assert_eq!(p.remove(b).and_then(|(_, gone)| gone).as_deref(), Some("al"));
        assert_eq!(p.online("al"), None);
    }

    #[test]
    fn logout_unbinds_and_takes_the_user_offline() {
        let now = Instant::now();
        let mut p = presence();
        let a = open(&mut p, now);
        p.bind(a, "al", 3);
        assert_eq!(p.of_family(3, None), [a]);
        assert!(p.of_family(3, Some(a)).is_empty());
        assert_eq!(p.unbind(a).as_deref(), Some("al"));
        assert!(p.bound(a).is_none() && p.online("al").is_none());
        assert_eq!(p.unbind(a), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let now = Instant::now();
        let mut p = presence();
        for _ in 0..2 {
            p.open(now, Limits::DEFAULT, SourceKey::Local, KEEPALIVE, 2).unwrap();
        }
        assert_eq!(p.open(now, Limits::DEFAULT, SourceKey::Local, KEEPALIVE, 2), Err(OpenError::TooManySessions(2)));
    }

    #[test]
    fn a_quiet_session_is_pinged_then_closed() {
        let t0 = Instant::now();
        let mut p = presence();
        let a = open(&mut p, t0);
        assert_eq!(p.pop_due(t0), None);
        assert_eq!(p.pop_due(t0 + KEEPALIVE), Some(a));
        assert_eq!(p.tick(a, t0 + KEEPALIVE, KEEPALIVE, IDLE), Some(Tick::Ping(1)));
        assert_eq!(p.next_timer(), Some(t0 + IDLE), "the next timer is the idle deadline");
        // An answer brings the next keepalive forward.
        p.received(a, t0 + Duration::from_secs(40), KEEPALIVE);
        assert_eq!(p.pop_due(t0 + Duration::from_secs(70)), Some(a));
        assert_eq!(p.tick(a, t0 + Duration::from_secs(70), KEEPALIVE, IDLE), Some(Tick::Ping(2)));
        assert_eq!(p.tick(a, t0 + Duration::from_secs(130), KEEPALIVE, IDLE), Some(Tick::Idle));
    }
}
