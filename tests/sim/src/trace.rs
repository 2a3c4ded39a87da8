//! What a run did, reduced to a digest (to prove two runs identical) and,
//! when asked, readable lines; and the guard that prints the seed when a
//! run panics.

use std::fmt::Write as _;
use std::time::Duration;

/// The run's fingerprint: FNV-1a over every step, plus optional lines.
#[derive(Debug, Clone)]
pub struct Trace {
    digest: u64,
    steps: u64,
    lines: Option<Vec<String>>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// An empty trace; `keep_lines` records a readable line per step.
    #[must_use]
    pub fn new(keep_lines: bool) -> Trace {
        Trace { digest: FNV_OFFSET, steps: 0, lines: keep_lines.then(Vec::new) }
    }

    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.digest ^= u64::from(*b);
            self.digest = self.digest.wrapping_mul(FNV_PRIME);
        }
    }

    /// Records one step at virtual time `at`. `what` is only formatted when
    /// lines are kept; `key` (cheap) always feeds the digest.
    pub fn step(&mut self, at: Duration, key: &[u8], what: impl FnOnce() -> String) {
        self.steps += 1;
        self.mix(&u64::try_from(at.as_micros()).unwrap_or(u64::MAX).to_le_bytes());
        self.mix(key);
        if let Some(lines) = self.lines.as_mut() {
            let mut line = String::new();
            let _ = write!(line, "{:>5}.{:06} ", at.as_secs(), at.subsec_micros());
            line.push_str(&what());
            lines.push(line);
        }
    }

    /// Records a step whose description is also its digest key.
    pub fn note(&mut self, at: Duration, what: &str) {
        self.step(at, what.as_bytes(), || what.to_owned());
    }

    /// The digest of every step so far.
    #[must_use]
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Steps recorded.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The readable lines, if kept.
    #[must_use]
    pub fn lines(&self) -> Option<&[String]> {
        self.lines.as_deref()
    }
}

/// Prints `simulation failed: replay with CONFAB_SIM_SEED=<seed>` if it is
/// dropped while its thread panics. Hold one for as long as a failure
/// should be attributed to the seed.
#[derive(Debug)]
pub struct SeedGuard {
    seed: u64,
}

impl SeedGuard {
    /// A guard for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SeedGuard {
        SeedGuard { seed }
    }

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation failed: replay with CONFAB_SIM_SEED={}", self.seed);
        }
    }
}
