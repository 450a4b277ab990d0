//! What `creditd explain` reads of one org-day: its calls in the order the running total uses.

use std::path::Path;

use polars::prelude::*;

use super::scan_parts;

/// One accepted call of an org-day, as its event keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    pub ts_ms: i64,
    pub request_id: String,
    pub method: String,
    /// The catalog rule's endpoint that priced it, or the call's path when none did.
    pub endpoint: String,
    pub status: u16,
    pub billable: bool,
    pub credits: u64,
    pub unpriced: bool,
    /// The input file (its sha256) and the line the call came from.
    pub file: String,
    pub line: u64,
}

/// The events of `org_id` in `parts` (one local date's), ordered by `ts`, then request id:
/// the order of the running totals and crossings (see `reconcile`).
pub fn org_day_calls(
    state_dir: &Path,
    parts: &[String],
    org_id: &str,
) -> anyhow::Result<Vec<CallEvent>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let df = scan_parts(state_dir, parts)?
        .filter(col("org_id").eq(lit(org_id)))
        .select([
            col("ts"),
            col("request_id"),
            col("method"),
            col("endpoint"),
            col("status").cast(DataType::Int64),
            col("billable"),
            col("credits").cast(DataType::Int64),
            col("unpriced"),
            col("file"),
            col("line").cast(DataType::Int64),
        ])
        .sort_by_exprs(
            [col("ts"), col("request_id")],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(anyhow::Error::from)
        .map_err(|e| e.context(format!("cannot read the events of org {org_id}")))?;
    let ts = df.column("ts")?.cast(&DataType::Int64)?;
    let ts = ts.i64()?;
    let rid = df.column("request_id")?.str()?;
    let method = df.column("method")?.str()?;
    let endpoint = df.column("endpoint")?.str()?;
    let status = df.column("status")?.i64()?;
    let billable = df.column("billable")?.bool()?;
    let credits = df.column("credits")?.i64()?;
    let unpriced = df.column("unpriced")?.bool()?;
    let file = df.column("file")?.str()?;
    let line = df.column("line")?.i64()?;
    Ok((0..df.height())
        .map(|i| CallEvent {
            ts_ms: ts.get(i).unwrap_or(0),
            request_id: rid.get(i).unwrap_or_default().to_string(),
            method: method.get(i).unwrap_or_default().to_string(),
            endpoint: endpoint.get(i).unwrap_or_default().to_string(),
            status: status.get(i).unwrap_or(0).clamp(0, 999) as u16,
            billable: billable.get(i).unwrap_or(false),
            credits: credits.get(i).unwrap_or(0).max(0) as u64,
            unpriced: unpriced.get(i).unwrap_or(false),
            file: file.get(i).unwrap_or_default().to_string(),
            line: line.get(i).unwrap_or(0).max(0) as u64,
        })
        .collect())
}
