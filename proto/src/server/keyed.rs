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

impl BuildHasher for Keyed {
    type Hasher = Sip<1, 3>;

    fn build_hasher(&self) -> Sip<1, 3> {
        Sip::new_with_keys(self.k0, self.k1)
    }
}

/// A hash map under a [`Keyed`] hasher.
pub(crate) type KeyedMap<K, V> = HashMap<K, V, Keyed>;

/// A [`BuildHasher`] for maps keyed by integers that are bounded in size (a
/// family's remembered request ids: at most `dedup_window`): a keyed
/// multiply-xorshift, one multiplication per word, under a key derived from a
/// secret. Peers who cannot see hashes cannot aim at collisions, and the
/// bound caps what a lucky guess costs; SipHash's rehashing of a full
/// table costed the routing path a tenth.
#[derive(Clone, Copy)]
pub(crate) struct IntKeyed {
    k0: u64,
    /// Odd.
    k1: u64,
}

impl std::fmt::Debug for IntKeyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntKeyed(..)")
    }
}

impl IntKeyed {
    /// The hasher keyed by `secret` for `purpose`.
    pub(crate) fn derive(secret: &[u8; 32], purpose: &str) -> IntKeyed {
        let Keyed { k0, k1 } = Keyed::derive(secret, purpose);
        IntKeyed { k0, k1: k1 | 1 }
    }
}

/// The key of maps built outside a server (a store's copy of the state, a
/// state being read): fixed, so such maps are deterministic; a server
/// re-keys its state from its seed (`State::rekey`).
impl Default for IntKeyed {
    fn default() -> IntKeyed {
        IntKeyed::derive(&[0; 32], "default")
    }
}

/// The key is not part of a map's value: any two are equal.
impl PartialEq for IntKeyed {
    fn eq(&self, _: &IntKeyed) -> bool {
        true
    }
}

impl Eq for IntKeyed {}

impl BuildHasher for IntKeyed {
    type Hasher = IntHasher;

    fn build_hasher(&self) -> IntHasher {
        IntHasher { h: self.k0, k1: self.k1 }
    }
}

/// The hasher of [`IntKeyed`].
#[derive(Debug, Clone)]
pub(crate) struct IntHasher {
    h: u64,
    k1: u64,
}

impl IntHasher {
    #[inline]
    fn word(&mut self, w: u64) {
        let p = (self.h ^ w).wrapping_mul(self.k1);
        self.h = p ^ (p >> 32);
    }
}

impl Hasher for IntHasher {
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.word(u64::from(x));
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.word(x);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.word(word_of(chunk) ^ ((chunk.len() as u64) << 59));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        let p = self.h.wrapping_mul(self.k1);
        p ^ (p >> 29)
    }
}

/// A hash map under an [`IntKeyed`] hasher.
pub(crate) type IntKeyedMap<K, V> = HashMap<K, V, IntKeyed>;

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

/// Up to 7 bytes as a little-endian word (a loop, not a `memcpy` call: the inputs are short).
#[inline]
fn word_of(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |w, b| (w << 8) | u64::from(*b))
}

impl<const C: usize, const D: usize> Sip<C, D> {
    /// Appends `n` (< 8) bytes given as the low bytes of `x`, little-endian: what `write` of
    /// those bytes does, without slicing (integers and the `0xff` after a `str` come this way).
    #[inline]
    fn short_write(&mut self, x: u64, n: usize) {
        self.length = self.length.wrapping_add(n);
        self.tail |= x << (8 * self.ntail);
        if self.ntail + n < 8 {
            self.ntail += n;
            return;
        }
        self.compress(self.tail);
        let used = 8 - self.ntail;
        // The bytes of `x` that did not fit (none when `used == n`).
        self.tail = if used >= 8 { 0 } else { x >> (8 * used) };
        self.ntail = n - used;
    }
}

impl<const C: usize, const D: usize> Hasher for Sip<C, D> {
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.short_write(u64::from(x), 1);
    }

    #[inline]
    fn write_u16(&mut self, x: u16) {
        self.short_write(u64::from(x), 2);
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.short_write(u64::from(x), 4);
    }

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

    /// Integers written as such hash like their little-endian bytes, wherever they fall.
    #[test]
    fn short_writes_are_byte_writes() {
        for prefix in 0..12usize {
            let bytes: Vec<u8> = (0..prefix as u8).collect();
            let (mut a, mut b) = (Sip::<1, 3>::new_with_keys(1, 2), Sip::<1, 3>::new_with_keys(1, 2));
            a.write(&bytes);
            b.write(&bytes);
            a.write_u32(0xdead_beef);
            b.write(&0xdead_beef_u32.to_le_bytes());
            a.write_u8(0xff);
            b.write(&[0xff]);
            a.write_u16(0x1234);
            b.write(&0x1234_u16.to_le_bytes());
            assert_eq!(a.finish(), b.finish(), "after {prefix} bytes");
        }
    }

    #[test]
    fn integer_keys_spread_and_depend_on_the_key() {
        let a = IntKeyed::derive(&[1; 32], "dedup");
        let b = IntKeyed::derive(&[2; 32], "dedup");
        assert_ne!(a.hash_one(7u32), b.hash_one(7u32));
        // Consecutive ids land in distinct low bits and distinct top bits (hashbrown uses both).
        let low: std::collections::BTreeSet<u64> = (0..1024u32).map(|i| a.hash_one(i) & 0x3ff).collect();
        let top: std::collections::BTreeSet<u64> = (0..1024u32).map(|i| a.hash_one(i) >> 57).collect();
        assert!(low.len() > 600 && top.len() > 100, "{} low, {} top", low.len(), top.len());
    }

    /// The SipHash-2-4 test vector of the paper (appendix A): key 00..0f, message 00..0e.
    #[test]
    fn the_paper_vector() {
        let mut h = Sip::<2, 4>::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(&(0..15u8).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }
}
