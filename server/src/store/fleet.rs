//! The nodes of a cluster whose state is split, and which partitions each
//! should own (docs/PARTITIONS.md, "Ownership").
//!
//! Every node that may own partitions keeps a row in `confab_nodes` (its
//! name, and until when it counts as alive, by PostgreSQL's clock),
//! renewed with its leases ([`Fleet::beat`]); a clean stop deletes it
//! ([`Fleet::leave`]). From the live rows and the live leases each node
//! computes the same [`Plan`]s:
//!
//! - **Quotas.** The live nodes, sorted by name, share the `P` partitions:
//!   each owns `P / N` of them, and the first `P mod N` one more, so the
//!   quotas add up to `P` and no node is left idle while another holds more
//!   than its share.
//! - **Taking.** A node below its quota takes partitions whose lease has
//!   expired or was released (by opening their store: the lease's own
//!   statement decides a race, see [`lease`]), in an order
//!   that starts at a point of its own (the sum of the quotas of the nodes
//!   before it), so that nodes starting together do not race for one
//!   partition.
//! - **Giving back.** A node above its quota (another joined) gives back
//!   one partition per beat, by a clean release (its store dropped: the
//!   lease expires at once), the one furthest in its own order.
//! - **A node gone** stops beating: its row and its leases expire (one
//!   lease later); the survivors' quotas grow, and they take its partitions.
//!
//! A view is read in one transaction with the beat; two nodes may briefly
//! see different views (one's beat just expired), which costs at most a
//! partition given back and taken again, never two owners (the leases
//! decide that).

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::Client;

use super::error::StoreError;
use super::lease::{self, LeaseConfig};
use super::pg::{check_count, check_schema, client_config, label_of, open_session, pg_err};

/// Renews node `$1`'s row for `$2` milliseconds (made if it is missing).
const BEAT: &str = "INSERT INTO confab_nodes AS n (name, expires_at)
     VALUES ($1, clock_timestamp() + $2::bigint * interval '1 millisecond')
     ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at";

/// Rows of nodes gone for a day are of no use to anyone.
const FORGET: &str = "DELETE FROM confab_nodes WHERE expires_at < clock_timestamp() - interval '1 day'";

/// The live nodes, by name.
const NODES: &str = "SELECT name FROM confab_nodes WHERE expires_at > clock_timestamp() ORDER BY name";

/// The live leases of partitions below `$1`, and their holders.
const HOLDERS: &str = "SELECT partition, holder FROM confab_lease WHERE expires_at > clock_timestamp() AND partition BETWEEN 0 AND $1 - 1";

/// What a node saw of the cluster at one beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The live nodes' names (their rows not expired), sorted.
    pub nodes: Vec<String>,
    /// Per partition (the index), the node holding a live lease on it.
    pub holders: Vec<Option<String>>,
}

/// What one node should do after a beat ([`View::plan`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use]
pub struct Plan {
    /// How many partitions it should own.
    pub quota: usize,
    /// The partitions it holds a live lease on.
    pub held: Vec<u8>,
    /// Free partitions to take, in its order, at most `quota - held`.
    pub take: Vec<u8>,
    /// A partition to give back: it holds more than its quota.
    pub give_back: Option<u8>,
}

impl View {
    /// The plan of node `me` (counted among the live nodes even if its row
    /// was not seen: it beat just before).
    pub fn plan(&self, me: &str) -> Plan {
        let count = self.holders.len();
        let mut nodes: Vec<&str> = self.nodes.iter().map(String::as_str).collect();
        if let Err(at) = nodes.binary_search(&me) {
            nodes.insert(at, me);
        }
        let n = nodes.len();
        let rank = nodes.binary_search(&me).unwrap_or(0);
        let quota = count / n + usize::from(rank < count % n);
        // Its own order of the partitions, from its start (the quotas of the nodes before it), round.
        let start = rank * (count / n) + rank.min(count % n);
        let order = (0..count).map(|i| (start + i) % count);
        let index = |p: usize| u8::try_from(p).unwrap_or(u8::MAX);
        let held: Vec<u8> = order.clone().filter(|&p| self.holders[p].as_deref() == Some(me)).map(index).collect();
        let take =
            order.filter(|&p| self.holders[p].is_none()).take(quota.saturating_sub(held.len())).map(index).collect();
        let give_back = if held.len() > quota { held.last().copied() } else { None };
        let mut held = held;
        held.sort_unstable();
        Plan { quota, held, take, give_back }
    }
}

/// A node's membership of the cluster. See the [module docs](self).
pub struct Fleet {
    /// The session, opened again at the next beat when lost.
    client: Option<Client>,
    connect: postgres::Config,
    label: PathBuf,
    node: String,
    ttl: Duration,
    count: u8,
    /// Its row was deleted ([`Fleet::leave`]).
    left: bool,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("url", &self.label).field("node", &self.node).field("count", &self.count).finish()
    }
}

impl Fleet {
    /// Joins the cluster of the store at `url` as `lease.node`, alive for
    /// `lease.ttl` after each beat, for a state split into `count`
    /// partitions; beats once. A node that could open none of the store's
    /// partitions never joins (it would hold a quota nobody serves): a
    /// store made for another count, or migrated by a newer build, is
    /// refused first. Dropped without [`leave`](Fleet::leave) (a start
    /// that failed after joining), it deletes its row all the same.
    ///
    /// # Errors
    /// The database cannot be reached or refuses the statements;
    /// [`StoreError::PartitionCount`], [`StoreError::SchemaTooNew`].
    pub fn join(url: &str, lease: &LeaseConfig, count: u8) -> Result<(Fleet, View), StoreError> {
        let bound = lease.renewal_bound();
        let mut connect = client_config(url)?;
        connect.connect_timeout(bound).tcp_user_timeout(bound).options(&format!(
            "-c statement_timeout={} -c lock_timeout={}",
            bound.as_millis(),
            bound.as_millis()
        ));
        let label = PathBuf::from(label_of(&connect));
        let (mut client, _) = open_session(&connect, &label)?;
        lease::bootstrap(&mut client, &label)?;
        check_count(&mut client, &label, count)?;
        check_schema(&mut client, &label)?;
        let mut fleet = Fleet {
            client: Some(client),
            connect,
            label,
            node: lease.node.clone(),
            ttl: lease.ttl,
            count,
            left: false,
        };
        let view = fleet.beat()?;
        tracing::info!(
            store = %fleet.label.display(), node = %fleet.node, nodes = view.nodes.len(), partitions = count,
            "joined the cluster"
        );
        Ok((fleet, view))
    }

    /// Renews this node's row and reads the live nodes and leases, in one
    /// transaction. A lost session is opened again at the next beat.
    ///
    /// # Errors
    /// The database cannot be reached or refuses the statements.
    pub fn beat(&mut self) -> Result<View, StoreError> {
        let result = self.try_beat();
        if result.is_err() {
            self.client = None;
        }
        result
    }

    fn try_beat(&mut self) -> Result<View, StoreError> {
        let err = pg_err("beat in", &self.label);
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(open_session(&self.connect, &self.label)?.0),
        };
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut tx = client.transaction().map_err(&err)?;
        tx.execute(BEAT, &[&self.node, &ttl]).map_err(&err)?;
        tx.execute(FORGET, &[]).map_err(&err)?;
        let nodes = tx.query(NODES, &[]).map_err(&err)?.iter().map(|r| r.get(0)).collect();
        let mut holders = vec![None; usize::from(self.count)];
        for row in tx.query(HOLDERS, &[&i32::from(self.count)]).map_err(&err)? {
            let p: i32 = row.get(0);
            if let Some(slot) = usize::try_from(p).ok().and_then(|p| holders.get_mut(p)) {
                *slot = Some(row.get(1));
            }
        }
        tx.commit().map_err(&err)?;
        Ok(View { nodes, holders })
    }

    /// This node's plan in `view` ([`View::plan`]), logged when it asks
    /// for a change.
    pub fn plan(&self, view: &View) -> Plan {
        let plan = view.plan(&self.node);
        if !plan.take.is_empty() || plan.give_back.is_some() {
            tracing::info!(
                store = %self.label.display(), node = %self.node, nodes = view.nodes.len(), quota = plan.quota,
                held = ?plan.held, take = ?plan.take, give_back = ?plan.give_back, "partition shares changed"
            );
        }
        plan
    }

    /// Leaves the cluster (a clean stop): its row is deleted, so the
    /// others' quotas grow at once (its leases are released by its stores).
    ///
    /// # Errors
    /// The database cannot be reached or refuses the statement.
    pub fn leave(mut self) -> Result<(), StoreError> {
        self.try_leave()
    }

    fn try_leave(&mut self) -> Result<(), StoreError> {
        self.left = true;
        let err = pg_err("leave", &self.label);
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(open_session(&self.connect, &self.label)?.0),
        };
        client.execute("DELETE FROM confab_nodes WHERE name = $1", &[&self.node]).map_err(&err)?;
        tracing::info!(store = %self.label.display(), node = %self.node, "left the cluster");
        Ok(())
    }

    /// The database's URL without its password.
    #[must_use]
    pub fn label(&self) -> &Path {
        &self.label
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.left
            && let Err(e) = self.try_leave()
        {
            tracing::warn!("could not leave the cluster (its row expires in a lease): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Plan, View};

    fn view(nodes: &[&str], holders: &[Option<&str>]) -> View {
        View {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            holders: holders.iter().map(|h| h.map(str::to_owned)).collect(),
        }
    }

    #[test]
    fn quotas_add_up_to_the_partitions_and_differ_by_one_at_most() {
        for count in 1..=52usize {
            for n in 1..=7usize {
                let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
                let v = View { nodes: names.clone(), holders: vec![None; count] };
                let quotas: Vec<usize> = names.iter().map(|me| v.plan(me).quota).collect();
                assert_eq!(quotas.iter().sum::<usize>(), count, "{count} partitions, {n} nodes");
                let (min, max) = (quotas.iter().min().unwrap(), quotas.iter().max().unwrap());
                assert!(max - min <= 1, "{count} partitions, {n} nodes: {quotas:?}");
            }
        }
    }

    #[test]
    fn an_empty_cluster_is_shared_without_two_nodes_wanting_one_partition() {
        let v = view(&["a", "b", "c"], &[None; 4]);
        let plans: Vec<Plan> = ["a", "b", "c"].iter().map(|me| v.plan(me)).collect();
        assert_eq!(plans.iter().map(|p| p.quota).collect::<Vec<_>>(), [2, 1, 1]);
        assert_eq!(plans[0].take, [0, 1]);
        assert_eq!(plans[1].take, [2], "b starts after a's quota");
        assert_eq!(plans[2].take, [3]);
        assert!(plans.iter().all(|p| p.give_back.is_none() && p.held.is_empty()));
    }

    #[test]
    fn a_node_takes_free_partitions_up_to_its_quota_only() {
        let v = view(&["a", "b"], &[Some("a"), None, Some("b"), None]);
        let a = v.plan("a");
        assert_eq!((a.quota, a.held.as_slice(), a.take.as_slice()), (2, &[0][..], &[1][..]));
        let b = v.plan("b");
        assert_eq!((b.quota, b.held.as_slice(), b.take.as_slice()), (2, &[2][..], &[3][..]));
        let full = view(&["a", "b"], &[Some("a"), Some("a"), Some("b"), Some("b")]);
        assert_eq!(full.plan("a"), Plan { quota: 2, held: vec![0, 1], take: vec![], give_back: None });
    }

    #[test]
    fn a_node_above_its_quota_gives_back_one_partition_per_beat() {
        // c joined: a holds all four, its quota is 2.
        let v = view(&["a", "b", "c"], &[Some("a"); 4]);
        let a = v.plan("a");
        assert_eq!((a.quota, a.give_back), (2, Some(3)), "the last in a's order");
        assert!(a.take.is_empty());
        assert!(v.plan("b").take.is_empty(), "nothing free yet");
        // One given back: b takes it.
        let v = view(&["a", "b", "c"], &[Some("a"), Some("a"), Some("a"), None]);
        assert_eq!(v.plan("a").give_back, Some(2));
        assert_eq!(v.plan("b").take, [3]);
    }

    #[test]
    fn the_partitions_of_a_node_gone_are_taken_by_the_survivors() {
        // c's row and its lease on 3 expired: two nodes, quotas 2 and 2.
        let v = view(&["a", "b"], &[Some("a"), Some("a"), Some("b"), None]);
        assert!(v.plan("a").take.is_empty());
        assert_eq!(v.plan("b").take, [3]);
    }

    #[test]
    fn a_node_whose_row_was_not_seen_counts_itself() {
        let v = view(&["b"], &[None, None]);
        let a = v.plan("a");
        assert_eq!((a.quota, a.take.as_slice()), (1, &[0][..]));
    }

    /// Three nodes share four partitions of one database (quotas 2, 1, 1);
    /// one is killed and a survivor takes its partition, with what it
    /// committed, once its lease expired; a fourth joins and the node above
    /// its quota gives one back to it. Never two live owners of one partition.
    #[test]
    fn nodes_share_the_partitions_take_over_a_dead_one_and_make_room_for_a_new_one() {
        use std::collections::BTreeMap;
        use std::time::{Duration, Instant};

        use bytes::Bytes;
        use confab_proto::ServerConfig;
        use confab_proto::server::{Change, Partitions};
        use confab_tests::postgres::TempPostgres;

        use super::Fleet;
        use crate::store::{Init, LeaseConfig, PgStore, StoreError};

        const COUNT: u8 = 4;
        // Long enough that a loaded machine's renewals (a third of it, each bounded by half of
        // that) never lose a lease the test does not mean to lose.
        const TTL: Duration = Duration::from_secs(3);
        struct Node {
            fleet: Fleet,
            lease: LeaseConfig,
            stores: BTreeMap<u8, PgStore>,
        }
        let Some(pg) = TempPostgres::start("fleet") else { return };
        let url = pg.url();
        let join = |name: &str| {
            let lease = LeaseConfig::new(name.to_owned(), TTL, false);
            let (fleet, _) = Fleet::join(&url, &lease, COUNT).unwrap();
            Node { fleet, lease, stores: BTreeMap::new() }
        };
        let step = |node: &mut Node| {
            let view = node.fleet.beat().unwrap();
            let plan = node.fleet.plan(&view);
            for p in plan.take {
                let config = ServerConfig { partitions: Partitions { index: p, count: COUNT }, ..Default::default() };
                match PgStore::open_leased(&url, &config, Init::Allow, None, node.lease.clone()) {
                    Ok((store, _)) => assert!(node.stores.insert(p, store).is_none()),
                    Err(StoreError::LeaseHeld { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(p) = plan.give_back {
                drop(node.stores.remove(&p));
            }
            node.stores.retain(|_, s| s.lease_watch().lost().is_none());
        };
        let held = |node: &Node| node.stores.keys().copied().collect::<Vec<u8>>();
        // Each partition's live owners, among the nodes: never two.
        let owners = |nodes: &[&Node]| {
            let mut owners = vec![0; usize::from(COUNT)];
            for node in nodes {
                for p in node.stores.keys() {
                    owners[usize::from(*p)] += 1;
                }
            }
            assert!(owners.iter().all(|&o| o <= 1), "two owners: {owners:?}");
            owners
        };
        let (mut a, mut b, mut c) = (join("a"), join("b"), join("c"));
        for node in [&mut a, &mut b, &mut c] {
            step(node);
        }
        assert_eq!((held(&a), held(&b), held(&c)), (vec![0, 1], vec![2], vec![3]));
        assert_eq!(owners(&[&a, &b, &c]), [1, 1, 1, 1]);
        let item = Bytes::from_static(b"from c");
        c.stores.get_mut(&3).unwrap().commit(&[Change::MailOut { to: 0, seq: 1, item }]).unwrap();
        // c is killed: it beats no more and its lease is not released.
        let killed = Instant::now();
        for (_, store) in std::mem::take(&mut c.stores) {
            store.crash();
        }
        while held(&b) != [2, 3] {
            assert!(killed.elapsed() < TTL * 5, "a: {:?}, b: {:?}", held(&a), held(&b));
            std::thread::sleep(Duration::from_millis(100));
            step(&mut a);
            step(&mut b);
            owners(&[&a, &b]);
        }
        assert!(killed.elapsed() >= TTL - Duration::from_millis(100), "not before c's lease expired");
        assert_eq!(held(&a), [0, 1]);
        assert_eq!(b.stores[&3].state().mail().next_to(0), 2, "what c committed came with partition 3");
        // d joins: b is above its quota (2, 1, 1 now) and gives 3 back; d takes it.
        let mut d = join("d");
        let joined = Instant::now();
        while held(&d) != [3] {
            assert!(joined.elapsed() < TTL * 5, "b: {:?}, d: {:?}", held(&b), held(&d));
            for node in [&mut a, &mut b, &mut d] {
                step(node);
            }
            owners(&[&a, &b, &d]);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!((held(&a), held(&b)), (vec![0, 1], vec![2]));
        assert_eq!(d.stores[&3].state().mail().next_to(0), 2);
        // A clean stop: d leaves and releases; b takes 3 at its next beat, without waiting for a lease.
        drop(std::mem::take(&mut d.stores));
        d.fleet.leave().unwrap();
        step(&mut a);
        step(&mut b);
        assert_eq!((held(&a), held(&b)), (vec![0, 1], vec![2, 3]));
    }
}
