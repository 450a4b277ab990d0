//! The ledger's rows, their crossings, the org-days waiting to be reconciled (`dirty`) and
//! the days closed, as the ledger and the alerts read and write them.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use chrono::NaiveDate;

use super::{Store, Tx};
use crate::allotment::{DayTerms, Model};
use crate::localday::OrgDay;

/// A ledger row as stored: the org-day's terms (what it is allotted and why: `DayTerms`,
/// declared once, in the rules) and what its calls used. The terms read through the row
/// (`row.allotted` is `row.terms.allotted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub org_id: String,
    pub local_date: NaiveDate,
    pub terms: DayTerms,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub used: u64,
    pub exceeded_at: Option<i64>,
    pub unpriced_calls: u64,
    /// 0 for the first computation; +1 each time late data changes it afterwards.
    pub revision: u64,
}

impl std::ops::Deref for LedgerRow {
    type Target = DayTerms;

    fn deref(&self) -> &DayTerms {
        &self.terms
    }
}

impl LedgerRow {
    /// The org-day the row is the ledger of.
    pub fn org_day(&self) -> OrgDay {
        OrgDay::new(self.org_id.clone(), self.local_date)
    }
}

/// What the ledger holds of an org-day: its row, its crossings, and the last part of its date
/// (by `parts.added`) that the row counts (0 when not known: a row written by a backfill, by an
/// earlier version, or on a date whose parts were replaced since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub row: LedgerRow,
    pub crossings: Vec<Crossing>,
    pub parts_seen: i64,
}

/// A threshold crossing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub threshold: u64,
    pub ts: i64,
    pub request_id: String,
}

fn crossings(conn: &Connection, day: &OrgDay) -> anyhow::Result<Vec<Crossing>> {
    let mut stmt = conn.prepare_cached(
        "SELECT threshold, ts, request_id FROM crossings
         WHERE org_id = ?1 AND local_date = ?2 ORDER BY threshold",
    )?;
    let rows = stmt.query_map(params![day.org_id, day.date], |r| crossing(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The crossing in columns `first..first + 3` of a row: threshold, ts, request id.
fn crossing(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Crossing> {
    Ok(Crossing {
        threshold: r.get::<_, i64>(first)? as u64,
        ts: r.get(first + 1)?,
        request_id: r.get(first + 2)?,
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
        terms: DayTerms {
            model: {
                let name: String = r.get(2)?;
                Model::parse(&name).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        format!("unknown model {name:?}").into(),
                    )
                })?
            },
            reason: r.get(3)?,
            edition: r.get(4)?,
            agents: n(5)?,
            light_agents: n(6)?,
            base: n(10)?,
            variable: n(11)?,
            additional: n(12)?,
            additional_excess: n(13)?,
            legacy_limit: n(14)?,
            allotted: n(15)?,
            concurrency: n(18)?,
        },
        calls: n(7)?,
        billable_calls: n(8)?,
        credits: n(9)?,
        used: n(16)?,
        exceeded_at: r.get(17)?,
        unpriced_calls: n(19)?,
        revision: n(20)?,
    })
}

fn org_day(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrgDay> {
    Ok(OrgDay::new(r.get::<_, String>(0)?, r.get(1)?))
}

impl Store {
    /// Org-days waiting for recomputation, by date then org.
    pub fn dirty(&self) -> anyhow::Result<Vec<OrgDay>> {
        let mut stmt = self
            .conn
            .prepare("SELECT org_id, local_date FROM dirty ORDER BY local_date, org_id")?;
        let rows = stmt.query_map([], org_day)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ledger rows, filtered, sorted by org id as text then date.
    pub fn ledger(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
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
    pub fn crossings(&self, day: &OrgDay) -> anyhow::Result<Vec<Crossing>> {
        crossings(&self.conn, day)
    }

    /// What the ledger holds of the org-days of `orgs` on `date` (those with a row), in two
    /// queries whatever the number of orgs.
    pub fn stored_on(
        &self,
        date: NaiveDate,
        orgs: &[String],
    ) -> anyhow::Result<HashMap<String, Stored>> {
        let wanted: HashSet<&str> = orgs.iter().map(String::as_str).collect();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS}, parts_seen FROM ledger WHERE local_date = ?1"
        ))?;
        let rows = stmt.query_map([date], |r| Ok((ledger_row(r)?, r.get::<_, i64>(21)?)))?;
        let mut out = HashMap::new();
        for r in rows {
            let (row, parts_seen) = r?;
            if wanted.contains(row.org_id.as_str()) {
                let stored = Stored {
                    row,
                    crossings: Vec::new(),
                    parts_seen,
                };
                out.insert(stored.row.org_id.clone(), stored);
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT org_id, threshold, ts, request_id FROM crossings
             WHERE local_date = ?1 ORDER BY org_id, threshold",
        )?;
        let rows = stmt.query_map([date], |r| Ok((r.get::<_, String>(0)?, crossing(r, 1)?)))?;
        for r in rows {
            let (org, crossing) = r?;
            if let Some(s) = out.get_mut(&org) {
                s.crossings.push(crossing);
            }
        }
        Ok(out)
    }

    /// Ledger org-days not closed yet, by org then date.
    pub fn unclosed_days(&self) -> anyhow::Result<Vec<OrgDay>> {
        let mut stmt = self.conn.prepare(
            "SELECT l.org_id, l.local_date FROM ledger l
             LEFT JOIN closes c ON c.org_id = l.org_id AND c.local_date = l.local_date
             WHERE c.org_id IS NULL ORDER BY l.org_id, l.local_date",
        )?;
        let rows = stmt.query_map([], org_day)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Org-days closed after `since_ms`, by org then date.
    pub fn closed_since(&self, since_ms: i64) -> anyhow::Result<Vec<OrgDay>> {
        let mut stmt = self.conn.prepare(
            "SELECT org_id, local_date FROM closes WHERE closed_at > ?1 ORDER BY org_id, local_date",
        )?;
        let rows = stmt.query_map([since_ms], org_day)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Tx<'_> {
    pub fn mark_dirty(&self, org_id: &str, date: NaiveDate) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO dirty (org_id, local_date) VALUES (?1, ?2)")?;
        stmt.execute(params![org_id, date])?;
        Ok(())
    }

    pub fn clear_dirty(&self, day: &OrgDay) -> anyhow::Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM dirty WHERE org_id = ?1 AND local_date = ?2")?;
        stmt.execute(params![day.org_id, day.date])?;
        Ok(())
    }

    /// Records that an org-day closed; `false` if it had closed before.
    pub fn close_day(&self, day: &OrgDay, due_at: i64, closed_at: i64) -> anyhow::Result<bool> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO closes (org_id, local_date, due_at, closed_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        Ok(stmt.execute(params![day.org_id, day.date, due_at, closed_at])? == 1)
    }

    /// Crossings of one org-day, by threshold.
    pub fn crossings(&self, day: &OrgDay) -> anyhow::Result<Vec<Crossing>> {
        crossings(&self.tx, day)
    }

    /// The stored ledger row of an org-day, if any.
    pub fn ledger_row(&self, day: &OrgDay) -> anyhow::Result<Option<LedgerRow>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger WHERE org_id = ?1 AND local_date = ?2"
        ))?;
        Ok(stmt
            .query_row(params![day.org_id, day.date], ledger_row)
            .optional()?)
    }

    /// Writes an org-day's row, counting the parts of its date up to `parts_seen` (0: not
    /// known).
    pub fn put_ledger_row(&self, row: &LedgerRow, parts_seen: i64) -> anyhow::Result<()> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO ledger ({LEDGER_COLUMNS}, parts_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ))?;
        let n = |v: u64| v as i64;
        stmt.execute(params![
            row.org_id,
            row.local_date,
            row.model.as_str(),
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
            parts_seen,
        ])?;
        Ok(())
    }

    /// Forgets which parts the rows of `local_date` count, when its parts are replaced or
    /// unlisted: they are then recomputed from the day's events, never added to.
    pub fn forget_parts_seen(&self, local_date: NaiveDate) -> anyhow::Result<()> {
        self.tx
            .prepare_cached("UPDATE ledger SET parts_seen = 0 WHERE local_date = ?1")?
            .execute([local_date])?;
        Ok(())
    }

    pub fn delete_ledger_row(&self, day: &OrgDay) -> anyhow::Result<()> {
        self.tx.execute(
            "DELETE FROM ledger WHERE org_id = ?1 AND local_date = ?2",
            params![day.org_id, day.date],
        )?;
        Ok(())
    }

    /// Replaces the crossings of an org-day.
    pub fn put_crossings(&self, day: &OrgDay, crossings: &[Crossing]) -> anyhow::Result<()> {
        self.tx
            .prepare_cached("DELETE FROM crossings WHERE org_id = ?1 AND local_date = ?2")?
            .execute(params![day.org_id, day.date])?;
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO crossings (org_id, local_date, threshold, ts, request_id) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for c in crossings {
            stmt.execute(params![
                day.org_id,
                day.date,
                c.threshold as i64,
                c.ts,
                c.request_id
            ])?;
        }
        Ok(())
    }
}
