//! ES256 twins at the server: the `(r, n - s)` twin of a provider's access
//! token (docs/SECURITY.md, "JWT signatures") is accepted as the same token
//! of the same login, so it cannot get a retried request performed twice,
//! make a second account or a second login, or act as anyone else.

use std::time::Duration;

use bytes::Bytes;
use confab_proto::server::OidcConfig;
use confab_proto::wire::*;
use confab_proto::*;
use confab_sim::{IDP_AUDIENCE, IDP_ISSUER, TestIdp};
use confab_tests::transcript::{START_UNIX_MS, Script, config};
use rand::SeedableRng as _;

/// The order `n` of the P-256 group, big-endian.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The token with its ES256 signature `r || s` replaced by `r || (n - s)`.
fn twin(token: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert_eq!(signature.len(), 64);
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let diff = u16::from(ORDER[i]).wrapping_sub(u16::from(signature[32 + i])).wrapping_sub(borrow);
        signature[32 + i] = diff as u8;
        borrow = u16::from(diff > 0xff);
    }
    assert_eq!(borrow, 0);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(&signature))
}

fn responses(s: &mut Script, label: &str) -> Vec<Response> {
    s.take_received(label)
        .into_iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn the_twin_of_a_provider_token_is_the_same_login() {
    let mut idp = TestIdp::new(&mut rand::rngs::StdRng::from_seed([43; 32]), Duration::from_secs(300));
    let oidc = OidcConfig::new(IDP_ISSUER, IDP_AUDIENCE, idp.jwks_json());
    let mut s = Script::new(ServerConfig { oidc: Some(oidc), idle_timeout: Duration::from_secs(3600), ..config() });
    s.connect("a");
    s.send(
        "a",
        Register {
            username: "alice".into(),
            password: "correct horse".into(),
            passphrase: "apple river stone".into(),
            identity_key: Bytes::from_static(b"idkey-alice"),
        },
    );
    s.send("a", Login { username: "alice".into(), password: "correct horse".into() });
    s.send("a", Passphrase { passphrase: "apple river stone".into() });

    let token = idp.token(START_UNIX_MS, "bob");
    let twin = twin(&token);
    assert_ne!(token, twin);
    s.connect("d");
    s.send_auth("d", 1, SetIdentityKey { identity_key: Bytes::from_static(b"idkey-bob") }, token.as_bytes());
    s.send_auth("d", 2, RequestMp { peer: "alice".into(), handshake: Bytes::from_static(b"hs-bob") }, token.as_bytes());
    s.send("a", AcceptMp { peer: "bob".into(), handshake: Bytes::from_static(b"hs-alice") });
    let once = SendMp { peer: "alice".into(), sealed: Bytes::from_static(b"once") };
    s.send_auth("d", 3, once.clone(), token.as_bytes());
    let first = responses(&mut s, "d").pop().unwrap();
    assert_eq!((first.request_id, first.status), (3, Status::Valid));

    // The twin on the same connection: accepted, the same user.
    s.send_auth("d", 4, FetchKey { username: "alice".into() }, twin.as_bytes());
    let r = responses(&mut s, "d").pop().unwrap();
    assert_eq!((r.request_id, r.status), (4, Status::Valid), "{r:?}");

    // The answer to 3 is lost with the connection; 3 is retried with the twin on a new one.
    s.disconnect("d");
    s.connect("d2");
    s.send_auth("d2", 3, once, twin.as_bytes());
    let retry = responses(&mut s, "d2").into_iter().find(|r| r.request_id == 3).unwrap();
    assert_eq!(retry, Response { timestamp_ms: retry.timestamp_ms, ..first }, "answered from the record");
    // Request 3's id with another deduplicated opcode is still refused: the twin is the same login.
    s.send_auth("d2", 3, CloseMp { peer: "alice".into() }, twin.as_bytes());
    let conflict = responses(&mut s, "d2").pop().unwrap();
    assert_eq!((conflict.status, conflict.code), (Status::Error, status::CONFLICT), "{conflict:?}");

    let delivered = s
        .received
        .get("a")
        .unwrap()
        .iter()
        .filter(|m| matches!(m, Message::Event(Event { body: EventBody::UserMessage(_), .. })))
        .count();
    assert_eq!(delivered, 1, "the retry with the twin was performed again");
    let state = s.server().state();
    let logins: Vec<_> = state.accounts().oidc_logins().collect();
    assert_eq!(logins.len(), 1, "the twin made a second login: {logins:?}");
    assert_eq!(state.accounts().user_count(), 2, "the twin made another account");
}
