//! The quarantined lines as `creditd quarantine` lists them (DESIGN §4).

use chrono::NaiveDate;
use rusqlite::types::Value;

use super::Store;
use crate::logline::Reason;

/// Which quarantined lines to list; every field narrows the selection.
#[derive(Debug, Default, Clone)]
pub struct QuarantineFilter {
    /// The inbox name of the file.
    pub file: Option<String>,
    pub reason: Option<Reason>,
    /// Local dates from (inclusive); rows without a local date are left out.
    pub from: Option<NaiveDate>,
    /// Local dates to (inclusive); rows without a local date are left out.
    pub to: Option<NaiveDate>,
}

/// One quarantined line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedLine {
    /// The inbox name of its file.
    pub file: String,
    /// Its line number in the file (1-based).
    pub line: u64,
    pub reason: String,
    pub org_id: Option<String>,
    pub local_date: Option<String>,
    /// The line as kept.
    pub raw: String,
}

impl Store {
    /// The quarantined lines `filter` selects, in the order their files were first seen, then by
    /// line.
    pub fn quarantined(&self, filter: &QuarantineFilter) -> anyhow::Result<Vec<QuarantinedLine>> {
        let mut sql = String::from(
            "SELECT q.file, q.line, q.reason, q.org_id, q.local_date, q.raw FROM quarantine q \
             JOIN files f ON f.sha256 = q.file_sha AND f.status = 'ingested' WHERE 1 = 1",
        );
        let mut args: Vec<Value> = Vec::new();
        if let Some(file) = &filter.file {
            args.push(Value::Text(file.clone()));
            sql.push_str(&format!(" AND q.file = ?{}", args.len()));
        }
        if let Some(reason) = filter.reason {
            args.push(Value::Text(reason.as_str().to_string()));
            sql.push_str(&format!(" AND q.reason = ?{}", args.len()));
        }
        if let Some(from) = filter.from {
            args.push(Value::Text(from.to_string()));
            sql.push_str(&format!(" AND q.local_date >= ?{}", args.len()));
        }
        if let Some(to) = filter.to {
            args.push(Value::Text(to.to_string()));
            sql.push_str(&format!(" AND q.local_date <= ?{}", args.len()));
        }
        sql.push_str(" ORDER BY f.seq, q.line");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(QuarantinedLine {
                file: r.get(0)?,
                line: r.get::<_, i64>(1)? as u64,
                reason: r.get(2)?,
                org_id: r.get(3)?,
                local_date: r.get(4)?,
                raw: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
