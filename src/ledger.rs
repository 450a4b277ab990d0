//! The ledger: one row per org × local day, kept current from that day's priced events
//! whenever an ingest touches it (a late file's calls added to the stored row where that is
//! exact: see `fold`), and its exports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::alerts;
use crate::allotment::{format_pct, pct_hundredths, DayTerms, Model};
use crate::events::{reconcile_day_keeping, DayFigures, Measure, OrgEvents};
use crate::localday::OrgDay;
use crate::setup::Setup;
use crate::store::{Crossing, LedgerRow, Store, Stored, Unit};

mod fold;

/// What a recompute did: the org-days written, and those that failed (each recorded as an
/// open problem, left dirty and tried again at the next run).
#[derive(Debug, Default)]
pub struct Recomputed {
    pub org_days: usize,
    /// Of `org_days`, those worked out by adding their new calls to the stored row.
    pub added_to: usize,
    pub failed: Vec<String>,
}

/// Recomputes every org-day marked dirty, one local date per transaction. A date that fails
/// as a whole is retried org by org, so one bad org-day never holds back the others (DESIGN
/// §7); `stop` is checked between dates.
///
/// With `[ingest] threads` above 1, up to that many dates (at most [`MAX_DATES_AT_ONCE`], and
/// as many as [`EVENTS_AT_ONCE`] allows for the largest) are computed at once on threads of
/// their own — the rows, and the details of the alerts they need — while the calling thread
/// writes them, date after date, as it would alone.
pub fn recompute_dirty(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<Recomputed> {
    let mut by_date: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
    for d in store.dirty()? {
        by_date.entry(d.date).or_default().push(d.org_id);
    }
    // What each date's computation needs from the store is read first: the workers never
    // touch it (a few queries a date).
    let (mut dates, mut largest) = (Vec::new(), 0);
    for (date, orgs) in by_date {
        let listed = store.numbered_parts_on(date).and_then(|parts| {
            Ok(Listed {
                parts,
                stored: store.stored_on(date, &orgs)?,
            })
        });
        largest = largest.max(store.events_on(date).unwrap_or(0));
        dates.push((date, listed, orgs));
    }
    // A date's computation holds its events in memory: as many dates at once as the largest
    // fits in the budget.
    let fit = (EVENTS_AT_ONCE / largest.max(1)).max(1) as usize;
    let threads = setup.config.ingest_threads.min(MAX_DATES_AT_ONCE).min(fit);
    let mut dates = dates.into_iter();
    let mut out = Recomputed::default();
    // One date more than computes at once is taken, so the next date's computation starts
    // while this thread writes one (~20 ms a date of 0.5 M events): with `threads`, a worker
    // waited for each write. What the extra date holds while it waits is its rows and the
    // events of its orgs that reach a threshold, not the whole day's.
    crate::parallel::in_order(
        threads,
        threads + 1,
        || Ok(dates.next().filter(|_| !stop.load(Ordering::SeqCst))),
        || (),
        |_, (date, listed, orgs)| {
            let computed = listed.and_then(|listed| {
                let ahead = threads > 1;
                compute_date(setup, date, listed.parts, &listed.stored, &orgs, now, ahead)
            });
            (date, orgs, computed)
        },
        |(date, orgs, computed)| {
            // The dates left stay dirty for the next run, those computed ahead included.
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let written =
                computed.and_then(|c| write_date(setup, store, c, &orgs, now, &mut out.failed));
            match written {
                Ok((n, added_to)) => {
                    out.org_days += n;
                    out.added_to += added_to;
                }
                Err(e) if orgs.len() == 1 => org_day_failed(
                    store,
                    &OrgDay::new(orgs[0].clone(), date),
                    &e,
                    now,
                    &mut out.failed,
                ),
                Err(_) => {
                    for org in &orgs {
                        let one = std::slice::from_ref(org);
                        match recompute_date(setup, store, date, one, now, &mut out.failed) {
                            Ok((n, _)) => out.org_days += n,
                            Err(e) => org_day_failed(
                                store,
                                &OrgDay::new(org.clone(), date),
                                &e,
                                now,
                                &mut out.failed,
                            ),
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The most dates [`recompute_dirty`] computes at once: each is a few polars queries that
/// already share the polars threads, and each holds its events while its query runs, then the
/// events of its orgs that reach a threshold until it is written.
pub const MAX_DATES_AT_ONCE: usize = 4;

/// The events [`recompute_dirty`] holds at once at most (about 340 bytes each at the peak of
/// a date's computation with the detail columns read: two dates of 0.55 M events at once took
/// 100 MiB more than with 6 columns; ~0.65 GiB): dates holding more than half of it are
/// computed one at a time, as with one thread.
pub const EVENTS_AT_ONCE: u64 = 2_000_000;

fn org_day_failed(
    store: &Store,
    day: &OrgDay,
    error: &anyhow::Error,
    now: DateTime<Utc>,
    failed: &mut Vec<String>,
) {
    let target = day.to_string();
    let error = format!("{error:#}");
    tracing::error!(org = day.org_id, date = %day.date, "cannot recompute the org-day: {error}");
    if let Err(e) = store.record_problem(Unit::OrgDay, &target, &error, now.timestamp_millis()) {
        tracing::error!("cannot record the problem of {target}: {e:#}");
    }
    failed.push(format!(
        "org-day {target}: {error} (left dirty; tried again next run)"
    ));
}

/// A freshly computed ledger row (revision 0) and its crossings.
#[derive(Debug, Clone)]
pub struct Computed {
    pub row: LedgerRow,
    pub crossings: Vec<Crossing>,
}

/// Computes the rows of `orgs` on `date` from the events of `parts` (relative to `base`). Orgs without events that
/// day, no longer in the registry, or without a plan that day are left out (with a warning for
/// the last two).
pub fn compute_rows(
    setup: &Setup,
    base: &std::path::Path,
    parts: &[String],
    day: NaiveDate,
    orgs: &[String],
) -> anyhow::Result<BTreeMap<String, Computed>> {
    Ok(compute_rows_keeping(setup, base, parts, day, orgs, false, orgs.len())?.0)
}

/// [`compute_rows`], and with `keep` the events of the orgs that reach a threshold, read in
/// the same scan; `day_orgs`: how many orgs the day has, as far as known (see
/// [`reconcile_day_keeping`]).
fn compute_rows_keeping(
    setup: &Setup,
    base: &std::path::Path,
    parts: &[String],
    day: NaiveDate,
    orgs: &[String],
    keep: bool,
    day_orgs: usize,
) -> anyhow::Result<(BTreeMap<String, Computed>, OrgEvents)> {
    let mut measures = Vec::new();
    let mut terms = BTreeMap::new();
    for org_id in orgs {
        let Some(org) = setup.org(org_id) else {
            // The org left the registry after its events were ingested; its row stays as it
            // was until a backfill says otherwise.
            tracing::warn!(org = %org_id, date = %day, "org no longer in the registry; ledger row kept");
            continue;
        };
        let Some(t) = setup.terms(org, day) else {
            tracing::warn!(org = %org_id, date = %day, "no plan in effect; ledger row kept");
            continue;
        };
        measures.push(Measure {
            org_id: org_id.clone(),
            legacy: t.model == Model::Legacy,
            allotted: t.allotted,
        });
        terms.insert(org_id.clone(), t);
    }
    let (figures, kept) = reconcile_day_keeping(
        base,
        parts,
        &measures,
        &setup.config.alerts.near_limit_percent,
        keep,
        day_orgs,
    )
    .with_context(|| format!("cannot reconcile {day}"))?;
    let mut out = BTreeMap::new();
    for f in figures {
        let Some(t) = terms.get(&f.org_id) else {
            continue;
        };
        out.insert(f.org_id.clone(), Computed::new(&f, day, t));
    }
    Ok((out, kept))
}

impl Computed {
    /// The row of an org-day worked out by the day query, under its `terms`.
    fn new(f: &DayFigures, day: NaiveDate, terms: &DayTerms) -> Computed {
        let row = LedgerRow {
            org_id: f.org_id.clone(),
            local_date: day,
            terms: terms.clone(),
            calls: f.calls,
            billable_calls: f.billable_calls,
            credits: f.credits,
            used: f.used,
            exceeded_at: f.crossings.iter().find(|c| c.0 == 100).map(|c| c.1),
            unpriced_calls: f.unpriced_calls,
            revision: 0,
        };
        let crossings = f
            .crossings
            .iter()
            .map(|(threshold, ts, rid)| Crossing {
                threshold: *threshold,
                ts: *ts,
                request_id: rid.clone(),
            })
            .collect();
        Computed { row, crossings }
    }
}

/// Whether a recomputed row differs from the stored one in anything but its revision.
pub fn differs(new: &LedgerRow, old: &LedgerRow) -> bool {
    LedgerRow {
        revision: old.revision,
        ..new.clone()
    } != *old
}

/// What the computation of a date reads from the store first: its parts with their numbers,
/// and what the ledger holds of its dirty org-days.
struct Listed {
    parts: Vec<(String, i64)>,
    stored: HashMap<String, Stored>,
}

/// The rows of one date, computed, with the events their alerts need.
struct DateComputed {
    date: NaiveDate,
    rows: BTreeMap<String, Computed>,
    /// The orgs of `rows` worked out by adding new calls to their stored rows.
    added_to: BTreeSet<String>,
    /// The highest number of the parts the rows count.
    parts_seen: i64,
    events: alerts::DateEvents,
}

/// Computes the rows of `orgs` on `date` from its `listed` parts: by adding the calls of the
/// parts listed since to their `stored` rows where that is exact (see [`fold`]), else from
/// all the day's events, keeping from the same scan the events of the orgs whose crossings
/// may need alerts. `ahead` (on a worker, off the thread that writes the store): also work out
/// now the details those alerts need, for the orgs without crossings stored before (those
/// with some most likely had them reported; theirs are worked out when a message needs them).
/// A panic is an error of this date.
#[allow(clippy::too_many_arguments)]
fn compute_date(
    setup: &Setup,
    date: NaiveDate,
    listed: Vec<(String, i64)>,
    stored: &HashMap<String, Stored>,
    orgs: &[String],
    now: DateTime<Utc>,
    ahead: bool,
) -> anyhow::Result<DateComputed> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let state_dir = &setup.config.state_dir;
        let parts_seen = listed.iter().map(|(_, added)| *added).max().unwrap_or(0);
        let (mut rows, rest) = fold::fold_date(setup, date, &listed, orgs, stored)?;
        let added_to: BTreeSet<String> = rows.keys().cloned().collect();
        let parts: Vec<String> = listed.into_iter().map(|(path, _)| path).collect();
        // The detail columns cost the figures nothing when they read, but one that cannot be
        // read must fail the alerts that show it, not the ledger: the figures are then read
        // without them.
        let (recomputed, kept) = if rest.is_empty() {
            Default::default()
        } else {
            // The dirty orgs are those of the new parts (for a five-minute file, most of the
            // day's): at least that many orgs have calls that day.
            let day_orgs = orgs.len();
            compute_rows_keeping(setup, state_dir, &parts, date, &rest, true, day_orgs).or_else(|e| {
                tracing::warn!(date = %date, "reading the day with its details failed, reading it without: {e:#}");
                compute_rows_keeping(setup, state_dir, &parts, date, &rest, false, day_orgs)
            })?
        };
        rows.extend(recomputed);
        // The orgs that crossed a threshold may need alerts.
        let crossed: Vec<String> = rows
            .iter()
            .filter(|(_, c)| !c.crossings.is_empty())
            .map(|(org, _)| org.clone())
            .collect();
        let events = alerts::DateEvents::new(parts, crossed, kept);
        if ahead {
            let crossed_before =
                |org: &str| stored.get(org).is_some_and(|s| !s.crossings.is_empty());
            let fresh = rows
                .iter()
                .filter(|(org, c)| !c.crossings.is_empty() && !crossed_before(org));
            for (_, c) in fresh {
                // What fails here is worked out again when the message asks for it, and fails
                // there as that message's own problem.
                if let Err(e) = events.prepare(setup, &c.row, &c.crossings, now) {
                    tracing::debug!(date = %date, "cannot work out the alerts' details ahead: {e:#}");
                    break;
                }
            }
        }
        Ok(DateComputed {
            date,
            rows,
            added_to,
            parts_seen,
            events,
        })
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("computing the ledger of {date} panicked")))
}

/// Computes and writes the rows of `orgs` on `date`, on the calling thread.
fn recompute_date(
    setup: &Setup,
    store: &mut Store,
    date: NaiveDate,
    orgs: &[String],
    now: DateTime<Utc>,
    failed: &mut Vec<String>,
) -> anyhow::Result<(usize, usize)> {
    // Alone, the org-day is worked out from all its events.
    let parts = store.numbered_parts_on(date)?;
    let computed = compute_date(setup, date, parts, &HashMap::new(), orgs, now, false)?;
    write_date(setup, store, computed, orgs, now, failed)
}

/// Writes the computed rows of `orgs` on one date, their crossings and the messages they call
/// for, in one transaction, and clears the org-days' dirty marks. Returns how many rows it
/// wrote, and how many of them were worked out by adding new calls.
fn write_date(
    setup: &Setup,
    store: &mut Store,
    computed: DateComputed,
    orgs: &[String],
    now: DateTime<Utc>,
    failed: &mut Vec<String>,
) -> anyhow::Result<(usize, usize)> {
    let DateComputed {
        date,
        rows,
        added_to,
        parts_seen,
        events,
    } = computed;
    let tx = store.transaction()?;
    let (mut count, mut folded) = (0, 0);
    for org_id in orgs {
        let day = OrgDay::new(org_id.clone(), date);
        let Some(Computed { row, crossings }) = rows.get(org_id) else {
            // No events, or no plan: there is no row to write.
            tx.clear_dirty(&day)?;
            tx.resolve_problem(Unit::OrgDay, &day.to_string())?;
            continue;
        };
        let mut row = row.clone();
        let Some(org) = setup.org(org_id) else {
            continue;
        };
        let mut amended = false;
        if let Some(prev) = tx.ledger_row(&day)? {
            let closed = now >= close_time(org.timezone, date, setup.config.close_grace);
            // Late data for a closed day amends it: the revision counts the amendments.
            amended = differs(&row, &prev) && closed;
            row.revision = prev.revision + u64::from(amended);
        }
        tx.put_ledger_row(&row, parts_seen)?;
        tx.put_crossings(&day, crossings)?;
        // A message that cannot be built is a problem of its own: the ledger row still
        // commits, and the message is tried again at every run until it is queued.
        let queued =
            alerts::queue_org_day_alerts(setup, &tx, &row, crossings, amended, Some(&events), now)?;
        failed.extend(queued);
        tx.clear_dirty(&day)?;
        tx.resolve_problem(Unit::OrgDay, &day.to_string())?;
        count += 1;
        folded += usize::from(added_to.contains(org_id));
    }
    tx.commit()?;
    Ok((count, folded))
}

/// An org-day closed by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub org_id: String,
    pub local_date: NaiveDate,
    /// When it was due: next local midnight plus the grace period.
    pub due_at: DateTime<Utc>,
}

/// What a close sweep did: the days closed now, and the summaries that could not be queued
/// (each an open problem, tried again at the next run).
#[derive(Debug, Default)]
pub struct Closing {
    pub closed: Vec<Closed>,
    pub failed: Vec<String>,
}

/// Closes every org-day whose close time has passed at `now`, each exactly once (a day missed
/// while the daemon was down closes at the first sweep after).
pub fn close_days(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<Closing> {
    let mut due = Vec::new();
    for day in store.unclosed_days()? {
        let tz = setup
            .org(&day.org_id)
            .map_or(chrono_tz::UTC, |o| o.timezone);
        let at = close_time(tz, day.date, setup.config.close_grace);
        if now >= at {
            due.push(Closed {
                org_id: day.org_id,
                local_date: day.date,
                due_at: at,
            });
        }
    }
    let tx = store.transaction()?;
    let mut closed = Vec::new();
    let mut failed = Vec::new();
    for c in due {
        // Each close is whole; a stop request commits those done and leaves the rest due.
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let day = OrgDay::new(c.org_id.clone(), c.local_date);
        if tx.close_day(&day, c.due_at.timestamp_millis(), now.timestamp_millis())? {
            if let Some(row) = tx.ledger_row(&day)? {
                failed.extend(alerts::queue_org_day_summary(setup, &tx, &row, now)?);
            }
            closed.push(c);
        }
    }
    tx.commit()?;
    Ok(Closing { closed, failed })
}

pub use crate::localday::close_time;

/// One line of `ledger export`, with the columns of DESIGN §4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportRow {
    pub org_id: String,
    pub local_date: String,
    pub model: String,
    pub edition: String,
    pub agents: u64,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub base: u64,
    pub variable: u64,
    pub additional: u64,
    pub legacy_limit: u64,
    pub allotted: u64,
    pub used: u64,
    pub pct_used: String,
    pub overage: u64,
    pub exceeded_at: String,
    pub status: String,
}

pub const EXPORT_HEADER: &str = "org_id,local_date,model,edition,agents,calls,billable_calls,credits,base,variable,additional,legacy_limit,allotted,used,pct_used,overage,exceeded_at,status";

pub use crate::report::format::format_ts;

/// Turns stored rows into export rows; `status` comes from the clock.
pub fn export_rows(setup: &Setup, rows: &[LedgerRow], now: DateTime<Utc>) -> Vec<ExportRow> {
    rows.iter()
        .map(|r| {
            let day = r.local_date;
            // An org that has left the registry keeps its rows; UTC decides their status.
            let tz = setup.org(&r.org_id).map_or(chrono_tz::UTC, |o| o.timezone);
            let closed = now >= close_time(tz, day, setup.config.close_grace);
            ExportRow {
                org_id: r.org_id.clone(),
                local_date: r.local_date.to_string(),
                model: r.model.as_str().to_string(),
                edition: r.edition.clone(),
                agents: r.agents,
                calls: r.calls,
                billable_calls: r.billable_calls,
                credits: r.credits,
                base: r.base,
                variable: r.variable,
                additional: r.additional,
                legacy_limit: r.legacy_limit,
                allotted: r.allotted,
                used: r.used,
                pct_used: format_pct(pct_hundredths(r.used, r.allotted)),
                overage: r.used.saturating_sub(r.allotted),
                exceeded_at: r.exceeded_at.map(format_ts).unwrap_or_default(),
                status: if closed { "closed" } else { "open" }.to_string(),
            }
        })
        .collect()
}

impl ExportRow {
    /// The row's columns in the order of DESIGN §4, each with its name: the one list the CSV
    /// header, its lines and a backfill's diff are made from (JSON follows the struct, in the
    /// same order).
    pub fn columns(&self) -> [(&'static str, String); 18] {
        [
            ("org_id", self.org_id.clone()),
            ("local_date", self.local_date.clone()),
            ("model", self.model.clone()),
            ("edition", self.edition.clone()),
            ("agents", self.agents.to_string()),
            ("calls", self.calls.to_string()),
            ("billable_calls", self.billable_calls.to_string()),
            ("credits", self.credits.to_string()),
            ("base", self.base.to_string()),
            ("variable", self.variable.to_string()),
            ("additional", self.additional.to_string()),
            ("legacy_limit", self.legacy_limit.to_string()),
            ("allotted", self.allotted.to_string()),
            ("used", self.used.to_string()),
            ("pct_used", self.pct_used.clone()),
            ("overage", self.overage.to_string()),
            ("exceeded_at", self.exceeded_at.clone()),
            ("status", self.status.clone()),
        ]
    }
}

/// Renders export rows as CSV with the header of DESIGN §4.
pub fn to_csv(rows: &[ExportRow]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 160);
    out.push_str(EXPORT_HEADER);
    out.push('\n');
    for r in rows {
        // Every field is digits, a date, a fixed word or an org id of digits: no quoting needed.
        let cells: Vec<String> = r.columns().into_iter().map(|(_, v)| v).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Ledger rows for the given filters.
pub fn query(
    store: &Store,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    orgs: &[String],
) -> anyhow::Result<Vec<LedgerRow>> {
    store.ledger(from, to, orgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header DESIGN §4 pins is the names of the columns each line is written from.
    #[test]
    fn the_export_header_names_the_columns_of_each_line() {
        let row = ExportRow {
            org_id: "7".into(),
            local_date: "2025-10-08".into(),
            model: "credits".into(),
            edition: "free".into(),
            agents: 0,
            calls: 3,
            billable_calls: 3,
            credits: 150,
            base: 100,
            variable: 0,
            additional: 0,
            legacy_limit: 0,
            allotted: 100,
            used: 150,
            pct_used: "150.00".into(),
            overage: 50,
            exceeded_at: "2025-10-08T10:00:00.000Z".into(),
            status: "closed".into(),
        };
        let names: Vec<&str> = row.columns().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.join(","), EXPORT_HEADER);
        assert_eq!(
            to_csv(std::slice::from_ref(&row)),
            format!("{EXPORT_HEADER}\n7,2025-10-08,credits,free,0,3,3,150,100,0,0,0,100,150,150.00,50,2025-10-08T10:00:00.000Z,closed\n")
        );
        // JSON keeps the same names in the same order.
        let json = serde_json::to_string(&row).unwrap();
        let keys: Vec<&str> = json
            .trim_matches(['{', '}'])
            .split(',')
            .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
            .collect();
        assert_eq!(keys, names);
    }
}
