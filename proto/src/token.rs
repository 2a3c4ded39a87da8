//! Opaque tokens (seed 004): `cfa_` (access) or `cfr_` (refresh), then the
//! unpadded base64url encoding of `ID_CRC`, where `ID` is 16 random letters
//! `[a-zA-Z]` and `CRC` the CRC32-IEEE of `ID` in lowercase hex without
//! zero padding. The checksum rejects garbage before any lookup; servers
//! store only the SHA-256 of the whole token string.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};

const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ID_LEN: usize = 16;

/// Which kind of opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TokenKind {
    /// Short-lived, carried in the auth part of every request (`cfa_`).
    Access,
    /// Long-lived, exchanged for a new pair (`cfr_`); rotates on use.
    Refresh,
}

impl TokenKind {
    /// The textual prefix.
    #[must_use]
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Access => "cfa_",
            TokenKind::Refresh => "cfr_",
        }
    }
}

/// Why a string is not a well-formed opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Neither `cfa_` nor `cfr_`.
    #[error("token has no cfa_/cfr_ prefix")]
    Prefix,
    /// The rest is not unpadded base64url.
    #[error("token is not base64url")]
    Encoding,
    /// The decoded text is not `ID_CRC` with a 16-letter ID.
    #[error("token has the wrong structure")]
    Structure,
    /// The CRC does not match the ID.
    #[error("token checksum mismatch")]
    Checksum,
}

/// Builds the token for a given 16-letter id (no randomness: for tests and vectors).
#[must_use]
pub fn encode(kind: TokenKind, id: &str) -> String {
    let crc = crc32fast::hash(id.as_bytes());
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(format!("{id}_{crc:x}")))
}

/// A fresh random token.
pub fn generate(rng: &mut impl Rng, kind: TokenKind) -> String {
    let id: String = (0..ID_LEN).map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())])).collect();
    encode(kind, &id)
}

/// A fresh random token of partition `partition` of a split state
/// (docs/PARTITIONS.md): the id's first letter is the partition's in
/// `[a-zA-Z]` (0 = `a`, 51 = `Z`), the 15 others random.
///
/// # Panics
/// `partition` is 52 or more (no letter names it; `Partitions` allows at most 52).
pub fn generate_in(rng: &mut impl Rng, kind: TokenKind, partition: u8) -> String {
    let first = char::from(LETTERS[usize::from(partition)]);
    let rest = (1..ID_LEN).map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]));
    encode(kind, &std::iter::once(first).chain(rest).collect::<String>())
}

/// The partition a valid token names in a state split into `count`
/// partitions: its id's first letter's index in `[a-zA-Z]`. `None` for a
/// token that is not valid ([`check`]) or whose letter names no partition
/// (a token of another cluster, or forged).
#[must_use]
pub fn partition_of(token: &[u8], count: u8) -> Option<u8> {
    check(token).ok()?;
    let decoded = URL_SAFE_NO_PAD.decode(&token[4..]).ok()?;
    let index = LETTERS.iter().position(|&l| l == decoded[0])?;
    u8::try_from(index).ok().filter(|&p| p < count)
}

/// Checks the format and checksum, without any lookup. Returns the kind.
pub fn check(token: &[u8]) -> Result<TokenKind, TokenFormatError> {
    let (kind, rest) = if let Some(rest) = token.strip_prefix(b"cfa_") {
        (TokenKind::Access, rest)
    } else if let Some(rest) = token.strip_prefix(b"cfr_") {
        (TokenKind::Refresh, rest)
    } else {
        return Err(TokenFormatError::Prefix);
    };
    // 16 letters + '_' + at most 8 hex digits: at most 34 base64 characters.
    if rest.len() > 34 {
        return Err(TokenFormatError::Structure);
    }
    let decoded = URL_SAFE_NO_PAD.decode(rest).map_err(|_| TokenFormatError::Encoding)?;
    if decoded.len() < ID_LEN + 2 || decoded[ID_LEN] != b'_' {
        return Err(TokenFormatError::Structure);
    }
    let (id, crc_hex) = (&decoded[..ID_LEN], &decoded[ID_LEN + 1..]);
    if !id.iter().all(u8::is_ascii_alphabetic) {
        return Err(TokenFormatError::Structure);
    }
    let crc_text = std::str::from_utf8(crc_hex).map_err(|_| TokenFormatError::Structure)?;
    let expected = format!("{:x}", crc32fast::hash(id));
    if crc_text != expected {
        return Err(TokenFormatError::Checksum);
    }
    Ok(kind)
}

/// SHA-256 of the token string: the only form a server stores.
#[must_use]
pub fn hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn crc_vectors_computed_independently() {
        // CRC32-IEEE("QxWnTrBkLmPzYvHd") = 0x977fcf05 and CRC32-IEEE("MfRtGhJkLpQwErTy")
        // = 0xfcea732a, computed with Python's zlib.crc32; base64url by Python's base64.
        assert_eq!(encode(TokenKind::Access, "QxWnTrBkLmPzYvHd"), "cfa_UXhXblRyQmtMbVB6WXZIZF85NzdmY2YwNQ");
        assert_eq!(check(crate::examples::ACCESS_TOKEN.as_bytes()), Ok(TokenKind::Access));
        assert_eq!(check(crate::examples::REFRESH_TOKEN.as_bytes()), Ok(TokenKind::Refresh));
    }

    #[test]
    fn no_zero_padding_in_the_crc() {
        // Find an id whose CRC has a leading zero nibble and check it is printed short.
        let mut rng = rand::rngs::StdRng::from_seed([7; 32]);
        for _ in 0..10_000 {
            let t = generate(&mut rng, TokenKind::Refresh);
            let decoded = URL_SAFE_NO_PAD.decode(&t[4..]).unwrap();
            let crc_len = decoded.len() - ID_LEN - 1;
            if crc_len < 8 {
                assert_eq!(check(t.as_bytes()), Ok(TokenKind::Refresh));
                return;
            }
        }
        panic!("no short CRC in 10k tokens");
    }

    #[test]
    fn garbage_is_rejected_before_lookup() {
        assert_eq!(check(b"Bearer x"), Err(TokenFormatError::Prefix));
        assert_eq!(check(b"cfa_!!!"), Err(TokenFormatError::Encoding));
        assert_eq!(check(b"cfa_YWJj"), Err(TokenFormatError::Structure));
        // The seed's worked example does not carry the CRC of its id.
        assert_eq!(check(b"cfa_YWFhYWFhYWFhYWFhXzlhNWVhMWZh"), Err(TokenFormatError::Structure));
        // One letter changed, the old checksum kept.
        let forged = format!("cfa_{}", URL_SAFE_NO_PAD.encode("QxWnTrBkLmPzYvHe_977fcf05"));
        assert_eq!(check(forged.as_bytes()), Err(TokenFormatError::Checksum));
    }

    #[test]
    fn tokens_of_a_split_state_name_their_partition() {
        let mut rng = rand::rngs::StdRng::from_seed([3; 32]);
        for partition in [0u8, 1, 25, 26, 51] {
            for kind in [TokenKind::Access, TokenKind::Refresh] {
                let t = generate_in(&mut rng, kind, partition);
                assert_eq!(check(t.as_bytes()), Ok(kind));
                assert_eq!(partition_of(t.as_bytes(), 52), Some(partition));
                assert_eq!(partition_of(t.as_bytes(), partition), None, "a letter past the count names none");
            }
        }
        // The example access token of docs/PROTOCOL.md (`QxWn...`): `Q` is 42.
        let example = encode(TokenKind::Access, "QxWnTrBkLmPzYvHd");
        assert_eq!(partition_of(example.as_bytes(), 52), Some(42));
        assert_eq!(partition_of(b"cfa_garbage", 52), None);
        let mut bad = example.into_bytes();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(partition_of(&bad, 52), None, "a token whose checksum fails names nothing");
    }

    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let mut rng = rand::rngs::StdRng::from_seed([1; 32]);
        let a = generate(&mut rng, TokenKind::Access);
        let b = generate(&mut rng, TokenKind::Access);
        assert_ne!(a, b);
        assert_eq!(check(a.as_bytes()), Ok(TokenKind::Access));
        assert_ne!(hash(a.as_bytes()), hash(b.as_bytes()));
    }
}
