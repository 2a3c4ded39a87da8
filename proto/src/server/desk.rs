//! [`Desk`]: the account desk. Names being registered, password checks in
//! flight (the hash jobs handed out and what to do when each comes back),
//! and the password-guess limits per account and per source.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::pace::{HashPace, SATURATED};
use super::ratelimit::{Blocked, FailureWindow, Limiter};
use super::refusal::Refusal;
use super::state::State;
use super::work::JobId;
use super::{ServerConfig, SessionId, SourceKey};

/// What to do when a job comes back.
#[derive(Debug)]
pub(crate) enum Pending {
    Register {
        session: SessionId,
        request_id: u32,
        username: String,
        identity_key: Bytes,
        salts: [[u8; 16]; 2],
    },
    Login {
        session: SessionId,
        request_id: u32,
        username: String,
        /// Where the attempt came from (its in-flight slot is released on return).
        source: SourceKey,
        /// The stored hash, or `None` for an unknown user (the job ran anyway).
        expected: Option<[u8; 32]>,
    },
    Passphrase {
        session: SessionId,
        request_id: u32,
        username: String,
        source: SourceKey,
        expected: [u8; 32],
    },
}

impl Pending {
    /// The session waiting for the job.
    pub(crate) fn session(&self) -> SessionId {
        match self {
            Pending::Register { session, .. }
            | Pending::Login { session, .. }
            | Pending::Passphrase { session, .. } => *session,
        }
    }
}

/// The account desk. Keeps its invariants: a name being registered is
/// reserved until its job returns, an attempt in flight holds a slot of its
/// account's and source's budgets until it returns, and at most
/// `max_pending_jobs` jobs are out.
#[derive(Debug)]
pub(crate) struct Desk {
    /// Names being registered (their hash job is out).
    reserved: BTreeSet<String>,
    /// Failed and in-flight password checks per account name.
    accounts: Limiter<String>,
    /// Failed and in-flight password checks per source.
    sources: Limiter<SourceKey>,
    jobs: BTreeMap<JobId, Pending>,
    next_job: u64,
    /// How fast jobs come back under load.
    pace: HashPace,
    /// Keys the fake salts and secrets of unknown users, so a probe always gets the same.
    dummy_key: [u8; 32],
}

impl Desk {
    pub(crate) fn new(config: &ServerConfig, dummy_key: [u8; 32]) -> Desk {
        Desk {
            reserved: BTreeSet::new(),
            accounts: Limiter::new(config.max_tracked_accounts),
            sources: Limiter::new(config.max_tracked_sources),
            jobs: BTreeMap::new(),
            next_job: 1,
            pace: HashPace::default(),
            dummy_key,
        }
    }

    pub(crate) fn is_reserved(&self, username: &str) -> bool {
        self.reserved.contains(username)
    }

    pub(crate) fn reserve(&mut self, username: &str) {
        self.reserved.insert(username.to_owned());
    }

    pub(crate) fn release(&mut self, username: &str) {
        self.reserved.remove(username);
    }

    /// Whether `max_accounts` accounts exist or are being registered.
    pub(crate) fn accounts_full(&self, state: &State, config: &ServerConfig) -> bool {
        state.accounts().user_count() + self.reserved.len() >= config.partitions.share(config.max_accounts)
    }

    /// The refusal of a new account when [`accounts_full`](Self::accounts_full).
    pub(crate) fn accounts_full_refusal(config: &ServerConfig) -> Refusal {
        let (cap, parts) = (config.max_accounts, config.partitions);
        match parts.is_split() {
            false => Refusal::QueueFull(format!("this server has reached its limit of {cap} accounts")),
            true => Refusal::QueueFull(format!(
                "partition {} of this server has reached its limit of {} accounts ({cap} in all)",
                parts.index,
                parts.share(cap)
            )),
        }
    }

    /// Refuses with 503 and an honest `retry_after_ms` when `max_pending_jobs` jobs are out,
    /// or when, at the measured pace, a new job would not be answered within `login_wait`
    /// (its requester would have given up: see [`HashPace`]).
    pub(crate) fn check_capacity(&self, config: &ServerConfig) -> Result<(), Refusal> {
        let out = self.jobs.len();
        if out < SATURATED && out < config.max_pending_jobs {
            // A short queue is answered soon whatever the pace says (a stall measured once
            // must not close the desk: no job would ever come back to correct it).
            return Ok(());
        }
        let Some(gap) = self.pace.gap() else {
            // Pace unknown (no load seen yet): the hard bound only, retry in a second.
            return if out >= config.max_pending_jobs { Err(Refusal::busy(Duration::from_secs(1))) } else { Ok(()) };
        };
        let wait = self.pace.wait(out).unwrap_or(Duration::MAX);
        if out < config.max_pending_jobs && wait <= config.login_wait {
            return Ok(());
        }
        // When enough jobs will have come back for a new one to fit both bounds.
        let over_max = u32::try_from((out + 1).saturating_sub(config.max_pending_jobs)).unwrap_or(u32::MAX);
        let drained = gap.saturating_mul(over_max).max(wait.saturating_sub(config.login_wait));
        Err(Refusal::busy(drained.max(gap)))
    }

    /// Hands out a job id for `pending`.
    pub(crate) fn start(&mut self, pending: Pending) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(id, pending);
        id
    }

    /// What to do with the result of job `id`, back at `now` (`None`: not ours, or already done).
    pub(crate) fn finish(&mut self, now: Instant, id: JobId) -> Option<Pending> {
        let pending = self.jobs.remove(&id)?;
        self.pace.finished(now, self.jobs.len());
        Some(pending)
    }

    /// 429 with the retry time if the account, the source or the session (`failures`) is over
    /// its failure budget (attempts being hashed count), or the account has an attempt being
    /// hashed.
    pub(crate) fn check_attempt(
        &mut self,
        now: Instant,
        config: &ServerConfig,
        username: &str,
        source: SourceKey,
        failures: Option<&mut FailureWindow>,
    ) -> Result<(), Refusal> {
        let (window, burst) = (config.login_window, config.login_burst);
        let by_account = self.accounts.blocked(&username.to_owned(), now, window, burst, 1);
        let source_burst = config.login_source_burst;
        let by_source = match source {
            SourceKey::Local => None,
            _ => self.sources.blocked(&source, now, window, source_burst, source_burst),
        };
        let by_session = failures.and_then(|f| f.blocked(now, window, burst, 1));
        let Some(blocked) = [by_account, by_source, by_session].into_iter().flatten().max_by_key(|b| b.wait()) else {
            return Ok(());
        };
        let retry_after_ms = blocked.wait().as_millis() as u64;
        let seconds = retry_after_ms.div_ceil(1000);
        let reason = match blocked {
            Blocked::Failures(_) => format!("too many failed attempts: retry in {seconds} s"),
            Blocked::InFlight => format!("another login attempt is being checked: retry in {seconds} s"),
        };
        Err(Refusal::RateLimited { reason, retry_after_ms })
    }

    /// A password or passphrase of `username` is handed out for hashing: it takes a slot of
    /// the account's and the source's budgets until it returns.
    pub(crate) fn begin_attempt(&mut self, now: Instant, config: &ServerConfig, username: &str, source: SourceKey) {
        let (window, burst) = (config.login_window, config.login_burst);
        self.accounts.begin(&username.to_owned(), now, window, burst);
        if source != SourceKey::Local {
            self.sources.begin(&source, now, window, config.login_source_burst);
        }
    }

    /// The attempt of [`begin_attempt`](Self::begin_attempt) came back: a failure is recorded
    /// against the account and the source, whether or not its connection is still open.
    pub(crate) fn end_attempt(
        &mut self,
        now: Instant,
        config: &ServerConfig,
        username: &str,
        source: SourceKey,
        failed: bool,
    ) {
        let (window, burst) = (config.login_window, config.login_burst);
        self.accounts.end(&username.to_owned(), now, window, burst, failed);
        if source != SourceKey::Local {
            self.sources.end(&source, now, window, config.login_source_burst, failed);
        }
    }

    /// The salt an unknown user's password is hashed with: stable per name, so neither the
    /// answer nor its timing tells whether the user exists.
    pub(crate) fn dummy_salt(&self, username: &str) -> [u8; 16] {
        let digest = Sha256::new().chain_update(self.dummy_key).chain_update(username.as_bytes()).finalize();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&digest[..16]);
        salt
    }

    /// The code secret of an unknown user: a secret nobody has, stable per name.
    pub(crate) fn unknown_user_secret(&self, username: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.dummy_key)
            .chain_update(b"confab-code-unknown-user")
            .chain_update(username.as_bytes())
            .finalize()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> ServerConfig {
        ServerConfig { max_accounts: 2, max_pending_jobs: 1, login_burst: 2, ..ServerConfig::default() }
    }

    #[test]
    fn a_name_being_registered_takes_an_account_slot() {
        let config = config();
        let mut desk = Desk::new(&config, [0; 32]);
        let state = State::new(20, 8);
        desk.reserve("al");
        desk.reserve("bo");
        assert!(desk.is_reserved("al") && desk.accounts_full(&state, &config));
        desk.release("bo");
        assert!(!desk.accounts_full(&state, &config));
    }

    #[test]
    fn jobs_are_bounded_and_finish_once() {
        let config = config();
        let mut desk = Desk::new(&config, [0; 32]);
        let pending = Pending::Passphrase {
            session: SessionId(4),
            request_id: 1,
            username: "al".into(),
            source: SourceKey::Local,
            expected: [0; 32],
        };
        let id = desk.start(pending);
        assert_eq!(desk.check_capacity(&config).map_err(|r| r.code()), Err(503));
        let t0 = Instant::now();
        assert_eq!(desk.finish(t0, id).map(|p| p.session()), Some(SessionId(4)));
        assert!(desk.finish(t0, id).is_none());
        assert!(desk.check_capacity(&config).is_ok());
    }

    #[test]
    fn an_attempt_in_flight_blocks_its_account_and_failures_lock_it() {
        let config = config();
        let mut desk = Desk::new(&config, [0; 32]);
        let t0 = Instant::now();
        let source = SourceKey::Ip(1);
        assert!(desk.check_attempt(t0, &config, "al", source, None).is_ok());
        desk.begin_attempt(t0, &config, "al", source);
        let refused = desk.check_attempt(t0, &config, "al", source, None).unwrap_err();
        assert_eq!((refused.code(), refused.retry_after_ms()), (429, 1000));
        assert!(desk.check_attempt(t0, &config, "bo", source, None).is_ok(), "another account is free");
        desk.end_attempt(t0, &config, "al", source, true);
        desk.begin_attempt(t0, &config, "al", source);
        desk.end_attempt(t0, &config, "al", source, true);
        let locked = desk.check_attempt(t0 + Duration::from_secs(1), &config, "al", source, None).unwrap_err();
        assert!(locked.to_string().starts_with("too many failed attempts"), "{locked}");
        assert!(desk.check_attempt(t0 + config.login_window, &config, "al", source, None).is_ok());
    }

    #[test]
    fn unknown_users_get_stable_fakes() {
        let desk = Desk::new(&config(), [5; 32]);
        assert_eq!(desk.dummy_salt("ghost"), desk.dummy_salt("ghost"));
        assert_ne!(desk.dummy_salt("ghost"), desk.dummy_salt("ghoul"));
        assert_ne!(desk.unknown_user_secret("ghost"), Desk::new(&config(), [6; 32]).unknown_user_secret("ghost"));
    }
}
