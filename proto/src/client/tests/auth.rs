//! Accounts and sessions: register, login, reconnect, refresh, logout.

use std::time::Duration;

use bytes::Bytes;

use super::{Net, PASSPHRASE, PASSWORD, outcome, server_config};
use crate::server::ServerLog;
use crate::wire::{Opcode, ResponseBody, status};
use crate::{ClientConfig, ClientEvent, CommandError, ServerConfig};

#[test]
fn register_login_connected() {
    let mut net = Net::new();
    let a = net.add();
    net.connect(a);
    let now = net.now;
    let reg = net.client(a).register(now, "alice", PASSWORD, PASSPHRASE, Bytes::from_static(b"k")).unwrap();
    assert_eq!(reg, 1, "ids start at 1");
    assert_eq!(net.client(a).outbox_len(), 1);
    net.pump();
    assert_eq!(
        net.take(a),
        vec![ClientEvent::Done {
            request_id: reg,
            opcode: Opcode::Register,
            code: status::CREATED,
            body: ResponseBody::Empty,
        }]
    );
    assert_eq!(net.client(a).outbox_len(), 0);
    assert!(!net.client(a).is_logged_in());

    let login = net.client(a).login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    assert!(login > reg);
    net.pump();
    let events = net.take(a);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2], ClientEvent::CaughtUp, "nothing was queued");
    let ClientEvent::LoggedIn { request_id, username, access_expires_ms, refresh_expires_ms } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((*request_id, username.as_str()), (login, "alice"));
    assert_eq!(*access_expires_ms, now.unix_ms + 15 * 60 * 1000);
    assert!(refresh_expires_ms > access_expires_ms);
    assert_eq!(events[1], ClientEvent::Connected { username: "alice".into(), queued: 0 });
    let c = net.client(a);
    assert!(c.is_logged_in());
    assert_eq!(c.username(), Some("alice"));
    assert!(c.refresh_token().is_some_and(|t| t.starts_with("cfr_")));
    assert_eq!(c.outbox_len(), 0);
    assert_eq!(c.login(now, "alice", PASSWORD, PASSPHRASE), Err(CommandError::AlreadyLoggedIn));
}

#[test]
fn wrong_password_fails_401_and_login_can_start_over() {
    let mut net = Net::new();
    let a = net.add();
    net.register(a, "alice");
    let now = net.now;
    let id = net.client(a).login(now, "alice", "wrong password!", PASSPHRASE).unwrap();
    assert_eq!(net.client(a).login(now, "alice", PASSWORD, PASSPHRASE), Err(CommandError::LoginInProgress));
    net.pump();
    let events = net.take(a);
    assert!(
        matches!(&events[..], [ClientEvent::Failed { request_id, opcode: Opcode::Login, code: 401, .. }] if *request_id == id),
        "{events:?}"
    );
    assert!(!net.client(a).is_logged_in());

    // Unknown user: the same answer.
    let id = net.client(a).login(now, "nobody", PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    let events = net.take(a);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::Failed { code: 401, .. })), "{events:?}");

    // Wrong passphrase: step two fails, reported under the login's id.
    let id = net.client(a).login(now, "alice", PASSWORD, "not the passphrase").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Failed { opcode: Opcode::Passphrase, code: 401, .. })),
        "{events:?}"
    );

    net.login(a, "alice");
    assert!(net.client(a).is_logged_in());
}

#[test]
fn login_made_offline_goes_out_on_connect_and_fails_if_the_connection_drops() {
    let mut net = Net::new();
    let a = net.add();
    net.register(a, "alice");
    net.disconnect(a);
    let now = net.now;
    let id = net.client(a).login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    assert!(net.take(a).is_empty(), "nothing happens while disconnected");
    net.connect(a);
    let events = net.take(a);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::LoggedIn { .. })), "{events:?}");
    assert!(matches!(&events[events.len() - 2..], [ClientEvent::Connected { .. }, ClientEvent::CaughtUp]));

    // A login written on a connection that breaks before its answer fails with 503.
    let b = net.add();
    net.register(b, "bob");
    net.peers[b].mute = true;
    let id = net.client(b).login(now, "bob", PASSWORD, PASSPHRASE).unwrap();
    net.pump();
    net.disconnect(b);
    let events = net.take(b);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Failed { opcode: Opcode::Login, code: 503, .. })),
        "{events:?}"
    );
    // So does a register.
    net.peers[b].mute = false;
    net.connect(b);
    net.peers[b].mute = true;
    let id = net.client(b).register(now, "carol", PASSWORD, PASSPHRASE, Bytes::from_static(b"k")).unwrap();
    net.pump();
    net.disconnect(b);
    let events = net.take(b);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::Failed { code: 503, .. })), "{events:?}");
    assert_eq!(net.client(b).outbox_len(), 0);
}

#[test]
fn reconnect_refreshes_with_the_refresh_token_and_rotates_it() {
    let mut net = Net::new();
    let a = net.user("alice");
    let first = net.client(a).refresh_token().unwrap().to_owned();
    net.disconnect(a);
    assert!(net.client(a).is_logged_in(), "a session outlives its connection");
    net.connect(a);
    let events = net.take(a);
    assert!(
        matches!(&events[..], [ClientEvent::LoggedIn { username, .. }, ClientEvent::Connected { .. }, ClientEvent::CaughtUp] if username == "alice"),
        "{events:?}"
    );
    let second = net.client(a).refresh_token().unwrap().to_owned();
    assert_ne!(first, second, "only the newest refresh token is kept");

    // The connection works: an authenticated request succeeds.
    let now = net.now;
    let id = net.client(a).fetch_key(now, "alice").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::Done { code: 200, .. })), "{events:?}");
}

#[test]
fn resume_from_a_stored_refresh_token() {
    let mut net = Net::new();
    let a = net.user("alice");
    let token = net.client(a).refresh_token().unwrap().to_owned();
    net.disconnect(a);

    // A new process: a fresh client with the stored token and request id counter.
    let config = ClientConfig { first_request_id: net.client(a).next_request_id().unwrap(), ..ClientConfig::default() };
    let b = net.add_with(config);
    net.client(b).resume(token);
    assert!(net.client(b).is_logged_in());
    assert_eq!(net.client(b).username(), None);
    net.connect(b);
    let events = net.take(b);
    assert!(
        matches!(&events[..], [ClientEvent::LoggedIn { username, .. }, ClientEvent::Connected { .. }, ClientEvent::CaughtUp] if username == "alice"),
        "{events:?}"
    );
    assert_eq!(net.client(b).username(), Some("alice"));
}

#[test]
fn reuse_of_a_spent_refresh_token_ends_the_session_everywhere() {
    let mut net = Net::new();
    let a = net.user("alice");
    net.disconnect(a);
    let now = net.now;
    let id = net.client(a).fetch_key(now, "alice").unwrap();

    // A copy of the profile elsewhere uses the refresh token first...
    let b = net.add();
    let token = net.client(a).refresh_token().unwrap().to_owned();
    net.client(b).resume(token);
    net.connect(b);
    assert!(matches!(net.take(b)[..], [.., ClientEvent::Connected { .. }, ClientEvent::CaughtUp]));

    // ...so alice comes back with a spent token, after the retry grace: the
    // family is revoked.
    net.advance_by_steps(Duration::from_secs(61), Duration::from_secs(10));
    net.take(b);
    net.connect(a);
    let events = net.take(a);
    assert!(
        matches!(&events[..], [
            ClientEvent::Failed { opcode: Opcode::Refresh, code: 401, .. },
            ClientEvent::Failed { request_id, opcode: Opcode::FetchKey, code: 401, .. },
        ] if *request_id == id),
        "{events:?}"
    );
    assert!(!net.client(a).is_logged_in());
    assert_eq!(net.client(a).outbox_len(), 0);
    assert_eq!(net.client(a).username(), None);
    assert_eq!(net.client(a).fetch_key(now, "alice"), Err(CommandError::NotLoggedIn));

    // The other holder is closed with 401 and forgets its tokens too.
    let events = net.take(b);
    assert!(matches!(&events[..], [ClientEvent::Closed { code: 401, .. }]), "{events:?}");
    assert!(!net.client(b).is_logged_in());

    net.login(a, "alice");
}

/// Within the retry grace, a spent token presented on another connection
/// than the one that exchanged it is reuse, like after the grace: the server
/// cannot tell a client retrying a lost answer from a thief replaying a
/// copy, so the whole login is revoked (issue 10). Both holders end up
/// logged out, and the owner logs in again with its password.
#[test]
fn refresh_retried_on_another_connection_within_the_grace_revokes_the_login() {
    let mut net = Net::new();
    let a = net.user("alice");
    let spent = net.client(a).refresh_token().unwrap().to_owned();
    // The refresh is answered on alice's live connection...
    net.disconnect(a);
    net.connect(a);
    assert!(net.client(a).is_logged_in());
    net.take(a);
    // ...and a copy of the spent token arrives on another connection.
    let copy = net.add();
    net.client(copy).resume(spent);
    net.connect(copy);
    let events = net.take(copy);
    assert!(events.iter().any(|e| matches!(e, ClientEvent::Failed { opcode: Opcode::Refresh, code: 401, .. })));
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::Connected { .. })), "{events:?}");
    assert!(!net.client(copy).is_logged_in());
    let events = net.take(a);
    assert!(matches!(&events[..], [ClientEvent::Closed { code: 401, .. }, ..]), "{events:?}");
    assert!(!net.client(a).is_logged_in());
    net.connect(a);
    net.login(a, "alice");
}

fn short_tokens() -> ServerConfig {
    ServerConfig { access_ttl: Duration::from_secs(60), ..server_config() }
}

/// The access token expires while connected; the server answers 419 (the
/// session caches the token it checked): the client refreshes and resends.
#[test]
fn expired_access_token_is_refreshed_transparently_419() {
    let mut net = Net::with_config(short_tokens());
    let a = net.user("alice");
    let now = net.now;
    let id = net.client(a).fetch_key(now, "alice").unwrap();
    net.pump();
    assert!(matches!(outcome(&net.take(a), id), Some(ClientEvent::Done { .. })));
    let before = net.client(a).refresh_token().unwrap().to_owned();

    net.advance_by_steps(Duration::from_secs(70), Duration::from_secs(10));
    assert!(net.client(a).is_connected(), "keepalives kept the connection");
    let now = net.now;
    let id = net.client(a).fetch_key(now, "alice").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(
        matches!(outcome(&events, id), Some(ClientEvent::Done { opcode: Opcode::FetchKey, code: 200, .. })),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::Failed { .. })), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ClientEvent::LoggedIn { username, .. } if username == "alice")));
    assert_ne!(net.client(a).refresh_token().unwrap(), before);
    assert!(
        net.server_events.iter().any(|e| matches!(e, ServerLog::Rejected { code: 419, .. })),
        "the server did refuse the expired token"
    );
}

/// Same, but the server already purged the expired token (no grace period)
/// and this connection never cached it: the server answers 401, and a client
/// holding a refresh token refreshes once before reporting that.
#[test]
fn purged_access_token_is_refreshed_transparently_401() {
    let config = ServerConfig { token_grace: Duration::ZERO, ..short_tokens() };
    let mut net = Net::with_config(config);
    let a = net.user("alice");
    net.advance_by_steps(Duration::from_secs(70), Duration::from_secs(10));
    let now = net.now;
    let id = net.client(a).fetch_key(now, "alice").unwrap();
    net.pump();
    let events = net.take(a);
    assert!(matches!(outcome(&events, id), Some(ClientEvent::Done { code: 200, .. })), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::Failed { .. })), "{events:?}");
    assert!(
        net.server_events.iter().any(|e| matches!(e, ServerLog::Rejected { code: 401, opcode: Opcode::FetchKey, .. })),
        "{:?}",
        net.server_events
    );
}

#[test]
fn logout_forgets_the_tokens_and_refuses_later_commands() {
    let mut net = Net::new();
    let a = net.user("alice");
    let token = net.client(a).refresh_token().unwrap().to_owned();
    let now = net.now;
    let id = net.client(a).logout(now).unwrap();
    assert_eq!(net.client(a).fetch_key(now, "alice"), Err(CommandError::NotLoggedIn));
    net.pump();
    assert_eq!(net.take(a), vec![ClientEvent::LoggedOut { request_id: id }]);
    assert!(!net.client(a).is_logged_in());
    assert_eq!(net.client(a).refresh_token(), None);
    assert_eq!(net.client(a).username(), None);
    assert_eq!(net.client(a).send_mp(now, "bob", Bytes::new()), Err(CommandError::NotLoggedIn));

    // The server revoked the tokens: the old refresh token is useless.
    net.client(a).resume(token);
    net.pump();
    let events = net.take(a);
    assert!(matches!(&events[..], [ClientEvent::Failed { opcode: Opcode::Refresh, code: 401, .. }]), "{events:?}");
    assert!(!net.client(a).is_logged_in());

    // And the same connection can log in again.
    net.login(a, "alice");
}
