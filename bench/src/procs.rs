//! A `confab-server` process for the memory examples (`drip_memory`,
//! `scale_memory`): started from the release build beside the example,
//! with a configuration file in a scratch directory, and the resident set
//! size of a process read from `/proc/PID/status`. Linux only.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use confab_transports::tls::Pin;

/// The resident set size of process `pid`, in KiB (`VmRSS`).
///
/// # Panics
/// The process does not exist or its status has no `VmRSS` line.
#[must_use]
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits 2 s for the allocator and the kernel to settle, then reads the RSS.
#[must_use]
pub fn settled_rss(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_secs(2));
    rss_kib(pid)
}

/// A running `confab-server`, killed and its directory removed on drop.
pub struct ServerProcess {
    /// The process.
    pub child: Child,
    /// Its TCP+TLS address.
    pub tcp: SocketAddr,
    /// Its certificate's pin.
    pub pin: Pin,
    dir: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServerProcess {
    /// Starts `confab-server` (the binary two levels above this executable:
    /// `target/release/confab-server` for `target/release/examples/NAME`)
    /// on an ephemeral loopback port with a data directory in a scratch
    /// directory; `config` is appended to the file after `data` and
    /// `listen` (top-level keys first, then sections).
    ///
    /// # Panics
    /// The binary is missing or does not print its address and pin.
    #[must_use]
    pub fn start(name: &str, config: &str) -> ServerProcess {
        let exe = std::env::current_exe().expect("current exe");
        let bin = exe.parent().and_then(|p| p.parent()).expect("target dir").join("confab-server");
        let dir = std::env::temp_dir().join(format!("confab-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("confab-server.toml");
        let text = format!("data = {:?}\nlisten = \"127.0.0.1:0\"\n{config}", dir.join("data"));
        std::fs::write(&path, text).expect("config");
        let mut child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with --release first)", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut tcp, mut pin) = (None, None);
        while tcp.is_none() || pin.is_none() {
            let line = lines.next().expect("the server's stdout").expect("a line");
            if let Some(rest) = line.strip_prefix("confab-server listening: tcp ") {
                tcp = rest.split(',').next().and_then(|a| a.parse().ok());
            } else if let Some(p) = line.strip_prefix("pin ") {
                pin = p.parse().ok();
            }
        }
        // Keep reading, so that a later line does not find the pipe closed.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, tcp: tcp.expect("tcp address"), pin: pin.expect("pin"), dir }
    }

    /// The server's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
