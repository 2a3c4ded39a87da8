//! What a run measured: a table for people, one JSON object for scripts.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::worker::{Timeline, WorkerStats};
use crate::{BenchConfig, Mode};

/// A fixed-rate run is short of its target below this fraction of it.
const SHORTFALL: f64 = 0.95;

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": (self.mean_us * 10.0).round() / 10.0,
        })
    }
}

/// The machine the run was made on (client and server share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Hardware threads available to this process.
    pub cores: usize,
    /// CPU model, from `/proc/cpuinfo` when readable.
    pub cpu: String,
    /// Operating system.
    pub os: String,
}

impl Machine {
    /// This machine.
    #[must_use]
    pub fn this() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine { cores, cpu, os: std::env::consts::OS.to_owned() }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What was measured: `confab-tcp-memory`, `confab-tcp-sqlite`, ... or
    /// a peer (`nats`, `nats-tls`, `jetstream`, `mqtt0`, `redis`, ...).
    pub system: String,
    /// The run's parameters.
    pub config: BenchConfig,
    /// The measured window, seconds.
    pub window_s: f64,
    /// Messages sent during the window.
    pub sent: u64,
    /// `sent` per second of the window.
    pub sent_per_s: f64,
    /// Window messages (intended send time in the window) acknowledged by the server.
    pub acked: u64,
    /// Fixed rate: window messages never sent because the senders fell
    /// behind their schedule by more than the drain (their latency is not in the figures).
    pub unsent: u64,
    /// Deliveries received during the window, every fan-out delivery counted.
    pub delivered: u64,
    /// `delivered` per second of the window.
    pub delivered_per_s: f64,
    /// Deliveries owed for the acknowledged window messages and not made by the end of the drain.
    pub undelivered: u64,
    /// Window messages never acknowledged.
    pub unacked: u64,
    /// Receiver-side latency: receipt minus send time (closed loop) or minus
    /// the intended send time (fixed rate: coordinated omission corrected).
    pub latency: Latency,
    /// Sender-side: acknowledgement minus send time.
    pub ack_latency: Latency,
    /// Sender-side: actual minus intended send time (fixed rate: how late
    /// the senders were on their schedule; closed loop: always ~0).
    pub send_lag: Latency,
    /// Fixed rate: the achieved send rate fell below 95 % of the target.
    pub rate_shortfall: bool,
    /// Errors (refused sends, lost connections, setup failures).
    pub errors: u64,
    /// Up to 8 distinct error messages.
    pub error_samples: Vec<String>,
    /// The run did not finish normally (setup failed or the overall deadline passed).
    pub incomplete: bool,
    /// Client threads.
    pub threads: usize,
    /// The server's own summary of its run.
    pub server: String,
    /// Wall time of the whole run, setup and teardown included, seconds.
    pub elapsed_s: f64,
    /// The machine.
    pub machine: Machine,
}

/// What the run loop knows besides the figures.
pub(crate) struct RunInfo {
    pub(crate) threads: usize,
    pub(crate) hung: usize,
    pub(crate) incomplete: bool,
    pub(crate) setup_error: Option<String>,
    pub(crate) server: String,
    pub(crate) system: String,
    pub(crate) elapsed: Duration,
}

pub(crate) fn build(config: &BenchConfig, s: &WorkerStats, timeline: Option<Timeline>, info: RunInfo) -> Report {
    let window_s = config.duration.as_secs_f64();
    let per_s = |n: u64| if timeline.is_some() { n as f64 / window_s } else { 0.0 };
    let mut error_samples = s.error_samples.clone();
    let mut errors = s.errors;
    if let Some(why) = info.setup_error
        && !error_samples.iter().any(|e| e.contains(why.as_str()))
    {
        error_samples.insert(0, format!("setup: {why}"));
    }
    if info.hung > 0 {
        errors += info.hung as u64;
        error_samples.push(format!("{} client threads did not finish by the overall deadline", info.hung));
    }
    let sent_per_s = per_s(s.sent);
    let rate_shortfall = match (config.mode, config.rate) {
        (Mode::Rate, Some(rate)) => sent_per_s < rate as f64 * SHORTFALL || s.unsent > 0,
        _ => false,
    };
    Report {
        system: info.system,
        config: config.clone(),
        window_s,
        sent: s.sent,
        sent_per_s,
        acked: s.acked,
        unsent: s.unsent,
        delivered: s.delivered,
        delivered_per_s: per_s(s.delivered),
        undelivered: (s.acked * config.fanout()).saturating_sub(s.window_delivered),
        unacked: s.unacked,
        latency: Latency::of(&s.latency),
        ack_latency: Latency::of(&s.ack),
        send_lag: Latency::of(&s.lag),
        rate_shortfall,
        errors,
        error_samples,
        incomplete: info.incomplete,
        threads: info.threads,
        server: info.server,
        elapsed_s: info.elapsed.as_secs_f64(),
        machine: Machine::this(),
    }
}

impl Report {
    /// One JSON object with every figure.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let c = &self.config;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "system": self.system,
            "transport": c.transport_name(),
            "scenario": c.scenario.as_str(),
            "mode": c.mode.as_str(),
            "senders": c.senders,
            "receivers": c.receivers,
            "payload": c.payload,
            "window": c.window,
            "rate": c.rate,
            "store": c.store.as_str(),
            "relay": c.relay,
            "warmup_s": c.warmup.as_secs_f64(),
            "duration_s": self.window_s,
            "sent": self.sent,
            "sent_per_s": round(self.sent_per_s),
            "acked": self.acked,
            "unsent": self.unsent,
            "delivered": self.delivered,
            "delivered_per_s": round(self.delivered_per_s),
            "undelivered": self.undelivered,
            "unacked": self.unacked,
            "latency": self.latency.json(),
            "ack_latency": self.ack_latency.json(),
            "send_lag": self.send_lag.json(),
            "rate_shortfall": self.rate_shortfall,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "incomplete": self.incomplete,
            "threads": self.threads,
            "server": self.server,
            "elapsed_s": round(self.elapsed_s),
            "machine": {
                "cores": self.machine.cores,
                "cpu": self.machine.cpu,
                "os": self.machine.os,
                "server_in_process": self.system.starts_with("confab"),
            },
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let pace = match (c.mode, c.rate) {
            (Mode::Rate, Some(r)) => format!("fixed rate {r} msg/s"),
            _ => format!("closed loop, window {}", c.window),
        };
        writeln!(
            f,
            "confab-bench: {} {} | {} sender(s), {} {} | {} B payload | {pace} | {:.0} s window",
            self.system,
            c.scenario.as_str(),
            c.senders,
            c.receivers,
            if c.scenario == crate::Scenario::Room { "members" } else { "receiver(s)" },
            c.payload,
            self.window_s,
        )?;
        writeln!(
            f,
            "machine: {} cores ({}), {}; {}, sharing the cores with {} client threads",
            self.machine.cores,
            self.machine.cpu,
            self.machine.os,
            match (self.system.starts_with("confab"), c.relay) {
                (true, true) => "server and its edge in-process, nats-server in its own",
                (true, false) => "server in-process",
                (false, _) => "broker in its own process",
            },
            self.threads
        )?;
        writeln!(f, "{:<24}{:>14}{:>14}", "", "count", "per second")?;
        writeln!(f, "{:<24}{:>14}{:>14.0}", "sent", self.sent, self.sent_per_s)?;
        writeln!(f, "{:<24}{:>14}{:>14.0}", "delivered", self.delivered, self.delivered_per_s)?;
        writeln!(f, "{:<24}{:>10}{:>10}{:>10}{:>10}{:>12}", "latency (µs)", "p50", "p99", "p99.9", "max", "samples")?;
        let mut rows = vec![("delivery", &self.latency), ("ack", &self.ack_latency)];
        if c.mode == Mode::Rate {
            rows.push(("send lag", &self.send_lag));
        }
        for (name, l) in rows {
            writeln!(
                f,
                "{:<24}{:>10}{:>10}{:>10}{:>10}{:>12}",
                name, l.p50_us, l.p99_us, l.p999_us, l.max_us, l.count
            )?;
        }
        writeln!(
            f,
            "errors {} | undelivered {} | unacknowledged {} | unsent {} | server: {} | {:.1} s in all",
            self.errors, self.undelivered, self.unacked, self.unsent, self.server, self.elapsed_s
        )?;
        for e in &self.error_samples {
            writeln!(f, "  error: {e}")?;
        }
        if self.rate_shortfall {
            writeln!(
                f,
                "WARNING: achieved send rate {:.0} msg/s is below the target {} msg/s: the system could not keep up",
                self.sent_per_s,
                c.rate.unwrap_or(0)
            )?;
        }
        if self.incomplete {
            writeln!(f, "WARNING: incomplete run: the figures cover only what was measured before it stopped")?;
        }
        Ok(())
    }
}
