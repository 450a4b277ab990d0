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
use crate::claims::{fingerprint, Scratch};
use crate::events::{
    backfill_part_name, for_each_request_id, kept_part_path, lines_of_file, write_kept, OrgFilter,
    PartWriter,
};
use crate::ingest::{classify, events_horizon, Ingester, LogReader};
use crate::ledger::{close_time, compute_rows, differs, export_rows, ExportRow};
use crate::logline::Reason;
use crate::report;
use crate::setup::Setup;
use crate::store::{Crossing, FileCounts, FileRow, LedgerRow, ListedPart, Placed, Store};

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

/// One changed value of one org-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub org_id: String,
    pub local_date: String,
    pub column: String,
    pub before: String,
    pub after: String,
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
    old_rows: BTreeMap<(String, String), LedgerRow>,
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
    let old_rows: BTreeMap<(String, String), LedgerRow> = store
        .ledger(
            Some(&opts.from.to_string()),
            Some(&opts.to.to_string()),
            &opts.orgs,
        )?
        .into_iter()
        .map(|r| ((r.org_id.clone(), r.local_date.clone()), r))
        .collect();
    let mut sources = Vec::new();
    let state_dir = &setup.config.state_dir;
    for row in store.files()? {
        if row.status != "ingested" || !wanted.contains(&row.sha256) {
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

fn reason_index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).expect("known")
}

/// What reading the archive again found.
pub struct Reread {
    /// The new parts of each date of the range (with `--org`, the kept ones too).
    listing: BTreeMap<NaiveDate, Vec<ListedPart>>,
    /// The orgs with new events on each date.
    new_org_days: BTreeMap<NaiveDate, BTreeSet<String>>,
    /// The new counts of the files that changed.
    counts: BTreeMap<String, FileCounts>,
    unquarantine: Vec<(String, u64)>,
    to_quarantine: Vec<Requarantined>,
    lines: u64,
    recovered: u64,
    quarantined: u64,
}

/// A line of the range that the backfill quarantines.
struct Requarantined {
    sha: String,
    file: String,
    line: u64,
    reason: Reason,
    raw: String,
    org_id: String,
    local_date: Option<NaiveDate>,
    ts_ms: i64,
}

/// The old outcome of an input line, as far as the range is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Old {
    /// An event of the range.
    InRange,
    /// Quarantined, with this reason.
    Quarantined(Reason),
    /// A duplicate, or an event outside the range.
    Other,
}

/// The events of one input file outside the range, read on first need.
struct Outside<'a> {
    state_dir: &'a Path,
    file_sha: &'a str,
    /// How many there are: none, most often, and then nothing is read.
    count: u64,
    /// Every part of the file.
    parts: Vec<String>,
    range_lines: &'a HashSet<u64>,
    lines: Option<HashSet<u64>>,
}

impl Outside<'_> {
    fn contains(&mut self, line: u64) -> anyhow::Result<bool> {
        if self.count == 0 {
            return Ok(false);
        }
        if self.lines.is_none() {
            let mut all =
                lines_of_file(self.state_dir, &self.parts, self.file_sha, OrgFilter::Any)?;
            all.retain(|l| !self.range_lines.contains(l));
            self.lines = Some(all);
        }
        Ok(self.lines.as_ref().expect("read").contains(&line))
    }
}

fn sub(v: &mut u64, what: &str, file: &str) -> anyhow::Result<()> {
    *v = v.checked_sub(1).with_context(|| {
        format!("the store's counts of {file} do not match its events ({what} below zero)")
    })?;
    Ok(())
}

/// The first-occurrence keys of the range's old events, read on first need (only lines now
/// refused by the org checks ask: were they duplicates counted in the range?).
struct OldKeys<'a> {
    state_dir: &'a Path,
    plan: &'a Plan<'a>,
    dir: PathBuf,
    keys: Option<Scratch>,
}

impl OldKeys<'_> {
    /// Whether `(org, request id)` had an event of the range on `date`, or, when the date is
    /// unknown, on any date of the range.
    fn has(&mut self, org: &str, rid: &str, date: Option<NaiveDate>) -> anyhow::Result<bool> {
        if date.is_some_and(|d| !self.plan.in_dates(d)) {
            return Ok(false);
        }
        if self.keys.is_none() {
            let mut keys = Scratch::new(self.dir.clone());
            for (d, parts) in &self.plan.old_parts {
                let paths: Vec<String> = parts.iter().map(|p| p.path.clone()).collect();
                let mut failed = None;
                for_each_request_id(self.state_dir, &paths, |o, id| {
                    if failed.is_none() && self.plan.in_range(o, *d) {
                        if let Err(e) = keys.insert(*d, fingerprint(o, id)) {
                            failed = Some(e);
                        }
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            self.keys = Some(keys);
        }
        let keys = self.keys.as_ref().expect("read");
        let fp = fingerprint(org, rid);
        Ok(match date {
            Some(d) => keys.contains(d, fp),
            None => self.plan.dates.iter().any(|d| keys.contains(*d, fp)),
        })
    }
}

/// Phase 2: reads the archived files again with today's inputs and writes the range's new
/// parts under `base` (the state directory, or scratch space for a dry run).
pub fn reread(
    setup: &Setup,
    store: &Store,
    plan: &Plan<'_>,
    base: &Path,
    now: DateTime<Utc>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Reread> {
    let state_dir = &setup.config.state_dir;
    let opts = plan.opts;
    progress.start(
        plan.sources.len(),
        plan.sources.iter().map(|s| s.bytes).sum(),
    );
    let mut ingester = Ingester::new(setup, now);
    // The first candidate of each (org, date, request id) of the range is the unique one.
    let mut claims = Scratch::new(base.join(format!(".backfill-{}-claims", plan.token)));
    let mut old_keys = OldKeys {
        state_dir,
        plan,
        dir: base.join(format!(".backfill-{}-old", plan.token)),
        keys: None,
    };
    let mut out = Reread {
        listing: BTreeMap::new(),
        new_org_days: BTreeMap::new(),
        counts: BTreeMap::new(),
        unquarantine: Vec::new(),
        to_quarantine: Vec::new(),
        lines: 0,
        recovered: 0,
        quarantined: 0,
    };
    for src in &plan.sources {
        let f = &src.row;
        let sha = f.sha256.as_str();
        let (format, gz) =
            classify(&f.file).with_context(|| format!("{}: not an access-log name", f.file))?;
        // The file's old outcomes: its events of the range, its quarantined lines, and (on
        // first need) its events elsewhere.
        let all_parts = store.parts_of_file(sha)?;
        let range_parts: Vec<String> = all_parts
            .iter()
            .filter(|(d, _)| plan.in_dates(*d))
            .map(|(_, p)| p.path.clone())
            .collect();
        let range_lines = lines_of_file(state_dir, &range_parts, sha, OrgFilter::In(&opts.orgs))?;
        let events: u64 = all_parts.iter().map(|(_, p)| p.rows).sum();
        let mut outside = Outside {
            state_dir,
            file_sha: sha,
            count: events.saturating_sub(range_lines.len() as u64),
            parts: all_parts.iter().map(|(_, p)| p.path.clone()).collect(),
            range_lines: &range_lines,
            lines: None,
        };
        let quarantined = store.quarantined_lines_of(sha)?;
        let mut c = f.counts.clone();
        let before = c.clone();
        let mut writer = PartWriter::named(
            base,
            &backfill_part_name(sha, &plan.token),
            setup.config.ingest_threads,
        );
        let mut reader = LogReader::open(&src.path, format, gz)?;
        let mut lines = 0;
        while let Some((line_no, raw, decoded)) = reader.next_line()? {
            lines += 1;
            // A line that does not decode never did: the format rules are not configuration.
            let Ok(call) = decoded else { continue };
            let old = if range_lines.contains(&line_no) {
                Old::InRange
            } else if let Some(r) = quarantined.get(&line_no) {
                Old::Quarantined(*r)
            } else {
                Old::Other
            };
            match ingester.check_org(&call) {
                Err(rejection) => {
                    let was_in_range = match old {
                        Old::InRange => {
                            sub(&mut c.unique, "unique", &f.file)?;
                            true
                        }
                        // A duplicate of an event of the range.
                        Old::Other
                            if !outside.contains(line_no)?
                                && old_keys.has(
                                    &call.org_id,
                                    &call.request_id,
                                    rejection.local_date,
                                )? =>
                        {
                            sub(&mut c.duplicates, "duplicates", &f.file)?;
                            true
                        }
                        _ => false,
                    };
                    if was_in_range {
                        sub(&mut c.accepted, "accepted", &f.file)?;
                        c.count(rejection.reason);
                        out.quarantined += 1;
                        out.to_quarantine.push(Requarantined {
                            sha: sha.to_string(),
                            file: f.file.clone(),
                            line: line_no,
                            reason: rejection.reason,
                            raw: crate::ingest::quarantine_text(raw),
                            org_id: call.org_id.to_string(),
                            local_date: rejection.local_date,
                            ts_ms: call.ts_ms,
                        });
                    }
                }
                Ok(date) => {
                    if !plan.in_range(&call.org_id, date) {
                        if old == Old::InRange {
                            bail!(
                                "{} line {line_no}: request {} now belongs to org {} on {date}, outside the backfill; widen --from/--to or the --org list to cover both days",
                                f.file,
                                call.request_id,
                                call.org_id
                            );
                        }
                        continue;
                    }
                    // An event outside the range stays where it is.
                    if old == Old::Other && outside.contains(line_no)? {
                        continue;
                    }
                    let unique =
                        claims.insert(date, fingerprint(&call.org_id, &call.request_id))?;
                    match (old, unique) {
                        (Old::InRange, true) | (Old::Other, false) => {}
                        (Old::InRange, false) => {
                            sub(&mut c.unique, "unique", &f.file)?;
                            c.duplicates += 1;
                        }
                        (Old::Quarantined(r0), u) => {
                            c.uncount(r0);
                            c.accepted += 1;
                            if u {
                                c.unique += 1;
                            } else {
                                c.duplicates += 1;
                            }
                            out.unquarantine.push((sha.to_string(), line_no));
                            out.recovered += 1;
                        }
                        (Old::Other, true) => {
                            sub(&mut c.duplicates, "duplicates", &f.file)?;
                            c.unique += 1;
                        }
                    }
                    if unique {
                        out.new_org_days
                            .entry(date)
                            .or_default()
                            .insert(call.org_id.to_string());
                        let event = ingester.event(&call, date, sha, line_no);
                        writer.push(&event)?;
                    }
                }
            }
        }
        for part in writer.finish()? {
            out.listing
                .entry(part.local_date)
                .or_default()
                .push(ListedPart {
                    path: part.path,
                    file_sha: sha.to_string(),
                    rows: part.rows,
                });
        }
        if c != before {
            out.counts.insert(sha.to_string(), c);
        }
        out.lines += lines;
        progress.file_done(&f.file, src.bytes, lines);
    }
    progress.finish();
    if !opts.orgs.is_empty() {
        // The other orgs' events of those days are kept as they are, one part per input file.
        for (d, parts) in &plan.old_parts {
            let mut by_file: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for p in parts {
                by_file.entry(&p.file_sha).or_default().push(p.path.clone());
            }
            for (sha, paths) in by_file {
                let rel = kept_part_path(*d, sha, &plan.token);
                let rows = write_kept(state_dir, &paths, &opts.orgs, base, &rel)?;
                if rows > 0 {
                    out.listing.entry(*d).or_default().push(ListedPart {
                        path: rel,
                        file_sha: sha.to_string(),
                        rows,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// New ledger rows of the range, with their crossings.
type NewRows = BTreeMap<(String, String), (LedgerRow, Vec<Crossing>)>;

/// Phase 3: the new ledger rows of the range, from the new parts.
pub fn recompute(
    setup: &Setup,
    plan: &Plan<'_>,
    reread: &mut Reread,
    base: &Path,
) -> anyhow::Result<NewRows> {
    let mut new_rows = NewRows::new();
    for d in &plan.dates {
        let date = d.to_string();
        let mut orgs: BTreeSet<String> = reread.new_org_days.remove(d).unwrap_or_default();
        orgs.extend(
            plan.old_rows
                .keys()
                .filter(|(_, day)| *day == date)
                .map(|(o, _)| o.clone()),
        );
        let parts: Vec<String> = reread
            .listing
            .get(d)
            .map(|l| l.iter().map(|p| p.path.clone()).collect())
            .unwrap_or_default();
        let orgs: Vec<String> = orgs.into_iter().collect();
        for (org, c) in compute_rows(setup, base, &parts, &date, &orgs)? {
            new_rows.insert((org, date.clone()), (c.row, c.crossings));
        }
    }
    Ok(new_rows)
}

/// Phase 4: the changes, into `out`; returns the closed org-days the backfill amends.
pub fn diff(
    setup: &Setup,
    plan: &Plan<'_>,
    new_rows: &NewRows,
    now: DateTime<Utc>,
    out: &mut Outcome,
) -> Vec<(String, String)> {
    let keys: BTreeSet<&(String, String)> = plan.old_rows.keys().chain(new_rows.keys()).collect();
    let mut amended = Vec::new();
    for key in keys {
        let (org, date) = key;
        let old = plan.old_rows.get(key);
        let new = new_rows.get(key).map(|(r, _)| r);
        let changes = diff_rows(setup, org, date, old, new, now);
        if changes.is_empty() {
            continue;
        }
        out.changed_org_days += 1;
        out.changes.extend(changes);
        let figures = |r: &LedgerRow| day_figures(setup, r);
        out.days.push(crate::report::DayChange {
            org_id: org.clone(),
            local_date: date.clone(),
            before: old.map(figures),
            after: new.map(figures),
            mail: None,
        });
        if let (Some(old), Some(new)) = (old, new) {
            let tz = setup.org(org).map_or(chrono_tz::UTC, |o| o.timezone);
            let Ok(day) = date.parse::<NaiveDate>() else {
                continue;
            };
            if differs(new, old) && now >= close_time(tz, day, setup.config.close_grace) {
                amended.push(key.clone());
            }
        }
    }
    amended
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
    amended: &[(String, String)],
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
        garbage.extend(tx.replace_parts(&d.to_string(), &parts)?);
        // The day's request ids moved: its claims are rebuilt from the new parts.
        garbage.extend(tx.forget_claims(*d)?);
    }
    for (key, old) in &plan.old_rows {
        if !new_rows.contains_key(key) {
            tx.delete_ledger_row(&old.org_id, &old.local_date)?;
            tx.put_crossings(&old.org_id, &old.local_date, &[])?;
            tx.clear_dirty(&old.org_id, &old.local_date)?;
        }
    }
    for (key, (row, crossings)) in new_rows {
        let mut row = row.clone();
        let old = plan.old_rows.get(key);
        let is_amended = amended.contains(key);
        row.revision = old.map_or(0, |o| o.revision) + u64::from(is_amended);
        if old.is_some_and(|o| !differs(&row, o) && o.revision == row.revision) {
            tx.clear_dirty(&row.org_id, &row.local_date)?;
            continue;
        }
        tx.put_ledger_row(&row)?;
        tx.put_crossings(&row.org_id, &row.local_date, crossings)?;
        tx.clear_dirty(&row.org_id, &row.local_date)?;
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
            d.mail = tx.outbox_status(&alerts::alert_key(&d.org_id, &d.local_date, t))?;
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

/// An org-day's figures and over/near status, as the backfill report compares them.
fn day_figures(setup: &Setup, r: &LedgerRow) -> crate::report::DayFigures {
    crate::report::DayFigures {
        used: r.used,
        allotted: r.allotted,
        unit: if r.model == "legacy" {
            "calls"
        } else {
            "credits"
        },
        status: day_status(r.used, r.allotted, &setup.config.alerts.near_limit_percent),
    }
}

/// `over`, `near <t>%` (the highest of the ascending `thresholds` reached) or `-`; a day
/// without use is near nothing, even on an allotment of 0.
fn day_status(used: u64, allotted: u64, thresholds: &[u64]) -> String {
    if used > allotted {
        "over".to_string()
    } else if used == 0 {
        "-".to_string()
    } else {
        thresholds
            .iter()
            .rev()
            .find(|t| crate::allotment::reached(used, allotted, **t))
            .map_or("-".to_string(), |t| format!("near {t}%"))
    }
}

/// The export columns of an org-day that differ (`status` aside); a row that appears or
/// disappears is one change of the column `row`.
fn diff_rows(
    setup: &Setup,
    org: &str,
    date: &str,
    old: Option<&LedgerRow>,
    new: Option<&LedgerRow>,
    now: DateTime<Utc>,
) -> Vec<Change> {
    let export = |r: &LedgerRow| export_rows(setup, std::slice::from_ref(r), now).remove(0);
    let change = |column: &str, before: String, after: String| Change {
        org_id: org.to_string(),
        local_date: date.to_string(),
        column: column.to_string(),
        before,
        after,
    };
    let brief = |e: &ExportRow| format!("{} calls, used {} of {}", e.calls, e.used, e.allotted);
    match (old.map(export), new.map(export)) {
        (None, None) => Vec::new(),
        (None, Some(n)) => vec![change("row", "(none)".into(), brief(&n))],
        (Some(o), None) => vec![change("row", brief(&o), "(none)".into())],
        (Some(o), Some(n)) => fields(&o)
            .into_iter()
            .zip(fields(&n))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| change(a.0, a.1, b.1))
            .collect(),
    }
}

fn fields(r: &ExportRow) -> Vec<(&'static str, String)> {
    vec![
        ("model", r.model.clone()),
        ("edition", r.edition.clone()),
        ("agents", r.agents.to_string()),
        ("calls", r.calls.to_string()),
        ("billable_calls", r.billable_calls.to_string()),
        ("credits", r.credits.to_string()),
        ("base", r.base.to_string()),
        ("variable", r.variable.to_string()),
        ("additional", r.additional.to_string()),
        ("legacy_limit", r.legacy_limit.to_string()),
        ("allotted", r.allotted.to_string()),
        ("used", r.used.to_string()),
        ("pct_used", r.pct_used.clone()),
        ("overage", r.overage.to_string()),
        ("exceeded_at", r.exceeded_at.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::day_status;

    #[test]
    fn the_status_a_backfill_compares() {
        let t = [80, 90];
        assert_eq!(day_status(5_001, 5_000, &t), "over");
        assert_eq!(day_status(5_000, 5_000, &t), "near 90%");
        assert_eq!(day_status(4_000, 5_000, &t), "near 80%");
        assert_eq!(day_status(3_999, 5_000, &t), "-");
        // An allotment of 0: unused is nothing, any use is over.
        assert_eq!(day_status(0, 0, &t), "-");
        assert_eq!(day_status(1, 0, &t), "over");
    }
}
