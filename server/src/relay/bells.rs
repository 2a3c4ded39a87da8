//! Doorbells between the nodes of a split state (docs/PARTITIONS.md,
//! "Mail"): after a commit that mailed a partition served by another node,
//! the node publishes on that partition's bell, `confab.C.p<T>.bell`; the
//! node serving `T` hears it and has its carrier read at once instead of
//! at its next poll (`mail_poll_ms`).
//!
//! A bell carries no mail and no secret (its body is the ringing node's
//! name, for the logs): the mail is in the store, committed before the
//! bell rings. A bell lost, delayed, repeated or forged costs at most a
//! read of the outbox (a forged one) or the catch-up delay (a lost one):
//! nothing is delivered twice, nothing is lost. Many bells while one read
//! is under way make one more read (the carrier coalesces its rings).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::RelayConfig;
use confab_proto::server::PartitionId;

/// The bell of partition `target` in cluster `cluster`.
#[must_use]
pub fn subject(cluster: &str, target: PartitionId) -> String {
    format!("confab.{cluster}.p{target}.bell")
}

/// Every bell of cluster `cluster` (what a node subscribes to).
#[must_use]
pub fn every_bell(cluster: &str) -> String {
    format!("confab.{cluster}.*.bell")
}

/// The partition whose bell `subject` is, in cluster `cluster`.
#[must_use]
pub fn target_of(cluster: &str, subject: &str) -> Option<PartitionId> {
    let rest = subject.strip_prefix("confab.")?.strip_prefix(cluster)?.strip_prefix(".p")?;
    let digits = rest.strip_suffix(".bell")?;
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The partitions a node serves, as a set of bits (a split state has at
/// most 52): the bells it answers.
#[derive(Debug, Clone, Default)]
pub struct Served(Arc<AtomicU64>);

impl Served {
    /// `partition` is served here from now on.
    pub fn add(&self, partition: PartitionId) {
        self.0.fetch_or(bit(partition), Ordering::SeqCst);
    }

    /// `partition` is not served here any more.
    pub fn remove(&self, partition: PartitionId) {
        self.0.fetch_and(!bit(partition), Ordering::SeqCst);
    }

    /// Whether `partition` is served here.
    #[must_use]
    pub fn contains(&self, partition: PartitionId) -> bool {
        self.0.load(Ordering::SeqCst) & bit(partition) != 0
    }
}

/// The partitions of a set as bits, in order.
pub fn partitions_of(mut bits: u64) -> impl Iterator<Item = PartitionId> {
    std::iter::from_fn(move || {
        if bits == 0 {
            return None;
        }
        let lowest = bits.trailing_zeros();
        // The lowest bit cleared.
        bits &= bits - 1;
        PartitionId::try_from(lowest).ok()
    })
}

/// The bit of `partition` in a set of partitions as bits (a split state
/// has at most 52; out of range: no bit).
#[must_use]
pub fn bit(partition: PartitionId) -> u64 {
    1u64.checked_shl(u32::from(partition)).unwrap_or(0)
}

/// A node's doorbells: a thread with its NATS client. Dropping it stops
/// the thread.
#[derive(Debug)]
pub struct Bells {
    ring: mpsc::UnboundedSender<PartitionId>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bells {
    /// Starts the bells of `config`'s cluster: a bell of a partition in
    /// `served` calls `heard` (on the bells' thread).
    ///
    /// # Errors
    /// The thread or its runtime cannot be made.
    pub fn start(config: RelayConfig, served: Served, heard: impl Fn() + Send + 'static) -> std::io::Result<Bells> {
        let (ring, rings) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let rt = super::runtime()?;
        let thread = std::thread::Builder::new().name("confab-bells".into()).spawn(move || {
            rt.block_on(serve(config, served, Box::new(heard), rings, stopped));
        })?;
        Ok(Bells { ring, stop: Some(stop), thread: Some(thread) })
    }

    /// Rings `target`'s bell: this node committed mail for it.
    pub fn ring(&self, target: PartitionId) {
        let _ = self.ring.send(target);
    }
}

impl Drop for Bells {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    config: RelayConfig,
    served: Served,
    heard: Box<dyn Fn() + Send>,
    mut rings: mpsc::UnboundedReceiver<PartitionId>,
    mut stopped: oneshot::Receiver<()>,
) {
    let client = match super::connect(&config, "bells").await {
        Ok(c) => c,
        Err(e) => {
            warn!(nats = %super::redacted(&config.url), "bells: cannot use NATS ({e}); mail between nodes waits for the catch-up poll");
            return;
        }
    };
    let mut bells = match client.subscribe(every_bell(&config.cluster)).await {
        Ok(s) => s,
        Err(e) => {
            warn!("bells: cannot subscribe ({e}); mail between nodes waits for the catch-up poll");
            return;
        }
    };
    info!(nats = %super::redacted(&config.url), cluster = %config.cluster, "bells: ringing and listening");
    let publisher = super::Publisher::new(client);
    let body = bytes::Bytes::from(config.node.clone().into_bytes());
    let subjects: Vec<async_nats::Subject> =
        (0..=PartitionId::MAX).map(|t| subject(&config.cluster, t).into()).collect();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            Some(target) = rings.recv() => {
                publisher.publish(&subjects[usize::from(target)], body.clone()).await;
            }
            Some(msg) = bells.next() => match target_of(&config.cluster, &msg.subject) {
                Some(target) if served.contains(target) => heard(),
                Some(target) => debug!(target, "bells: a bell for a partition served elsewhere"),
                None => debug!(subject = %msg.subject, "bells: not a bell"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Served, bit, every_bell, partitions_of, subject, target_of};

    #[test]
    fn bells_are_the_documented_subjects_and_only_they_are_heard() {
        assert_eq!(subject("prod", 7), "confab.prod.p7.bell");
        assert_eq!(every_bell("prod"), "confab.prod.*.bell");
        assert_eq!(target_of("prod", "confab.prod.p7.bell"), Some(7));
        assert_eq!(target_of("prod", "confab.prod.p51.bell"), Some(51));
        for not in [
            "confab.other.p7.bell",
            "confab.prod.p.bell",
            "confab.prod.p007.bell",
            "confab.prod.p7.in.e",
            "confab.prod.px.bell",
            "confab.prod.p7",
            "confab.prod.p256.bell",
        ] {
            assert_eq!(target_of("prod", not), None, "{not}");
        }
        let served = Served::default();
        served.add(3);
        served.add(51);
        assert!(served.contains(3) && served.contains(51) && !served.contains(4));
        served.remove(3);
        assert!(!served.contains(3) && served.contains(51));
        // Out of the set's range: never served.
        served.add(200);
        assert!(!served.contains(200));
        assert_eq!(partitions_of(bit(0) | bit(7) | bit(51)).collect::<Vec<_>>(), [0, 7, 51]);
        assert_eq!(partitions_of(0).count(), 0);
        assert_eq!(partitions_of(u64::MAX).count(), 64);
    }
}
