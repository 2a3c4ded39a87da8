//! Which partition of a split state a frame goes to while its connection
//! is not a session yet (docs/PARTITIONS.md, "Routing frames"). Pure: the
//! node's router calls it on each frame of an unbound connection and hands
//! the frame's bytes, unchanged, to that partition's core (its own, or
//! through the relay); once the connection is a session, every frame goes
//! to the session's core.

use super::partition::{PartitionId, Partitions};
use crate::token;
use crate::wire::{Frame, Limits, Message, RequestBody};

/// Where an unbound connection's frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRoute {
    /// To this partition's core.
    Partition(PartitionId),
    /// It carries an OIDC access token: to the home of the confab name its
    /// subject is bound to, else of its `preferred_username` (`sub` without
    /// one: the name the core gives the account), which the node
    /// resolves (the binding lives in the store).
    Oidc,
    /// It names nobody (a control frame, a frame that does not decode, a
    /// token that names no partition): to the connection's current core,
    /// or partition 0, which answers it as a single server would.
    Anywhere,
}

/// Routes one frame of an unbound connection. `last_login` is the
/// partition the connection's last `login` went to (its `passphrase`
/// follows it there). With one partition, everything goes to 0.
#[must_use]
pub fn route_unbound(frame: &Frame, limits: &Limits, parts: Partitions, last_login: Option<PartitionId>) -> FrameRoute {
    if !parts.is_split() {
        return FrameRoute::Partition(0);
    }
    let named_by = |t: &[u8]| token::partition_of(t, parts.count).map_or(FrameRoute::Anywhere, FrameRoute::Partition);
    let Ok(Message::Request(request)) = Message::decode(frame, limits) else {
        // A request this build cannot read still goes where its token says: the core that
        // reads it (another build, other limits) may bind the connection with it.
        return if frame.frame_type == crate::wire::FrameType::Request && is_confab_token(&frame.auth) {
            named_by(&frame.auth)
        } else {
            FrameRoute::Anywhere
        };
    };
    let home = |name: &str| FrameRoute::Partition(parts.home_of_user(name));
    match &request.body {
        RequestBody::Register(b) => home(&b.username),
        RequestBody::Login(b) => home(&b.username),
        RequestBody::VerifyCode(b) => home(&b.username),
        RequestBody::Passphrase(_) => last_login.map_or(FrameRoute::Anywhere, FrameRoute::Partition),
        RequestBody::Refresh(b) => named_by(b.refresh_token.as_bytes()),
        RequestBody::RefreshKeyed(b) => named_by(b.refresh_token.as_bytes()),
        RequestBody::Introspect(b) => named_by(b.token.as_bytes()),
        // Partition 0 owns the signing keys and publishes them.
        RequestBody::Jwks(_) => FrameRoute::Partition(0),
        _ if is_confab_token(&frame.auth) => named_by(&frame.auth),
        _ if frame.auth.is_empty() => FrameRoute::Anywhere,
        _ => FrameRoute::Oidc,
    }
}

/// Whether an auth part is a confab token (by its prefix; its check is `token::partition_of`'s).
fn is_confab_token(auth: &[u8]) -> bool {
    auth.starts_with(b"cfa_") || auth.starts_with(b"cfr_")
}

/// The partition of a frame carrying an OIDC access token `token`
/// ([`FrameRoute::Oidc`]): the home of the account its subject was bound
/// to, as `bound` says (the store's `confab_oidc_subjects`, keyed by
/// [`oidc_subject_key`](super::oidc_subject_key)), else the home of the name
/// the core would give a new account (`preferred_username`, else `sub`).
/// Read without verifying anything: that core verifies the token, and
/// refuses an account away from its home. A token that does not parse, or
/// names no subject, goes to partition 0, which refuses it.
pub fn oidc_home(token: &[u8], parts: Partitions, bound: impl FnOnce(&[u8; 32]) -> Option<String>) -> PartitionId {
    let Ok(claims) = crate::jwt::unverified_claims(token) else { return 0 };
    let Some(key) = subject_key(&claims) else { return 0 };
    match bound(&key) {
        Some(name) => parts.home_of_user(&name),
        None => claims.username().map_or(0, |name| parts.home_of_user(name)),
    }
}

/// The key of the subject an OIDC access token names (read without
/// verifying, as [`oidc_home`] reads it), for a node that looks the
/// binding up before calling [`oidc_home`]; `None` when the token does not
/// parse or names no subject (then [`oidc_home`] looks nothing up).
#[must_use]
pub fn oidc_subject_of(token: &[u8]) -> Option<[u8; 32]> {
    subject_key(&crate::jwt::unverified_claims(token).ok()?)
}

fn subject_key(claims: &crate::jwt::Claims) -> Option<[u8; 32]> {
    let (Some(iss), Some(sub)) = (claims.iss.as_deref(), claims.sub.as_deref().filter(|s| !s.is_empty())) else {
        return None;
    };
    Some(super::oidc_subject_key(iss, sub))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::token::TokenKind;
    use crate::wire::{
        FetchKey, Introspect, Jwks, Login, Passphrase, Ping, Refresh, RefreshKeyed, Register, Request, VerifyCode,
    };

    const FOUR: Partitions = Partitions { index: 0, count: 4 };

    fn frame(body: impl Into<RequestBody>, auth: &[u8]) -> Frame {
        let msg = Message::Request(Request { request_id: 1, timestamp_ms: 0, body: body.into() });
        let bytes = msg.to_bytes(auth);
        Frame::parse(&bytes, &Limits::DEFAULT).expect("a frame").expect("whole").0
    }

    fn route(f: &Frame, last_login: Option<PartitionId>) -> FrameRoute {
        route_unbound(f, &Limits::DEFAULT, FOUR, last_login)
    }

    fn token_of(partition: u8, kind: TokenKind) -> String {
        use rand::SeedableRng as _;
        token::generate_in(&mut rand::rngs::StdRng::from_seed([partition; 32]), kind, partition)
    }

    #[test]
    fn account_frames_go_to_the_users_home() {
        let alice = FrameRoute::Partition(FOUR.home_of_user("alice"));
        let register = Register {
            username: "alice".into(),
            password: "p".into(),
            passphrase: "a b c".into(),
            identity_key: Bytes::new(),
        };
        assert_eq!(route(&frame(register, b""), None), alice);
        assert_eq!(route(&frame(Login { username: "alice".into(), password: "p".into() }, b""), None), alice);
        let verify = VerifyCode { username: "alice".into(), audience: "svc".into(), code: "c".into() };
        assert_eq!(route(&frame(verify, b""), None), alice);
        let passphrase = frame(Passphrase { passphrase: "a b c".into() }, b"");
        assert_eq!(route(&passphrase, Some(3)), FrameRoute::Partition(3), "where the login went");
        assert_eq!(route(&passphrase, None), FrameRoute::Anywhere);
    }

    #[test]
    fn token_frames_go_to_the_partition_the_token_names() {
        let access = token_of(2, TokenKind::Access);
        let refresh = token_of(3, TokenKind::Refresh);
        let fetch = frame(FetchKey { username: "bob".into() }, access.as_bytes());
        assert_eq!(route(&fetch, None), FrameRoute::Partition(2));
        assert_eq!(route(&frame(Refresh { refresh_token: refresh.clone() }, b""), None), FrameRoute::Partition(3));
        let keyed = RefreshKeyed { refresh_token: refresh, retry_key: Bytes::from_static(&[0; 32]), attempt: 1 };
        assert_eq!(route(&frame(keyed, b""), None), FrameRoute::Partition(3));
        let introspect = frame(Introspect { token: access.clone() }, b"service-credential");
        assert_eq!(route(&introspect, None), FrameRoute::Partition(2), "the token asked about, not the auth part");
        // A letter past the partitions, a broken checksum: nobody's.
        let forged = token_of(9, TokenKind::Access);
        assert_eq!(route(&frame(FetchKey { username: "bob".into() }, forged.as_bytes()), None), FrameRoute::Anywhere);
        let mut broken = access.into_bytes();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert_eq!(route(&frame(FetchKey { username: "bob".into() }, &broken), None), FrameRoute::Anywhere);
    }

    /// A request this build cannot read (here: a name past its limits) goes
    /// where its token says all the same: the core that reads it may bind
    /// the connection with it (an attacker-briefed review's finding).
    #[test]
    fn a_request_that_does_not_decode_here_goes_where_its_token_says() {
        let access = token_of(2, TokenKind::Access);
        let long = frame(FetchKey { username: "a-name-of-twenty-chars".into() }, access.as_bytes());
        let strict = Limits { max_name: 8, ..Limits::DEFAULT };
        assert!(Message::decode(&long, &strict).is_err());
        assert_eq!(route_unbound(&long, &strict, FOUR, None), FrameRoute::Partition(2));
        assert_eq!(
            route_unbound(&frame(FetchKey { username: "a-name-of-twenty-chars".into() }, b""), &strict, FOUR, None),
            FrameRoute::Anywhere
        );
    }

    #[test]
    fn the_rest_goes_to_partition_0_the_oidc_resolver_or_anywhere() {
        assert_eq!(route(&frame(Jwks {}, b""), None), FrameRoute::Partition(0));
        let jwt = frame(FetchKey { username: "bob".into() }, b"eyJhbGciOiJSUzI1NiJ9.e30.sig");
        assert_eq!(route(&jwt, None), FrameRoute::Oidc);
        assert_eq!(route(&frame(FetchKey { username: "bob".into() }, b""), None), FrameRoute::Anywhere);
        let ping = Message::Ping(Ping { nonce: 1 }).to_bytes(b"");
        let ping = Frame::parse(&ping, &Limits::DEFAULT).unwrap().unwrap().0;
        assert_eq!(route(&ping, None), FrameRoute::Anywhere);
    }

    #[test]
    fn one_partition_takes_everything() {
        let f = frame(Login { username: "alice".into(), password: "p".into() }, b"");
        assert_eq!(route_unbound(&f, &Limits::DEFAULT, Partitions::SINGLE, None), FrameRoute::Partition(0));
    }

    #[test]
    fn an_oidc_token_goes_to_the_home_of_its_subjects_account_else_of_its_name() {
        use base64::Engine as _;
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let token = |claims: &str| format!("{}.{}.sig", b64(r#"{"alg":"RS256","typ":"JWT"}"#), b64(claims));
        let named = |home: u8| (0..).map(|i| format!("n{i}")).find(|n| FOUR.home_of_user(n) == home).unwrap();
        let (one, three) = (named(1), named(3));
        let claims = format!(r#"{{"iss":"https://idp.test","sub":"s-1","preferred_username":"{three}"}}"#);
        let t = token(&claims);
        assert_eq!(oidc_home(t.as_bytes(), FOUR, |_| None), 3, "a new subject: the home of its name");
        let subject = crate::server::oidc_subject_key("https://idp.test", "s-1");
        let asked = std::cell::Cell::new(None);
        let home = oidc_home(t.as_bytes(), FOUR, |key| {
            asked.set(Some(*key));
            Some(one.clone())
        });
        assert_eq!(home, 1, "a bound subject: its account's home, whatever its name says now");
        assert_eq!(asked.get(), Some(subject));
        let by_sub = token(&format!(r#"{{"iss":"https://idp.test","sub":"{one}"}}"#));
        assert_eq!(oidc_home(by_sub.as_bytes(), FOUR, |_| None), 1, "no preferred_username: the sub");
        assert_eq!(oidc_home(b"not.a.token", FOUR, |_| None), 0);
        let no_sub = token(r#"{"iss":"https://idp.test","preferred_username":"x"}"#);
        assert_eq!(oidc_home(no_sub.as_bytes(), FOUR, |_| panic!("not asked")), 0);
    }
}
