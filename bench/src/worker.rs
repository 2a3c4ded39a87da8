//! One client thread: the system's setup (connect, and for confab register,
//! log in, open the conversation or join the room), then the measured loop:
//! the generator, the same for every system.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::endpoint::{Endpoint, Event, System};
use crate::gate::Gate;
use crate::{BenchConfig, BenchError, Mode, RATE_MAX_IN_FLIGHT};

/// Longest latency a histogram records, in microseconds (larger values saturate).
const MAX_LATENCY_US: u64 = 600_000_000;
/// Error messages kept as samples.
const MAX_ERROR_SAMPLES: usize = 8;
/// Fixed rate: this close to the next send, the sender stops blocking in
/// the link (whose timers have millisecond resolution) and polls it, sleeping
/// at most [`PRECISE_SLEEP`] at a time, so that sends leave on schedule.
const PRECISE_WAIT: Duration = Duration::from_micros(1500);
/// The longest sleep of the precise wait.
const PRECISE_SLEEP: Duration = Duration::from_micros(100);

/// What one client does.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    /// Username (also the thread's name).
    pub(crate) name: String,
    /// Index among the senders (MP), receivers (MP) or members (room).
    pub(crate) index: usize,
    /// Whether it sends.
    pub(crate) sends: bool,
    /// MP: the one peer it sends to.
    pub(crate) peers: Vec<String>,
    /// MP receiver: how many conversation requests it accepts.
    pub(crate) accepts: usize,
}

/// The measured part of the run, the same for every client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    /// Sending starts (warmup).
    pub(crate) warm: Instant,
    /// The measured window starts.
    pub(crate) start: Instant,
    /// The measured window ends: no message is scheduled from here on.
    pub(crate) end: Instant,
    /// Messages in flight are waited for until here.
    pub(crate) drain_end: Instant,
}

impl Timeline {
    /// The timeline of a run whose setup ended at `at`.
    pub(crate) fn starting(at: Instant, config: &BenchConfig) -> Timeline {
        let warm = at + Duration::from_millis(20);
        let start = warm + config.warmup;
        let end = start + config.duration;
        Timeline { warm, start, end, drain_end: end + crate::DRAIN }
    }
}

/// What every client thread shares.
pub(crate) struct Shared {
    pub(crate) config: BenchConfig,
    /// Timestamps in payloads are nanoseconds since this instant.
    pub(crate) base: Instant,
    /// Connects and prepares each client.
    pub(crate) system: Box<dyn System>,
    pub(crate) gate: Gate,
    /// Set at the overall deadline: every loop exits.
    pub(crate) abort: AtomicBool,
    /// Deliveries owed for every acknowledged message (fan-out included).
    pub(crate) expected: AtomicU64,
    /// Deliveries made.
    pub(crate) received: AtomicU64,
    /// Senders still sending or waiting for acknowledgements.
    pub(crate) senders_running: AtomicUsize,
    pub(crate) setup_deadline: Instant,
    pub(crate) timeline: OnceLock<Timeline>,
    /// Every thread's figures, merged as each ends.
    pub(crate) results: Mutex<WorkerStats>,
}

/// Figures of one thread, or of all merged.
#[derive(Debug, Clone)]
pub(crate) struct WorkerStats {
    /// Send to receipt (closed-loop) or intended send to receipt (fixed-rate), µs, window messages.
    pub(crate) latency: Histogram<u64>,
    /// Send to acknowledgement, µs, window messages.
    pub(crate) ack: Histogram<u64>,
    /// Actual minus intended send time, µs, window messages (closed loop: 0, recorded as 1).
    pub(crate) lag: Histogram<u64>,
    /// Messages sent during the window (whatever their intended time).
    pub(crate) sent: u64,
    /// Fixed rate: window messages never sent (the sender fell behind past the drain).
    pub(crate) unsent: u64,
    /// Window messages acknowledged.
    pub(crate) acked: u64,
    /// Deliveries received during the window (whatever their send time).
    pub(crate) delivered: u64,
    /// Deliveries of window messages, possibly after the window (the latency samples).
    pub(crate) window_delivered: u64,
    /// Every message sent, warmup and drain included.
    pub(crate) sent_total: u64,
    /// Every delivery, warmup and drain included.
    pub(crate) delivered_total: u64,
    /// Window messages still unacknowledged when the drain ended.
    pub(crate) unacked: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
}

impl WorkerStats {
    pub(crate) fn new() -> WorkerStats {
        let hist = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid");
        WorkerStats {
            latency: hist(),
            ack: hist(),
            lag: hist(),
            sent: 0,
            unsent: 0,
            acked: 0,
            delivered: 0,
            window_delivered: 0,
            sent_total: 0,
            delivered_total: 0,
            unacked: 0,
            errors: 0,
            error_samples: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, what: impl Into<String>) {
        self.errors += 1;
        let what = what.into();
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&what) {
            self.error_samples.push(what);
        }
    }

    fn merge(&mut self, other: &WorkerStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.ack.add(&other.ack);
        let _ = self.lag.add(&other.lag);
        self.sent += other.sent;
        self.unsent += other.unsent;
        self.acked += other.acked;
        self.delivered += other.delivered;
        self.window_delivered += other.window_delivered;
        self.sent_total += other.sent_total;
        self.delivered_total += other.delivered_total;
        self.unacked += other.unacked;
        self.errors += other.errors;
        for e in &other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(e) {
                self.error_samples.push(e.clone());
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The thread body: never panics on what the server sends; every failure becomes an error figure.
pub(crate) fn run(shared: &Shared, role: &Role) {
    let mut stats = WorkerStats::new();
    let mut sender_done = !role.sends;
    match setup(shared, role) {
        Ok((peer, timeline)) => {
            if let Err(e) = measure(shared, role, peer, timeline, &mut stats, &mut sender_done) {
                stats.error(format!("{}: {e}", role.name));
            }
        }
        Err(e) => {
            let why = format!("{}: {e}", role.name);
            shared.gate.abort(why.clone());
            stats.error(why);
        }
    }
    if !sender_done {
        shared.senders_running.fetch_sub(1, Ordering::SeqCst);
    }
    shared.results.lock().unwrap_or_else(PoisonError::into_inner).merge(&stats);
}

/// The system's setup, then the last wait at the gate: the clock starts
/// when every client is ready.
fn setup(shared: &Shared, role: &Role) -> Result<(Box<dyn Endpoint>, Timeline), BenchError> {
    let peer = shared.system.setup(shared, role)?;
    // Every conversation is open, every member joined: the clock starts.
    let released = match shared.gate.wait(shared.setup_deadline) {
        Ok(at) => at,
        Err(e) => {
            peer.close();
            return Err(e);
        }
    };
    let timeline = *shared.timeline.get_or_init(|| Timeline::starting(released, &shared.config));
    Ok((peer, timeline))
}

/// A message waiting for its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    sent: Instant,
    in_window: bool,
}

/// The measured loop: send (if a sender) on the mode's pace, receive, until
/// every message is delivered after the window or the drain ends.
fn measure(
    shared: &Shared,
    role: &Role,
    mut peer: Box<dyn Endpoint>,
    tl: Timeline,
    stats: &mut WorkerStats,
    sender_done: &mut bool,
) -> Result<(), BenchError> {
    let config = &shared.config;
    let fanout = config.fanout();
    let mut payload = vec![0xa5u8; config.payload];
    let mut in_flight: HashMap<u32, InFlight> = HashMap::new();
    // Fixed rate: each sender's share, schedules staggered across senders.
    let interval = match (config.mode, config.rate) {
        (Mode::Rate, Some(rate)) => Duration::from_secs_f64(config.senders as f64 / rate as f64),
        _ => Duration::ZERO,
    };
    let offset = interval.mul_f64(role.index as f64 / config.senders as f64);
    let mut next_intended = tl.warm + offset;
    let mut sending = role.sends;
    let result = loop {
        if shared.abort.load(Ordering::Relaxed) {
            break Err(BenchError("stopped by the overall deadline".into()));
        }
        let t = Instant::now();
        if sending && t >= tl.warm {
            let mut wrote = false;
            match config.mode {
                Mode::Closed => {
                    while in_flight.len() < config.window && t < tl.end {
                        send(shared, peer.as_mut(), &mut payload, t, &tl, &mut in_flight, stats);
                        wrote = true;
                    }
                    if t >= tl.end {
                        sending = false;
                    }
                }
                Mode::Rate => {
                    while next_intended <= t && next_intended < tl.end && in_flight.len() < RATE_MAX_IN_FLIGHT {
                        send(shared, peer.as_mut(), &mut payload, next_intended, &tl, &mut in_flight, stats);
                        next_intended += interval;
                        wrote = true;
                    }
                    if next_intended >= tl.end {
                        sending = false;
                    }
                }
            }
            if wrote {
                peer.pump()?;
            }
        }
        if role.sends && !sending && in_flight.is_empty() && !*sender_done {
            *sender_done = true;
            shared.senders_running.fetch_sub(1, Ordering::SeqCst);
        }
        if *sender_done
            && t >= tl.end
            && shared.senders_running.load(Ordering::SeqCst) == 0
            && shared.received.load(Ordering::SeqCst) >= shared.expected.load(Ordering::SeqCst)
        {
            break Ok(());
        }
        if t >= tl.drain_end {
            break Ok(());
        }
        let mut wake = (t + Duration::from_millis(50)).min(tl.drain_end);
        let mut precise = false;
        if sending {
            match config.mode {
                Mode::Closed if t < tl.warm => wake = wake.min(tl.warm),
                Mode::Closed => wake = wake.min(tl.end),
                Mode::Rate if in_flight.len() < RATE_MAX_IN_FLIGHT => {
                    precise = next_intended.saturating_duration_since(t) <= PRECISE_WAIT;
                    wake = wake.min(next_intended.checked_sub(PRECISE_WAIT).unwrap_or(t).max(t));
                }
                Mode::Rate => {}
            }
        }
        if precise {
            // Whatever has arrived, without blocking; then a short sleep if nothing did.
            peer.step(t)?;
            if !peer.has_events() {
                let left = next_intended.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    std::thread::sleep(left.min(PRECISE_SLEEP));
                }
            }
        } else {
            peer.step(wake)?;
        }
        let got_at = Instant::now();
        while let Some(event) = peer.next_event() {
            match event {
                Event::Acked(request_id) => {
                    if let Some(m) = in_flight.remove(&request_id) {
                        shared.expected.fetch_add(fanout, Ordering::SeqCst);
                        if m.in_window {
                            stats.acked += 1;
                            stats.ack.saturating_record(micros(got_at.saturating_duration_since(m.sent)));
                        }
                    }
                }
                Event::Refused(request_id, why) => {
                    in_flight.remove(&request_id);
                    stats.error(why);
                }
                Event::Delivered(sealed) => deliver(shared, &tl, &sealed, got_at, stats),
                Event::Closed(why) => {
                    peer.close();
                    return Err(BenchError(format!("connection closed: {why}")));
                }
                Event::Error(why) => stats.error(why),
            }
        }
    };
    stats.unacked += in_flight.values().filter(|m| m.in_window).count() as u64;
    if role.sends && config.mode == Mode::Rate && next_intended < tl.end && !interval.is_zero() {
        let from = next_intended.max(tl.start);
        stats.unsent += (tl.end - from).as_nanos().div_ceil(interval.as_nanos()) as u64;
    }
    peer.close();
    result
}

/// Stamps the payload, sends it, and remembers it until its acknowledgement.
#[allow(clippy::too_many_arguments)]
fn send(
    shared: &Shared,
    peer: &mut dyn Endpoint,
    payload: &mut [u8],
    intended: Instant,
    tl: &Timeline,
    in_flight: &mut HashMap<u32, InFlight>,
    stats: &mut WorkerStats,
) {
    let sent = Instant::now();
    let nanos = |t: Instant| u64::try_from(t.saturating_duration_since(shared.base).as_nanos()).unwrap_or(u64::MAX);
    payload[..8].copy_from_slice(&nanos(sent).to_le_bytes());
    payload[8..16].copy_from_slice(&nanos(intended).to_le_bytes());
    let sealed = Bytes::copy_from_slice(payload);
    let id = peer.send(sealed);
    let in_window = intended >= tl.start && intended < tl.end;
    match id {
        Ok(id) => {
            in_flight.insert(id, InFlight { sent, in_window });
            stats.sent_total += 1;
            if sent >= tl.start && sent < tl.end {
                stats.sent += 1;
            }
            if in_window {
                stats.lag.saturating_record(micros(sent.saturating_duration_since(intended)));
            }
        }
        Err(e) => stats.error(e.0),
    }
}

/// A message arrived: its latency, if it belongs to the window.
fn deliver(shared: &Shared, tl: &Timeline, sealed: &[u8], got_at: Instant, stats: &mut WorkerStats) {
    shared.received.fetch_add(1, Ordering::SeqCst);
    stats.delivered_total += 1;
    let (Some(sent), Some(intended)) = (sealed.get(..8), sealed.get(8..16)) else {
        stats.error(format!("payload of {} bytes: too short for the timestamps", sealed.len()));
        return;
    };
    if sealed.len() != shared.config.payload {
        stats.error(format!("payload of {} bytes, sent {}", sealed.len(), shared.config.payload));
    }
    let stamp = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        shared.base + Duration::from_nanos(u64::from_le_bytes(a))
    };
    let (sent, intended) = (stamp(sent), stamp(intended));
    if intended > sent {
        stats.error("a payload's intended send time is after its send time");
    }
    if got_at >= tl.start && got_at < tl.end {
        stats.delivered += 1;
    }
    if intended >= tl.start && intended < tl.end {
        stats.window_delivered += 1;
        stats.latency.saturating_record(micros(got_at.saturating_duration_since(intended)));
    }
}
