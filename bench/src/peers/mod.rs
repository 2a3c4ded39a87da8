//! Peer comparison (feature `peers`): the same generator, payload
//! timestamps, modes and counting as confab's runs, driving NATS (core and
//! JetStream), Mosquitto (MQTT 3.1.1, QoS 0 and 1) and Redis pub/sub with
//! their maintained Rust clients (async-nats, rumqttc, redis), against
//! brokers this process starts ([`Brokers`]).
//!
//! The scenarios map as follows. Private messages, sender `i` to receiver
//! `i mod M`: the receiver's subject / topic / channel `<run>.mp.recv<j>`.
//! A room of M members, the first N sending: one subject / topic / channel
//! `<run>.room`, subscribed by every member but the senders (and, where
//! the acknowledgement is the broker's echo, by the senders too: their own
//! copy is their acknowledgement, not a delivery), so each message makes
//! M - 1 deliveries, as in confab.

mod brokers;
mod clients;
mod compare;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use brokers::Brokers;
pub use compare::{CompareOptions, SCENARIOS, compare};

use crate::endpoint::{Endpoint, System};
use crate::worker::{Role, Shared};
use crate::{BenchConfig, BenchError, Report, Scenario};
use clients::{PeerEndpoint, Publisher};

/// A peer system and how it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// NATS core pub/sub, plaintext.
    Nats,
    /// NATS core pub/sub, TLS.
    NatsTls,
    /// NATS JetStream, file store, plaintext.
    JetStream,
    /// NATS JetStream, file store, TLS.
    JetStreamTls,
    /// Mosquitto, QoS 0, plaintext.
    Mqtt0,
    /// Mosquitto, QoS 0, TLS.
    Mqtt0Tls,
    /// Mosquitto, QoS 1, persistent sessions, persistence on, plaintext.
    Mqtt1,
    /// Mosquitto, QoS 1, persistent sessions, persistence on, TLS.
    Mqtt1Tls,
    /// Redis pub/sub, plaintext.
    Redis,
}

impl PeerKind {
    /// Every kind, at-most-once ones first.
    pub const ALL: [PeerKind; 9] = [
        PeerKind::Nats,
        PeerKind::NatsTls,
        PeerKind::Mqtt0,
        PeerKind::Mqtt0Tls,
        PeerKind::Redis,
        PeerKind::JetStream,
        PeerKind::JetStreamTls,
        PeerKind::Mqtt1,
        PeerKind::Mqtt1Tls,
    ];

    /// The name in reports and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Nats => "nats",
            PeerKind::NatsTls => "nats-tls",
            PeerKind::JetStream => "jetstream",
            PeerKind::JetStreamTls => "jetstream-tls",
            PeerKind::Mqtt0 => "mqtt0",
            PeerKind::Mqtt0Tls => "mqtt0-tls",
            PeerKind::Mqtt1 => "mqtt1",
            PeerKind::Mqtt1Tls => "mqtt1-tls",
            PeerKind::Redis => "redis",
        }
    }

    /// The kind called `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<PeerKind> {
        PeerKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it stores messages (compared with confab's SQLite store) rather than only routing them.
    #[must_use]
    pub fn durable(self) -> bool {
        matches!(self, PeerKind::JetStream | PeerKind::JetStreamTls | PeerKind::Mqtt1 | PeerKind::Mqtt1Tls)
    }

    fn tls(self) -> bool {
        matches!(self, PeerKind::NatsTls | PeerKind::JetStreamTls | PeerKind::Mqtt0Tls | PeerKind::Mqtt1Tls)
    }
}

/// Distinguishes the subjects, topics, channels and streams of successive runs.
static RUN: AtomicU32 = AtomicU32::new(0);

/// One system's clients: what they connect to and under which names.
struct Peers {
    kind: PeerKind,
    prefix: String,
    /// The JetStream stream of this run.
    stream: String,
    port: u16,
    tls: Option<rustls::ClientConfig>,
}

impl Peers {
    fn target(&self, scenario: Scenario, role: &Role) -> String {
        match scenario {
            Scenario::Room => format!("{}.room", self.prefix),
            Scenario::Mp if role.sends => {
                format!("{}.mp.{}", self.prefix, role.peers.first().map_or("", String::as_str))
            }
            Scenario::Mp => format!("{}.mp.{}", self.prefix, role.name),
        }
    }

    fn nats_url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls.is_some() { "tls" } else { "nats" }, self.port)
    }
}

impl System for Peers {
    fn setup(&self, shared: &Shared, role: &Role) -> Result<Box<dyn Endpoint>, BenchError> {
        let scenario = shared.config.scenario;
        let target = self.target(scenario, role);
        // Subscribers: every MP receiver and every room member that does not send.
        let receives = !role.sends;
        let ep = PeerEndpoint::new()?;
        let ep = match self.kind {
            PeerKind::Nats | PeerKind::NatsTls => {
                let client = clients::nats_connect(&ep, &self.nats_url(), self.tls.clone())?;
                // Senders subscribe too: the echo is their acknowledgement.
                clients::nats_subscribe(&ep, &client, &target)?;
                if role.sends { ep.sending(Publisher::Nats(client, target), true) } else { ep }
            }
            PeerKind::JetStream | PeerKind::JetStreamTls => {
                let client = clients::nats_connect(&ep, &self.nats_url(), self.tls.clone())?;
                // The context spawns its acknowledgement task on the current runtime.
                let js = {
                    let _in = ep.rt.enter();
                    async_nats::jetstream::new(client)
                };
                if receives {
                    clients::jetstream_subscribe(&ep, &js, &self.stream, &target)?;
                    ep
                } else {
                    ep.sending(Publisher::JetStream(js, target), false)
                }
            }
            PeerKind::Mqtt0 | PeerKind::Mqtt0Tls | PeerKind::Mqtt1 | PeerKind::Mqtt1Tls => {
                let qos = if self.kind.durable() { rumqttc::QoS::AtLeastOnce } else { rumqttc::QoS::AtMostOnce };
                // QoS 0 senders subscribe for the echo; QoS 1 senders have the PUBACK.
                let subscribe = (receives || qos == rumqttc::QoS::AtMostOnce).then_some(target.as_str());
                let id = format!("{}-{}", self.prefix, role.name);
                let (client, ids) = clients::mqtt_connect(&ep, &id, self.port, self.tls.clone(), qos, subscribe)?;
                if role.sends {
                    ep.sending(Publisher::Mqtt(client, target, qos, ids), qos == rumqttc::QoS::AtMostOnce)
                } else {
                    ep
                }
            }
            PeerKind::Redis => {
                let client = clients::redis_client(self.port)?;
                if receives {
                    clients::redis_subscribe(&ep, &client, &target)?;
                    ep
                } else {
                    let con = ep
                        .rt
                        .block_on(client.get_multiplexed_async_connection())
                        .map_err(|e| BenchError(format!("Redis connect: {e}")))?;
                    ep.sending(Publisher::Redis(con, target), false)
                }
            }
        };
        Ok(Box::new(ep))
    }
}

/// Creates the run's JetStream stream (file storage, bounded) before any client starts.
///
/// The bound is a message count, not `max_bytes`: nats-server reserves a
/// stream's `max_bytes` against its file-store limit (75 % of the free disk
/// by default) when the stream is made, so a byte bound of 1 GiB refused to
/// create the stream on a machine with less than about 1.4 GiB free. A count
/// reserves nothing; a million messages of the largest payload the bench
/// sends commonly (1 KiB) is the same gibibyte.
fn create_stream(url: &str, tls: Option<rustls::ClientConfig>, stream: &str, subjects: &str) -> Result<(), BenchError> {
    use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
    let ep = PeerEndpoint::new()?;
    let client = clients::nats_connect(&ep, url, tls)?;
    let _in = ep.rt.enter();
    let js = async_nats::jetstream::new(client);
    let config = Config {
        name: stream.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: StorageType::File,
        max_messages: 1_000_000,
        discard: DiscardPolicy::Old,
        ..Config::default()
    };
    ep.rt.block_on(js.create_stream(config)).map_err(|e| BenchError(format!("JetStream stream: {e}")))?;
    Ok(())
}

fn delete_stream(url: &str, tls: Option<rustls::ClientConfig>, stream: &str) -> String {
    let run = || -> Result<(), BenchError> {
        let ep = PeerEndpoint::new()?;
        let client = clients::nats_connect(&ep, url, tls)?;
        let _in = ep.rt.enter();
        let js = async_nats::jetstream::new(client);
        ep.rt.block_on(js.delete_stream(stream)).map_err(|e| BenchError(e.to_string()))?;
        Ok(())
    };
    match run() {
        Ok(()) => format!("stream {stream} deleted"),
        Err(e) => format!("stream {stream} not deleted: {e}"),
    }
}

/// Runs `config` against the `kind` broker of `brokers` (the `transport`
/// and `store` of `config` are ignored: the kind says both).
///
/// # Errors
/// Invalid configuration, or the JetStream stream could not be created.
/// Failures during the run are in the [`Report`], as for confab.
pub fn run(config: &BenchConfig, kind: PeerKind, brokers: &Brokers) -> Result<Report, BenchError> {
    config.validate()?;
    if config.scenario == Scenario::Room && config.senders > 1 {
        // Where the acknowledgement is not the echo, senders do not subscribe.
        return Err(BenchError("peers: a room has one sender".into()));
    }
    let base = Instant::now();
    let n = RUN.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("bench{}x{n}", std::process::id());
    let tls = if kind.tls() { Some(brokers.tls_client()?) } else { None };
    let port = match kind {
        PeerKind::Nats | PeerKind::JetStream => brokers.nats,
        PeerKind::NatsTls | PeerKind::JetStreamTls => brokers.nats_tls,
        PeerKind::Mqtt0 | PeerKind::Mqtt1 => brokers.mqtt,
        PeerKind::Mqtt0Tls | PeerKind::Mqtt1Tls => brokers.mqtt_tls,
        PeerKind::Redis => brokers.redis,
    };
    let peers = Peers { kind, stream: format!("S{prefix}"), prefix, port, tls };
    let jetstream = matches!(kind, PeerKind::JetStream | PeerKind::JetStreamTls);
    let url = peers.nats_url();
    if jetstream {
        create_stream(&url, peers.tls.clone(), &peers.stream, &format!("{}.>", peers.prefix))?;
    }
    let (stream, tls) = (peers.stream.clone(), peers.tls.clone());
    let stop = move || {
        if jetstream { delete_stream(&url, tls, &stream) } else { format!("external broker {}", kind.name()) }
    };
    let report = crate::run_system(config, base, Box::new(peers), kind.name().to_owned(), stop);
    // The brokers keep no per-run state but JetStream's, deleted above.
    std::thread::sleep(Duration::from_millis(50));
    Ok(report)
}
