//! `creditd backfill`: recomputes a range of org-days from the archived raw files with today's
//! registry, purchases, pricing and rules, shows what changed, and replaces the range in one
//! store transaction.
//!
//! Every line of every archived input file is read again, in the order the files were first
//! ingested. A line whose call now falls in the range (an org of `--org`, a local date between
//! `--from` and `--to`) is a candidate; the first candidate of a request id is the unique one,
//! unless an event outside the range already holds that id (the claim stays there). Lines
//! that were quarantined and now land in the range are taken out of the quarantine; lines
//! that were in the range and are now `unknown_org` / `before_signup` go into it; the `files`
//! counts follow. A call that would leave the range for a day outside it stops the backfill
//! with a message: nothing is moved out of sight.
//!
//! The new events of the range are written as new Parquet parts (plus, with `--org`, a part
//! holding the other orgs' events of those days), then one transaction swaps the parts listed
//! for those days, the ledger rows, crossings, claims, quarantine rows and file counts. A crash
//! before the commit leaves the old ledger as it was (the new parts are unlisted orphans); the
//! old parts are deleted after it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::alerts;
use crate::claims::{fingerprint, Claims, FingerprintSet};
use crate::events::{event_keys, kept_part_path, write_kept, PartWriter};
use crate::ingest::{classify, Ingester, LogReader};
use crate::ledger::{close_time, compute_rows, differs, export_rows, ExportRow};
use crate::logline::Reason;
use crate::report;
use crate::setup::Setup;
use crate::store::{Crossing, FileCounts, LedgerRow, Placed, Store};

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

/// The old outcome of an input line, as far as the range is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Old {
    /// An event of the range.
    InRange,
    /// Quarantined, with this reason.
    Quarantined(Reason),
    /// A duplicate, or an event outside the range.
    Other,
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

/// A directory removed when dropped (the dry run's scratch space).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sub(v: &mut u64, what: &str, file: &str) -> anyhow::Result<()> {
    *v = v.checked_sub(1).with_context(|| {
        format!("the store's counts of {file} do not match its events ({what} below zero)")
    })?;
    Ok(())
}

/// Runs a backfill. `store` is the writable store, or an immutable one for a dry run.
pub fn run(
    setup: &Setup,
    store: &mut Store,
    opts: &Options,
    now: DateTime<Utc>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Outcome> {
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
    let state_dir = &setup.config.state_dir;
    // The new parts' names and the report's id are unique per run: a second backfill of the
    // same range within the same second (or with the same --now) must never overwrite parts
    // the store still lists, nor lose its report to an existing key.
    let nonce = opts.nonce;
    let token = hex::encode(Sha256::digest(format!(
        "{now} {} {} {:?} {} {nonce}",
        opts.from,
        opts.to,
        opts.orgs,
        std::process::id()
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
    let in_orgs = |org: &str| opts.orgs.is_empty() || opts.orgs.iter().any(|o| o == org);
    let in_range =
        |org: &str, date: NaiveDate| date >= opts.from && date <= opts.to && in_orgs(org);
    let dates: Vec<NaiveDate> = opts
        .from
        .iter_days()
        .take_while(|d| *d <= opts.to)
        .collect();

    // The range as it is.
    let mut old_parts: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
    // Held for the whole range, so kept small: line numbers, and request ids as fingerprints
    // (the claims' dedupe key), not as strings.
    let mut old_lines: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut old_ids = FingerprintSet::default();
    for d in &dates {
        let parts = store.parts_on(&d.to_string())?;
        for (file, line, rid) in event_keys(state_dir, &parts, &opts.orgs)? {
            old_ids.insert(fingerprint(&rid));
            old_lines.entry(file).or_default().insert(line);
        }
        old_parts.insert(*d, parts);
    }
    let old_rows: BTreeMap<(String, String), LedgerRow> = store
        .ledger(
            Some(&opts.from.to_string()),
            Some(&opts.to.to_string()),
            &opts.orgs,
        )?
        .into_iter()
        .map(|r| ((r.org_id.clone(), r.local_date.clone()), r))
        .collect();
    let mut quarantined: HashMap<String, HashMap<u64, Reason>> = HashMap::new();
    for ((sha, line), reason) in store.quarantined_lines()? {
        if let Some(r) = Reason::parse(&reason) {
            quarantined.entry(sha).or_default().insert(line, r);
        }
    }

    // Where the new parts go: the state directory, or scratch space for a dry run.
    let _scratch;
    let base: PathBuf = if opts.dry_run {
        let dir =
            std::env::temp_dir().join(format!("creditd-backfill-{}-{token}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        _scratch = Scratch(dir.clone());
        dir
    } else {
        state_dir.clone()
    };

    // Read the archive again.
    let files: Vec<_> = store
        .files()?
        .into_iter()
        .filter(|f| f.status == "ingested")
        .collect();
    let mut sources = Vec::new();
    let mut total_bytes = 0;
    for f in &files {
        let rel = f
            .archive_path
            .as_deref()
            .with_context(|| format!("{} has no archived copy", f.file))?;
        let path = state_dir.join(rel);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "cannot backfill: the archived copy of {} ({}) is missing",
                f.file,
                path.display()
            )
        })?;
        total_bytes += meta.len();
        sources.push((f, path, meta.len()));
    }
    progress.start(sources.len(), total_bytes);

    let mut out = Outcome {
        id: id.clone(),
        files: sources.len(),
        rows_before: old_rows.len(),
        ..Default::default()
    };
    let claims = Claims::open(state_dir, store, !opts.dry_run)?;
    let mut ingester = Ingester::new(setup, now);
    let mut writer = PartWriter::new(&base, &token);
    let mut new_ids = FingerprintSet::default();
    let mut new_org_days: BTreeMap<NaiveDate, BTreeSet<String>> = BTreeMap::new();
    let mut counts: BTreeMap<String, FileCounts> = BTreeMap::new();
    let mut unquarantine: Vec<(String, u64)> = Vec::new();
    let mut to_quarantine: Vec<Requarantined> = Vec::new();
    let empty_lines = HashSet::new();
    let empty_q = HashMap::new();
    for (f, path, bytes) in &sources {
        let (format, gz) =
            classify(&f.file).with_context(|| format!("{}: not an access-log name", f.file))?;
        let sha = &f.sha256;
        let lines_of = old_lines.get(sha).unwrap_or(&empty_lines);
        let q_of = quarantined.get(sha).unwrap_or(&empty_q);
        let mut c = f.counts.clone();
        let before = c.clone();
        let mut reader = LogReader::open(path, format, gz)?;
        let mut lines = 0;
        while let Some((line_no, raw, decoded)) = reader.next_line()? {
            lines += 1;
            // A line that does not decode never did: the format rules are not configuration.
            let Ok(call) = decoded else { continue };
            let old = if lines_of.contains(&line_no) {
                Old::InRange
            } else if let Some(r) = q_of.get(&line_no) {
                Old::Quarantined(*r)
            } else {
                Old::Other
            };
            let rid = call.request_id.to_string();
            match ingester.check_org(&call) {
                Err(rejection) => {
                    let reason = rejection.reason;
                    let was_in_range = match old {
                        Old::InRange => {
                            sub(&mut c.unique, "unique", &f.file)?;
                            true
                        }
                        // A duplicate of an event of the range.
                        Old::Other if old_ids.contains(&fingerprint(&rid)) => {
                            sub(&mut c.duplicates, "duplicates", &f.file)?;
                            true
                        }
                        _ => false,
                    };
                    if was_in_range {
                        sub(&mut c.accepted, "accepted", &f.file)?;
                        c.count(reason);
                        out.quarantined += 1;
                        to_quarantine.push(Requarantined {
                            sha: sha.clone(),
                            file: f.file.clone(),
                            line: line_no,
                            reason,
                            raw: crate::ingest::quarantine_text(raw),
                            org_id: call.org_id.to_string(),
                            local_date: rejection.local_date,
                            ts_ms: call.ts_ms,
                        });
                    }
                }
                Ok(date) => {
                    if !in_range(&call.org_id, date) {
                        if old == Old::InRange {
                            bail!(
                                "{} line {line_no}: request {rid} now belongs to org {} on {date}, outside the backfill; widen --from/--to or the --org list to cover both days",
                                f.file,
                                call.org_id
                            );
                        }
                        continue;
                    }
                    let fp = fingerprint(&rid);
                    let claimed_elsewhere = !old_ids.contains(&fp) && claims.contains(fp);
                    let unique = !new_ids.contains(&fp) && !claimed_elsewhere;
                    match (&old, unique) {
                        (Old::InRange, true) | (Old::Other, false) => {}
                        (Old::InRange, false) => {
                            sub(&mut c.unique, "unique", &f.file)?;
                            c.duplicates += 1;
                        }
                        (Old::Quarantined(r0), u) => {
                            c.uncount(*r0);
                            c.accepted += 1;
                            if u {
                                c.unique += 1;
                            } else {
                                c.duplicates += 1;
                            }
                            unquarantine.push((sha.clone(), line_no));
                            out.recovered += 1;
                        }
                        (Old::Other, true) => {
                            sub(&mut c.duplicates, "duplicates", &f.file)?;
                            c.unique += 1;
                        }
                    }
                    if unique {
                        new_ids.insert(fp);
                        new_org_days
                            .entry(date)
                            .or_default()
                            .insert(call.org_id.to_string());
                        let event = ingester.event(&call, date, sha, line_no);
                        writer.push(&event)?;
                    }
                }
            }
        }
        if c != before {
            counts.insert(sha.clone(), c);
        }
        out.lines += lines;
        progress.file_done(&f.file, *bytes, lines);
    }
    progress.finish();

    // The new parts of each day of the range.
    let mut listing: BTreeMap<NaiveDate, Vec<(String, u64)>> = BTreeMap::new();
    for part in writer.finish()? {
        listing
            .entry(part.local_date)
            .or_default()
            .push((part.path, part.rows));
    }
    if !opts.orgs.is_empty() {
        for (d, parts) in &old_parts {
            let rel = kept_part_path(*d, &token);
            let rows = write_kept(state_dir, parts, &opts.orgs, &base, &rel)?;
            if rows > 0 {
                listing.entry(*d).or_default().push((rel, rows));
            }
        }
    }

    // The new ledger of the range.
    let mut new_rows: BTreeMap<(String, String), (LedgerRow, Vec<Crossing>)> = BTreeMap::new();
    for d in &dates {
        let date = d.to_string();
        let mut orgs: BTreeSet<String> = new_org_days.remove(d).unwrap_or_default();
        orgs.extend(
            old_rows
                .keys()
                .filter(|(_, day)| *day == date)
                .map(|(o, _)| o.clone()),
        );
        let parts: Vec<String> = listing
            .get(d)
            .map(|l| l.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default();
        let orgs: Vec<String> = orgs.into_iter().collect();
        for (org, c) in compute_rows(setup, &base, &parts, &date, &orgs)? {
            new_rows.insert((org, date.clone()), (c.row, c.crossings));
        }
    }
    out.rows_after = new_rows.len();

    // The diff, and the revisions of amended closed days.
    let keys: BTreeSet<&(String, String)> = old_rows.keys().chain(new_rows.keys()).collect();
    let mut amended = Vec::new();
    for key in keys {
        let (org, date) = key;
        let old = old_rows.get(key);
        let new = new_rows.get(key).map(|(r, _)| r);
        let changes = diff_rows(setup, org, date, old, new, now);
        if changes.is_empty() {
            continue;
        }
        out.changed_org_days += 1;
        out.changes.extend(changes);
        if let (Some(old), Some(new)) = (old, new) {
            let tz = setup.org(org).map_or(chrono_tz::UTC, |o| o.timezone);
            let day: NaiveDate = date.parse().expect("ISO date");
            if differs(new, old) && now >= close_time(tz, day, setup.config.close_grace) {
                amended.push(key.clone());
            }
        }
    }
    if opts.dry_run {
        return Ok(out);
    }

    // Swap the range in one transaction.
    let keys_before = store.outbox_keys()?;
    let tx = store.transaction()?;
    let mut garbage = Vec::new();
    for d in &dates {
        let parts = listing.remove(d).unwrap_or_default();
        garbage.extend(tx.replace_parts(&d.to_string(), &parts)?);
    }
    for (key, old) in &old_rows {
        if !new_rows.contains_key(key) {
            tx.delete_ledger_row(&old.org_id, &old.local_date)?;
            tx.put_crossings(&old.org_id, &old.local_date, &[])?;
            tx.clear_dirty(&old.org_id, &old.local_date)?;
        }
    }
    for (key, (row, crossings)) in &new_rows {
        let mut row = row.clone();
        let old = old_rows.get(key);
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
    for (sha, line) in &unquarantine {
        tx.unquarantine(sha, *line)?;
    }
    for q in &to_quarantine {
        let at = Placed {
            org_id: &q.org_id,
            local_date: q.local_date,
            ts_ms: q.ts_ms,
        };
        tx.quarantine(&q.sha, &q.file, q.line, q.reason, &q.raw, Some(at))?;
    }
    // Request ids moved: the claims are rebuilt from the new parts (below, or at the next
    // open if this process dies first).
    tx.mark_claims_stale()?;
    for (sha, c) in &counts {
        tx.set_file_counts(sha, c)?;
    }
    if !out.changes.is_empty() || out.recovered > 0 || out.quarantined > 0 {
        alerts::queue_backfill_report(
            &setup.config,
            &tx,
            &report::BackfillView {
                id: &id,
                from: opts.from,
                to: opts.to,
                orgs: &opts.orgs,
                changes: &out.changes,
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
    drop(claims);
    if let Err(e) = Claims::open(state_dir, store, true) {
        // The claims stay marked stale: the next ingest rebuilds them.
        tracing::error!("cannot rebuild the request-id claims after the backfill: {e:#}");
    }
    out.queued = store
        .outbox_keys()?
        .into_iter()
        .filter(|k| !keys_before.contains(k))
        .collect();
    out.queued.sort();
    Ok(out)
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
