//! The SQLite store: files, request-id claims, quarantine, event parts, the ledger.
//!
//! Architecture invariant: only this module speaks SQL. Every multi-step change is one
//! transaction; unique keys make re-runs idempotent.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::logline::Reason;

mod claims;
mod migrate;
mod outbox;
mod parts;
mod problems;
mod quarantine;
mod runs;
pub use claims::ClaimsView;
pub use outbox::Change;
pub use parts::{PurgeRecord, MIXED_SOURCES};
pub use problems::{Problem, Unit};
pub use quarantine::{QuarantineFilter, QuarantinedLine};
pub use runs::{gateway_of, OutboxCounts, TaskRun};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per input file; failed rows are keyed by name and replaced on retry.
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    uniq INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    malformed INTEGER NOT NULL DEFAULT 0,
    missing_field INTEGER NOT NULL DEFAULT 0,
    bad_timestamp INTEGER NOT NULL DEFAULT 0,
    bad_method INTEGER NOT NULL DEFAULT 0,
    bad_status INTEGER NOT NULL DEFAULT 0,
    unknown_org INTEGER NOT NULL DEFAULT 0,
    before_signup INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    archive_path TEXT,
    error TEXT,
    archive_purged INTEGER NOT NULL DEFAULT 0,
    quarantine_purged INTEGER NOT NULL DEFAULT 0,
    processed_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS files_ingested ON files (sha256) WHERE status = 'ingested';

-- Inbox entries with an access-log name that are not regular files (directories, symlinks,
-- FIFOs, sockets, devices): never opened, warned about once, removed when the entry is gone.
CREATE TABLE IF NOT EXISTS skipped (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
) WITHOUT ROWID;

-- Parts whose request ids are not in their day's claim runs yet (see claims.rs). The request-id
-- table of earlier versions is gone: the claims are rebuilt from the parts.
CREATE TABLE IF NOT EXISTS claims_pending (path TEXT PRIMARY KEY) WITHOUT ROWID;
DROP TABLE IF EXISTS request_ids;

-- The request-id claims of one local date (DESIGN §2.1: the dedupe scope is the org-day): its
-- sorted fingerprint files, largest first, covering every listed part of the date but those in
-- claims_pending. A date without a row is rebuilt from its parts when first touched.
CREATE TABLE IF NOT EXISTS claim_days (
    local_date TEXT PRIMARY KEY,
    runs TEXT NOT NULL,
    ids INTEGER NOT NULL
) WITHOUT ROWID;

-- Every quarantined line. A line that decoded as a call keeps its org, its `ts` and, when the
-- org is known, its local date (what `creditd quarantine` selects by, and what tells a backfill
-- which files may hold lines of its range).
CREATE TABLE IF NOT EXISTS quarantine (
    file_sha TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    org_id TEXT,
    local_date TEXT,
    ts INTEGER,
    PRIMARY KEY (file_sha, line)
);

-- Parquet files of priced events; only parts listed here are read.
CREATE TABLE IF NOT EXISTS parts (
    path TEXT PRIMARY KEY,
    file_sha TEXT NOT NULL,
    local_date TEXT NOT NULL,
    rows INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS parts_by_date ON parts (local_date);

-- Org-days whose ledger row must be recomputed from their events.
CREATE TABLE IF NOT EXISTS dirty (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ledger (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    edition TEXT NOT NULL,
    agents INTEGER NOT NULL,
    light_agents INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    billable_calls INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    base INTEGER NOT NULL,
    variable INTEGER NOT NULL,
    additional INTEGER NOT NULL,
    additional_excess INTEGER NOT NULL,
    legacy_limit INTEGER NOT NULL,
    allotted INTEGER NOT NULL,
    used INTEGER NOT NULL,
    exceeded_at INTEGER,
    concurrency INTEGER NOT NULL,
    unpriced_calls INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

-- Org-days that have closed: when they were due and when the close sweep saw them.
CREATE TABLE IF NOT EXISTS closes (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    closed_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

-- Every message, written before it is sent; the key is sent once, ever.
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    org_id TEXT,
    local_date TEXT,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    message BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    sent_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);

-- Keys reported inside another message (DESIGN §5 `X-Creditd-Covers`): never mailed on their
-- own, their status is the covering message's. Kept forever, like the outbox keys.
CREATE TABLE IF NOT EXISTS covers (
    key TEXT PRIMARY KEY,
    covered_by TEXT NOT NULL
) WITHOUT ROWID;

-- The first call at which an org-day reached each threshold (percent; 100 = above).
CREATE TABLE IF NOT EXISTS crossings (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (org_id, local_date, threshold)
) WITHOUT ROWID;
"#;

/// Where a quarantined line that decoded as a call belongs: its org, its local day when the
/// org is known, its `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed<'a> {
    pub org_id: &'a str,
    pub local_date: Option<chrono::NaiveDate>,
    pub ts_ms: i64,
}

/// Per-file counts, as `creditd files` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub lines: u64,
    pub accepted: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// Indexed like [`Reason::ALL`].
    pub quarantined: [u64; 8],
}

impl FileCounts {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.iter().sum()
    }

    pub fn uncount(&mut self, reason: Reason) {
        let i = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("known");
        self.quarantined[i] -= 1;
    }

    pub fn count(&mut self, reason: Reason) {
        let i = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("known");
        self.quarantined[i] += 1;
    }
}

/// One row of `creditd files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub file: String,
    pub sha256: String,
    pub status: String,
    pub counts: FileCounts,
    pub archive_path: Option<String>,
    pub error: Option<String>,
    /// What retention removed of the file (DESIGN §6); the row itself is kept forever.
    pub purged: Purged,
}

/// What retention removed of an input file: its archived copy, its quarantined lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub archive: bool,
    pub quarantine: bool,
}

/// A listed Parquet part: its path (relative to the state directory), the input file whose
/// events it holds, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub path: String,
    pub file_sha: String,
    pub rows: u64,
}

/// A ledger row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub org_id: String,
    pub local_date: String,
    pub model: String,
    pub reason: String,
    pub edition: String,
    pub agents: u64,
    pub light_agents: u64,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub base: u64,
    pub variable: u64,
    pub additional: u64,
    pub additional_excess: u64,
    pub legacy_limit: u64,
    pub allotted: u64,
    pub used: u64,
    pub exceeded_at: Option<i64>,
    pub concurrency: u64,
    pub unpriced_calls: u64,
    /// 0 for the first computation; +1 each time late data changes it afterwards.
    pub revision: u64,
}

/// A message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub key: String,
    pub kind: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message: Vec<u8>,
    pub status: String,
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
    pub status: String,
    pub attempts: u64,
    pub last_error: Option<String>,
    /// As [`OutboxMessage::failing_since`].
    pub failing_since: i64,
}

/// A threshold crossing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub threshold: u64,
    pub ts: i64,
    pub request_id: String,
}

/// An inbox entry that is not a regular file, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub name: String,
    pub kind: String,
    pub first_seen: String,
    pub last_seen: String,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .with_context(|| format!("cannot use the store {}", path.display()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Claims are random keys: a page cache of 64 MiB keeps the hot part of their index
        // in memory, and a larger WAL before a checkpoint lets commits share page writes.
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        // A new store gives the pages retention frees back to the file system (DESIGN §6);
        // an older one is converted by the first retention run.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        // One transaction: a reader never sees a store with only some of its tables, and an
        // older store is upgraded whole or not at all.
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(problems::SCHEMA)?;
                conn.execute_batch(parts::SCHEMA)?;
                conn.execute_batch(runs::SCHEMA)?;
                migrate::upgrade(&conn)?;
                conn.execute_batch("COMMIT")?;
                Ok(())
            })
            .with_context(|| format!("cannot create the schema in {}", path.display()))?;
        Ok(Store { conn })
    }

    /// Opens an existing store without the right to change it.
    pub fn open_read_only(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(Store { conn })
    }

    pub fn transaction(&mut self) -> anyhow::Result<Tx<'_>> {
        Ok(Tx {
            tx: self.conn.transaction()?,
        })
    }

    /// The ingested file with this content, if any: (name, archive path).
    pub fn ingested_file(&self, sha256: &str) -> anyhow::Result<Option<FileRow>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE sha256 = ?1 AND status = 'ingested'"
        ))?;
        Ok(stmt.query_row([sha256], file_row).optional()?)
    }

    /// Every file row in processing order.
    pub fn files(&self) -> anyhow::Result<Vec<FileRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {FILE_COLUMNS} FROM files ORDER BY seq"))?;
        let rows = stmt.query_map([], file_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Fails with what to do when the store was written by an earlier version and lacks
    /// columns this one reads: a reader changes nothing, so the first writing command (the
    /// daemon's start, any `run`) upgrades it (DESIGN §6).
    pub fn ensure_current(&self, path: &Path) -> anyhow::Result<()> {
        let missing = migrate::missing(&self.conn)?;
        if !missing.is_empty() {
            anyhow::bail!(
                "the store {} was written by an earlier version of creditd (it lacks {}); a reader changes nothing, so start the daemon or run `creditd run ingest` once to upgrade it in place, then try again",
                path.display(),
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Whether the tables the readers (`ledger export`, `files`, `usage`) query exist: false
    /// for a store that no writer has initialised yet.
    pub fn has_reader_tables(&self) -> anyhow::Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('files', 'ledger', 'crossings')",
            [],
            |r| r.get(0),
        )?;
        Ok(n == 3)
    }

    /// The inbox entries skipped because they are not regular files, by name.
    pub fn skipped_entries(&self) -> anyhow::Result<Vec<SkippedEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, kind, first_seen, last_seen FROM skipped ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(SkippedEntry {
                name: r.get(0)?,
                kind: r.get(1)?,
                first_seen: r.get(2)?,
                last_seen: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the inbox entries skipped by this run (name, kind) and forgets the others;
    /// returns those not seen before (or seen as another kind), to be warned about.
    pub fn note_skipped(
        &mut self,
        entries: &[(String, String)],
        now: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let tx = self.conn.transaction()?;
        let mut new = Vec::new();
        {
            let mut known = tx.prepare("SELECT kind FROM skipped WHERE name = ?1")?;
            let mut put = tx.prepare(
                "INSERT INTO skipped (name, kind, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET last_seen = ?3, \
                 first_seen = CASE WHEN kind = ?2 THEN first_seen ELSE ?3 END, kind = ?2",
            )?;
            for (name, kind) in entries {
                let before: Option<String> = known.query_row([name], |r| r.get(0)).optional()?;
                if before.as_deref() != Some(kind.as_str()) {
                    new.push((name.clone(), kind.clone()));
                }
                put.execute(params![name, kind, now])?;
            }
            let names: HashSet<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            let mut all = tx.prepare("SELECT name FROM skipped")?;
            let stored: Vec<String> = all.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            for gone in stored.iter().filter(|n| !names.contains(n.as_str())) {
                tx.execute("DELETE FROM skipped WHERE name = ?1", [gone])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Opens an existing store that nobody may change while it is open (the caller holds the
    /// writer lock and no write-ahead log is pending): reading leaves no file behind.
    pub fn open_immutable(path: &Path) -> anyhow::Result<Store> {
        let uri = format!("file:{}?immutable=1", path.display());
        let conn = Connection::open_with_flags(
            &uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .with_context(|| format!("cannot open the store {}", path.display()))?;
        Ok(Store { conn })
    }

    /// Every quarantined line: (file sha256, line) → reason.
    pub fn quarantined_lines(&self) -> anyhow::Result<HashMap<(String, u64), String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT file_sha, line, reason FROM quarantine")?;
        let rows = stmt.query_map([], |r| {
            Ok(((r.get(0)?, r.get::<_, i64>(1)? as u64), r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The key of every message of the outbox.
    pub fn outbox_keys(&self) -> anyhow::Result<HashSet<String>> {
        let mut stmt = self.conn.prepare("SELECT key FROM outbox")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
    }

    /// Sets a value of the `meta` table (on its own, outside any transaction).
    pub fn set_meta(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            [key, value],
        )?;
        Ok(())
    }

    /// Parquet parts holding events of `local_date`.
    pub fn parts_on(&self, local_date: &str) -> anyhow::Result<Vec<String>> {
        parts_on(&self.conn, local_date)
    }

    /// Every listed part path.
    pub fn all_parts(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT path FROM parts")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Org-days waiting for recomputation, by date then org.
    pub fn dirty(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT org_id, local_date FROM dirty ORDER BY local_date, org_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ledger rows, filtered, sorted by org id as text then date.
    pub fn ledger(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        orgs: &[String],
    ) -> anyhow::Result<Vec<LedgerRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger
             WHERE (?1 IS NULL OR local_date >= ?1) AND (?2 IS NULL OR local_date <= ?2)
             ORDER BY org_id, local_date"
        ))?;
        let rows = stmt.query_map(params![from, to], ledger_row)?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
            if orgs.is_empty() || orgs.contains(&r.org_id) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Crossings of one org-day, by threshold.
    pub fn crossings(&self, org_id: &str, local_date: &str) -> anyhow::Result<Vec<Crossing>> {
        crossings(&self.conn, org_id, local_date)
    }

    /// Ledger org-days not closed yet, by org then date.
    pub fn unclosed_days(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT l.org_id, l.local_date FROM ledger l
             LEFT JOIN closes c ON c.org_id = l.org_id AND c.local_date = l.local_date
             WHERE c.org_id IS NULL ORDER BY l.org_id, l.local_date",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every close: (org_id, local_date, due_at, closed_at).
    pub fn closes(&self) -> anyhow::Result<Vec<(String, String, i64, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT org_id, local_date, due_at, closed_at FROM closes ORDER BY org_id, local_date",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether an org-day has closed.
    pub fn is_closed(&self, org_id: &str, local_date: &str) -> anyhow::Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM closes WHERE org_id = ?1 AND local_date = ?2")?;
        Ok(stmt.exists([org_id, local_date])?)
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
    pub fn outbox_status(&self, key: &str) -> anyhow::Result<Option<String>> {
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

    /// Org-days closed after `since_ms`: (org_id, local_date).
    pub fn closed_since(&self, since_ms: i64) -> anyhow::Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT org_id, local_date FROM closes WHERE closed_at > ?1 ORDER BY org_id, local_date",
        )?;
        let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Quarantine counts by file and reason for files processed after `since` (RFC 3339).
    pub fn quarantine_by_file(&self, since: &str) -> anyhow::Result<Vec<(String, String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT q.file, q.reason, COUNT(*) FROM quarantine q
             JOIN files f ON f.sha256 = q.file_sha AND f.status = 'ingested'
             WHERE f.processed_at > ?1 GROUP BY q.file, q.reason ORDER BY q.file, q.reason",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// File rows processed after `since` (RFC 3339), in order.
    pub fn files_since(&self, since: &str) -> anyhow::Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE processed_at > ?1 ORDER BY seq"
        ))?;
        let rows = stmt.query_map([since], file_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Quarantine counts by reason over all files.
    pub fn quarantine_counts(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT reason, COUNT(*) FROM quarantine GROUP BY reason ORDER BY reason")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
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

const FILE_COLUMNS: &str = "file, sha256, status, lines, accepted, uniq, duplicates, malformed, \
     missing_field, bad_timestamp, bad_method, bad_status, unknown_org, before_signup, expired, \
     archive_path, error, archive_purged, quarantine_purged";

/// Parquet parts holding events of `local_date`, for the store and inside a transaction.
fn parts_on(conn: &Connection, local_date: &str) -> anyhow::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT path FROM parts WHERE local_date = ?1 ORDER BY path")?;
    let rows = stmt.query_map([local_date], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Crossings of one org-day, by threshold, for the store and inside a transaction.
/// A key's outbox status: its own, or that of the message covering it.
fn outbox_status(conn: &Connection, key: &str) -> anyhow::Result<Option<String>> {
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

fn crossings(conn: &Connection, org_id: &str, local_date: &str) -> anyhow::Result<Vec<Crossing>> {
    let mut stmt = conn.prepare_cached(
        "SELECT threshold, ts, request_id FROM crossings
         WHERE org_id = ?1 AND local_date = ?2 ORDER BY threshold",
    )?;
    let rows = stmt.query_map([org_id, local_date], |r| {
        Ok(Crossing {
            threshold: r.get::<_, i64>(0)? as u64,
            ts: r.get(1)?,
            request_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)? as u64) };
    Ok(FileRow {
        file: r.get(0)?,
        sha256: r.get(1)?,
        status: r.get(2)?,
        counts: FileCounts {
            lines: n(3)?,
            accepted: n(4)?,
            unique: n(5)?,
            duplicates: n(6)?,
            quarantined: [n(7)?, n(8)?, n(9)?, n(10)?, n(11)?, n(12)?, n(13)?, n(14)?],
        },
        archive_path: r.get(15)?,
        error: r.get(16)?,
        purged: Purged {
            archive: r.get::<_, i64>(17)? != 0,
            quarantine: r.get::<_, i64>(18)? != 0,
        },
    })
}

const LEDGER_COLUMNS: &str = "org_id, local_date, model, reason, edition, agents, light_agents, \
     calls, billable_calls, credits, base, variable, additional, additional_excess, legacy_limit, \
     allotted, used, exceeded_at, concurrency, unpriced_calls, revision";

fn ledger_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerRow> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)? as u64) };
    Ok(LedgerRow {
        org_id: r.get(0)?,
        local_date: r.get(1)?,
        model: r.get(2)?,
        reason: r.get(3)?,
        edition: r.get(4)?,
        agents: n(5)?,
        light_agents: n(6)?,
        calls: n(7)?,
        billable_calls: n(8)?,
        credits: n(9)?,
        base: n(10)?,
        variable: n(11)?,
        additional: n(12)?,
        additional_excess: n(13)?,
        legacy_limit: n(14)?,
        allotted: n(15)?,
        used: n(16)?,
        exceeded_at: r.get(17)?,
        concurrency: n(18)?,
        unpriced_calls: n(19)?,
        revision: n(20)?,
    })
}

/// A write transaction; dropped without [`Tx::commit`] it rolls back.
pub struct Tx<'c> {
    tx: Transaction<'c>,
}

impl Tx<'_> {
    pub fn commit(self) -> anyhow::Result<()> {
        self.tx.commit().context("cannot commit to the store")
    }

    /// Quarantines a line; `at` places a line that decoded as a call.
    pub fn quarantine(
        &self,
        file_sha: &str,
        file: &str,
        line: u64,
        reason: Reason,
        raw: &str,
        at: Option<Placed<'_>>,
    ) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO quarantine (file_sha, file, line, reason, raw, org_id, local_date, ts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        stmt.execute(params![
            file_sha,
            file,
            line as i64,
            reason.as_str(),
            raw,
            at.map(|a| a.org_id),
            at.and_then(|a| a.local_date).map(|d| d.to_string()),
            at.map(|a| a.ts_ms),
        ])?;
        Ok(())
    }

    pub fn add_part(
        &self,
        path: &str,
        file_sha: &str,
        local_date: &str,
        rows: u64,
    ) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO parts (path, file_sha, local_date, rows) VALUES (?1, ?2, ?3, ?4)",
        )?;
        stmt.execute(params![path, file_sha, local_date, rows as i64])?;
        // Its request ids are claims not in its day's runs yet.
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO claims_pending (path) VALUES (?1)")?
            .execute([path])?;
        Ok(())
    }

    pub fn mark_dirty(&self, org_id: &str, local_date: &str) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO dirty (org_id, local_date) VALUES (?1, ?2)")?;
        stmt.execute([org_id, local_date])?;
        Ok(())
    }

    pub fn clear_dirty(&self, org_id: &str, local_date: &str) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM dirty WHERE org_id = ?1 AND local_date = ?2")?;
        stmt.execute([org_id, local_date])?;
        Ok(())
    }

    /// Records that an org-day closed; `false` if it had closed before.
    pub fn close_day(
        &self,
        org_id: &str,
        local_date: &str,
        due_at: i64,
        closed_at: i64,
    ) -> anyhow::Result<bool> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO closes (org_id, local_date, due_at, closed_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        Ok(stmt.execute(params![org_id, local_date, due_at, closed_at])? == 1)
    }

    /// The status of an outbox key, if it exists.
    pub fn outbox_status(&self, key: &str) -> anyhow::Result<Option<String>> {
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
        org_day: Option<(&str, &str)>,
        recipients: &[String],
        subject: &str,
        message: &[u8],
        status: &str,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (key, kind, org_id, local_date, recipients, subject, message, status, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
        )?;
        let n = stmt.execute(params![
            key,
            kind,
            org_day.map(|o| o.0),
            org_day.map(|o| o.1),
            recipients.join(","),
            subject,
            message,
            status,
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

    /// Crossings of one org-day, by threshold.
    pub fn crossings(&self, org_id: &str, local_date: &str) -> anyhow::Result<Vec<Crossing>> {
        crossings(&self.tx, org_id, local_date)
    }

    /// Parquet parts holding events of `local_date`.
    pub fn parts_on(&self, local_date: &str) -> anyhow::Result<Vec<String>> {
        parts_on(&self.tx, local_date)
    }

    /// Forgets the failure recorded for a file name.
    pub fn clear_failed(&self, file: &str) -> anyhow::Result<()> {
        self.tx.execute(
            "DELETE FROM files WHERE file = ?1 AND status = 'failed'",
            [file],
        )?;
        Ok(())
    }

    /// Records a processed file; a failed row of the same name is replaced.
    pub fn record_file(&self, row: &FileRow, processed_at: &str) -> anyhow::Result<()> {
        self.clear_failed(&row.file)?;
        let c = &row.counts;
        let q = &c.quarantined;
        self.tx.execute(
            &format!("INSERT INTO files ({FILE_COLUMNS}, processed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
            params![
                row.file,
                row.sha256,
                row.status,
                c.lines as i64,
                c.accepted as i64,
                c.unique as i64,
                c.duplicates as i64,
                q[0] as i64,
                q[1] as i64,
                q[2] as i64,
                q[3] as i64,
                q[4] as i64,
                q[5] as i64,
                q[6] as i64,
                q[7] as i64,
                row.archive_path,
                row.error,
                row.purged.archive,
                row.purged.quarantine,
                processed_at,
            ],
        )?;
        Ok(())
    }

    /// The stored ledger row of an org-day, if any.
    pub fn ledger_row(&self, org_id: &str, local_date: &str) -> anyhow::Result<Option<LedgerRow>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE org_id = ?1 AND local_date = ?2"
        ))?;
        Ok(stmt
            .query_row([org_id, local_date], ledger_row)
            .optional()?)
    }

    pub fn put_ledger_row(&self, row: &LedgerRow) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO ledger ({LEDGER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ))?;
        let n = |v: u64| v as i64;
        stmt.execute(params![
            row.org_id,
            row.local_date,
            row.model,
            row.reason,
            row.edition,
            n(row.agents),
            n(row.light_agents),
            n(row.calls),
            n(row.billable_calls),
            n(row.credits),
            n(row.base),
            n(row.variable),
            n(row.additional),
            n(row.additional_excess),
            n(row.legacy_limit),
            n(row.allotted),
            n(row.used),
            row.exceeded_at,
            n(row.concurrency),
            n(row.unpriced_calls),
            n(row.revision),
        ])?;
        Ok(())
    }

    /// Takes a line out of the quarantine (a backfill accepted it).
    pub fn unquarantine(&self, file_sha: &str, line: u64) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM quarantine WHERE file_sha = ?1 AND line = ?2")?;
        stmt.execute(params![file_sha, line as i64])?;
        Ok(())
    }

    /// Replaces the parts listed for `local_date`; returns the paths no longer listed.
    pub fn replace_parts(
        &self,
        local_date: &str,
        parts: &[ListedPart],
    ) -> anyhow::Result<Vec<String>> {
        let old = self.parts_on(local_date)?;
        self.tx
            .execute("DELETE FROM parts WHERE local_date = ?1", [local_date])?;
        self.tx.execute(
            "DELETE FROM claims_pending WHERE path NOT IN (SELECT path FROM parts)",
            [],
        )?;
        for p in parts {
            self.add_part(&p.path, &p.file_sha, local_date, p.rows)?;
        }
        Ok(old
            .into_iter()
            .filter(|o| !parts.iter().any(|p| p.path == *o))
            .collect())
    }

    pub fn delete_ledger_row(&self, org_id: &str, local_date: &str) -> anyhow::Result<()> {
        self.tx.execute(
            "DELETE FROM ledger WHERE org_id = ?1 AND local_date = ?2",
            [org_id, local_date],
        )?;
        Ok(())
    }

    /// Sets the counts of the ingested file with this content, and of the duplicate files
    /// that mirror it (their accepted lines are all duplicates).
    pub fn set_file_counts(&self, sha256: &str, c: &FileCounts) -> anyhow::Result<()> {
        let q = &c.quarantined;
        let n = |v: u64| v as i64;
        for (status, unique, duplicates) in [
            ("ingested", c.unique, c.duplicates),
            ("duplicate_file", 0, c.accepted),
        ] {
            self.tx.execute(
                "UPDATE files SET lines = ?3, accepted = ?4, uniq = ?5, duplicates = ?6, malformed = ?7, \
                 missing_field = ?8, bad_timestamp = ?9, bad_method = ?10, bad_status = ?11, \
                 unknown_org = ?12, before_signup = ?13, expired = ?14 WHERE sha256 = ?1 AND status = ?2",
                params![
                    sha256,
                    status,
                    n(c.lines),
                    n(c.accepted),
                    n(unique),
                    n(duplicates),
                    n(q[0]),
                    n(q[1]),
                    n(q[2]),
                    n(q[3]),
                    n(q[4]),
                    n(q[5]),
                    n(q[6]),
                    n(q[7]),
                ],
            )?;
        }
        Ok(())
    }

    /// Replaces the crossings of an org-day.
    pub fn put_crossings(
        &self,
        org_id: &str,
        local_date: &str,
        crossings: &[Crossing],
    ) -> anyhow::Result<()> {
        self.tx
            .prepare_cached("DELETE FROM crossings WHERE org_id = ?1 AND local_date = ?2")?
            .execute([org_id, local_date])?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO crossings (org_id, local_date, threshold, ts, request_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for c in crossings {
            stmt.execute(params![
                org_id,
                local_date,
                c.threshold as i64,
                c.ts,
                c.request_id
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "held",
            10,
        )
        .unwrap();
        tx.cover(&[k("90"), k("10"), k("5"), k("80")], "over:7:2025-10-08")
            .unwrap();
        tx.enqueue(&k("50"), "near", None, &[], "t", b"m", "held", 10)
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            store.held_since(0).unwrap(),
            vec![
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
