//! Open problems (DESIGN §7): a failing unit — a file, an org-day, a message, a task, a
//! rejected config — is recorded with what failed, where, when it was first and last seen, how
//! many attempts failed and the last error. It stays open while retries fail and is closed by
//! the first run in which the unit succeeds.

use std::fmt;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Store, Tx};

pub(super) const SCHEMA: &str = r#"
-- Units that failed and are retried at every run (DESIGN §7); a row is removed when its unit
-- succeeds.
CREATE TABLE IF NOT EXISTS problems (
    unit TEXT NOT NULL,
    target TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (unit, target)
) WITHOUT ROWID;
"#;

/// The kinds of failure units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    /// An input file that could not be read or recorded (its `files` row says `failed`).
    File,
    /// An org-day whose ledger row could not be recomputed (target `org:date`).
    OrgDay,
    /// A message that could not be built, or was refused for good (target: what it covers).
    Message,
    /// A task of a run (target: the task's name).
    Task,
    /// Config or registry rejected at a daemon reload (target: the files' digest).
    Config,
}

impl Unit {
    pub const ALL: [Unit; 5] = [
        Unit::File,
        Unit::OrgDay,
        Unit::Message,
        Unit::Task,
        Unit::Config,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::File => "file",
            Unit::OrgDay => "org-day",
            Unit::Message => "message",
            Unit::Task => "task",
            Unit::Config => "config",
        }
    }

    pub fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str() == s)
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One open problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub unit: Unit,
    pub target: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub attempts: u64,
    pub error: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} ({} attempt{})",
            self.unit,
            self.target,
            self.error,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

fn record(
    conn: &Connection,
    unit: Unit,
    target: &str,
    error: &str,
    now_ms: i64,
) -> anyhow::Result<()> {
    conn.prepare_cached(
        "INSERT INTO problems (unit, target, first_seen, last_seen, attempts, error)
         VALUES (?1, ?2, ?3, ?3, 1, ?4)
         ON CONFLICT (unit, target) DO UPDATE SET
             last_seen = excluded.last_seen, attempts = attempts + 1, error = excluded.error",
    )?
    .execute(params![unit.as_str(), target, now_ms, error])?;
    Ok(())
}

fn resolve(conn: &Connection, unit: Unit, target: &str) -> anyhow::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM problems WHERE unit = ?1 AND target = ?2")?
        .execute(params![unit.as_str(), target])?;
    Ok(n > 0)
}

fn list(conn: &Connection, unit: Option<Unit>) -> anyhow::Result<Vec<Problem>> {
    // A store written before this table existed, opened read-only, has no problems.
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'problems'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT unit, target, first_seen, last_seen, attempts, error FROM problems
         WHERE ?1 IS NULL OR unit = ?1 ORDER BY unit, target",
    )?;
    let rows = stmt.query_map([unit.map(Unit::as_str)], |r| {
        let unit: String = r.get(0)?;
        Ok(Problem {
            unit: Unit::parse(&unit).unwrap_or(Unit::Task),
            target: r.get(1)?,
            first_seen: r.get(2)?,
            last_seen: r.get(3)?,
            attempts: r.get::<_, i64>(4)?.max(0) as u64,
            error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store {
    /// Records a failed attempt of a unit, on its own (the work that failed has rolled back).
    pub fn record_problem(
        &self,
        unit: Unit,
        target: &str,
        error: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        record(&self.conn, unit, target, error, now_ms)
    }

    /// Closes a unit's problem after it succeeded; whether one was open.
    pub fn resolve_problem(&self, unit: Unit, target: &str) -> anyhow::Result<bool> {
        resolve(&self.conn, unit, target)
    }

    /// Every open problem, or those of one unit, by unit then target.
    pub fn problems(&self, unit: Option<Unit>) -> anyhow::Result<Vec<Problem>> {
        list(&self.conn, unit)
    }
}

impl Tx<'_> {
    /// Records a failed attempt of a unit as part of this transaction.
    pub fn record_problem(
        &self,
        unit: Unit,
        target: &str,
        error: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        record(&self.tx, unit, target, error, now_ms)
    }

    /// Closes a unit's problem as part of this transaction; whether one was open.
    pub fn resolve_problem(&self, unit: Unit, target: &str) -> anyhow::Result<bool> {
        resolve(&self.tx, unit, target)
    }

    /// Every open problem of one unit.
    pub fn problems(&self, unit: Unit) -> anyhow::Result<Vec<Problem>> {
        list(&self.tx, Some(unit))
    }

    /// Runs `f` inside a savepoint: what it wrote stays if it succeeds and is undone if it
    /// fails, while the rest of the transaction goes on either way.
    pub fn isolated<T>(&self, f: impl FnOnce(&Self) -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.tx.execute_batch("SAVEPOINT unit")?;
        match f(self) {
            Ok(v) => {
                self.tx.execute_batch("RELEASE unit")?;
                Ok(v)
            }
            Err(e) => {
                self.tx.execute_batch("ROLLBACK TO unit; RELEASE unit")?;
                Err(e)
            }
        }
    }
}
