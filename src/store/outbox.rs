//! The outbox commands (`creditd outbox`): parked messages sent again or dropped by hand.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Store, Unit};

/// What `outbox retry` or `outbox drop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The message now has this status.
    Done,
    /// No message has this key.
    Unknown,
    /// The message's status does not allow it (e.g. it was sent).
    NotAllowed(String),
    /// The key is reported inside this other message (`X-Creditd-Covers`), never on its own.
    Covered(String),
}

impl Store {
    /// Makes a `failed` (or still `queued`) message due now, with 7 fresh days of retries.
    pub fn retry_message(&self, key: &str, now_ms: i64) -> anyhow::Result<Change> {
        self.change_message(key, |conn| {
            conn.execute(
                "UPDATE outbox SET status = 'queued', next_attempt_at = ?2, retry_from = ?2
                 WHERE key = ?1",
                params![key, now_ms],
            )?;
            Ok(())
        })
    }

    /// Marks a `failed` or `queued` message `dropped`: kept, never sent; its problem closes.
    pub fn drop_message(&self, key: &str) -> anyhow::Result<Change> {
        self.change_message(key, |conn| {
            conn.execute(
                "UPDATE outbox SET status = 'dropped' WHERE key = ?1",
                params![key],
            )?;
            conn.execute(
                "DELETE FROM problems WHERE unit = ?1 AND target = ?2",
                params![Unit::Message.as_str(), key],
            )?;
            Ok(())
        })
    }

    fn change_message(
        &self,
        key: &str,
        change: impl FnOnce(&Connection) -> anyhow::Result<()>,
    ) -> anyhow::Result<Change> {
        let status: Option<String> = self
            .conn
            .query_row("SELECT status FROM outbox WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        match status.as_deref() {
            None => Ok(match self.covered_by(key)? {
                Some(by) => Change::Covered(by),
                None => Change::Unknown,
            }),
            Some("failed" | "queued") => {
                change(&self.conn)?;
                Ok(Change::Done)
            }
            Some(other) => Ok(Change::NotAllowed(other.to_string())),
        }
    }
}
