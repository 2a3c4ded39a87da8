//! Sessions authenticated by an external OIDC provider's access token.

use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng as _;

use super::{Net, outcome, server_config};
use crate::jwt::{MintRequest, SignerConfig, SigningKeys};
use crate::server::{OidcConfig, ServerLog};
use crate::token::TokenKind;
use crate::wire::{Opcode, ResponseBody, status};
use crate::{ClientEvent, CommandError, ServerConfig};

const IDP: &str = "https://sso.test/realms/confab";

fn provider(now_secs: u64) -> SigningKeys {
    let mut rng = rand::rngs::StdRng::from_seed([42; 32]);
    SigningKeys::generate(SignerConfig::new(IDP, "confab"), &mut rng, now_secs)
}

/// An access token for `user` issued at `now_secs`, living 300 s.
fn token(idp: &mut SigningKeys, now_secs: u64, user: &str) -> String {
    let request =
        MintRequest { token: user.as_bytes(), kind: TokenKind::Access, subject: user, token_expires: now_secs + 300 };
    idp.mint(now_secs, &request).unwrap().jwt
}

/// A server trusting `idp`, with long idle timeouts (the tests move the clock by minutes).
fn oidc_net(idp: &SigningKeys, now_secs: u64) -> Net {
    let oidc = OidcConfig::new(IDP, "confab", idp.jwks_json(now_secs));
    Net::with_config(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..server_config() })
}

fn secs(net: &Net) -> u64 {
    net.now.unix_ms / 1000
}

#[test]
fn external_token_binds_the_connection_and_rides_every_request() {
    let t0 = super::START_MS / 1000;
    let mut idp = provider(t0);
    let mut net = oidc_net(&idp, t0);
    let d = net.add();
    net.connect(d);
    let now = net.now;
    assert!(!net.client(d).is_logged_in());
    assert_eq!(net.client(d).set_external_token(now, "x.y.z"), Err(CommandError::NotLoggedIn));
    let jwt = token(&mut idp, t0, "dave");
    net.client(d).use_external_token(now, &jwt).unwrap();
    assert!(net.client(d).is_logged_in());
    assert!(net.client(d).uses_external_token());
    net.pump();
    // The hello (`fetch_key` of its own name) bound the connection; its outcome is not reported.
    let events = net.take(d);
    assert_eq!(events, vec![ClientEvent::Connected { username: "dave".into(), queued: 0 }, ClientEvent::CaughtUp]);
    assert_eq!(net.client(d).username(), Some("dave"));
    assert_eq!(net.client(d).outbox_len(), 0);
    assert_eq!(net.client(d).login(now, "dave", "pw", "a b c"), Err(CommandError::AlreadyLoggedIn));

    // A first-time provider user registers an identity key, then chats.
    let id = net.client(d).set_identity_key(now, Bytes::from_static(b"key-of-dave")).unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(d), id), Some(ClientEvent::Done { .. })));
    let id = net
        .client(d)
        .create_room(now, "lobby", Bytes::from_static(b"verifier-0123456789"), Bytes::from_static(b"d"))
        .unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(d), id), Some(ClientEvent::Done { code: status::CREATED, .. })));
    assert!(net.client(d).refresh_token().is_none(), "no refresh token for an external session");
}

#[test]
fn expired_external_token_asks_the_app_and_the_request_waits_for_a_fresh_one() {
    let t0 = super::START_MS / 1000;
    let mut idp = provider(t0);
    let mut net = oidc_net(&idp, t0);
    let d = net.add();
    net.connect(d);
    let now = net.now;
    net.client(d).use_external_token(now, &token(&mut idp, t0, "dave")).unwrap();
    net.client(d).set_identity_key(now, Bytes::from_static(b"key-of-dave")).unwrap();
    net.pump();
    net.take(d);

    // 300 s of validity + 60 s of leeway later, the token is refused with 419.
    net.advance_by_steps(Duration::from_secs(400), Duration::from_secs(20));
    let now = net.now;
    let first = net.client(d).fetch_key(now, "dave").unwrap();
    let second = net.client(d).room_history(now, "nowhere").unwrap();
    net.pump();
    let events = net.take(d);
    let needed: Vec<_> = events.iter().filter(|e| matches!(e, ClientEvent::ExternalTokenNeeded { .. })).collect();
    assert_eq!(needed.len(), 1, "one request for a token, not one per request: {events:?}");
    assert!(matches!(needed[0], ClientEvent::ExternalTokenNeeded { code: status::TOKEN_EXPIRED, .. }));
    assert!(outcome(&events, first).is_none() && outcome(&events, second).is_none(), "{events:?}");
    assert!(net.client(d).external_token_needed());
    assert_eq!(net.client(d).outbox_len(), 2, "both wait");
    // More commands wait too, without going out.
    let third = net.client(d).fetch_key(now, "dave").unwrap();
    net.pump();
    assert!(net.take(d).is_empty());
    assert_eq!(net.client(d).outbox_len(), 3);

    // Reconnections while waiting do not pile up hellos.
    for _ in 0..3 {
        net.disconnect(d);
        net.connect(d);
    }
    assert_eq!(net.client(d).outbox_len(), 4, "three requests and one hello");
    assert!(net.take(d).is_empty());

    // The provider gives a fresh token: everything goes out again with its id.
    let fresh = token(&mut idp, secs(&net), "dave");
    net.client(d).set_external_token(now, &fresh).unwrap();
    assert!(!net.client(d).external_token_needed());
    net.pump();
    let events = net.take(d);
    for id in [first, third] {
        assert!(
            matches!(
                outcome(&events, id),
                Some(ClientEvent::Done { opcode: Opcode::FetchKey, body: ResponseBody::IdentityKey(_), .. })
            ),
            "{events:?}"
        );
    }
    assert!(
        matches!(outcome(&events, second), Some(ClientEvent::Failed { code: status::NOT_FOUND, .. })),
        "{events:?}"
    );
    assert_eq!(net.client(d).outbox_len(), 0);
    assert!(net.server_events.iter().any(|e| matches!(e, ServerLog::Rejected { code: 419, .. })));
}

#[test]
fn reconnect_with_an_external_token_gets_what_was_queued() {
    let t0 = super::START_MS / 1000;
    let mut idp = provider(t0);
    let mut net = oidc_net(&idp, t0);
    let a = net.user("alice");
    let d = net.add();
    net.connect(d);
    let now = net.now;
    net.client(d).use_external_token(now, &token(&mut idp, t0, "dave")).unwrap();
    net.client(d).set_identity_key(now, Bytes::from_static(b"key-of-dave")).unwrap();
    net.pump();
    net.disconnect(d);
    // alice asks dave, offline, for a conversation: queued.
    net.client(a).request_mp(now, "dave", Bytes::from_static(b"hs-a")).unwrap();
    net.pump();
    net.take(d);
    // On the new connection the hello binds it: the request arrives without any command.
    net.connect(d);
    let events = net.take(d);
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Connected { queued: 1, .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ClientEvent::MpRequest { from, .. } if from == "alice")), "{events:?}");
}

#[test]
fn a_refused_external_token_asks_for_another_and_bad_tokens_are_refused_locally() {
    let t0 = super::START_MS / 1000;
    let mut idp = provider(t0);
    let mut net = oidc_net(&idp, t0);
    let d = net.add();
    net.connect(d);
    let now = net.now;
    // Signed by a key the server does not trust: 401.
    let mut stranger =
        SigningKeys::generate(SignerConfig::new(IDP, "confab"), &mut rand::rngs::StdRng::from_seed([9; 32]), t0);
    net.client(d).use_external_token(now, &token(&mut stranger, t0, "dave")).unwrap();
    let id = net.client(d).fetch_key(now, "dave").unwrap();
    net.pump();
    let events = net.take(d);
    assert!(
        events.iter().any(|e| matches!(e, ClientEvent::ExternalTokenNeeded { code: status::UNAUTHORIZED, .. })),
        "{events:?}"
    );
    net.client(d).set_external_token(now, &token(&mut idp, t0, "dave")).unwrap();
    net.pump();
    let events = net.take(d);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::Done { .. })), "{events:?}");

    let too_long = "a".repeat(5000);
    assert!(matches!(net.client(d).set_external_token(now, &too_long), Err(CommandError::FieldTooLong { .. })));
    assert!(matches!(net.client(d).set_external_token(now, ""), Err(CommandError::FieldTooLong { .. })));
    // A password session cannot switch to an external token.
    let a = net.user("alice");
    assert_eq!(net.client(a).use_external_token(now, "x.y.z"), Err(CommandError::AlreadyLoggedIn));
}

#[test]
fn logout_ends_an_external_session() {
    let t0 = super::START_MS / 1000;
    let mut idp = provider(t0);
    let mut net = oidc_net(&idp, t0);
    let d = net.add();
    net.connect(d);
    let now = net.now;
    net.client(d).use_external_token(now, &token(&mut idp, t0, "dave")).unwrap();
    net.pump();
    let id = net.client(d).logout(now).unwrap();
    net.pump();
    let events = net.take(d);
    assert!(events.contains(&ClientEvent::LoggedOut { request_id: id }), "{events:?}");
    assert!(!net.client(d).is_logged_in() && !net.client(d).uses_external_token());
    assert_eq!(net.client(d).fetch_key(now, "dave"), Err(CommandError::NotLoggedIn));
}
