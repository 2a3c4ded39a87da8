//! A NATS server of a test's own: `nats-server` on a free loopback port,
//! killed when dropped, so that nothing depends on a service left running
//! and parallel runs never collide. Without the binary (Debian's
//! `nats-server` package) [`TempNats::start`] returns `None` after saying
//! the test is skipped, unless `CONFAB_REQUIRE_CLUSTER=1` (set by
//! `.ci/run`), which makes it a failure.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::free_port;

/// A running `nats-server` (no authentication, loopback only).
#[derive(Debug)]
pub struct TempNats {
    bin: &'static str,
    port: u16,
    child: Option<Child>,
}

impl TempNats {
    /// Starts one, or `None` (skipped) without `nats-server`.
    ///
    /// # Panics
    /// `nats-server` is missing and `CONFAB_REQUIRE_CLUSTER=1`, or it is
    /// there and does not accept connections within 10 s.
    #[must_use]
    pub fn start(test: &str) -> Option<TempNats> {
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let runs = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let Some(bin) = ["nats-server", "/usr/sbin/nats-server"].into_iter().find(|b| runs(b)) else {
            let why = "nats-server is not installed (Debian: apt-get install nats-server)";
            assert!(std::env::var("CONFAB_REQUIRE_CLUSTER").as_deref() != Ok("1"), "{test}: {why}");
            eprintln!("SKIPPED {test}: {why}; CONFAB_REQUIRE_CLUSTER=1 makes this a failure");
            return None;
        };
        let mut nats = TempNats { bin, port: free_port(), child: None };
        nats.launch();
        Some(nats)
    }

    /// Its URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): every message in flight is lost.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process: a stopped
    /// nats-server keeps its connections open and reads nothing, which is
    /// how a stalled NATS looks to its clients.
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            crate::procs::send_signal(c, signal);
        }
    }

    /// Starts it again on the same port.
    ///
    /// # Panics
    /// It does not accept connections within 10 s.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn launch(&mut self) {
        let child = Command::new(self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not accept connections on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.kill();
    }
}
