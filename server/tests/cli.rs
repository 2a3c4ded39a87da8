//! `confab-server jwt verify` against tokens minted by PyJWT with keys confab
//! has never seen (`proto/src/jwt/testdata/`): each verifies, or fails with
//! its exact reason, through the binary; `jwt jwks` prints the keys a real
//! server stored.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;

const FIXTURES: &str = include_str!("../../proto/src/jwt/testdata/pyjwt_fixtures.json");

struct Fixtures {
    doc: Value,
    jwks: PathBuf,
}

impl Fixtures {
    fn load(test: &str) -> Fixtures {
        let doc: Value = serde_json::from_str(FIXTURES).unwrap();
        let jwks = std::env::temp_dir().join(format!("confab-cli-{}-{test}.json", std::process::id()));
        std::fs::write(&jwks, doc["jwks"].to_string()).unwrap();
        Fixtures { doc, jwks }
    }

    fn token(&self, name: &str) -> &str {
        self.doc["tokens"][name].as_str().unwrap()
    }

    fn issuer(&self) -> &str {
        self.doc["issuer"].as_str().unwrap()
    }

    fn iat(&self) -> u64 {
        self.doc["iat"].as_u64().unwrap()
    }

    fn exp(&self) -> u64 {
        self.doc["exp"].as_u64().unwrap()
    }

    fn verify(&self, token: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_confab-server"))
            .args(["jwt", "verify", "--jwks"])
            .arg(&self.jwks)
            .args(extra)
            .arg(token)
            .output()
            .unwrap()
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jwks);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn accepted(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stdout: {} stderr: {}", stdout(out), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rejected(out: &Output, reason: &str) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(out));
    let text = stdout(out);
    assert!(text.contains(reason), "expected {reason:?} in {text:?}");
}

#[test]
fn cli_keycloak_tokens_verify_while_valid() {
    let f = Fixtures::load("valid");
    let at = (f.iat() + 10).to_string();
    for (name, kid) in [("rs256_keycloak_access", "kc-rsa-1"), ("es256_keycloak_access", "kc-ec-1")] {
        let out = f.verify(f.token(name), &["--issuer", f.issuer(), "--audience", "confab", "--now", &at]);
        let doc = accepted(&out);
        assert_eq!(doc["header"]["kid"], kid);
        assert_eq!(doc["claims"]["preferred_username"], "alice");
        assert_eq!(doc["claims"]["azp"], "confab-cli");
        assert_eq!(doc["kind"], "access");
        // Without --issuer and --audience, those claims are not checked.
        let doc = accepted(&f.verify(f.token(name), &["--now", &at]));
        assert_eq!(doc["claims"]["iss"], f.issuer());
        // A refresh token is told apart.
        let refresh = accepted(&f.verify(f.token("es256_phantom_refresh"), &["--now", &at]));
        assert_eq!(refresh["kind"], "refresh");
        assert_eq!(refresh["claims"]["sub"], "bob");
    }
}

#[test]
fn cli_rejections_give_the_exact_reason() {
    let f = Fixtures::load("rejected");
    let token = f.token("rs256_keycloak_access");
    let at = (f.iat() + 10).to_string();
    let late = (f.exp() + 60).to_string();
    rejected(&f.verify(token, &["--now", &late]), &format!("Expired {{ exp: {}, now: {late} }}", f.exp()));
    assert!(f.verify(token, &["--now", &(f.exp() + 59).to_string()]).status.success(), "within the leeway");
    rejected(&f.verify(token, &["--now", &late, "--leeway", "0"]), "Expired");
    let early = (f.iat() - 61).to_string();
    rejected(&f.verify(token, &["--now", &early]), "IssuedInFuture");
    rejected(&f.verify(token, &["--now", &at, "--issuer", "https://idp.example.test/realms/other"]), "WrongIssuer");
    rejected(&f.verify(token, &["--now", &at, "--audience", "game-7"]), "WrongAudience");
    rejected(&f.verify(f.token("rs256_signed_by_stranger"), &["--now", &at]), "BadSignature");
    rejected(&f.verify(f.token("rs256_weak_key"), &["--now", &at]), "UnusableKey");
    rejected(&f.verify(f.token("hs256_with_rsa_public_pem"), &["--now", &at]), "AlgHmac(\"HS256\")");
    let mut tampered = token.to_owned();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    rejected(&f.verify(&tampered, &["--now", &at]), "reason: ");
}

#[test]
fn cli_usage_errors_exit_2() {
    let f = Fixtures::load("usage");
    let out = Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .args(["jwt", "verify", "--jwks", "/nonexistent/jwks.json", "x.y.z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Without --now the current time is used: the binary reads the clock and answers 0 or 1.
    let out = f.verify(f.token("es256_keycloak_access"), &[]);
    assert!(matches!(out.status.code(), Some(0 | 1)));
}

fn jwks(data: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .args(["jwt", "jwks", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("CONFAB_DATA")
        .output()
        .unwrap()
}

#[test]
fn cli_jwks_prints_the_stored_public_keys() {
    use confab_server::store::Store;

    let net = common::scenario();
    let dir = common::TempDir::new("cli-jwks");
    let (mut store, _) = Store::open(&dir.data(), &common::config()).unwrap();
    for turn in &net.turns {
        store.commit(turn).unwrap();
    }
    drop(store);
    let records = net.server.state().accounts().signing_keys();
    assert_eq!(records.len(), 1);

    let at = (net.now.unix_ms / 1000).to_string();
    let out = jwks(&dir.data(), &["--now", &at]);
    let doc = accepted(&out);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], records[0].kid.as_str());
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str(), keys[0]["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(keys[0].get("d").is_none(), "never the private key: {doc}");
    // The document the server publishes, and one `jwt verify` can use.
    let config = confab_proto::jwt::SignerConfig::new("https://confab.test", "game");
    let published = confab_proto::jwt::SigningKeys::restore(config, records).unwrap().jwks_json(net.now.unix_ms / 1000);
    assert_eq!(stdout(&out).trim(), published);
    assert!(confab_proto::jwt::JwkSet::parse(&out.stdout).is_ok_and(|set| set.len() == 1));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // Reading changed nothing: the server opens it again as it left it.
    let (_, state) = Store::open(&dir.data(), &common::config()).unwrap();
    assert_eq!(&state, net.server.state());
}

#[test]
fn cli_jwks_without_keys_or_store() {
    use confab_server::store::Store;

    let dir = common::TempDir::new("cli-jwks-empty");
    // No data directory: an error, and nothing is created.
    let out = jwks(&dir.data(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("no confab data directory at {}", dir.data().display())), "{stderr}");
    assert!(!dir.data().exists());
    // A store whose server never made keys: an empty set, and a note on stderr.
    drop(Store::open(&dir.data(), &common::config()).unwrap());
    let out = jwks(&dir.data(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), r#"{"keys":[]}"#);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no phantom signing keys"));
}

/// A `confab-server run` child, killed on drop.
struct Served {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Served {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "no exit within 15 s of SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL, and waits for the exit.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `confab-server run --data DATA --listen 127.0.0.1:0 EXTRA...`: `Ok` once it
/// listens, `Err((exit code, stderr))` if it exits first.
fn serve(data: &std::path::Path, extra: &[&str]) -> Result<Served, (Option<i32>, String)> {
    use std::io::{BufRead as _, Read as _};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab-server"))
        .args(["run", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("CONFAB_DATA")
        .env_remove("CONFAB_LISTEN")
        .env_remove("CONFAB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (mut pipe, sink) = (child.stderr.take().unwrap(), std::sync::Arc::clone(&stderr));
    let reader = std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(20))
            && line.starts_with("confab-server listening")
        {
            return Ok(Served { child, stderr });
        }
        if let Some(status) = child.try_wait().unwrap() {
            reader.join().unwrap();
            let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
            return Err((status.code(), text));
        }
        assert!(std::time::Instant::now() < deadline, "neither listening nor exited within 30 s");
    }
}

fn log_of(served: &Served) -> String {
    String::from_utf8_lossy(&served.stderr.lock().unwrap()).into_owned()
}

/// Whether the server's log comes to contain `needle` within 10 s: its
/// stderr is read by a thread of its own, so a line written before the
/// `listening` one on stdout may not be in the buffer yet when `serve`
/// returns.
fn log_shows(served: &Served, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_of(served).contains(needle) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// The lock file in a data directory.
const LOCK_FILE: &str = "confab.lock";

/// Item 4 of issue 12: a second server on a data directory in use does not
/// start, and says which process holds it; a read-only admin command still
/// reads the live store.
#[test]
fn cli_second_server_on_one_data_directory_is_refused() {
    let dir = common::TempDir::new("cli-two-servers");
    let first = serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("first start failed ({code:?}): {log}"));
    let Err((code, stderr)) = serve(&dir.data(), &[]) else {
        panic!("a second server started on the same data directory")
    };
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "names the holder's pid: {stderr}");
    assert!(stderr.contains(&dir.data().display().to_string()), "names the directory: {stderr}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.data().join(LOCK_FILE)).unwrap().trim(), first.pid().to_string());
    // A read-only admin command takes no lock: it reads the live store.
    let out = jwks(&dir.data(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    first.stop();
    // Once the holder has stopped, the directory is free.
    serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("restart failed ({code:?}): {log}")).stop();
}

/// The lock dies with its process: the lock file a SIGKILLed server left
/// behind (with its pid in it) does not block the next start.
#[test]
fn cli_lock_file_of_a_killed_server_does_not_block() {
    let dir = common::TempDir::new("cli-stale-lock");
    let first = serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("first start failed ({code:?}): {log}"));
    let dead = first.pid();
    first.kill();
    let lock = dir.data().join(LOCK_FILE);
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), dead.to_string(), "the stale lock file stays");
    let second =
        serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("blocked by a dead holder ({code:?}): {log}"));
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), second.pid().to_string());
    second.stop();
}

/// Item 5 of issue 12: a data directory that was used (it holds the
/// server's pin, certificate and key) and lost its `confab.db`, or holds an
/// empty one, is not a new one: the server refuses to start and says how to
/// recover; `--init` starts it empty, with the same pin.
#[test]
fn cli_lost_database_is_refused_until_init() {
    let dir = common::TempDir::new("cli-lost-db");
    let db = dir.data().join(confab_server::store::DB_FILE);
    let first = serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("first start failed ({code:?}): {log}"));
    first.stop();
    let pin = std::fs::read_to_string(dir.data().join("server.pin")).unwrap();
    for (damage, what) in [("deleted", "missing"), ("0-byte", "empty")] {
        match damage {
            "deleted" => std::fs::remove_file(&db).unwrap(),
            _ => std::fs::write(&db, b"").unwrap(),
        }
        let Err((code, stderr)) = serve(&dir.data(), &[]) else { panic!("started on a {damage} confab.db") };
        assert_eq!(code, Some(1), "{stderr}");
        for needle in [&db.display().to_string(), what, "server.pin", "restore", "--init"] {
            assert!(stderr.contains(needle), "{damage}: expected {needle:?} in: {stderr}");
        }
        assert_eq!(db.exists(), damage == "0-byte", "the refusal created nothing");
    }
    // The explicit first start: an empty store, the same identity.
    let init = serve(&dir.data(), &["--init"]).unwrap_or_else(|(code, log)| panic!("--init failed ({code:?}): {log}"));
    assert!(log_shows(&init, "users=0"), "{}", log_of(&init));
    init.stop();
    assert_eq!(std::fs::read_to_string(dir.data().join("server.pin")).unwrap(), pin);
    // From then on, a plain start.
    serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("restart failed ({code:?}): {log}")).stop();
}

/// The README's first start: no data directory, no flag.
#[test]
fn cli_first_start_in_a_new_directory_needs_no_flag() {
    let dir = common::TempDir::new("cli-fresh");
    let served = serve(&dir.data(), &[]).unwrap_or_else(|(code, log)| panic!("first start failed ({code:?}): {log}"));
    served.stop();
    assert!(dir.data().join(confab_server::store::DB_FILE).is_file());
}
