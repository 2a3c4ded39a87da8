//! The MP handshake: request, acceptance, ECDH and the session's stream keys.

use p256::SecretKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

use super::rederive::{emsa_pss_encode, ephemeral_public, rsa_public_op, signed_accept, signed_request};
use super::support::{Node, Scripted, h, hx, lp, text};
use super::{ALICE, BOB, E_A_SCALAR, E_B_SCALAR, Identities, PSS_SALT_ACCEPT, PSS_SALT_REQUEST, RFC5903_SHARED};
use crate::e2e::handshake::{HANDSHAKE_LEN, ecdh};
use crate::e2e::kdf::extract;
use crate::e2e::{Direction, KeySchedule, MpOffer, MpRequest, MpSession, Purpose, Role, StreamKey};

/// What the handshake leaves for the messages that follow it.
pub(super) struct Handshake {
    /// The `handshake` vector.
    pub(super) node: Node,
    /// Alice's side of the session.
    pub(super) alice_mp: MpSession,
    /// Bob's side of the session.
    pub(super) bob_mp: MpSession,
    /// The stream key from Alice to Bob.
    pub(super) k_ab: StreamKey,
    /// The stream key from Bob to Alice.
    pub(super) k_ba: StreamKey,
    /// The RNG that completed Alice's side, for what comes next.
    pub(super) rng: StdRng,
}

/// Runs the handshake with scripted ephemeral scalars and PSS salts and
/// checks every step against E2E.md.
pub(super) fn handshake(ids: &Identities) -> Handshake {
    let (alice, bob, alice_pub, bob_pub) = (&ids.alice, &ids.bob, &ids.alice_pub, &ids.bob_pub);
    let (spki_a, spki_b) = (alice_pub.spki_der().to_vec(), bob_pub.spki_der().to_vec());
    let (fp_a, fp_b) = (alice_pub.fingerprint().0, bob_pub.fingerprint().0);
    let (e_a_scalar, e_b_scalar) = (h(E_A_SCALAR), h(E_B_SCALAR));
    let (salt_req, salt_acc) = (h(PSS_SALT_REQUEST), h(PSS_SALT_ACCEPT));
    let mut rng_a = Scripted::new(&[&Scripted::scalar(&e_a_scalar), &salt_req]);
    let (pending, request) = MpRequest::new(&mut rng_a, alice, ALICE, BOB).expect("request");
    assert_eq!(&pending.export()[1..33], e_a_scalar.as_slice(), "request: the scripted ephemeral scalar was used");
    let e_a = ephemeral_public(&e_a_scalar);
    assert_eq!(request.len(), HANDSHAKE_LEN);
    assert_eq!(request[0], 1, "request: version");
    assert_eq!(&request[1..66], e_a.as_slice(), "request: E_A");
    let m_req = signed_request(ALICE, BOB, &e_a);
    let sig_req = request[66..].to_vec();
    alice_pub.verify(&m_req, &sig_req).expect("request: the signature covers the documented signed message");
    let em_req = emsa_pss_encode(&m_req, &salt_req);
    assert_eq!(rsa_public_op(&spki_a, &sig_req), em_req, "request: s^e mod n = EMSA-PSS-ENCODE(M, salt)");

    let offer = MpOffer::verify(ALICE, alice_pub, BOB, &request).expect("bob verifies the request");
    assert_eq!(offer.ephemeral().as_slice(), e_a.as_slice());
    let mut rng_b = Scripted::new(&[&Scripted::scalar(&e_b_scalar), &salt_acc]);
    let (bob_mp, accept) = offer.accept(&mut rng_b, bob).expect("accept");
    let e_b = ephemeral_public(&e_b_scalar);
    assert_eq!(accept.len(), HANDSHAKE_LEN);
    assert_eq!(accept[0], 1, "accept: version");
    assert_eq!(&accept[1..66], e_b.as_slice(), "accept: E_B");
    let m_acc = signed_accept(ALICE, BOB, &e_a, &e_b);
    let sig_acc = accept[66..].to_vec();
    bob_pub.verify(&m_acc, &sig_acc).expect("accept: the signature covers the documented signed message");
    let em_acc = emsa_pss_encode(&m_acc, &salt_acc);
    assert_eq!(rsa_public_op(&spki_b, &sig_acc), em_acc, "accept: s^e mod n = EMSA-PSS-ENCODE(M, salt)");
    let mut rng = StdRng::from_seed([9; 32]);
    let alice_mp = pending.complete(&mut rng, bob_pub, &accept).expect("alice completes");
    assert_eq!((alice_mp.role(), bob_mp.role()), (Role::Requester, Role::Accepter));

    let secret_a = SecretKey::from_slice(&e_a_scalar).expect("scalar");
    let secret_b = SecretKey::from_slice(&e_b_scalar).expect("scalar");
    let shared = ecdh(&secret_a, &e_b).expect("ecdh");
    assert_eq!(*shared, *ecdh(&secret_b, &e_a).expect("ecdh"), "ECDH agrees");
    assert_eq!(shared.as_slice(), h(RFC5903_SHARED).as_slice(), "ECDH: RFC 5903 8.1");
    let salt_input =
        [b"confab mp session v1".as_slice(), &lp(ALICE.as_bytes()), &lp(BOB.as_bytes()), &fp_a, &fp_b, &e_a, &e_b]
            .concat();
    let session_salt = Sha256::digest(&salt_input);
    let prk = extract(&session_salt, &shared[..]);
    let schedule = KeySchedule::new(&session_salt, &shared[..]);
    let k_ab = schedule.stream_key(Purpose::Mp(Direction::AToB));
    let k_ba = schedule.stream_key(Purpose::Mp(Direction::BToA));
    assert!(alice_mp.send_stream() == &k_ab && bob_mp.opener().stream() == &k_ab, "stream a->b");
    assert!(bob_mp.send_stream() == &k_ba && alice_mp.opener().stream() == &k_ba, "stream b->a");
    let node = Node::Obj(vec![
        ("requester", text(ALICE)),
        ("accepter", text(BOB)),
        (
            "request",
            Node::Obj(vec![
                ("ephemeral_secret", hx(&e_a_scalar)),
                ("ephemeral_public", hx(&e_a)),
                ("signed_message", hx(&m_req)),
                ("pss_salt", hx(&salt_req)),
                ("pss_encoded_message", hx(&em_req)),
                ("signature", hx(&sig_req)),
                ("blob", hx(&request)),
            ]),
        ),
        (
            "accept",
            Node::Obj(vec![
                ("ephemeral_secret", hx(&e_b_scalar)),
                ("ephemeral_public", hx(&e_b)),
                ("signed_message", hx(&m_acc)),
                ("pss_salt", hx(&salt_acc)),
                ("pss_encoded_message", hx(&em_acc)),
                ("signature", hx(&sig_acc)),
                ("blob", hx(&accept)),
            ]),
        ),
        ("ecdh_shared_secret", hx(&shared[..])),
        ("session_salt_input", hx(&salt_input)),
        ("session_salt", hx(&session_salt)),
        ("hkdf_prk", hx(&prk)),
        ("stream_key_a_to_b", hx(k_ab.as_bytes())),
        ("stream_key_b_to_a", hx(k_ba.as_bytes())),
    ]);
    Handshake { node, alice_mp, bob_mp, k_ab, k_ba, rng }
}
