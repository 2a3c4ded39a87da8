//! Hash maps keyed from the server's seed, for hot lookups that are never
//! iterated where order matters.
//!
//! The hasher is SipHash-2-4 (std's keyed SipHash) with a 128-bit key
//! derived from the server's seed: deterministic for one seed (the core
//! draws no OS randomness), and unpredictable to peers, so names they
//! choose cannot be made to collide (no hash flooding). Maps that are
//! iterated, or that a peer fills, are B-trees instead.

use std::collections::HashMap;
use std::hash::BuildHasher;
#[allow(deprecated)] // the only keyed SipHash in std; deprecated in favour of the unkeyed `DefaultHasher`.
use std::hash::SipHasher;

use sha2::{Digest, Sha256};

/// A [`BuildHasher`] of SipHash-2-4 under a key derived from a secret.
#[derive(Clone, Copy)]
pub(crate) struct Keyed {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed(..)")
    }
}

impl Keyed {
    /// The hasher keyed by `secret` (32 bytes drawn from the seed) for `purpose`.
    pub(crate) fn derive(secret: &[u8; 32], purpose: &str) -> Keyed {
        let d = Sha256::new().chain_update(b"confab keyed map ").chain_update(purpose).chain_update(secret).finalize();
        let word = |i: usize| u64::from_le_bytes(d[i..i + 8].try_into().unwrap_or_default());
        Keyed { k0: word(0), k1: word(8) }
    }
}

impl BuildHasher for Keyed {
    #[allow(deprecated)]
    type Hasher = SipHasher;

    #[allow(deprecated)]
    fn build_hasher(&self) -> SipHasher {
        SipHasher::new_with_keys(self.k0, self.k1)
    }
}

/// A hash map under a [`Keyed`] hasher.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, Keyed>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_secret_one_hash_another_secret_another() {
        let a = Keyed::derive(&[1; 32], "online");
        let b = Keyed::derive(&[2; 32], "online");
        let c = Keyed::derive(&[1; 32], "other");
        assert_eq!(a.hash_one("alice"), Keyed::derive(&[1; 32], "online").hash_one("alice"));
        assert_ne!(a.hash_one("alice"), b.hash_one("alice"));
        assert_ne!(a.hash_one("alice"), c.hash_one("alice"));
    }
}
