//! How many received MPs expired (their hour after receipt passed) before
//! `dm read` said so, per peer: the `expired` table.
//!
//! A received MP leaves the profile only by expiring: deleted at load
//! ([`Profile::purge_expired`]) or dropped from the secure client's inbox
//! and so missing from the next snapshot ([`Profile::save`]). Both count it
//! here; [`Profile::take_expired`] reports the counts once and resets them.

use std::collections::HashMap;

use confab_proto::e2e::secure::ReceivedMp;
use rusqlite::{Transaction, params};

use super::{Profile, ProfileError, to_i64};

/// The table.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS expired (peer TEXT PRIMARY KEY, count INTEGER NOT NULL);";

/// Adds `n` expired messages from `peer`.
fn add(tx: &rusqlite::Connection, peer: &str, n: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO expired (peer, count) VALUES (?1, ?2) ON CONFLICT (peer) DO UPDATE SET count = count + ?2",
        params![peer, n],
    )?;
    Ok(())
}

/// Counts, inside `tx`, the stored received MPs that `inbox` (the next
/// snapshot's) no longer holds: they expired.
pub(super) fn count_dropped(tx: &Transaction<'_>, inbox: &[ReceivedMp]) -> rusqlite::Result<()> {
    let mut kept: HashMap<(String, i64, String), usize> = HashMap::new();
    for m in inbox {
        *kept.entry((m.from.clone(), to_i64(m.received_ms), m.text.clone())).or_default() += 1;
    }
    let mut stmt = tx.prepare("SELECT peer, received_ms, text FROM received")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
    let mut dropped: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let key = row?;
        match kept.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => *dropped.entry(key.0).or_default() += 1,
        }
    }
    drop(stmt);
    for (peer, n) in dropped {
        add(tx, &peer, n)?;
    }
    Ok(())
}

impl Profile {
    /// Deletes received MPs whose hour is up at `now_ms` (counting them as
    /// expired); returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize, ProfileError> {
        let now = to_i64(now_ms);
        let mut stmt = self.conn.prepare("SELECT peer, COUNT(*) FROM received WHERE expires_ms <= ?1 GROUP BY peer")?;
        let counts = stmt
            .query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (peer, n) in counts {
            add(&self.conn, &peer, n)?;
        }
        Ok(self.conn.execute("DELETE FROM received WHERE expires_ms <= ?1", [now])?)
    }

    /// The messages that expired (from `peer`, or everyone) since this was
    /// last asked, per peer; the counts are reset.
    pub fn take_expired(&self, peer: Option<&str>) -> Result<Vec<(String, u64)>, ProfileError> {
        let mut stmt = self
            .conn
            .prepare("SELECT peer, count FROM expired WHERE (?1 IS NULL OR peer = ?1) AND count > 0 ORDER BY peer")?;
        let counts = stmt
            .query_map([peer], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0).cast_unsigned())))?
            .collect::<Result<Vec<_>, _>>()?;
        self.conn.execute("DELETE FROM expired WHERE ?1 IS NULL OR peer = ?1", [peer])?;
        Ok(counts)
    }
}
