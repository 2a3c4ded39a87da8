//! Cluster mode over real processes: `confab-server` nodes on one
//! PostgreSQL, one owning the store and the others standing by, as the
//! cluster tests (tests/tests/cluster.rs) and `confab-bench failover` run
//! them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procs::{ServerProc, Starting, free_port};

/// One node: its data directory, configuration and fixed addresses (a
/// standby's must be known before it listens: the clients list them).
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Its name in the lease and the logs.
    pub name: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its TCP address (`127.0.0.1:PORT`).
    pub tcp: String,
    /// Its QUIC address.
    pub quic: String,
}

impl ClusterNode {
    /// A standby node `name` under `dir` on the store `url` with leases of
    /// `lease_secs`; with `cert_of`, it serves that data directory's
    /// certificate (every node serves the same: one pin for all).
    ///
    /// # Panics
    /// The configuration file cannot be written.
    #[must_use]
    pub fn new(dir: &Path, name: &str, url: &str, cert_of: Option<&Path>, lease_secs: u64) -> ClusterNode {
        let data = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        let url = url.replace('\\', "\\\\").replace('"', "\\\"");
        let mut text = format!(
            "[store]\nurl = \"{url}\"\n\n[cluster]\nnode = \"{name}\"\nstandby = true\nlease_secs = {lease_secs}\n"
        );
        if let Some(first) = cert_of {
            text = format!(
                "cert_chain = \"{}\"\nprivate_key = \"{}\"\n{text}",
                first.join("server.crt").display(),
                first.join("server.key").display()
            );
        }
        std::fs::write(&config, text).expect("node config");
        let tcp = format!("127.0.0.1:{}", free_port());
        let quic = format!("127.0.0.1:{}", free_port());
        ClusterNode { name: name.to_owned(), data, config, tcp, quic }
    }

    /// This node relays through the NATS at `url` (`[cluster] nats`): as a
    /// standby, it serves clients as an edge of the owner.
    ///
    /// # Panics
    /// The configuration file cannot be written.
    #[must_use]
    pub fn relaying(self, url: &str) -> ClusterNode {
        let mut text = std::fs::read_to_string(&self.config).expect("node config");
        text.push_str(&format!("nats = \"{url}\"\n"));
        std::fs::write(&self.config, text).expect("node config");
        self
    }

    /// This node serves its share of a state split into `partitions`
    /// (`[cluster] partitions`, no standby: every node of a split state
    /// takes its share), reading mail every `mail_poll_ms`.
    ///
    /// # Panics
    /// The configuration file cannot be written.
    #[must_use]
    pub fn split(self, partitions: u8, mail_poll_ms: u64) -> ClusterNode {
        let text = std::fs::read_to_string(&self.config).expect("node config");
        let text = text.replace("standby = true\n", "")
            + &format!("partitions = {partitions}\nmail_poll_ms = {mail_poll_ms}\n");
        std::fs::write(&self.config, text).expect("node config");
        self
    }

    /// `confab-server run`'s arguments for this node.
    #[must_use]
    pub fn args(&self) -> Vec<String> {
        let config = self.config.display().to_string();
        ["--config", &config, "--tcp-listen", &self.tcp, "--quic-listen", &self.quic, "--ws-listen", "127.0.0.1:0"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Starts it, not waiting for it to listen (a standby does only once it owns the store).
    #[must_use]
    pub fn spawn(&self) -> Starting {
        ServerProc::spawn_with(&self.data, &self.args())
    }

    /// Starts it and waits until it listens (the first node: the store is free).
    #[must_use]
    pub fn start(&self) -> ServerProc {
        ServerProc::start_with(&self.data, &self.args())
    }
}

/// Waits until `starting` (a standby) says it stands by.
///
/// # Panics
/// It does not within 30 s.
pub fn standing_by(starting: &Starting) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !starting.log().contains("standing by") {
        assert!(Instant::now() < deadline, "the node never stood by; its log:\n{}", starting.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a standby started with [`ClusterNode::relaying`] serves as
/// an edge and has heard the owner (it relays connections from then on).
///
/// # Panics
/// It does not within 30 s.
pub fn relaying(starting: &Starting) {
    let deadline = Instant::now() + Duration::from_secs(30);
    // The loop's line, once it serves new connections.
    while !starting.log().contains("accepting=true") {
        assert!(Instant::now() < deadline, "the node never relayed; its log:\n{}", starting.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first of `standbys` to listen (the one that took the store over), and the others.
///
/// # Panics
/// None does within `within`.
#[must_use]
pub fn first_to_listen<K>(mut standbys: Vec<(K, Starting)>, within: Duration) -> ((K, ServerProc), Vec<(K, Starting)>) {
    let deadline = Instant::now() + within;
    loop {
        let mut waiting = Vec::new();
        let mut won = None;
        for (key, s) in standbys.drain(..) {
            if won.is_some() {
                waiting.push((key, s));
                continue;
            }
            match s.try_listening(Duration::from_millis(10)) {
                Ok(server) => won = Some((key, server)),
                Err(s) => waiting.push((key, *s)),
            }
        }
        if let Some(won) = won {
            return (won, waiting);
        }
        assert!(Instant::now() < deadline, "no standby took over within {within:?}");
        standbys = waiting;
    }
}

/// The partitions a split node's `log` says it serves now: each "partition
/// owned" line adds its `partition=N`, each "partition no longer served"
/// line takes it away.
#[must_use]
pub fn served(log: &str) -> std::collections::BTreeSet<u8> {
    let number = |line: &str| {
        let at = line.find(" partition=")? + " partition=".len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u8>().ok()
    };
    let mut served = std::collections::BTreeSet::new();
    for line in log.lines() {
        if line.contains("partition owned") {
            served.extend(number(line));
        } else if line.contains("partition no longer served")
            && let Some(p) = number(line)
        {
            served.remove(&p);
        }
    }
    served
}

/// The DM texts in `lines` (`confab --json` output, `kind: message`).
#[must_use]
pub fn dm_texts(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "message")
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}
