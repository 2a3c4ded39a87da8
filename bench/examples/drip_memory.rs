//! The server's memory under drip-feeding connections (issue 12, item 3):
//! starts a `confab-server` process, opens N TLS connections that each
//! start a frame declaring 1 MiB and then drip it, and reads the server's
//! resident set size (`VmRSS` in `/proc/PID/status`) at each step.
//!
//! ```text
//! cargo build --release -p confab-server -p confab-bench --example drip_memory
//! target/release/examples/drip_memory [N] [M]
//! ```
//!
//! N connections (default 2,000) go through three steps: handshake only
//! (the TLS cost of an idle connection), then 100 bytes of a frame that
//! declares 1 MiB (a drip-feeder), then one more byte each second for 5 s.
//! Then M of them (default 200) send all but the last byte of their 1 MiB
//! frame: the worst case a connection can hold at the default limits.
//! Per-connection figures are the RSS differences divided by the count,
//! extrapolated to the 10,000-connection limit. The server runs with
//! `frame_grace_secs = 3600` so that no drip is closed while it is measured.
//! Linux only. Not a test: run it by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_bench::procs::{ServerProcess, settled_rss};
use confab_transports::link::Link;
use confab_transports::tcp::{self, TcpLink};
use confab_transports::tls::{self, ClientTrust};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2_000, |a| a.parse().expect("N"));
    let m: usize = args.next().map_or(200, |a| a.parse().expect("M")).min(n);
    let server = ServerProcess::start("drip", "max_connections = 10000\n[server]\nframe_grace_secs = 3600\n");
    let pid = server.pid();
    let config = Arc::new(tls::client_config(&ClientTrust::Pin(server.pin)).expect("client config"));
    let base = settled_rss(pid);
    println!("server pid {pid}, RSS at start {base} KiB");

    let started = Instant::now();
    let mut links: Vec<TcpLink> = (0..n)
        .map(|_| {
            tcp::connect(server.tcp, tls::server_name("localhost"), Arc::clone(&config), Duration::from_secs(10))
                .expect("connect")
        })
        .collect();
    let idle = settled_rss(pid);
    println!("{n} TLS connections open in {:?}: RSS {idle} KiB", started.elapsed());

    let mut head = vec![1u8, 2, 0, 0, 0, 0];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.resize(head.len() + 100, 0);
    for link in &mut links {
        link.send(&head).expect("send");
    }
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        for link in &mut links {
            link.send(&[0]).expect("drip");
        }
    }
    let drip = settled_rss(pid);
    println!("each dripping a frame declaring 1 MiB (119 bytes sent): RSS {drip} KiB");

    let rest = vec![0u8; (1 << 20) + 14 - 119 - 1];
    for link in links.iter_mut().take(m) {
        link.send(&rest).expect("send");
    }
    let full = settled_rss(pid);
    println!("{m} of them holding 1 MiB - 1 byte of their frame: RSS {full} KiB");

    let per_idle = (idle.saturating_sub(base)) as f64 / n as f64;
    let per_drip = (drip.saturating_sub(base)) as f64 / n as f64;
    let per_full = (full.saturating_sub(drip)) as f64 / m as f64 + per_drip;
    println!(
        "per connection: idle TLS {per_idle:.1} KiB, drip-feeder {per_drip:.1} KiB, full partial frame {per_full:.1} KiB"
    );
    println!(
        "at 10,000 connections: idle {:.0} MiB, drip-feeders {:.0} MiB, full partial frames {:.0} MiB (plus {} MiB at start)",
        per_idle * 10_000.0 / 1024.0,
        per_drip * 10_000.0 / 1024.0,
        per_full * 10_000.0 / 1024.0,
        base / 1024
    );
    drop(links);
}
