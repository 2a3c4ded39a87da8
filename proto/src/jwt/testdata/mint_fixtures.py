"""Mints the independent-implementation fixtures in this directory.

Run once (PyJWT + cryptography, fresh random keys that confab never sees):
    python3 mint_fixtures.py > pyjwt_fixtures.json
The private keys live only in this process; the output holds the public
JWK Set and the token strings. Re-running produces different keys and
tokens: the committed output is the fixture, this script is its provenance.
"""

import hashlib
import hmac
import json
import base64

import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISS = "https://idp.example.test/realms/confab"
IAT = 1_800_000_000
EXP = IAT + 300  # Keycloak's default access token lifespan


def public_jwk(key, kid, alg, use="sig"):
    if isinstance(key, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(key))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key))
    jwk.update({"kid": kid, "alg": alg, "use": use})
    return jwk


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
enc_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

jwks = {
    "keys": [
        public_jwk(rsa_key.public_key(), "kc-rsa-1", "RS256"),
        public_jwk(ec_key.public_key(), "kc-ec-1", "ES256"),
        public_jwk(enc_key.public_key(), "kc-enc-1", "RSA-OAEP", use="enc"),
        public_jwk(weak_key.public_key(), "weak-rsa-1024", "RS256"),
    ]
}

# Keycloak's access token shape (typ: Bearer, azp, preferred_username, aud array).
keycloak_access = {
    "exp": EXP,
    "iat": IAT,
    "auth_time": IAT - 5,
    "jti": "5d3c1f0e-8a7b-4c2d-9e6f-0a1b2c3d4e5f",
    "iss": ISS,
    "aud": ["confab", "account"],
    "sub": "8f14e45f-ceea-467f-a0e6-d9c1b2a3e4f5",
    "typ": "Bearer",
    "azp": "confab-cli",
    "session_state": "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5",
    "scope": "openid profile offline_access",
    "preferred_username": "alice",
}

# A phantom-translation shaped refresh JWT (type: refresh).
phantom_refresh = {
    "iss": ISS,
    "aud": "confab",
    "sub": "bob",
    "exp": EXP,
    "iat": IAT,
    "jti": hashlib.sha256(b"cfr_not-a-real-token").hexdigest(),
    "type": "refresh",
}

pem = rsa_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "kc-rsa-1"}).encode())
hs_payload = b64(json.dumps(keycloak_access).encode())
hs_input = f"{hs_header}.{hs_payload}".encode()
hs_sig = b64(hmac.new(pem, hs_input, hashlib.sha256).digest())

out = {
    "generator": f"PyJWT {jwt.__version__}",
    "issuer": ISS,
    "iat": IAT,
    "exp": EXP,
    "jwks": jwks,
    "tokens": {
        "rs256_keycloak_access": jwt.encode(
            keycloak_access, rsa_key, algorithm="RS256", headers={"kid": "kc-rsa-1"}
        ),
        "es256_keycloak_access": jwt.encode(
            keycloak_access, ec_key, algorithm="ES256", headers={"kid": "kc-ec-1"}
        ),
        "es256_phantom_refresh": jwt.encode(
            phantom_refresh, ec_key, algorithm="ES256", headers={"kid": "kc-ec-1"}
        ),
        "rs256_signed_by_stranger": jwt.encode(
            keycloak_access, stranger, algorithm="RS256", headers={"kid": "kc-rsa-1"}
        ),
        "rs256_weak_key": jwt.encode(
            keycloak_access, weak_key, algorithm="RS256", headers={"kid": "weak-rsa-1024"}
        ),
        "hs256_with_rsa_public_pem": f"{hs_header}.{hs_payload}.{hs_sig}",
    },
}
print(json.dumps(out, indent=2))
