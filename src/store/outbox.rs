//! The outbox: every message creditd queues, under its deterministic key (DESIGN §5), the keys
//! a message covers (`X-Creditd-Covers`), delivery's marks, and the hand actions of
//! `creditd outbox` on a parked message.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Store, Tx, Unit};
use crate::localday::OrgDay;

/// A message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub key: String,
    pub kind: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message: Vec<u8>,
    pub status: Status,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// Since when it has been tried (ms since the epoch): when it was queued, or when
    /// `outbox retry` last made it due.
    pub failing_since: i64,
}

/// A message not sent yet (`queued` or `failed`), without its body: what `outbox list` and the
/// digest show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentMessage {
    pub key: String,
    pub recipients: Vec<String>,
    pub status: Status,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// As [`OutboxMessage::failing_since`].
    pub failing_since: i64,
}

/// Where a message of the outbox stands (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Waiting to be sent (due now or after its backoff).
    Queued,
    Sent,
    /// A crossing found later than `[alerts] max_age`: listed in the digest, never sent.
    Held,
    /// Refused for good (or past its retries): parked until `outbox retry` or `drop`.
    Failed,
    /// Dropped by hand.
    Dropped,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Sent,
        Status::Held,
        Status::Failed,
        Status::Dropped,
    ];

    /// The name the store and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Held => "held",
            Status::Failed => "failed",
            Status::Dropped => "dropped",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for Status {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        Status::parse(s).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("unknown outbox status {s:?}").into())
        })
    }
}

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
        let status: Option<Status> = self
            .conn
            .query_row("SELECT status FROM outbox WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        match status {
            None => Ok(match self.covered_by(key)? {
                Some(by) => Change::Covered(by),
                None => Change::Unknown,
            }),
            Some(Status::Failed | Status::Queued) => {
                change(&self.conn)?;
                Ok(Change::Done)
            }
            Some(other) => Ok(Change::NotAllowed(other.to_string())),
        }
    }
}

impl Store {
    /// The key of every message of the outbox.
    pub fn outbox_keys(&self) -> anyhow::Result<HashSet<String>> {
        let mut stmt = self.conn.prepare("SELECT key FROM outbox")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queued messages due at `now_ms`, oldest first.
    pub fn due_messages(&self, now_ms: i64) -> anyhow::Result<Vec<OutboxMessage>> {
        let mut stmt = self.conn.prepare(
            "SELECT key, kind, recipients, subject, message, status, attempts, last_error, COALESCE(retry_from, created_at) FROM outbox
             WHERE status = 'queued' AND next_attempt_at <= ?1 ORDER BY created_at, key",
        )?;
        let rows = stmt.query_map([now_ms], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The status of the message under `key`, if there is one.
    pub fn outbox_status(&self, key: &str) -> anyhow::Result<Option<Status>> {
        outbox_status(&self.conn, key)
    }

    /// The message that reports `key` inside its own (`X-Creditd-Covers`), if any.
    pub fn covered_by(&self, key: &str) -> anyhow::Result<Option<String>> {
        covered_by(&self.conn, key)
    }

    /// How many messages are waiting to be sent (queued, due or not).
    pub fn queued_count(&self) -> anyhow::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE status = 'queued'",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Every message, by key.
    pub fn outbox(&self) -> anyhow::Result<Vec<OutboxMessage>> {
        let mut stmt = self.conn.prepare(
            "SELECT key, kind, recipients, subject, message, status, attempts, last_error, COALESCE(retry_from, created_at) FROM outbox ORDER BY key",
        )?;
        let rows = stmt.query_map([], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messages not sent yet (`queued` or `failed`), by key, without reading their bodies
    /// (the outbox keeps every message of its retention window).
    pub fn unsent(&self) -> anyhow::Result<Vec<UnsentMessage>> {
        let mut stmt = self.conn.prepare(
            "SELECT key, recipients, status, attempts, last_error, COALESCE(retry_from, created_at)
             FROM outbox WHERE status IN ('queued', 'failed') ORDER BY key",
        )?;
        let rows = stmt.query_map([], |r| {
            let recipients: String = r.get(1)?;
            Ok(UnsentMessage {
                key: r.get(0)?,
                recipients: split_recipients(&recipients),
                status: r.get(2)?,
                attempts: r.get::<_, i64>(3)?.max(0) as u64,
                last_error: r.get(4)?,
                failing_since: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Crossings found too late to mail (`held`) since `since_ms`: (key, subject, the keys it
    /// covers joined by `, `, ascending by threshold as in `X-Creditd-Covers`).
    pub fn held_since(&self, since_ms: i64) -> anyhow::Result<Vec<(String, String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT o.key, o.subject, c.key
             FROM outbox o LEFT JOIN covers c ON c.covered_by = o.key
             WHERE o.status = 'held' AND o.created_at > ?1 ORDER BY o.key",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut held: Vec<(String, String, Vec<String>)> = Vec::new();
        for row in rows {
            let (key, subject, covered) = row?;
            if held.last().is_none_or(|(k, _, _)| *k != key) {
                held.push((key, subject, Vec::new()));
            }
            if let (Some(c), Some(last)) = (covered, held.last_mut()) {
                last.2.push(c);
            }
        }
        // By org-day, then by threshold (`…:5` before `…:10`), as the keys read.
        let org_day = |k: &str| k.split(':').skip(1).take(2).collect::<Vec<_>>().join(":");
        held.sort_by_key(|(k, _, _)| (org_day(k), key_threshold(k)));
        Ok(held
            .into_iter()
            .map(|(key, subject, mut covered)| {
                covered.sort_by_key(|k| key_threshold(k));
                (key, subject, covered.join(", "))
            })
            .collect())
    }

    /// When the newest ops digest was queued (epoch ms), if any.
    pub fn last_digest_at(&self) -> anyhow::Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(created_at) FROM outbox WHERE kind = 'digest'",
            [],
            |r| r.get(0),
        )?)
    }
}

impl Tx<'_> {
    /// The status of an outbox key, if it exists.
    pub fn outbox_status(&self, key: &str) -> anyhow::Result<Option<Status>> {
        outbox_status(&self.tx, key)
    }

    /// Records that `by` reports each of `keys` (DESIGN §5 `X-Creditd-Covers`): they take
    /// its status and are never queued on their own.
    pub fn cover(&self, keys: &[String], by: &str) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO covers (key, covered_by) VALUES (?1, ?2)")?;
        for k in keys {
            stmt.execute(params![k, by])?;
        }
        Ok(())
    }

    /// Queues a message under `key` unless the key exists; `status` is `queued`, or `held`
    /// for a crossing older than `[alerts] max_age`. Returns whether it was added.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &self,
        key: &str,
        kind: &str,
        org_day: Option<&OrgDay>,
        recipients: &[String],
        subject: &str,
        message: &[u8],
        status: Status,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (key, kind, org_id, local_date, recipients, subject, message, status, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        )?;
        let n = stmt.execute(params![
            key,
            kind,
            org_day.map(|o| &o.org_id),
            org_day.map(|o| o.date),
            recipients.join(","),
            subject,
            message,
            status.as_str(),
            now_ms
        ])?;
        Ok(n == 1)
    }

    /// Replaces the content of a message that has not been sent yet.
    pub fn replace_queued(&self, key: &str, subject: &str, message: &[u8]) -> anyhow::Result<bool> {
        let n = self.tx.execute(
            "UPDATE outbox SET subject = ?2, message = ?3 WHERE key = ?1 AND status = 'queued'",
            params![key, subject, message],
        )?;
        Ok(n == 1)
    }

    /// Marks a message sent (only after the server accepted it, or its file was written).
    pub fn mark_sent(&self, key: &str, now_ms: i64) -> anyhow::Result<()> {
        self.tx.execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?2, attempts = attempts + 1, last_error = NULL WHERE key = ?1",
            params![key, now_ms],
        )?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    /// Parks a message the server refused for good (or that kept failing for days): status
    /// `failed`, kept with its error, never tried again by itself.
    pub fn mark_refused(&self, key: &str, error: &str) -> anyhow::Result<()> {
        self.tx.execute(
            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?2 WHERE key = ?1",
            params![key, error],
        )?;
        Ok(())
    }

    pub fn mark_failed(&self, key: &str, error: &str, next_attempt_ms: i64) -> anyhow::Result<()> {
        self.tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE key = ?1",
            params![key, error, next_attempt_ms],
        )?;
        Ok(())
    }
}

/// The threshold an alert key names (`near:<org>:<date>:80` 80, `over:…` 100), to order the
/// keys a message covers as its header does; other keys sort last.
fn key_threshold(key: &str) -> u64 {
    if key.starts_with("over:") {
        100
    } else {
        key.rsplit(':')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

fn split_recipients(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn outbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxMessage> {
    let recipients: String = r.get(2)?;
    Ok(OutboxMessage {
        key: r.get(0)?,
        kind: r.get(1)?,
        recipients: split_recipients(&recipients),
        subject: r.get(3)?,
        message: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get::<_, i64>(6)?.max(0) as u64,
        last_error: r.get(7)?,
        failing_since: r.get(8)?,
    })
}

/// A key's outbox status: its own, or that of the message covering it.
fn outbox_status(conn: &Connection, key: &str) -> anyhow::Result<Option<Status>> {
    let mut stmt = conn.prepare_cached(
        "SELECT status FROM outbox WHERE key = ?1
         UNION ALL
         SELECT o.status FROM covers c JOIN outbox o ON o.key = c.covered_by WHERE c.key = ?1
         LIMIT 1",
    )?;
    Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
}

fn covered_by(conn: &Connection, key: &str) -> anyhow::Result<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT covered_by FROM covers WHERE key = ?1")?;
    Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use super::super::Store;

    /// The keys a held message covers read as its header does: by threshold, 5 before 10.
    #[test]
    fn held_messages_list_their_covered_keys_by_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        let tx = store.transaction().unwrap();
        let k = |t: &str| format!("near:7:2025-10-08:{t}");
        tx.enqueue(
            "over:7:2025-10-08",
            "over",
            None,
            &[],
            "s",
            b"m",
            super::Status::Held,
            10,
        )
        .unwrap();
        tx.cover(&[k("90"), k("10"), k("5"), k("80")], "over:7:2025-10-08")
            .unwrap();
        tx.enqueue(
            &k("50"),
            "near",
            None,
            &[],
            "t",
            b"m",
            super::Status::Held,
            10,
        )
        .unwrap();
        // Held by another run: listed by threshold too (6 before 50, not as text).
        tx.enqueue(
            &k("6"),
            "near",
            None,
            &[],
            "u",
            b"m",
            super::Status::Held,
            10,
        )
        .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            store.held_since(0).unwrap(),
            vec![
                (k("6"), "u".to_string(), String::new()),
                (k("50"), "t".to_string(), String::new()),
                (
                    "over:7:2025-10-08".to_string(),
                    "s".to_string(),
                    [k("5"), k("10"), k("80"), k("90")].join(", ")
                ),
            ]
        );
        assert!(store.held_since(10).unwrap().is_empty());
    }
}
