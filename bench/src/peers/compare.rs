//! The side-by-side comparison: every scenario, confab and each
//! like-for-like peer interleaved (confab, peer, confab, peer, ..., confab),
//! and one table of ratios against the mean of the two confab runs around
//! each peer run, so that machine noise hits both sides.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{Brokers, PeerKind};
use crate::{BenchConfig, BenchError, Mode, Report, Scenario, StoreKind, Transport};

/// What [`compare`] runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Measured window of each run.
    pub duration: Duration,
    /// Warmup of each run.
    pub warmup: Duration,
    /// Fixed-rate scenario: messages per second.
    pub rate: u64,
    /// Room scenario: members (one sends).
    pub room: usize,
    /// Only these peers (all when empty).
    pub only: Vec<PeerKind>,
    /// Every run's JSON object, one per line, also goes here.
    pub json: Option<PathBuf>,
    /// Rounds of each scenario: every pair is measured this many times,
    /// interleaved, and the table shows medians.
    pub repeat: usize,
    /// Only these scenarios ([`SCENARIOS`]; all when empty).
    pub scenarios: Vec<String>,
    /// confab's transport (the peers always run over TCP).
    pub transport: Transport,
    /// With [`Transport::Ws`]: confab's WebSocket listener speaks TLS (`wss://`).
    pub ws_tls: bool,
}

/// The scenarios' short names, in the order they run: 1:1 window 1, 1:1
/// window 16, 1:1 at a fixed rate, room fan-out.
pub const SCENARIOS: [&str; 4] = ["w1", "w16", "rate", "room"];

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            rate: 5000,
            room: 100,
            only: Vec::new(),
            json: None,
            repeat: 1,
            scenarios: Vec::new(),
            transport: Transport::Tcp,
            ws_tls: false,
        }
    }
}

/// The scenarios of the comparison: name and configuration (1 KiB payloads).
fn scenarios(o: &CompareOptions) -> Vec<(String, BenchConfig)> {
    let base = BenchConfig {
        transport: o.transport,
        ws_tls: o.ws_tls,
        payload: 1024,
        duration: o.duration,
        warmup: o.warmup,
        ..BenchConfig::default()
    };
    let all = vec![
        ("1:1 window 1".into(), BenchConfig { window: 1, ..base.clone() }),
        ("1:1 window 16".into(), BenchConfig { window: 16, ..base.clone() }),
        (format!("1:1 fixed {}/s", o.rate), BenchConfig { mode: Mode::Rate, rate: Some(o.rate), ..base.clone() }),
        (format!("room 1->{}", o.room - 1), BenchConfig { scenario: Scenario::Room, receivers: o.room, ..base }),
    ];
    SCENARIOS
        .iter()
        .zip(all)
        .filter(|(short, _)| o.scenarios.is_empty() || o.scenarios.iter().any(|s| s == *short))
        .map(|(_, scenario)| scenario)
        .collect()
}

/// One row: a peer's runs and the confab runs on either side of each.
struct Row {
    scenario: String,
    confab: Vec<Report>,
    peer: Vec<Report>,
}

fn flag(r: &Report) -> &'static str {
    if r.incomplete || r.errors > 0 || r.undelivered > 0 || r.rate_shortfall { "!" } else { "" }
}

/// The median (the mean of the middle two for an even count; 0 for none).
fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 { format!("{:.2}", a / b) } else { "-".into() }
}

/// The table, in Markdown.
fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str(
        "| scenario | confab | peer | confab deliveries/s | peer deliveries/s | ratio | confab p50 / p99 µs | peer p50 / p99 µs | p99 ratio |\n",
    );
    t.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in rows {
        let c_rate = median(r.confab.iter().map(|c| c.delivered_per_s));
        let c_p50 = median(r.confab.iter().map(|c| c.latency.p50_us as f64));
        let c_p99 = median(r.confab.iter().map(|c| c.latency.p99_us as f64));
        let c_flag = r.confab.iter().map(flag).max().unwrap_or("");
        let p_rate = median(r.peer.iter().map(|c| c.delivered_per_s));
        let p_p50 = median(r.peer.iter().map(|c| c.latency.p50_us as f64));
        let p_p99 = median(r.peer.iter().map(|c| c.latency.p99_us as f64));
        let p_flag = r.peer.iter().map(flag).max().unwrap_or("");
        let _ = writeln!(
            t,
            "| {} | {}{} | {}{} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {} |",
            r.scenario,
            r.confab.first().map_or("-", |c| c.system.as_str()),
            c_flag,
            r.peer.first().map_or("-", |c| c.system.as_str()),
            p_flag,
            c_rate,
            p_rate,
            ratio(c_rate, p_rate),
            c_p50,
            c_p99,
            p_p50,
            p_p99,
            ratio(p_p99, c_p99),
        );
    }
    t
}

/// What the table's semantics column cannot say: who acknowledges what, who fsyncs.
pub const SEMANTICS: &str = "\
ratio = confab / peer deliveries per second; p99 ratio = peer p99 / confab p99 (both: above 1 means confab is ahead).
confab figures: median of the confab runs just before and after each of the peer's runs; peer figures: median of its runs (--repeat). ! = errors, undelivered or unacknowledged messages, or a missed rate.
Semantics (they differ; the pairs are the closest like-for-like):
* confab is always TLS 1.3 (TCP) and end-to-end sealed payloads are opaque to it; each message is acknowledged by the server after it is routed
  (memory store) or after the SQLite group commit that holds it: with synchronous=FULL, an fsync per commit (sqlite, fsync = always:
  nothing acknowledged is lost to a crash or a power loss), or written to the OS and fsynced within 1 s (sqlite-interval, fsync =
  interval: a process crash loses nothing acknowledged, a power loss at most the last second); a receiver acknowledges each delivery and
  confab keeps undelivered messages for offline users (memory: until restart; sqlite: durably).
* NATS core, Mosquitto QoS 0: at most once, no acknowledgement exists; the sender subscribes to its own subject/topic and the broker's echo
  of each message is its acknowledgement (one extra delivery per message for the broker). Nothing is stored; a subscriber that is not
  connected misses the message.
* Redis pub/sub: at most once; the acknowledgement is PUBLISH's reply (the broker routed it). Nothing is stored.
* JetStream (file store): the PubAck comes after the message is written to the stream's file, without an fsync per message (nats-server
  syncs every 2 min by default): a power loss can lose acknowledged messages, a process crash does not. Receivers are ordered consumers
  (no per-message acknowledgement).
* Mosquitto QoS 1 with persistence: the PUBACK comes when the broker has the message in memory; persistence writes the in-memory state to
  disk on the autosave interval (30 min by default) and at shutdown, never per message, so a crash or power loss loses acknowledged
  messages. Subscribers use persistent sessions and acknowledge each delivery (PUBACK).
* TLS: confab, nats-tls, jetstream-tls, mqtt*-tls (rustls with ring on the client side); nats, jetstream, mqtt0, mqtt1, redis: plaintext.
* Nagle is off everywhere: confab (both ends), nats-server, async-nats, mosquitto (set_tcp_nodelay), rumqttc and redis (set here),
  redis-server (always).
";

/// Runs the whole comparison and returns the table followed by [`SEMANTICS`];
/// progress goes to stderr.
///
/// # Errors
/// The JSON file cannot be written, or a run could not be started at all.
pub fn compare(brokers: &Brokers, o: &CompareOptions) -> Result<String, BenchError> {
    let kinds: Vec<PeerKind> = PeerKind::ALL.into_iter().filter(|k| o.only.is_empty() || o.only.contains(k)).collect();
    let mut json = match &o.json {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut rows = Vec::new();
    for (name, config) in scenarios(o) {
        // The durable peers are paired with confab fsync = always (stronger durability than theirs) and
        // fsync = interval (equal: acknowledged messages survive a process crash, not a power loss).
        for (durable, store) in
            [(false, StoreKind::Memory), (true, StoreKind::Sqlite), (true, StoreKind::SqliteInterval)]
        {
            let confab_config = BenchConfig { store, ..config.clone() };
            let group: Vec<PeerKind> = kinds.iter().copied().filter(|k| k.durable() == durable).collect();
            if group.is_empty() {
                continue;
            }
            let mut record = |r: &Report| -> Result<(), BenchError> {
                eprintln!(
                    "  {name:<18} {:<20} {:>10.0} deliveries/s  p50 {:>6} µs  p99 {:>7} µs{}",
                    r.system,
                    r.delivered_per_s,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    if flag(r).is_empty() { String::new() } else { format!("  ! {:?}", r.error_samples) }
                );
                if let Some(f) = &mut json {
                    writeln!(f, "{}", r.to_json())?;
                }
                Ok(())
            };
            let first = rows.len();
            for round in 0..o.repeat.max(1) {
                let mut before = crate::run(&confab_config)?;
                record(&before)?;
                for (i, &kind) in group.iter().enumerate() {
                    let mut peer_config = config.clone();
                    peer_config.store = store;
                    peer_config.transport = Transport::Tcp;
                    peer_config.ws_tls = false;
                    let peer = super::run(&peer_config, kind, brokers)?;
                    record(&peer)?;
                    let after = crate::run(&confab_config)?;
                    record(&after)?;
                    if round == 0 {
                        rows.push(Row { scenario: name.clone(), confab: Vec::new(), peer: Vec::new() });
                    }
                    let row = &mut rows[first + i];
                    row.confab.extend([before, after.clone()]);
                    row.peer.push(peer);
                    before = after;
                }
            }
        }
    }
    let mut out = table(&rows);
    out.push('\n');
    out.push_str(SEMANTICS);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median([7.0].into_iter()), 7.0);
        assert_eq!(median(std::iter::empty()), 0.0);
        // One stalled run among five moves the median, not the figure.
        assert_eq!(median([100.0, 110.0, 9000.0, 105.0, 95.0].into_iter()), 105.0);
    }

    #[test]
    fn scenarios_are_filtered_by_short_name_in_their_order() {
        let all = CompareOptions::default();
        let names: Vec<String> = scenarios(&all).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["1:1 window 1", "1:1 window 16", "1:1 fixed 5000/s", "room 1->99"]);
        let some = CompareOptions { scenarios: vec!["room".into(), "w1".into()], ..CompareOptions::default() };
        let picked: Vec<(String, BenchConfig)> = scenarios(&some);
        assert_eq!(picked.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["1:1 window 1", "room 1->99"]);
        assert_eq!(picked[1].1.receivers, 100);
        let quic = CompareOptions { transport: Transport::Quic, ..CompareOptions::default() };
        assert!(scenarios(&quic).iter().all(|(_, c)| c.transport == Transport::Quic));
    }
}
