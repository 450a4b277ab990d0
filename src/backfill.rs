//! `creditd backfill`: recomputes a range of org-days from the archived raw files with today's
//! registry, purchases, pricing and rules, shows what changed, and replaces the range in one
//! store transaction.
//!
//! It runs in named phases:
//! 1. [`plan`]: the range as it is (its parts, ledger rows) and the archived files to read
//!    again — only those holding events of its dates or quarantined calls that may belong to it
//!    (DESIGN §6); it stops if one of them is gone, or if the range is past the events horizon.
//! 2. [`reread`]: every line of those files, in the order they were first ingested. A line
//!    whose call now falls in the range (an org of `--org`, a local date from `--from` to
//!    `--to`) is a candidate; the first candidate of an (org, date, request id) is the unique
//!    one (DESIGN §2.1). Lines that were quarantined and now land in the range leave the
//!    quarantine; lines that were in the range and are now refused by the org checks enter it;
//!    the `files` counts follow. An event outside the range stays there; a call that would
//!    leave the range for a day outside it stops the backfill: nothing is moved out of sight.
//!    The new events are written as new Parquet parts, one set per input file (plus, with
//!    `--org`, parts holding the other orgs' events of those days).
//! 3. [`recompute`]: the new ledger rows of the range.
//! 4. [`diff`]: what changed, and which closed days are amended.
//! 5. [`swap`]: one transaction replaces the parts listed for those days, the ledger rows,
//!    crossings, quarantine rows and file counts, and forgets the days' request-id claims
//!    (rebuilt from the new parts when next touched). A crash before the commit leaves the old
//!    ledger as it was (the new parts are unlisted orphans); the old parts go after it.
//!
//! Memory is bounded by files and batches, not by the range: what is held per input file is
//! that file's lines, and the first-occurrence sets of the range's dates spill to disk
//! ([`Scratch`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::alerts;
use crate::ingest::events_horizon;
use crate::ledger::{close_time, compute_rows, differs, export_rows, ExportRow};
use crate::localday::OrgDay;
use crate::logline::Reason;
use crate::report::{self, Change};
use crate::setup::Setup;
use crate::store::{Crossing, FileRow, LedgerRow, ListedPart, Placed, Store};

mod diff;
mod reread;
pub use diff::diff;
use reread::reason_index;
pub use reread::{reread, Reread};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Empty: every org.
    pub orgs: Vec<String>,
    pub dry_run: bool,
    /// Queue org-facing messages for what the backfill reveals: alerts for new crossings and
    /// amended summaries of closed days whose summary was sent.
    pub resend: bool,
    /// Makes the run's part names and report id unique, even for two runs with the same
    /// `--now`: the caller passes something that differs per run (the CLI, the wall clock's
    /// nanoseconds), since nothing below the CLI reads the clock.
    pub nonce: u128,
}

/// What a backfill found and did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The backfill's id; its ops report is `backfill:<id>`.
    pub id: String,
    pub changes: Vec<Change>,
    /// Each changed org-day's figures before and after.
    pub days: Vec<crate::report::DayChange>,
    /// Org-days of the range before and after.
    pub rows_before: usize,
    pub rows_after: usize,
    pub changed_org_days: usize,
    pub files: usize,
    pub lines: u64,
    /// Lines taken out of the quarantine / put into it.
    pub recovered: u64,
    pub quarantined: u64,
    /// Outbox keys queued (nothing on a dry run).
    pub queued: Vec<String>,
}

impl Outcome {
    /// Neither events nor ledger rows in the range, before or after.
    pub fn no_data(&self) -> bool {
        self.rows_before == 0 && self.rows_after == 0 && self.recovered == 0
    }
}

/// Progress reporting while the archive is read.
pub trait Progress {
    fn start(&mut self, files: usize, bytes: u64);
    fn file_done(&mut self, name: &str, bytes: u64, lines: u64);
    fn finish(&mut self);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: usize, _: u64) {}
    fn file_done(&mut self, _: &str, _: u64, _: u64) {}
    fn finish(&mut self) {}
}

/// Runs a backfill. `store` is the writable store, or an immutable one for a dry run.
pub fn run(
    setup: &Setup,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome> {
    if !opts.dry_run {
        crate::upgrade::upgrade(&setup.config.state_dir, store)?;
    }
    let plan = plan(setup, store, opts, now)?;
    // Where the new parts go: the state directory, or scratch space for a dry run.
    let _scratch;
    let base: PathBuf = if opts.dry_run {
        let dir = std::env::temp_dir().join(format!(
            "creditd-backfill-{}-{}",
            std::process::id(),
            plan.token
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        _scratch = ScratchDir(dir.clone());
        dir
    } else {
        setup.config.state_dir.clone()
    };
    let mut reread = reread(setup, store, &plan, &base, now, progress)?;
    let new_rows = recompute(setup, &plan, &mut reread, &base)?;
    let mut out = Outcome {
        id: plan.id.clone(),
        files: plan.sources.len(),
        lines: reread.lines,
        rows_before: plan.old_rows.len(),
        rows_after: new_rows.len(),
        recovered: reread.recovered,
        quarantined: reread.quarantined,
        ..Default::default()
    };
    let amended = diff(setup, &plan, &new_rows, now, &mut out);
    if opts.dry_run {
        return Ok(out);
    }
    swap(
        setup, store, &plan, reread, &new_rows, &amended, now, &mut out,
    )?;
    Ok(out)
}

/// The range as it is, and what must be read again.
pub struct Plan<'o> {
    opts: &'o Options,
    /// The backfill's id, and the token that names its parts.
    id: String,
    token: String,
    dates: Vec<NaiveDate>,
    /// The parts listed for each date of the range.
    old_parts: BTreeMap<NaiveDate, Vec<ListedPart>>,
    old_rows: BTreeMap<OrgDay, LedgerRow>,
    /// The archived files to read, in the order they were first ingested.
    sources: Vec<Source>,
}

/// An archived input file a backfill reads again.
struct Source {
    row: FileRow,
    path: PathBuf,
    bytes: u64,
}

impl Plan<'_> {
    fn in_range(&self, org: &str, date: NaiveDate) -> bool {
        date >= self.opts.from
            && date <= self.opts.to
            && (self.opts.orgs.is_empty() || self.opts.orgs.iter().any(|o| o == org))
    }

    fn in_dates(&self, date: NaiveDate) -> bool {
        date >= self.opts.from && date <= self.opts.to
    }
}

/// Phase 1: checks the range, reads it as it is, and finds the archived files to read again.
pub fn plan<'o>(
    setup: &Setup,
    store: &Store,
    opts: &'o Options,
    now: DateTime<Utc>,
) -> anyhow::Result<Plan<'o>> {
    if opts.from > opts.to {
        bail!("--from {} is after --to {}", opts.from, opts.to);
    }
    for org in &opts.orgs {
        if setup.org(org).is_none()
            && store
                .ledger(None, None, std::slice::from_ref(org))?
                .is_empty()
        {
            bail!("--org {org}: no such org in the registry or the ledger");
        }
    }
    if store.has_mixed_parts()? {
        bail!(
            "this state holds event parts of an earlier version, which the next writing run upgrades; run `creditd run ingest` once, then the dry run"
        );
    }
    if let Some(days) = setup.config.retention.events {
        // The range's events must all still be there (DESIGN §6).
        let orgs: Vec<&crate::allotment::Org> = if opts.orgs.is_empty() {
            setup.registry.orgs.values().collect()
        } else {
            opts.orgs.iter().filter_map(|o| setup.org(o)).collect()
        };
        for org in orgs {
            let horizon = events_horizon(org.timezone, now, days);
            if opts.from < horizon {
                bail!(
                    "cannot backfill from {}: it is past the events retention horizon ([retention] events = \"{days}d\"; org {} keeps events from {horizon}, its zone {}); the events before it are gone",
                    opts.from,
                    org.org_id,
                    org.timezone.name()
                );
            }
        }
    }
    // The part names and the report's id are unique per run: a second backfill of the same
    // range within the same second (or with the same --now) must never overwrite parts the
    // store still lists, nor lose its report to an existing key.
    let token = hex::encode(Sha256::digest(format!(
        "{now} {} {} {:?} {} {}",
        opts.from,
        opts.to,
        opts.orgs,
        std::process::id(),
        opts.nonce
    )))[..16]
        .to_string();
    let id = format!(
        "{}-{}-{}{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        opts.from,
        opts.to,
        if opts.orgs.is_empty() {
            String::new()
        } else {
            format!("-{}org", opts.orgs.len())
        },
        &token[..6]
    );
    let dates: Vec<NaiveDate> = opts
        .from
        .iter_days()
        .take_while(|d| *d <= opts.to)
        .collect();
    let mut old_parts = BTreeMap::new();
    let mut wanted: HashSet<String> = HashSet::new();
    for d in &dates {
        let parts = store.listed_parts_on(*d)?;
        wanted.extend(parts.iter().map(|p| p.file_sha.clone()));
        old_parts.insert(*d, parts);
    }
    // A local date spans UTC from 14 hours before its midnight to 12 hours after its end: a
    // quarantined call two days either side of the range may belong to it under a new zone.
    let day_ms = 86_400_000i64;
    let from_ms = opts
        .from
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis()
        - 2 * day_ms;
    let to_ms = opts
        .to
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis()
        + 3 * day_ms;
    wanted.extend(store.files_with_recoverable_lines(from_ms, to_ms)?);
    let old_rows: BTreeMap<OrgDay, LedgerRow> = store
        .ledger(Some(opts.from), Some(opts.to), &opts.orgs)?
        .into_iter()
        .map(|r| (r.org_day(), r))
        .collect();
    let mut sources = Vec::new();
    let state_dir = &setup.config.state_dir;
    for row in store.files()? {
        if row.status != crate::store::FileStatus::Ingested || !wanted.contains(&row.sha256) {
            continue;
        }
        if row.purged.archive {
            bail!(
                "cannot backfill: the archived copy of {} was removed by retention ([retention] archive), and the range needs it",
                row.file
            );
        }
        let recoverable = [Reason::UnknownOrg, Reason::BeforeSignup, Reason::Expired]
            .iter()
            .map(|r| row.counts.quarantined[reason_index(*r)])
            .sum::<u64>();
        if row.purged.quarantine && recoverable > 0 {
            bail!(
                "cannot backfill: the quarantined lines of {} were removed by retention ([retention] quarantine), and the range needs them to tell its lines apart",
                row.file
            );
        }
        let rel = row
            .archive_path
            .as_deref()
            .with_context(|| format!("{} has no archived copy", row.file))?;
        let path = state_dir.join(rel);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "cannot backfill: the archived copy of {} ({}) is missing",
                row.file,
                path.display()
            )
        })?;
        sources.push(Source {
            row,
            path,
            bytes: meta.len(),
        });
    }
    Ok(Plan {
        opts,
        id,
        token,
        dates,
        old_parts,
        old_rows,
        sources,
    })
}

/// New ledger rows of the range, with their crossings.
type NewRows = BTreeMap<OrgDay, (LedgerRow, Vec<Crossing>)>;

/// Phase 3: the new ledger rows of the range, from the new parts.
pub fn recompute(
    setup: &Setup,
    plan: &Plan<'_>,
    reread: &mut Reread,
    base: &Path,
) -> anyhow::Result<NewRows> {
    let mut new_rows = NewRows::new();
    for d in &plan.dates {
        let mut orgs: BTreeSet<String> = reread.new_org_days.remove(d).unwrap_or_default();
        orgs.extend(
            plan.old_rows
                .keys()
                .filter(|day| day.date == *d)
                .map(|day| day.org_id.clone()),
        );
        let parts: Vec<String> = reread
            .listing
            .get(d)
            .map(|l| l.iter().map(|p| p.path.clone()).collect())
            .unwrap_or_default();
        let orgs: Vec<String> = orgs.into_iter().collect();
        for (org, c) in compute_rows(setup, base, &parts, *d, &orgs)? {
            new_rows.insert(OrgDay::new(org, *d), (c.row, c.crossings));
        }
    }
    Ok(new_rows)
}

/// Phase 5: replaces the range in one transaction and queues the report (and, with
/// `--resend`, the org messages).
#[allow(clippy::too_many_arguments)]
fn swap(
    setup: &Setup,
    store: &mut Store,
    plan: &Plan<'_>,
    mut reread: Reread,
    new_rows: &NewRows,
    amended: &[OrgDay],
    now: DateTime<Utc>,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let state_dir = &setup.config.state_dir;
    let opts = plan.opts;
    let keys_before = store.outbox_keys()?;
    let tx = store.transaction()?;
    let mut garbage = Vec::new();
    for d in &plan.dates {
        let parts = reread.listing.remove(d).unwrap_or_default();
        garbage.extend(tx.replace_parts(*d, &parts)?);
        // The day's request ids moved: its claims are rebuilt from the new parts.
        garbage.extend(tx.forget_claims(*d)?);
    }
    for key in plan.old_rows.keys() {
        if !new_rows.contains_key(key) {
            tx.delete_ledger_row(key)?;
            tx.put_crossings(key, &[])?;
            tx.clear_dirty(key)?;
        }
    }
    for (key, (row, crossings)) in new_rows {
        let mut row = row.clone();
        let old = plan.old_rows.get(key);
        let is_amended = amended.contains(key);
        row.revision = old.map_or(0, |o| o.revision) + u64::from(is_amended);
        if old.is_some_and(|o| !differs(&row, o) && o.revision == row.revision) {
            tx.clear_dirty(key)?;
            continue;
        }
        // A backfill's rows are worked out from the day's events as they are then: the next
        // late file recomputes them whole rather than adding to them.
        tx.put_ledger_row(&row, 0)?;
        tx.put_crossings(key, crossings)?;
        tx.clear_dirty(key)?;
        if opts.resend {
            // A message that cannot be built is an open problem, retried by the next run;
            // it never holds back the swap.
            alerts::queue_org_day_alerts(setup, &tx, &row, crossings, is_amended, None, now)?;
        }
    }
    for (sha, line) in &reread.unquarantine {
        tx.unquarantine(sha, *line)?;
    }
    for q in &reread.to_quarantine {
        let at = Placed {
            org_id: &q.org_id,
            local_date: q.local_date,
            ts_ms: q.ts_ms,
        };
        tx.quarantine(&q.sha, &q.file, q.line, q.reason, &q.raw, Some(at))?;
    }
    for (sha, c) in &reread.counts {
        tx.set_file_counts(sha, c)?;
    }
    // What each flip means for the org's mail is read from the outbox, after `--resend`
    // queued what it does.
    for d in &mut out.days {
        if let Some(t) = d.alert_threshold() {
            d.mail = tx.outbox_status(&alerts::alert_key(&d.org_id, d.local_date, t))?;
        }
    }
    if !out.changes.is_empty() || out.recovered > 0 || out.quarantined > 0 {
        alerts::queue_backfill_report(
            &setup.config,
            &tx,
            &report::BackfillView {
                id: &plan.id,
                from: opts.from,
                to: opts.to,
                orgs: &opts.orgs,
                changes: &out.changes,
                days: &out.days,
                changed_org_days: out.changed_org_days,
                rows_before: out.rows_before,
                rows_after: out.rows_after,
                recovered: out.recovered,
                quarantined: out.quarantined,
                resend: opts.resend,
            },
            now,
        )?;
    }
    tx.commit()?;
    for p in garbage {
        let _ = std::fs::remove_file(state_dir.join(p));
    }
    out.queued = store
        .outbox_keys()?
        .into_iter()
        .filter(|k| !keys_before.contains(k))
        .collect();
    out.queued.sort();
    Ok(())
}

/// A directory removed when dropped (the dry run's scratch space).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
