//! The `pending` table: what each unanswered send in the outbox is, so a
//! user can see it (`confab outbox`) and re-running the same command while
//! it is pending does not send it twice.
//!
//! A row is written before its request's frame leaves (the request is in
//! the stored outbox from the same turn on); rows whose request is no
//! longer in the stored outbox were answered and are pruned. The message
//! text itself is not kept, only its SHA-256.

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{Profile, ProfileError};

/// One unanswered send, as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    /// The request's id (its outbox entry).
    pub request_id: u32,
    /// The command: `dm send` or `room send`.
    pub command: String,
    /// The peer or the room.
    pub target: String,
    /// SHA-256 of the text, hex.
    pub digest: String,
    /// When it was made (Unix milliseconds).
    pub made_ms: u64,
}

impl PendingSend {
    /// The row for `command` to `target` with `text` (request id set later).
    #[must_use]
    pub fn new(command: &str, target: &str, text: &str, made_ms: u64) -> PendingSend {
        PendingSend {
            request_id: 0,
            command: command.to_owned(),
            target: target.to_owned(),
            digest: hex::encode(Sha256::digest(text.as_bytes())),
            made_ms,
        }
    }

    /// Whether `other` is the same command, target and text.
    #[must_use]
    pub fn same_send(&self, other: &PendingSend) -> bool {
        self.command == other.command && self.target == other.target && self.digest == other.digest
    }
}

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pending (request_id INTEGER PRIMARY KEY, command TEXT NOT NULL, target TEXT NOT NULL,
    digest TEXT NOT NULL, made_ms INTEGER NOT NULL);
";

impl Profile {
    /// Records an unanswered send (before its frame leaves).
    pub fn add_pending(&self, send: &PendingSend) -> Result<(), ProfileError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO pending (request_id, command, target, digest, made_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![send.request_id, send.command, send.target, send.digest, super::to_i64(send.made_ms)],
        )?;
        Ok(())
    }

    /// The recorded sends, oldest first.
    pub fn pending(&self) -> Result<Vec<PendingSend>, ProfileError> {
        let mut stmt = self
            .conn
            .prepare("SELECT request_id, command, target, digest, made_ms FROM pending ORDER BY request_id")?;
        let rows = stmt.query_map([], |r| {
            Ok(PendingSend {
                request_id: r.get(0)?,
                command: r.get(1)?,
                target: r.get(2)?,
                digest: r.get(3)?,
                made_ms: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets the send `request_id` (answered, or refused).
    pub fn remove_pending(&self, request_id: u32) -> Result<(), ProfileError> {
        self.conn.execute("DELETE FROM pending WHERE request_id = ?1", [request_id])?;
        Ok(())
    }

    /// Forgets the sends whose request is no longer in the stored outbox
    /// (answered by an earlier process); returns how many.
    pub fn prune_pending(&self) -> Result<usize, ProfileError> {
        Ok(self.conn.execute("DELETE FROM pending WHERE request_id NOT IN (SELECT request_id FROM outbox)", [])?)
    }
}
