//! The tasks the CLI and the daemon run: each takes the setup, the locked state, the clock and
//! a stop flag, and reports what it did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::alerts::{self, Digest};
use crate::ingest::{self, Outcome};
use crate::ledger;
use crate::mail;
use crate::setup::Setup;
use crate::state::State;
use crate::store::Unit;

/// What a task did: lines for a person, one summary line, and whether everything worked.
#[derive(Debug, Default)]
pub struct TaskReport {
    pub details: Vec<String>,
    pub problems: Vec<String>,
    pub summary: String,
    pub ok: bool,
}

/// The tasks available in this build.
pub const AVAILABLE: [&str; 6] = [
    "ingest",
    "close-days",
    "deliver",
    "ops-digest",
    "retention",
    "all",
];

/// The tasks of `run all`, in their order (retention runs on its own schedule).
pub const ALL: [&str; 4] = ["ingest", "close-days", "ops-digest", "deliver"];

/// Runs one task by name; `all` runs each task of [`ALL`] whatever happened to the others
/// (DESIGN §7). A task that fails is an open problem until it runs through; its failure is in
/// the report (not `ok`), never an error: only an unknown task name is.
pub fn run(
    task: &str,
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    if !AVAILABLE.contains(&task) {
        anyhow::bail!(
            "task {task} is not available in this build (available: {})",
            AVAILABLE.join(", ")
        );
    }
    // A state of an earlier version is brought to this one's layout before any task touches
    // it (it is a no-op on a current one).
    if let Err(e) = crate::upgrade::upgrade(&setup.config.state_dir, state.store()) {
        tracing::error!("cannot upgrade the state directory: {e:#}");
    }
    let report = if task == "all" {
        run_all(setup, state, now, stop)
    } else {
        run_isolated(task, setup, state, now, stop)
    };
    // After every job run, hand runs included (DESIGN §6). A metrics file that cannot be
    // written is logged and costs the run nothing: the work is done and recorded.
    if let Err(e) = crate::metrics::write(setup, state.store(), now) {
        tracing::error!("{e:#}");
    }
    Ok(report)
}

/// Runs each task of [`ALL`], whatever happened to the others.
fn run_all(setup: &Setup, state: &mut State, now: DateTime<Utc>, stop: &AtomicBool) -> TaskReport {
    let mut a = TaskReport {
        ok: true,
        ..Default::default()
    };
    let mut summaries = Vec::new();
    for task in ALL {
        if stop.load(Ordering::SeqCst) {
            summaries.push(format!("{task}: not run (stopping)"));
            continue;
        }
        let b = run_isolated(task, setup, state, now, stop);
        a.details.extend(b.details);
        a.problems.extend(b.problems);
        summaries.push(b.summary);
        a.ok &= b.ok;
    }
    a.summary = summaries.join("; ");
    a
}

/// Runs one task as a failure unit: an error becomes a problem of the task, recorded in the
/// store and reported; a run that gets through closes it.
fn run_isolated(
    task: &str,
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> TaskReport {
    let started = std::time::Instant::now();
    let report = run_recorded(task, setup, state, now, stop);
    // Hand runs and daemon jobs alike, for `status` and the metrics (DESIGN §4, §6).
    let ms = started.elapsed().as_millis() as u64;
    if let Err(e) =
        state
            .store()
            .record_task_run(task, now.timestamp_millis(), ms, report.ok, &report.summary)
    {
        tracing::error!("cannot record the run of task {task}: {e:#}");
    }
    report
}

fn run_recorded(
    task: &str,
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> TaskReport {
    let result = crate::faults::check(&format!("task:{task}")).and_then(|()| match task {
        "ingest" => ingest(setup, state, now, stop),
        "close-days" => close_days(setup, state, now, stop),
        "deliver" => deliver(setup, state, now, stop),
        "retention" => retention(setup, state, now, stop),
        _ => ops_digest(setup, state, now, stop),
    });
    let store = state.store();
    match result {
        Ok(report) => {
            if let Err(e) = store.resolve_problem(Unit::Task, task) {
                tracing::error!("cannot update the problems of task {task}: {e:#}");
            }
            report
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(task, "failed: {error}");
            if let Err(e) = store.record_problem(Unit::Task, task, &error, now.timestamp_millis()) {
                tracing::error!("cannot record the failure of task {task}: {e:#}");
            }
            TaskReport {
                details: Vec::new(),
                problems: vec![format!(
                    "task {task} failed: {error} (tried again next run)"
                )],
                summary: format!("{task}: failed"),
                ok: false,
            }
        }
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
            Outcome::Stopped(f) => out.details.push(format!(
                "stopped in {f}: left in the inbox for the next run"
            )),
        }
    }
    let recomputed = ledger::recompute_dirty(setup, state.store(), now, stop)
        .context("cannot update the ledger")?;
    let mut failed_units = recomputed.failed.len();
    out.problems.extend(recomputed.failed);
    let retried = alerts::retry_messages(setup, state.store(), now)?;
    failed_units += retried.len();
    out.problems.extend(retried);
    if setup.config.alerts.gateway_silence.is_some() {
        let store = state.store();
        let timeline = alerts::timeline(store.file_times()?);
        let keys = store.outbox_keys_like(&["silence:", "back:"])?;
        let tx = store.transaction()?;
        out.details.extend(alerts::queue_silence_messages(
            &setup.config,
            &tx,
            &timeline,
            &keys,
            now,
        )?);
        tx.commit()?;
    }
    out.summary = format!(
        "ingest: {} file(s), {} failed, {lines} lines, {accepted} accepted, {duplicates} duplicates, {quarantined} quarantined; {} org-day(s) updated{}{} in {:.1}s",
        report.outcomes.len(),
        report.failures(),
        recomputed.org_days,
        if recomputed.added_to > 0 {
            format!(" ({} by adding their new calls)", recomputed.added_to)
        } else {
            String::new()
        },
        if failed_units > 0 { format!(", {failed_units} failed") } else { String::new() },
        started.elapsed().as_secs_f64()
    );
    out.ok = report.failures() == 0 && failed_units == 0;
    Ok(out)
}

/// Closes the org-days that are due.
pub fn close_days(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    let started = std::time::Instant::now();
    let ledger::Closing { closed, mut failed } =
        ledger::close_days(setup, state.store(), now, stop)?;
    failed.extend(alerts::retry_messages(setup, state.store(), now)?);
    Ok(TaskReport {
        ok: failed.is_empty(),
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
        summary: format!(
            "close-days: {} org-day(s) closed{} in {:.1}s",
            closed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(", {} message(s) could not be queued", failed.len())
            },
            started.elapsed().as_secs_f64()
        ),
        problems: failed,
    })
}

/// How long to wait before the next attempt after `attempts` failures: 30 s doubling, at most
/// an hour.
pub fn backoff(attempts: u64) -> Duration {
    let secs = 30u64.saturating_mul(1 << attempts.min(7));
    Duration::from_secs(secs.min(3600))
}

/// Sends every due message: `.eml` files without `[smtp]`, SMTP otherwise. A message is marked
/// sent only after its file is written or the server accepted it; a failure waits its backoff.
pub fn deliver(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    let started = std::time::Instant::now();
    let due = state.store().due_messages(now.timestamp_millis())?;
    let mut out = TaskReport {
        ok: true,
        ..Default::default()
    };
    let (mut sent, mut failed, mut parked) = (0, 0, 0);
    let sender = match &setup.config.smtp {
        None => None,
        Some(smtp) => Some(mail::Sender::new(smtp)?),
    };
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime for SMTP")?,
        ),
    };
    for m in due {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let result = match &sender {
            // A file that cannot be written (full disk) is worth another try.
            None => mail::write_eml(&setup.config.state_dir.join("outbox"), &m.key, &m.message)
                .map_err(|error| mail::SendError {
                    error,
                    permanent: false,
                }),
            Some(s) => {
                let fut = s.send(&setup.config.alerts.from, &m.recipients, &m.message);
                match &runtime {
                    Some(rt) => rt.block_on(fut),
                    None => tokio::runtime::Handle::current().block_on(fut),
                }
            }
        };
        let tx = state.store().transaction()?;
        match result {
            Ok(()) => {
                tx.mark_sent(&m.key, now.timestamp_millis())?;
                tx.resolve_problem(Unit::Message, &m.key)?;
                sent += 1;
                out.details
                    .push(format!("sent {} to {}", m.key, m.recipients.join(", ")));
            }
            Err(e)
                if e.permanent
                    || now.timestamp_millis().saturating_sub(m.failing_since) >= GIVE_UP_MS =>
            {
                // Refused for good, or failing for a week: parked as `failed` and an open
                // problem until `outbox retry` or `outbox drop`.
                let why = if e.permanent {
                    "refused for good"
                } else {
                    "still failing after 7 days"
                };
                let error = format!("{e}");
                tx.mark_refused(&m.key, &error)?;
                tx.record_problem(
                    Unit::Message,
                    &m.key,
                    &format!("{why}: {error}"),
                    now.timestamp_millis(),
                )?;
                parked += 1;
                out.problems.push(format!(
                    "could not send {}: {error} ({why}; parked as failed: `creditd outbox retry {}` sends it again)",
                    m.key, m.key
                ));
            }
            Err(e) => {
                let wait = backoff(m.attempts);
                let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                tx.mark_failed(&m.key, &format!("{e}"), next.timestamp_millis())?;
                failed += 1;
                out.problems.push(format!(
                    "could not send {}: {e} (attempt {}; next try in {}s)",
                    m.key,
                    m.attempts + 1,
                    wait.as_secs()
                ));
            }
        }
        tx.commit()?;
    }
    let queued = state.store().queued_count()?;
    out.ok = parked == 0;
    out.summary = format!(
        "deliver: {sent} sent, {failed} left queued for retry, {parked} refused for good (parked as failed); {queued} still queued in all, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Removes what is past the horizons of `[retention]` (DESIGN §6).
pub fn retention(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    let started = std::time::Instant::now();
    if !setup.config.retention.any() {
        return Ok(TaskReport {
            ok: true,
            summary: "retention: nothing to do ([retention] keeps everything)".into(),
            ..Default::default()
        });
    }
    let outcome = crate::retention::run(setup, state.store(), now, stop)?;
    let mut details: Vec<String> = outcome
        .purges
        .iter()
        .map(|p| format!("removed {} ({} bytes)", p.what, p.bytes))
        .collect();
    details.extend(outcome.kept.iter().map(|k| format!("kept {k}")));
    if outcome.leftovers > 0 {
        details.push(format!(
            "removed {} leftover(s) of an interrupted run",
            outcome.leftovers
        ));
    }
    Ok(TaskReport {
        ok: true,
        summary: format!(
            "retention: {} purge(s), {} date(s) kept past the horizon, in {:.1}s",
            outcome.purges.len(),
            outcome.kept.len(),
            started.elapsed().as_secs_f64()
        ),
        details,
        problems: Vec::new(),
    })
}

/// How long a message may keep failing before it is parked as `failed` (7 days).
const GIVE_UP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Queues the ops digest of `now`'s UTC date (once per date), covering the org-days closed and
/// the files processed since the previous digest.
pub fn ops_digest(
    setup: &Setup,
    state: &mut State,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<TaskReport> {
    let key = alerts::digest_key(now);
    let (summary, problems) = match alerts::queue_digest(setup, state.store(), now, stop)? {
        Digest::QueuedBefore => (format!("ops-digest: {key} was queued before"), Vec::new()),
        Digest::Stopped => (
            format!("ops-digest: {key} not queued (stopping)"),
            Vec::new(),
        ),
        Digest::Queued { closed } => (
            format!("ops-digest: {key} queued ({closed} org-day(s) closed since the last one)"),
            Vec::new(),
        ),
        Digest::Failed(problem) => (
            format!("ops-digest: {key} could not be queued"),
            vec![problem],
        ),
    };
    Ok(TaskReport {
        details: Vec::new(),
        ok: problems.is_empty(),
        problems,
        summary,
    })
}
