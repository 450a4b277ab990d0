//! Which messages to queue, and when: near-limit and overage alerts as crossings are found,
//! daily summaries as days close, amended summaries when late data changes a summarized day,
//! and the daily ops digest. Every message goes into the outbox under its deterministic key in
//! the same transaction as the change that caused it; a key is queued once, ever.

use crate::config::SummaryPolicy;
use crate::events::{day_details, DayDetails, DaySpan, Mark, OrgEvents};
use crate::localday::{day_span, OrgDay};
use crate::mail;
use crate::report::{self, OrgDayView, Rendered};
use crate::setup::Setup;
use crate::store::{Crossing, LedgerRow, Status, Store, Tx, Unit};
use chrono::{DateTime, NaiveDate, Utc};

mod digest;
mod silence;
pub use digest::{digest_key, queue_digest, Digest};
pub use silence::{queue_silence_messages, silent, timeline, Timeline};

/// Who gets the org-facing messages of an org-day: its admins (the plan of that day), ops too
/// with `copy_ops`; ops alone when the org names nobody.
fn recipients(setup: &Setup, row: &LedgerRow) -> Vec<String> {
    let day = row.local_date;
    let mut to: Vec<String> = setup
        .org(&row.org_id)
        .and_then(|o| o.plan_on(day))
        .map(|p| p.report_to.clone())
        .unwrap_or_default();
    if to.is_empty() || setup.config.alerts.copy_ops {
        to.extend(setup.config.alerts.ops_to.iter().cloned());
    }
    to.dedup();
    to
}

fn org_name(setup: &Setup, row: &LedgerRow) -> String {
    let day = row.local_date;
    setup
        .org(&row.org_id)
        .and_then(|o| o.plan_on(day))
        .map(|p| p.name.clone())
        .unwrap_or_else(|| format!("org {}", row.org_id))
}

/// The events of the orgs of one date that may need messages: those the day query kept from
/// its scan, and any others read in one scan on first use (rendering the alerts of many
/// org-days then reads the date's parts at most once). Details worked out ahead by
/// [`DateEvents::prepare`] are handed out once each, when asked for with the same marks; any
/// other request is worked out when asked.
pub struct DateEvents {
    parts: Vec<String>,
    /// The orgs named at creation whose events are not in `loaded` yet.
    unread: std::cell::RefCell<Vec<String>>,
    loaded: std::cell::RefCell<OrgEvents>,
    /// (org, its marks, its details) worked out ahead.
    ready: std::cell::RefCell<Vec<Prepared>>,
}

/// Details worked out ahead: the org, the marks as owned values, and the details.
type Prepared = (String, Vec<(i64, Option<String>)>, Option<DayDetails>);

impl DateEvents {
    /// The events of `orgs` in `parts`, those of `read` already read from them (any others
    /// `read` holds are let go).
    pub fn new(parts: Vec<String>, orgs: Vec<String>, mut read: OrgEvents) -> DateEvents {
        let named: std::collections::HashSet<&str> = orgs.iter().map(String::as_str).collect();
        read.retain(|org| named.contains(org));
        let unread = orgs.into_iter().filter(|o| !read.has(o)).collect();
        DateEvents {
            parts,
            unread: std::cell::RefCell::new(unread),
            loaded: std::cell::RefCell::new(read),
            ready: Default::default(),
        }
    }

    /// Works out ahead the details the alerts of `row` (an org-day of this date, named at
    /// creation) need if none of its `crossings` was reported before, as after a first ingest
    /// of its calls. Run off the thread that writes the store, this takes working them out off
    /// it; when some crossings were reported, what is asked for differs and is worked out
    /// then, so the messages are the same either way.
    pub fn prepare(
        &self,
        setup: &Setup,
        row: &LedgerRow,
        crossings: &[Crossing],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let span = span_of(setup, row)?;
        for (_, group) in unreported_groups(setup, crossings, now, |_| Ok(false))? {
            let Some((_, _, marks)) = arrange(group) else {
                continue;
            };
            let details = self.work_out(setup, &row.org_id, span, &marks)?;
            let owned = marks
                .iter()
                .map(|m| (m.ts, m.request_id.map(str::to_string)))
                .collect();
            self.ready
                .borrow_mut()
                .push((row.org_id.clone(), owned, details));
        }
        Ok(())
    }

    /// The details of `org_id`'s day (one of the orgs named at creation), or `None` if it has
    /// no events.
    fn details(
        &self,
        setup: &Setup,
        org_id: &str,
        day: DaySpan,
        marks: &[Mark<'_>],
    ) -> anyhow::Result<Option<DayDetails>> {
        let same = |(org, owned, _): &Prepared| {
            org == org_id
                && owned.len() == marks.len()
                && owned
                    .iter()
                    .zip(marks)
                    .all(|((ts, rid), m)| *ts == m.ts && rid.as_deref() == m.request_id)
        };
        let mut ready = self.ready.borrow_mut();
        if let Some(i) = ready.iter().position(same) {
            return Ok(ready.swap_remove(i).2);
        }
        drop(ready);
        self.work_out(setup, org_id, day, marks)
    }

    fn work_out(
        &self,
        setup: &Setup,
        org_id: &str,
        day: DaySpan,
        marks: &[Mark<'_>],
    ) -> anyhow::Result<Option<DayDetails>> {
        let unread = self.unread.borrow().iter().any(|o| o == org_id);
        if unread {
            // A read that fails leaves them unread: asked again, it is tried again.
            let orgs = self.unread.borrow().clone();
            let events = OrgEvents::load(&setup.config.state_dir, &self.parts, &orgs)?;
            self.loaded.borrow_mut().extend(events);
            self.unread.borrow_mut().clear();
        }
        self.loaded.borrow().details(org_id, day, marks)
    }
}

/// Where an org-day lies in time and what it counts: the span of its details.
fn span_of(setup: &Setup, row: &LedgerRow) -> anyhow::Result<DaySpan> {
    let tz = setup
        .org(&row.org_id)
        .map_or(chrono_tz::UTC, |o| o.timezone);
    Ok(DaySpan::new(
        tz,
        row.local_date,
        row.model == crate::allotment::Model::Legacy,
    ))
}

/// The details of an org-day from its Parquet parts, or from `prefetched` when given (it must
/// hold the org's events of that date), with the figures at each of `marks`.
pub fn details(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    prefetched: Option<&DateEvents>,
    marks: &[Mark<'_>],
) -> anyhow::Result<DayDetails> {
    let span = span_of(setup, row)?;
    if let Some(p) = prefetched {
        return Ok(p
            .details(setup, &row.org_id, span, marks)?
            .unwrap_or_else(|| DayDetails::empty(span, marks.len())));
    }
    let parts = tx.parts_on(row.local_date)?;
    day_details(&setup.config.state_dir, &parts, &row.org_id, span, marks)
}

#[allow(clippy::too_many_arguments)]
fn queue(
    setup: &Setup,
    tx: &Tx<'_>,
    key: &str,
    kind: &str,
    row: &LedgerRow,
    rendered: &Rendered,
    status: Status,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    crate::faults::check(&format!("build:{key}"))?;
    let to = recipients(setup, row);
    let raw = mail::build(&setup.config, key, &to, rendered, now)?;
    let added = tx.enqueue(
        key,
        kind,
        Some(&row.org_day()),
        &to,
        &rendered.subject,
        &raw,
        status,
        now.timestamp_millis(),
    )?;
    if added {
        tx.cover(&rendered.covers, key)?;
    }
    Ok(added)
}

/// The outbox key of the alert of `threshold` (100: over) on an org-day.
pub fn alert_key(org_id: &str, local_date: NaiveDate, threshold: u64) -> String {
    if threshold == 100 {
        format!("over:{org_id}:{local_date}")
    } else {
        format!("near:{org_id}:{local_date}:{threshold}")
    }
}

/// The outbox key of a crossing.
fn crossing_key(row: &LedgerRow, c: &Crossing) -> String {
    alert_key(&row.org_id, row.local_date, c.threshold)
}

/// Queues one alert for the crossings of the org-day not reported before (DESIGN §5): the
/// highest news (over, else the highest threshold) gives the key and the subject, the lower
/// ones are reported inside it (`X-Creditd-Covers`). Crossings older than `max_age` are not
/// mailed, not even inside a fresh message: they share one message of their own, `held`
/// (listed in the ops digest, never mailed). `prefetched`, when given, holds the org's events
/// of that date. Returns how many messages were queued to be sent (0 or 1).
pub fn queue_crossing_alerts(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    crossings: &[Crossing],
    now: DateTime<Utc>,
    prefetched: Option<&DateEvents>,
) -> anyhow::Result<usize> {
    let [held, fresh] = unreported_groups(setup, crossings, now, |c| {
        Ok(tx.outbox_status(&crossing_key(row, c))?.is_some())
    })?;
    let group = |(status, group): (Status, Vec<&Crossing>)| {
        queue_alert(setup, tx, row, crossings, group, status, now, prefetched)
    };
    group(held)?;
    Ok(usize::from(group(fresh)?))
}

/// The crossings of an org-day not `reported` yet, in the two groups they are queued in:
/// those older than `max_age` (held), then the others (queued).
fn unreported_groups<'c>(
    setup: &Setup,
    crossings: &'c [Crossing],
    now: DateTime<Utc>,
    mut reported: impl FnMut(&Crossing) -> anyhow::Result<bool>,
) -> anyhow::Result<[(Status, Vec<&'c Crossing>); 2]> {
    let too_old = |c: &Crossing| {
        setup
            .config
            .alerts
            .max_age
            .is_some_and(|age| now.timestamp_millis() - c.ts > age.as_millis() as i64)
    };
    let (mut held, mut fresh): (Vec<&Crossing>, Vec<&Crossing>) = (Vec::new(), Vec::new());
    for c in crossings {
        if !reported(c)? {
            if too_old(c) {
                held.push(c);
            } else {
                fresh.push(c);
            }
        }
    }
    Ok([(Status::Held, held), (Status::Queued, fresh)])
}

/// The message of a group of crossings: the highest news (over, then the highest threshold),
/// the lower ones it covers in threshold order, and the marks its details are figured at (the
/// main one first); `None` for an empty group.
fn arrange(mut group: Vec<&Crossing>) -> Option<(&Crossing, Vec<&Crossing>, Vec<Mark<'_>>)> {
    group.sort_by_key(|c| std::cmp::Reverse(c.threshold));
    let (main, lower) = group.split_first()?;
    let mut covered: Vec<&Crossing> = lower.to_vec();
    covered.sort_by_key(|c| c.threshold);
    let marks = std::iter::once(*main)
        .chain(covered.iter().copied())
        .map(|c| Mark {
            ts: c.ts,
            request_id: Some(&c.request_id),
        })
        .collect();
    Some((main, covered, marks))
}

/// Queues one message for `group` (crossings of one org-day not reported before) with
/// `status`: the highest keys it, the lower ones are covered. Returns whether a message was
/// queued to be sent.
#[allow(clippy::too_many_arguments)]
fn queue_alert(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    crossings: &[Crossing],
    group: Vec<&Crossing>,
    status: Status,
    now: DateTime<Utc>,
    prefetched: Option<&DateEvents>,
) -> anyhow::Result<bool> {
    let Some((main, covered, marks)) = arrange(group) else {
        return Ok(false);
    };
    let mut rendered = with_view(setup, tx, row, crossings, prefetched, &marks, |view| {
        report::alert(view, main, &covered, now)
    })?;
    rendered.covers = covered.iter().map(|c| crossing_key(row, c)).collect();
    let kind = if main.threshold == 100 {
        "over"
    } else {
        "near"
    };
    let key = crossing_key(row, main);
    Ok(queue(setup, tx, &key, kind, row, &rendered, status, now)? && status == Status::Queued)
}

/// Queues the daily summary of a day that just closed, as the policy says.
pub fn queue_summary(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let crossings = tx.crossings(&row.org_day())?;
    let wanted = match setup.config.alerts.daily_summary {
        SummaryPolicy::All => true,
        SummaryPolicy::Alerted => !crossings.is_empty(),
        SummaryPolicy::None => false,
    };
    if !wanted {
        return Ok(false);
    }
    let key = format!("summary:{}:{}", row.org_id, row.local_date);
    let rendered = render_summary(setup, tx, row, &crossings, row.revision)?;
    queue(
        setup,
        tx,
        &key,
        "summary",
        row,
        &rendered,
        Status::Queued,
        now,
    )
}

/// After late data changed a closed day: refreshes its summary if not sent yet, or queues the
/// amended summary `summary:<org>:<date>:r<N>` if it was.
pub fn queue_amended_summary(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let key = format!("summary:{}:{}", row.org_id, row.local_date);
    let Some(status) = tx.outbox_status(&key)? else {
        return Ok(false);
    };
    let crossings = tx.crossings(&row.org_day())?;
    match status {
        Status::Queued => {
            let rendered = render_summary(setup, tx, row, &crossings, 0)?;
            let to = recipients(setup, row);
            let raw = mail::build(&setup.config, &key, &to, &rendered, now)?;
            tx.replace_queued(&key, &rendered.subject, &raw)
        }
        _ => {
            let amended = format!("{key}:r{}", row.revision);
            let rendered = render_summary(setup, tx, row, &crossings, row.revision)?;
            queue(
                setup,
                tx,
                &amended,
                "summary",
                row,
                &rendered,
                Status::Queued,
                now,
            )
        }
    }
}

fn render_summary(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    crossings: &[Crossing],
    revision: u64,
) -> anyhow::Result<Rendered> {
    with_view(setup, tx, row, crossings, None, &[], |view| {
        report::summary(view, revision, row.concurrency)
    })
}

/// Builds the org-day view the alerts and summaries render (details from the day's events,
/// the org's name and zone) and hands it to `render`.
fn with_view<T>(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    crossings: &[Crossing],
    prefetched: Option<&DateEvents>,
    marks: &[Mark<'_>],
    render: impl FnOnce(&OrgDayView<'_>) -> T,
) -> anyhow::Result<T> {
    let details = details(setup, tx, row, prefetched, marks)?;
    let tz = setup
        .org(&row.org_id)
        .map_or(chrono_tz::UTC, |o| o.timezone);
    let name = org_name(setup, row);
    let (start, reset) = day_span(tz, row.local_date);
    let view = OrgDayView {
        org_name: &name,
        tz,
        row,
        crossings,
        details: &details,
        start_ms: start.timestamp_millis(),
        reset_ms: reset.timestamp_millis(),
    };
    Ok(render(&view))
}

/// Queues a message to ops (`ops_to`) under `key`: the digest, a backfill report, a rejected
/// config. Returns whether it was added (a key is queued once, ever).
fn queue_to_ops(
    config: &crate::config::Config,
    tx: &Tx<'_>,
    key: &str,
    kind: &str,
    rendered: &Rendered,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    crate::faults::check(&format!("build:{key}"))?;
    let to = &config.alerts.ops_to;
    let raw = mail::build(config, key, to, rendered, now)?;
    tx.enqueue(
        key,
        kind,
        None,
        to,
        &rendered.subject,
        &raw,
        Status::Queued,
        now.timestamp_millis(),
    )
}

/// Queues the report of a backfill (`backfill:<id>`) to ops.
pub fn queue_backfill_report(
    config: &crate::config::Config,
    tx: &Tx<'_>,
    view: &report::BackfillView<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let key = format!("backfill:{}", view.id);
    queue_to_ops(config, tx, &key, "backfill", &report::backfill(view), now)
}

/// Tells ops once that a config or registry was rejected at reload (`config:<sha256>` is
/// `target`), with the problems `check` found.
pub fn queue_config_rejected(
    config: &crate::config::Config,
    tx: &Tx<'_>,
    target: &str,
    problems: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let rendered = report::config_rejected(problems);
    queue_to_ops(config, tx, target, "config", &rendered, now)
}

/// The prefix of the problems of messages that could not be built.
const BUILD: &str = "build:";

/// Queues the messages `queue` makes as one failure unit named `target` (DESIGN §7): inside a
/// savepoint, so a message that cannot be built leaves nothing half-queued while the rest of
/// the transaction (the ledger row, the close) commits. A failure is recorded as an open
/// problem and returned as its error text; a success closes the target's problem.
pub fn queue_isolated(
    tx: &Tx<'_>,
    target: &str,
    now: DateTime<Utc>,
    queue: impl FnOnce(&Tx<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<Option<String>> {
    // `build:` keeps these apart from the problems of parked messages, named by their key.
    let target = &format!("{BUILD}{target}");
    match tx.isolated(queue) {
        Ok(()) => {
            tx.resolve_problem(Unit::Message, target)?;
            Ok(None)
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(target, "cannot queue the message: {error}");
            tx.record_problem(Unit::Message, target, &error, now.timestamp_millis())?;
            Ok(Some(format!(
                "message {target}: {error} (tried again next run)"
            )))
        }
    }
}

/// Queues the alerts of an org-day's crossings not queued before and, when late data
/// `amended` a closed day, its amended summary: one failure unit (`alerts:<org>:<date>`),
/// as [`queue_isolated`] says.
pub fn queue_org_day_alerts(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    crossings: &[Crossing],
    amended: bool,
    prefetched: Option<&DateEvents>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let target = format!("alerts:{}:{}", row.org_id, row.local_date);
    queue_isolated(tx, &target, now, |tx| {
        queue_crossing_alerts(setup, tx, row, crossings, now, prefetched)?;
        if amended {
            queue_amended_summary(setup, tx, row, now)?;
        }
        Ok(())
    })
}

/// Queues the daily summary of a day that just closed as one failure unit
/// (`summary:<org>:<date>`), as [`queue_isolated`] says.
pub fn queue_org_day_summary(
    setup: &Setup,
    tx: &Tx<'_>,
    row: &LedgerRow,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let target = format!("summary:{}:{}", row.org_id, row.local_date);
    queue_isolated(tx, &target, now, |tx| {
        queue_summary(setup, tx, row, now).map(|_| ())
    })
}

/// Tries again every org-day message that could not be queued before (the open `message`
/// problems of alerts and summaries). Returns the failures that remain.
pub fn retry_messages(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    for p in store.problems(Some(Unit::Message))? {
        let Some(what) = p.target.strip_prefix(BUILD) else {
            // A parked message: only `outbox retry` or `outbox drop` ends it.
            continue;
        };
        let Some((kind, rest)) = what.split_once(':') else {
            continue;
        };
        if kind != "alerts" && kind != "summary" {
            // The digest's problem is the digest task's own: it tries again by itself.
            continue;
        }
        let Some((org_id, date)) = rest.rsplit_once(':') else {
            continue;
        };
        let tx = store.transaction()?;
        let found = match date.parse() {
            Ok(date) => {
                let day = OrgDay::new(org_id, date);
                tx.ledger_row(&day)?.map(|row| (day, row))
            }
            Err(_) => None,
        };
        let Some((day, row)) = found else {
            // The org-day has no row any more (a backfill removed it), or never was one:
            // nothing to report.
            tx.resolve_problem(Unit::Message, &p.target)?;
            tx.commit()?;
            continue;
        };
        let outcome = if kind == "summary" {
            queue_org_day_summary(setup, &tx, &row, now)?
        } else {
            let crossings = tx.crossings(&day)?;
            queue_org_day_alerts(setup, &tx, &row, &crossings, row.revision > 0, None, now)?
        };
        tx.commit()?;
        failed.extend(outcome);
    }
    Ok(failed)
}
