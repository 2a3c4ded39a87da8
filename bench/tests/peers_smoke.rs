//! A one-second run of every peer driver against a real broker (feature
//! `peers`; needs nats-server, mosquitto and redis-server installed, as
//! .ci/run and bench/peers.sh do): messages flow, every one sent in the
//! window is acknowledged and delivered, the figures are sane. No timing
//! is asserted beyond "a loopback message takes less than 10 s".

#![cfg(feature = "peers")]

use std::time::Duration;

use confab_bench::peers::{Brokers, PeerKind, run};
use confab_bench::{BenchConfig, Mode, Report, Scenario};

fn check(r: &Report, fanout: u64) {
    assert!(!r.incomplete, "{r}");
    assert_eq!(r.errors, 0, "{r}");
    assert!(r.sent > 0 && r.delivered > 0, "{r}");
    assert_eq!(r.undelivered, 0, "{r}");
    assert_eq!(r.unacked, 0, "{r}");
    assert_eq!(r.latency.count, r.acked * fanout, "{r}");
    for l in [&r.latency, &r.ack_latency] {
        assert!(l.count > 0, "{r}");
        assert!(l.p50_us >= 1 && l.p50_us <= l.p99_us && l.p99_us <= l.max_us, "{r}");
        assert!(l.max_us < 10_000_000, "a loopback message took more than 10 s: {r}");
    }
}

#[test]
fn every_peer_mode_runs() {
    let brokers = Brokers::start().expect("brokers (apt-get install nats-server mosquitto redis-server)");
    // Each kind in one scenario and mode, so that every path is taken:
    // closed loop and fixed rate, private messages and a room.
    let plan = [
        (PeerKind::Nats, Scenario::Mp, Mode::Closed),
        (PeerKind::NatsTls, Scenario::Room, Mode::Rate),
        (PeerKind::JetStream, Scenario::Room, Mode::Closed),
        (PeerKind::JetStreamTls, Scenario::Mp, Mode::Rate),
        (PeerKind::Mqtt0, Scenario::Room, Mode::Closed),
        (PeerKind::Mqtt0Tls, Scenario::Mp, Mode::Rate),
        (PeerKind::Mqtt1, Scenario::Mp, Mode::Closed),
        (PeerKind::Mqtt1Tls, Scenario::Room, Mode::Rate),
        (PeerKind::Redis, Scenario::Room, Mode::Closed),
        (PeerKind::Redis, Scenario::Mp, Mode::Rate),
    ];
    let mut failures = Vec::new();
    for (kind, scenario, mode) in plan {
        let config = BenchConfig {
            scenario,
            receivers: if scenario == Scenario::Room { 3 } else { 1 },
            payload: 64,
            mode,
            rate: (mode == Mode::Rate).then_some(200),
            window: 4,
            duration: Duration::from_secs(1),
            // The brokers' subscriptions are confirmed before the run; no warmup is needed.
            warmup: Duration::ZERO,
            ..BenchConfig::default()
        };
        let fanout = config.fanout();
        let r = run(&config, kind, &brokers).expect("run");
        eprint!("{r}");
        if let Err(e) = std::panic::catch_unwind(|| check(&r, fanout)) {
            failures.push(format!("{}: {:?}", kind.name(), e.downcast_ref::<String>()));
        }
    }
    brokers.stop();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn peers_refuse_rooms_with_several_senders() {
    let brokers = Brokers::start().expect("brokers");
    let config = BenchConfig { scenario: Scenario::Room, senders: 2, receivers: 3, ..BenchConfig::default() };
    assert!(run(&config, PeerKind::Redis, &brokers).is_err());
    brokers.stop();
}
