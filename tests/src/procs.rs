//! Real processes on real sockets: the `confab-server` and `confab`
//! binaries, started on 127.0.0.1 with ephemeral ports and a temporary
//! data directory, for the end-to-end tests over TCP and QUIC.
//!
//! The binaries are the ones `cargo test` builds beside the test
//! executables (`target/<profile>/`): the server and client packages have
//! integration tests, so cargo builds their binaries for every
//! `cargo test --workspace`. A run that selects only this package builds
//! them on demand, and rebuilds them when a source file is newer (see
//! [`binary`]), once per test process.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A fresh, empty directory under the system's temporary directory,
/// removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name starts with `prefix`.
    ///
    /// # Panics
    /// The directory cannot be made.
    #[must_use]
    pub fn new(prefix: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("confab-{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("make a temporary directory");
        TempDir(path)
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port free on 127.0.0.1 right now (for a server that must keep one
/// address across restarts, or share it between TCP and QUIC).
///
/// # Panics
/// No port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The path of a workspace binary (`confab-server` or `confab`), building
/// it first if it is missing or older than any source file of the crates it
/// is made of (a test must never run a stale binary: `cargo test -p
/// confab-tests` does not rebuild the binaries of other packages).
///
/// # Panics
/// The binary cannot be found or built.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>; a binary
    // (confab-bench) sits in target/<profile> itself.
    let parent = exe.parent().expect("target dir");
    let dir = if parent.file_name().is_some_and(|n| n == "deps") { parent.parent().unwrap_or(parent) } else { parent };
    let dir = dir.to_path_buf();
    let path = dir.join(name);
    let mut checked =
        CHECKED.get_or_init(|| Mutex::new(Vec::new())).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if checked.iter().any(|c| c == name) {
        return path;
    }
    checked.push(name.to_owned());
    let own = if name == "confab" { "client" } else { "server" };
    if is_stale(&path, own) {
        let package = if name == "confab" { "confab-client" } else { "confab-server" };
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", package, "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
    }
    path
}

/// Whether `binary` is missing or older than a source file (`.rs`,
/// `Cargo.toml`) of the crates it is built from (`proto`, `transports` and
/// `own`), or, for the server, than a file of the browser client it embeds
/// (`client/web/static`).
fn is_stale(binary: &Path, own: &str) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else { return true };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let mut stack: Vec<PathBuf> = ["proto", "transports", own].iter().map(|c| root.join(c)).collect();
    stack.push(root.join("Cargo.lock"));
    let embedded = root.join("client/web/static");
    if own == "server" {
        stack.push(embedded.clone());
    }
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if p.file_name().is_some_and(|n| n == "tests" || n == "benches" || n == "target") {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if (p.starts_with(&embedded) || p.extension().is_some_and(|e| e == "rs" || e == "toml" || e == "lock"))
            && meta.modified().is_ok_and(|m| m > built)
        {
            return true;
        }
    }
    false
}

/// A running `confab-server run`, its addresses and pin, and its log.
#[derive(Debug)]
pub struct ServerProc {
    child: Option<Child>,
    /// The TCP address.
    pub tcp: SocketAddr,
    /// The QUIC address.
    pub quic: SocketAddr,
    /// The WebSocket URL it printed (`ws://ADDR/confab`), `-` if none.
    pub ws: String,
    /// The browser client's address it printed (`http://ADDR/`), if any.
    pub web: Option<String>,
    /// The pin it printed.
    pub pin: String,
    /// The data directory.
    pub data: PathBuf,
    log: Arc<Mutex<Vec<u8>>>,
}

impl ServerProc {
    /// Starts a server on 127.0.0.1 ephemeral ports with `data` as its data
    /// directory (and `config`, a TOML file, if given); waits until it listens.
    ///
    /// # Panics
    /// The server does not start within 30 s.
    #[must_use]
    pub fn start(data: &Path, config: Option<&Path>) -> ServerProc {
        ServerProc::start_on(data, config, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// Like [`start`](Self::start) on given addresses (to restart on the same ports).
    ///
    /// # Panics
    /// The server does not start within 30 s.
    #[must_use]
    pub fn start_on(data: &Path, config: Option<&Path>, tcp: &str, quic: &str) -> ServerProc {
        // WebSocket on an ephemeral port: TCP's port + 2 may be another test's.
        let mut args = vec![
            "--tcp-listen".to_owned(),
            tcp.to_owned(),
            "--quic-listen".to_owned(),
            quic.to_owned(),
            "--ws-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        if let Some(c) = config {
            args.push("--config".to_owned());
            args.push(c.display().to_string());
        }
        ServerProc::start_with(data, &args)
    }

    /// `confab-server run --data DATA ARGS...`, waiting until it listens.
    ///
    /// # Panics
    /// The server does not start within 30 s.
    #[must_use]
    pub fn start_with(data: &Path, args: &[String]) -> ServerProc {
        ServerProc::spawn_with(data, args).listening(Duration::from_secs(30))
    }

    /// `confab-server run --data DATA ARGS...`, not waiting: a standby
    /// listens only once it owns the store.
    ///
    /// # Panics
    /// It cannot be spawned.
    #[must_use]
    pub fn spawn_with(data: &Path, args: &[String]) -> Starting {
        let mut cmd = Command::new(binary("confab-server"));
        cmd.arg("run").arg("--data").arg(data).args(args);
        cmd.env("RUST_LOG", "debug").env_remove("CONFAB_DATA").env_remove("CONFAB_LISTEN").env_remove("CONFAB_CONFIG");
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf[..n]);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            // Drained to the end even once nobody waits for lines: a closed
            // pipe would fail the server's next write to stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Starting { child: Some(child), log, lines, data: data.to_path_buf(), addrs: None, pin: None, web: None }
    }

    /// What a user of `transport` passes as `--server`: the TCP or QUIC
    /// address, or the WebSocket URL.
    #[must_use]
    pub fn address(&self, transport: &str) -> String {
        match transport {
            "quic" => self.quic.to_string(),
            "ws" => self.ws.clone(),
            _ => self.tcp.to_string(),
        }
    }

    /// The server's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// Whether its log comes to contain `needle` within 10 s. The log is
    /// read by a thread of its own, so a line the server wrote before its
    /// `listening` line (or before it exited) may not be in [`log`](Self::log)
    /// the moment the test looks: assert on this, not on `log()`, for a line
    /// that must be there.
    #[must_use]
    pub fn logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            send_signal(c, signal);
        }
    }

    /// Waits at most `within` for it to exit on its own: its exit code (`None`: still running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<Option<i32>> {
        wait_child(self.child.as_mut()?, within)
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    ///
    /// # Panics
    /// It does not exit within 15 s.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("confab-server did not stop within 15 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The resident memory of the server process, in KiB (from /proc).
    #[must_use]
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// A `confab-server run` spawned and not listening yet ([`ServerProc::spawn_with`]).
#[derive(Debug)]
pub struct Starting {
    child: Option<Child>,
    log: Arc<Mutex<Vec<u8>>>,
    lines: std::sync::mpsc::Receiver<String>,
    data: PathBuf,
    addrs: Option<(SocketAddr, SocketAddr, String)>,
    pin: Option<String>,
    web: Option<String>,
}

impl Starting {
    /// Waits until it listens.
    ///
    /// # Panics
    /// It does not within `within` (it is killed, and its log shown).
    #[must_use]
    pub fn listening(self, within: Duration) -> ServerProc {
        match self.try_listening(within) {
            Ok(server) => server,
            Err(mut starting) => {
                if let Some(mut c) = starting.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!("confab-server did not start; its log:\n{}", starting.log());
            }
        }
    }

    /// Waits at most `within` for it to listen: the server, or itself still starting.
    ///
    /// # Errors
    /// It does not listen yet.
    pub fn try_listening(mut self, within: Duration) -> Result<ServerProc, Box<Starting>> {
        let deadline = Instant::now() + within;
        while self.addrs.is_none() || self.pin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else { return Err(Box::new(self)) };
            if let Some(rest) = line.strip_prefix("confab-server listening: tcp ") {
                let (tcp, rest) = rest.split_once(", quic ").expect("listening line");
                let (quic, ws) = rest.split_once(", ws ").expect("listening line");
                self.addrs = Some((tcp.parse().expect("tcp addr"), quic.parse().expect("quic addr"), ws.to_owned()));
            } else if let Some(w) = line.strip_prefix("web ") {
                self.web = Some(w.to_owned());
            } else if let Some(p) = line.strip_prefix("pin ") {
                self.pin = Some(p.to_owned());
            }
        }
        let (tcp, quic, ws) = self.addrs.take().expect("addresses");
        Ok(ServerProc {
            child: self.child.take(),
            tcp,
            quic,
            ws,
            web: self.web.take(),
            pin: self.pin.take().expect("pin"),
            data: self.data.clone(),
            log: Arc::clone(&self.log),
        })
    }

    /// Everything it logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// Waits at most `within` for it to exit: its exit code (`None`: still running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<Option<i32>> {
        wait_child(self.child.as_mut()?, within)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`, ...) to `child` with `kill`.
///
/// # Panics
/// `kill` failed (the process is gone, say).
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
}

/// Waits at most `within` for `child` to exit: its exit code (`None`: still running).
fn wait_child(child: &mut Child, within: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.code());
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One user of the `confab` CLI: a profile directory and a transport.
#[derive(Debug, Clone)]
pub struct CliUser {
    /// The profile directory.
    pub profile: PathBuf,
    /// `tcp`, `quic` or `ws`.
    pub transport: &'static str,
    /// `HOST:PORT`, or the WebSocket URL.
    pub server: String,
    /// How the server is trusted: `--pin PIN` (the default) or `--ca FILE`.
    pub trust: Vec<String>,
    /// The account's password, passphrase and the room password, given through the environment.
    pub secrets: [(&'static str, String); 3],
    /// Pass `--switch-server`: the server or its pin is not the one the profile remembers.
    pub switch_server: bool,
}

impl CliUser {
    /// A user of `server` over `transport` with its profile under `dir`.
    #[must_use]
    pub fn new(dir: &Path, name: &str, server: &ServerProc, transport: &'static str) -> CliUser {
        let addr = server.address(transport);
        CliUser {
            profile: dir.join(name),
            transport,
            server: addr,
            trust: vec!["--pin".to_owned(), server.pin.clone()],
            secrets: [
                ("CONFAB_PASSWORD", format!("{name}-password-long-enough")),
                ("CONFAB_PASSPHRASE", "correct horse battery staple".to_owned()),
                ("CONFAB_ROOM_PASSWORD", "room password 1".to_owned()),
            ],
            switch_server: false,
        }
    }

    /// Points the user at a (restarted) server, on other ports: with
    /// `--switch-server`, since the profile remembers the old address.
    pub fn reconnect_to(&mut self, server: &ServerProc) {
        self.switch_server = true;
        self.server = server.address(self.transport);
        if self.trust.first().is_some_and(|t| t == "--pin") {
            self.trust = vec!["--pin".to_owned(), server.pin.clone()];
        }
    }

    /// Runs `confab --json ARGS` and returns its output (whatever the exit status).
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().expect("run confab")
    }

    /// The `confab --json ARGS` command of this user, not started.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare(&[]);
        cmd.arg("--server").arg(&self.server).args(&self.trust);
        if self.switch_server {
            cmd.arg("--switch-server");
        }
        cmd.args(args);
        cmd
    }

    /// `confab --json --transport T --profile DIR ARGS`: no server, no pin
    /// (those the profile remembers), not started.
    #[must_use]
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary("confab"));
        cmd.arg("--json").args(["--transport", self.transport]).arg("--profile").arg(&self.profile).args(args);
        for (k, v) in &self.secrets {
            cmd.env(k, v);
        }
        for k in ["CONFAB_SERVER", "CONFAB_TRANSPORT", "CONFAB_PIN", "CONFAB_PROFILE"] {
            cmd.env_remove(k);
        }
        cmd
    }

    /// Runs `confab --json ARGS`, which must succeed; returns stdout.
    ///
    /// # Panics
    /// The command failed.
    #[must_use]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "confab {args:?} ({}) failed with {}:\nstdout: {stdout}\nstderr: {}",
            self.transport,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// A running `confab --json listen` (or any long-running command), its
/// standard output collected line by line.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    /// Starts `cmd` with its output captured.
    ///
    /// # Panics
    /// It cannot be started.
    #[must_use]
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(&buf);
        });
        Running { child: Some(child), lines, stderr }
    }

    /// The lines printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until a printed line contains `needle` (true), or `timeout` passes (false).
    #[must_use]
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l.contains(needle)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The exit code once it exited within `timeout` (`None`: still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Let the readers take the last bytes.
                thread::sleep(Duration::from_millis(100));
                return Some(status.code());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it wrote on standard error (complete once it exited).
    #[must_use]
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned()
    }

    /// SIGKILL (if still running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the directory `from` to `to` (recursively), as a user copying a
/// profile to another device would.
///
/// # Panics
/// A file cannot be copied.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make the copy's directory");
    for e in std::fs::read_dir(from).expect("read the directory").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy a file");
        }
    }
}

/// Every file under `dir`, recursively, with its bytes.
#[must_use]
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
#[must_use]
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
