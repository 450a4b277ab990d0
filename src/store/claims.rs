//! What the request-id claims keep in the store: the runs of each local date, the parts whose
//! ids are not in them yet, and the retirement of the single index of earlier versions.

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};

use super::{parts_on, Store, Tx};

/// What the request-id claims read of the store, inside a transaction or outside one.
pub trait ClaimsView {
    /// The runs named for `date`, largest first; `None` when the date has no row, and its
    /// claims must be rebuilt from its parts.
    fn claim_runs(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<String>>>;
    /// Every listed part of `date`.
    fn parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>>;
    /// The listed parts of `date` whose ids are not in its runs yet.
    fn pending_parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>>;
}

fn claim_runs(conn: &Connection, date: NaiveDate) -> anyhow::Result<Option<Vec<String>>> {
    let mut stmt = conn.prepare_cached("SELECT runs FROM claim_days WHERE local_date = ?1")?;
    let runs: Option<String> = stmt
        .query_row([date.to_string()], |r| r.get(0))
        .optional()?;
    Ok(runs.map(|r| r.split_whitespace().map(str::to_string).collect()))
}

fn pending_parts_of(conn: &Connection, date: NaiveDate) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.path FROM claims_pending c JOIN parts p ON p.path = c.path
         WHERE p.local_date = ?1 ORDER BY p.path",
    )?;
    let rows = stmt.query_map([date.to_string()], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl ClaimsView for Store {
    fn claim_runs(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<String>>> {
        claim_runs(&self.conn, date)
    }
    fn parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>> {
        parts_on(&self.conn, date)
    }
    fn pending_parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>> {
        pending_parts_of(&self.conn, date)
    }
}

impl ClaimsView for Tx<'_> {
    fn claim_runs(&self, date: NaiveDate) -> anyhow::Result<Option<Vec<String>>> {
        claim_runs(&self.tx, date)
    }
    fn parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>> {
        parts_on(&self.tx, date)
    }
    fn pending_parts_of(&self, date: NaiveDate) -> anyhow::Result<Vec<String>> {
        pending_parts_of(&self.tx, date)
    }
}

impl Tx<'_> {
    /// Names the runs of `date` (largest first, `ids` fingerprints in all), which now cover
    /// every listed part of the date: none of them is pending any more.
    pub fn set_claim_runs(&self, date: NaiveDate, runs: &[String], ids: u64) -> anyhow::Result<()> {
        let day = date.to_string();
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO claim_days (local_date, runs, ids) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![day, runs.join(" "), ids as i64])?;
        self.tx
            .prepare_cached(
                "DELETE FROM claims_pending WHERE path IN (SELECT path FROM parts WHERE local_date = ?1)",
            )?
            .execute([&day])?;
        Ok(())
    }

    /// Forgets the claims of `date` (its parts were replaced or dropped): the next touch
    /// rebuilds them from whatever parts it then lists. Returns the runs it named.
    pub fn forget_claims(&self, date: NaiveDate) -> anyhow::Result<Vec<String>> {
        let runs = claim_runs(&self.tx, date)?.unwrap_or_default();
        self.tx.execute(
            "DELETE FROM claim_days WHERE local_date = ?1",
            [date.to_string()],
        )?;
        Ok(runs)
    }
}

impl Store {
    /// Retires the single claims index of earlier versions (a base and recent files over every
    /// date, keyed by request id alone): forgets its names and returns them, for the caller to
    /// remove. Every date then rebuilds its own claims from its parts when first touched.
    pub fn retire_legacy_claims(&mut self) -> anyhow::Result<Vec<String>> {
        let tx = self.conn.transaction()?;
        let mut files = Vec::new();
        for key in ["claims_base", "claims_recent"] {
            let value: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            files.extend(
                value
                    .iter()
                    .flat_map(|v| v.split_whitespace().map(str::to_string)),
            );
        }
        tx.execute(
            "DELETE FROM meta WHERE key IN ('claims_base', 'claims_recent', 'claims_stale', 'claims_generation')",
            [],
        )?;
        tx.commit()?;
        Ok(files)
    }
}
