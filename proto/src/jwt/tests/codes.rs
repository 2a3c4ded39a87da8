//! Third-party codes: layout, replay, expiry, audience, tampering.

use hmac::{KeyInit, Mac};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::Sha256;

use super::{b64_decode, b64_encode};
use crate::jwt::{CODE_MAX_TTL_MS, IssueCodeError, UsedCodes, VerifyCodeError, issue_code, verify_code};

const SECRET: [u8; 32] = [0x5a; 32];
const NOW: u64 = 1_800_000_000_000;

fn issue(audience: &str, ttl: u64) -> String {
    issue_code(&mut StdRng::from_seed([1; 32]), &SECRET, "alice", audience, NOW, ttl).unwrap().code
}

#[test]
fn jwt_code_layout_is_as_documented() {
    let issued = issue_code(&mut StdRng::from_seed([1; 32]), &SECRET, "alice", "game-7", NOW, 60_000).unwrap();
    assert_eq!(issued.expires_ms, NOW + 60_000);
    let bytes = b64_decode(issued.code.as_bytes()).unwrap();
    assert_eq!(bytes.len(), 16 + 8 + 1 + 6 + 32);
    let (nonce, rest) = bytes.split_at(16);
    assert_eq!(&rest[..8], &(NOW + 60_000).to_be_bytes());
    assert_eq!(rest[8], 6);
    assert_eq!(&rest[9..15], b"game-7");
    // The MAC recomputed independently from the documented input.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&SECRET).unwrap();
    mac.update(b"confab-code-v1\x05alice\x06game-7");
    mac.update(&(NOW + 60_000).to_be_bytes());
    mac.update(nonce);
    assert_eq!(&rest[15..], mac.finalize().into_bytes().as_slice());
}

#[test]
fn jwt_code_verifies_once() {
    let code = issue("game-7", 60_000);
    let mut used = UsedCodes::new(100);
    verify_code(&SECRET, "alice", "game-7", &code, NOW + 1, &mut used).unwrap();
    assert_eq!(verify_code(&SECRET, "alice", "game-7", &code, NOW + 2, &mut used), Err(VerifyCodeError::Replayed));
    assert_eq!(used.len(), 1);
    // Two codes for the same user and audience are distinct (random nonce).
    let other = issue_code(&mut StdRng::from_seed([2; 32]), &SECRET, "alice", "game-7", NOW, 60_000).unwrap();
    assert_ne!(other.code, code);
    verify_code(&SECRET, "alice", "game-7", &other.code, NOW + 3, &mut used).unwrap();
}

#[test]
fn jwt_code_expires() {
    let code = issue("game-7", 10_000);
    let mut used = UsedCodes::new(100);
    assert_eq!(verify_code(&SECRET, "alice", "game-7", &code, NOW + 10_000, &mut used), Err(VerifyCodeError::Expired));
    verify_code(&SECRET, "alice", "game-7", &code, NOW + 9_999, &mut used).unwrap();
    // The lifetime is capped at 60 s whatever is asked.
    let long = issue_code(&mut StdRng::from_seed([3; 32]), &SECRET, "alice", "game-7", NOW, 3_600_000).unwrap();
    assert_eq!(long.expires_ms, NOW + CODE_MAX_TTL_MS);
    assert_eq!(
        verify_code(&SECRET, "alice", "game-7", &long.code, NOW + CODE_MAX_TTL_MS, &mut used),
        Err(VerifyCodeError::Expired)
    );
    // A genuine code more than 60 s ahead of the verifier's clock is refused.
    let code = issue("game-7", 60_000);
    assert_eq!(verify_code(&SECRET, "alice", "game-7", &code, NOW - 1, &mut used), Err(VerifyCodeError::ExpiryTooFar));
}

#[test]
fn jwt_code_wrong_audience_and_user() {
    let code = issue("game-7", 60_000);
    let mut used = UsedCodes::new(100);
    assert_eq!(verify_code(&SECRET, "alice", "game-8", &code, NOW, &mut used), Err(VerifyCodeError::WrongAudience));
    // For another user, or with another user's secret, the MAC fails.
    assert_eq!(verify_code(&SECRET, "bob", "game-7", &code, NOW, &mut used), Err(VerifyCodeError::BadMac));
    assert_eq!(verify_code(&[0x5b; 32], "alice", "game-7", &code, NOW, &mut used), Err(VerifyCodeError::BadMac));
    // Nothing was consumed: the right party can still use it.
    verify_code(&SECRET, "alice", "game-7", &code, NOW, &mut used).unwrap();
}

#[test]
fn jwt_code_tampering_is_detected() {
    let code = issue("game-7", 60_000);
    let bytes = b64_decode(code.as_bytes()).unwrap();
    let mut used = UsedCodes::new(100);
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        let result = verify_code(&SECRET, "alice", "game-7", &b64_encode(&tampered), NOW, &mut used);
        // Flipping the audience length breaks the layout; anything else breaks the MAC.
        let expected = if i == 24 { VerifyCodeError::Format } else { VerifyCodeError::BadMac };
        assert_eq!(result, Err(expected), "byte {i}");
    }
    // Re-targeting: the audience rewritten inside the code.
    let mut retarget = bytes.clone();
    retarget[25..31].copy_from_slice(b"game-8");
    assert_eq!(
        verify_code(&SECRET, "alice", "game-8", &b64_encode(&retarget), NOW, &mut used),
        Err(VerifyCodeError::BadMac)
    );
    // Extending the expiry.
    let mut extended = bytes.clone();
    extended[16..24].copy_from_slice(&(NOW + 3_600_000).to_be_bytes());
    assert_eq!(
        verify_code(&SECRET, "alice", "game-7", &b64_encode(&extended), NOW + 100_000, &mut used),
        Err(VerifyCodeError::BadMac)
    );
    assert!(used.is_empty());
}

#[test]
fn jwt_code_bad_format() {
    let mut used = UsedCodes::new(100);
    let code = issue("game-7", 60_000);
    for bad in
        ["", "!!!", "AAAA", &code[..code.len() - 4], &format!("{code}AAAA"), &format!("{code}="), &"A".repeat(10_000)]
    {
        assert_eq!(verify_code(&SECRET, "alice", "game-7", bad, NOW, &mut used), Err(VerifyCodeError::Format), "{bad}");
    }
    // The seed's forever-valid code (a bare hash) is not a code.
    assert_eq!(verify_code(&SECRET, "alice", "game-7", "4f2a9c", NOW, &mut used), Err(VerifyCodeError::Format));
}

#[test]
fn jwt_code_issue_rules() {
    let mut rng = StdRng::from_seed([4; 32]);
    assert_eq!(issue_code(&mut rng, &SECRET, "alice", "", NOW, 1000), Err(IssueCodeError::BadAudience));
    assert_eq!(issue_code(&mut rng, &SECRET, "alice", &"a".repeat(65), NOW, 1000), Err(IssueCodeError::BadAudience));
    assert_eq!(issue_code(&mut rng, &SECRET, "", "game", NOW, 1000), Err(IssueCodeError::BadUsername));
    assert_eq!(issue_code(&mut rng, &SECRET, "alice", "game", NOW, 0), Err(IssueCodeError::ZeroTtl));
    let max = issue_code(&mut rng, &SECRET, "alice", &"a".repeat(64), NOW, 1000).unwrap();
    verify_code(&SECRET, "alice", &"a".repeat(64), &max.code, NOW, &mut UsedCodes::new(1)).unwrap();
}

#[test]
fn jwt_code_replay_set_prunes_and_fails_closed() {
    let mut rng = StdRng::from_seed([5; 32]);
    let mut used = UsedCodes::new(2);
    let codes: Vec<_> =
        (0..3).map(|_| issue_code(&mut rng, &SECRET, "alice", "game-7", NOW, 60_000).unwrap().code).collect();
    verify_code(&SECRET, "alice", "game-7", &codes[0], NOW, &mut used).unwrap();
    verify_code(&SECRET, "alice", "game-7", &codes[1], NOW, &mut used).unwrap();
    assert_eq!(
        verify_code(&SECRET, "alice", "game-7", &codes[2], NOW + 1, &mut used),
        Err(VerifyCodeError::ReplayCacheFull)
    );
    assert_eq!(used.next_expiry(), Some(NOW + 60_000));
    used.prune(NOW + 60_000);
    assert!(used.is_empty());
    // Pruned codes are expired, never replayable.
    assert_eq!(
        verify_code(&SECRET, "alice", "game-7", &codes[0], NOW + 60_000, &mut used),
        Err(VerifyCodeError::Expired)
    );
}
