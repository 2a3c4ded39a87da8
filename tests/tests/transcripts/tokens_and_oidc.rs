/// Issue 10: a copied refresh token replayed inside the retry grace from the
/// thief's own connection used to win (a fresh pair for the thief, and the
/// victim read "unknown"). Now it revokes the login, and the victim is told.
#[test]
fn a_thief_replaying_a_spent_refresh_token_inside_the_grace_revokes_the_login() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    let stolen = s.refresh_token("a").unwrap();
    s.note("alice refreshes on her connection; a copy of the token she spends has been stolen");
    s.send_auth("a", 40, Refresh { refresh_token: stolen.clone() }, b"");
    let current = s.refresh_token("a").unwrap();
    assert_ne!(current, stolen);
    s.advance(Duration::from_secs(10));
    s.note("10 s later, inside the grace, the thief replays the copy on his own connection");
    s.connect("t");
    s.send_auth("t", 41, Refresh { refresh_token: stolen.clone() }, b"");
    assert!(s.access_token("t").is_none(), "the thief got tokens");
    assert!(matches!(last_response(&mut s, "t"), ResponseBody::Error(e) if e.reason.contains("reused")));
    assert!(!s.is_open("a"), "the revoked login's session is closed");
    s.note("alice comes back with her current refresh token: the login was revoked, and she is told so");
    s.connect("a2");
    s.send_auth("a2", 42, Refresh { refresh_token: current }, b"");
    let ResponseBody::Error(e) = last_response(&mut s, "a2") else { panic!("alice's refresh succeeded") };
    assert!(e.reason.starts_with("refresh token revoked"), "{}", e.reason);
    s.note("she logs in again; a minute later a copy of a token she spent, on another connection, still revokes the login");
    login(&mut s, "a2", "alice");
    let spent = s.refresh_token("a2").unwrap();
    s.send_auth("a2", 43, Refresh { refresh_token: spent.clone() }, b"");
    s.advance(Duration::from_secs(61));
    s.connect("t2");
    s.send_auth("t2", 44, Refresh { refresh_token: spent }, b"");
    assert!(s.access_token("t2").is_none());
    assert!(!s.is_open("a2"));
    assert_transcript!(s.transcript());
}

/// Issue 16: the node that answered alice's exchange died before she read
/// the answer (or her connection did). Her client retries from another
/// connection with the exchange's retry key and its next attempt number: a
/// retry, not reuse. A late copy of her first attempt changes nothing; a
/// thief's copy of the spent token, without the key, still revokes the login.
#[test]
fn a_keyed_refresh_whose_answer_was_lost_is_retried_from_another_connection() {
    let mut s = Script::new(config());
    user(&mut s, "a", "alice");
    let spent = s.refresh_token("a").unwrap();
    let key = Bytes::from_static(&[0x5a; RETRY_KEY_LEN]);
    let keyed = |attempt| RefreshKeyed { refresh_token: spent.clone(), retry_key: key.clone(), attempt };
    s.note("alice's client exchanges her refresh token (attempt 1, with a retry key); the answer is lost with the node");
    s.send_auth("a", 40, keyed(1), b"");
    s.disconnect("a");
    s.advance(Duration::from_secs(12));
    s.note("12 s later, on another node's connection: attempt 2 of the same exchange, same key");
    s.connect("a2");
    s.send_auth("a2", 41, keyed(2), b"");
    assert!(s.access_token("a2").is_some(), "the retry got a pair");
    s.send("a2", FetchKey { username: "alice".into() });
    s.note("attempt 1 again (a copy delayed on a dead path): refused, nothing revoked");
    s.connect("late");
    s.send_auth("late", 42, keyed(1), b"");
    assert!(s.is_open("a2"));
    s.send("a2", FetchKey { username: "alice".into() });
    s.note("a thief's copy of the spent token, without the key: reuse, the login is revoked");
    s.connect("t");
    s.send_auth("t", 43, Refresh { refresh_token: spent.clone() }, b"");
    assert!(!s.is_open("a2"));
    assert_transcript!(s.transcript());
}

// ---- tokens and identity providers (issue 4) ----

const SERVICE_CREDENTIAL: &[u8] = b"backend-service-credential";
const IDP: &str = "https://idp.test/realms/confab";

fn last_response(s: &mut Script, label: &str) -> ResponseBody {
    let got = s.take_received(label);
    match got.into_iter().rev().find_map(|m| if let Message::Response(r) = m { Some(r.body) } else { None }) {
        Some(body) => body,
        None => panic!("{label} got no response"),
    }
}

fn issued_code(s: &mut Script, label: &str) -> String {
    match last_response(s, label) {
        ResponseBody::CodeIssued(c) => c.code,
        other => panic!("expected code_issued, got {other:?}"),
    }
}

#[test]
fn third_party_codes() {
    let mut s = Script::new(ServerConfig { codes: Some(server::CodeConfig::default()), ..config() });
    user(&mut s, "a", "alice");
    s.connect("game");
    s.note("alice asks for a code for game-7 and hands it over; the game server checks it once");
    s.take_received("a");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code = issued_code(&mut s, "a");
    let verify = |user: &str, audience: &str, code: &str| VerifyCode {
        username: user.into(),
        audience: audience.into(),
        code: code.into(),
    };
    s.send_auth("game", 100, verify("alice", "game-7", &code), b"");
    s.note("replayed");
    s.send_auth("game", 101, verify("alice", "game-7", &code), b"");
    s.note("a genuine code shown to another audience, another user, altered, malformed");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code2 = issued_code(&mut s, "a");
    s.send_auth("game", 102, verify("alice", "game-8", &code2), b"");
    s.send_auth("game", 103, verify("mallory", "game-7", &code2), b"");
    let mut altered = code2.clone().into_bytes();
    altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
    s.send_auth("game", 104, verify("alice", "game-7", &String::from_utf8(altered).unwrap()), b"");
    s.send_auth("game", 105, verify("alice", "game-7", "not a code!"), b"");
    s.note("the code refused for the wrong audience is still good for its own, once");
    s.send_auth("game", 106, verify("alice", "game-7", &code2), b"");
    s.note("expiry: a code lives 60 s");
    s.send("a", IssueCode { audience: "game-7".into() });
    let code3 = issued_code(&mut s, "a");
    s.advance(Duration::from_secs(60));
    s.send_auth("game", 107, verify("alice", "game-7", &code3), b"");
    s.note("an invalid audience; issue_code needs a token");
    s.send("a", IssueCode { audience: "Game 7".into() });
    s.send_auth("game", 108, IssueCode { audience: "game-7".into() }, b"");
    let mut off = Script::new(config());
    user(&mut off, "a", "alice");
    off.send("a", IssueCode { audience: "game-7".into() });
    off.send_auth("a", 109, verify("alice", "game-7", &code), b"");
    assert_transcript!(format!("{}\n---- codes not configured ----\n{}", s.transcript(), off.transcript()));
}

fn phantom_config() -> ServerConfig {
    let mut phantom = server::PhantomConfig::new(
        String::from_utf8(SERVICE_CREDENTIAL.to_vec()).unwrap(),
        "https://confab.test",
        "backends",
    );
    phantom.key_rotation = Duration::from_secs(600);
    ServerConfig { phantom: Some(phantom), idle_timeout: Duration::from_secs(3600), ..config() }
}

fn jwks_doc(s: &mut Script, label: &str) -> jwt::JwkSet {
    match last_response(s, label) {
        ResponseBody::Jwks(d) => jwt::JwkSet::parse(d.jwks.as_bytes()).unwrap(),
        other => panic!("expected jwks, got {other:?}"),
    }
}

fn minted(s: &mut Script, label: &str) -> String {
    match last_response(s, label) {
        ResponseBody::Jwt(j) => j.jwt,
        other => panic!("expected jwt, got {other:?}"),
    }
}

#[test]
fn phantom_translation() {
    let mut s = Script::new(phantom_config());
    user(&mut s, "a", "alice");
    let access = s.access_token("a").unwrap();
    let refresh = s.refresh_token("a").unwrap();
    s.connect("be");
    s.note("the backend fetches the JWK Set (anonymous): the signing key is made and persisted");
    s.send_auth("be", 100, Jwks {}, b"");
    let keys = jwks_doc(&mut s, "be");
    assert_eq!(keys.len(), 1);
    s.note("without, then with a wrong service credential");
    s.send_auth("be", 101, Introspect { token: access.clone() }, b"");
    s.send_auth("be", 102, Introspect { token: access.clone() }, b"guess");
    s.note("alice's access token, then her refresh token");
    s.send_auth("be", 103, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    let jwt_access = minted(&mut s, "be");
    s.send_auth("be", 104, Introspect { token: refresh.clone() }, SERVICE_CREDENTIAL);
    let jwt_refresh = minted(&mut s, "be");
    let now = s.now().unix_ms / 1000;
    let v = jwt::Validation::access("https://confab.test", "backends");
    let verified = jwt::verify(&jwt_access, &keys, &v, now).unwrap();
    assert_eq!(verified.claims.sub.as_deref(), Some("alice"));
    assert_eq!(verified.claims.jti.as_deref(), Some(jwt::jti(access.as_bytes()).as_str()));
    assert!(matches!(jwt::verify(&jwt_refresh, &keys, &v, now), Err(jwt::JwtError::WrongType { .. })));
    let r = jwt::Validation::refresh("https://confab.test", "backends");
    assert!(jwt::verify(&jwt_refresh, &keys, &r, now).is_ok());
    s.note("a token the server never issued, and garbage: not active");
    s.send_auth("be", 105, Introspect { token: examples::ACCESS_TOKEN.into() }, SERVICE_CREDENTIAL);
    s.send_auth("be", 106, Introspect { token: "garbage".into() }, SERVICE_CREDENTIAL);
    s.note("a JWT minted just before the key rotates");
    s.advance(Duration::from_secs(570));
    s.send_auth("be", 107, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    let late = minted(&mut s, "be");
    s.note("the rotation (at the sweep after 600 s) keeps the old key published while its JWT lives");
    s.advance(Duration::from_secs(60));
    s.send_auth("be", 108, Jwks {}, b"");
    let rotated = jwks_doc(&mut s, "be");
    assert_eq!(rotated.len(), 2);
    let at = s.now().unix_ms / 1000;
    assert!(jwt::verify(&late, &rotated, &v, at).is_ok(), "the retired key still verifies");
    s.note("new JWTs are signed by the new key; the access token expires at 900 s");
    s.send_auth("be", 109, Introspect { token: refresh.clone() }, SERVICE_CREDENTIAL);
    s.note("at 930 s every JWT of the old key has expired (870 s + 60 s grace): the old key is dropped");
    s.note("alice's access token expired at 900 s: nothing to translate");
    s.advance(Duration::from_secs(300));
    s.send_auth("be", 110, Introspect { token: access.clone() }, SERVICE_CREDENTIAL);
    s.send_auth("be", 111, Jwks {}, b"");
    let pruned = jwks_doc(&mut s, "be");
    assert_eq!(pruned.len(), 1);
    let at = s.now().unix_ms / 1000;
    assert!(matches!(jwt::verify(&late, &pruned, &v, at), Err(jwt::JwtError::UnknownKid(_))));
    s.note("a server restored from the persisted changes publishes the same keys");
    let mut state = server::State::new(20, 1024);
    for change in &s.changes {
        state.apply(change);
    }
    let mut restored = Server::restore(phantom_config(), [8; 32], state, s.now()).expect("a valid configuration");
    let id = restored.open_session(s.now()).unwrap();
    let req = Message::Request(Request { request_id: 1, timestamp_ms: s.now().unix_ms, body: Jwks {}.into() });
    restored.handle_input(s.now(), id, &req.to_bytes(b""));
    let mut restored_jwks = None;
    let Ok(committed) = restored.drain().commit(&mut Ephemeral);
    for action in committed {
        if let server::Action::Transmit { bytes, .. } = action {
            restored_jwks = Some(bytes);
        }
    }
    let mut decoder = FrameDecoder::new(Limits::DEFAULT);
    decoder.push(&restored_jwks.expect("an answer"));
    let frame = decoder.next_frame().unwrap().unwrap();
    let Message::Response(Response { body: ResponseBody::Jwks(doc), .. }) =
        Message::decode(&frame, &Limits::DEFAULT).unwrap()
    else {
        panic!("expected jwks")
    };
    assert_eq!(jwt::JwkSet::parse(doc.jwks.as_bytes()).unwrap(), pruned);
    assert_transcript!(s.transcript());
}

/// A stand-in OIDC provider: ES256 keys that mint access tokens for `issuer` and the audience `confab`.
fn provider(issuer: &str, seed: u8, now: u64) -> jwt::SigningKeys {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::from_seed([seed; 32]);
    jwt::SigningKeys::generate(jwt::SignerConfig::new(issuer, "confab"), &mut rng, now)
}

fn id_token(idp: &mut jwt::SigningKeys, now: u64, subject: &str) -> String {
    let request = jwt::MintRequest {
        token: subject.as_bytes(),
        kind: token::TokenKind::Access,
        subject,
        token_expires: now + 300,
    };
    idp.mint(now, &request).unwrap().jwt
}

#[test]
fn oidc_login() {
    let t0 = transcript_start_secs();
    let mut idp = provider(IDP, 21, t0);
    let oidc = server::OidcConfig::new(IDP, "confab", idp.jwks_json(t0));
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    user(&mut s, "a", "alice");
    s.send("a", CreateRoom { room: "room11".into(), verifier: verifier("pass2934"), descriptor: descriptor() });
    let dave = id_token(&mut idp, t0, "dave");
    s.connect("d");
    s.note("dave's first request with a provider JWT creates his account, without an identity key");
    s.send_auth("d", 100, JoinRoom { room: "room11".into(), verifier: verifier("pass2934") }, dave.as_bytes());
    s.send_auth("d", 101, FetchKey { username: "alice".into() }, dave.as_bytes());
    s.send_auth("d", 102, SetIdentityKey { identity_key: key("dave") }, dave.as_bytes());
    s.note("now he can chat");
    s.send_auth("d", 103, JoinRoom { room: "room11".into(), verifier: verifier("pass2934") }, dave.as_bytes());
    s.send_auth(
        "d",
        104,
        SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"hi from dave") },
        dave.as_bytes(),
    );
    s.send("a", SendRoom { room: "room11".into(), sealed: Bytes::from_static(b"hi dave") });
    s.send("a", FetchKey { username: "dave".into() });
    s.note("dave has no password: login answers like an unknown user");
    s.connect("x");
    s.send("x", Login { username: "dave".into(), password: "correct horse".into() });
    s.note("a provider JWT naming a password account, and one with a name confab does not accept");
    let alice = id_token(&mut idp, t0, "alice");
    s.send_auth("x", 105, FetchKey { username: "dave".into() }, alice.as_bytes());
    let bad = id_token(&mut idp, t0, "Dave Smith");
    s.send_auth("x", 106, FetchKey { username: "dave".into() }, bad.as_bytes());
    s.note("another issuer with the same key, and a key the server does not know");
    let mut evil =
        jwt::SigningKeys::restore(jwt::SignerConfig::new("https://evil.test", "confab"), &idp.records()).unwrap();
    let forged = id_token(&mut evil, t0, "erin");
    s.send_auth("x", 107, FetchKey { username: "dave".into() }, forged.as_bytes());
    let mut stranger = provider(IDP, 22, t0);
    let unknown = id_token(&mut stranger, t0, "erin");
    s.send_auth("x", 108, FetchKey { username: "dave".into() }, unknown.as_bytes());
    s.note("the adapter refreshes the provider's JWK Set: the new key is accepted");
    let now = s.now();
    // The provider publishes the new key beside the one it signed with so far
    // (a set without that key would make the tokens it signed unverifiable at once).
    let both = both_keys(&idp.jwks_json(t0), &stranger.jwks_json(t0));
    s.server_mut().jwks_fetched(now, both.as_bytes()).unwrap();
    s.send_auth("x", 109, FetchKey { username: "dave".into() }, unknown.as_bytes());
    s.note("after exp + 60 s leeway the JWT is expired: 419, a fresh one from the provider works");
    s.advance(Duration::from_secs(360));
    s.send_auth("d", 110, FetchKey { username: "alice".into() }, dave.as_bytes());
    let t1 = s.now().unix_ms / 1000;
    let mut idp2 = jwt::SigningKeys::restore(jwt::SignerConfig::new(IDP, "confab"), &idp.records()).unwrap();
    let now = s.now();
    s.server_mut().jwks_fetched(now, idp2.jwks_json(t1).as_bytes()).unwrap();
    let fresh = id_token(&mut idp2, t1, "dave");
    s.send_auth("d", 111, FetchKey { username: "alice".into() }, fresh.as_bytes());
    s.connect("d2");
    s.send_auth("d2", 112, FetchKey { username: "alice".into() }, dave.as_bytes());
    assert_transcript!(s.transcript());
}

/// An OIDC login keeps one token family across its connections (keyed by the
/// provider's `sid`), so a request whose answer was lost with its connection
/// is answered from the record when retried on the next one, with a fresh
/// token of the same provider session.
#[test]
fn oidc_retries_are_recognised_across_connections() {
    use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
    use rand::SeedableRng as _;
    let t0 = confab_tests::transcript::START_UNIX_MS;
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([41; 32]), Duration::from_secs(300));
    let oidc = server::OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json());
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    user(&mut s, "a", "alice");
    let token = idp.token(t0, "bob");
    s.connect("d");
    s.send_auth("d", 1, SetIdentityKey { identity_key: key("bob") }, token.as_bytes());
    s.send_auth("d", 2, RequestMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") }, token.as_bytes());
    s.send("a", AcceptMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    let once = SendMp { peer: "alice".into(), sealed: Bytes::from_static(b"once") };
    s.send_auth("d", 3, once.clone(), token.as_bytes());
    s.note("the answer is lost with the connection; the retry comes on a new one with a fresh token (same sid)");
    s.disconnect("d");
    s.advance(Duration::from_secs(400));
    let fresh = idp.token(t0 + 400_000, "bob");
    s.connect("d2");
    s.send_auth("d2", 3, once, fresh.as_bytes());
    s.send_auth("d2", 4, SendMp { peer: "alice".into(), sealed: Bytes::from_static(b"and another") }, fresh.as_bytes());
    assert_transcript!(s.transcript());
    let delivered = s
        .received
        .get("a")
        .unwrap()
        .iter()
        .filter(|m| matches!(m, Message::Event(Event { body: EventBody::UserMessage(_), .. })))
        .count();
    assert_eq!(delivered, 2, "the retry was performed again");
    let logins: Vec<_> = s.server().state().accounts().oidc_logins().collect();
    assert_eq!(logins.len(), 1, "{logins:?}");
}

/// Issue 10: an OIDC account belongs to the provider's (`iss`, `sub`), bound at
/// its first login (OIDC Core 5.7), not to whoever carries its
/// `preferred_username` now.
#[test]
fn oidc_accounts_are_bound_to_the_subject_not_the_username() {
    use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
    use rand::SeedableRng as _;
    let t0 = confab_tests::transcript::START_UNIX_MS;
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([43; 32]), Duration::from_secs(300));
    let oidc = server::OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json());
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    s.note("dave (subject u-dave) logs in first: the account dave is bound to his subject");
    let dave = idp.token_for_subject(t0, "dave", "u-dave");
    s.connect("d");
    s.send_auth("d", 1, SetIdentityKey { identity_key: key("dave") }, dave.as_bytes());
    assert!(matches!(last_response(&mut s, "d"), ResponseBody::Empty));
    s.note("another provider user (subject u-mallory) now has the preferred_username dave: refused");
    let mallory = idp.token_for_subject(t0, "dave", "u-mallory");
    s.connect("m");
    s.send_auth("m", 2, FetchKey { username: "dave".into() }, mallory.as_bytes());
    let ResponseBody::Error(e) = last_response(&mut s, "m") else { panic!("mallory got dave's account") };
    assert!(e.reason.contains("another user"), "{}", e.reason);
    assert_eq!(s.server().session_user(confab_proto::SessionId(2)), None);
    s.note("dave is renamed david at the provider: same subject, still the account dave");
    let david = idp.token_for_subject(t0, "david", "u-dave");
    s.connect("d2");
    s.send_auth("d2", 3, FetchKey { username: "dave".into() }, david.as_bytes());
    let connected = s.take_received("d2").into_iter().find_map(|m| match m {
        Message::Event(Event { body: EventBody::Connected(c), .. }) => Some(c.username),
        _ => None,
    });
    assert_eq!(connected.as_deref(), Some("dave"));
    assert!(s.server().state().user("david").is_none());
    s.note("the name david is free for another provider user");
    let other = idp.token_for_subject(t0, "david", "u-other");
    s.connect("o");
    s.send_auth("o", 4, SetIdentityKey { identity_key: key("david") }, other.as_bytes());
    assert!(matches!(last_response(&mut s, "o"), ResponseBody::Empty));
    assert!(s.server().state().user("david").is_some());
    assert_transcript!(s.transcript());
}

fn transcript_start_secs() -> u64 {
    confab_tests::transcript::START_UNIX_MS / 1000
}

/// Keycloak-shaped tokens minted by PyJWT (`proto/src/jwt/testdata/`): RS256
/// and ES256 under a JWK Set of several keys (one for encryption, one too
/// weak), the user taken from `preferred_username` (the `sub` is a UUID).
#[test]
fn oidc_keycloak_tokens() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../../proto/src/jwt/testdata/pyjwt_fixtures.json")).unwrap();
    let token = |name: &str| doc["tokens"][name].as_str().unwrap().to_owned();
    let issuer = doc["issuer"].as_str().unwrap();
    let iat = doc["iat"].as_u64().unwrap();
    let oidc = server::OidcConfig {
        allowed_azp: vec!["confab-cli".into()],
        ..server::OidcConfig::new(issuer, "confab", doc["jwks"].to_string())
    };
    let mut s = Script::new_at(ServerConfig { oidc: Some(oidc.clone()), ..config() }, (iat + 10) * 1000);
    s.connect("rs");
    s.note("RS256 access token: alice's account is made from preferred_username");
    s.send_auth("rs", 1, SetIdentityKey { identity_key: key("alice") }, token("rs256_keycloak_access").as_bytes());
    s.connect("es");
    s.note("ES256 access token of the same user, on another connection (it replaces the first)");
    s.send_auth("es", 2, FetchKey { username: "alice".into() }, token("es256_keycloak_access").as_bytes());
    s.connect("x");
    s.note("a refresh token (it has no azp either), and the attack tokens");
    for (id, name) in [
        (3, "es256_phantom_refresh"),
        (4, "rs256_signed_by_stranger"),
        (5, "rs256_weak_key"),
        (6, "hs256_with_rsa_public_pem"),
    ] {
        s.send_auth("x", id, FetchKey { username: "alice".into() }, token(name).as_bytes());
    }
    let other = server::OidcConfig { allowed_azp: vec!["confab-web".into()], ..oidc };
    let mut s2 = Script::new_at(ServerConfig { oidc: Some(other), ..config() }, (iat + 10) * 1000);
    s2.connect("rs");
    s2.send_auth("rs", 7, FetchKey { username: "alice".into() }, token("rs256_keycloak_access").as_bytes());
    assert_transcript!(format!("{}\n---- azp confab-web only ----\n{}", s.transcript(), s2.transcript()));
}

#[test]
fn undelivered_messages_expire_and_the_sender_is_told() {
    let config = ServerConfig {
        mp_retention: Duration::from_secs(120),
        sweep_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(3600),
        ..config()
    };
    let mut s = Script::new(config);
    user(&mut s, "a", "alice");
    user(&mut s, "b", "bob");
    s.send("a", RequestMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    s.send("b", AcceptMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") });
    s.send("b", DeliveryAck { peer: "alice".into(), seq: 1 });
    s.send("a", DeliveryAck { peer: "bob".into(), seq: 1 });
    s.disconnect("b");
    s.note("bob stays away longer than the 120 s retention: alice, online, is told at once");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"never read") });
    s.advance(Duration::from_secs(150));
    s.note("the same while alice is offline too: she is told at her next login");
    s.send("a", SendMp { peer: "bob".into(), sealed: Bytes::from_static(b"also never read") });
    s.disconnect("a");
    s.advance(Duration::from_secs(150));
    s.connect("a2");
    login(&mut s, "a2", "alice");
    s.note("bob finds nothing waiting");
    s.connect("b2");
    login(&mut s, "b2", "bob");
    assert_transcript!(s.transcript());
}

/// One JWK Set document holding the keys of two.
fn both_keys(a: &str, b: &str) -> String {
    let mut a: serde_json::Value = serde_json::from_str(a).expect("a JWK Set");
    let b: serde_json::Value = serde_json::from_str(b).expect("a JWK Set");
    let more = b["keys"].as_array().expect("keys").clone();
    a["keys"].as_array_mut().expect("keys").extend(more);
    a.to_string()
}
