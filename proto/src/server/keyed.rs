//! Hash maps keyed from the server's seed, for hot lookups that are never
//! iterated where order matters.
//!
//! The hasher is SipHash-1-3, the function and round counts of std's
//! `RandomState`, under a 128-bit key derived from the server's seed:
//! deterministic for one seed (the core draws no OS randomness), and
//! unpredictable to peers, so names they choose cannot be made to collide
//! (no hash flooding). std offers no keyed SipHash-1-3 of its own, hence
//! this one; the test checks the shared code against std's keyed
//! SipHash-2-4. Maps that are iterated, or that a peer fills, are B-trees.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use sha2::{Digest, Sha256};

/// A [`BuildHasher`] of SipHash-1-3 under a key derived from a secret.
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

/// The key of maps built outside a server (a store's copy of the state,
/// a state being read): fixed, so such maps are deterministic; a server
/// re-keys its state from its seed ([`State::rekey`](super::State::rekey)).
impl Default for Keyed {
    fn default() -> Keyed {
        Keyed::derive(&[0; 32], "default")
    }
}

/// The key is not part of a map's value: any two are equal.
impl PartialEq for Keyed {
    fn eq(&self, _: &Keyed) -> bool {
        true
    }
}

impl Eq for Keyed {}

impl BuildHasher for Keyed {
    type Hasher = Sip<1, 3>;

    fn build_hasher(&self) -> Sip<1, 3> {
        Sip::new_with_keys(self.k0, self.k1)
    }
}

/// A hash map under a [`Keyed`] hasher.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, Keyed>;

/// SipHash-`C`-`D` (Aumasson and Bernstein), keyed.
#[derive(Debug, Clone)]
pub(crate) struct Sip<const C: usize, const D: usize> {
    v: [u64; 4],
    /// Bytes not yet compressed (little-endian), and how many.
    tail: u64,
    ntail: usize,
    length: usize,
}

impl<const C: usize, const D: usize> Sip<C, D> {
    pub(crate) fn new_with_keys(k0: u64, k1: u64) -> Self {
        let v = [
            k0 ^ 0x736f_6d65_7073_6575,
            k1 ^ 0x646f_7261_6e64_6f6d,
            k0 ^ 0x6c79_6765_6e65_7261,
            k1 ^ 0x7465_6462_7974_6573,
        ];
        Sip { v, tail: 0, ntail: 0, length: 0 }
    }

    #[inline]
    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.v;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            self.round();
        }
        self.v[0] ^= m;
    }
}

/// Up to 7 bytes as a little-endian word.
#[inline]
fn word_of(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

impl<const C: usize, const D: usize> Hasher for Sip<C, D> {
    #[inline]
    fn write(&mut self, mut msg: &[u8]) {
        self.length = self.length.wrapping_add(msg.len());
        if self.ntail != 0 {
            let take = (8 - self.ntail).min(msg.len());
            self.tail |= word_of(&msg[..take]) << (8 * self.ntail);
            self.ntail += take;
            msg = &msg[take..];
            if self.ntail < 8 {
                return;
            }
            self.compress(self.tail);
            (self.tail, self.ntail) = (0, 0);
        }
        let mut words = msg.chunks_exact(8);
        for w in &mut words {
            self.compress(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        self.tail = word_of(rest);
        self.ntail = rest.len();
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        s.compress(b);
        s.v[2] ^= 0xff;
        for _ in 0..D {
            s.round();
        }
        s.v[0] ^ s.v[1] ^ s.v[2] ^ s.v[3]
    }
}

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

    /// The rounds, compression and tail handling are std's: with 2 and 4 rounds they give
    /// std's keyed SipHash-2-4, whatever the lengths and the split of the input.
    #[test]
    #[allow(deprecated)] // std's only keyed SipHash, kept for reference here
    fn with_two_and_four_rounds_it_is_std_siphash_2_4() {
        let input: Vec<u8> = (0..64u8).collect();
        for (k0, k1) in [(0, 0), (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908), (u64::MAX, 7)] {
            for len in 0..input.len() {
                for split in [0, 1, 3, 7, 8, 9].into_iter().filter(|s| *s <= len) {
                    let mut ours = Sip::<2, 4>::new_with_keys(k0, k1);
                    let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
                    for part in [&input[..split], &input[split..len]] {
                        ours.write(part);
                        std.write(part);
                    }
                    assert_eq!(ours.finish(), std.finish(), "keys {k0:x} {k1:x}, {len} bytes split at {split}");
                }
            }
            let (mut ours, mut std) = (Sip::<2, 4>::new_with_keys(k0, k1), std::hash::SipHasher::new_with_keys(k0, k1));
            std::hash::Hash::hash("user0042", &mut ours);
            std::hash::Hash::hash("user0042", &mut std);
            assert_eq!(ours.finish(), std.finish(), "a str as maps hash it");
        }
    }

    /// The SipHash-2-4 test vector of the paper (appendix A): key 00..0f, message 00..0e.
    #[test]
    fn the_paper_vector() {
        let mut h = Sip::<2, 4>::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(&(0..15u8).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }
}
