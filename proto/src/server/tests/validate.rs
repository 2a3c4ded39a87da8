//! [`ServerConfig::validate`]: each bound refuses the value just above it and
//! accepts the bound itself; a server at every maximum runs without overflow.

use std::time::Duration;

use super::{Harness, config};
use crate::server::{CodeConfig, ConfigError, OidcConfig, PhantomConfig, Server, ServerConfig};
use crate::wire::Limits;

const MAX: Duration = ServerConfig::MAX_DURATION;
const NS: Duration = Duration::from_nanos(1);

/// The field an invalid configuration is refused for (and that it is refused).
fn refused(c: &ServerConfig) -> &'static str {
    match c.validate() {
        Err(e) => e.field(),
        Ok(()) => panic!("accepted: {c:?}"),
    }
}

fn accepted(c: &ServerConfig) {
    if let Err(e) = c.validate() {
        panic!("refused: {e}");
    }
}

fn phantom() -> PhantomConfig {
    PhantomConfig::new("0123456789abcdef", "https://confab.test", "backends")
}

fn oidc() -> OidcConfig {
    OidcConfig::new("https://idp.test", "confab", r#"{"keys":[]}"#)
}

#[test]
fn the_defaults_and_every_test_preset_are_valid() {
    accepted(&ServerConfig::default());
    accepted(&config());
    accepted(&ServerConfig {
        codes: Some(CodeConfig::default()),
        phantom: Some(phantom()),
        oidc: Some(oidc()),
        ..config()
    });
}

#[test]
fn every_duration_is_bounded_by_max_duration() {
    // Each field at its maximum (with what it must stay below raised), then just above MAX_DURATION.
    type Set = fn(&mut ServerConfig, Duration);
    let fields: [(&str, Set, Duration); 10] = [
        ("access_ttl", |c, d| (c.access_ttl, c.refresh_ttl) = (d, MAX), MAX),
        ("refresh_ttl", |c, d| c.refresh_ttl = d, MAX),
        ("refresh_retry_grace", |c, d| c.refresh_retry_grace = d, MAX),
        ("token_grace", |c, d| c.token_grace = d, MAX),
        ("login_window", |c, d| c.login_window = d, MAX),
        ("login_wait", |c, d| c.login_wait = d, MAX),
        ("mp_retention", |c, d| c.mp_retention = d, MAX),
        ("sweep_interval", |c, d| c.sweep_interval = d, MAX),
        ("keepalive_interval", |c, d| (c.keepalive_interval, c.idle_timeout) = (d, MAX), MAX - NS),
        ("idle_timeout", |c, d| c.idle_timeout = d, MAX),
    ];
    for (field, set, max) in fields {
        let mut c = config();
        set(&mut c, max);
        accepted(&c);
        let mut c = config();
        set(&mut c, MAX + NS);
        assert_eq!(c.validate(), Err(ConfigError::TooLong { field, value: MAX + NS, max: MAX }), "{field}");
    }
    // The keepalive itself may reach the maximum only if the idle timeout could exceed it: it cannot.
    let c = ServerConfig { keepalive_interval: MAX, idle_timeout: MAX, ..config() };
    assert_eq!(refused(&c), "idle_timeout");
}

#[test]
fn feature_durations_are_bounded() {
    let codes = |ttl| ServerConfig { codes: Some(CodeConfig { ttl, ..CodeConfig::default() }), ..config() };
    let sixty = Duration::from_secs(60);
    accepted(&codes(sixty));
    assert_eq!(
        codes(sixty + NS).validate(),
        Err(ConfigError::TooLong { field: "codes.ttl", value: sixty + NS, max: sixty })
    );
    assert_eq!(refused(&codes(Duration::from_millis(999))), "codes.ttl");

    let rotation = |d| ServerConfig { phantom: Some(PhantomConfig { key_rotation: d, ..phantom() }), ..config() };
    accepted(&rotation(MAX));
    assert_eq!(refused(&rotation(MAX + NS)), "phantom.key_rotation");
    let ttl = |d| ServerConfig { phantom: Some(PhantomConfig { max_ttl: d, ..phantom() }), ..config() };
    accepted(&ttl(MAX));
    assert_eq!(refused(&ttl(MAX + NS)), "phantom.max_ttl");
    let leeway = |d| ServerConfig { oidc: Some(OidcConfig { leeway: d, ..oidc() }), ..config() };
    accepted(&leeway(MAX));
    assert_eq!(refused(&leeway(MAX + NS)), "oidc.leeway");
}

#[test]
fn wire_counts_are_bounded_by_their_prefixes() {
    let list = ServerConfig::MAX_LIST;
    accepted(&ServerConfig { room_history: list, ..config() });
    let c = ServerConfig { room_history: list + 1, ..config() };
    assert_eq!(c.validate(), Err(ConfigError::TooLarge { field: "room_history", value: 65_536, max: 65_535 }));
    accepted(&ServerConfig { max_room_members: list, ..config() });
    assert_eq!(refused(&ServerConfig { max_room_members: list + 1, ..config() }), "max_room_members");

    let data = |max_data| ServerConfig { limits: Limits { max_data, ..Limits::DEFAULT }, ..config() };
    accepted(&data(ServerConfig::MAX_DATA));
    assert_eq!(refused(&data(ServerConfig::MAX_DATA + 1)), "limits.max_data");
    assert_eq!(refused(&data(1023)), "limits.max_data");

    let lanes = |p_cost: u32| {
        let hash_params = crate::server::HashParams { m_cost_kib: p_cost.saturating_mul(8), t_cost: 1, p_cost };
        ServerConfig { hash_params, ..config() }
    };
    accepted(&lanes(argon2::Params::MAX_P_COST));
    assert_eq!(refused(&lanes(argon2::Params::MAX_P_COST + 1)), "hash_params.p_cost");
}

#[test]
fn lower_bounds_and_cross_field_invariants() {
    let one = Duration::from_secs(1);
    assert_eq!(refused(&ServerConfig { sweep_interval: Duration::ZERO, ..config() }), "sweep_interval");
    accepted(&ServerConfig { sweep_interval: one, ..config() });
    accepted(&ServerConfig { token_grace: Duration::ZERO, refresh_retry_grace: Duration::ZERO, ..config() });
    let c = ServerConfig { idle_timeout: Duration::from_secs(30), ..config() };
    let e = ConfigError::IdleNotAfterKeepalive { idle_timeout: c.idle_timeout, keepalive_interval: c.idle_timeout };
    assert_eq!(c.validate(), Err(e));
    accepted(&ServerConfig { idle_timeout: Duration::from_secs(30) + NS, ..config() });
    assert_eq!(refused(&ServerConfig { refresh_ttl: Duration::from_secs(60), ..config() }), "refresh_ttl");
    assert_eq!(refused(&ServerConfig { queue_total: 999, ..config() }), "queue_total");
    accepted(&ServerConfig { queue_total: 1000, ..config() });
    let m = |m_cost_kib| ServerConfig {
        hash_params: crate::server::HashParams { m_cost_kib, t_cost: 1, p_cost: 2 },
        ..config()
    };
    assert_eq!(m(15).validate(), Err(ConfigError::HashMemoryPerLane { m_cost_kib: 15, p_cost: 2 }));
    accepted(&m(16));
    assert_eq!(refused(&ServerConfig { max_verifier: 15, ..config() }), "max_verifier");
    assert_eq!(refused(&ServerConfig { max_sessions: 0, ..config() }), "max_sessions");

    let credential = |s: &str| ServerConfig {
        phantom: Some(PhantomConfig { service_credential: s.into(), ..phantom() }),
        ..config()
    };
    assert_eq!(refused(&credential("0123456789abcde")), "phantom.service_credential");
    accepted(&credential("0123456789abcdef"));
    let issuer = ServerConfig { oidc: Some(OidcConfig { issuer: " ".into(), ..oidc() }), ..config() };
    assert_eq!(issuer.validate(), Err(ConfigError::Empty { field: "oidc.issuer" }));
}

#[test]
fn the_server_refuses_an_invalid_configuration() {
    let now = crate::Now::new(std::time::Instant::now(), 0);
    let c = ServerConfig { sweep_interval: Duration::MAX, ..config() };
    let e = Server::new(c.clone(), [1; 32], now).map(|_| ()).unwrap_err();
    assert_eq!(e.field(), "sweep_interval");
    let state = crate::server::State::new(c.room_history, c.dedup_window);
    assert_eq!(Server::restore(c, [1; 32], state, now).map(|_| ()), Err(e));
}

/// Every duration at its maximum: sessions, tokens, retries, timers and sweeps
/// compute their instants and expiries without overflowing.
#[test]
fn a_server_at_every_maximum_duration_runs() {
    let c = ServerConfig {
        access_ttl: MAX,
        refresh_ttl: MAX,
        refresh_retry_grace: MAX,
        token_grace: MAX,
        login_window: MAX,
        login_wait: MAX,
        mp_retention: MAX,
        sweep_interval: MAX,
        keepalive_interval: MAX - NS,
        idle_timeout: MAX,
        codes: Some(CodeConfig { ttl: Duration::from_secs(60), ..CodeConfig::default() }),
        ..config()
    };
    let mut h = Harness::new(c);
    h.register("alice");
    let (_, tokens) = h.login("alice");
    assert!(tokens.access_expires_ms >= h.now.unix_ms + MAX.as_millis() as u64);
    // Failed logins fill the window: the wait the next one is told runs to the window's end.
    let s = h.connect();
    let mut last = 0;
    for _ in 0..6 {
        last = h.send(s, crate::wire::Login { username: "alice".into(), password: "wrong password".into() });
    }
    assert_eq!(h.code(s, last), crate::wire::status::RATE_LIMITED);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.register("bob"), crate::wire::status::CREATED);
}
