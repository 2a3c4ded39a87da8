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
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            rate: 5000,
            room: 100,
            only: Vec::new(),
            json: None,
        }
    }
}

/// The scenarios of the comparison: name and configuration (1 KiB payloads).
fn scenarios(o: &CompareOptions) -> Vec<(String, BenchConfig)> {
    let base = BenchConfig {
        transport: Transport::Tcp,
        payload: 1024,
        duration: o.duration,
        warmup: o.warmup,
        ..BenchConfig::default()
    };
    vec![
        ("1:1 window 1".into(), BenchConfig { window: 1, ..base.clone() }),
        ("1:1 window 16".into(), BenchConfig { window: 16, ..base.clone() }),
        (format!("1:1 fixed {}/s", o.rate), BenchConfig { mode: Mode::Rate, rate: Some(o.rate), ..base.clone() }),
        (format!("room 1->{}", o.room - 1), BenchConfig { scenario: Scenario::Room, receivers: o.room, ..base }),
    ]
}

/// One row: a peer run and the confab runs on either side of it.
struct Row {
    scenario: String,
    confab: Vec<Report>,
    peer: Report,
}

fn flag(r: &Report) -> &'static str {
    if r.incomplete || r.errors > 0 || r.undelivered > 0 || r.rate_shortfall { "!" } else { "" }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
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
        let c_rate = mean(r.confab.iter().map(|c| c.delivered_per_s));
        let c_p50 = mean(r.confab.iter().map(|c| c.latency.p50_us as f64));
        let c_p99 = mean(r.confab.iter().map(|c| c.latency.p99_us as f64));
        let c_flag = r.confab.iter().map(flag).max().unwrap_or("");
        let p = &r.peer;
        let _ = writeln!(
            t,
            "| {} | {}{} | {}{} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {} / {} | {} |",
            r.scenario,
            r.confab.first().map_or("-", |c| c.system.as_str()),
            c_flag,
            p.system,
            flag(p),
            c_rate,
            p.delivered_per_s,
            ratio(c_rate, p.delivered_per_s),
            c_p50,
            c_p99,
            p.latency.p50_us,
            p.latency.p99_us,
            ratio(p.latency.p99_us as f64, c_p99),
        );
    }
    t
}

/// What the table's semantics column cannot say: who acknowledges what, who fsyncs.
pub const SEMANTICS: &str = "\
ratio = confab / peer deliveries per second; p99 ratio = peer p99 / confab p99 (both: above 1 means confab is ahead).
confab figures: mean of the confab runs just before and after the peer run. ! = errors, undelivered or unacknowledged messages, or a missed rate.
Semantics (they differ; the pairs are the closest like-for-like):
* confab is always TLS 1.3 (TCP) and end-to-end sealed payloads are opaque to it; each message is acknowledged by the server after it is routed
  (memory store) or after the loop turn's SQLite commit with synchronous=FULL, i.e. an fsync per turn (sqlite store); a receiver acknowledges
  each delivery and confab keeps undelivered messages for offline users (memory: until restart; sqlite: durably).
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
        for durable in [false, true] {
            let store = if durable { StoreKind::Sqlite } else { StoreKind::Memory };
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
            let mut before = crate::run(&confab_config)?;
            record(&before)?;
            for kind in group {
                let mut peer_config = config.clone();
                peer_config.store = store;
                let peer = super::run(&peer_config, kind, brokers)?;
                record(&peer)?;
                let after = crate::run(&confab_config)?;
                record(&after)?;
                rows.push(Row { scenario: name.clone(), confab: vec![before, after.clone()], peer });
                before = after;
            }
        }
    }
    let mut out = table(&rows);
    out.push('\n');
    out.push_str(SEMANTICS);
    Ok(out)
}
