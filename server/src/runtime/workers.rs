//! The argon2 worker pool: password hashes run off the loop's thread, so
//! routing never waits for a login (the core hands them out with each
//! turn, `Turn::take_jobs`).
//!
//! Memory: each worker hashes in one [`Scratch`] of its own, reused for
//! every job, so hashing holds at most workers x `m_cost` (19 MiB each with
//! the OWASP parameters) however many logins arrive. A worker that has had
//! no job for [`IDLE_RELEASE`] frees its buffer. The buffer reserves at
//! least [`RESERVE_KIB`] of address space, so glibc's malloc maps it on its
//! own and the free is a `munmap`: the pages go back to the system. (A
//! buffer below 32 MiB would come from the thread's arena once glibc has
//! raised its mmap threshold, on the first free of such a block, and a
//! free would keep the pages: with a block allocated per hash, a burst of
//! 12 registrations on two workers left 413 MiB that never came back;
//! docs/BENCHMARKS.md, "Memory after a burst of logins".)

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use confab_proto::server::{Job, JobResult, PartitionId, Scratch};

/// How long a worker keeps its argon2 buffer without a job. Allocating it
/// again costs its page faults, about 15 ms for 19 MiB on the two-core VM
/// of docs/BENCHMARKS.md (a hash takes 25-40 ms there): paid by the first
/// hash after a quiet spell, never within a burst. A short delay gives
/// the memory back soon after a burst for that small price.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(2);

/// The least address space a worker's buffer reserves (33 MiB): above
/// glibc's largest mmap threshold (32 MiB on 64-bit), so the buffer is
/// always its own mapping. A hash touches only its `m_cost`; the rest is
/// never resident.
pub(crate) const RESERVE_KIB: usize = 33 * 1024;

/// Jobs waiting for a worker, and whether the pool is stopping.
struct Queue<J> {
    /// Per partition whose core asked, in the order asked.
    jobs: BTreeMap<PartitionId, VecDeque<J>>,
    /// The partition served next, or the first after it with a job: the
    /// cores of a split state take turns, so that a flood of logins at one
    /// partition does not make another's wait behind it (each core admits
    /// jobs by the pace at which its own come back).
    turn: PartitionId,
    closed: bool,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Queue { jobs: BTreeMap::new(), turn: 0, closed: false }
    }
}

impl<J> Queue<J> {
    fn push(&mut self, partition: PartitionId, job: J) {
        self.jobs.entry(partition).or_default().push_back(job);
    }

    fn pop(&mut self) -> Option<(PartitionId, J)> {
        let partition = self
            .jobs
            .range(self.turn..)
            .chain(self.jobs.range(..self.turn))
            .find(|(_, q)| !q.is_empty())
            .map(|(p, _)| *p)?;
        let queue = self.jobs.get_mut(&partition)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.jobs.remove(&partition);
        }
        self.turn = partition.wrapping_add(1);
        Some((partition, job))
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// A job, and the generation of its core when it was asked.
type Stamped = (u64, Job);

/// The queue and the condition workers wait on.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue<Stamped>>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue<Stamped>> {
        // The queue is a plain list: a worker that panicked holding the
        // lock left it consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job; `None` once the pool is closed. A worker holding
    /// memory (`holding`) gets `Some(None)` after [`IDLE_RELEASE`] without a job.
    fn next(&self, holding: bool) -> Option<Option<(PartitionId, Stamped)>> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.pop() {
                return Some(Some(job));
            }
            if queue.closed {
                return None;
            }
            if holding {
                let (q, wait) = self.ready.wait_timeout(queue, IDLE_RELEASE).unwrap_or_else(PoisonError::into_inner);
                queue = q;
                if wait.timed_out() && queue.is_empty() && !queue.closed {
                    return Some(None);
                }
            } else {
                queue = self.ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// A fixed pool of threads running [`Job`]s for the node's cores; results
/// come back, with the partition of the core that asked, through a channel
/// and a waker of the loop. A core stopped ([`retire`](Workers::retire))
/// gets none of its results: a later core of its partition never sees them.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    results: mpsc::Receiver<(PartitionId, u64, JobResult)>,
    /// Per partition, the generation of its core (0 until one retired).
    generations: BTreeMap<PartitionId, u64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// `n` threads (at least one); each result wakes the loop with `waker`.
    pub(crate) fn start(n: usize, waker: Arc<mio::Waker>) -> std::io::Result<Workers> {
        let shared = Arc::new(Shared::default());
        let (res_tx, res_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let queue = Arc::clone(&shared);
            let res_tx = res_tx.clone();
            let waker = Arc::clone(&waker);
            let handle = thread::Builder::new().name(format!("confab-argon2-{i}")).spawn(move || {
                let mut scratch = Scratch::reserving(RESERVE_KIB);
                while let Some(next) = queue.next(scratch.held_kib() > 0) {
                    let Some((partition, (generation, job))) = next else {
                        tracing::debug!(kib = scratch.held_kib(), "argon2 worker idle: buffer released");
                        scratch.release();
                        continue;
                    };
                    if res_tx.send((partition, generation, job.run_with(&mut scratch))).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // Stop the threads already started before failing.
                    drop(Workers { shared, results: res_rx, generations: BTreeMap::new(), threads });
                    return Err(e);
                }
            }
        }
        Ok(Workers { shared, results: res_rx, generations: BTreeMap::new(), threads })
    }

    /// Queues a job of `partition`'s core.
    pub(crate) fn submit(&self, partition: PartitionId, job: Job) {
        let generation = self.generation(partition);
        let mut queue = self.shared.lock();
        if !queue.closed {
            queue.push(partition, (generation, job));
            self.shared.ready.notify_one();
        }
    }

    /// A finished job and the partition of its core, if any: results of
    /// retired cores are dropped.
    pub(crate) fn try_result(&self) -> Option<(PartitionId, JobResult)> {
        loop {
            let (partition, generation, result) = self.results.try_recv().ok()?;
            if generation == self.generation(partition) {
                return Some((partition, result));
            }
        }
    }

    /// `partition`'s core stopped: its jobs still queued are dropped, and
    /// the results of those running never come back.
    pub(crate) fn retire(&mut self, partition: PartitionId) {
        *self.generations.entry(partition).or_default() += 1;
        self.shared.lock().jobs.remove(&partition);
    }

    fn generation(&self, partition: PartitionId) -> u64 {
        self.generations.get(&partition).copied().unwrap_or(0)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use confab_proto::server::{HashParams, Job};
    use confab_proto::wire::{Message, Register, Request};
    use confab_proto::{Now, Server, ServerConfig};

    use super::{Queue, Workers};

    /// Two password jobs of one core (two registrations), ids apart.
    fn two_jobs() -> (Job, Job) {
        let config = ServerConfig { hash_params: HashParams::INSECURE_FAST, ..Default::default() };
        let now = Now::new(Instant::now(), 1_000_000);
        let mut server = Server::new(config, [7; 32], now).expect("config");
        let mut job = |name: &str| {
            let session = server.open_session(now).expect("session");
            let body = Register {
                username: name.into(),
                password: "a long enough password".into(),
                passphrase: "correct horse battery".into(),
                identity_key: vec![7; 32].into(),
            };
            let frame = Message::Request(Request { request_id: 1, timestamp_ms: 0, body: body.into() }).to_bytes(&[]);
            server.handle_input(now, session, &frame);
            server.drain().take_jobs().pop().expect("a password job")
        };
        (job("alice"), job("bob"))
    }

    /// A retired core's jobs, queued or running, never give a result: a
    /// later core of the same partition never sees them.
    #[test]
    fn a_retired_cores_results_never_come_back() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let mut workers = Workers::start(1, waker).expect("workers");
        let (old, new) = two_jobs();
        let (old_id, new_id) = (old.id, new.id);
        assert_ne!(old_id, new_id);
        workers.submit(1, old);
        workers.retire(1);
        workers.submit(1, new);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while Instant::now() < deadline && !got.contains(&new_id) {
            while let Some((partition, result)) = workers.try_result() {
                assert_eq!(partition, 1);
                got.push(result.id);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Time for the old job's result, had it been kept.
        std::thread::sleep(Duration::from_millis(200));
        while let Some((_, result)) = workers.try_result() {
            got.push(result.id);
        }
        assert_eq!(got, [new_id], "only the later core's job");
    }

    #[test]
    fn the_cores_jobs_take_turns() {
        let mut queue = Queue::default();
        for job in ["a1", "a2", "a3"] {
            queue.push(1, job);
        }
        queue.push(3, "c1");
        queue.push(0, "z1");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        // A flood at partition 1 does not hold the others' jobs behind it.
        assert_eq!(order, [(0, "z1"), (1, "a1"), (3, "c1"), (1, "a2"), (1, "a3")]);
        assert!(queue.is_empty());
        // One partition (a single server): the order asked.
        for job in ["x", "y", "z"] {
            queue.push(0, job);
        }
        assert_eq!(std::iter::from_fn(|| queue.pop()).collect::<Vec<_>>(), [(0, "x"), (0, "y"), (0, "z")]);
    }
}
