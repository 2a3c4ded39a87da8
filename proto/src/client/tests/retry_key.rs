//! `refresh_keyed` on the client (issue 16): the retry key is drawn once per
//! refresh token, stored before the exchange is written, sent again with
//! every retry of that exchange (a new connection, a restored client), and
//! dropped with the token; an older server that does not know the opcode
//! gets plain `refresh`.

use super::lone::{Lone, last_request, logged_in, response};
use crate::token::{self, TokenKind};
use crate::wire::{
    ErrorEvent, Event, EventBody, Message, Opcode, RETRY_KEY_LEN, RequestBody, ResponseBody, Status, Tokens, status,
};
use crate::{Client, ClientConfig};

/// The last `refresh_keyed` written: its id, token, key and attempt.
fn keyed(lone: &Lone) -> (u32, String, Vec<u8>, u32) {
    match lone.sent.last() {
        Some(Message::Request(r)) => match &r.body {
            RequestBody::RefreshKeyed(k) => (r.request_id, k.refresh_token.clone(), k.retry_key.to_vec(), k.attempt),
            other => panic!("expected refresh_keyed, got {other:?}"),
        },
        other => panic!("expected a request, got {other:?}"),
    }
}

/// Alice logged in with a client given entropy, reconnected: it exchanges.
fn reconnected() -> Lone {
    let mut lone = logged_in(ClientConfig::default());
    lone.client.set_entropy([1; 32]);
    let now = lone.now;
    lone.client.disconnected(now);
    lone.connect();
    lone
}

fn tokens(n: u8) -> Tokens {
    Tokens {
        access_token: token::encode(TokenKind::Access, &format!("AccessAccessAcc{n}")),
        refresh_token: token::encode(TokenKind::Refresh, &format!("RefreshRefreshR{n}")),
        access_expires_ms: u64::MAX / 4,
        refresh_expires_ms: u64::MAX / 2,
    }
}

#[test]
fn the_key_is_stored_before_the_exchange_is_written_and_sent_again_with_every_retry() {
    let mut lone = reconnected();
    let (_, token, key, attempt) = keyed(&lone);
    assert_eq!((key.len(), attempt), (RETRY_KEY_LEN, 1));
    assert_eq!(Some(token.as_str()), lone.client.refresh_token());
    // The checked store compared the snapshot it saved before the frame left: the key was in it.
    let snapshot = lone.client.snapshot();
    assert_eq!((snapshot.retry_key.map(|k| k.to_vec()), snapshot.retry_attempt), (Some(key.clone()), 1));
    // The answer is lost with the connection: the retry carries the same key, and a later attempt.
    let now = lone.now;
    lone.client.disconnected(now);
    lone.connect();
    assert_eq!(keyed(&lone).2, key);
    assert_eq!(keyed(&lone).3, 2);
    // So does a client restored from the snapshot (a new process), whatever its own entropy.
    let mut restored = Lone::new(ClientConfig::default());
    restored.client = Client::restore(ClientConfig::default(), &lone.client.snapshot(), lone.now).unwrap();
    restored.client.set_entropy([2; 32]);
    restored.connect();
    let (_, restored_token, restored_key, restored_attempt) = keyed(&restored);
    assert_eq!((restored_token, restored_key, restored_attempt), (token, key, 3));
}

#[test]
fn the_key_is_dropped_with_its_token_and_the_next_exchange_draws_another() {
    let mut lone = reconnected();
    let (id, _, first, _) = keyed(&lone);
    lone.feed(&response(Opcode::RefreshKeyed, id, Status::Valid, 200, ResponseBody::Tokens(tokens(1))));
    assert!(lone.client.snapshot().retry_key.is_none(), "answered: the key went with the spent token");
    let now = lone.now;
    lone.client.disconnected(now);
    lone.connect();
    let (_, token, second, attempt) = keyed(&lone);
    assert_eq!(token, tokens(1).refresh_token);
    assert_ne!(second, first);
    assert_eq!(attempt, 1, "a new exchange counts from 1");
    // A session that ends takes the key with it.
    let (id, ..) = keyed(&lone);
    let refused =
        ResponseBody::Error(crate::wire::ErrorBody { reason: "refresh token reused".into(), retry_after_ms: 0 });
    lone.feed(&response(Opcode::RefreshKeyed, id, Status::Error, status::UNAUTHORIZED, refused));
    let snapshot = lone.client.snapshot();
    assert!(snapshot.refresh_token.is_none() && snapshot.retry_key.is_none());
}

#[test]
fn an_older_server_that_does_not_know_the_opcode_gets_plain_refresh() {
    let mut lone = reconnected();
    let (id, token, ..) = keyed(&lone);
    let unknown = ErrorEvent { code: status::BAD_REQUEST, offset: 0, reason: "unknown opcode 100024 at byte 0".into() };
    let event = Message::Event(Event { request_id: id, timestamp_ms: 0, body: EventBody::ErrorEvent(unknown) });
    lone.feed(&event.to_bytes(b""));
    let (op, retry) = last_request(&lone);
    assert_eq!(op, Opcode::Refresh);
    assert_ne!(retry, id);
    assert!(
        matches!(&lone.sent.last(), Some(Message::Request(r)) if r.body == RequestBody::Refresh(crate::wire::Refresh { refresh_token: token.clone() }))
    );
    lone.feed(&response(Opcode::Refresh, retry, Status::Valid, 200, ResponseBody::Tokens(tokens(1))));
    assert!(lone.client.is_logged_in());
    // On this connection only: the next may reach an upgraded server (the key is kept, not sent in plain).
    let now = lone.now;
    lone.client.disconnected(now);
    lone.connect();
    assert_eq!(last_request(&lone).0, Opcode::RefreshKeyed);
}

#[test]
fn a_client_given_no_entropy_sends_plain_refresh() {
    let mut lone = logged_in(ClientConfig::default());
    let now = lone.now;
    lone.client.disconnected(now);
    lone.connect();
    assert_eq!(last_request(&lone).0, Opcode::Refresh);
    assert!(lone.client.snapshot().retry_key.is_none());
}
