//! The argon2 worker pool: password hashes run off the loop's thread, so
//! routing never waits for a login (the core hands them out with each
//! turn, `Turn::take_jobs`).

use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use confab_proto::server::{Job, JobResult};

/// A fixed pool of threads running [`Job`]s; results come back through a
/// channel and a waker of the loop.
pub(crate) struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<JobResult>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// `n` threads (at least one); each result wakes the loop with `waker`.
    pub(crate) fn start(n: usize, waker: Arc<mio::Waker>) -> std::io::Result<Workers> {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (res_tx, res_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let res_tx = res_tx.clone();
            let waker = Arc::clone(&waker);
            let handle = thread::Builder::new().name(format!("confab-argon2-{i}")).spawn(move || {
                loop {
                    // A poisoned lock means another worker panicked while
                    // waiting: the pool is shutting down either way.
                    let next = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    if res_tx.send(job.run()).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
            threads.push(handle);
        }
        Ok(Workers { jobs: Some(job_tx), results: res_rx, threads })
    }

    /// Queues a job.
    pub(crate) fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // The workers only stop when `jobs` is dropped.
            let _ = tx.send(job);
        }
    }

    /// A finished job, if any.
    pub(crate) fn try_result(&self) -> Option<JobResult> {
        self.results.try_recv().ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
