//! The priced-event store: Parquet files partitioned by org-local day, and the polars query
//! that turns one day's events into ledger figures and threshold crossings.
//!
//! Layout: `state/events/local_date=YYYY-MM-DD/<file sha256 prefix>.parquet`, one part per
//! input file and day (more, `<prefix>.<n>.parquet`, when a file touches more days than a
//! writer keeps open: [`MAX_OPEN_PARTS`]), readable by DuckDB, Spark or Trino. A part becomes visible only when the
//! store lists it (in the same transaction as the file's claims), so a crash can leave an
//! orphan file behind but never a half-counted one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::NaiveDate;
use polars::prelude::*;

use crate::localday::OrgDay;

/// The columns of a priced event.
pub const EVENT_COLUMNS: [&str; 15] = [
    "request_id",
    "org_id",
    "ts",
    "local_date",
    "method",
    "endpoint",
    "status",
    "billable",
    "credits",
    "unpriced",
    "latency_ms",
    "charged_credits",
    "dc",
    "file",
    "line",
];

/// One priced, localized, unique call.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub request_id: &'a str,
    pub org_id: &'a str,
    pub ts_ms: i64,
    pub local_date: NaiveDate,
    pub method: &'static str,
    pub endpoint: std::sync::Arc<str>,
    pub status: u16,
    pub billable: bool,
    pub credits: u64,
    pub unpriced: bool,
    pub latency_ms: Option<i64>,
    pub charged_credits: Option<i64>,
    pub dc: Option<&'a str>,
    /// The sha256 of the input file the call came from, and its line there.
    pub file: &'a str,
    pub line: u64,
}

mod columns;
mod details;
mod digest;
mod explain;
mod reconcile;
mod rewrite;
#[cfg(test)]
mod tests;
mod writer;

pub use details::*;
pub use digest::*;
pub use explain::*;
pub use reconcile::*;
pub use rewrite::*;
pub use writer::*;

/// Calls `each(org_id, request_id)` for every event of `parts` (relative to `state_dir`): the
/// keys the request-id claims index. A few hundred parts are read at a time, which keeps the
/// columns of one batch small.
pub fn for_each_request_id(
    state_dir: &Path,
    parts: &[String],
    mut each: impl FnMut(&str, &str),
) -> anyhow::Result<()> {
    for batch in parts.chunks(256) {
        let df = scan_parts(state_dir, batch)?
            .select([col("org_id"), col("request_id")])
            .collect()
            .map_err(anyhow::Error::from)
            .map_err(|e| e.context("cannot read the request ids of the event parts"))?;
        let orgs = df.column("org_id")?.str()?;
        let ids = df.column("request_id")?.str()?;
        for (org, id) in orgs.iter().zip(ids.iter()) {
            if let (Some(org), Some(id)) = (org, id) {
                each(org, id);
            }
        }
    }
    Ok(())
}

/// Scans the given parts (paths relative to `state_dir`) lazily. Private to `events`: nothing
/// outside it names polars or holds a frame.
fn scan_parts(state_dir: &Path, parts: &[String]) -> PolarsResult<LazyFrame> {
    let paths: Vec<PlRefPath> = parts
        .iter()
        .map(|p| PlRefPath::new(state_dir.join(p).to_string_lossy().as_ref()))
        .collect();
    LazyFrame::scan_parquet_files(paths.into_iter().collect(), ScanArgsParquet::default())
}

/// `org_id` is one of `orgs`.
fn org_in(orgs: &[String]) -> Expr {
    orgs.iter()
        .map(|o| col("org_id").eq(lit(o.as_str())))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false))
}

/// The `limit` endpoints with the most unpriced calls: (endpoint, calls), most first.
fn unpriced_endpoints(events: LazyFrame, limit: IdxSize) -> PolarsResult<Vec<(String, u64)>> {
    Ok(unpriced_endpoints_counted(events, limit)?.0)
}

/// [`unpriced_endpoints`] and how many distinct unpriced endpoints there are in all.
fn unpriced_endpoints_counted(
    events: LazyFrame,
    limit: IdxSize,
) -> PolarsResult<(Vec<(String, u64)>, u64)> {
    let grouped = events
        .filter(col("unpriced"))
        .group_by([col("endpoint")])
        .agg([len().cast(DataType::Int64).alias("calls")])
        .collect()?;
    let total = grouped.height() as u64;
    let df = grouped
        .lazy()
        .sort_by_exprs(
            [col("calls"), col("endpoint")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(limit)
        .collect()?;
    let names = df.column("endpoint")?.str()?;
    let calls = df.column("calls")?.i64()?;
    let rows = (0..df.height())
        .map(|i| {
            (
                names.get(i).unwrap_or_default().to_string(),
                calls.get(i).unwrap_or(0) as u64,
            )
        })
        .collect();
    Ok((rows, total))
}

/// Gateway drift over the calls that carry `charged_credits`: how many (`n`), what the gateway
/// charged (`charged`) and what creditd computed for them (`computed`).
fn drift_figures() -> [Expr; 3] {
    [
        len().cast(DataType::Int64).alias("n"),
        col("charged_credits")
            .sum()
            .cast(DataType::Int64)
            .alias("charged"),
        when(col("billable"))
            .then(col("credits"))
            .otherwise(lit(0i64))
            .sum()
            .cast(DataType::Int64)
            .alias("computed"),
    ]
}
