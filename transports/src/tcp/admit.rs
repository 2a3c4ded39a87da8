//! Who may start a TLS handshake: the connection cap, the handshake slots,
//! each source's share of them, and the handshake timeout that shortens
//! under pressure. Counts every refusal by reason, for the loop's log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use confab_proto::server::SourceKey;

use super::TcpLimits;

/// Connections a [`TcpServer`](super::TcpServer) refused or gave up on,
/// per reason, since it was bound (monotonic counters: the loop logs the
/// difference between two readings, see [`TcpRefusals::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpRefusals {
    /// Refused: [`TcpLimits::max_connections`] sockets were held.
    pub connections: u64,
    /// Refused: every one of the [`TcpLimits::max_handshaking`] slots was taken.
    pub handshaking: u64,
    /// Refused: the peer's source (its IPv4 address, or its IPv6 /64) held
    /// [`TcpLimits::max_handshaking_per_source`] slots already.
    pub per_source: u64,
    /// Refused: the connection could not be set up (TLS state, poll registration).
    pub setup: u64,
    /// Accepted, then dropped because the TLS handshake did not finish in time.
    pub timed_out: u64,
}

impl TcpRefusals {
    /// Connections refused at accept (every reason but `timed_out`).
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.connections + self.handshaking + self.per_source + self.setup
    }

    /// Everything counted, timeouts included.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.refused() + self.timed_out
    }

    /// The counts since `earlier` (a previous reading of the same server).
    #[must_use]
    pub fn since(&self, earlier: &TcpRefusals) -> TcpRefusals {
        TcpRefusals {
            connections: self.connections.saturating_sub(earlier.connections),
            handshaking: self.handshaking.saturating_sub(earlier.handshaking),
            per_source: self.per_source.saturating_sub(earlier.per_source),
            setup: self.setup.saturating_sub(earlier.setup),
            timed_out: self.timed_out.saturating_sub(earlier.timed_out),
        }
    }
}

/// The handshake slots: how many are taken, and by which source.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    handshaking: usize,
    /// Handshakes in progress per source; a source with none has no entry.
    by_source: HashMap<SourceKey, usize>,
    pub(crate) counts: TcpRefusals,
}

impl Admission {
    /// Connections in their handshake.
    pub(crate) fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Sources holding at least one handshake slot.
    pub(crate) fn sources(&self) -> usize {
        self.by_source.len()
    }

    /// Whether a connection from `peer` may start its handshake while `held`
    /// sockets are held; if so its slot is taken and the handshake gets the
    /// returned timeout: [`TcpLimits::handshake_timeout`], or
    /// [`TcpLimits::busy_handshake_timeout`] once half the slots are taken.
    /// A refusal is counted.
    pub(crate) fn admit(&mut self, peer: SocketAddr, held: usize, limits: &TcpLimits) -> Option<Duration> {
        if held >= limits.max_connections {
            self.counts.connections += 1;
            return None;
        }
        if self.handshaking >= limits.max_handshaking {
            self.counts.handshaking += 1;
            return None;
        }
        let key = SourceKey::from_ip(peer.ip());
        if self.by_source.get(&key).copied().unwrap_or(0) >= limits.max_handshaking_per_source {
            self.counts.per_source += 1;
            return None;
        }
        *self.by_source.entry(key).or_insert(0) += 1;
        let busy = self.handshaking.saturating_mul(2) >= limits.max_handshaking;
        self.handshaking += 1;
        Some(if busy { limits.busy_handshake_timeout.min(limits.handshake_timeout) } else { limits.handshake_timeout })
    }

    /// A handshake that [`admit`](Admission::admit) let in is over (done,
    /// failed, timed out, or never set up): its slot is free.
    pub(crate) fn release(&mut self, peer: SocketAddr) {
        self.handshaking = self.handshaking.saturating_sub(1);
        let key = SourceKey::from_ip(peer.ip());
        if let Some(n) = self.by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TcpLimits {
        TcpLimits {
            max_connections: 100,
            max_handshaking: 8,
            max_handshaking_per_source: 3,
            handshake_timeout: Duration::from_secs(10),
            busy_handshake_timeout: Duration::from_secs(2),
            ..TcpLimits::default()
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let (mut a, l) = (Admission::default(), limits());
        for _ in 0..3 {
            assert!(a.admit(peer("10.0.0.1"), 0, &l).is_some());
        }
        assert_eq!(a.admit(peer("10.0.0.1"), 0, &l), None);
        assert_eq!(a.counts.per_source, 1);
        assert!(a.admit(peer("10.0.0.2"), 0, &l).is_some());
        a.release(peer("10.0.0.1"));
        assert!(a.admit(peer("10.0.0.1"), 0, &l).is_some());
        assert_eq!((a.handshaking(), a.sources()), (4, 2));
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64_prefix() {
        let (mut a, l) = (Admission::default(), limits());
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            assert!(a.admit(peer(host), 0, &l).is_some());
        }
        assert_eq!(a.admit(peer("2001:db8::3"), 0, &l), None, "same /64");
        assert!(a.admit(peer("2001:db8:0:1::1"), 0, &l).is_some(), "another /64");
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        for _ in 0..3 {
            assert!(a.admit(peer("10.0.0.9"), 0, &l).is_some());
        }
        assert_eq!(a.admit(peer("::ffff:10.0.0.9"), 0, &l), None);
    }

    #[test]
    fn past_half_the_slots_the_timeout_is_the_busy_one() {
        let (mut a, l) = (Admission::default(), limits());
        let timeouts: Vec<_> = (0..8).map(|i| a.admit(peer(&format!("10.0.1.{i}")), 0, &l).unwrap()).collect();
        let (calm, busy) = timeouts.split_at(4);
        assert!(calm.iter().all(|t| *t == l.handshake_timeout), "{timeouts:?}");
        assert!(busy.iter().all(|t| *t == l.busy_handshake_timeout), "{timeouts:?}");
        assert_eq!(a.admit(peer("10.0.2.1"), 0, &l), None);
        assert_eq!(a.counts.handshaking, 1);
        for i in 0..8 {
            a.release(peer(&format!("10.0.1.{i}")));
        }
        assert_eq!((a.handshaking(), a.sources()), (0, 0));
        assert_eq!(a.admit(peer("10.0.2.1"), 100, &l), None);
        assert_eq!(a.counts, TcpRefusals { connections: 1, handshaking: 1, ..TcpRefusals::default() });
    }
}
