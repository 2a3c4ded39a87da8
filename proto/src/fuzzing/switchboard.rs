//! The switchboard's fuzz body (`fuzz/fuzz_targets/switchboard.rs`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::SeedableRng as _;

use crate::server::{Partitions, Switchboard, Switched};
use crate::token::{self, TokenKind};
use crate::wire::{FetchKey, Jwks, Login, Message, Passphrase, Refresh, Request, RequestBody};

/// Partitions of the state the fuzzed node serves.
const COUNT: u8 = 4;
/// Connections the input may name.
const LINKS: u8 = 4;
/// The bytes held behind a frame (small, so the bound is reached).
const MAX_HELD: usize = 4096;

/// The frames of operation 2: for each partition a login of a user of that
/// home, a refresh and a request with tokens naming it; then a passphrase,
/// `jwks`, a request with an OIDC-looking token and one naming nobody.
fn table() -> Vec<Bytes> {
    let parts = Partitions { index: 0, count: COUNT };
    let mut rng = rand::rngs::StdRng::from_seed([7; 32]);
    let request = |body: RequestBody, auth: &[u8]| {
        Message::Request(Request { request_id: 1, timestamp_ms: 0, body }).to_bytes(auth)
    };
    let mut frames = Vec::new();
    for p in 0..COUNT {
        let name = (0..).map(|i| format!("u{i}")).find(|n| parts.home_of_user(n) == p).unwrap_or_default();
        frames.push(request(Login { username: name, password: "pw".into() }.into(), b""));
        let refresh = token::generate_in(&mut rng, TokenKind::Refresh, p);
        frames.push(request(Refresh { refresh_token: refresh }.into(), b""));
        let access = token::generate_in(&mut rng, TokenKind::Access, p);
        frames.push(request(FetchKey { username: "x".into() }.into(), access.as_bytes()));
    }
    frames.push(request(Passphrase { passphrase: "a b c".into() }.into(), b""));
    frames.push(request(Jwks {}.into(), b""));
    frames.push(request(FetchKey { username: "x".into() }.into(), b"eyJhbGciOiJSUzI1NiJ9.e30.sig"));
    frames.push(request(FetchKey { username: "x".into() }.into(), b""));
    frames
}

/// Drives a [`Switchboard`] of four partitions with hostile connections and
/// a node that answers at any time, rightly or not. Operations:
///
/// - `0 k`: connection `k % 4` opens (again: nothing changes);
/// - `1 k len data..`: raw bytes on connection `k`;
/// - `2 k f`: connection `k` sends frame `f` of a fixed table (logins,
///   refreshes and token requests naming each partition, a passphrase,
///   `jwks`, an OIDC token, a request naming nobody);
/// - `3 k t b`: the node says connection `k`'s frame settled, logged in if
///   `b` is odd: with the ticket it waits on if `t` is even, else with `t`
///   (a wrong, late or repeated answer);
/// - `4 k t p`: connection `k`'s OIDC frame resolves to `p % 5` (one past
///   the count too), with its ticket if `t` is even, else with `t`;
/// - `5 k`: connection `k` closes;
/// - anything else: every output is polled.
///
/// Checked on every output: a session is opened once, fed and closed only
/// while open; a connection bound stays bound to one core and is fed there
/// only; a closed connection has no session left.
pub fn switchboard(data: &[u8]) {
    let frames = table();
    let limits = crate::wire::Limits::DEFAULT;
    let mut board: Switchboard<u8> = Switchboard::new(Partitions { index: 0, count: COUNT }, limits, MAX_HELD);
    let mut open: BTreeSet<(u8, u8)> = BTreeSet::new();
    let mut bound: BTreeMap<u8, u8> = BTreeMap::new();
    let mut resolving: BTreeMap<u8, u64> = BTreeMap::new();
    let mut rest = data;
    let byte = |rest: &[u8], i: usize| rest.get(i).copied().unwrap_or(0);
    while let Some((&op, tail)) = rest.split_first() {
        let k = byte(tail, 0) % LINKS;
        match op % 7 {
            0 => {
                // Opened again while open: the switchboard keeps the connection as it is.
                board.open(k);
                rest = tail.get(1..).unwrap_or(&[]);
            }
            1 => {
                let len = usize::from(byte(tail, 1)).min(tail.len().saturating_sub(2));
                board.input(k, Bytes::copy_from_slice(tail.get(2..2 + len).unwrap_or(&[])));
                rest = tail.get(2 + len..).unwrap_or(&[]);
            }
            2 => {
                let frame = &frames[usize::from(byte(tail, 1)) % frames.len()];
                board.input(k, frame.clone());
                rest = tail.get(2..).unwrap_or(&[]);
            }
            3 => {
                let t = byte(tail, 1);
                let waited = (0..COUNT).flat_map(|p| board.waiting_at(p)).find(|(l, _)| *l == k).map(|(_, t)| t);
                let ticket = if t % 2 == 0 { waited.unwrap_or(0) } else { u64::from(t) };
                board.settled(k, ticket, byte(tail, 2) % 2 == 1);
                rest = tail.get(3..).unwrap_or(&[]);
            }
            4 => {
                let t = byte(tail, 1);
                let ticket = if t % 2 == 0 { resolving.get(&k).copied().unwrap_or(0) } else { u64::from(t) };
                board.resolved(k, ticket, byte(tail, 2) % (COUNT + 1));
                rest = tail.get(3..).unwrap_or(&[]);
            }
            5 => {
                board.close(k);
                rest = tail.get(1..).unwrap_or(&[]);
            }
            _ => rest = tail,
        }
        while let Some(out) = board.poll() {
            match out {
                Switched::Open { link, partition } => {
                    assert!(partition < COUNT, "a session at a core that does not exist");
                    assert!(open.insert((link, partition)), "a session opened twice");
                }
                Switched::Feed { link, partition, bytes, .. } => {
                    assert!(open.contains(&(link, partition)), "bytes for a session not open");
                    assert!(!bytes.is_empty(), "an empty feed");
                    if let Some(&at) = bound.get(&link) {
                        assert_eq!(at, partition, "a bound connection fed elsewhere");
                    }
                }
                Switched::Close { link, partition } => {
                    assert!(open.remove(&(link, partition)), "a session closed that was not open");
                }
                Switched::Resolve { link, ticket, .. } => {
                    resolving.insert(link, ticket);
                }
                Switched::Refuse { link, code, .. } => {
                    assert_eq!(code, crate::wire::status::TOO_LARGE);
                    assert_eq!(board.bound_to(link), None, "a refused connection is closed");
                    bound.remove(&link);
                }
            }
            for link in 0..LINKS {
                if let Some(at) = board.bound_to(link) {
                    assert_eq!(*bound.entry(link).or_insert(at), at, "a connection bound at two cores");
                }
            }
        }
        if op % 7 == 5 {
            assert!(open.iter().all(|(l, _)| *l != k), "a closed connection kept a session");
            assert_eq!(board.bound_to(k), None);
            bound.remove(&k);
        }
    }
}
