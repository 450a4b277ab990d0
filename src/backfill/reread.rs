//! Phase 2 of a backfill: the archived files of the range read again with today's registry,
//! pricing and rules, their new parts written, and each line's new outcome against its old
//! one (recovered from the quarantine, newly quarantined, still an event).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};

use super::{Plan, Progress};
use crate::claims::{fingerprint, Scratch};
use crate::events::{
    backfill_part_name, for_each_request_id, kept_part_path, lines_of_file, write_kept, OrgFilter,
    PartWriter,
};
use crate::ingest::{classify, Ingester, LogReader};
use crate::logline::Reason;
use crate::setup::Setup;
use crate::store::{FileCounts, ListedPart, Store};

pub(super) fn reason_index(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).expect("known")
}

/// What reading the archive again found.
pub struct Reread {
    /// The new parts of each date of the range (with `--org`, the kept ones too).
    pub(super) listing: BTreeMap<NaiveDate, Vec<ListedPart>>,
    /// The orgs with new events on each date.
    pub(super) new_org_days: BTreeMap<NaiveDate, BTreeSet<String>>,
    /// The new counts of the files that changed.
    pub(super) counts: BTreeMap<String, FileCounts>,
    pub(super) unquarantine: Vec<(String, u64)>,
    pub(super) to_quarantine: Vec<Requarantined>,
    pub(super) lines: u64,
    pub(super) recovered: u64,
    pub(super) quarantined: u64,
}

/// A line of the range that the backfill quarantines.
pub(super) struct Requarantined {
    pub(super) sha: String,
    pub(super) file: String,
    pub(super) line: u64,
    pub(super) reason: Reason,
    pub(super) raw: String,
    pub(super) org_id: String,
    pub(super) local_date: Option<NaiveDate>,
    pub(super) ts_ms: i64,
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
