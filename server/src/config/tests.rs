use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_proto::ServerConfig;
use confab_proto::server::DuplicateLogin;

use super::file::{CodesSection, FileConfig};
use super::{ConfigError, DEFAULT_LISTEN, RunConfig, RunFlags};

const EXAMPLE: &str = include_str!("../../../docs/confab-server.toml");

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/confab-server.toml")
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// A scratch file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, text: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("confab-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load_text(name: &str, text: &str) -> Result<RunConfig, ConfigError> {
    let file = Scratch::new(name, text);
    RunConfig::load(Some(&file.0), &no_env, &RunFlags::default())
}

fn invalid_key(result: Result<RunConfig, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

fn parse_message(result: Result<RunConfig, ConfigError>) -> String {
    match result {
        Err(e @ ConfigError::Parse { .. }) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn config_defaults() {
    let c = RunConfig::load(None, &no_env, &RunFlags::default()).unwrap();
    assert_eq!(c, RunConfig::default());
    assert_eq!(c.data, PathBuf::from("./confab-data"));
    assert_eq!((c.tcp, c.quic), (DEFAULT_LISTEN, DEFAULT_LISTEN));
    assert_eq!(c.tcp.to_string(), "127.0.0.1:7700");
    assert_eq!(c.cert, None);
    assert_eq!(c.compact_every, crate::store::DEFAULT_COMPACT_EVERY);
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.tcp_limits, confab_transports::tcp::TcpLimits::default());
    assert_eq!(c.file, None);
}

#[test]
fn config_example_file_is_exactly_the_defaults() {
    let parsed: FileConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(parsed, FileConfig::default());
    let c = RunConfig::load(Some(&example_path()), &no_env, &RunFlags::default()).unwrap();
    assert_eq!(RunConfig { file: None, ..c }, RunConfig::default());
}

/// Uncomments `# key = value` and `# [section]` lines.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(t) => key_paths(t, &format!("{path}."), out),
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn config_example_file_lists_every_key() {
    let text = uncommented(EXAMPLE);
    let parsed: FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("the uncommented example: {e}"));
    // Every optional key is shown in the example.
    assert!(parsed.tcp_listen.is_some() && parsed.quic_listen.is_some() && parsed.ws_listen.is_some());
    assert!(parsed.cert_chain.is_some() && parsed.private_key.is_some());
    let (phantom, oidc) = (parsed.phantom.clone().unwrap(), parsed.oidc.clone().unwrap());
    assert!(!oidc.allowed_azp.is_empty());
    // The values shown for optional sections' keys are their defaults.
    assert_eq!(parsed.codes, Some(CodesSection::default()));
    assert_eq!(phantom.key_rotation_secs, super::file::default_key_rotation_secs());
    assert_eq!(phantom.max_ttl_secs, super::file::default_max_ttl_secs());
    assert_eq!(oidc.leeway_secs, super::file::default_leeway_secs());
    assert_eq!(oidc.jwks_refresh_secs, super::file::default_jwks_refresh_secs());
    assert_eq!(oidc.jwks_min_interval_secs, super::file::default_jwks_min_interval_secs());
    // And every key of the structure is in the example.
    let (mut written, mut known) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&toml::from_str(&text).unwrap(), "", &mut written);
    key_paths(&toml::Table::try_from(&parsed).unwrap(), "", &mut known);
    assert_eq!(written, known);
    assert!(known.len() > 50, "{known:?}");
}

#[test]
fn config_precedence_defaults_file_env_flags() {
    let file = Scratch::new(
        "precedence.toml",
        "data = \"file-data\"\nlisten = \"127.0.0.2:1000\"\ntcp_listen = \"127.0.0.2:1001\"\n",
    );
    let flags = RunFlags::default();
    let c = RunConfig::load(Some(&file.0), &no_env, &flags).unwrap();
    assert_eq!(c.data, PathBuf::from("file-data"));
    assert_eq!((c.tcp.to_string(), c.quic.to_string()), ("127.0.0.2:1001".into(), "127.0.0.2:1000".into()));
    assert_eq!(c.file.as_deref(), Some(file.0.as_path()));

    let env = |k: &str| match k {
        "CONFAB_DATA" => Some("env-data".to_owned()),
        "CONFAB_LISTEN" => Some("[::1]:2000".to_owned()),
        _ => None,
    };
    let c = RunConfig::load(Some(&file.0), &env, &flags).unwrap();
    assert_eq!(c.data, PathBuf::from("env-data"));
    assert_eq!((c.tcp.to_string(), c.quic.to_string()), ("[::1]:2000".into(), "[::1]:2000".into()));

    let flags = RunFlags {
        data: Some("flag-data".into()),
        quic_listen: Some("127.0.0.3:3001".parse().unwrap()),
        cert_chain: Some("chain.pem".into()),
        private_key: Some("key.pem".into()),
        ..RunFlags::default()
    };
    let c = RunConfig::load(Some(&file.0), &env, &flags).unwrap();
    assert_eq!(c.data, PathBuf::from("flag-data"));
    assert_eq!((c.tcp.to_string(), c.quic.to_string()), ("[::1]:2000".into(), "127.0.0.3:3001".into()));
    assert_eq!(c.cert, Some((PathBuf::from("chain.pem"), PathBuf::from("key.pem"))));
    let flags = RunFlags { listen: Some("127.0.0.4:4000".parse().unwrap()), ..RunFlags::default() };
    let c = RunConfig::load(Some(&file.0), &env, &flags).unwrap();
    assert_eq!((c.tcp.to_string(), c.quic.to_string()), ("127.0.0.4:4000".into(), "127.0.0.4:4000".into()));

    // CONFAB_CONFIG names the file when none is given; an explicit one wins.
    let named = file.0.to_string_lossy().into_owned();
    let env = |k: &str| (k == "CONFAB_CONFIG").then(|| named.clone());
    assert_eq!(RunConfig::load(None, &env, &RunFlags::default()).unwrap().data, PathBuf::from("file-data"));
    let other = Scratch::new("other.toml", "data = \"other\"\n");
    assert_eq!(RunConfig::load(Some(&other.0), &env, &RunFlags::default()).unwrap().data, PathBuf::from("other"));
    let bad = |k: &str| (k == "CONFAB_LISTEN").then(|| "localhost".to_owned());
    let err = RunConfig::load(None, &bad, &RunFlags::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Env { var: "CONFAB_LISTEN", .. }), "{err}");
}

#[test]
fn config_every_section_reaches_the_server_config() {
    let jwks = Scratch::new("jwks.json", &{
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../proto/src/jwt/testdata/pyjwt_fixtures.json")).unwrap();
        doc["jwks"].to_string()
    });
    let text = format!(
        "max_connections = 50\ncompact_every = 7\n\
         [server]\naccess_ttl_secs = 60\nidle_timeout_secs = 45\nduplicate_login = \"refuse\"\nroom_history = 5\n\
         room_history_bytes = 16384\nmax_rooms_per_user = 3\nmax_accounts = 9\nlogin_source_burst = 7\n\
         max_tracked_sources = 11\n\
         [limits]\nmax_data = 65536\n[argon2]\nm_cost_kib = 8\nt_cost = 1\n\
         [tcp]\nmax_handshaking = 64\nmax_handshaking_per_source = 4\nhandshake_timeout_secs = 5\n\
         busy_handshake_timeout_secs = 1\n\
         [codes]\nttl_secs = 30\n\
         [phantom]\nservice_credential = \"0123456789abcdef\"\nissuer = \"iss\"\naudience = \"aud\"\n\
         [oidc]\nissuer = \"https://idp\"\naudience = \"confab\"\nallowed_azp = [\"cli\"]\njwks_file = {:?}\n\
         jwks_refresh_secs = 300\njwks_min_interval_secs = 20\n",
        jwks.0.to_string_lossy()
    );
    let c = load_text("full.toml", &text).unwrap();
    assert_eq!((c.max_connections, c.compact_every), (50, 7));
    let t = c.tcp_limits;
    assert_eq!((t.max_connections, t.max_handshaking, t.max_handshaking_per_source), (50, 64, 4));
    assert_eq!((t.handshake_timeout, t.busy_handshake_timeout), (Duration::from_secs(5), Duration::from_secs(1)));
    let s = &c.server;
    assert_eq!((s.access_ttl, s.idle_timeout), (Duration::from_secs(60), Duration::from_secs(45)));
    assert_eq!((s.duplicate_login, s.room_history, s.limits.max_data), (DuplicateLogin::Refuse, 5, 65536));
    assert_eq!((s.hash_params.m_cost_kib, s.hash_params.t_cost, s.hash_params.p_cost), (8, 1, 1));
    assert_eq!((s.room_history_bytes, s.max_rooms_per_user, s.max_accounts), (16384, 3, 9));
    assert_eq!((s.login_source_burst, s.max_tracked_sources), (7, 11));
    assert_eq!(s.codes.as_ref().unwrap().ttl, Duration::from_secs(30));
    assert_eq!(s.codes.as_ref().unwrap().max_in_flight, 100_000);
    let p = s.phantom.as_ref().unwrap();
    assert_eq!((p.issuer.as_str(), p.max_ttl), ("iss", Duration::from_secs(300)));
    let o = s.oidc.as_ref().unwrap();
    assert_eq!((o.allowed_azp.clone(), o.leeway), (vec!["cli".to_owned()], Duration::from_secs(60)));
    assert_eq!(o.jwks_json, std::fs::read_to_string(&jwks.0).unwrap());
    assert_eq!((o.jwks_refresh, o.jwks_min_interval), (Duration::from_secs(300), Duration::from_secs(20)));

    // A `[codes]` section with no keys enables codes with their defaults.
    let c = load_text("codes.toml", "[codes]\n").unwrap();
    assert_eq!(c.server.codes, Some(confab_proto::server::CodeConfig::default()));
}

#[test]
fn config_unknown_keys_and_wrong_types_are_named() {
    let msg = parse_message(load_text("unknown.toml", "[server]\nacces_ttl_secs = 5\n"));
    assert!(msg.contains("acces_ttl_secs"), "{msg}");
    let msg = parse_message(load_text("unknown-top.toml", "datadir = \"x\"\n"));
    assert!(msg.contains("datadir"), "{msg}");
    let msg = parse_message(load_text("listen.toml", "listen = \"localhost\"\n"));
    assert!(msg.contains("listen"), "{msg}");
    let msg = parse_message(load_text("policy.toml", "[server]\nduplicate_login = \"maybe\"\n"));
    assert!(msg.contains("maybe") && msg.contains("refuse"), "{msg}");
    let msg = parse_message(load_text("negative.toml", "[server]\nroom_history = -1\n"));
    assert!(msg.contains("room_history"), "{msg}");
    let msg = parse_message(load_text("phantom.toml", "[phantom]\nissuer = \"x\"\n"));
    assert!(msg.contains("service_credential"), "{msg}");
    let err = RunConfig::load(Some(Path::new("/nonexistent/confab.toml")), &no_env, &RunFlags::default());
    assert!(matches!(err, Err(ConfigError::Read { what: "configuration file", .. })));
}

#[test]
fn config_invalid_values_are_refused_with_their_key() {
    for (text, key) in [
        ("[server]\nidle_timeout_secs = 30\n", "server.idle_timeout_secs"),
        ("[server]\naccess_ttl_secs = 0\n", "server.access_ttl_secs"),
        ("[server]\nrefresh_ttl_secs = 60\n", "server.refresh_ttl_secs"),
        ("[server]\nqueue_total = 10\n", "server.queue_total"),
        ("[server]\nmax_verifier = 8\n", "server.max_verifier"),
        ("[argon2]\nm_cost_kib = 8\np_cost = 2\n", "argon2.m_cost_kib"),
        ("[limits]\nmax_name = 16\n", "limits.max_name"),
        // A room's whole history and member list must fit in one frame.
        ("[limits]\nmax_data = 65536\n", "server.room_history_bytes"),
        ("[server]\nmax_accounts = 0\n", "server.max_accounts"),
        ("[server]\nlogin_source_burst = 0\n", "server.login_source_burst"),
        ("compact_every = 0\n", "compact_every"),
        ("[tcp]\nmax_handshaking = 0\n", "tcp.max_handshaking"),
        ("[tcp]\nmax_handshaking_per_source = 0\n", "tcp.max_handshaking_per_source"),
        ("[tcp]\nmax_handshaking_per_source = 1001\n", "tcp.max_handshaking_per_source"),
        ("[tcp]\nbusy_handshake_timeout_secs = 11\n", "tcp.busy_handshake_timeout_secs"),
        ("[tcp]\nhandshake_timeout_secs = 0\n", "tcp.handshake_timeout_secs"),
        ("cert_chain = \"c.pem\"\n", "private_key"),
        ("private_key = \"k.pem\"\n", "cert_chain"),
        ("[codes]\nttl_secs = 61\n", "codes.ttl_secs"),
        ("[phantom]\nservice_credential = \"short\"\nissuer = \"i\"\naudience = \"a\"\n", "phantom.service_credential"),
        ("[phantom]\nservice_credential = \"0123456789abcdef\"\nissuer = \" \"\naudience = \"a\"\n", "phantom.issuer"),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/x\"\njwks_min_interval_secs = 0\n",
            "oidc.jwks_min_interval_secs",
        ),
    ] {
        assert_eq!(invalid_key(load_text("invalid.toml", text)), key, "{text}");
    }
    let err = load_text("invalid.toml", "[server]\nidle_timeout_secs = 30\n").unwrap_err().to_string();
    assert!(err.contains("keepalive_interval_secs (30)"), "{err}");

    let err =
        load_text("oidc.toml", "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/nonexistent/jwks.json\"\n");
    assert!(matches!(err, Err(ConfigError::Read { what: "oidc.jwks_file", .. })), "{err:?}");
    let garbage = Scratch::new("garbage.json", "{\"keys\": 3}");
    let text = format!("[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = {:?}\n", garbage.0.to_string_lossy());
    assert!(matches!(load_text("oidc-bad.toml", &text), Err(ConfigError::Jwks { .. })));
}

/// Every value the machine refuses is reported under a key of the file: each
/// integer key of each section, set to extremes one at a time.
#[test]
fn config_refusals_name_keys_of_the_file() {
    let text = uncommented(EXAMPLE);
    let parsed: FileConfig = toml::from_str(&text).unwrap();
    let mut known = BTreeSet::new();
    key_paths(&toml::Table::try_from(&parsed).unwrap(), "", &mut known);
    // The optional sections, valid, so that their keys are checked too.
    let jwks = Scratch::new("refusals-jwks.json", r#"{"keys":[]}"#);
    let sections = format!(
        "[codes]\n[phantom]\nservice_credential = \"0123456789abcdef\"\nissuer = \"i\"\naudience = \"a\"\n\
         [oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = {:?}\n",
        jwks.0.to_string_lossy()
    );
    assert!(load_text("refusals-base.toml", &sections).is_ok());
    let mut refused = BTreeSet::new();
    for key in known.iter().filter(|k| k.contains('.')) {
        let (section, name) = key.split_once('.').unwrap();
        for value in [0, 65_536, 4_294_967_296, i64::MAX] {
            let body = sections.replace(&format!("[{section}]\n"), &format!("[{section}]\n{name} = {value}\n"));
            let body = if body == sections { format!("{sections}[{section}]\n{name} = {value}\n") } else { body };
            match load_text("refusals.toml", &body) {
                Err(ConfigError::Invalid { key: reported, .. }) => {
                    assert!(known.contains(reported), "{key} = {value}: refused as {reported}, not a key of the file");
                    refused.insert(reported);
                }
                Ok(_) | Err(ConfigError::Parse { .. }) => {}
                Err(e) => panic!("{key} = {value}: {e}"),
            }
        }
    }
    // The upper bounds reach the file: durations, wire counts, the frame size.
    for key in ["server.sweep_interval_secs", "server.room_history", "server.max_room_members", "limits.max_data"] {
        assert!(refused.contains(key), "{key} never refused: {refused:?}");
    }
    let err = load_text("too-long.toml", "[server]\nmp_retention_secs = 4294967296\n").unwrap_err().to_string();
    assert!(err.contains("server.mp_retention_secs") && err.contains("above the maximum 3153600000"), "{err}");
}

#[test]
fn config_log_limits_are_read_and_bounded() {
    let c = load_text("log.toml", "[log]\nburst = 3\ninterval_secs = 2\n").unwrap();
    assert_eq!(c.log, crate::runtime::LogLimits { burst: 3, interval: Duration::from_secs(2) });
    assert_eq!(RunConfig::default().log, crate::runtime::LogLimits::default());
    assert_eq!(invalid_key(load_text("log0.toml", "[log]\ninterval_secs = 0\n")), "log.interval_secs");
    let above = ServerConfig::MAX_DURATION.as_secs() + 1;
    assert_eq!(
        invalid_key(load_text("logmax.toml", &format!("[log]\ninterval_secs = {above}\n"))),
        "log.interval_secs"
    );
}

#[test]
fn config_ws_listener_address_tls_origins_and_bounds() {
    use crate::runtime::WsTls;
    // Default: TCP's port + 2, plain on loopback, default policy and limits.
    let c = RunConfig::default();
    let ws = c.ws.clone().expect("a WebSocket listener by default");
    assert_eq!(ws.listen.to_string(), "127.0.0.1:7702");
    assert_eq!(ws.tls, WsTls::Never);
    assert_eq!(ws.limits.conn, c.tcp_limits);
    assert_eq!((ws.limits.max_request_bytes, ws.limits.max_message), (8192, 65536));
    assert!(ws.policy.origins.loopback && ws.policy.origins.allowed.is_empty());
    // --tcp-listen moves it along; --ws-listen sets it; a certificate makes it wss://.
    let flags = RunFlags { tcp_listen: Some("127.0.0.1:9000".parse().unwrap()), ..RunFlags::default() };
    let ws = RunConfig::load(None, &no_env, &flags).unwrap().ws.unwrap();
    assert_eq!(ws.listen.to_string(), "127.0.0.1:9002");
    let flags = RunFlags {
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        cert_chain: Some("chain.pem".into()),
        private_key: Some("key.pem".into()),
        ..RunFlags::default()
    };
    let ws = RunConfig::load(None, &no_env, &flags).unwrap().ws.unwrap();
    assert_eq!((ws.listen.to_string(), ws.tls), ("127.0.0.1:0".to_owned(), WsTls::Always));
    // Not loopback: TLS, and plain is refused unless explicitly allowed.
    let c = load_text("ws-public.toml", "ws_listen = \"0.0.0.0:443\"\n").unwrap();
    assert_eq!(c.ws.unwrap().tls, WsTls::Always);
    let plain = "ws_listen = \"0.0.0.0:80\"\n[ws]\ntls = \"never\"\n";
    assert_eq!(invalid_key(load_text("ws-plain.toml", plain)), "ws.tls");
    let err = load_text("ws-plain2.toml", plain).unwrap_err().to_string();
    assert!(err.contains("refusing to serve plain ws:// on 0.0.0.0:80"), "{err}");
    let allowed = format!("{plain}allow_plain_non_loopback = true\n");
    assert_eq!(load_text("ws-plain3.toml", &allowed).unwrap().ws.unwrap().tls, WsTls::Never);
    // Origins and the request bound.
    let text = "[ws]\norigins = [\"https://chat.example.org\"]\nloopback_origins = false\nmax_request_bytes = 4096\n";
    let ws = load_text("ws-origins.toml", text).unwrap().ws.unwrap();
    assert_eq!(ws.policy.origins.allowed, vec!["https://chat.example.org".to_owned()]);
    assert!(!ws.policy.origins.loopback);
    assert_eq!(ws.limits.max_request_bytes, 4096);
    assert_eq!(invalid_key(load_text("ws-o.toml", "[ws]\norigins = [\"chat.example.org\"]\n")), "ws.origins");
    assert_eq!(invalid_key(load_text("ws-r.toml", "[ws]\nmax_request_bytes = 100\n")), "ws.max_request_bytes");
    assert_eq!(invalid_key(load_text("ws-r2.toml", "[ws]\nmax_request_bytes = 2000000\n")), "ws.max_request_bytes");
    let ws = load_text("ws-m.toml", "[ws]\nmax_message_bytes = 1048576\n").unwrap().ws.unwrap();
    assert_eq!(ws.limits.max_message, 1 << 20);
    assert_eq!(invalid_key(load_text("ws-m2.toml", "[ws]\nmax_message_bytes = 1024\n")), "ws.max_message_bytes");
    let above = "[ws]\nmax_message_bytes = 16777217\n";
    assert_eq!(invalid_key(load_text("ws-m3.toml", above)), "ws.max_message_bytes");
    assert!(parse_message(load_text("ws-k.toml", "[ws]\nport = 1\n")).contains("port"));
    // Off.
    assert_eq!(load_text("ws-off.toml", "[ws]\nenabled = false\n").unwrap().ws, None);
}

#[test]
fn config_store_fsync_is_read_defaulted_and_bounded() {
    use crate::store::Fsync;
    assert_eq!(RunConfig::default().fsync, Fsync::Always, "the safe default");
    let c = load_text("fsync.toml", "[store]\nfsync = \"interval\"\nfsync_interval_ms = 250\n").unwrap();
    assert_eq!(c.fsync, Fsync::Interval(Duration::from_millis(250)));
    let c = load_text("fsync-default.toml", "[store]\nfsync = \"interval\"\n").unwrap();
    assert_eq!(c.fsync, Fsync::Interval(Duration::from_secs(1)), "a second unless said otherwise");
    let c = load_text("fsync-always.toml", "[store]\nfsync = \"always\"\nfsync_interval_ms = 5\n").unwrap();
    assert_eq!(c.fsync, Fsync::Always);
    assert_eq!(invalid_key(load_text("fsync0.toml", "[store]\nfsync_interval_ms = 0\n")), "store.fsync_interval_ms");
    assert_eq!(
        invalid_key(load_text("fsyncmax.toml", "[store]\nfsync = \"interval\"\nfsync_interval_ms = 60001\n")),
        "store.fsync_interval_ms"
    );
    let msg = parse_message(load_text("fsync-bad.toml", "[store]\nfsync = \"sometimes\"\n"));
    assert!(msg.contains("sometimes") && msg.contains("always") && msg.contains("interval"), "{msg}");
}

#[test]
fn config_ws_web_serves_the_browser_client_unless_off() {
    let ws = RunConfig::default().ws.expect("a WebSocket listener by default");
    let site = ws.policy.site.expect("the browser client is served by default");
    assert!(site.files.iter().any(|f| f.path == "/index.html"));
    let off = load_text("ws-web.toml", "[ws]\nweb = false\n").unwrap().ws.unwrap();
    assert!(off.policy.site.is_none());
    assert!(load_text("ws-web2.toml", "[ws]\nweb = \"yes\"\n").is_err(), "a boolean");
}

#[test]
fn config_cluster_keys_need_a_postgresql_store() {
    // A standby without a store would serve an empty SQLite state of its own.
    let flags = RunFlags { standby: true, ..RunFlags::default() };
    let err = RunConfig::load(None, &no_env, &flags).unwrap_err();
    assert!(matches!(&err, ConfigError::Invalid { key: "cluster", .. }), "{err}");
    assert!(err.to_string().contains("store.url"), "{err}");
    assert_eq!(invalid_key(load_text("cluster-no-store", "[cluster]\nnode = \"n1\"\n")), "cluster");
    let with_store = "[store]\nurl = \"postgres://u@h/db\"\n[cluster]\nnode = \"n1\"\nstandby = true\nlease_secs = 4\n";
    let config = load_text("cluster-store", with_store).unwrap();
    assert_eq!((config.lease.node.as_str(), config.lease.standby), ("n1", true));
    assert_eq!(config.lease.ttl, Duration::from_secs(4));
    let store = "[store]\nurl = \"postgres://u@h/db\"\n[cluster]\n";
    assert_eq!(invalid_key(load_text("cluster-short", &format!("{store}lease_secs = 1\n"))), "cluster.lease_secs");
    assert_eq!(invalid_key(load_text("cluster-long", &format!("{store}lease_secs = 3601\n"))), "cluster.lease_secs");
    let long_name = format!("{store}node = \"{}\"\n", "n".repeat(201));
    assert_eq!(invalid_key(load_text("cluster-node-long", &long_name)), "cluster.node");
    assert_eq!(invalid_key(load_text("cluster-node-ctl", &format!("{store}node = \"a\\tb\"\n"))), "cluster.node");
    // Empty: the machine's name and the process id.
    let config = load_text("cluster-node-default", &format!("{store}node = \"\"\n")).unwrap();
    assert!(config.lease.node.ends_with(&format!(":{}", std::process::id())), "{}", config.lease.node);
}

#[test]
fn config_cluster_partitions_split_the_state_and_its_nodes_ring_over_nats() {
    assert_eq!(RunConfig::default().server.partitions, confab_proto::server::Partitions::SINGLE);
    assert_eq!(RunConfig::default().mail_poll, Duration::from_secs(1));
    let store = "[store]\nurl = \"postgres://u@h/db\"\n[cluster]\n";
    let config = load_text("split", &format!("{store}partitions = 4\nmail_poll_ms = 250\n")).unwrap();
    assert_eq!((config.server.partitions.index, config.server.partitions.count), (0, 4));
    assert_eq!(config.mail_poll, Duration::from_millis(250));
    for (name, text) in [
        ("split-0", format!("{store}partitions = 0\n")),
        ("split-53", format!("{store}partitions = 53\n")),
        ("split-standby", format!("{store}partitions = 4\nstandby = true\n")),
    ] {
        assert_eq!(invalid_key(load_text(name, &text)), "cluster.partitions", "{text}");
    }
    // A split state's nodes ring each other's doorbells over NATS.
    let rung = load_text("split-nats", &format!("{store}partitions = 4\nnats = \"nats://127.0.0.1:4222\"\n")).unwrap();
    assert_eq!(rung.relay.map(|r| r.url).as_deref(), Some("nats://127.0.0.1:4222"));
    assert_eq!(invalid_key(load_text("split-poll", &format!("{store}mail_poll_ms = 5\n"))), "cluster.mail_poll_ms");
    // Without a store, a split state would have nowhere to keep its mail.
    assert_eq!(invalid_key(load_text("split-sqlite", "[cluster]\npartitions = 4\n")), "cluster");
}

#[test]
fn config_cluster_relay_keys() {
    let store = "[store]\nurl = \"postgres://u@h/db\"\n[cluster]\nnode = \"n1\"\n";
    // No NATS: no relay.
    assert_eq!(load_text("relay-none", store).unwrap().relay, None);
    let config =
        load_text("relay-on", &format!("{store}nats = \"nats://127.0.0.1:4222\"\nname = \"prod-1\"\n")).unwrap();
    let relay = config.relay.expect("a relay");
    assert_eq!(
        (relay.url.as_str(), relay.cluster.as_str(), relay.node.as_str()),
        ("nats://127.0.0.1:4222", "prod-1", "n1")
    );
    // --nats sets it too, with the default cluster name.
    let flags = RunFlags {
        store: Some("postgres://u@h/db".into()),
        nats: Some("tls://nats.example:4222".into()),
        ..RunFlags::default()
    };
    let relay = RunConfig::load(None, &no_env, &flags).unwrap().relay.expect("a relay");
    assert_eq!((relay.url.as_str(), relay.cluster.as_str()), ("tls://nats.example:4222", "confab"));
    // A NATS without a store would relay to nobody.
    let flags = RunFlags { nats: Some("nats://127.0.0.1:4222".into()), ..RunFlags::default() };
    assert!(matches!(RunConfig::load(None, &no_env, &flags), Err(ConfigError::Invalid { key: "cluster", .. })));
    let bad = |name: &str, text: &str| invalid_key(load_text(name, &format!("{store}{text}")));
    assert_eq!(bad("relay-scheme", "nats = \"http://127.0.0.1:4222\"\n"), "cluster.nats");
    assert_eq!(bad("relay-name-dot", "name = \"a.b\"\n"), "cluster.name");
    assert_eq!(bad("relay-name-empty", "name = \"\"\n"), "cluster.name");
    assert_eq!(bad("relay-name-long", &format!("name = \"{}\"\n", "x".repeat(65))), "cluster.name");
}
