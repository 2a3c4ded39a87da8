//! The switchboard in front of the cores of one split state (docs/PARTITIONS.md,
//! "Routing frames"), driven as a node drives it: its sessions opened,
//! fed and closed at the cores, the cores asked after each turn whether
//! the frames they were handed are settled.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::split::Split;
use super::{PASSPHRASE, PASSWORD, register_body};
use crate::server::{PartitionId, SessionId, Switchboard, Switched};
use crate::wire::{FetchKey, Jwks, Limits, Login, Message, Passphrase, Request, RequestBody, Tokens, status};

/// A node: the cores, the switchboard, and the sessions of its connections.
struct Node {
    split: Split,
    board: Switchboard<u32>,
    sessions: BTreeMap<(u32, PartitionId), SessionId>,
    /// Every switchboard output, in order.
    log: Vec<Switched<u32>>,
    /// Where OIDC frames resolve to (None: leave them waiting, in `resolving`).
    oidc_home: Option<PartitionId>,
    resolving: Vec<(u32, u64)>,
    next_request: u32,
}

impl Node {
    fn new(count: u8) -> Node {
        let split = Split::new(count);
        let c = split.cores[0].server.config();
        let board = Switchboard::new(c.partitions, c.limits, c.max_deferred_bytes);
        Node {
            split,
            board,
            sessions: BTreeMap::new(),
            log: Vec::new(),
            oidc_home: None,
            resolving: Vec::new(),
            next_request: 1,
        }
    }

    fn frame(&mut self, body: impl Into<RequestBody>, auth: &[u8]) -> (u32, Bytes) {
        let request_id = self.next_request;
        self.next_request += 1;
        let msg = Message::Request(Request { request_id, timestamp_ms: 0, body: body.into() });
        (request_id, msg.to_bytes(auth))
    }

    /// A request that names nobody (no token): answered 401 wherever it goes.
    fn nobody(&mut self) -> (u32, Bytes) {
        self.frame(FetchKey { username: "nobody".into() }, b"")
    }

    /// `link` sends `bytes`; everything that follows is run.
    fn send(&mut self, link: u32, bytes: &[u8]) {
        self.board.input(link, Bytes::copy_from_slice(bytes));
        self.run();
    }

    fn run(&mut self) {
        loop {
            let mut any = false;
            while let Some(out) = self.board.poll() {
                any = true;
                self.log.push(out.clone());
                match out {
                    Switched::Open { link, partition } => {
                        let session = self.split.cores[usize::from(partition)].connect();
                        assert!(self.sessions.insert((link, partition), session).is_none(), "opened twice");
                    }
                    Switched::Feed { link, partition, bytes, .. } => {
                        let core = &mut self.split.cores[usize::from(partition)];
                        let session = self.sessions[&(link, partition)];
                        core.server.handle_input(core.now, session, &bytes);
                        core.pump();
                    }
                    Switched::Close { link, partition } => {
                        let session = self.sessions.remove(&(link, partition)).expect("a session to close");
                        let core = &mut self.split.cores[usize::from(partition)];
                        core.server.close_session(core.now, session);
                        core.pump();
                    }
                    Switched::Resolve { link, ticket, .. } => match self.oidc_home {
                        Some(p) => self.board.resolved(link, ticket, p),
                        None => self.resolving.push((link, ticket)),
                    },
                    Switched::Refuse { .. } => {}
                }
            }
            self.split.settle();
            // After the cores' turns: the frames they settled.
            for p in 0..self.split.cores.len() {
                let partition = PartitionId::try_from(p).unwrap();
                let waiting: Vec<(u32, u64)> = self.board.waiting_at(partition).collect();
                for (link, ticket) in waiting {
                    let core = &self.split.cores[p].server;
                    let session = self.sessions[&(link, partition)];
                    if !core.session_held(session) {
                        any = true;
                        self.board.settled(link, ticket, core.session_user(session).is_some());
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    /// The code answered to `id` on `link`'s session at `partition`.
    fn code(&self, link: u32, partition: PartitionId, id: u32) -> u16 {
        self.split.cores[usize::from(partition)].code(self.sessions[&(link, partition)], id)
    }

    /// The cores where `link` has a session.
    fn at(&self, link: u32) -> Vec<PartitionId> {
        self.sessions.keys().filter(|(l, _)| *l == link).map(|(_, p)| *p).collect()
    }

    /// Registers `name` (at its home, through the switchboard on a link of its own).
    fn register(&mut self, link: u32, name: &str) {
        self.board.open(link);
        let (id, bytes) = self.frame(register_body(name), b"");
        self.send(link, &bytes);
        let home = self.split.parts().home_of_user(name);
        assert_eq!(self.code(link, home, id), status::CREATED);
        self.board.close(link);
        self.run();
    }

    /// Logs `name` in on `link` with both steps pipelined in one write: the tokens.
    fn login(&mut self, link: u32, name: &str) -> Tokens {
        let (_, login) = self.frame(Login { username: name.into(), password: PASSWORD.into() }, b"");
        let (id, passphrase) = self.frame(Passphrase { passphrase: PASSPHRASE.into() }, b"");
        self.send(link, &[login, passphrase].concat());
        let home = self.split.parts().home_of_user(name);
        match self.split.cores[usize::from(home)].response(self.sessions[&(link, home)], id).body {
            crate::wire::ResponseBody::Tokens(t) => t,
            other => panic!("login of {name} failed: {other:?}"),
        }
    }
}

/// A login and its passphrase, pipelined, go to the user's home; the
/// connection binds there and every later byte follows, unparsed.
#[test]
fn a_connection_binds_at_its_users_home_and_later_frames_follow() {
    let mut node = Node::new(3);
    let alice = node.split.user_of(1, "alice");
    let bob = node.split.user_of(2, "bob");
    node.register(100, &alice);
    node.register(101, &bob);
    node.board.open(1);
    let tokens = node.login(1, &alice);
    assert_eq!(node.board.bound_to(1), Some(1));
    assert_eq!(node.at(1), [1], "a session at alice's home only");
    // A request about bob (home 2) goes to alice's core, in two chunks.
    let (id, bytes) = node.frame(FetchKey { username: bob.clone() }, tokens.access_token.as_bytes());
    let (head, tail) = bytes.split_at(5);
    node.send(1, head);
    node.send(1, tail);
    assert_eq!(node.code(1, 1, id), status::OK, "answered at alice's home (by mail from bob's)");
    assert!(matches!(node.log.last(), Some(Switched::Feed { partition: 1, .. })));
    assert_eq!(node.at(1), [1]);
}

/// Frames that name nobody go to the connection's current core (partition
/// 0 before any), hold nothing, and a connection that binds elsewhere has
/// its other sessions closed.
#[test]
fn frames_naming_nobody_go_to_the_current_core_and_binding_closes_the_others() {
    let mut node = Node::new(3);
    let alice = node.split.user_of(2, "alice");
    node.register(100, &alice);
    node.board.open(1);
    let (nobody, bytes) = node.nobody();
    node.send(1, &bytes);
    assert_eq!(node.code(1, 0, nobody), status::UNAUTHORIZED, "partition 0 before any other");
    let (jwks, bytes) = node.frame(Jwks {}, b"");
    node.send(1, &bytes);
    assert_eq!(node.split.cores[0].responses(node.sessions[&(1, 0)], jwks).len(), 1, "jwks at partition 0");
    let sessions_at_0 = node.split.cores[0].server.session_count();
    node.login(1, &alice);
    assert_eq!(node.board.bound_to(1), Some(2));
    assert_eq!(node.at(1), [2], "the session at partition 0 closed once bound at 2");
    assert_eq!(node.split.cores[0].server.session_count(), sessions_at_0 - 1);
    let (nobody, bytes) = node.nobody();
    node.send(1, &bytes);
    assert_eq!(node.code(1, 2, nobody), status::UNAUTHORIZED, "now the current core");
}

/// Two pipelined requests carrying two users' tokens never bind one
/// connection at two cores: the second waits for the first to bind it,
/// then goes to the same core, which answers it 403.
#[test]
fn two_pipelined_frames_with_two_users_tokens_bind_one_core() {
    let mut node = Node::new(3);
    let (alice, bob) = (node.split.user_of(1, "alice"), node.split.user_of(2, "bob"));
    node.register(100, &alice);
    node.register(101, &bob);
    node.board.open(10);
    let a = node.login(10, &alice);
    node.board.open(11);
    let b = node.login(11, &bob);
    node.board.open(1);
    let (first, one) = node.frame(FetchKey { username: bob.clone() }, a.access_token.as_bytes());
    let (second, two) = node.frame(FetchKey { username: alice.clone() }, b.access_token.as_bytes());
    node.send(1, &[one, two].concat());
    assert_eq!(node.board.bound_to(1), Some(1));
    assert_eq!(node.at(1), [1], "never a session at bob's home");
    assert_eq!(node.code(1, 1, first), status::OK);
    assert_eq!(node.code(1, 1, second), status::FORBIDDEN, "a token of another user on a bound session");
}

/// A frame that is not one (a bad version) goes, with everything after it,
/// to the current core, which refuses it and closes the session.
#[test]
fn bytes_that_do_not_frame_go_to_the_current_core_which_refuses_them() {
    let mut node = Node::new(2);
    node.board.open(1);
    node.send(1, b"\xffgarbage that is no frame");
    assert_eq!(node.board.bound_to(1), Some(0));
    let session = node.sessions[&(1, 0)];
    assert!(node.split.cores[0].closed.iter().any(|(s, code)| *s == session && *code >= 400), "refused");
}

/// More than the cores' `max_deferred_bytes` behind a held frame: the
/// connection is refused (413) and its sessions closed; nothing reaches
/// another core.
#[test]
fn bytes_past_the_bound_behind_a_held_frame_refuse_the_connection() {
    let mut node = Node::new(2);
    let alice = node.split.user_of(1, "alice");
    node.register(100, &alice);
    // Password checks held: the login stays unsettled.
    node.split.cores[1].hold = true;
    node.board.open(1);
    let (_, login) = node.frame(Login { username: alice.clone(), password: PASSWORD.into() }, b"");
    node.send(1, &login);
    assert_eq!(node.board.waiting_at(1).map(|(l, _)| l).collect::<Vec<_>>(), [1]);
    let max = node.split.cores[1].server.config().max_deferred_bytes;
    let (_, one) = node.nobody();
    let flood: Vec<u8> = one.iter().copied().cycle().take(max + one.len()).collect();
    let fed = node.log.len();
    node.send(1, &flood);
    let after = &node.log[fed..];
    assert!(after.iter().any(|o| matches!(o, Switched::Refuse { link: 1, code: status::TOO_LARGE, .. })), "{after:?}");
    assert!(after.iter().all(|o| !matches!(o, Switched::Feed { .. })), "nothing more handed to a core");
    assert!(node.at(1).is_empty(), "every session closed");
}

/// A frame with an OIDC token waits for the node to resolve its partition,
/// the later frames behind it; past the bound meanwhile, the connection is
/// refused.
#[test]
fn an_oidc_frame_waits_for_its_partition() {
    let mut node = Node::new(3);
    node.board.open(1);
    let (oidc, one) = node.frame(FetchKey { username: "x".into() }, b"eyJhbGciOi.jwt.sig");
    let (nobody, two) = node.nobody();
    node.send(1, &[one, two].concat());
    assert_eq!(node.at(1), [0], "nothing handed before the partition is known");
    assert!(matches!(node.log.last(), Some(Switched::Resolve { link: 1, token, .. }) if token.starts_with(b"eyJ")));
    let (link, ticket) = node.resolving.pop().unwrap();
    node.board.resolved(link, ticket + 1, 2);
    node.run();
    assert_eq!(node.at(1), [0], "an answer for another ticket changes nothing");
    node.board.resolved(link, ticket, 2);
    node.run();
    assert_eq!(node.at(1), [0, 2]);
    assert!(node.code(1, 2, oidc) >= 400, "the core without OIDC refuses the token");
    assert_eq!(node.code(1, 2, nobody), status::UNAUTHORIZED, "the frame behind it followed");
    // Another connection floods while its OIDC frame is looked up.
    node.board.open(2);
    let (_, one) = node.frame(FetchKey { username: "x".into() }, b"eyJhbGciOi.jwt.sig");
    node.send(2, &one);
    let max = node.split.cores[0].server.config().max_deferred_bytes;
    node.send(2, &vec![0u8; max + 1]);
    assert!(node.log.iter().any(|o| matches!(o, Switched::Refuse { link: 2, .. })));
    let (link, ticket) = node.resolving.pop().unwrap();
    node.board.resolved(link, ticket, 0);
    node.run();
    assert!(node.at(2).is_empty(), "a refused connection reaches no core");
}

/// One partition: everything to partition 0, nothing held.
#[test]
fn one_partition_routes_everything_to_partition_0_without_holding() {
    let parts = crate::server::Partitions::SINGLE;
    let mut board: Switchboard<u32> = Switchboard::new(parts, Limits::DEFAULT, 1 << 20);
    board.open(7);
    let login = login_of("a");
    let both = [login.clone(), login].concat();
    board.input(7, Bytes::copy_from_slice(&both[..5]));
    board.input(7, Bytes::copy_from_slice(&both[5..]));
    let out: Vec<_> = std::iter::from_fn(|| board.poll()).collect();
    assert_eq!(
        out,
        [
            Switched::Open { link: 7, partition: 0 },
            Switched::Feed { link: 7, partition: 0, bytes: Bytes::copy_from_slice(&both[..5]), ticket: None },
            Switched::Feed { link: 7, partition: 0, bytes: Bytes::copy_from_slice(&both[5..]), ticket: None },
        ]
    );
    assert_eq!(board.bound_to(7), Some(0), "bound at once: nothing parsed");
    assert_eq!(board.waiting_at(0).count(), 0);
}

/// A passphrase goes where its login went, whatever went elsewhere between
/// them (a `jwks`, to partition 0).
#[test]
fn a_passphrase_follows_its_login_whatever_came_between() {
    let mut node = Node::new(3);
    let alice = node.split.user_of(1, "alice");
    node.register(100, &alice);
    node.board.open(1);
    let (_, login) = node.frame(Login { username: alice.clone(), password: PASSWORD.into() }, b"");
    let (_, between) = node.frame(Jwks {}, b"");
    let (id, passphrase) = node.frame(Passphrase { passphrase: PASSPHRASE.into() }, b"");
    node.send(1, &[login, between, passphrase].concat());
    assert_eq!(node.board.bound_to(1), Some(1));
    let answered = node.split.cores[1].response(node.sessions[&(1, 1)], id).body;
    assert!(matches!(answered, crate::wire::ResponseBody::Tokens(_)), "{answered:?}");
    assert!(node.log.contains(&Switched::Close { link: 1, partition: 0 }), "jwks went to 0, closed once bound");
    assert!(
        node.log.iter().any(|o| matches!(o, Switched::Feed { link: 1, partition: 0, bytes, .. } if !bytes.is_empty()))
    );
}

/// A login frame of `name`.
fn login_of(name: &str) -> Bytes {
    let body = Login { username: name.into(), password: "p".into() }.into();
    Message::Request(Request { request_id: 1, timestamp_ms: 0, body }).to_bytes(b"")
}

/// A bare switchboard of two partitions, and a login of a user of partition 1.
fn two_partitions_and_a_login_of_1() -> (Switchboard<u32>, Bytes) {
    let parts = crate::server::Partitions { index: 0, count: 2 };
    let name = (0..).map(|i| format!("u{i}")).find(|n| parts.home_of_user(n) == 1).unwrap();
    (Switchboard::new(parts, Limits::DEFAULT, 1 << 20), login_of(&name))
}

/// A node that asks a core about a connection before it handed it the
/// frame that holds (the frame still queued in the switchboard) settles
/// nothing: the frame is waited for once polled.
#[test]
fn a_frame_is_waited_for_only_once_polled() {
    let (mut board, login) = two_partitions_and_a_login_of_1();
    let other = login_of("zz");
    board.open(7);
    board.input(7, [login, other].concat());
    assert_eq!(board.waiting_at(1).count(), 0, "not handed yet");
    assert_eq!(board.poll(), Some(Switched::Open { link: 7, partition: 0 }));
    assert_eq!(board.poll(), Some(Switched::Open { link: 7, partition: 1 }));
    let Some(Switched::Feed { link: 7, partition: 1, ticket: Some(ticket), .. }) = board.poll() else {
        panic!("the login, with a ticket")
    };
    assert_eq!(board.poll(), None, "the second login waits");
    assert_eq!(board.waiting_at(1).collect::<Vec<_>>(), [(7, ticket)]);
    board.settled(7, ticket + 1, false);
    assert_eq!(board.poll(), None, "an answer for another ticket settles nothing");
    board.settled(7, ticket, false);
    let Some(Switched::Feed { ticket: Some(second), .. }) = board.poll() else { panic!("the second login") };
    // The first answer again (late, or repeated): the second login is not settled by it.
    board.settled(7, ticket, false);
    assert_eq!(board.poll(), None);
    assert_eq!(board.waiting_at(0).chain(board.waiting_at(1)).collect::<Vec<_>>(), [(7, second)]);
}

/// A connection has a session at partition 0 from the start, so a
/// connection that never sends a whole frame idles out there (an
/// attacker-briefed review found it invisible to every core).
#[test]
fn a_connection_that_sends_no_whole_frame_idles_out_at_partition_0() {
    let mut node = Node::new(2);
    node.board.open(1);
    node.send(1, &[1, 1, 0, 0]);
    assert_eq!(node.at(1), [0]);
    let session = node.sessions[&(1, 0)];
    for _ in 0..10 {
        node.split.cores[0].advance(std::time::Duration::from_secs(30));
    }
    assert!(node.split.cores[0].closed.iter().any(|(s, _)| *s == session), "closed by its idle timeout");
}

/// Each core pings its own session: a pong goes to every core where the
/// connection has one, so none idles out while the client answers.
#[test]
fn a_pong_reaches_every_core_where_the_connection_has_a_session() {
    let mut node = Node::new(2);
    let alice = node.split.user_of(1, "alice");
    node.register(100, &alice);
    node.board.open(1);
    let (_, login) = node.frame(Login { username: alice.clone(), password: PASSWORD.into() }, b"");
    node.send(1, &login);
    assert_eq!(node.at(1), [0, 1]);
    let pong = Message::Pong(crate::wire::Pong { nonce: 7 }).to_bytes(b"");
    let fed = node.log.len();
    node.send(1, &pong);
    let to: Vec<PartitionId> = node.log[fed..]
        .iter()
        .filter_map(|o| match o {
            Switched::Feed { partition, bytes, .. } if *bytes == pong => Some(*partition),
            _ => None,
        })
        .collect();
    assert_eq!(to, [0, 1]);
}

/// Nothing after a close frame is routed: it goes, with what follows, to
/// the current core, which ends the session (a single server stops there).
#[test]
fn nothing_after_a_close_frame_is_routed() {
    let mut node = Node::new(3);
    let alice = node.split.user_of(2, "alice");
    node.register(100, &alice);
    node.board.open(10);
    let tokens = node.login(10, &alice);
    node.board.open(1);
    let close = Message::Close(crate::wire::Close { code: 200, reason: "bye".into() }).to_bytes(b"");
    let (_, after) = node.frame(FetchKey { username: alice.clone() }, tokens.access_token.as_bytes());
    node.send(1, &[close, after].concat());
    assert_eq!(node.board.bound_to(1), Some(0));
    assert!(!node.log.contains(&Switched::Open { link: 1, partition: 2 }), "never at alice's home");
}

/// A connection closed before its outputs were polled: what was queued
/// for it is dropped, and only the sessions whose opening was polled are
/// closed.
#[test]
fn a_connection_closed_before_its_outputs_were_polled_leaves_nothing_behind() {
    let (mut board, login) = two_partitions_and_a_login_of_1();
    board.open(7);
    board.input(7, login.clone());
    board.close(7);
    assert_eq!(board.poll(), None, "nothing was opened: nothing to close");
    board.open(8);
    assert_eq!(board.poll(), Some(Switched::Open { link: 8, partition: 0 }));
    board.input(8, login);
    board.close(8);
    assert_eq!(board.poll(), Some(Switched::Close { link: 8, partition: 0 }));
    assert_eq!(board.poll(), None);
    assert_eq!(board.waiting_at(1).count(), 0);
}

/// The bytes of a frame not complete yet that an unbound connection sent
/// are counted (the node tells the core's frame deadline), and only while
/// no frame holds them (those are bounded by `max_held`) and the
/// connection is not bound (its core's decoder has them then).
#[test]
fn a_partial_frame_is_counted_only_while_it_is_the_connections_next() {
    let (mut board, login) = two_partitions_and_a_login_of_1();
    board.open(7);
    assert_eq!(board.partial(7), 0);
    board.input(7, login.slice(..5));
    assert_eq!(board.partial(7), 5, "half a header");
    board.input(7, login.slice(5..));
    assert_eq!(board.partial(7), 0, "complete: routed");
    while board.poll().is_some() {}
    let (_, ticket) = board.waiting_at(1).next().expect("the login holds");
    board.input(7, login.slice(..5));
    assert_eq!(board.partial(7), 0, "held behind the login");
    board.settled(7, ticket, false);
    assert_eq!(board.partial(7), 5, "the login settled unbound: the next frame is partial");
    board.input(7, login.slice(5..));
    while board.poll().is_some() {}
    let (_, ticket) = board.waiting_at(1).next().expect("the second login holds");
    board.input(7, login.slice(..3));
    board.settled(7, ticket, true);
    assert_eq!(board.partial(7), 0, "bound: the core has the bytes");
    assert_eq!(board.partial(8), 0, "an unknown link");
}

/// A node that does not serve partition 0 opens its connections at a
/// partition it serves: frames naming nobody go there, a frame for
/// another partition opens a session there, and an OIDC frame resolved
/// out of range goes back to the first core, which refuses it.
#[test]
fn a_connection_opened_at_another_first_partition_starts_there() {
    let (mut board, login) = two_partitions_and_a_login_of_1();
    let nobody = Message::Ping(crate::wire::Ping { nonce: 1 }).to_bytes(b"");
    board.open_at(3, 1);
    assert_eq!(board.poll(), Some(Switched::Open { link: 3, partition: 1 }));
    board.input(3, nobody.clone());
    let Some(Switched::Feed { partition: 1, ticket: None, .. }) = board.poll() else {
        panic!("a frame naming nobody goes to the first core")
    };
    assert_eq!(board.poll(), None);
    // A login of partition 1: no other session is opened.
    board.input(3, login);
    let Some(Switched::Feed { partition: 1, ticket: Some(ticket), .. }) = board.poll() else {
        panic!("the login at its home, the first core")
    };
    assert_eq!(board.poll(), None, "no session opened at partition 0");
    board.settled(3, ticket, false);
    // Out of range: the first partition given is no partition, so 0.
    board.open_at(4, 9);
    assert_eq!(board.poll(), Some(Switched::Open { link: 4, partition: 0 }));
    // One partition: always 0, bound.
    let mut single = Switchboard::<u32>::new(crate::server::Partitions::SINGLE, Limits::DEFAULT, 1 << 20);
    single.open_at(5, 1);
    assert_eq!(single.poll(), Some(Switched::Open { link: 5, partition: 0 }));
}

/// A node that does not serve the partition a frame goes to takes the
/// connection out of its switchboard to relay it to the owner: it gets the
/// frame and every byte after it, in order (a partial frame included),
/// the connection's sessions here are closed, and nothing more of it is
/// routed.
#[test]
fn a_connection_detached_for_the_relay_takes_its_frame_and_every_byte_after_it() {
    let (mut board, login) = two_partitions_and_a_login_of_1();
    let later = login_of("zz");
    let partial = later.slice(..5);
    board.open(7);
    board.input(7, [login.clone(), later.clone(), partial.clone()].concat());
    assert_eq!(board.poll(), Some(Switched::Open { link: 7, partition: 0 }));
    assert_eq!(board.poll(), Some(Switched::Open { link: 7, partition: 1 }), "partition 1: not served here");
    let rest = board.detach(7, 1);
    assert_eq!(rest, Bytes::from([login, later, partial].concat()), "the frame, then everything after it");
    let closes: Vec<_> = std::iter::from_fn(|| board.poll()).collect();
    assert_eq!(closes, [Switched::Close { link: 7, partition: 0 }, Switched::Close { link: 7, partition: 1 }]);
    board.input(7, login_of("yy"));
    assert_eq!(board.poll(), None, "nothing more of it is routed");
    assert_eq!(board.detach(7, 1), Bytes::new(), "detached once");
}
