//! Expensive work handed out of the machine: argon2id hashing.
//!
//! A [`Job`] is pure: [`Job::run`] needs nothing but the job. An adapter runs
//! jobs on a small thread pool and feeds each [`JobResult`] back through
//! [`Server::handle_work`](crate::Server::handle_work); a simulator runs them
//! in virtual time. Routing never waits for a hash.

use argon2::{Algorithm, Argon2, Params, Version};
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
    #[must_use]
    pub fn run(&self) -> JobResult {
        let hashes = self.tasks.iter().map(hash).collect::<Option<Vec<_>>>();
        JobResult { id: self.id, hashes }
    }

    /// How much work this job is, in KiB-iterations (for simulated durations).
    #[must_use]
    pub fn cost(&self) -> u64 {
        self.tasks.iter().map(|t| u64::from(t.params.m_cost_kib) * u64::from(t.params.t_cost)).sum()
    }
}

fn hash(task: &HashTask) -> Option<[u8; 32]> {
    let p = task.params;
    let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).ok()?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(&task.secret, &task.salt, &mut out)
        .ok()?;
    Some(out)
}
