//! The argon2 workers' memory, measured on the real `confab-server` binary
//! (issue 12, item 6): a burst of parallel registrations with the default
//! (OWASP) parameters over TCP+TLS, the server's resident memory sampled
//! from /proc during the burst and after it.
//!
//! What must hold (docs/ARCHITECTURE.md, "The server process": the argon2
//! workers):
//!
//! - during the burst the hashing memory stays within one buffer per worker
//!   (workers x m_cost): the server's RSS stays below its base plus
//!   `workers` x 19 MiB plus [`BURST_SLACK`];
//! - after the burst each worker gives its buffer back to the operating
//!   system once it has been idle for `IDLE_RELEASE` (2 s): the RSS falls
//!   back to within [`AFTER_SLACK`] of its base within [`RELEASE_WITHIN`].
//!
//! This file holds one test so that nothing else runs in its process while
//! it measures (the server is a separate process anyway).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_proto::wire::{FrameDecoder, Limits, Message, Register, Request, Status};
use confab_tests::procs::{ServerProc, TempDir};
use confab_transports::link::Link;
use confab_transports::tcp;
use confab_transports::tls::{self, ClientTrust, Pin};

/// Parallel registrations in the burst: two OWASP hashes each, many more
/// than the server has workers, so every worker hashes several times in a
/// row (the pattern that used to leave a buffer per hash in the allocator).
const BURST: usize = 12;

/// The default `[argon2] m_cost_kib` (OWASP): 19 MiB.
const M_COST_KIB: u64 = 19 * 1024;

/// Room above base + workers x m_cost during the burst: the burst's TLS
/// connections (about 100 KiB each with rustls' buffers), the frames and
/// the jobs queued, and the allocator's own bookkeeping. Main used to exceed
/// the bound by one 19 MiB block per hash that a worker's arena kept.
const BURST_SLACK_KIB: u64 = 16 * 1024;

/// How far above its base the RSS may stay once the workers are idle: the
/// accounts registered, the allocator's caches of small blocks, pages
/// touched by the TLS connections that are freed but not trimmed. Far below
/// one argon2 buffer (19 MiB), so a single buffer kept fails the test.
const AFTER_SLACK_KIB: u64 = 8 * 1024;

/// The server releases a worker's buffer after 2 s idle; a loaded machine
/// may schedule the idle worker late, hence the margin.
const RELEASE_WITHIN: Duration = Duration::from_secs(20);

/// The server's worker count: the same rule as `NodeConfig::new`
/// (available parallelism, 1 to 4), evaluated on the same machine.
fn workers() -> u64 {
    thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4) as u64
}

fn tls_link(server: &ServerProc) -> Box<dyn Link> {
    let pin: Pin = server.pin.parse().expect("pin");
    let config = tls::client_config(&ClientTrust::Pin(pin)).expect("client config");
    let link = tcp::connect(server.tcp, tls::server_name("127.0.0.1"), Arc::new(config), Duration::from_secs(10))
        .expect("connect");
    Box::new(link)
}

/// Registers `name` on `link`; returns the answer's status.
fn register(link: &mut dyn Link, name: &str) -> Status {
    let body = Register {
        username: name.into(),
        password: format!("{name}-password-long-enough"),
        passphrase: "correct horse battery staple".into(),
        identity_key: Bytes::from(format!("idkey-{name}")),
    };
    let msg = Message::Request(Request { request_id: 1, timestamp_ms: 0, body: body.into() });
    link.send(&msg.to_bytes(&[])).expect("send register");
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Ok(Message::Response(r)) = Message::decode(&frame, &limits) {
                return r.status;
            }
        }
        match link.recv(deadline) {
            Ok(Some(bytes)) => decoder.push(&bytes),
            other => panic!("no answer to register {name}: {other:?}"),
        }
    }
}

#[test]
fn hashing_memory_is_bounded_by_the_workers_and_given_back_after_a_burst() {
    let dir = TempDir::new("hash-memory");
    let server = ServerProc::start(&dir.path().join("data"), None);
    // The base: the server after one registration over TLS (its first hash
    // and first connection paid for), idle long enough to give back its buffer.
    let mut warm = tls_link(&server);
    assert_eq!(register(warm.as_mut(), "warmup"), Status::Valid);
    drop(warm);
    thread::sleep(Duration::from_secs(4));
    let base = server.rss_kib().expect("rss");

    let links: Vec<Box<dyn Link>> = (0..BURST).map(|_| tls_link(&server)).collect();
    let sampling = Arc::new(AtomicBool::new(true));
    let pid = server.pid();
    let sampler = {
        let sampling = Arc::clone(&sampling);
        thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = rss_of(pid) {
                    peak = peak.max(kib);
                }
                thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let started = Instant::now();
    let burst: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(i, mut link)| thread::spawn(move || register(link.as_mut(), &format!("burst{i}"))))
        .collect();
    for (i, t) in burst.into_iter().enumerate() {
        assert_eq!(t.join().expect("register thread"), Status::Valid, "burst{i} registered");
    }
    let burst_took = started.elapsed();
    let after_burst = server.rss_kib().expect("rss");
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");

    let bound = base + workers() * M_COST_KIB + BURST_SLACK_KIB;
    eprintln!(
        "base {base} KiB, peak {peak} KiB during {BURST} registrations ({burst_took:?}), {after_burst} KiB right \
         after; bound {bound} KiB ({} workers)",
        workers()
    );
    assert!(
        peak <= bound,
        "the RSS peaked at {peak} KiB during the burst: above base {base} + {} workers x {M_COST_KIB} + \
         {BURST_SLACK_KIB} KiB",
        workers()
    );

    let deadline = Instant::now() + RELEASE_WITHIN;
    let mut now_kib = server.rss_kib().expect("rss");
    while now_kib > base + AFTER_SLACK_KIB && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        now_kib = server.rss_kib().expect("rss");
    }
    eprintln!("{now_kib} KiB {:?} after the burst", started.elapsed() - burst_took);
    assert!(
        now_kib <= base + AFTER_SLACK_KIB,
        "the RSS stayed at {now_kib} KiB {RELEASE_WITHIN:?} after the burst: the argon2 buffers were not given back \
         (base {base} KiB)"
    );
}

/// VmRSS of `pid` in KiB.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
