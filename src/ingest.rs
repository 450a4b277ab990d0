//! Ingest: inbox files → validated, deduplicated, priced, localized events.
//!
//! Each file is handled whole in one store transaction: its quarantined lines, its request-id
//! claims, its Parquet parts and its `files` row commit together or not at all. Only then is
//! the file moved to the archive. A file that cannot be read is recorded as failed, leaves
//! nothing behind, and is tried again on the next run.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::allotment::Org;
use crate::claims::{fingerprint, Claims, Fingerprint};
use crate::events::{Event, PartWriter};
use crate::localday::DayCursor;
use crate::logline::{decode_json, Call, CsvLayout, Reason};
use crate::pricing::Pricing;
use crate::setup::Setup;
use crate::store::{FileCounts, FileRow, Placed, Purged, Store, Unit};

mod pipeline;
use pipeline::Line;

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
    let mut ingester = Ingester::new(setup, now);
    for (os_name, name) in listing.files {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let path = inbox.join(&os_name);
        let outcome = ingester.ingest_file(store, &mut claims, &path, &name, now, stop);
        report.outcomes.push(outcome);
        // A long run writes its claims out now and then, bounding their memory.
        if claims.pending_len() >= MAX_PENDING_CLAIMS {
            claims.checkpoint(store)?;
        }
    }
    if let Err(e) = claims.checkpoint(store) {
        // The claims stay correct without it (the pending parts are read at the next load).
        tracing::error!("cannot write the request-id claims: {e:#}");
    }
    Ok(report)
}

/// The access-log entries of the inbox.
#[derive(Debug, Default)]
pub struct InboxListing {
    /// Regular files in name (byte) order: the name for IO, and its lossy text for display
    /// and the store.
    pub files: Vec<(OsString, String)>,
    /// Entries with an access-log name that are not regular files: (lossy name, kind).
    pub skipped: Vec<(String, &'static str)>,
}

/// Lists the inbox without following or opening anything: each entry's own type decides.
pub fn list_inbox(inbox: &Path) -> anyhow::Result<InboxListing> {
    let mut listing = InboxListing::default();
    let entries = std::fs::read_dir(inbox)
        .with_context(|| format!("cannot list the inbox {}", inbox.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list the inbox {}", inbox.display()))?;
        let os_name = entry.file_name();
        let name = os_name.to_string_lossy().into_owned();
        if classify(&name).is_none() {
            continue;
        }
        // The entry's own type (a symlink is a symlink, whatever it points to). An entry that
        // vanished since the listing is simply not there.
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        match entry_kind(file_type) {
            None => listing.files.push((os_name, name)),
            Some(kind) => listing.skipped.push((name, kind)),
        }
    }
    listing.files.sort();
    listing.skipped.sort();
    Ok(listing)
}

/// `None` for a regular file, else what the entry is.
fn entry_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("symlink")
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_socket() {
        Some("socket")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_char_device() {
        Some("character device")
    } else {
        Some("special file")
    }
}

/// Opens an inbox file for reading only if it is a regular file: a symlink is not followed
/// and a FIFO put in its place since the listing does not block the run.
pub fn open_regular(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(kind) = entry_kind(meta.file_type()) {
        anyhow::bail!(
            "cannot read {}: a {kind}, not a regular file",
            path.display()
        );
    }
    Ok(file)
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
    pub fn ingest_file(
        &mut self,
        store: &mut Store,
        claims: &mut Claims,
        path: &Path,
        name: &str,
        now: DateTime<Utc>,
        stop: &AtomicBool,
    ) -> Outcome {
        match self.try_ingest_file(store, claims, path, name, now, stop) {
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
                    status: "failed".to_string(),
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

    fn try_ingest_file(
        &mut self,
        store: &mut Store,
        claims: &mut Claims,
        path: &Path,
        name: &str,
        now: DateTime<Utc>,
        stop: &AtomicBool,
    ) -> anyhow::Result<Outcome> {
        let (format, gz) = classify(name).expect("listed files are access logs");
        let sha = sha256_file(path)?;
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
                    status: "duplicate_file".to_string(),
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
        let mut reader = LogReader::open(path, format, gz)?;
        pipeline::run(&mut reader, self.setup, self.now, threads, |batch| {
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
            tx.add_part(&part.path, &sha, &part.local_date.to_string(), part.rows)?;
        }
        for (org, date) in days
            .iter()
            .flat_map(|(o, ds)| ds.iter().map(move |d| (o, d)))
        {
            tx.mark_dirty(org, &date.to_string())?;
        }
        let row = FileRow {
            file: name.to_string(),
            sha256: sha,
            status: "ingested".to_string(),
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

/// How much of a quarantined line the store keeps; the archived file keeps all of it.
pub const QUARANTINE_KEEP: usize = 4096;

/// The text kept for a quarantined line: lossily decoded, at most [`QUARANTINE_KEEP`] bytes
/// of it, with a note of the full length when cut.
pub fn quarantine_text(bytes: &[u8]) -> String {
    if bytes.len() <= QUARANTINE_KEEP {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let kept = String::from_utf8_lossy(&bytes[..QUARANTINE_KEEP]);
    if bytes.len() > MAX_LINE {
        // The reader held only the start of the line.
        return format!("{kept}… (more than 1 MiB; the archived file has the whole line)");
    }
    format!(
        "{kept}… ({} bytes in all; the archived file has the whole line)",
        bytes.len()
    )
}

/// Reads the data lines of one access-log file: skips blank lines and a CSV header, strips
/// line ends and a leading byte-order mark, and decodes each line on its own.
pub struct LogReader {
    reader: BufReader<Box<dyn Read>>,
    path: PathBuf,
    buf: Vec<u8>,
    line_no: u64,
    decoder: Decoder,
}

/// How the data lines of one file decode: its format and, for CSV, the layout its header gave
/// (`Some(None)` for a header that could not be read: every line is then `malformed`).
#[derive(Debug, Clone)]
pub struct Decoder {
    format: Format,
    layout: Option<Option<CsvLayout>>,
}

impl Decoder {
    /// The call on a data line, or the reason it cannot be one; a line cut at [`MAX_LINE`]
    /// is `malformed`.
    pub fn decode<'a>(&self, bytes: &'a [u8], too_long: bool) -> Result<Call<'a>, Reason> {
        if too_long {
            return Err(Reason::Malformed);
        }
        match std::str::from_utf8(bytes) {
            Err(_) => Err(Reason::Malformed),
            Ok(line) => match (self.format, &self.layout) {
                (Format::Ndjson, _) => decode_json(line),
                (Format::Csv, Some(Some(l))) => l.decode(line),
                (Format::Csv, _) => Err(Reason::Malformed),
            },
        }
    }
}

impl LogReader {
    pub fn open(path: &Path, format: Format, gz: bool) -> anyhow::Result<LogReader> {
        let file = open_regular(path)?;
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        Ok(LogReader {
            reader: BufReader::with_capacity(1 << 20, reader),
            path: path.to_path_buf(),
            buf: Vec::new(),
            line_no: 0,
            decoder: Decoder {
                format,
                layout: None,
            },
        })
    }

    /// How this file's lines decode; a CSV file's layout is known once its first data line
    /// has been read.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The next data line: its number in the file, its bytes, and the decoded call or the
    /// reason it cannot be one. `None` at the end of the file. A line longer than
    /// [`MAX_LINE`] is `malformed`: only its first `MAX_LINE + 1` bytes are held, the rest is
    /// read past.
    #[allow(clippy::type_complexity)]
    pub fn next_line(&mut self) -> anyhow::Result<Option<(u64, &[u8], Result<Call<'_>, Reason>)>> {
        let Some((line_no, (start, end), too_long)) = self.next_data_line()? else {
            return Ok(None);
        };
        let bytes = &self.buf[start..end];
        Ok(Some((line_no, bytes, self.decoder.decode(bytes, too_long))))
    }

    /// The next data line undecoded: its number, its bytes and whether it was cut at
    /// [`MAX_LINE`]. `None` at the end of the file.
    pub fn next_raw(&mut self) -> anyhow::Result<Option<(u64, &[u8], bool)>> {
        Ok(self
            .next_data_line()?
            .map(|(line_no, (start, end), too_long)| (line_no, &self.buf[start..end], too_long)))
    }

    /// Reads up to the next data line (past blank lines and a CSV header): its number, its
    /// span in `buf` and whether it was cut.
    fn next_data_line(&mut self) -> anyhow::Result<Option<DataLine>> {
        loop {
            let Some(line) = self.read_line().with_context(|| {
                format!(
                    "cannot read {} after line {}",
                    self.path.display(),
                    self.line_no
                )
            })?
            else {
                return Ok(None);
            };
            self.line_no += 1;
            if line.blank {
                continue;
            }
            let span = trimmed(&self.buf, self.line_no == 1);
            if self.decoder.format == Format::Csv && self.decoder.layout.is_none() {
                // The first non-blank line is the header; an unreadable header makes every
                // line of the file malformed rather than guessed at.
                let text = std::str::from_utf8(&self.buf[span.0..span.1]).ok();
                self.decoder.layout = Some(
                    text.filter(|_| !line.too_long)
                        .and_then(CsvLayout::from_header),
                );
                continue;
            }
            return Ok(Some((self.line_no, span, line.too_long)));
        }
    }

    /// Reads one line into `buf`, line end included, holding at most `MAX_LINE` bytes of it
    /// besides a line end and a byte-order mark; `None` at the end of the file.
    fn read_line(&mut self) -> std::io::Result<Option<LineRead>> {
        self.buf.clear();
        let first = self.line_no == 0;
        let limit = MAX_LINE + 2 + if first { 3 } else { 0 };
        let n = (&mut self.reader)
            .take(limit as u64)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        let cut = n == limit && !self.buf.ends_with(b"\n");
        // The rest of a cut line is read past, never held; it may still make it non-blank.
        let mut rest_blank = true;
        if cut {
            loop {
                let available = match self.reader.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if available.is_empty() {
                    break;
                }
                let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
                    Some(i) => (&available[..i], true),
                    None => (available, false),
                };
                rest_blank = rest_blank && chunk.iter().all(u8::is_ascii_whitespace);
                let used = chunk.len() + usize::from(done);
                self.reader.consume(used);
                if done {
                    break;
                }
            }
        }
        let (start, end) = trimmed(&self.buf, first);
        Ok(Some(LineRead {
            too_long: cut || end - start > MAX_LINE,
            blank: rest_blank && self.buf[start..end].iter().all(u8::is_ascii_whitespace),
        }))
    }
}

/// The longest line decoded (DESIGN §2.1): 1 MiB, line end excluded.
pub const MAX_LINE: usize = 1 << 20;

/// A data line's number, span in the reader's buffer, and whether it was cut at [`MAX_LINE`].
type DataLine = (u64, (usize, usize), bool);

/// What [`LogReader::read_line`] found besides the bytes.
struct LineRead {
    too_long: bool,
    blank: bool,
}

/// The span of a line without its line end (and, on the first line, a byte-order mark some
/// writers put first).
fn trimmed(buf: &[u8], first: bool) -> (usize, usize) {
    let mut end = buf.len();
    if buf[..end].ends_with(b"\n") {
        end -= 1;
    }
    if buf[..end].ends_with(b"\r") {
        end -= 1;
    }
    let start = if first && buf[..end].starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    (start, end)
}

fn stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
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

#[cfg(test)]
mod long_lines {
    use super::*;
    use std::io::Write;

    fn call(rid: &str) -> Vec<u8> {
        format!("{{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"{rid}\",\"org_id\":\"1\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}}").into_bytes()
    }

    /// A valid call whose line is exactly `len` bytes long (its path padded).
    fn call_of_len(rid: &str, len: usize) -> Vec<u8> {
        let short = call(rid);
        let pad = len - short.len();
        let line = String::from_utf8(short).unwrap();
        line.replace("\"/x\"", &format!("\"/x{}\"", "y".repeat(pad)))
            .into_bytes()
    }

    /// Reads every outcome of a file: (line number, bytes held, request id or reason).
    fn outcomes(bytes: &[u8], format: Format, gz: bool) -> (Vec<(u64, usize, String)>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        if gz {
            let mut enc =
                flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(&path, bytes).unwrap();
        }
        let mut reader = LogReader::open(&path, format, gz).unwrap();
        let mut out = Vec::new();
        while let Some((line, held, decoded)) = reader.next_line().unwrap() {
            let what = match decoded {
                Ok(call) => call.request_id.to_string(),
                Err(r) => r.to_string(),
            };
            out.push((line, held.len(), what));
        }
        (out, reader.buf.capacity())
    }

    #[test]
    fn a_line_over_1_mib_is_malformed_alone_and_never_held_whole() {
        for gz in [false, true] {
            let mut file = Vec::new();
            file.extend(call("a"));
            file.push(b'\n');
            // 20 MiB on one line, with the start of a valid call.
            file.extend(call_of_len("big", 20 << 20));
            file.push(b'\n');
            // 2 MiB of blanks is a blank line: skipped, not counted.
            file.extend(vec![b' '; 2 << 20]);
            file.push(b'\n');
            // Blanks up to 1 MiB, then text: not blank, too long.
            file.extend(vec![b' '; 1 << 20]);
            file.extend(b"x\r\n");
            file.extend(call("b"));
            file.push(b'\n');
            let (got, capacity) = outcomes(&file, Format::Ndjson, gz);
            let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
            assert_eq!(
                kinds,
                [(1, "a"), (2, "malformed"), (4, "malformed"), (5, "b")],
                "gz {gz}"
            );
            assert!(got[1].1 <= MAX_LINE + 2, "held {} bytes", got[1].1);
            assert!(got[1].1 > QUARANTINE_KEEP);
            assert!(
                capacity <= 4 << 20,
                "the line buffer grew to {capacity} bytes"
            );
        }
    }

    #[test]
    fn exactly_1_mib_is_a_line_one_byte_more_is_not() {
        let mut file = Vec::new();
        file.extend(b"\xEF\xBB\xBF");
        file.extend(call_of_len("bom", MAX_LINE));
        file.extend(b"\r\n");
        file.extend(call_of_len("crlf", MAX_LINE));
        file.extend(b"\r\n");
        file.extend(call_of_len("long", MAX_LINE + 1));
        file.extend(b"\n");
        file.extend(call_of_len("last", MAX_LINE));
        let (got, _) = outcomes(&file, Format::Ndjson, false);
        let kinds: Vec<(u64, usize, &str)> =
            got.iter().map(|(l, n, w)| (*l, *n, w.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (1, MAX_LINE, "bom"),
                (2, MAX_LINE, "crlf"),
                (3, MAX_LINE + 1, "malformed"),
                (4, MAX_LINE, "last"),
            ]
        );
    }

    #[test]
    fn csv_long_lines_and_a_long_header() {
        let header = "ts,request_id,org_id,method,path,status\n";
        let row = |rid: &str, path: &str| format!("2025-10-08T10:00:00Z,{rid},1,GET,{path},200\n");
        let mut file = String::from(header);
        file.push_str(&row("a", "/x"));
        file.push_str(&row("big", &"/y".repeat(1 << 20)));
        file.push_str(&row("b", "/x"));
        let (got, _) = outcomes(file.as_bytes(), Format::Csv, true);
        let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
        assert_eq!(kinds, [(2, "a"), (3, "malformed"), (4, "b")]);

        // A header over 1 MiB is unreadable: every line is malformed, none is guessed at.
        let mut file = format!("{}{}", "x".repeat(2 << 20), header);
        file.push_str(&row("a", "/x"));
        let (got, _) = outcomes(file.as_bytes(), Format::Csv, false);
        let kinds: Vec<(u64, &str)> = got.iter().map(|(l, _, w)| (*l, w.as_str())).collect();
        assert_eq!(kinds, [(2, "malformed")]);
    }

    #[test]
    fn the_quarantine_keeps_4_kib_of_a_long_line() {
        let text = quarantine_text(&vec![b'x'; MAX_LINE + 1]);
        assert!(text.starts_with(&"x".repeat(QUARANTINE_KEEP)));
        assert!(text.ends_with("… (more than 1 MiB; the archived file has the whole line)"));
        let text = quarantine_text(&vec![b'x'; 5000]);
        assert!(text.ends_with("… (5000 bytes in all; the archived file has the whole line)"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes — invalid UTF-8, CR, BOM, NUL — yield exactly one outcome (a call
        /// or a reason) per non-blank line: nothing is skipped, nothing is invented.
        #[test]
        fn every_non_blank_line_has_exactly_one_outcome(
            lines in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..60),
                    Just(b"{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"r\",\"org_id\":\"1\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}".to_vec()),
                    Just(b"\xEF\xBB\xBF".to_vec()),
                    Just(b"   \r".to_vec()),
                ],
                0..40,
            ),
            csv in any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            for l in &lines {
                bytes.extend(l.iter().map(|b| if *b == b'\n' { b' ' } else { *b }));
                bytes.push(b'\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, &bytes).unwrap();
            let format = if csv { Format::Csv } else { Format::Ndjson };
            let mut reader = LogReader::open(&path, format, false).unwrap();
            let mut outcomes = 0;
            while let Some((_, _, decoded)) = reader.next_line().unwrap() {
                if let Err(r) = decoded {
                    prop_assert!(Reason::ALL.contains(&r));
                }
                outcomes += 1;
            }
            let mut expected = 0;
            for (i, l) in lines.iter().enumerate() {
                let mut l: Vec<u8> = l.iter().map(|b| if *b == b'\n' { b' ' } else { *b }).collect();
                if i == 0 && l.starts_with(b"\xEF\xBB\xBF") {
                    l.drain(..3);
                }
                if l.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                expected += 1;
            }
            // A CSV file's first non-blank line is its header.
            if csv && expected > 0 {
                expected -= 1;
            }
            prop_assert_eq!(outcomes, expected);
        }
    }
}
