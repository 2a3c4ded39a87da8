//! Cluster mode over real processes (issue 16): three `confab-server`
//! nodes on one PostgreSQL of the test's own, one owning the store's
//! partition and two standing by; clients given all three addresses.
//!
//! - The owner is SIGKILLed while a DM conversation flows: a standby takes
//!   over once the lease expires, the clients reach it, and every
//!   acknowledged message arrives exactly once, in order.
//! - The new owner is SIGSTOPped for longer than its lease: the last node
//!   takes over; resumed, the old owner finds its lease gone and stops
//!   without committing, and nothing is lost or doubled.
//! - With a NATS server of the test's own, the standbys are edges that
//!   relay their clients to the owner: users reaching the service through
//!   different edges only share a room and DMs, and the SIGKILL failover
//!   above holds through the edges.
//!
//! - A state split into four partitions (`[cluster] partitions = 4`),
//!   served by one node: three users and a room whose homes are four
//!   different partitions share the room and DMs, the mail between their
//!   homes carried through the store; the node is SIGKILLed while DMs flow
//!   and restarted, and every acknowledged DM arrives exactly once, in
//!   order.
//!
//! Skipped without PostgreSQL (or NATS) unless `CONFAB_REQUIRE_CLUSTER=1`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_proto::server::Partitions;
use confab_tests::cluster::{ClusterNode, dm_texts, first_to_listen, relaying, served, standing_by};
use confab_tests::nats::TempNats;
use confab_tests::postgres::TempPostgres;
use confab_tests::procs::{CliUser, Running, ServerProc, TempDir, free_port};

/// The lease of the test's nodes: a node gone is replaced within about this.
const LEASE_SECS: u64 = 2;

/// How long a takeover may take (a lease, the load, the start).
const TAKEOVER: Duration = Duration::from_secs(30);

/// Every acknowledged text is in `received` exactly once, nothing is
/// there twice, and what arrived is in the order it was sent.
fn exactly_once_in_order(received: &[String], acknowledged: &[String], sent: &[String]) {
    for text in acknowledged {
        let n = received.iter().filter(|r| *r == text).count();
        assert_eq!(n, 1, "{text:?} acknowledged, received {n} times; received: {received:?}");
    }
    let mut last = None;
    for text in received {
        let i = sent.iter().position(|s| s == text).unwrap_or_else(|| panic!("{text:?} was never sent"));
        assert!(last.is_none_or(|l| i > l), "{text:?} out of order or doubled; received: {received:?}");
        last = Some(i);
    }
}

/// Bob listening and Alice sending him 40 DMs (`dm NN LABEL`) from a thread,
/// acknowledged or not.
struct Flow {
    /// Bob's `confab listen`.
    listen: Running,
    /// Alice's own `confab listen`, through which her sends go.
    alice_listen: Running,
    /// The thread sending.
    sender: std::thread::JoinHandle<()>,
    /// Every text, in the order sent.
    sent: Vec<String>,
    /// The texts whose send was acknowledged.
    acknowledged: Arc<Mutex<Vec<String>>>,
    /// Bob's name.
    to: String,
}

/// Starts a [`Flow`]. Alice's sends go through her own running `listen`,
/// one session that exchanged its refresh token when it connected: a
/// process per message would exchange it every time, and a kill between the
/// commit of an exchange and its answer revokes that login
/// (docs/ARCHITECTURE.md, "Cluster mode", limits), which is not what these
/// tests are about.
fn start_flow(alice: &CliUser, bob: &CliUser, label: &str) -> Flow {
    start_flow_to(alice, bob, "bob", label)
}

/// [`start_flow`] to a Bob named `to`.
fn start_flow_to(alice: &CliUser, bob: &CliUser, to: &str, label: &str) -> Flow {
    let listen = Running::start(bob.command(&["listen"]));
    assert!(listen.wait_for("\"connected\"", Duration::from_secs(20)), "{:?}", listen.lines());
    let alice_listen = Running::start(alice.command(&["listen"]));
    assert!(alice_listen.wait_for("\"connected\"", Duration::from_secs(20)), "{:?}", alice_listen.lines());
    let sent: Vec<String> = (0..40).map(|i| format!("dm {i:02} {label}")).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let sender = {
        let (alice, sent, acknowledged, to) = (alice.clone(), sent.clone(), Arc::clone(&acknowledged), to.to_owned());
        std::thread::spawn(move || {
            for text in &sent {
                if alice.run(&["dm", "send", &to, text]).status.success() {
                    acknowledged.lock().unwrap().push(text.clone());
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
    };
    Flow { listen, alice_listen, sender, sent, acknowledged, to: to.to_owned() }
}

impl Flow {
    /// Waits until Bob received more than `before` DMs, after the kill at `killed`.
    fn delivered_after(&self, before: usize, killed: Instant, owner: &ServerProc) {
        while dm_texts(&self.listen.lines()).len() == before {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "nothing delivered after the kill: {:?}\nacknowledged: {:?}\nthe new owner's log:\n{}",
                self.listen.lines(),
                self.acknowledged.lock().unwrap(),
                owner.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the sender, sends one more DM (what Alice's failed sends
    /// left in her outbox goes with it), checks that every acknowledged
    /// text reached Bob exactly once and in order, and stops both
    /// listens: what was sent and what was acknowledged, in order.
    fn finish(mut self, alice: &CliUser) -> (Vec<String>, Vec<String>) {
        self.sender.join().unwrap();
        let _ = alice.ok(&["dm", "send", &self.to, "after the failover"]);
        assert!(self.listen.wait_for("after the failover", Duration::from_secs(30)), "{:?}", self.listen.lines());
        let mut sent = self.sent.clone();
        sent.push("after the failover".to_owned());
        let mut acked = self.acknowledged.lock().unwrap().clone();
        assert!(acked.len() >= 30, "most sends were acknowledged: {acked:?}");
        acked.push("after the failover".to_owned());
        exactly_once_in_order(&dm_texts(&self.listen.lines()), &acked, &sent);
        self.listen.kill();
        self.alice_listen.kill();
        (sent, acked)
    }
}

#[test]
fn cluster_three_nodes_fail_over_without_losing_or_doubling_an_acknowledged_message() {
    let Some(pg) = TempPostgres::start("cluster") else { return };
    let dir = TempDir::new("cluster");
    let url = pg.url();
    let n1 = ClusterNode::new(dir.path(), "n1", &url, None, LEASE_SECS);
    let first = n1.start();
    assert!(first.logged("partition taken"), "{}", first.log());
    let n2 = ClusterNode::new(dir.path(), "n2", &url, Some(&n1.data), LEASE_SECS);
    let n3 = ClusterNode::new(dir.path(), "n3", &url, Some(&n1.data), LEASE_SECS);
    let (s2, s3) = (n2.spawn(), n3.spawn());
    standing_by(&s2);
    standing_by(&s3);
    let servers = [&n1, &n2, &n3].map(|n| n.tcp.clone()).join(",");
    let user = |name: &str| {
        let mut u = CliUser::new(dir.path(), name, &first, "tcp");
        u.server.clone_from(&servers);
        u
    };
    let (alice, bob) = (user("alice"), user("bob"));
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["room", "send", "lobby", "before the crash"]);

    // Bob listens; Alice sends a DM after another, acknowledged or not.
    let flow = start_flow(&alice, &bob, "through the cluster");
    // The owner is killed while messages flow.
    assert!(flow.listen.wait_for("dm 09", Duration::from_secs(60)), "{:?}", flow.listen.lines());
    let mut first = first;
    first.kill();
    let killed = Instant::now();
    let before = dm_texts(&flow.listen.lines()).len();
    let ((_, owner), mut rest) = first_to_listen(vec![("n2", s2), ("n3", s3)], TAKEOVER);
    assert!(owner.logged("partition taken"), "{}", owner.log());
    flow.delivered_after(before, killed, &owner);
    let (mut sent_all, mut acked) = flow.finish(&alice);
    // The room and its history moved with the partition.
    let _ = bob.ok(&["room", "send", "lobby", "after the crash"]);
    let history = bob.ok(&["room", "history", "lobby"]);
    for text in ["before the crash", "after the crash"] {
        assert!(history.contains(text), "{text:?} in {history}");
    }

    // The new owner pauses for longer than its lease: the last node takes over.
    let (last_name, last) = rest.pop().expect("a last standby");
    owner.signal("STOP");
    let paused = Instant::now();
    let ((_, survivor), _) = first_to_listen(vec![(last_name, last)], TAKEOVER);
    assert!(paused.elapsed() >= Duration::from_secs(LEASE_SECS) / 2, "took over before the lease could expire");
    let mut owner = owner;
    let _ = alice.ok(&["dm", "send", "bob", "while the old owner sleeps"]);
    // The old owner resumes: its lease is gone, it stops, and commits nothing.
    owner.signal("CONT");
    let code = owner.wait_exit(Duration::from_secs(30)).expect("the old owner stops once resumed");
    assert_ne!(code, Some(0), "it stops on an error");
    assert!(owner.logged("lease lost"), "{}", owner.log());
    let _ = alice.ok(&["dm", "send", "bob", "after the old owner stopped"]);
    let read = bob.ok(&["dm", "read", "alice"]);
    let read = dm_texts(&read.lines().map(str::to_owned).collect::<Vec<_>>());
    sent_all.extend(["while the old owner sleeps", "after the old owner stopped"].map(str::to_owned));
    acked.extend(["while the old owner sleeps", "after the old owner stopped"].map(str::to_owned));
    exactly_once_in_order(&read, &acked, &sent_all);
    assert!(survivor.logged("partition taken"), "{}", survivor.log());
}

/// With `[cluster] nats`, the standbys serve clients as edges: every
/// connection they accept is relayed to the owner over NATS. Alice and Bob
/// each reach the service through a different edge only, share a room and
/// DMs; then the owner is SIGKILLed while DMs flow, an edge takes over,
/// the other edge relays to the new owner, and every acknowledged DM
/// arrives exactly once, in order.
#[test]
fn cluster_edges_relay_clients_to_the_owner_through_nats_and_fail_over() {
    let Some(pg) = TempPostgres::start("cluster-relay") else { return };
    let Some(nats) = TempNats::start("cluster-relay") else { return };
    let dir = TempDir::new("cluster-relay");
    let url = pg.url();
    let n1 = ClusterNode::new(dir.path(), "n1", &url, None, LEASE_SECS).relaying(&nats.url());
    let first = n1.start();
    assert!(first.logged("partition taken"), "{}", first.log());
    let n2 = ClusterNode::new(dir.path(), "n2", &url, Some(&n1.data), LEASE_SECS).relaying(&nats.url());
    let n3 = ClusterNode::new(dir.path(), "n3", &url, Some(&n1.data), LEASE_SECS).relaying(&nats.url());
    let (s2, s3) = (n2.spawn(), n3.spawn());
    relaying(&s2);
    relaying(&s3);
    // Every node serves one certificate: any of them gives the pin.
    let user = |name: &str, pinned: &ServerProc, nodes: &[&ClusterNode]| {
        let mut u = CliUser::new(dir.path(), name, pinned, "tcp");
        u.server = nodes.iter().map(|n| n.tcp.clone()).collect::<Vec<_>>().join(",");
        u
    };
    // Through the edges only: n2 for Alice, n3 for Bob.
    let (mut alice, mut bob) = (user("alice", &first, &[&n2]), user("bob", &first, &[&n3]));
    let _ = alice.ok(&["register", "alice"]);
    let _ = bob.ok(&["register", "bob"]);
    let _ = alice.ok(&["dm", "request", "bob"]);
    let _ = bob.ok(&["dm", "accept", "alice"]);
    let _ = alice.ok(&["room", "create", "lobby"]);
    let _ = bob.ok(&["room", "join", "lobby"]);
    let _ = alice.ok(&["room", "send", "lobby", "from alice through n2"]);
    let _ = bob.ok(&["room", "send", "lobby", "from bob through n3"]);
    let _ = alice.ok(&["dm", "send", "bob", "a dm relayed twice"]);
    let history = alice.ok(&["room", "history", "lobby"]);
    for text in ["from alice through n2", "from bob through n3"] {
        assert!(history.contains(text), "{text:?} in {history}");
    }
    let read = bob.ok(&["dm", "read", "alice"]);
    assert!(read.contains("a dm relayed twice"), "{read}");
    assert!(first.logged("serving the edges' connections"), "{}", first.log());

    // Every node listed from now on, each user's edge first.
    alice.server = [&n2, &n3, &n1].map(|n| n.tcp.clone()).join(",");
    bob.server = [&n3, &n2, &n1].map(|n| n.tcp.clone()).join(",");
    alice.switch_server = true;
    bob.switch_server = true;
    let flow = start_flow(&alice, &bob, "through an edge");
    assert!(flow.listen.wait_for("dm 09", Duration::from_secs(60)), "{:?}", flow.listen.lines());
    let mut first = first;
    first.kill();
    let killed = Instant::now();
    let before = dm_texts(&flow.listen.lines()).len();
    let ((owner_name, owner), rest) = first_to_listen(vec![("n2", s2), ("n3", s3)], TAKEOVER);
    assert!(owner.logged("partition taken"), "{}", owner.log());
    flow.delivered_after(before, killed, &owner);
    let _ = flow.finish(&alice);

    // The edge left relays to the new owner: a new user reaching it only gets through.
    let (_, edge) = rest.into_iter().next().expect("the other standby");
    let edge_node = if owner_name == "n2" { &n3 } else { &n2 };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !edge.log().contains(&format!("owner=n{}", &owner_name[1..])) {
        assert!(
            Instant::now() < deadline,
            "the edge never heard the new owner: {}\nthe new owner's log:\n{}",
            edge.log(),
            owner.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let carol = user("carol", &owner, &[edge_node]);
    let _ = carol.ok(&["register", "carol"]);
    let _ = carol.ok(&["room", "join", "lobby"]);
    let history = carol.ok(&["room", "history", "lobby"]);
    assert!(history.contains("from bob through n3"), "{history}");
}

/// Alice, Bob and Carol (`users`, with their names) register; the one at
/// `creator` makes `room` and the others join it; Alice and Carol post
/// "hello from alice's PLACE" and "hello from carol's PLACE", which each of
/// them finds in the history; Alice asks Bob for a DM conversation, he
/// accepts and writes "hello alice, from another PLACE", which she reads.
fn share_a_room_and_dms(users: [(&CliUser, &String); 3], creator: usize, room: &str, place: &str) {
    for (u, name) in users {
        let _ = u.ok(&["register", name]);
    }
    let _ = users[creator].0.ok(&["room", "create", room]);
    for (_, (u, _)) in users.iter().enumerate().filter(|(i, _)| *i != creator) {
        let _ = u.ok(&["room", "join", room]);
    }
    let [(alice, a), (bob, b), (carol, _)] = users;
    let posts = [format!("hello from alice's {place}"), format!("hello from carol's {place}")];
    let _ = alice.ok(&["room", "send", room, &posts[0]]);
    let _ = carol.ok(&["room", "send", room, &posts[1]]);
    for (u, _) in users {
        let history = u.ok(&["room", "history", room]);
        for text in &posts {
            assert!(history.contains(text.as_str()), "{text:?} in {history}");
        }
    }
    let dm = format!("hello alice, from another {place}");
    let _ = alice.ok(&["dm", "request", b]);
    let _ = bob.ok(&["dm", "accept", a]);
    let _ = bob.ok(&["dm", "send", a, &dm]);
    let read = alice.ok(&["dm", "read", b]);
    assert!(read.contains(&dm), "{read}");
}

/// The first of `prefix0`, `prefix1`, ... whose home (a user's, or a
/// room's with `room`) is `home` among `parts`.
fn named_at(parts: Partitions, prefix: &str, home: u8, room: bool) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| if room { parts.home_of_room(n) } else { parts.home_of_user(n) } == home)
        .expect("some name has that home")
}

/// One node serves a state split into four partitions: Alice, Bob and
/// Carol live in three of them and their room in the fourth, so every
/// room request, push, DM request, acceptance and message crosses
/// partitions as mail through the store. The node is SIGKILLed while DMs
/// flow and restarted on the same addresses: every acknowledged DM arrives
/// exactly once and in order, and the room kept its history.
#[test]
fn cluster_a_split_state_on_one_node_carries_rooms_and_dms_between_partitions_through_a_crash() {
    let Some(pg) = TempPostgres::start("split") else { return };
    let dir = TempDir::new("split");
    let parts = Partitions { index: 0, count: 4 };
    let (a, b, c) =
        (named_at(parts, "alice", 1, false), named_at(parts, "bob", 2, false), named_at(parts, "carol", 0, false));
    let room = named_at(parts, "lobby", 3, true);
    let config = dir.path().join("split.toml");
    let url = pg.url().replace('\\', "\\\\").replace('"', "\\\"");
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n\n[cluster]\nnode = \"solo\"\npartitions = 4\n"))
        .expect("config");
    let data = dir.path().join("data");
    let (tcp, quic) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut server = ServerProc::start_on(&data, Some(&config), &tcp, &quic);
    assert_eq!(server.log().matches("partition owned").count(), 4, "{}", server.log());

    // The CLI users know one Bob, one Alice: the flow's names.
    let user = |name: &str| CliUser::new(dir.path(), name, &server, "tcp");
    let (alice, bob, carol) = (user(&a), user(&b), user(&c));
    share_a_room_and_dms([(&alice, &a), (&bob, &b), (&carol, &c)], 0, &room, "home");

    // Bob listens; Alice sends DM after DM; the node is killed among them.
    let flow = start_flow_to(&alice, &bob, &b, "across partitions");
    assert!(flow.listen.wait_for("dm 09", Duration::from_secs(60)), "{:?}", flow.listen.lines());
    server.kill();
    let killed = Instant::now();
    let before = dm_texts(&flow.listen.lines()).len();
    let restarted = ServerProc::start_on(&data, Some(&config), &tcp, &quic);
    flow.delivered_after(before, killed, &restarted);
    let _ = flow.finish(&alice);
    let history = carol.ok(&["room", "history", &room]);
    assert!(history.contains("hello from alice's home"), "the room's history survived: {history}");
}

/// Waits until the nodes serve `quotas` partitions each (their logs say),
/// and returns what each serves.
fn shares_settle(nodes: &[&ServerProc], quotas: &[usize]) -> Vec<BTreeSet<u8>> {
    let deadline = Instant::now() + TAKEOVER;
    loop {
        let now: Vec<BTreeSet<u8>> = nodes.iter().map(|n| served(&n.log())).collect();
        let all: BTreeSet<u8> = now.iter().flatten().copied().collect();
        if now.iter().map(BTreeSet::len).eq(quotas.iter().copied()) && all.len() == quotas.iter().sum::<usize>() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never served {quotas:?}: {now:?}\n{}",
            nodes.iter().map(|n| n.log()).collect::<Vec<_>>().join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three nodes share a state split into four partitions (`[cluster]
/// partitions = 4`, no standby): the first takes every partition and gives
/// them back one by one as the others join, until each serves its share.
/// Alice, Bob and Carol live in partitions served by three different
/// nodes; each is given every node's address and reaches the node serving
/// their home (a node that does not closes the connection 421, and the
/// client tries the next). They share a room and DMs, the mail between
/// their homes carried through the store. The node serving Bob's home is
/// SIGKILLed while Alice's DMs to him flow: the survivors take its
/// partitions once its leases expire, Bob's client finds the new owner,
/// and every acknowledged DM arrives exactly once, in order. Then the node
/// serving Alice's home is SIGSTOPped for longer than its lease: another
/// takes the partition, a DM sent meanwhile goes through, and, resumed, the
/// old owner stops that core (its lease is lost) and goes on serving the
/// rest: nothing is doubled.
#[test]
fn cluster_three_nodes_share_a_split_state_and_take_over_a_dead_nodes_partitions() {
    let Some(pg) = TempPostgres::start("shared") else { return };
    let dir = TempDir::new("shared");
    let url = pg.url();
    let parts = Partitions { index: 0, count: 4 };
    let node = |name: &str, cert_of: Option<&std::path::Path>| {
        ClusterNode::new(dir.path(), name, &url, cert_of, LEASE_SECS).split(parts.count, 100)
    };
    let n1 = node("n1", None);
    let first = n1.start();
    assert_eq!(served(&first.log()).len(), 4, "the first node takes every partition: {}", first.log());
    let (n2, n3) = (node("n2", Some(&n1.data)), node("n3", Some(&n1.data)));
    let (s2, s3) = (n2.start(), n3.start());
    // The first node by name has one more than the others.
    let shares = shares_settle(&[&first, &s2, &s3], &[2, 1, 1]);
    let home_at = |node: usize| *shares[node].iter().next().expect("a partition");
    let (a, b, c) = (
        named_at(parts, "alice", home_at(2), false),
        named_at(parts, "bob", home_at(1), false),
        named_at(parts, "carol", home_at(0), false),
    );
    let room = named_at(parts, "lobby", home_at(1), true);
    let servers = [&n1, &n2, &n3].map(|n| n.tcp.clone()).join(",");
    let user = |name: &str| {
        let mut u = CliUser::new(dir.path(), name, &first, "tcp");
        u.server.clone_from(&servers);
        u
    };
    let (alice, bob, carol) = (user(&a), user(&b), user(&c));
    share_a_room_and_dms([(&alice, &a), (&bob, &b), (&carol, &c)], 2, &room, "node");

    // Bob's node is killed while Alice's DMs to him flow.
    let flow = start_flow_to(&alice, &bob, &b, "across nodes");
    assert!(flow.listen.wait_for("dm 09", Duration::from_secs(60)), "{:?}", flow.listen.lines());
    let mut s2 = s2;
    s2.kill();
    let killed = Instant::now();
    let before = dm_texts(&flow.listen.lines()).len();
    // The survivors share the four partitions: n1 two, n3 two.
    let shares = shares_settle(&[&first, &s3], &[2, 2]);
    assert!(shares.iter().any(|s| s.contains(&home_at(1))), "Bob's home taken: {shares:?}");
    flow.delivered_after(before, killed, &s3);
    let (mut sent_all, mut acked) = flow.finish(&alice);
    let _ = bob.ok(&["room", "send", &room, "after the crash"]);
    let history = carol.ok(&["room", "history", &room]);
    for text in ["hello from alice's node", "after the crash"] {
        assert!(history.contains(text), "the room moved with its partition: {text:?} in {history}");
    }

    // The node serving Alice's home pauses for longer than its lease.
    let alice_home = parts.home_of_user(&a);
    let (paused, other) = if served(&s3.log()).contains(&alice_home) { (&s3, &first) } else { (&first, &s3) };
    let other_served = served(&other.log()).len();
    paused.signal("STOP");
    let deadline = Instant::now() + TAKEOVER;
    while !served(&other.log()).contains(&alice_home) {
        assert!(Instant::now() < deadline, "Alice's home never taken over: {}", other.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served(&other.log()).len() > other_served);
    let _ = alice.ok(&["dm", "send", &b, "while the old owner sleeps"]);
    paused.signal("CONT");
    // Resumed, it finds its lease lost (or its commit fenced) and stops that core only.
    let deadline = Instant::now() + TAKEOVER;
    while served(&paused.log()).contains(&alice_home) {
        assert!(Instant::now() < deadline, "the resumed node still serves Alice's home: {}", paused.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = alice.ok(&["dm", "send", &b, "after the old owner stopped serving it"]);
    let read = bob.ok(&["dm", "read", &a]);
    let read = dm_texts(&read.lines().map(str::to_owned).collect::<Vec<_>>());
    let later = ["while the old owner sleeps", "after the old owner stopped serving it"].map(str::to_owned);
    sent_all.extend(later.clone());
    acked.extend(later);
    exactly_once_in_order(&read, &acked, &sent_all);
}

/// The nodes of a split state ring each other's doorbells over NATS
/// (`confab.C.p<T>.bell`): with the catch-up poll at a minute, a DM
/// request, its acceptance and a message between users whose homes two
/// different nodes serve each cross within the client's answer timeout
/// (15 s) only because the bell made the other node read its mail at
/// once.
#[test]
fn cluster_split_nodes_ring_each_others_doorbells_over_nats() {
    let Some(pg) = TempPostgres::start("bells") else { return };
    let Some(nats) = TempNats::start("bells") else { return };
    let dir = TempDir::new("bells");
    let url = pg.url();
    let parts = Partitions { index: 0, count: 2 };
    let node = |name: &str, cert_of: Option<&std::path::Path>| {
        ClusterNode::new(dir.path(), name, &url, cert_of, LEASE_SECS).split(parts.count, 60_000).relaying(&nats.url())
    };
    let n1 = node("n1", None);
    let first = n1.start();
    let n2 = node("n2", Some(&n1.data));
    let second = n2.start();
    let shares = shares_settle(&[&first, &second], &[1, 1]);
    let home_at = |node: usize| *shares[node].iter().next().expect("a partition");
    let (a, b) = (named_at(parts, "alice", home_at(0), false), named_at(parts, "bob", home_at(1), false));
    for n in [&first, &second] {
        let deadline = Instant::now() + TAKEOVER;
        while !n.logged("bells: ringing and listening") {
            assert!(Instant::now() < deadline, "no bells: {}", n.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let servers = [&n1, &n2].map(|n| n.tcp.clone()).join(",");
    let user = |name: &str| {
        let mut u = CliUser::new(dir.path(), name, &first, "tcp");
        u.server.clone_from(&servers);
        u
    };
    let (alice, bob) = (user(&a), user(&b));
    let _ = alice.ok(&["register", &a]);
    let _ = bob.ok(&["register", &b]);
    let _ = alice.ok(&["dm", "request", &b]);
    let _ = bob.ok(&["dm", "accept", &a]);
    let _ = alice.ok(&["dm", "send", &b, "rung across nodes"]);
    let read = bob.ok(&["dm", "read", &a]);
    assert!(read.contains("rung across nodes"), "{read}");
}

/// Over NATS, a node of a split state relays a connection whose frame
/// goes to a partition another node serves to that node's relay host,
/// instead of closing it 421: Alice and Bob, each given the one address of
/// a node that serves neither of their homes (as a browser given one URL
/// is), register, open a conversation and exchange DMs through it. The
/// node serving Bob's home is then killed; once another took the
/// partition, Bob, still given that one address, reads what Alice sent
/// meanwhile, once each.
#[test]
fn cluster_split_nodes_relay_a_connection_to_its_partitions_owner_over_nats() {
    let Some(pg) = TempPostgres::start("relay-split") else { return };
    let Some(nats) = TempNats::start("relay-split") else { return };
    let dir = TempDir::new("relay-split");
    let url = pg.url();
    let parts = Partitions { index: 0, count: 4 };
    let node = |name: &str, cert_of: Option<&std::path::Path>| {
        ClusterNode::new(dir.path(), name, &url, cert_of, LEASE_SECS).split(parts.count, 60_000).relaying(&nats.url())
    };
    let n1 = node("n1", None);
    let first = n1.start();
    let (n2, n3) = (node("n2", Some(&n1.data)), node("n3", Some(&n1.data)));
    let (s2, s3) = (n2.start(), n3.start());
    let shares = shares_settle(&[&first, &s2, &s3], &[2, 1, 1]);
    let home_at = |node: usize| *shares[node].iter().next().expect("a partition");
    let (a, b) = (named_at(parts, "alice", home_at(1), false), named_at(parts, "bob", home_at(2), false));
    // Both reach the service through n1 only, which serves neither home.
    let user = |name: &str| {
        let mut u = CliUser::new(dir.path(), name, &first, "tcp");
        u.server.clone_from(&n1.tcp);
        u
    };
    let (alice, bob) = (user(&a), user(&b));
    let _ = alice.ok(&["register", &a]);
    let _ = bob.ok(&["register", &b]);
    let _ = alice.ok(&["dm", "request", &b]);
    let _ = bob.ok(&["dm", "accept", &a]);
    let _ = alice.ok(&["dm", "send", &b, "relayed twice"]);
    let read = bob.ok(&["dm", "read", &a]);
    assert!(read.contains("relayed twice"), "{read}");
    assert!(served(&first.log()).iter().all(|p| ![home_at(1), home_at(2)].contains(p)), "n1 serves neither home");

    // Bob's home's node dies; a survivor takes the partition.
    let mut s3 = s3;
    s3.kill();
    let shares = shares_settle(&[&first, &s2], &[2, 2]);
    assert!(shares.iter().any(|s| s.contains(&home_at(2))), "Bob's home taken: {shares:?}");
    let _ = alice.ok(&["dm", "send", &b, "after the owner died"]);
    let read = bob.ok(&["dm", "read", &a]);
    let texts = dm_texts(&read.lines().map(str::to_owned).collect::<Vec<_>>());
    let want = ["relayed twice", "after the owner died"].map(str::to_owned);
    for text in &want {
        assert_eq!(texts.iter().filter(|t| *t == text).count(), 1, "{text:?} once in {texts:?}");
    }
}
