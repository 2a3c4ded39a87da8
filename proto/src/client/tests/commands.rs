//! Commands: limits, request ids, and the token refresh around them.

use std::time::Duration;

use bytes::Bytes;

use super::lone::{Lone, error_body, last_request, logged_in, response};
use super::{PASSPHRASE, PASSWORD};
use crate::token::{self, TokenKind};
use crate::wire::{Limits, Message, Opcode, ResponseBody, Status, Tokens};
use crate::{ClientConfig, ClientEvent, CommandError};

#[test]
fn commands_are_checked_against_the_limits() {
    let limits = Limits { max_data: 4096, ..Limits::DEFAULT };
    let mut lone = logged_in(ClientConfig { limits, max_outbox: 3, ..ClientConfig::default() });
    let now = lone.now;
    let c = &mut lone.client;
    let long = "x".repeat(65);
    assert_eq!(c.fetch_key(now, &long), Err(CommandError::FieldTooLong { field: "username", len: 65, max: 64 }));
    assert!(matches!(
        c.register(now, "bob", &"p".repeat(1025), PASSPHRASE, Bytes::new()),
        Err(CommandError::FieldTooLong { field: "password", .. })
    ));
    assert!(matches!(c.send_mp(now, "bob", Bytes::from(vec![0; 4096])), Err(CommandError::TooLarge { max: 4096, .. })));
    // Exactly at the limit: 16 header bytes + 2 + 3 ("bob") + 4 + the blob.
    assert!(c.send_mp(now, "bob", Bytes::from(vec![0; 4096 - 25])).is_ok());
    assert!(c.send_mp(now, "bob", Bytes::new()).is_ok());
    assert!(c.send_mp(now, "bob", Bytes::new()).is_ok());
    assert_eq!(c.send_mp(now, "bob", Bytes::new()), Err(CommandError::OutboxFull(3)));
    assert_eq!(c.outbox_len(), 3);
    assert!(matches!(c.login(now, "alice", PASSWORD, PASSPHRASE), Err(CommandError::AlreadyLoggedIn)));
}

#[test]
fn request_ids_only_grow_and_can_run_out() {
    let config = ClientConfig { first_request_id: u32::MAX - 1, ..ClientConfig::default() };
    let mut lone = Lone::new(config);
    let now = lone.now;
    let reg = |c: &mut crate::Client| c.register(now, "bob", PASSWORD, PASSPHRASE, Bytes::new());
    assert_eq!(reg(&mut lone.client), Ok(u32::MAX - 1));
    assert_eq!(reg(&mut lone.client), Ok(u32::MAX));
    assert_eq!(reg(&mut lone.client), Err(CommandError::IdsExhausted));
    assert_eq!(lone.client.next_request_id(), None);
}

#[test]
fn a_refused_token_is_refreshed_once_then_reported() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    let id = lone.client.fetch_key(now, "bob").unwrap();
    lone.drain();
    lone.feed(&response(Opcode::FetchKey, id, Status::Error, 419, error_body("expired")));
    let (op, rid) = last_request(&lone);
    assert_eq!(op, Opcode::Refresh);
    let tokens = Tokens {
        access_token: token::encode(TokenKind::Access, "AbCdEfGhIjKlMnOp"),
        refresh_token: token::encode(TokenKind::Refresh, "PoNmLkJiHgFeDcBa"),
        access_expires_ms: 1,
        refresh_expires_ms: 2,
    };
    lone.feed(&response(op, rid, Status::Valid, 200, ResponseBody::Tokens(tokens.clone())));
    match lone.sent.last() {
        Some(Message::Request(r)) => assert_eq!(r.request_id, id, "resent with the same id"),
        other => panic!("{other:?}"),
    }
    assert_eq!(lone.client.refresh_token(), Some(tokens.refresh_token.as_str()));
    assert!(matches!(lone.events.as_slice(), [ClientEvent::LoggedIn { request_id, .. }] if *request_id == rid));
    // Refused again with the new token: reported, no loop.
    let before = lone.sent.len();
    lone.feed(&response(Opcode::FetchKey, id, Status::Error, 419, error_body("expired")));
    assert_eq!(lone.sent.len(), before);
    assert!(matches!(lone.events.last(), Some(ClientEvent::Failed { code: 419, .. })));
    assert_eq!(lone.client.outbox_len(), 0);
}

#[test]
fn a_transient_refresh_failure_is_retried_later() {
    let mut lone = logged_in(ClientConfig::default());
    lone.client.disconnected(lone.now);
    lone.connect();
    let (op, id) = last_request(&lone);
    assert_eq!(op, Opcode::Refresh);
    let busy = ResponseBody::Error(crate::wire::ErrorBody { reason: "server busy".into(), retry_after_ms: 8000 });
    lone.feed(&response(op, id, Status::Error, 503, busy));
    assert!(matches!(
        lone.events.last(),
        Some(ClientEvent::Failed { opcode: Opcode::Refresh, code: 503, retry_after_ms: 8000, .. })
    ));
    assert!(lone.client.is_logged_in(), "the tokens are kept");
    let sent = lone.sent.len();
    lone.advance(Duration::from_secs(7));
    assert_eq!(lone.sent.len(), sent);
    lone.advance(Duration::from_secs(1));
    let (op, again) = last_request(&lone);
    assert_eq!(op, Opcode::Refresh);
    assert!(again > id);
}

#[test]
fn codes_are_issued_and_verified_once() {
    use super::{Net, outcome, server_config};
    use crate::server::CodeConfig;

    let mut net = Net::with_config(crate::ServerConfig { codes: Some(CodeConfig::default()), ..server_config() });
    let alice = net.user("alice");
    let game = net.add();
    net.connect(game);
    let now = net.now;
    let id = net.client(alice).issue_code(now, "game-7").unwrap();
    net.pump();
    let events = net.take(alice);
    let Some(ClientEvent::Done { body: ResponseBody::CodeIssued(issued), .. }) = outcome(&events, id) else {
        panic!("{events:?}")
    };
    assert!(issued.expires_ms > now.unix_ms && issued.expires_ms <= now.unix_ms + 60_000);
    let code = issued.code.clone();

    // The third party checks it anonymously: valid once, then refused.
    let first = net.client(game).verify_code(now, "alice", "game-7", &code).unwrap();
    let second = net.client(game).verify_code(now, "alice", "game-7", &code).unwrap();
    let other = net.client(game).verify_code(now, "alice", "game-8", &code).unwrap();
    net.pump();
    let events = net.take(game);
    assert!(matches!(outcome(&events, first), Some(ClientEvent::Done { code: 200, .. })), "{events:?}");
    assert!(matches!(outcome(&events, second), Some(ClientEvent::Failed { code: 409, .. })), "{events:?}");
    assert!(matches!(outcome(&events, other), Some(ClientEvent::Failed { .. })), "{events:?}");

    // issue_code needs a session; names are checked before anything is sent.
    assert_eq!(net.client(game).issue_code(now, "game-7"), Err(CommandError::NotLoggedIn));
    assert!(matches!(
        net.client(alice).issue_code(now, &"a".repeat(65)),
        Err(CommandError::FieldTooLong { field: "audience", .. })
    ));
}
