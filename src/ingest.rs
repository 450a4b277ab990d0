//! Ingest: inbox files → validated, deduplicated, priced, localized events.
//!
//! Each file is handled whole in one store transaction: its quarantined lines, its request-id
//! claims, its Parquet parts and its `files` row commit together or not at all. Only then is
//! the file moved to the archive. A file that cannot be read is recorded as failed, leaves
//! nothing behind, and is tried again on the next run.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::allotment::Org;
use crate::claims::{fingerprint, Claims, Fingerprint};
use crate::events::{Event, PartWriter};
use crate::localday::DayCursor;
use crate::logline::{Call, Reason};
use crate::pricing::Pricing;
use crate::setup::Setup;
use crate::store::{FileCounts, FileRow, FileStatus, Placed, Purged, Store, Unit};

mod ahead;
mod inbox;
mod pipeline;
mod reader;
use ahead::{Ahead, Source};
pub use inbox::{list_inbox, open_regular, sha256_file, InboxListing};
use pipeline::Line;
pub use reader::{quarantine_text, Decoder, LogReader, MAX_LINE, QUARANTINE_KEEP};

/// The formats of access-log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// How a file name is treated: `None` = not an access log (ignored).
pub fn classify(name: &str) -> Option<(Format, bool)> {
    if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
        return None;
    }
    let (stem, gz) = match name.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (name, false),
    };
    let format = if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
        Format::Ndjson
    } else if stem.ends_with(".csv") {
        Format::Csv
    } else {
        return None;
    };
    Some((format, gz))
}

/// What happened to one inbox file.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ingested(FileRow),
    DuplicateFile(FileRow),
    /// A file already ingested whose move to the archive had been interrupted.
    ArchiveCompleted(String),
    Failed {
        file: String,
        error: String,
    },
    /// A stop request arrived in the middle of the file: nothing of it was kept, it stays in
    /// the inbox for the next run.
    Stopped(String),
}

/// The error that ends a file's ingest when a stop is requested (its transaction rolls back).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stopped {}

/// How many lines go by between two looks at the stop flag.
const STOP_CHECK_LINES: u64 = 4096;

/// The result of one ingest run.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Failed { .. }))
            .count()
    }
}

/// Ingests every access-log file in the inbox, in name order. `stop` is checked between
/// files: once set, the run ends early, every file before it whole.
pub fn ingest_inbox(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let inbox = &setup.config.inbox;
    let listing = list_inbox(inbox)?;
    let skipped: Vec<(String, String)> = listing
        .skipped
        .iter()
        .map(|(name, kind)| (name.clone(), kind.to_string()))
        .collect();
    for (name, kind) in store.note_skipped(&skipped, &stamp(now))? {
        tracing::warn!(
            "skipped {} in the inbox: a {kind}, not a regular file; it is never opened (shown once)",
            inbox.join(&name).display()
        );
    }
    // A failed file that left the inbox (removed or fixed by hand under another name) is no
    // longer a problem.
    for p in store.problems(Some(Unit::File))? {
        if !listing.files.iter().any(|(_, name)| *name == p.target) {
            store.resolve_problem(Unit::File, &p.target)?;
        }
    }
    let state_dir = &setup.config.state_dir;
    // A state of an earlier version is brought to this one's layout first.
    crate::upgrade::upgrade(state_dir, store)?;
    let mut report = Report::default();
    if listing.files.is_empty() {
        return Ok(report);
    }
    let mut claims = Claims::open(state_dir);
    let files: Vec<(PathBuf, String)> = listing
        .files
        .into_iter()
        .map(|(os_name, name)| (inbox.join(os_name), name))
        .collect();
    let threads = setup.config.ingest_threads;
    let mut run = Run {
        ingester: Ingester::new(setup, now),
        store,
        claims: &mut claims,
        report: &mut report,
        now,
        stop,
    };
    // A file read and decoded on this thread.
    let here = |index: usize| {
        let (path, name) = &files[index];
        Source::Here {
            setup,
            now,
            path,
            name,
        }
    };
    if threads <= 1 {
        run.each_file(&files, &mut |index| here(index))?;
    } else {
        let (skip, gone) = (AtomicUsize::new(0), Cell::new(false));
        std::thread::scope(|scope| {
            let (to_main, items) = std::sync::mpsc::sync_channel(ahead::HANDED_OVER);
            let (files, skip) = (&files, &skip);
            std::thread::Builder::new()
                .name("read-ahead".into())
                .spawn_scoped(scope, move || {
                    // A panic it did not catch ends it (the calling thread reads on alone),
                    // not the run.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        ahead::read_ahead(files, setup, now, threads, to_main, skip)
                    }));
                })
                .expect("a thread can be started");
            // Returning drops `items`, which ends the reading thread if files are left.
            run.each_file(files, &mut |index| {
                if gone.get() {
                    here(index)
                } else {
                    Source::Ahead(Ahead::new(&items, &gone, skip, index, &files[index].0))
                }
            })
        })?;
    }
    if let Err(e) = claims.checkpoint(store) {
        // The claims stay correct without it (the pending parts are read at the next load).
        tracing::error!("cannot write the request-id claims: {e:#}");
    }
    Ok(report)
}

/// What one run of ingest works with, file after file.
struct Run<'r, 's> {
    ingester: Ingester<'s>,
    store: &'r mut Store,
    claims: &'r mut Claims,
    report: &'r mut Report,
    now: DateTime<Utc>,
    stop: &'r AtomicBool,
}

impl Run<'_, '_> {
    /// Ingests `files` in order, each from the source `source_of` gives for its index, until
    /// the end or a stop request.
    fn each_file<'a>(
        &mut self,
        files: &'a [(PathBuf, String)],
        source_of: &mut dyn FnMut(usize) -> Source<'a>,
    ) -> anyhow::Result<()> {
        for (index, (path, name)) in files.iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let source = source_of(index);
            let outcome = self.ingester.ingest_file(
                self.store,
                self.claims,
                source,
                path,
                name,
                self.now,
                self.stop,
            );
            self.report.outcomes.push(outcome);
            // A long run writes its claims out now and then, bounding their memory.
            if self.claims.pending_len() >= MAX_PENDING_CLAIMS {
                self.claims.checkpoint(self.store)?;
            }
        }
        Ok(())
    }
}

/// Claims held in memory before a run writes them out as runs of their dates (64 MiB of them).
const MAX_PENDING_CLAIMS: usize = 4 << 20;

/// Holds what is worth keeping between files of one run: pricing memo and day cursors.
pub struct Ingester<'s> {
    setup: &'s Setup,
    pricing: Pricing,
    /// The run's clock: the events retention horizon is a rule of the clock (DESIGN §6).
    now: DateTime<Utc>,
    /// Each org seen in this run, with the cursor of its local days (one fast lookup a line)
    /// and its first local day inside the events horizon, if one is set.
    cursors: FxHashMap<String, (&'s Org, DayCursor, Option<NaiveDate>)>,
}

impl<'s> Ingester<'s> {
    pub fn new(setup: &'s Setup, now: DateTime<Utc>) -> Ingester<'s> {
        Ingester {
            setup,
            pricing: Pricing::new(setup.catalogs.clone()),
            now,
            cursors: FxHashMap::default(),
        }
    }

    /// Ingests one file and archives it; never returns an error, a failure is an outcome (and
    /// an open problem until the file goes through). A stop request rolls the file back.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest_file(
        &mut self,
        store: &mut Store,
        claims: &mut Claims,
        source: Source<'_>,
        path: &Path,
        name: &str,
        now: DateTime<Utc>,
        stop: &AtomicBool,
    ) -> Outcome {
        match self.try_ingest_file(store, claims, source, path, name, now, stop) {
            Ok(o) => o,
            Err(e) if e.is::<Stopped>() => {
                tracing::info!(
                    file = name,
                    "stopped in the middle of the file; it stays in the inbox"
                );
                Outcome::Stopped(name.to_string())
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(file = %path.display(), "{error}");
                let row = FileRow {
                    file: name.to_string(),
                    sha256: String::new(),
                    status: FileStatus::Failed,
                    counts: FileCounts::default(),
                    archive_path: None,
                    error: Some(error.clone()),
                    purged: Purged::default(),
                };
                let recorded = store.transaction().and_then(|tx| {
                    tx.record_file(&row, &stamp(now))?;
                    tx.record_problem(Unit::File, name, &error, now.timestamp_millis())?;
                    tx.commit()
                });
                if let Err(e2) = recorded {
                    tracing::error!("cannot record the failure of {}: {e2:#}", path.display());
                }
                Outcome::Failed {
                    file: name.to_string(),
                    error,
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn try_ingest_file(
        &mut self,
        store: &mut Store,
        claims: &mut Claims,
        mut source: Source<'_>,
        path: &Path,
        name: &str,
        now: DateTime<Utc>,
        stop: &AtomicBool,
    ) -> anyhow::Result<Outcome> {
        let sha = source.sha()?;
        let state = &self.setup.config.state_dir;
        let archive_rel = format!("archive/{}-{name}", &sha[..16]);

        if let Some(orig) = store.ingested_file(&sha)? {
            let orig_archive = orig.archive_path.as_deref().map(|p| state.join(p));
            // An original whose archived copy retention removed was archived all the same.
            if orig.purged.archive || orig_archive.is_some_and(|p| p.exists()) {
                // The same content again: counted, never charged twice.
                let rel = free_name(state, &archive_rel);
                let counts = FileCounts {
                    unique: 0,
                    duplicates: orig.counts.accepted,
                    ..orig.counts.clone()
                };
                let row = FileRow {
                    file: name.to_string(),
                    sha256: sha,
                    status: FileStatus::DuplicateFile,
                    counts,
                    archive_path: Some(rel.clone()),
                    error: None,
                    purged: Purged::default(),
                };
                let tx = store.transaction()?;
                tx.record_file(&row, &stamp(now))?;
                tx.resolve_problem(Unit::File, name)?;
                tx.commit()?;
                archive(path, &state.join(&rel))?;
                return Ok(Outcome::DuplicateFile(row));
            }
            // Ingested, but the move to the archive did not happen: finish it.
            let target = orig
                .archive_path
                .clone()
                .unwrap_or_else(|| archive_rel.clone());
            archive(path, &state.join(target))?;
            // A failure recorded when only the move went wrong is now moot.
            let tx = store.transaction()?;
            tx.clear_failed(name)?;
            tx.resolve_problem(Unit::File, name)?;
            tx.commit()?;
            return Ok(Outcome::ArchiveCompleted(name.to_string()));
        }

        let mut counts = FileCounts::default();
        let mut claimed: FxHashSet<(NaiveDate, Fingerprint)> = FxHashSet::default();
        let mut days: FxHashMap<String, BTreeSet<NaiveDate>> = FxHashMap::default();
        let tx = store.transaction()?;
        let threads = self.setup.config.ingest_threads;
        let mut writer = PartWriter::new(state, &sha, threads);
        source.decode(|batch| {
            if counts.lines > 0 && stop.load(Ordering::SeqCst) {
                return Err(Stopped.into());
            }
            for line in &batch.lines {
                counts.lines += 1;
                match line {
                    Line::Quarantined {
                        line_no,
                        reason,
                        text,
                        placed,
                    } => {
                        counts.count(*reason);
                        let at = placed.map(|(org, local_date, ts_ms)| Placed {
                            org_id: batch.str(org),
                            local_date,
                            ts_ms,
                        });
                        tx.quarantine(&sha, name, *line_no, *reason, batch.str(*text), at)?;
                    }
                    Line::Accepted(a) => {
                        counts.accepted += 1;
                        let date = a.local_date;
                        if claims.contains(&tx, date, a.fp)? || !claimed.insert((date, a.fp)) {
                            counts.duplicates += 1;
                            continue;
                        }
                        counts.unique += 1;
                        let event = batch.event(a, &sha);
                        writer.push(&event)?;
                        match days.get_mut(event.org_id) {
                            Some(dates) => {
                                dates.insert(date);
                            }
                            None => {
                                days.insert(event.org_id.to_string(), BTreeSet::from([date]));
                            }
                        }
                    }
                }
            }
            Ok(())
        })?;
        let parts = writer.finish()?;
        for part in &parts {
            tx.add_part(&part.path, &sha, part.local_date, part.rows)?;
        }
        for (org, date) in days
            .iter()
            .flat_map(|(o, ds)| ds.iter().map(move |d| (o, d)))
        {
            tx.mark_dirty(org, *date)?;
        }
        let row = FileRow {
            file: name.to_string(),
            sha256: sha,
            status: FileStatus::Ingested,
            counts,
            archive_path: Some(archive_rel.clone()),
            error: None,
            purged: Purged::default(),
        };
        tx.record_file(&row, &stamp(now))?;
        tx.resolve_problem(Unit::File, name)?;
        tx.commit()?;
        claims.extend(claimed);
        archive(path, &state.join(&archive_rel))?;
        tracing::info!(
            file = name,
            lines = row.counts.lines,
            accepted = row.counts.accepted,
            unique = row.counts.unique,
            duplicates = row.counts.duplicates,
            quarantined = row.counts.quarantined_total(),
            "ingested"
        );
        Ok(Outcome::Ingested(row))
    }

    /// The priced event of an accepted call.
    pub fn event<'c>(
        &mut self,
        call: &'c Call<'_>,
        date: NaiveDate,
        file_sha: &'c str,
        line: u64,
    ) -> Event<'c> {
        let price = self.pricing.price(call.ts_ms, call.method, &call.path);
        Event {
            request_id: &call.request_id,
            org_id: &call.org_id,
            ts_ms: call.ts_ms,
            local_date: date,
            method: call.method.as_str(),
            endpoint: price.endpoint,
            status: call.status,
            billable: !self.setup.config.is_exempt(call.status),
            credits: price.credits,
            unpriced: price.unpriced,
            latency_ms: call.latency_ms,
            charged_credits: call.charged_credits,
            dc: call.dc.as_deref(),
            file: file_sha,
            line,
        }
    }

    /// The org checks of DESIGN §2.1, in their order: a known org, a call not before its signup
    /// day, an org-day not before the events retention horizon (§6). Returns the call's local
    /// day.
    pub fn check_org(&mut self, call: &Call<'_>) -> Result<NaiveDate, Rejection> {
        let now = self.now;
        let events_days = self.setup.config.retention.events;
        let (org, cursor, horizon) = match self.cursors.get_mut(call.org_id.as_ref()) {
            Some((org, cursor, horizon)) => (*org, cursor, *horizon),
            None => {
                let org = self
                    .setup
                    .org(&call.org_id)
                    .ok_or(Rejection::new(Reason::UnknownOrg, None))?;
                let horizon = events_days.map(|n| events_horizon(org.timezone, now, n));
                let (_, cursor, _) = self
                    .cursors
                    .entry(org.org_id.clone())
                    .or_insert_with(|| (org, DayCursor::new(org.timezone), horizon));
                (org, cursor, horizon)
            }
        };
        // Decoding bounds `ts` to 2000–2099; an instant without a date is a bad one anyway.
        let date = cursor
            .day_of(call.ts_ms)
            .ok_or(Rejection::new(Reason::BadTimestamp, None))?;
        if date < org.signup_date {
            return Err(Rejection::new(Reason::BeforeSignup, Some(date)));
        }
        if horizon.is_some_and(|h| date < h) {
            return Err(Rejection::new(Reason::Expired, Some(date)));
        }
        Ok(date)
    }
}

/// Why a call that decoded was quarantined, and its local day when its org is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub local_date: Option<NaiveDate>,
}

impl Rejection {
    fn new(reason: Reason, local_date: Option<NaiveDate>) -> Rejection {
        Rejection { reason, local_date }
    }
}

/// The first local day of an org in zone `tz` whose events are kept at `now` with an events
/// horizon of `days` (DESIGN §6): day D is past the horizon iff D < today − days.
pub fn events_horizon(tz: chrono_tz::Tz, now: DateTime<Utc>, days: u32) -> NaiveDate {
    let today = crate::localday::local_day(tz, now);
    today
        .checked_sub_days(chrono::Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MIN)
}

fn stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A relative archive path that is not taken yet.
fn free_name(state: &Path, rel: &str) -> String {
    if !state.join(rel).exists() {
        return rel.to_string();
    }
    (1..)
        .map(|i| format!("{rel}.{i}"))
        .find(|r| !state.join(r).exists())
        .expect("some name is free")
}

/// Moves an ingested file into the archive (rename, or copy and remove across devices).
fn archive(from: &Path, to: &PathBuf) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if std::fs::rename(from, to).is_ok() {
        // A moved file keeps the writer's mode; make it private when it is ours to change.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600));
        return Ok(());
    }
    archive_by_copy(from, to)
}

/// The move to the archive across filesystems: a private copy (0600, whatever the source's
/// mode), synced, renamed into place, then the source removed.
fn archive_by_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = to.with_extension("copying");
    std::fs::copy(from, &tmp)
        .with_context(|| format!("cannot copy {} to the archive", from.display()))?;
    // `copy` gives the copy the source's mode; the archive is ours alone.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", tmp.display()))?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, to)?;
    std::fs::remove_file(from)
        .with_context(|| format!("cannot remove {} from the inbox", from.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_names_are_access_logs() {
        assert_eq!(classify("a.ndjson"), Some((Format::Ndjson, false)));
        assert_eq!(classify("a.jsonl.gz"), Some((Format::Ndjson, true)));
        assert_eq!(classify("a.csv.gz"), Some((Format::Csv, true)));
        assert_eq!(classify(".a.csv"), None);
        assert_eq!(classify("a.csv.tmp"), None);
        assert_eq!(classify("a.csv.part"), None);
        assert_eq!(classify("notes.txt"), None);
    }

    #[test]
    fn an_archive_copy_across_filesystems_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("gw-1.ndjson");
        std::fs::write(&from, b"{}\n").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o644)).unwrap();
        let to = dir.path().join("archive").join("0123-gw-1.ndjson");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        archive_by_copy(&from, &to).unwrap();
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        assert_eq!(std::fs::read(&to).unwrap(), b"{}\n");
        assert!(!from.exists(), "the inbox copy is removed");
        assert!(!to.with_extension("copying").exists());
    }
}
