//! The relay between the nodes of a cluster, over NATS.
//!
//! A cluster's state is one partition, owned by one node at a time (the
//! lease, `store::lease`). With `[cluster] nats` set, the other nodes (the
//! standbys) do not sit idle: each serves clients as an *edge*. It
//! terminates their TLS, QUIC or WebSocket connections and relays each
//! connection's bytes to the owner, whose loop sees it as one more
//! connection ([`Transport::Relay`](confab_transports::hub::Transport)) and
//! runs its session in the core as any other. So a client may connect to
//! any node.
//!
//! NATS carries the bytes of live connections only, never state: a relay
//! message lost (NATS restarted, a slow consumer dropped) is seen as a gap
//! in the connection's sequence numbers and ends that connection; its
//! client reconnects and resumes as after any reconnection (its outbox and
//! the exactly-once delivery live in the store).
//!
//! Subjects, for a cluster named `C` (`[cluster] name`, default `confab`):
//!
//! | subject | from | to | carries |
//! | --- | --- | --- | --- |
//! | `confab.C.p<N>.in.E` | edge `E` | the owner of partition `N` | opens, data, closes, and `Alive` every 0.5 s |
//! | `confab.C.edge.E.out` | an owner | edge `E` | data and closes |
//! | `confab.C.p<N>.owner` | the owner of partition `N` | every edge | its token, whether it is leaving, and its name, every 0.5 s |
//!
//! One partition (`N` = 0): the standbys are edges, relaying every
//! connection. A split state: each node owns the partitions it serves
//! (one [`host::RelayHost`] each) and is an edge for the others: a
//! connection whose frame goes to a partition served by another node is
//! relayed from that frame on to that partition's owner, instead of
//! being closed 421.
//!
//! `E` is the edge's node name with every character other than ASCII
//! letters, digits, `-` and `_` replaced by `_`; each message also carries
//! the edge's incarnation, so two edges whose names map to one `E` never
//! take each other's messages. An owner silent for [`SILENT_AFTER`] (or
//! replaced: a heartbeat with a greater token) has its relayed connections
//! closed by the edges; an edge silent that long has its connections closed
//! by the owner.

pub mod bells;
pub mod edge;
pub mod envelope;
pub mod host;

use std::time::Duration;

/// How often an edge says it is alive and the owner beats.
pub const ALIVE_EVERY: Duration = Duration::from_millis(500);
/// Silence after which the other side is taken for gone.
pub const SILENT_AFTER: Duration = Duration::from_secs(2);
/// The largest data message (a NATS server takes 1 MiB by default).
pub const CHUNK: usize = 64 * 1024;

/// How long a publish may wait for room in the client's buffer (NATS
/// unreachable): past it the message is dropped, which the other side
/// sees as a gap or a silence, and the relay thread keeps serving.
pub const PUBLISH_WAIT: Duration = Duration::from_millis(250);

/// How long stopping a relay may spend telling the other side: past it the
/// rest learn from the silence.
pub const GOODBYE_WAIT: Duration = Duration::from_secs(1);
/// How often dropped messages are reported at `warn`.
const DROPS_EVERY: Duration = Duration::from_secs(10);

/// A publishing client that counts what NATS did not take and says so,
/// at most once per [`DROPS_EVERY`].
struct Publisher {
    client: async_nats::Client,
    dropped: std::cell::Cell<u64>,
    reported: std::cell::Cell<Option<std::time::Instant>>,
}

impl Publisher {
    fn new(client: async_nats::Client) -> Publisher {
        Publisher { client, dropped: std::cell::Cell::new(0), reported: std::cell::Cell::new(None) }
    }

    /// Publishes, dropping the message if NATS cannot take it within
    /// [`PUBLISH_WAIT`] (or refuses it): the other side sees a gap or a
    /// silence and ends what it concerns. Whether NATS took it.
    /// `subject` is made once per destination (a clone is a reference
    /// count), not per message.
    async fn publish(&self, subject: &async_nats::Subject, payload: bytes::Bytes) -> bool {
        let why = match tokio::time::timeout(PUBLISH_WAIT, self.client.publish(subject.clone(), payload)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "NATS did not take it in time".to_owned(),
        };
        self.dropped.set(self.dropped.get() + 1);
        let now = std::time::Instant::now();
        if self.reported.get().is_none_or(|t| now.duration_since(t) >= DROPS_EVERY) {
            self.reported.set(Some(now));
            tracing::warn!(
                dropped = self.dropped.get(),
                "relay: a message was dropped ({why}); the connections concerned end"
            );
        }
        false
    }

    /// The largest data body a message may carry: [`CHUNK`], or less if the
    /// NATS server's `max_payload` is smaller.
    fn chunk(&self) -> usize {
        // 0 before the server said (no connection yet): the default.
        match self.client.max_payload() {
            0 => CHUNK,
            max => CHUNK.min(max.saturating_sub(envelope::HEADER).max(1)),
        }
    }

    async fn flush(&self) {
        let _ = tokio::time::timeout(PUBLISH_WAIT, self.client.flush()).await;
    }
}

/// `bytes` cut into pieces of at most `size` (none for no bytes).
fn pieces(bytes: &bytes::Bytes, size: usize) -> impl Iterator<Item = bytes::Bytes> + '_ {
    let size = size.max(1);
    (0..bytes.len()).step_by(size).map(move |at| bytes.slice(at..(at + size).min(bytes.len())))
}

/// Where and as what a node relays (`[cluster] nats`, `name`, `node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The NATS server's URL (`nats://host:4222`; credentials and TLS as
    /// async-nats reads them from the URL).
    pub url: String,
    /// The cluster's name: the subjects' second token.
    pub cluster: String,
    /// This node's name (the lease's).
    pub node: String,
}

/// The subjects of one cluster (see the module docs).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects of cluster `cluster`.
    #[must_use]
    pub fn new(cluster: &str) -> Subjects {
        Subjects { prefix: format!("confab.{cluster}") }
    }

    /// Edge `node` to the owner of `partition`.
    #[must_use]
    pub fn inbound(&self, partition: u8, node: &str) -> String {
        format!("{}.p{partition}.in.{}", self.prefix, token(node))
    }

    /// Every edge to the owner of `partition` (what that owner subscribes to).
    #[must_use]
    pub fn inbound_all(&self, partition: u8) -> String {
        format!("{}.p{partition}.in.*", self.prefix)
    }

    /// The owner to edge `node` (`node` already a token when it came from
    /// [`Subjects::edge_of`]).
    #[must_use]
    pub fn outbound(&self, node: &str) -> String {
        format!("{}.edge.{}.out", self.prefix, token(node))
    }

    /// The heartbeat of `partition`'s owner.
    #[must_use]
    pub fn owner(&self, partition: u8) -> String {
        format!("{}.p{partition}.owner", self.prefix)
    }

    /// Every partition's owner's heartbeat (what an edge subscribes to).
    #[must_use]
    pub fn owner_all(&self) -> String {
        format!("{}.*.owner", self.prefix)
    }

    /// The partition of an owner's heartbeat subject.
    #[must_use]
    pub fn owner_partition(&self, subject: &str) -> Option<u8> {
        let text = subject.strip_prefix(&self.prefix)?.strip_prefix(".p")?.strip_suffix(".owner")?;
        let p: u8 = text.parse().ok()?;
        (p < confab_proto::server::MAX_PARTITIONS && p.to_string() == text).then_some(p)
    }

    /// The edge token of an inbound subject of `partition`.
    #[must_use]
    pub fn edge_of<'a>(&self, partition: u8, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(&format!(".p{partition}.in."))?;
        Some(rest).filter(|e| !e.is_empty() && !e.contains('.'))
    }
}

/// `url` without its credentials (`nats://user:pass@host` logs as
/// `nats://***@host`).
#[must_use]
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A node name as one subject token.
#[must_use]
pub fn token(node: &str) -> String {
    let t: String =
        node.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() { "_".to_owned() } else { t }
}

/// Whether `name` may name a cluster: 1 to 64 ASCII letters, digits, `-`, `_`.
#[must_use]
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Connects to NATS on `rt`, retrying in the background while the server
/// is unreachable (a node serves its own clients meanwhile).
async fn connect(config: &RelayConfig, role: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(format!("confab {role} {}", config.node))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        // Bytes of live connections. The buffers ride out bursts and bound
        // the memory a stalled NATS can hold (at most 64 KiB a message): a
        // message that finds them full is dropped, which shows as a gap and
        // ends its connection.
        .subscription_capacity(8192)
        .client_capacity(2048)
        .connect(config.url.as_str())
        .await
}

/// A current-thread runtime for one relay thread.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_the_documented_ones() {
        let s = Subjects::new("prod");
        assert_eq!(s.inbound(0, "node-a"), "confab.prod.p0.in.node-a");
        assert_eq!(s.inbound(51, "node-a"), "confab.prod.p51.in.node-a");
        assert_eq!(s.inbound_all(0), "confab.prod.p0.in.*");
        assert_eq!(s.inbound_all(3), "confab.prod.p3.in.*");
        assert_eq!(s.outbound("host:123"), "confab.prod.edge.host_123.out");
        assert_eq!(s.owner(0), "confab.prod.p0.owner");
        assert_eq!(s.owner(7), "confab.prod.p7.owner");
        assert_eq!(s.owner_all(), "confab.prod.*.owner");
        assert_eq!(s.owner_partition("confab.prod.p7.owner"), Some(7));
        assert_eq!(s.owner_partition("confab.prod.p0.owner"), Some(0));
        for other in ["confab.prod.p52.owner", "confab.prod.p07.owner", "confab.prod.px.owner", "confab.other.p1.owner"]
        {
            assert_eq!(s.owner_partition(other), None, "{other}");
        }
        assert_eq!(s.edge_of(0, "confab.prod.p0.in.node-a"), Some("node-a"));
        assert_eq!(s.edge_of(3, "confab.prod.p3.in.node-a"), Some("node-a"));
        assert_eq!(s.edge_of(0, "confab.prod.p3.in.node-a"), None);
        assert_eq!(s.edge_of(0, "confab.other.p0.in.node-a"), None);
        assert_eq!(s.edge_of(0, "confab.prod.p0.in."), None);
    }

    #[test]
    fn data_is_cut_into_pieces_of_the_chunk_at_most() {
        let b = bytes::Bytes::from(vec![1u8; 10]);
        let cut: Vec<usize> = pieces(&b, 4).map(|p| p.len()).collect();
        assert_eq!(cut, [4, 4, 2]);
        assert_eq!(pieces(&bytes::Bytes::new(), 4).count(), 0);
        assert_eq!(pieces(&b, 10).count(), 1);
    }

    #[test]
    fn credentials_never_reach_the_log() {
        assert_eq!(redacted("nats://alice:s3cret@nats.example:4222"), "nats://***@nats.example:4222");
        assert_eq!(redacted("tls://token@10.0.0.1:4222"), "tls://***@10.0.0.1:4222");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn node_names_become_one_token() {
        assert_eq!(token("a.b c*>"), "a_b_c__");
        assert_eq!(token(""), "_");
        assert_eq!(token("été"), "_t_");
        assert!(valid_cluster_name("confab-1_x"));
        assert!(!valid_cluster_name(""));
        assert!(!valid_cluster_name("a.b"));
        assert!(!valid_cluster_name(&"x".repeat(65)));
    }
}
