//! The server's memory at scale (issue 13, item 7): starts a
//! `confab-server` process, logs in N idle sessions, then puts them in
//! rooms of 100 members, and reads the server's resident set size
//! (`VmRSS`) at each step; with the `peers` feature, the same run then
//! opens N idle connections to nats-server (plaintext, then TLS) and reads
//! its RSS the same way.
//!
//! ```text
//! cargo build --release -p confab-server
//! cargo build --release -p confab-bench --features peers --example scale_memory
//! target/release/examples/scale_memory [N]
//! ```
//!
//! N (default 10,000, a multiple of 100) accounts register and log in over
//! TCP+TLS, one connection each, held by child processes of this example
//! (each link has its socket and its own epoll instance: 2 descriptors,
//! so one process holds at most [`PER_CHILD`] of them under a 20,000-fd
//! limit). The sessions stay idle: the server runs with a keepalive of one
//! hour, so that the clients, which do not read while idle, are not
//! closed while measured. Then member `i` joins room `i / 100` (the first
//! of each hundred creates it): N / 100 rooms of 100 members.
//!
//! Password hashing uses argon2's cheapest parameters
//! (`HashParams::INSECURE_FAST`, set in `[argon2]`) so that N logins take
//! seconds, not hours; a session keeps no hash buffer (the argon2 workers
//! release theirs when idle), so its memory does not depend on the cost.
//!
//! Per-session and per-member figures are RSS differences divided by N.
//! Linux only. Not a test: run it by hand.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_bench::driver::{Peer, now};
use confab_bench::procs::{ServerProcess, settled_rss};
use confab_proto::ClientEvent;
use confab_transports::tcp;
use confab_transports::tls::{self, ClientTrust, Pin};

/// Connections one child process holds (2 descriptors each).
const PER_CHILD: usize = 2_500;
/// Members per room.
const ROOM_SIZE: usize = 100;
const PASSWORD: &str = "scale password 0123";
const PASSPHRASE: &str = "scale quiet river stone";
const VERIFIER: &[u8] = b"scale-room-verifier-0123456789ab";
const DESCRIPTOR: &[u8] = b"scale-room-descriptor";
const DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hold") {
        hold(&args[1..]);
        return;
    }
    let n: usize = args.first().map_or(10_000, |a| a.parse().expect("N"));
    assert!(n > 0 && n.is_multiple_of(ROOM_SIZE), "N must be a positive multiple of {ROOM_SIZE}");
    let server = ServerProcess::start(
        "scale",
        &format!(
            "max_connections = {c}\n[server]\nmax_sessions = {c}\nlogin_source_burst = 4294967295\n\
             keepalive_interval_secs = 3600\nidle_timeout_secs = 7200\n\
             [argon2]\nm_cost_kib = 8\nt_cost = 1\np_cost = 1\n[tcp]\nmax_handshaking_per_source = 1000\n",
            c = n + 100
        ),
    );
    let pid = server.pid();
    let base = settled_rss(pid);
    println!("confab-server pid {pid}, RSS at start {base} KiB");

    let started = Instant::now();
    let mut children: Vec<Holder> = (0..n)
        .step_by(PER_CHILD)
        .map(|first| Holder::spawn(server.tcp, server.pin, first, PER_CHILD.min(n - first)))
        .collect();
    for c in &mut children {
        c.expect("ready");
    }
    let sessions = settled_rss(pid);
    println!("{n} sessions logged in, idle, in {:.1?}: RSS {sessions} KiB", started.elapsed());

    let started = Instant::now();
    for c in &mut children {
        c.send("join");
    }
    for c in &mut children {
        c.expect("joined");
    }
    let rooms = settled_rss(pid);
    println!("{} rooms of {ROOM_SIZE} members, joined in {:.1?}: RSS {rooms} KiB", n / ROOM_SIZE, started.elapsed());

    let per_session = sessions.saturating_sub(base) as f64 / n as f64;
    let per_member = rooms.saturating_sub(sessions) as f64 / n as f64;
    println!(
        "confab: per idle logged-in session {per_session:.1} KiB; per room member {per_member:.1} KiB more \
         ({:.1} KiB per member with its session)",
        per_session + per_member
    );
    drop(children);
    drop(server);

    #[cfg(feature = "peers")]
    nats::measure(n);
    #[cfg(not(feature = "peers"))]
    println!("(build with --features peers for NATS's figure)");
}

/// A child process holding a share of the sessions.
struct Holder {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Holder {
    fn spawn(addr: SocketAddr, pin: Pin, first: usize, count: usize) -> Holder {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args(["hold", &addr.to_string(), &pin.to_string(), &first.to_string(), &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a holder");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Holder { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to a holder");
    }

    fn expect(&mut self, what: &str) {
        let line = self.lines.next().expect("a holder exited").expect("a line");
        assert_eq!(line, what, "a holder failed");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child: logs in accounts `first..first + count`, prints `ready`;
/// on `join` joins their rooms and prints `joined`; exits when its stdin closes.
fn hold(args: &[String]) {
    let addr: SocketAddr = args[0].parse().expect("address");
    let pin: Pin = args[1].parse().expect("pin");
    let first: usize = args[2].parse().expect("first");
    let count: usize = args[3].parse().expect("count");
    let config = Arc::new(tls::client_config(&ClientTrust::Pin(pin)).expect("client config"));
    let mut peers = Vec::with_capacity(count);
    for i in first..first + count {
        let link = tcp::connect(addr, tls::server_name("localhost"), Arc::clone(&config), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {i}: {e}"));
        let mut peer = Peer::new(Box::new(link), confab_proto::ClientConfig::default().ack_delay)
            .unwrap_or_else(|e| panic!("account {i}: {e}"));
        let deadline = Instant::now() + DEADLINE;
        let name = format!("scale{i}");
        let key = Bytes::from(format!("scale-identity-key-of-{name}"));
        let id = peer.client().register(now(), &name, PASSWORD, PASSPHRASE, key).expect("register");
        peer.outcome(deadline, id, "register").unwrap_or_else(|e| panic!("account {i}: {e}"));
        let id = peer.client().login(now(), &name, PASSWORD, PASSPHRASE).expect("login");
        peer.wait_for(deadline, "login", |e| match e {
            ClientEvent::LoggedIn { request_id, .. } if *request_id == id => Some(()),
            ClientEvent::Failed { request_id, code, reason, .. } if *request_id == id => {
                panic!("login {i} failed: {code} {reason}")
            }
            _ => None,
        })
        .unwrap_or_else(|e| panic!("account {i}: {e}"));
        peer.wait_for(deadline, "connected", |e| matches!(e, ClientEvent::Connected { .. }).then_some(()))
            .unwrap_or_else(|e| panic!("account {i}: {e}"));
        peer.events().clear();
        peers.push(peer);
    }
    println!("ready");
    let mut stdin = std::io::stdin().lock().lines();
    while let Some(Ok(line)) = stdin.next() {
        if line == "join" {
            for (k, peer) in peers.iter_mut().enumerate() {
                let i = first + k;
                let room = format!("scale-room-{}", i / ROOM_SIZE);
                let deadline = Instant::now() + DEADLINE;
                if i.is_multiple_of(ROOM_SIZE) {
                    let id = peer
                        .client()
                        .create_room(now(), &room, Bytes::from_static(VERIFIER), Bytes::from_static(DESCRIPTOR))
                        .expect("create_room");
                    peer.outcome(deadline, id, "create_room").unwrap_or_else(|e| panic!("account {i}: {e}"));
                }
                let id = peer.client().join_room(now(), &room, Bytes::from_static(VERIFIER)).expect("join_room");
                peer.outcome(deadline, id, "join_room").unwrap_or_else(|e| panic!("account {i}: {e}"));
                peer.events().clear();
            }
            println!("joined");
        }
    }
    drop(peers);
}

/// nats-server's RSS with N idle connections, plaintext and TLS.
#[cfg(feature = "peers")]
mod nats {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use std::sync::Arc;
    use std::time::Instant;

    use confab_bench::peers::Brokers;
    use confab_bench::procs::settled_rss;

    /// Reads one protocol line (up to `\r\n`).
    fn line(r: &mut impl BufRead) -> String {
        let mut s = String::new();
        r.read_line(&mut s).expect("read from nats-server");
        s
    }

    /// Connects, reads INFO, (TLS: upgrades), sends CONNECT and PING, waits for PONG.
    fn connect(port: u16, tls: Option<&Arc<rustls::ClientConfig>>) -> Box<dyn Read + Send> {
        let sock = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to nats-server");
        sock.set_nodelay(true).expect("nodelay");
        let mut plain = BufReader::new(sock);
        let info = line(&mut plain);
        assert!(info.starts_with("INFO "), "nats-server said {info:?}");
        let hello = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";
        let mut stream: Box<dyn ReadWrite> = match tls {
            None => Box::new(plain.into_inner()),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(Arc::clone(config), name).expect("TLS");
                Box::new(rustls::StreamOwned::new(conn, plain.into_inner()))
            }
        };
        stream.write_all(hello).expect("CONNECT");
        stream.flush().expect("flush");
        let mut r = BufReader::new(stream);
        loop {
            let l = line(&mut r);
            if l.starts_with("PONG") {
                break;
            }
            assert!(!l.starts_with("-ERR"), "nats-server refused: {l}");
        }
        Box::new(r)
    }

    trait ReadWrite: Read + Write + Send {}
    impl<T: Read + Write + Send> ReadWrite for T {}

    pub(super) fn measure(n: usize) {
        let brokers = Brokers::start().expect("start the brokers");
        let tls = Arc::new(brokers.tls_client().expect("TLS client"));
        let pids = brokers.pids();
        for (name, port, config) in [("nats", brokers.nats, None), ("nats-tls", brokers.nats_tls, Some(&tls))] {
            let pid = pids.iter().find(|(n, _)| *n == name).expect("nats pid").1;
            let base = settled_rss(pid);
            let started = Instant::now();
            let conns: Vec<_> = (0..n).map(|_| connect(port, config)).collect();
            let rss = settled_rss(pid);
            println!(
                "{name} pid {pid}: RSS {base} KiB at start, {rss} KiB with {n} idle connections (opened in {:.1?}): \
                 {:.1} KiB per connection",
                started.elapsed(),
                rss.saturating_sub(base) as f64 / n as f64
            );
            drop(conns);
        }
        brokers.stop();
    }
}
