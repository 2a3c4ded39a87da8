//! Per-connection state inside the server machine.

use crate::Instant;

use bytes::Bytes;

use super::ratelimit::FailureWindow;
use super::work::JobId;
use crate::wire::{FrameDecoder, Limits};

/// An opaque handle for one connection, chosen by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Where a connection comes from, as its transport sees it: the key of the
/// per-source login limit. The adapter derives it from the peer address
/// ([`SourceKey::from_ip`]); in-process links (mem, simulator) use
/// [`SourceKey::Local`], which the per-source limit does not apply to (the
/// per-account and per-connection limits still do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    /// An in-process link: no network peer.
    Local,
    /// A network peer: an IPv4 address (as its IPv4-mapped IPv6 form), or
    /// the /64 prefix of an IPv6 address (one subscriber's allocation).
    Ip(u128),
}

impl SourceKey {
    /// The key of a peer address: IPv4 addresses one by one, IPv6 by /64.
    #[must_use]
    pub fn from_ip(ip: std::net::IpAddr) -> SourceKey {
        match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => SourceKey::Ip(u128::from(v4.to_ipv6_mapped())),
            std::net::IpAddr::V6(v6) => SourceKey::Ip(u128::from(v6) & !((1u128 << 64) - 1)),
        }
    }
}

/// The user a session acts for.
#[derive(Debug, Clone)]
pub(crate) struct Bound {
    /// Shared, so that authenticating a request costs no allocation.
    pub(crate) username: std::sync::Arc<str>,
    /// Token family the session authenticated with.
    pub(crate) family: u64,
}

/// Where a session is in the two-step login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginStep {
    /// Nothing under way.
    Idle,
    /// The password was right; the passphrase is expected next.
    PasswordOk { username: String },
}

/// One connection: its decoder, who it acts for, where its login is, its keepalive.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) decoder: FrameDecoder,
    pub(crate) user: Option<Bound>,
    pub(crate) login: LoginStep,
    /// A request of this session waits on this job; later frames wait in the decoder.
    pub(crate) busy: Option<JobId>,
    /// A request of this session waits for another partition's answer
    /// (its target and ticket); later frames wait in the decoder (requests
    /// are handled in order).
    pub(crate) waiting_mail: Option<(u8, u64)>,
    pub(crate) failures: FailureWindow,
    /// Where the connection comes from.
    pub(crate) source: SourceKey,
    /// The SHA-256 of the refresh token this connection last exchanged: the
    /// retry grace of that exchange is bound to this connection.
    pub(crate) refreshed: Option<[u8; 32]>,
    /// The last access token that authenticated here, and its expiry (skips the hash lookup).
    pub(crate) token_cache: Option<(Bytes, u64)>,
    pub(crate) last_rx: Instant,
    pub(crate) ping: Option<u64>,
    /// When the first byte of the partial frame in the decoder arrived
    /// (`None`: no partial frame, or frames wait behind a job).
    pub(crate) frame_started: Option<Instant>,
    /// When that frame must be complete, as it now stands (its entry in
    /// `Presence`'s frame deadlines).
    pub(crate) frame_deadline: Option<Instant>,
    /// Bytes of a partial frame the node holds outside the decoder (a
    /// split state's switchboard, `Server::handle_partial`): they count
    /// toward the frame deadline as the decoder's would.
    pub(crate) held_outside: usize,
}

impl Session {
    /// Whether later frames wait (a password check, or another partition's answer).
    pub(crate) fn held(&self) -> bool {
        self.busy.is_some() || self.waiting_mail.is_some()
    }

    pub(crate) fn new(limits: Limits, now: Instant, source: SourceKey) -> Session {
        Session {
            decoder: FrameDecoder::new(limits),
            user: None,
            login: LoginStep::Idle,
            busy: None,
            waiting_mail: None,
            failures: FailureWindow::default(),
            source,
            refreshed: None,
            token_cache: None,
            last_rx: now,
            ping: None,
            frame_started: None,
            frame_deadline: None,
            held_outside: 0,
        }
    }

    pub(crate) fn username(&self) -> Option<&str> {
        self.user.as_ref().map(|b| &*b.username)
    }
}
