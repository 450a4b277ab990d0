//! The SQLite store: files, request-id claims, quarantine, event parts, the ledger.
//!
//! Architecture invariant: only this module speaks SQL. Every multi-step change is one
//! transaction; unique keys make re-runs idempotent.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::logline::Reason;

mod claims;
mod ledger;
mod migrate;
mod outbox;
mod parts;
mod problems;
mod quarantine;
mod runs;
mod schema;
pub use claims::ClaimsView;
pub use ledger::{Crossing, LedgerRow, Stored};
pub use outbox::{Change, OutboxMessage, Status, UnsentMessage};
pub use parts::{PurgeRecord, MIXED_SOURCES};
pub use problems::{Problem, Unit};
pub use quarantine::{QuarantineFilter, QuarantinedLine};
pub use runs::{gateway_of, OutboxCounts, TaskRun};

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
    pub status: FileStatus,
    pub counts: FileCounts,
    pub archive_path: Option<String>,
    pub error: Option<String>,
    /// What retention removed of the file (DESIGN §6); the row itself is kept forever.
    pub purged: Purged,
}

/// What became of an input file (the `status` column of `files`, DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileStatus {
    Ingested,
    /// The same bytes as a file ingested before: nothing of it counted again.
    DuplicateFile,
    /// It could not be read whole (a truncated gzip, an IO error): nothing of it applied; the
    /// next run retries it.
    Failed,
}

impl FileStatus {
    pub const ALL: [FileStatus; 3] = [
        FileStatus::Ingested,
        FileStatus::DuplicateFile,
        FileStatus::Failed,
    ];

    /// The name the store, `files` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Ingested => "ingested",
            FileStatus::DuplicateFile => "duplicate_file",
            FileStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for FileStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        FileStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                rusqlite::types::FromSqlError::Other(format!("unknown file status {s:?}").into())
            })
    }
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
                conn.execute_batch(schema::SCHEMA)?;
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
    pub fn parts_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
        parts_on(&self.conn, local_date)
    }

    /// Parquet parts holding events of `local_date`, each with the number it was listed under
    /// (see [`Tx::add_part`]).
    pub fn numbered_parts_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<(String, i64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, added FROM parts WHERE local_date = ?1 ORDER BY path")?;
        let rows = stmt.query_map([local_date], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The events in the listed parts of a local date.
    pub fn events_on(&self, local_date: NaiveDate) -> anyhow::Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT COALESCE(SUM(rows), 0) FROM parts WHERE local_date = ?1")?;
        Ok(stmt.query_row([local_date], |r| r.get::<_, i64>(0))?.max(0) as u64)
    }

    /// Every listed part path.
    pub fn all_parts(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT path FROM parts")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
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

const FILE_COLUMNS: &str = "file, sha256, status, lines, accepted, uniq, duplicates, malformed, \
     missing_field, bad_timestamp, bad_method, bad_status, unknown_org, before_signup, expired, \
     archive_path, error, archive_purged, quarantine_purged";

/// Parquet parts holding events of `local_date`, for the store and inside a transaction.
fn parts_on(conn: &Connection, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT path FROM parts WHERE local_date = ?1 ORDER BY path")?;
    let rows = stmt.query_map([local_date], |r| r.get(0))?;
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
            at.and_then(|a| a.local_date),
            at.map(|a| a.ts_ms),
        ])?;
        Ok(())
    }

    /// Lists a part of `local_date` under the next number of the parts counter.
    pub fn add_part(
        &self,
        path: &str,
        file_sha: &str,
        local_date: NaiveDate,
        rows: u64,
    ) -> anyhow::Result<()> {
        // Each listing takes the next number of a counter that only rises, whatever parts are
        // unlisted since: a ledger row counts every part of its date up to the one it names.
        let added: i64 = self
            .tx
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('parts_added', '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
                 RETURNING CAST(value AS INTEGER)",
            )?
            .query_row([], |r| r.get(0))?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR REPLACE INTO parts (path, file_sha, local_date, rows, added) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![path, file_sha, local_date, rows as i64, added])?;
        // Its request ids are claims not in its day's runs yet.
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO claims_pending (path) VALUES (?1)")?
            .execute([path])?;
        Ok(())
    }

    /// Parquet parts holding events of `local_date`.
    pub fn parts_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
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
                row.status.as_str(),
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
        local_date: NaiveDate,
        parts: &[ListedPart],
    ) -> anyhow::Result<Vec<String>> {
        let old = self.parts_on(local_date)?;
        self.tx
            .execute("DELETE FROM parts WHERE local_date = ?1", [local_date])?;
        self.forget_parts_seen(local_date)?;
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
}
