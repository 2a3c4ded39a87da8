//! A tiny run over each transport: messages flow and the figures are sane.

use std::time::Duration;

use confab_bench::{BenchConfig, Mode, Report, Scenario, Transport, run};

fn tiny(transport: Transport, scenario: Scenario, mode: Mode) -> BenchConfig {
    BenchConfig {
        transport,
        scenario,
        senders: 1,
        receivers: if scenario == Scenario::Room { 3 } else { 1 },
        payload: 64,
        mode,
        rate: (mode == Mode::Rate).then_some(200),
        window: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        ..BenchConfig::default()
    }
}

fn check(r: &Report) {
    assert!(!r.incomplete, "{r}");
    assert_eq!(r.errors, 0, "{r}");
    assert!(r.sent > 0 && r.delivered > 0, "{r}");
    assert_eq!(r.undelivered, 0, "{r}");
    for l in [&r.latency, &r.ack_latency] {
        assert!(l.count > 0, "{r}");
        assert!(l.p50_us >= 1 && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{r}");
        assert!(l.max_us < 10_000_000, "a loopback message took more than 10 s: {r}");
    }
    assert!(r.delivered_per_s > 0.0 && r.sent_per_s > 0.0, "{r}");
    let json = r.to_json();
    assert_eq!(json["delivered"], r.delivered, "{json}");
}

#[test]
fn tcp_mp_closed_loop() {
    let r = run(&tiny(Transport::Tcp, Scenario::Mp, Mode::Closed)).expect("run");
    check(&r);
    assert_eq!(r.latency.count, r.acked, "one delivery per acknowledged private message: {r}");
}

#[test]
fn quic_room_fixed_rate() {
    let r = run(&tiny(Transport::Quic, Scenario::Room, Mode::Rate)).expect("run");
    check(&r);
    assert_eq!(r.latency.count, r.acked * 2, "two other members receive each message: {r}");
    assert!(!r.rate_shortfall, "200 msg/s over loopback: {r}");
}

#[test]
fn quic_mp_closed_loop() {
    let r = run(&tiny(Transport::Quic, Scenario::Mp, Mode::Closed)).expect("run");
    check(&r);
    assert_eq!(r.latency.count, r.acked, "{r}");
}

#[test]
fn tcp_room_fixed_rate() {
    let r = run(&tiny(Transport::Tcp, Scenario::Room, Mode::Rate)).expect("run");
    check(&r);
    assert_eq!(r.latency.count, r.acked * 2, "{r}");
    assert!(r.send_lag.count > 0, "{r}");
}

#[test]
fn refuses_unbounded_or_invalid_runs() {
    let mut c = BenchConfig { duration: Duration::from_secs(121), ..BenchConfig::default() };
    assert!(run(&c).is_err());
    c.duration = Duration::from_secs(1);
    c.mode = Mode::Rate;
    assert!(run(&c).is_err(), "rate mode without --rate");
    c = BenchConfig { payload: 8, ..BenchConfig::default() };
    assert!(run(&c).is_err(), "payload below the timestamps");
    c = BenchConfig { scenario: Scenario::Room, senders: 3, receivers: 2, ..BenchConfig::default() };
    assert!(run(&c).is_err(), "more senders than members");
}

#[test]
fn ws_and_wss_mp_closed_loop() {
    for ws_tls in [false, true] {
        let r = run(&BenchConfig { ws_tls, ..tiny(Transport::Ws, Scenario::Mp, Mode::Closed) }).expect("run");
        check(&r);
        assert_eq!(r.latency.count, r.acked, "{r}");
        assert_eq!(r.to_json()["transport"], if ws_tls { "wss" } else { "ws" });
    }
}

/// The PostgreSQL store on a PostgreSQL of the test's own (skipped without
/// one unless `CONFAB_REQUIRE_CLUSTER=1`): the scratch database is made and
/// dropped.
#[test]
fn tcp_mp_closed_loop_on_the_postgresql_store() {
    let Some(pg) = confab_tests::postgres::TempPostgres::start("bench-smoke") else { return };
    let config = BenchConfig {
        store: confab_bench::StoreKind::Postgres,
        postgres_url: Some(pg.url()),
        ..tiny(Transport::Tcp, Scenario::Mp, Mode::Closed)
    };
    let r = run(&config).expect("run");
    check(&r);
    assert_eq!(r.latency.count, r.acked, "{r}");
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let left: i64 =
        client.query_one("SELECT count(*) FROM pg_database WHERE datname LIKE 'confab_bench_%'", &[]).unwrap().get(0);
    assert_eq!(left, 0, "the scratch database is dropped");
}

/// `confab-bench failover`, one round on a PostgreSQL of the test's own:
/// a standby takes over after the owner's SIGKILL and a DM gets through.
#[test]
fn failover_one_round() {
    let Some(pg) = confab_tests::postgres::TempPostgres::start("bench-failover-smoke") else { return };
    let config = confab_bench::failover::FailoverConfig {
        postgres_url: Some(pg.url()),
        lease_secs: 2,
        rounds: 1,
        relay: false,
        partitions: 1,
    };
    let rounds = confab_bench::failover::run(&config).expect("run");
    assert_eq!(rounds.len(), 1);
    let r = rounds[0];
    assert!(r.takeover_ms > 0 && r.takeover_ms <= r.first_delivery_ms, "{r:?}");
    let table = confab_bench::failover::table(&config, &rounds);
    assert!(table.contains("lease 2 s") && table.contains(&r.first_delivery_ms.to_string()), "{table}");
}

/// `confab-bench failover --partitions 4`, one round on a PostgreSQL of the
/// test's own: the node serving Bob's home is killed, a survivor takes it,
/// a DM gets through, and the dead node comes back and takes its share.
#[test]
fn failover_one_round_of_a_split_state() {
    let Some(pg) = confab_tests::postgres::TempPostgres::start("bench-split-failover-smoke") else { return };
    let config = confab_bench::failover::FailoverConfig {
        postgres_url: Some(pg.url()),
        lease_secs: 2,
        rounds: 1,
        relay: false,
        partitions: 4,
    };
    let rounds = confab_bench::failover::run(&config).expect("run");
    assert_eq!(rounds.len(), 1);
    let r = rounds[0];
    assert!(r.takeover_ms > 0 && r.takeover_ms <= r.first_delivery_ms, "{r:?}");
    let table = confab_bench::failover::table(&config, &rounds);
    assert!(table.contains("sharing 4 partitions") && table.contains(&r.first_delivery_ms.to_string()), "{table}");
}

/// `confab-bench failover --relay`, one round: the users on the edges get
/// through again after the owner's SIGKILL (skipped without nats-server
/// unless `CONFAB_REQUIRE_CLUSTER=1`).
#[test]
fn failover_one_round_through_the_edges() {
    let Some(pg) = confab_tests::postgres::TempPostgres::start("bench-failover-relay-smoke") else { return };
    if confab_tests::nats::TempNats::start("bench-failover-relay-smoke").is_none() {
        return;
    }
    let config = confab_bench::failover::FailoverConfig {
        postgres_url: Some(pg.url()),
        lease_secs: 2,
        rounds: 1,
        relay: true,
        partitions: 1,
    };
    let rounds = confab_bench::failover::run(&config).expect("run");
    assert_eq!(rounds.len(), 1);
    assert!(rounds[0].takeover_ms <= rounds[0].first_delivery_ms, "{:?}", rounds[0]);
    assert!(confab_bench::failover::table(&config, &rounds).contains("relaying through NATS"));
}

/// `confab-bench --relay`: the clients reach the server through an edge
/// relaying over a NATS of the run's own, on every socket transport
/// (skipped without nats-server unless `CONFAB_REQUIRE_CLUSTER=1`).
#[test]
fn relayed_runs_through_an_edge() {
    if confab_tests::nats::TempNats::start("bench-relay-smoke").is_none() {
        return;
    }
    for (transport, scenario, mode) in [
        (Transport::Tcp, Scenario::Mp, Mode::Closed),
        (Transport::Quic, Scenario::Room, Mode::Rate),
        (Transport::Ws, Scenario::Mp, Mode::Closed),
    ] {
        let r = run(&BenchConfig { relay: true, ..tiny(transport, scenario, mode) }).expect("run");
        check(&r);
        let per_message = if scenario == Scenario::Room { 2 } else { 1 };
        assert_eq!(r.latency.count, r.acked * per_message, "{r}");
        assert_eq!(r.to_json()["relay"], true, "{r}");
        assert!(r.system.ends_with("-relayed"), "{r}");
        assert!(r.to_string().contains("edge in-process"), "{r}");
    }
    let mem = BenchConfig { relay: true, ..tiny(Transport::Mem, Scenario::Mp, Mode::Closed) };
    assert!(run(&mem).unwrap_err().0.contains("--relay"), "in-memory links never reach an edge");
}
