//! Which partition of a split state a core is, and where users and rooms
//! live (their *homes*; docs/PARTITIONS.md).
//!
//! A single server, and today's cluster, is partition 0 of 1: every home
//! is 0 and nothing here changes what it does.

use sha2::{Digest, Sha256};

use super::refusal::Refusal;

/// The most partitions a state may be split into (a token names its
/// partition with one letter of `[a-zA-Z]`).
pub const MAX_PARTITIONS: u8 = 52;

/// A partition's number, `0..count`.
pub type PartitionId = u8;

/// This core's partition and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions {
    /// This core's partition, below `count`.
    pub index: PartitionId,
    /// How many partitions the state is split into, `1..=MAX_PARTITIONS`.
    pub count: u8,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions::SINGLE
    }
}

impl Partitions {
    /// The whole state in one partition (a single server).
    pub const SINGLE: Partitions = Partitions { index: 0, count: 1 };

    /// Whether the state is split at all.
    #[must_use]
    pub fn is_split(&self) -> bool {
        self.count > 1
    }

    /// The home of the user `name`: `u64_be(SHA-256("confab-user\0" || name)[0..8]) mod count`.
    #[must_use]
    pub fn home_of_user(&self, name: &str) -> PartitionId {
        home(b"confab-user\0", name, self.count)
    }

    /// The home of the room `name`: as [`Partitions::home_of_user`], with `"confab-room\0"`.
    #[must_use]
    pub fn home_of_room(&self, name: &str) -> PartitionId {
        home(b"confab-room\0", name, self.count)
    }

    /// This partition's share of a server-wide cap (`queue_total`,
    /// `max_accounts`): `ceil(cap / count)`, the whole cap with one partition.
    #[must_use]
    pub fn share(&self, cap: usize) -> usize {
        cap.div_ceil(usize::from(self.count.max(1)))
    }

    /// The user `name`'s home when it is another partition than this one.
    #[must_use]
    pub fn elsewhere(&self, name: &str) -> Option<PartitionId> {
        let home = self.home_of_user(name);
        (home != self.index).then_some(home)
    }

    /// The room `name`'s home when it is another partition than this one.
    #[must_use]
    pub fn room_elsewhere(&self, name: &str) -> Option<PartitionId> {
        let home = self.home_of_room(name);
        (home != self.index).then_some(home)
    }

    /// The partition a token names when the state is split and it is
    /// another than this one (nothing is decoded in an unsplit state).
    #[must_use]
    pub fn foreign_token(&self, token: &[u8]) -> Option<PartitionId> {
        if !self.is_split() {
            return None;
        }
        crate::token::partition_of(token, self.count).filter(|&p| p != self.index)
    }

    /// The refusal of an account's request (`register`, `login`, a first
    /// OIDC request) made away from the account's home: no core makes or
    /// logs in an account its home does not hold.
    pub(crate) fn not_home(&self, username: &str) -> Option<Refusal> {
        let home = self.elsewhere(username)?;
        let reason = format!("the home of {username} is partition {home}, not this one ({})", self.index);
        Some(Refusal::BadRequest(reason))
    }
}

fn home(domain: &[u8], name: &str, count: u8) -> PartitionId {
    if count <= 1 {
        return 0;
    }
    let digest = Sha256::new().chain_update(domain).chain_update(name.as_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // `count` is at most 52, so the remainder fits.
    (u64::from_be_bytes(first) % u64::from(count)) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_shared_rounding_up() {
        let of = |count| Partitions { index: 0, count };
        assert_eq!((of(1).share(10), of(3).share(10), of(4).share(10), of(52).share(1)), (10, 4, 3, 1));
    }

    /// Vectors another implementation can check its hashing against.
    #[test]
    fn homes_follow_the_documented_hash() {
        let four = Partitions { index: 0, count: 4 };
        let digest = Sha256::digest(b"confab-user\0alice");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 4;
        assert_eq!(u64::from(four.home_of_user("alice")), expected);
        let digest = Sha256::digest(b"confab-room\0lobby");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 4;
        assert_eq!(u64::from(four.home_of_room("lobby")), expected);
        // Pinned, so that a change of the rule is seen.
        let homes: Vec<u8> = ["alice", "bob", "carol", "dave", "eve"].iter().map(|n| four.home_of_user(n)).collect();
        assert_eq!(homes, PINNED_HOMES_OF_4);
    }

    /// Computed apart (Python's hashlib) for alice, bob, carol, dave, eve.
    const PINNED_HOMES_OF_4: [u8; 5] = [3, 0, 1, 3, 0];

    #[test]
    fn one_partition_is_home_to_everything() {
        let one = Partitions::SINGLE;
        assert!(!one.is_split());
        for name in ["alice", "bob", "", "é"] {
            assert_eq!(one.home_of_user(name), 0);
            assert_eq!(one.home_of_room(name), 0);
            assert_eq!(one.elsewhere(name), None);
        }
    }

    #[test]
    fn homes_spread_over_every_partition() {
        let p = Partitions { index: 1, count: MAX_PARTITIONS };
        let mut seen = [0u32; MAX_PARTITIONS as usize];
        for i in 0..10_000 {
            seen[usize::from(p.home_of_user(&format!("user{i}")))] += 1;
        }
        // 10,000 names over 52 partitions: about 192 each.
        assert!(seen.iter().all(|&n| (100..300).contains(&n)), "{seen:?}");
        let name = (0..).map(|i| format!("user{i}")).find(|n| p.home_of_user(n) != 1).unwrap();
        assert_eq!(p.elsewhere(&name), Some(p.home_of_user(&name)));
    }
}
