//! Expensive work handed out of the machine: argon2id hashing.
//!
//! A [`Job`] is pure: [`Job::run`] needs nothing but the job. An adapter runs
//! jobs on a small thread pool and feeds each [`JobResult`] back through
//! [`Server::handle_work`](crate::Server::handle_work); a simulator runs them
//! in virtual time. Routing never waits for a hash.
//!
//! argon2 needs `m_cost` KiB of working memory per hash (19 MiB with the
//! OWASP parameters). [`Job::run`] allocates it for each hash and frees it
//! after; a pool that hashes all day gives each thread a [`Scratch`] and
//! calls [`Job::run_with`], so one buffer per thread is reused for every
//! hash and its memory stays bounded by threads x `m_cost`, whatever the
//! allocator does with large blocks freed in a row.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::Zeroizing;

use super::config::HashParams;

/// Identifies a job within one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

pub(crate) struct HashTask {
    /// The password or passphrase: overwritten when the job is dropped.
    pub(crate) secret: Zeroizing<Vec<u8>>,
    pub(crate) salt: [u8; 16],
    pub(crate) params: HashParams,
}

/// Password and passphrase hashes to compute.
pub struct Job {
    /// Echoed in the result.
    pub id: JobId,
    pub(crate) tasks: Vec<HashTask>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("Job").field("id", &self.id).field("hashes", &self.tasks.len()).finish()
    }
}

/// The outcome of a [`Job`].
pub struct JobResult {
    /// The job's id.
    pub id: JobId,
    /// One hash per task, or `None` if argon2 refused the parameters.
    pub(crate) hashes: Option<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobResult").field("id", &self.id).field("ok", &self.hashes.is_some()).finish()
    }
}

impl Job {
    /// Computes the hashes: tens of milliseconds each with OWASP parameters.
    /// Allocates argon2's memory for each hash and frees it after; see
    /// [`run_with`](Self::run_with) to reuse one buffer.
    #[must_use]
    pub fn run(&self) -> JobResult {
        self.run_with(&mut Scratch::new())
    }

    /// Like [`run`](Self::run), with argon2's memory taken from `scratch`,
    /// which grows to the largest `m_cost` of the job's hashes if it holds
    /// less and keeps its memory for the next job.
    #[must_use]
    pub fn run_with(&self, scratch: &mut Scratch) -> JobResult {
        let hashes = self.tasks.iter().map(|t| hash(t, scratch)).collect::<Option<Vec<_>>>();
        JobResult { id: self.id, hashes }
    }

    /// How much work this job is, in KiB-iterations (for simulated durations).
    #[must_use]
    pub fn cost(&self) -> u64 {
        self.tasks.iter().map(|t| u64::from(t.params.m_cost_kib) * u64::from(t.params.t_cost)).sum()
    }
}

/// argon2's working memory, reusable from one [`Job`] to the next (one per
/// hashing thread): [`Job::run_with`] grows it to what a hash needs (one
/// 1 KiB block per KiB of `m_cost`) and it keeps that memory until
/// [`release`](Self::release)d or dropped. Its contents are overwritten
/// by every hash before they are read.
#[derive(Default)]
pub struct Scratch {
    blocks: Vec<Block>,
    min_kib: usize,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("held_kib", &self.held_kib()).field("min_kib", &self.min_kib).finish()
    }
}

impl Scratch {
    /// An empty scratch: its first hash allocates what it needs.
    #[must_use]
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// An empty scratch whose allocations reserve at least `min_kib` KiB of
    /// address space, of which a hash touches only what it needs. An
    /// adapter uses it to make the allocator serve the buffer from its own
    /// memory map, so that [`release`](Self::release) gives it back to the
    /// operating system (glibc maps every request above 32 MiB on its own).
    #[must_use]
    pub fn reserving(min_kib: usize) -> Scratch {
        Scratch { blocks: Vec::new(), min_kib }
    }

    /// The memory in use, in KiB: the blocks the largest hash since the
    /// last release initialised (0 when empty). The address space reserved
    /// may be larger (see [`reserving`](Self::reserving)).
    #[must_use]
    pub fn held_kib(&self) -> usize {
        self.blocks.len()
    }

    /// Frees the memory held; the next hash allocates again.
    pub fn release(&mut self) {
        self.blocks = Vec::new();
    }

    /// At least `n` blocks, initialised.
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.blocks.capacity() < n {
            // Free the smaller buffer first: never hold two.
            self.release();
            self.blocks = Vec::with_capacity(n.max(self.min_kib));
        }
        if self.blocks.len() < n {
            self.blocks.resize(n, Block::new());
        }
        &mut self.blocks
    }
}

fn argon2_params(p: HashParams) -> Option<Params> {
    Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).ok()
}

fn hash(task: &HashTask, scratch: &mut Scratch) -> Option<[u8; 32]> {
    let params = argon2_params(task.params)?;
    let memory = scratch.blocks(params.block_count());
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(&task.secret, &task.salt, &mut out, memory)
        .ok()?;
    Some(out)
}
