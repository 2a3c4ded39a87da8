//! A real `confab_proto::Server` in-process behind a test-only [`Link`],
//! on a virtual clock, and an [`Env`] builder: the CLI logic runs exactly as
//! in the binary, minus sockets, terminal and OS randomness.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_client::commands::Env;
use confab_client::connect::{ConnectError, Connector};
use confab_client::output::Output;
use confab_client::proto::e2e::{IdentityKey, fixtures};
use confab_client::proto::server::{Action, CodeConfig, HashParams};
use confab_client::proto::{ClientConfig, Ephemeral, Now, Server, ServerConfig, SessionId};
use confab_client::secrets::{Fixed, Secret};
use confab_client::session::Clock;
use confab_transports::link::Link;

pub const PASSWORD: &str = "correct horse battery";
pub const PASSPHRASE: &str = "apple river stone";
pub const SERVER: &str = "127.0.0.1:7700";

/// The server and what it has to say to each session.
pub struct Hub {
    pub server: Server,
    inbound: HashMap<SessionId, Vec<u8>>,
    closed: Vec<SessionId>,
    now: Now,
}

impl Hub {
    /// Runs the server until it is quiet: argon2 jobs inline, frames into the sessions' buffers.
    fn drain(&mut self) {
        loop {
            let mut turn = self.server.drain();
            let quiet = turn.is_empty();
            for job in turn.take_jobs() {
                let result = job.run();
                self.server.handle_work(self.now, result);
            }
            let Ok(committed) = turn.commit(&mut Ephemeral);
            for action in committed {
                match action {
                    Action::Transmit { session, bytes } if !self.closed.contains(&session) => {
                        self.inbound.entry(session).or_default().extend_from_slice(&bytes);
                    }
                    Action::Close { session, .. } => self.closed.push(session),
                    _ => {}
                }
            }
            if quiet {
                return;
            }
        }
    }
}

/// The test world: one server, one virtual clock, one data directory.
#[derive(Clone)]
pub struct World {
    pub hub: Arc<Mutex<Hub>>,
    pub time: Arc<Mutex<Now>>,
    pub data: PathBuf,
    /// Commands run so far: each is a new process, with randomness of its own.
    runs: Arc<std::sync::atomic::AtomicU64>,
}

impl World {
    pub fn new(name: &str) -> World {
        let now = Now::new(Instant::now(), 1_700_000_000_000);
        let config = ServerConfig {
            hash_params: HashParams::INSECURE_FAST,
            codes: Some(CodeConfig::default()),
            ..ServerConfig::default()
        };
        let server = Server::new(config, [7; 32], now).expect("a valid configuration");
        let hub = Hub { server, inbound: HashMap::new(), closed: Vec::new(), now };
        let data = std::env::temp_dir().join(format!("confab-cli-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        World { hub: Arc::new(Mutex::new(hub)), time: Arc::new(Mutex::new(now)), data, runs: Default::default() }
    }

    /// Moves the virtual clock (and the server's timers) forward.
    pub fn advance(&self, d: Duration) {
        let now = {
            let mut t = self.time.lock().unwrap();
            *t = t.advance(d);
            *t
        };
        let mut hub = self.hub.lock().unwrap();
        hub.now = now;
        hub.server.handle_timeout(now);
        hub.drain();
    }

    /// Every call moves the clock by 1 ms, so deadlines always come.
    pub fn clock(&self) -> Clock {
        let time = self.time.clone();
        Arc::new(move || {
            let mut t = time.lock().unwrap();
            *t = t.advance(Duration::from_millis(1));
            *t
        })
    }

    /// Runs one command as `user` ("a new process"): returns its exit code and JSON lines.
    pub fn run(
        &self,
        user: Option<&str>,
        room_password: Option<&str>,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, Vec<serde_json::Value>) {
        let mut connector = TestConnector { world: self.clone() };
        self.run_via(&mut connector, user, room_password, command)
    }

    /// [`World::run`] with another connector.
    pub fn run_via(
        &self,
        connector: &mut dyn Connector,
        user: Option<&str>,
        room_password: Option<&str>,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, Vec<serde_json::Value>) {
        let mut map =
            HashMap::from([(Secret::Password, PASSWORD.to_owned()), (Secret::Passphrase, PASSPHRASE.to_owned())]);
        if let Some(p) = room_password {
            map.insert(Secret::RoomPassword, p.to_owned());
        }
        self.run_secrets(connector, user, map, command)
    }

    /// [`World::run_via`] with these secrets (a wrong passphrase, ...).
    pub fn run_secrets(
        &self,
        connector: &mut dyn Connector,
        user: Option<&str>,
        secrets: HashMap<Secret, String>,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, Vec<serde_json::Value>) {
        let (code, stdout, stderr) = self.run_raw(connector, user, secrets, true, command);
        let lines = stdout
            .split(|b| *b == b'\n')
            .chain(stderr.split(|b| *b == b'\n'))
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("every output line is JSON"))
            .collect();
        (code, lines)
    }

    /// Runs one command as `user` with human output: its exit code, standard output and standard error.
    pub fn run_human(
        &self,
        user: Option<&str>,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, String, String) {
        let secrets =
            HashMap::from([(Secret::Password, PASSWORD.to_owned()), (Secret::Passphrase, PASSPHRASE.to_owned())]);
        let mut connector = self.connector();
        let (code, out, err) = self.run_raw(&mut connector, user, secrets, false, command);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    /// [`World::run_human`] with another connector.
    pub fn run_human_via(
        &self,
        connector: &mut dyn Connector,
        user: Option<&str>,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, String, String) {
        let secrets =
            HashMap::from([(Secret::Password, PASSWORD.to_owned()), (Secret::Passphrase, PASSPHRASE.to_owned())]);
        let (code, out, err) = self.run_raw(connector, user, secrets, false, command);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    fn run_raw(
        &self,
        connector: &mut dyn Connector,
        user: Option<&str>,
        secrets: HashMap<Secret, String>,
        json: bool,
        command: impl FnOnce(&mut Env<'_>, &mut Output<'_>) -> Result<(), confab_client::commands::CliError>,
    ) -> (u8, Vec<u8>, Vec<u8>) {
        let mut secrets = Fixed(secrets);
        let fixture = match user {
            Some("bob") => fixtures::BOB_PKCS8,
            Some("alice") => fixtures::ALICE_PKCS8,
            _ => fixtures::MALLORY_PKCS8,
        };
        // Like the OS's randomness, different in every process (the same
        // seed twice would be a device whose RNG repeats: sealing under a
        // repeated epoch is exactly what a real client never does).
        let run = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut counter = 0u8;
        let mut env = Env {
            connector,
            secrets: &mut secrets,
            clock: self.clock(),
            data_dir: Some(self.data.clone()),
            user: user.map(str::to_owned),
            profile: None,
            config: ClientConfig::default(),
            room_params: HashParams::INSECURE_FAST,
            key_params: HashParams::INSECURE_FAST,
            answer_timeout: Duration::from_secs(5),
            listen_for: Some(Duration::from_millis(50)),
            switch_server: false,
            lent: None,
            new_identity: Box::new(move |_| IdentityKey::from_pkcs8_der(fixture)),
            seed: Box::new(move || {
                counter = counter.wrapping_add(1);
                let mut seed = [counter; 32];
                seed[..8].copy_from_slice(&run.to_be_bytes());
                seed
            }),
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let code = {
            let mut out = Output::new(json, &mut stdout, &mut stderr);
            let result = command(&mut env, &mut out);
            confab_client::commands::finish(result, &mut out)
        };
        (code, stdout, stderr)
    }

    /// A connector to this world's server.
    pub fn connector(&self) -> TestConnector {
        TestConnector { world: self.clone() }
    }

    /// The profile directory of `user`.
    pub fn profile_dir(&self, user: &str) -> PathBuf {
        confab_client::profile::profile_dir(&self.data, user, SERVER)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if Arc::strong_count(&self.hub) == 1 {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

pub struct TestConnector {
    world: World,
}

impl Connector for TestConnector {
    fn connect(&mut self) -> Result<Box<dyn Link>, ConnectError> {
        let now = *self.world.time.lock().unwrap();
        let mut hub = self.world.hub.lock().unwrap();
        hub.now = now;
        let session = hub.server.open_session(now).map_err(|e| ConnectError::Io {
            server: SERVER.into(),
            transport: confab_client::connect::Transport::Tcp,
            source: io::Error::other(e.to_string()),
        })?;
        hub.drain();
        Ok(Box::new(TestLink { hub: self.world.hub.clone(), time: self.world.time.clone(), session, open: true }))
    }

    fn server(&self) -> &str {
        SERVER
    }
}

/// A link to the in-process server: `send` runs the server at once.
pub struct TestLink {
    hub: Arc<Mutex<Hub>>,
    time: Arc<Mutex<Now>>,
    session: SessionId,
    open: bool,
}

impl Link for TestLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let now = *self.time.lock().unwrap();
        let mut hub = self.hub.lock().unwrap();
        if hub.closed.contains(&self.session) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        hub.now = now;
        hub.server.handle_input(now, self.session, bytes);
        hub.drain();
        Ok(())
    }

    fn recv(&mut self, _deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut hub = self.hub.lock().unwrap();
        hub.drain();
        match hub.inbound.remove(&self.session) {
            Some(bytes) if !bytes.is_empty() => Ok(Some(bytes)),
            _ if hub.closed.contains(&self.session) => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(None),
        }
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            let now = *self.time.lock().unwrap();
            let mut hub = self.hub.lock().unwrap();
            hub.server.close_session(now, self.session);
            hub.inbound.remove(&self.session);
            hub.closed.push(self.session);
            hub.drain();
        }
    }

    fn transport(&self) -> &'static str {
        "mem"
    }
}

impl Drop for TestLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// The lines of a command that must have succeeded (exit 0).
///
/// # Panics
/// It did not.
pub fn ok((code, lines): (u8, Vec<serde_json::Value>)) -> Vec<serde_json::Value> {
    assert_eq!(code, confab_client::commands::exit::OK, "{lines:#?}");
    lines
}

/// The `text` of every line of `kind`.
pub fn texts(lines: &[serde_json::Value], kind: &str) -> Vec<String> {
    of_kind(lines, kind).iter().map(|l| l["text"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The lines of `kind`.
pub fn of_kind<'a>(lines: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
