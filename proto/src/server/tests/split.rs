//! The cores of one split state, and the store's outbox table between
//! them modelled here, fed from the committed turns' `MailOut` and `MailIn`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Harness, config};
use crate::server::{Change, MailOutcome, PartitionId, Partitions, Server, ServerConfig, SessionId};
use crate::wire::{RequestBody, Tokens, status};

/// Cores of one split state and the outbox table between them.
pub(super) struct Split {
    pub(super) cores: Vec<Harness>,
    /// `(source, target, seq)` -> item: what the cores committed and their
    /// targets have not applied yet.
    pub(super) table: BTreeMap<(PartitionId, PartitionId, u64), Bytes>,
    /// Every item applied so far, to give again.
    pub(super) applied: Vec<((PartitionId, PartitionId, u64), Bytes)>,
}

impl Split {
    pub(super) fn new(count: u8) -> Split {
        Split::with(count, config())
    }

    /// Cores of `config`, each its partition.
    pub(super) fn with(count: u8, config: ServerConfig) -> Split {
        let cores = (0..count)
            .map(|index| {
                let mut h = Harness::new(config.clone());
                let c = ServerConfig { partitions: Partitions { index, count }, ..config.clone() };
                h.server = Server::new(c, [20 + index; 32], h.now).expect("a valid configuration");
                h
            })
            .collect();
        Split { cores, table: BTreeMap::new(), applied: Vec::new() }
    }

    pub(super) fn parts(&self) -> Partitions {
        self.cores[0].server.config().partitions
    }

    /// A name whose home is `home`, starting with `prefix`.
    pub(super) fn user_of(&self, home: PartitionId, prefix: &str) -> String {
        let p = self.parts();
        (0..).map(|i| format!("{prefix}{i}")).find(|n| p.home_of_user(n) == home).expect("some name")
    }

    /// Registers and logs `name` in at its home: the home, the session and the tokens.
    pub(super) fn join(&mut self, name: &str) -> (usize, SessionId, Tokens) {
        let home = usize::from(self.parts().home_of_user(name));
        assert_eq!(self.cores[home].register(name), status::CREATED);
        let (session, tokens) = self.cores[home].login(name);
        self.collect();
        (home, session, tokens)
    }

    /// The committed mail changes of every core, into the table (as a store does).
    pub(super) fn collect(&mut self) {
        for (index, core) in self.cores.iter_mut().enumerate() {
            let me = PartitionId::try_from(index).unwrap();
            for change in core.mail.drain(..) {
                match change {
                    Change::MailOut { to, seq, item } => {
                        assert!(self.table.insert((me, to, seq), item).is_none(), "a number used twice");
                    }
                    Change::MailIn { from, seq } => {
                        let item = self.table.remove(&(from, me, seq)).expect("applied what the table holds");
                        self.applied.push(((from, me, seq), item));
                    }
                    _ => unreachable!("only mail is collected"),
                }
            }
        }
    }

    /// One round: every core is given, source by source, the items after its cursor.
    pub(super) fn deliver(&mut self) -> usize {
        let mut applied = 0;
        for target in 0..self.cores.len() {
            let me = PartitionId::try_from(target).unwrap();
            let waiting: Vec<_> =
                self.table.iter().filter(|((_, to, _), _)| *to == me).map(|(k, v)| (*k, v.clone())).collect();
            for ((from, _, seq), item) in waiting {
                let core = &mut self.cores[target];
                let outcome = core.server.handle_mail(core.now, from, seq, &item);
                assert_eq!(outcome, MailOutcome::Applied, "in order, item {from}->{me} #{seq}");
                core.pump();
                applied += 1;
            }
        }
        self.collect();
        applied
    }

    /// Rounds until nothing is left in the table (a session's requests
    /// waiting behind each other take two rounds each).
    pub(super) fn settle(&mut self) {
        self.collect();
        for _ in 0..500 {
            if self.table.is_empty() {
                return;
            }
            self.deliver();
        }
        panic!("mail left after 500 rounds: {:?}", self.table.keys().collect::<Vec<_>>());
    }
}

/// Two homes: alice of partition 0, logged in, and bob of partition 1, registered.
pub(super) struct Pair {
    pub(super) split: Split,
    /// Alice's home, her session and her tokens.
    pub(super) a: usize,
    pub(super) s: SessionId,
    pub(super) tokens: Tokens,
    pub(super) bob: String,
}

pub(super) fn pair() -> Pair {
    let mut split = Split::new(2);
    let (alice, bob) = (split.user_of(0, "alice"), split.user_of(1, "bob"));
    let (a, s, tokens) = split.join(&alice);
    split.join(&bob);
    Pair { split, a, s, tokens, bob }
}

/// A user logged in at its home.
pub(super) struct User {
    pub(super) name: String,
    pub(super) home: usize,
    pub(super) session: SessionId,
    pub(super) tokens: Tokens,
}

impl User {
    /// Registers a user of `home` whose name starts with `prefix`, and logs it in.
    pub(super) fn join(split: &mut Split, home: PartitionId, prefix: &str) -> User {
        let name = split.user_of(home, prefix);
        let (home, session, tokens) = split.join(&name);
        User { name, home, session, tokens }
    }

    /// The auth part of its frames.
    pub(super) fn auth(&self) -> Vec<u8> {
        self.tokens.access_token.clone().into_bytes()
    }

    /// Sends `body` from its session; the request id.
    pub(super) fn ask(&self, split: &mut Split, body: impl Into<RequestBody>) -> u32 {
        let id = split.cores[self.home].send_auth(self.session, body, &self.auth());
        split.collect();
        id
    }

    /// The code answered to `id` on its session.
    pub(super) fn code(&self, split: &Split, id: u32) -> u16 {
        split.cores[self.home].code(self.session, id)
    }
}
