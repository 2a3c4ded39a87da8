//! Attacker review (issue 11): MP handshake attacks at the secure client
//! that succeed today. Each test asserts the secure behaviour, so it fails
//! until the flaw is fixed.

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Net, alice_bob};
use crate::ClientEvent;
use crate::e2e::secure::SecureEvent;
use crate::e2e::{IdentityKey, MpOffer, fixtures};
use crate::server::state::Conversation;

/// Bob's signed acceptance of the request alice's server holds (what Bob's
/// client sends in `accept_mp`), made directly from the stored request.
fn bobs_acceptance(net: &Net) -> Bytes {
    let Some(Conversation::Requested { by, handshake }) = net.server.state().conversation("alice", "bob") else {
        panic!("the server holds no request of alice's");
    };
    assert_eq!(by, "alice");
    let alice = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let bob = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).unwrap();
    let offer = MpOffer::verify("alice", alice.public(), "bob", handshake).unwrap();
    let (_session, blob) = offer.accept(&mut StdRng::from_seed([42; 32]), &bob).unwrap();
    Bytes::from(blob)
}

/// PROTOCOL.md, close_mp: "Both sides discard the conversation keys."
/// SECURITY.md: stream keys are "dropped on mp_closed"; the requester's
/// ephemeral secret lives "until the acceptance arrives".
///
/// The closing side discards nothing: `close_mp` goes straight to the
/// wrapped client, so the closer keeps the session's stream keys (persisted
/// in its profile) and the ephemeral secrets of its requests to that peer.
/// A request withdrawn with `close_mp` can then still be completed by an
/// acceptance the server delivers afterwards (Bob accepted just before the
/// withdrawal reached the server, or a hostile server held the acceptance
/// back): Alice gets `MpReady` for a conversation she closed, and the keys
/// of a closed conversation outlive it on disk (forward secrecy lost for
/// everything sent in it until the next logout).
#[test]
fn closing_an_mp_discards_its_keys_and_its_pending_handshakes() {
    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    net.sc(a).close_mp(now, "bob").unwrap();
    net.pump();
    net.take(a);
    net.take(b);
    assert!(!net.sc(b).has_session("alice"), "the peer drops the session on mp_closed");
    assert!(!net.sc(a).has_session("bob"), "the closer still holds the stream keys of the closed conversation");

    // Alice asks again, then withdraws the request before Bob answers.
    net.sc(a).request_mp(now, "bob").unwrap();
    net.pump();
    let acceptance = bobs_acceptance(&net);
    net.sc(a).close_mp(now, "bob").unwrap();
    net.pump();
    net.take(a);
    // Bob's acceptance of the withdrawn request arrives after the withdrawal.
    let bob_key = Bytes::copy_from_slice(net.sc(b).identity().public().spki_der());
    let late = ClientEvent::MpAccepted { peer: "bob".into(), seq: 99, identity_key: bob_key, handshake: acceptance };
    net.sc(a).inject_event(now, late);
    net.pump();
    let events = net.take(a);
    assert!(
        !events.iter().any(|e| matches!(e, SecureEvent::MpReady { .. })),
        "a withdrawn request's ephemeral secret was kept and completed a session: {events:?}"
    );
    assert!(!net.sc(a).has_session("bob"));
}

/// ARCHITECTURE.md (MP handshakes): "a refusal drops it and keeps the
/// earlier ones"; "Done makes it the peer's only candidate".
///
/// A snapshot taken while a `request_mp` awaits its answer stores the
/// handshake among the settled candidates and restores the pending entry
/// without it (`handshake: None`), so after a restart the answer no longer
/// settles anything: a refused request stays a candidate (and a Done one
/// does not drop the others). A hostile server answers the restarted
/// client's request 409 but forwards it to Bob anyway; Bob accepts; Alice
/// completes the session with the handshake she was told the server never
/// held. Without the restart the refusal drops the candidate and the same
/// acceptance is rejected.
#[test]
fn a_request_refused_after_a_restart_stops_being_a_candidate() {
    use crate::e2e::secure::SecureClient;
    use crate::server::HashParams;
    use crate::wire::{Opcode, status};
    use crate::{ClientConfig, Ephemeral};

    let (mut net, a, _b) = alice_bob();
    let now = net.now;
    let id = net.sc(a).request_mp(now, "bob").unwrap();
    // The profile is saved while the request awaits its answer (the
    // durability rule: before the transmit), then the process restarts.
    let snapshot = net.sc(a).snapshot();
    net.pump();
    let acceptance = bobs_acceptance(&net);
    let identity = IdentityKey::from_pkcs8_der(fixtures::ALICE_PKCS8).unwrap();
    let rng = StdRng::from_seed([77; 32]);
    let config = ClientConfig::default();
    let mut restored = SecureClient::restore(config, &snapshot, identity, rng, HashParams::INSECURE_FAST, now).unwrap();

    // The (hostile) server refuses the request: "not held".
    let refused = ClientEvent::Failed {
        request_id: id,
        opcode: Opcode::RequestMp,
        code: status::CONFLICT,
        reason: "already asked bob: waiting for an answer".into(),
        retry_after_ms: 0,
    };
    restored.inject_event(now, refused);
    let bob_key = Bytes::copy_from_slice(IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).unwrap().public().spki_der());
    let accepted = ClientEvent::MpAccepted { peer: "bob".into(), seq: 1, identity_key: bob_key, handshake: acceptance };
    restored.inject_event(now, accepted);
    let events: Vec<SecureEvent> = restored
        .drain()
        .commit(&mut Ephemeral)
        .unwrap()
        .into_iter()
        .filter_map(|o| match o {
            crate::e2e::secure::SecureOutput::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        !events.iter().any(|e| matches!(e, SecureEvent::MpReady { .. })),
        "a refused request (refused after a restart) completed a session: {events:?}"
    );
}

/// The answer to a close arrives late (its connection was lost and the
/// request answered again from the server's record on the next one), after
/// the peer asked again and this user accepted: the answer closes the
/// conversation it was about, not the new one (simulator secure seed 709 of
/// 0..999: the new session was dropped, and what the peer sent in it was
/// acknowledged and never readable).
#[test]
fn a_late_close_answer_leaves_a_session_accepted_after_the_close() {
    use crate::wire::{Opcode, ResponseBody, Sent};

    let (mut net, a, b) = alice_bob();
    net.handshake(a, b, "alice", "bob");
    let now = net.now;
    let close = net.sc(a).close_mp(now, "bob").unwrap();
    assert!(!net.sc(a).has_session("bob"), "set aside at the call");

    // bob asks again; alice accepts, all before the close's answer comes back.
    let bob = IdentityKey::from_pkcs8_der(fixtures::BOB_PKCS8).unwrap();
    let (_handshake, blob) = crate::e2e::MpRequest::new(&mut StdRng::from_seed([9; 32]), &bob, "bob", "alice").unwrap();
    let bob_key = Bytes::copy_from_slice(bob.public().spki_der());
    let request = ClientEvent::MpRequest { from: "bob".into(), seq: 8, identity_key: bob_key, handshake: blob.into() };
    net.sc(a).inject_event(now, request);
    net.sc(a).accept_mp(now, "bob").unwrap();
    assert!(net.sc(a).has_session("bob"));
    let done = ClientEvent::Done {
        request_id: close,
        opcode: Opcode::CloseMp,
        code: 200,
        body: ResponseBody::Sent(Sent { seq: 2 }),
    };
    net.sc(a).inject_event(now, done);
    assert!(net.sc(a).has_session("bob"), "the late answer closed the conversation accepted after the close");
}
