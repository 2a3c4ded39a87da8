//! Tests of the JWT module: RFC vectors, attacks, Wycheproof, tokens minted
//! by an independent implementation (PyJWT), signer, validator and codes.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::Value;

use super::{b64_decode, b64_encode};

mod attacks;
mod claims;
mod codes;
mod fixtures;
mod malleability;
mod rfc;
mod signer;
mod validator;
mod wycheproof;

/// RFC 7515 A.2 / A.3 payload: `{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}`.
const RFC_PAYLOAD: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
/// The `exp` of that payload.
const RFC_EXP: u64 = 1_300_819_380;

/// RFC 7515 A.2.1 (and RFC 7517 A.1's second key): the RSA public key.
const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

/// A set with the RFC 7515 A.2 RSA key alone, without kid (the A.2 token has none).
fn rfc7515_a2_keys() -> crate::jwt::JwkSet {
    use crate::jwt::{Jwk, JwkSet, PublicKey, RsaKey};
    let n = b64_decode(RFC7515_A2_N.as_bytes()).unwrap();
    let key = RsaKey::from_components(&n, &[1, 0, 1]).unwrap();
    JwkSet::from_keys([Jwk::new(PublicKey::Rsa(key))]).unwrap()
}

/// RFC 7515 A.2: the complete RS256 JWS.
fn rfc7515_a2_token() -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}.{}",
        "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CU\
         Ar7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_d\
         O--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igc\
         N_IoypGlUPQGe77Rw"
    )
}

/// RFC 7515 A.3.1: the EC P-256 key (`d` is the private scalar).
const RFC7515_A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const RFC7515_A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const RFC7515_A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

/// RFC 7515 A.3: the complete ES256 JWS.
fn rfc7515_a3_token() -> String {
    format!(
        "eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    )
}

/// RFC 7517 Appendix A.1: example public keys.
const RFC7517_A1: &str = r#"{"keys":
       [
         {"kty":"EC",
          "crv":"P-256",
          "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
          "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
          "use":"enc",
          "kid":"1"},

         {"kty":"RSA",
          "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
          "e":"AQAB",
          "alg":"RS256",
          "kid":"2011-04-29"}
       ]
     }"#;

/// The RFC 7515 A.3 private key, used to sign test tokens whose header and claims the tests choose.
fn test_signing_key() -> SigningKey {
    SigningKey::from_slice(&b64_decode(RFC7515_A3_D.as_bytes()).unwrap()).unwrap()
}

/// The public JWK of [`test_signing_key`] with the given kid.
fn test_jwk_json(kid: &str) -> String {
    format!(r#"{{"kty":"EC","crv":"P-256","x":"{RFC7515_A3_X}","y":"{RFC7515_A3_Y}","kid":"{kid}"}}"#)
}

/// An ES256 compact JWS over exactly this header and these claims.
fn es256_token(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64_encode(header.to_string().as_bytes()), b64_encode(claims.to_string().as_bytes()));
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64_encode(&signature.to_bytes()))
}

/// The same from raw header and claims bytes (for malformed JSON).
fn es256_token_raw(key: &SigningKey, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", b64_encode(header), b64_encode(claims));
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64_encode(&signature.to_bytes()))
}
