//! The tasks the CLI and the daemon run: each takes the setup, the locked state, the clock and
//! a stop flag, and reports what it did.

use std::sync::atomic::AtomicBool;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::ingest::{self, Outcome};
use crate::ledger;
use crate::setup::Setup;
use crate::state::State;

/// What a task did: lines for a person, one summary line, and whether everything worked.
#[derive(Debug, Default)]
pub struct TaskReport {
    pub details: Vec<String>,
    pub problems: Vec<String>,
    pub summary: String,
    pub ok: bool,
}

/// The tasks available in this build.
pub const AVAILABLE: [&str; 3] = ["ingest", "close-days", "all"];

/// Runs one task by name.
pub fn run(
    task: &str,
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    match task {
        "ingest" => ingest(setup, state, now, stop),
        "close-days" => close_days(setup, state, now),
        "all" => {
            let mut a = ingest(setup, state, now, stop)?;
            let b = close_days(setup, state, now)?;
            a.details.extend(b.details);
            a.problems.extend(b.problems);
            a.summary = format!("{}; {}", a.summary, b.summary);
            a.ok &= b.ok;
            Ok(a)
        }
        other => anyhow::bail!(
            "task {other} is not available in this build (available: {})",
            AVAILABLE.join(", ")
        ),
    }
}

/// Ingests the inbox and brings the ledger up to date.
pub fn ingest(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    let started = std::time::Instant::now();
    let report = ingest::ingest_inbox(setup, state.store(), now, stop)?;
    let mut out = TaskReport::default();
    let (mut lines, mut accepted, mut quarantined, mut duplicates) = (0, 0, 0, 0);
    for o in &report.outcomes {
        match o {
            Outcome::Ingested(r) => {
                lines += r.counts.lines;
                accepted += r.counts.accepted;
                duplicates += r.counts.duplicates;
                quarantined += r.counts.quarantined_total();
                out.details.push(format!(
                    "ingested {}: {} lines, {} accepted ({} unique, {} duplicates), {} quarantined",
                    r.file,
                    r.counts.lines,
                    r.counts.accepted,
                    r.counts.unique,
                    r.counts.duplicates,
                    r.counts.quarantined_total()
                ))
            }
            Outcome::DuplicateFile(r) => out.details.push(format!(
                "duplicate file {}: same content as an ingested file; nothing charged",
                r.file
            )),
            Outcome::ArchiveCompleted(f) => {
                out.details.push(format!("archived {f} (ingested earlier)"))
            }
            Outcome::Failed { file, error } => out.problems.push(format!(
                "failed {file}: {error} (left in the inbox; tried again next run)"
            )),
        }
    }
    let days =
        ledger::recompute_dirty(setup, state.store(), now).context("cannot update the ledger")?;
    out.summary = format!(
        "ingest: {} file(s), {} failed, {lines} lines, {accepted} accepted, {duplicates} duplicates, {quarantined} quarantined; {days} org-day(s) updated in {:.1}s",
        report.outcomes.len(),
        report.failures(),
        started.elapsed().as_secs_f64()
    );
    out.ok = report.failures() == 0;
    Ok(out)
}

/// Closes the org-days that are due.
pub fn close_days(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
) -> anyhow::Result<TaskReport> {
    let started = std::time::Instant::now();
    let closed = ledger::close_days(setup, state.store(), now)?;
    Ok(TaskReport {
        details: closed
            .iter()
            .map(|c| {
                format!(
                    "closed {} {} (due {})",
                    c.org_id,
                    c.local_date,
                    ledger::format_ts(c.due_at.timestamp_millis())
                )
            })
            .collect(),
        problems: Vec::new(),
        summary: format!(
            "close-days: {} org-day(s) closed in {:.1}s",
            closed.len(),
            started.elapsed().as_secs_f64()
        ),
        ok: true,
    })
}
