//! `creditd explain`: every call an org-day's `calls` counts, in the order its running total
//! uses, with the rule and tier that priced it and the crossings marked (DESIGN §4) — the
//! answer to "why was I charged 5,503 credits on the 8th?".
//!
//! The events keep each call's priced endpoint (the catalog rule), credits, status and the
//! input file and line it came from; the path as sent and the offset tier are read back from
//! that line of the archived file (and the tier worked out again with the catalog in effect at
//! the call). When the archived copy is gone (retention), path and tier are shown as unknown.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, NaiveDate};

use crate::events::{org_day_calls, CallEvent};
use crate::ingest::{classify, LogReader};
use crate::pricing::Pricing;
use crate::setup::Setup;
use crate::store::{LedgerRow, Store};

/// One line of the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedCall {
    /// The call's time in the org's zone, RFC 3339 with milliseconds and the offset.
    pub local_time: String,
    pub request_id: String,
    pub method: String,
    /// The path and query as the gateway logged it; `None` when its archived file is gone.
    pub path: Option<String>,
    /// The catalog rule's endpoint (`GET /api/v1/{module}`), or `unpriced`.
    pub rule: String,
    /// The offset tier that applied (1 = the first), if the rule has tiers.
    pub tier: Option<u32>,
    pub credits: u64,
    /// False for an exempt status (counted, never charged).
    pub billable: bool,
    pub status: u16,
    /// The units used so far (credits, or billable calls on a legacy day).
    pub running_total: u64,
    /// The thresholds this call crossed: `80`, `90`, `over`.
    pub crossing: Vec<String>,
}

/// An org-day explained: its ledger row and its calls.
pub struct Explanation {
    pub row: LedgerRow,
    pub zone: String,
    pub calls: Vec<ExplainedCall>,
    /// Calls whose archived file is gone, so path and tier are unknown.
    pub unknown_paths: u64,
}

/// Explains org-day (`org_id`, `date`) from the store and the events.
pub fn explain(
    setup: &Setup,
    store: &Store,
    org_id: &str,
    date: NaiveDate,
) -> anyhow::Result<Option<Explanation>> {
    let Some(row) = store
        .ledger(Some(date), Some(date), &[org_id.to_string()])?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let zone = setup
        .org(org_id)
        .map(|o| o.timezone)
        .unwrap_or(chrono_tz::UTC);
    let state_dir = &setup.config.state_dir;
    let events = org_day_calls(state_dir, &store.parts_on(date)?, org_id)?;
    let lines = logged_lines(setup, store, &events)?;
    let mut by_rid: HashMap<&str, Vec<String>> = HashMap::new();
    let crossings = store.crossings(&row.org_day())?;
    for c in &crossings {
        let label = if c.threshold >= 100 {
            "over".to_string()
        } else {
            c.threshold.to_string()
        };
        by_rid.entry(c.request_id.as_str()).or_default().push(label);
    }
    let legacy = row.model == crate::allotment::Model::Legacy;
    let mut pricing = Pricing::new(setup.catalogs.clone());
    let mut running = 0u64;
    let mut unknown_paths = 0;
    let mut calls = Vec::with_capacity(events.len());
    for e in &events {
        if e.billable {
            running = running.saturating_add(if legacy { 1 } else { e.credits });
        }
        let logged = lines.get(&(e.file.clone(), e.line));
        let (path, tier) = match logged {
            Some((method, path)) => {
                let price = pricing.price(e.ts_ms, *method, path);
                // A catalog changed since the call was priced (and no backfill ran) does not
                // explain its credits: the tier is left unknown then.
                let tier = (price.credits == e.credits).then_some(price.tier).flatten();
                (Some(path.clone()), tier)
            }
            None => {
                unknown_paths += 1;
                (None, None)
            }
        };
        let mut crossing = by_rid
            .get(e.request_id.as_str())
            .cloned()
            .unwrap_or_default();
        crossing.sort_by_key(|c| c.parse::<u64>().unwrap_or(100));
        calls.push(ExplainedCall {
            local_time: DateTime::from_timestamp_millis(e.ts_ms)
                .map(|t| {
                    t.with_timezone(&zone)
                        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                        .to_string()
                })
                .unwrap_or_default(),
            request_id: e.request_id.clone(),
            method: e.method.clone(),
            path,
            rule: if e.unpriced {
                "unpriced".to_string()
            } else {
                e.endpoint.clone()
            },
            tier,
            credits: e.credits,
            billable: e.billable,
            status: e.status,
            running_total: running,
            crossing,
        });
    }
    Ok(Some(Explanation {
        row,
        zone: zone.name().to_string(),
        calls,
        unknown_paths,
    }))
}

/// The method and path of each (file, line) of `events`, read from the archived files.
fn logged_lines(
    setup: &Setup,
    store: &Store,
    events: &[CallEvent],
) -> anyhow::Result<HashMap<(String, u64), (crate::pricing::Method, String)>> {
    let mut wanted: HashMap<&str, HashSet<u64>> = HashMap::new();
    for e in events {
        wanted.entry(e.file.as_str()).or_default().insert(e.line);
    }
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    for f in store.files()? {
        if f.status != crate::store::FileStatus::Ingested || f.purged.archive {
            continue;
        }
        let Some(lines) = wanted.get(f.sha256.as_str()) else {
            continue;
        };
        let (Some(rel), Some((format, gz))) = (f.archive_path.as_deref(), classify(&f.file)) else {
            continue;
        };
        let path = setup.config.state_dir.join(rel);
        if !path.exists() {
            continue;
        }
        let mut reader = LogReader::open(&path, format, gz)
            .with_context(|| format!("cannot read the archived copy of {}", f.file))?;
        let mut left = lines.len();
        while let Some((line_no, _, decoded)) = reader.next_line()? {
            if !lines.contains(&line_no) {
                continue;
            }
            if let Ok(call) = decoded {
                out.insert(
                    (f.sha256.clone(), line_no),
                    (call.method, call.path.into_owned()),
                );
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    Ok(out)
}
