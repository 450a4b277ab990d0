//! What `status` and the metrics read: the last run of each task, the outbox by status, the
//! files by gateway.

use rusqlite::{params, OptionalExtension};

use super::Store;

pub(super) const SCHEMA: &str = r#"
-- The last run of each task (hand runs and daemon jobs alike), one row per task.
CREATE TABLE IF NOT EXISTS task_runs (
    task TEXT PRIMARY KEY,
    last_at INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    last_ok INTEGER NOT NULL,
    last_summary TEXT NOT NULL,
    last_success_at INTEGER,
    runs INTEGER NOT NULL,
    failures INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// The last run of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    pub task: String,
    /// When it started, by the task's clock (ms since the epoch).
    pub last_at: i64,
    /// How long it took (ms).
    pub last_ms: u64,
    pub last_ok: bool,
    pub last_summary: String,
    /// When its last successful run started.
    pub last_success_at: Option<i64>,
    pub runs: u64,
    pub failures: u64,
}

/// Messages by status: queued (never tried or due again), retrying (queued after failed
/// attempts), failed (parked), sent, dropped, held (crossings past `[alerts] max_age`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: u64,
    pub retrying: u64,
    pub failed: u64,
    pub sent: u64,
    pub dropped: u64,
    pub held: u64,
}

/// A file name's gateway: its part before the first `-`, or the name without extensions.
pub fn gateway_of(name: &str) -> &str {
    match name.split_once('-') {
        Some((g, _)) => g,
        None => name.split('.').next().unwrap_or(name),
    }
}

impl Store {
    /// Records a run of `task` that started at `at_ms` and took `ms`.
    pub fn record_task_run(
        &self,
        task: &str,
        at_ms: i64,
        ms: u64,
        ok: bool,
        summary: &str,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO task_runs (task, last_at, last_ms, last_ok, last_summary, last_success_at, runs, failures)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?4 THEN ?2 END, 1, CASE WHEN ?4 THEN 0 ELSE 1 END)
             ON CONFLICT (task) DO UPDATE SET
                 last_at = excluded.last_at, last_ms = excluded.last_ms,
                 last_ok = excluded.last_ok, last_summary = excluded.last_summary,
                 last_success_at = COALESCE(excluded.last_success_at, task_runs.last_success_at),
                 runs = task_runs.runs + 1, failures = task_runs.failures + excluded.failures",
            params![task, at_ms, ms as i64, ok, summary],
        )?;
        Ok(())
    }

    /// The last run of every task that ran, by task.
    pub fn task_runs(&self) -> anyhow::Result<Vec<TaskRun>> {
        let has = self
            .conn
            .prepare("SELECT 1 FROM sqlite_master WHERE name = 'task_runs'")?
            .exists([])?;
        if !has {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT task, last_at, last_ms, last_ok, last_summary, last_success_at, runs, failures
             FROM task_runs ORDER BY task",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TaskRun {
                task: r.get(0)?,
                last_at: r.get(1)?,
                last_ms: r.get::<_, i64>(2)?.max(0) as u64,
                last_ok: r.get(3)?,
                last_summary: r.get(4)?,
                last_success_at: r.get(5)?,
                runs: r.get::<_, i64>(6)?.max(0) as u64,
                failures: r.get::<_, i64>(7)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The outbox by status.
    pub fn outbox_counts(&self) -> anyhow::Result<OutboxCounts> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, attempts > 0, count(*) FROM outbox GROUP BY 1, 2")?;
        let mut c = OutboxCounts::default();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let status: String = r.get(0)?;
            let tried: bool = r.get(1)?;
            let n = r.get::<_, i64>(2)?.max(0) as u64;
            match (status.as_str(), tried) {
                ("queued", false) => c.queued += n,
                ("queued", true) => c.retrying += n,
                ("failed", _) => c.failed += n,
                ("sent", _) => c.sent += n,
                ("dropped", _) => c.dropped += n,
                _ => c.held += n,
            }
        }
        Ok(c)
    }

    /// Every file that went through (ingested or a duplicate): its name and when ingest saw
    /// it (RFC 3339), in ingest order. A failed file's row is replaced at every retry, so it
    /// says nothing of when the gateway last sent one; it counts once it goes through.
    pub fn file_times(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT file, processed_at FROM files WHERE status != 'failed' ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The outbox keys that start with one of `prefixes` (a range scan of the key index each).
    pub fn outbox_keys_like(
        &self,
        prefixes: &[&str],
    ) -> anyhow::Result<std::collections::HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM outbox WHERE key >= ?1 AND key < ?1 || char(1114111)")?;
        let mut out = std::collections::HashSet::new();
        for p in prefixes {
            let rows = stmt.query_map([p], |r| r.get::<_, String>(0))?;
            for k in rows {
                out.insert(k?);
            }
        }
        Ok(out)
    }

    /// When the oldest queued or retrying message was queued (ms), if any.
    pub fn oldest_queued(&self) -> anyhow::Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT min(created_at) FROM outbox WHERE status = 'queued'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }
}
