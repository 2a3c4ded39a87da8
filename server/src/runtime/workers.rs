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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use confab_proto::server::{Job, JobResult, Scratch};

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
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The queue and the condition workers wait on.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is a plain list: a worker that panicked holding the
        // lock left it consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job; `None` once the pool is closed. A worker holding
    /// memory (`holding`) gets `Some(None)` after [`IDLE_RELEASE`] without a job.
    fn next(&self, holding: bool) -> Option<Option<Job>> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(Some(job));
            }
            if queue.closed {
                return None;
            }
            if holding {
                let (q, wait) = self.ready.wait_timeout(queue, IDLE_RELEASE).unwrap_or_else(PoisonError::into_inner);
                queue = q;
                if wait.timed_out() && queue.jobs.is_empty() && !queue.closed {
                    return Some(None);
                }
            } else {
                queue = self.ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// A fixed pool of threads running [`Job`]s; results come back through a
/// channel and a waker of the loop.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    results: mpsc::Receiver<JobResult>,
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
                    let Some(job) = next else {
                        tracing::debug!(kib = scratch.held_kib(), "argon2 worker idle: buffer released");
                        scratch.release();
                        continue;
                    };
                    if res_tx.send(job.run_with(&mut scratch)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            });
            match handle {
                Ok(h) => threads.push(h),
                Err(e) => {
                    // Stop the threads already started before failing.
                    drop(Workers { shared, results: res_rx, threads });
                    return Err(e);
                }
            }
        }
        Ok(Workers { shared, results: res_rx, threads })
    }

    /// Queues a job.
    pub(crate) fn submit(&self, job: Job) {
        let mut queue = self.shared.lock();
        if !queue.closed {
            queue.jobs.push_back(job);
            self.shared.ready.notify_one();
        }
    }

    /// A finished job, if any.
    pub(crate) fn try_result(&self) -> Option<JobResult> {
        self.results.try_recv().ok()
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
