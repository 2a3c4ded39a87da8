//! Raw blobs: one message under a key used once (the identity key at rest).

use subtle::ConstantTimeEq;

use super::{OpenError, RAW_OVERHEAD, RAW_VERSION, SealError, SealKeys, ctr_apply, hmac_sha256, iv_for};

fn raw_tag(keys: &SealKeys, ad: &[u8], counter: u64, ciphertext: &[u8]) -> [u8; 32] {
    let ad_len = (ad.len() as u64).to_be_bytes();
    hmac_sha256(&keys.mac, &[&[RAW_VERSION], &ad_len, ad, &counter.to_be_bytes(), ciphertext])
}

/// Seals `plaintext` as a raw blob: `version (1) | counter u64 | ciphertext | tag`,
/// the tag over `version | len u64 | ad | counter | ciphertext`.
///
/// The caller guarantees that `counter` is never used twice with `keys`
/// (the identity key at rest uses a fresh salt, hence fresh keys, each
/// time). Messages go through [`Sealer`](super::Sealer) instead.
pub fn seal_with_counter(keys: &SealKeys, counter: u64, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut blob = Vec::with_capacity(plaintext.len() + RAW_OVERHEAD);
    blob.push(RAW_VERSION);
    blob.extend_from_slice(&counter.to_be_bytes());
    blob.extend_from_slice(plaintext);
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut blob[9..]) {
        return Err(SealError::TooLong);
    }
    let tag = raw_tag(keys, ad, counter, &blob[9..]);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Opens a raw blob sealed with [`seal_with_counter`]: the counter and the plaintext.
pub fn open_unchecked(keys: &SealKeys, ad: &[u8], blob: &[u8]) -> Result<(u64, Vec<u8>), OpenError> {
    if blob.len() < RAW_OVERHEAD {
        return Err(OpenError::Truncated { len: blob.len(), min: RAW_OVERHEAD });
    }
    if blob[0] != RAW_VERSION {
        return Err(OpenError::UnknownVersion(blob[0]));
    }
    let counter = u64::from_be_bytes(blob[1..9].try_into().unwrap_or_default());
    let (ciphertext, tag) = blob[9..].split_at(blob.len() - RAW_OVERHEAD);
    let expected = raw_tag(keys, ad, counter, ciphertext);
    if !bool::from(expected.as_slice().ct_eq(tag)) {
        return Err(OpenError::BadMac);
    }
    let mut plaintext = ciphertext.to_vec();
    if !ctr_apply(&keys.enc, &iv_for(counter), &mut plaintext) {
        return Err(OpenError::BadMac);
    }
    Ok((counter, plaintext))
}
