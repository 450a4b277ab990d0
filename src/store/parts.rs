//! What backfills and retention ask of the parts, the quarantine and the files: parts with the
//! input file they hold, quarantined lines per file, and the purges of DESIGN §6.

use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::params;

use super::{ListedPart, Store, Tx};
use crate::logline::Reason;

/// The `file_sha` of the parts written by earlier versions' backfills, which hold the events of
/// several input files.
pub const MIXED_SOURCES: &str = "backfill";

/// One purge of retention (DESIGN §6), as the digest and `status` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    /// When it ran (ms since the epoch).
    pub at: i64,
    /// `archive`, `events`, `quarantine` or `outbox`.
    pub area: String,
    /// What went: the dates or files, in a few words.
    pub what: String,
    pub items: u64,
    pub bytes: u64,
}

pub(super) const SCHEMA: &str = r#"
-- What retention removed, for the ops digest and `status`.
CREATE TABLE IF NOT EXISTS purges (
    at INTEGER NOT NULL,
    area TEXT NOT NULL,
    what TEXT NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS parts_by_file ON parts (file_sha);
"#;

impl Store {
    /// The parts of `local_date` with the input file each holds.
    pub fn listed_parts_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<ListedPart>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path, file_sha, rows FROM parts WHERE local_date = ?1 ORDER BY path",
        )?;
        let rows = stmt.query_map([local_date.to_string()], |r| {
            Ok(ListedPart {
                path: r.get(0)?,
                file_sha: r.get(1)?,
                rows: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The parts holding events of input file `file_sha`: (local date, part).
    pub fn parts_of_file(&self, file_sha: &str) -> anyhow::Result<Vec<(NaiveDate, ListedPart)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT local_date, path, file_sha, rows FROM parts WHERE file_sha = ?1 ORDER BY path",
        )?;
        let rows = stmt.query_map([file_sha], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ListedPart {
                    path: r.get(1)?,
                    file_sha: r.get(2)?,
                    rows: r.get::<_, i64>(3)? as u64,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (date, part) = row?;
            out.push((parse_date(&date)?, part));
        }
        Ok(out)
    }

    /// Whether any listed part holds the events of several input files (written by an earlier
    /// version's backfill, before each part held one file's).
    pub fn has_mixed_parts(&self) -> anyhow::Result<bool> {
        Ok(self
            .conn
            .prepare("SELECT 1 FROM parts WHERE file_sha = ?1 LIMIT 1")?
            .exists([MIXED_SOURCES])?)
    }

    /// The parts that hold the events of several input files: (local date, path).
    pub fn mixed_parts(&self) -> anyhow::Result<Vec<(NaiveDate, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT local_date, path FROM parts WHERE file_sha = ?1 ORDER BY path")?;
        let rows = stmt.query_map([MIXED_SOURCES], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (date, path) = row?;
            out.push((parse_date(&date)?, path));
        }
        Ok(out)
    }

    /// The quarantined lines of input file `file_sha`: line → reason.
    pub fn quarantined_lines_of(&self, file_sha: &str) -> anyhow::Result<HashMap<u64, Reason>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT line, reason FROM quarantine WHERE file_sha = ?1")?;
        let rows = stmt.query_map([file_sha], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (line, reason) = row?;
            if let Some(r) = Reason::parse(&reason) {
                out.insert(line, r);
            }
        }
        Ok(out)
    }

    /// The input files with quarantined lines that a backfill of calls between `from_ms` and
    /// `to_ms` may take in: a call of a known shape refused by the org checks, at a `ts` in that
    /// window (or of unknown `ts`, from a store of an earlier version).
    pub fn files_with_recoverable_lines(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT file_sha FROM quarantine
             WHERE reason IN ('unknown_org', 'before_signup', 'expired')
               AND (ts IS NULL OR (ts >= ?1 AND ts < ?2))",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The local dates that have listed parts, earliest first, up to (excluding) `before`.
    pub fn part_dates_before(&self, before: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT local_date FROM parts WHERE local_date < ?1 ORDER BY local_date",
        )?;
        let rows = stmt.query_map([before.to_string()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(parse_date(&row?)?);
        }
        Ok(out)
    }

    /// The orgs with a ledger row or a pending recompute on `local_date`.
    pub fn orgs_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT org_id FROM ledger WHERE local_date = ?1
             UNION SELECT org_id FROM dirty WHERE local_date = ?1",
        )?;
        let rows = stmt.query_map([local_date.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The orgs whose day `local_date` is not settled: a recompute is pending, or it has a
    /// ledger row but is not closed yet.
    pub fn unsettled_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT org_id FROM dirty WHERE local_date = ?1
             UNION SELECT l.org_id FROM ledger l LEFT JOIN closes c
                 ON c.org_id = l.org_id AND c.local_date = l.local_date
             WHERE l.local_date = ?1 AND c.org_id IS NULL
             ORDER BY 1",
        )?;
        let rows = stmt.query_map([local_date.to_string()], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether the store lists parts or names claims for `local_date`.
    pub fn date_is_listed(&self, local_date: NaiveDate) -> anyhow::Result<bool> {
        let day = local_date.to_string();
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM parts WHERE local_date = ?1)
                  + (SELECT count(*) FROM claim_days WHERE local_date = ?1)",
            [&day],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// The files processed before `before` (RFC 3339, as `processed_at` is written) whose
    /// archived copy is still there: (sha256 or name, archive path).
    pub fn archived_before(&self, before: &str) -> anyhow::Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, archive_path FROM files
             WHERE processed_at < ?1 AND archive_purged = 0 AND archive_path IS NOT NULL
             ORDER BY seq",
        )?;
        let rows = stmt.query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The archive paths of files whose archived copy was purged: a crash may have left the
    /// file behind after the purge committed.
    pub fn purged_archive_paths(&self) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT archive_path FROM files WHERE archive_purged = 1 AND archive_path IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ingested files processed before `before` whose quarantined lines are still kept:
    /// (sha256, quarantined lines).
    pub fn quarantine_before(&self, before: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT f.sha256, count(q.line) FROM files f JOIN quarantine q ON q.file_sha = f.sha256
             WHERE f.status = 'ingested' AND f.processed_at < ?1 AND f.quarantine_purged = 0
             GROUP BY f.sha256 ORDER BY min(f.seq)",
        )?;
        let rows = stmt.query_map([before], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The purges since `since_ms` (exclusive), oldest first.
    pub fn purges_since(&self, since_ms: i64) -> anyhow::Result<Vec<PurgeRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, area, what, items, bytes FROM purges WHERE at > ?1 ORDER BY at, rowid",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(PurgeRecord {
                at: r.get(0)?,
                area: r.get(1)?,
                what: r.get(2)?,
                items: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Gives the free pages of the store file back to the file system (DESIGN §6: the store
    /// shrinks once retention removed rows). A store of an earlier version is converted once to
    /// incremental auto-vacuum, which rewrites it whole.
    pub fn give_back_space(&self) -> anyhow::Result<()> {
        let mode: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if mode != 2 {
            self.conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
        }
        self.conn.execute_batch("PRAGMA incremental_vacuum;")?;
        // The write-ahead log holds the freed pages until a checkpoint truncates it.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Unlists every part of `local_date` (retention dropped the date); returns their paths.
    pub fn drop_parts_on(&self, local_date: NaiveDate) -> anyhow::Result<Vec<String>> {
        let day = local_date.to_string();
        let paths = super::parts_on(&self.tx, local_date)?;
        self.tx.execute(
            "DELETE FROM claims_pending WHERE path IN (SELECT path FROM parts WHERE local_date = ?1)",
            [&day],
        )?;
        self.tx
            .execute("DELETE FROM parts WHERE local_date = ?1", [&day])?;
        self.forget_parts_seen(local_date)?;
        Ok(paths)
    }

    /// Replaces one listed part by others (a part of several input files split by file).
    pub fn split_part(
        &self,
        local_date: NaiveDate,
        old: &str,
        new: &[ListedPart],
    ) -> anyhow::Result<()> {
        self.tx
            .execute("DELETE FROM parts WHERE path = ?1", [old])?;
        self.forget_parts_seen(local_date)?;
        self.tx
            .execute("DELETE FROM claims_pending WHERE path = ?1", [old])?;
        for p in new {
            self.add_part(&p.path, &p.file_sha, local_date, p.rows)?;
        }
        Ok(())
    }

    /// Marks the archived copy of file row `seq` as purged.
    pub fn mark_archive_purged(&self, seq: i64) -> anyhow::Result<()> {
        self.tx
            .execute("UPDATE files SET archive_purged = 1 WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// Deletes the quarantined lines of input file `file_sha` and marks them purged on its rows
    /// (the ingested one and the duplicate files that repeat its counts).
    pub fn purge_quarantine_of(&self, file_sha: &str) -> anyhow::Result<()> {
        self.tx
            .execute("DELETE FROM quarantine WHERE file_sha = ?1", [file_sha])?;
        self.tx.execute(
            "UPDATE files SET quarantine_purged = 1 WHERE sha256 = ?1",
            [file_sha],
        )?;
        Ok(())
    }

    /// Empties the bodies of messages sent before `before_ms`; their keys and statuses stay,
    /// so a key is still sent once, ever. Returns how many and the bytes freed.
    pub fn purge_sent_bodies(&self, before_ms: i64) -> anyhow::Result<(Vec<String>, u64)> {
        let mut stmt = self.tx.prepare(
            "SELECT key, length(message) FROM outbox
             WHERE status = 'sent' AND sent_at < ?1 AND length(message) > 0",
        )?;
        let mut keys = Vec::new();
        let mut bytes = 0u64;
        let rows = stmt.query_map([before_ms], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (key, len) = row?;
            keys.push(key);
            bytes += len.max(0) as u64;
        }
        self.tx.execute(
            "UPDATE outbox SET message = X'' WHERE status = 'sent' AND sent_at < ?1 AND length(message) > 0",
            [before_ms],
        )?;
        Ok((keys, bytes))
    }

    /// Records a purge.
    pub fn record_purge(&self, p: &PurgeRecord) -> anyhow::Result<()> {
        self.tx.execute(
            "INSERT INTO purges (at, area, what, items, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![p.at, p.area, p.what, p.items as i64, p.bytes as i64],
        )?;
        Ok(())
    }
}

fn parse_date(s: &str) -> anyhow::Result<NaiveDate> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("the store holds a date that is not one: {s:?} ({e})"))
}
