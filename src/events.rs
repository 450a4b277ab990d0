//! The priced-event store: Parquet files partitioned by org-local day, and the polars query
//! that turns one day's events into ledger figures and threshold crossings.
//!
//! Layout: `state/events/local_date=YYYY-MM-DD/<file sha256 prefix>.parquet`, one part per
//! input file and day (more, `<prefix>.<n>.parquet`, when a file touches more days than a
//! writer keeps open: [`MAX_OPEN_PARTS`]), readable by DuckDB, Spark or Trino. A part becomes visible only when the
//! store lists it (in the same transaction as the file's claims), so a crash can leave an
//! orphan file behind but never a half-counted one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::NaiveDate;
use polars::prelude::*;

/// The columns of a priced event.
pub const EVENT_COLUMNS: [&str; 15] = [
    "request_id",
    "org_id",
    "ts",
    "local_date",
    "method",
    "endpoint",
    "status",
    "billable",
    "credits",
    "unpriced",
    "latency_ms",
    "charged_credits",
    "dc",
    "file",
    "line",
];

/// One priced, localized, unique call.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub request_id: &'a str,
    pub org_id: &'a str,
    pub ts_ms: i64,
    pub local_date: NaiveDate,
    pub method: &'static str,
    pub endpoint: std::sync::Arc<str>,
    pub status: u16,
    pub billable: bool,
    pub credits: u64,
    pub unpriced: bool,
    pub latency_ms: Option<i64>,
    pub charged_credits: Option<i64>,
    pub dc: Option<&'a str>,
    /// The sha256 of the input file the call came from, and its line there.
    pub file: &'a str,
    pub line: u64,
}

/// A string column buffer: the strings back to back in one allocation, and where each ends
/// (`None` for a null), so a row costs no allocation of its own.
#[derive(Default)]
struct Strings {
    bytes: String,
    ends: Vec<Option<usize>>,
}

impl Strings {
    fn push(&mut self, s: Option<&str>) {
        self.ends.push(s.map(|s| {
            self.bytes.push_str(s);
            self.bytes.len()
        }));
    }

    fn column(&self, name: &str) -> Column {
        let mut start = 0;
        let values: Vec<Option<&str>> = self
            .ends
            .iter()
            .map(|end| {
                end.map(|end| {
                    let s = &self.bytes[start..end];
                    start = end;
                    s
                })
            })
            .collect();
        if values.iter().all(Option::is_some) {
            Column::new(
                name.into(),
                values.into_iter().flatten().collect::<Vec<&str>>(),
            )
        } else {
            Column::new(name.into(), values)
        }
    }
}

/// Column buffers for one batch of events of one day.
#[derive(Default)]
struct Columns {
    request_id: Strings,
    org_id: Strings,
    ts: Vec<i64>,
    method: Vec<&'static str>,
    endpoint: Strings,
    status: Vec<i32>,
    billable: Vec<bool>,
    credits: Vec<i64>,
    unpriced: Vec<bool>,
    latency_ms: Vec<Option<i64>>,
    charged_credits: Vec<Option<i64>>,
    dc: Strings,
    file: Strings,
    line: Vec<i64>,
}

impl Columns {
    fn push(&mut self, e: &Event<'_>) {
        self.request_id.push(Some(e.request_id));
        self.org_id.push(Some(e.org_id));
        self.ts.push(e.ts_ms);
        self.method.push(e.method);
        self.endpoint.push(Some(&e.endpoint));
        self.status.push(e.status as i32);
        self.billable.push(e.billable);
        self.credits.push(e.credits as i64);
        self.unpriced.push(e.unpriced);
        self.latency_ms.push(e.latency_ms);
        self.charged_credits.push(e.charged_credits);
        self.dc.push(e.dc);
        self.file.push(Some(e.file));
        self.line.push(e.line as i64);
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    fn take_frame(&mut self, date: NaiveDate) -> PolarsResult<DataFrame> {
        let c = std::mem::take(self);
        let n = c.ts.len();
        let days = date
            .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid"))
            .num_days() as i32;
        let local_date = Column::new("local_date".into(), vec![days; n]).cast(&DataType::Date)?;
        DataFrame::new(
            n,
            vec![
                c.request_id.column("request_id"),
                c.org_id.column("org_id"),
                Column::new("ts".into(), c.ts),
                local_date,
                Column::new("method".into(), c.method),
                c.endpoint.column("endpoint"),
                Column::new("status".into(), c.status),
                Column::new("billable".into(), c.billable),
                Column::new("credits".into(), c.credits),
                Column::new("unpriced".into(), c.unpriced),
                Column::new("latency_ms".into(), c.latency_ms),
                Column::new("charged_credits".into(), c.charged_credits),
                c.dc.column("dc"),
                c.file.column("file"),
                Column::new("line".into(), c.line),
            ],
        )
    }
}

/// A part written for one input file and day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub local_date: NaiveDate,
    /// Relative to the state directory.
    pub path: String,
    pub rows: u64,
}

struct OpenPart {
    writer: polars::io::parquet::write::BatchedWriter<SharedFile>,
    file: SharedFile,
    tmp: PathBuf,
    path: String,
    rows: u64,
}

/// A part's file, buffered ([`WRITE_BUFFER`]). Shared so that the buffer can be flushed, and its errors seen, once the writer is done.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl SharedFile {
    fn flush_and_sync(&self) -> anyhow::Result<()> {
        let mut file = self.0.lock().expect("never poisoned: writes do not panic");
        file.flush()?;
        file.get_ref().sync_all()?;
        Ok(())
    }
}

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("never poisoned").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("never poisoned").flush()
    }
}

/// The write buffer of a Parquet file: polars' writer writes page headers a few bytes at a
/// time.
const WRITE_BUFFER: usize = 1 << 20;

/// What the writing thread is told.
enum ToWriter {
    Batch(NaiveDate, Box<Columns>),
    /// Finish every part and move it into place. Without it (the sender dropped), the parts are
    /// abandoned and their temporary files removed.
    Finish,
}

/// Writes the events of one input file into per-day Parquet parts, in bounded batches.
///
/// Encoding and compressing Parquet runs on a thread of its own, fed through a channel of two
/// batches, while the caller goes on decoding lines: memory stays bounded by the batch size.
pub struct PartWriter {
    buffers: BTreeMap<NaiveDate, Columns>,
    buffered: usize,
    to_writer: Option<std::sync::mpsc::SyncSender<ToWriter>>,
    writer: Option<std::thread::JoinHandle<anyhow::Result<Vec<Part>>>>,
}

/// Rows buffered before a day's buffer is handed to the writer (as one row group). Small, so
/// that encoding overlaps decoding even in a file of a few thousand lines: with a whole file
/// in one batch, the writer waited for the reader and then the reader for the writer.
const BATCH_ROWS: usize = 4 * 1024;

/// The fewest rows of one day handed over as a row group, unless memory forces it: a file
/// spread over many days still makes row groups worth reading.
const MIN_GROUP_ROWS: usize = 1024;

/// Rows buffered over all days before every buffer is handed over, which bounds memory for a
/// file that spans many days.
const BUFFERED_ROWS: usize = 64 * 1024;

impl PartWriter {
    pub fn new(state_dir: &Path, file_sha: &str) -> PartWriter {
        let (to_writer, batches) = std::sync::mpsc::sync_channel(2);
        let state_dir = state_dir.to_path_buf();
        let file_sha = file_sha.to_string();
        let writer = std::thread::Builder::new()
            .name("parquet-writer".into())
            .spawn(move || write_parts(&state_dir, &file_sha, batches))
            .expect("a thread can be started");
        PartWriter {
            buffers: BTreeMap::new(),
            buffered: 0,
            to_writer: Some(to_writer),
            writer: Some(writer),
        }
    }

    pub fn push(&mut self, e: &Event<'_>) -> anyhow::Result<()> {
        let day = self.buffers.entry(e.local_date).or_default();
        day.push(e);
        self.buffered += 1;
        if self.buffered >= BUFFERED_ROWS {
            self.flush()?;
        } else if self.buffered >= BATCH_ROWS && day.len() >= MIN_GROUP_ROWS {
            let cols = std::mem::take(day);
            self.buffered -= cols.len();
            self.send(ToWriter::Batch(e.local_date, Box::new(cols)))?;
        }
        Ok(())
    }

    fn send(&mut self, message: ToWriter) -> anyhow::Result<()> {
        let sent = self
            .to_writer
            .as_ref()
            .map(|s| s.send(message).is_ok())
            .unwrap_or(false);
        if sent {
            return Ok(());
        }
        // The writer stopped early: its error says why.
        self.to_writer = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => anyhow::bail!("the Parquet writer panicked"),
            _ => anyhow::bail!("the Parquet writer stopped"),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for (date, cols) in std::mem::take(&mut self.buffers) {
            if cols.len() > 0 {
                self.send(ToWriter::Batch(date, Box::new(cols)))?;
            }
        }
        self.buffered = 0;
        Ok(())
    }

    /// Finishes every part and moves it into place; returns what was written.
    pub fn finish(mut self) -> anyhow::Result<Vec<Part>> {
        self.flush()?;
        self.send(ToWriter::Finish)?;
        self.to_writer = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the Parquet writer panicked"),
            None => anyhow::bail!("the Parquet writer stopped"),
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // An abandoned file leaves no temporary parts behind: the writer removes them once the
        // channel closes without `Finish`, and is waited for here.
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The most parts one [`PartWriter`] keeps open at once. A file touching more days than this
/// closes the least recently written part to open another; a closed day that gets more rows
/// later gets another part. Each open part holds a file descriptor and up to [`WRITE_BUFFER`]
/// of memory, so this bounds both, far below systemd's default soft limit of 1024 files.
pub const MAX_OPEN_PARTS: usize = 64;

/// A part whose file is complete and synced, still under its temporary name until every part
/// of the input file is done.
struct ClosedPart {
    local_date: NaiveDate,
    tmp: PathBuf,
    path: String,
    rows: u64,
}

/// The writing thread's parts: at most [`MAX_OPEN_PARTS`] open, the others closed.
struct Parts<'a> {
    state_dir: &'a Path,
    name: &'a str,
    open: HashMap<NaiveDate, (OpenPart, u64)>,
    closed: Vec<ClosedPart>,
    /// Parts started so far per day, which numbers the next one.
    started: HashMap<NaiveDate, u32>,
    /// Counts writes; an open part remembers its last one, so the least recently written
    /// part is the one with the smallest.
    clock: u64,
}

impl Parts<'_> {
    fn write(&mut self, date: NaiveDate, cols: &mut Columns) -> anyhow::Result<()> {
        let df = cols.take_frame(date)?;
        self.clock += 1;
        if !self.open.contains_key(&date) {
            if self.open.len() >= MAX_OPEN_PARTS {
                let lru = self
                    .open
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(d, _)| *d)
                    .expect("MAX_OPEN_PARTS > 0");
                let (part, _) = self.open.remove(&lru).expect("just found");
                self.close(lru, part)?;
            }
            let part = self.start(date, df.schema())?;
            self.open.insert(date, (part, 0));
        }
        let (part, used) = self.open.get_mut(&date).expect("opened");
        *used = self.clock;
        part.writer.write_batch(&df)?;
        part.rows += df.height() as u64;
        Ok(())
    }

    /// Creates the next part of `date` under its temporary name.
    fn start(&mut self, date: NaiveDate, schema: &SchemaRef) -> anyhow::Result<OpenPart> {
        let seq = self.started.entry(date).or_insert(0);
        let rel = part_path(date, self.name, *seq);
        *seq += 1;
        let path = self.state_dir.join(&rel);
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = path.with_extension("parquet.tmp");
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let file = SharedFile(Arc::new(Mutex::new(BufWriter::with_capacity(
            WRITE_BUFFER,
            f,
        ))));
        // From here on a failure leaves `tmp` to be removed: it is the caller's once returned,
        // and removed here otherwise.
        let writer = match ParquetWriter::new(file.clone())
            .with_compression(ParquetCompression::Zstd(None))
            .batched(schema)
        {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        Ok(OpenPart {
            writer,
            file,
            tmp,
            path: rel,
            rows: 0,
        })
    }

    /// Finishes `part` and closes its file; it keeps its temporary name.
    fn close(&mut self, date: NaiveDate, part: OpenPart) -> anyhow::Result<()> {
        let tmp = part.tmp.clone();
        let result = part
            .writer
            .finish()
            .map_err(anyhow::Error::from)
            .and_then(|_| part.file.flush_and_sync())
            .with_context(|| format!("cannot write {}", tmp.display()));
        // Dropping the writer and the last handle of the file closes it.
        let OpenPart {
            tmp, path, rows, ..
        } = part;
        self.closed.push(ClosedPart {
            local_date: date,
            tmp,
            path,
            rows,
        });
        result
    }

    /// Closes every part and moves them all into place, by day and then in the order written.
    fn finish(&mut self) -> anyhow::Result<Vec<Part>> {
        let mut open: Vec<(NaiveDate, OpenPart)> =
            self.open.drain().map(|(d, (p, _))| (d, p)).collect();
        open.sort_by_key(|(d, _)| *d);
        // Closed one by one: on a failure the parts not closed yet are still listed for removal.
        while let Some((date, part)) = open.pop() {
            if let Err(e) = self.close(date, part) {
                for (local_date, part) in open {
                    self.closed.push(ClosedPart {
                        local_date,
                        tmp: part.tmp,
                        path: part.path,
                        rows: part.rows,
                    });
                }
                return Err(e);
            }
        }
        let mut done = std::mem::take(&mut self.closed);
        done.sort_by(|a, b| (a.local_date, &a.path).cmp(&(b.local_date, &b.path)));
        let mut parts = Vec::with_capacity(done.len());
        let mut done = done.into_iter();
        while let Some(part) = done.next() {
            if let Err(e) = std::fs::rename(&part.tmp, self.state_dir.join(&part.path))
                .with_context(|| format!("cannot move {} into place", part.tmp.display()))
            {
                let _ = std::fs::remove_file(&part.tmp);
                self.closed.extend(done);
                return Err(e);
            }
            parts.push(Part {
                local_date: part.local_date,
                path: part.path,
                rows: part.rows,
            });
        }
        Ok(parts)
    }

    /// Removes the temporary file of every part not moved into place.
    fn abandon(&mut self) {
        for (part, _) in self.open.values() {
            let _ = std::fs::remove_file(&part.tmp);
        }
        for part in &self.closed {
            let _ = std::fs::remove_file(&part.tmp);
        }
    }
}

/// The writing thread: parts written batch by batch, at most [`MAX_OPEN_PARTS`] open.
fn write_parts(
    state_dir: &Path,
    file_sha: &str,
    batches: std::sync::mpsc::Receiver<ToWriter>,
) -> anyhow::Result<Vec<Part>> {
    let mut parts = Parts {
        state_dir,
        name: &file_sha[..16.min(file_sha.len())],
        open: HashMap::new(),
        closed: Vec::new(),
        started: HashMap::new(),
        clock: 0,
    };
    let result = (|| {
        loop {
            match batches.recv() {
                Ok(ToWriter::Batch(date, mut cols)) => parts.write(date, &mut cols)?,
                Ok(ToWriter::Finish) => break,
                Err(_) => anyhow::bail!("abandoned"),
            }
        }
        parts.finish()
    })();
    if result.is_err() {
        parts.abandon();
    }
    result
}

/// Where part `seq` (from 0) of the events named `name` on `date` lives, relative to the
/// state directory: `<name>.parquet`, then `<name>.<seq>.parquet`.
fn part_path(date: NaiveDate, name: &str, seq: u32) -> String {
    if seq == 0 {
        format!("events/local_date={date}/{name}.parquet")
    } else {
        format!("events/local_date={date}/{name}.{seq}.parquet")
    }
}

/// Where a backfill named `token` puts the events of `date` it keeps (those of the orgs it
/// does not recompute), relative to the state directory.
pub fn kept_part_path(date: NaiveDate, token: &str) -> String {
    format!("events/local_date={date}/{token}-kept.parquet")
}

/// Scans the given parts (paths relative to `state_dir`) lazily.
pub fn scan_parts(state_dir: &Path, parts: &[String]) -> PolarsResult<LazyFrame> {
    let paths: Vec<PlRefPath> = parts
        .iter()
        .map(|p| PlRefPath::new(state_dir.join(p).to_string_lossy().as_ref()))
        .collect();
    LazyFrame::scan_parquet_files(paths.into_iter().collect(), ScanArgsParquet::default())
}

/// `org_id` is one of `orgs`.
fn org_in(orgs: &[String]) -> Expr {
    orgs.iter()
        .map(|o| col("org_id").eq(lit(o.as_str())))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false))
}

/// (file sha256, line, request id) of every event in `parts` of one of `orgs` (all when empty).
pub fn event_keys(
    state_dir: &Path,
    parts: &[String],
    orgs: &[String],
) -> anyhow::Result<Vec<(String, u64, String)>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut lf = scan_parts(state_dir, parts)?;
    if !orgs.is_empty() {
        lf = lf.filter(org_in(orgs));
    }
    let df = lf
        .select([col("file"), col("line"), col("request_id")])
        .collect()?;
    let files = df.column("file")?.str()?.clone();
    let lines = df.column("line")?.i64()?.clone();
    let ids = df.column("request_id")?.str()?.clone();
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        out.push((
            files.get(i).unwrap_or_default().to_string(),
            lines.get(i).unwrap_or(0) as u64,
            ids.get(i).unwrap_or_default().to_string(),
        ));
    }
    Ok(out)
}

/// Writes the events of `parts` (relative to `src`) whose org is not one of `drop_orgs` to
/// `rel` (relative to `dst`, through a temporary file); returns how many rows it holds, and
/// writes nothing when there are none.
pub fn write_kept(
    src: &Path,
    parts: &[String],
    drop_orgs: &[String],
    dst: &Path,
    rel: &str,
) -> anyhow::Result<u64> {
    if parts.is_empty() {
        return Ok(0);
    }
    let mut df = scan_parts(src, parts)?
        .filter(org_in(drop_orgs).not())
        .collect()?;
    if df.height() == 0 {
        return Ok(0);
    }
    let path = dst.join(rel);
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("parquet.tmp");
    let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut f = BufWriter::with_capacity(WRITE_BUFFER, f);
    ParquetWriter::new(&mut f)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(df.height() as u64)
}

/// The `limit` endpoints with the most unpriced calls: (endpoint, calls), most first.
fn unpriced_endpoints(events: LazyFrame, limit: IdxSize) -> PolarsResult<Vec<(String, u64)>> {
    let df = events
        .filter(col("unpriced"))
        .group_by([col("endpoint")])
        .agg([len().cast(DataType::Int64).alias("calls")])
        .sort_by_exprs(
            [col("calls"), col("endpoint")],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(limit)
        .collect()?;
    let names = df.column("endpoint")?.str()?;
    let calls = df.column("calls")?.i64()?;
    Ok((0..df.height())
        .map(|i| {
            (
                names.get(i).unwrap_or_default().to_string(),
                calls.get(i).unwrap_or(0) as u64,
            )
        })
        .collect())
}

/// What an org-day is measured against, for the reconcile query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub org_id: String,
    /// Legacy days count billable calls; the others count credits.
    pub legacy: bool,
    pub allotted: u64,
}

/// The figures of one org-day computed from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFigures {
    pub org_id: String,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub used: u64,
    pub unpriced_calls: u64,
    /// (threshold, ts, request_id) for each configured threshold reached, and 100 for the
    /// call that took the total above the allotment.
    pub crossings: Vec<(u64, i64, String)>,
}

/// Reconciles one local day: `events` holds that day's events (any orgs); `measures` names
/// the orgs to compute and their allotments. Calls are ordered by `ts`, then `request_id`.
pub fn reconcile_day(
    events: LazyFrame,
    measures: &[Measure],
    thresholds: &[u64],
) -> PolarsResult<Vec<DayFigures>> {
    if measures.is_empty() {
        return Ok(Vec::new());
    }
    let mut term_columns = vec![
        Column::new(
            "org_id".into(),
            measures
                .iter()
                .map(|m| m.org_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "legacy".into(),
            measures.iter().map(|m| m.legacy).collect::<Vec<_>>(),
        ),
        Column::new(
            "allotted".into(),
            measures
                .iter()
                .map(|m| i64::try_from(m.allotted).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        ),
    ];
    // The least total that reaches t %: 100 × used ≥ t × allotted exactly when used ≥
    // ⌈t × allotted / 100⌉, worked out here in u128 because t × allotted overflows i64 for
    // allotments that the bounds allow (up to about 10^18).
    for t in thresholds {
        term_columns.push(Column::new(
            format!("need{t}").into(),
            measures
                .iter()
                .map(|m| {
                    let need = (u128::from(m.allotted) * u128::from(*t)).div_ceil(100);
                    i64::try_from(need).unwrap_or(i64::MAX)
                })
                .collect::<Vec<_>>(),
        ));
    }
    let term_names: Vec<Expr> = term_columns.iter().map(|c| col(c.name().clone())).collect();
    let terms = DataFrame::new(measures.len(), term_columns)?;
    let units = when(col("billable"))
        .then(
            when(col("legacy"))
                .then(lit(1i64))
                .otherwise(col("credits")),
        )
        .otherwise(lit(0i64));
    let mut firsts = Vec::new();
    let mut crossing_names = Vec::new();
    let mut crossing_at = |name: String, pred: Expr| {
        firsts.push(
            col("ts")
                .filter(pred.clone())
                .first()
                .alias(format!("{name}_ts")),
        );
        firsts.push(
            col("request_id")
                .filter(pred)
                .first()
                .alias(format!("{name}_rid")),
        );
        crossing_names.push(name);
    };
    // An org-day reaches a threshold at all exactly when its total does: units are never
    // negative, so the running total only rises.
    let mut reaches = col("used").gt(col("allotted"));
    for t in thresholds {
        crossing_at(
            format!("near{t}"),
            col("running")
                .gt_eq(col(format!("need{t}")))
                .and(col("units").gt(lit(0i64))),
        );
        reaches = reaches.or(col("used").gt_eq(col(format!("need{t}"))));
    }
    crossing_at(
        "over".to_string(),
        col("running")
            .gt(col("allotted"))
            .and(col("units").gt(lit(0i64))),
    );

    let calls = events
        .select([
            col("org_id"),
            col("ts"),
            col("request_id"),
            col("billable"),
            col("credits"),
            col("unpriced"),
        ])
        // Only the measured orgs' calls are held: often a few orgs of a day of many.
        .filter(col("org_id").is_in(
            lit(terms.column("org_id")?.as_materialized_series().clone()).implode(false),
            false,
        ))
        .collect()?;
    // The day's figures need no order: sums per org, then the org's terms (used = billable
    // calls on legacy days, else their credits).
    let figures = calls
        .clone()
        .lazy()
        .group_by([col("org_id")])
        .agg([
            len().cast(DataType::Int64).alias("calls"),
            col("billable")
                .cast(DataType::Int64)
                .sum()
                .alias("billable_calls"),
            col("credits")
                .filter(col("billable"))
                .sum()
                .alias("credits"),
            col("unpriced")
                .cast(DataType::Int64)
                .sum()
                .alias("unpriced_calls"),
        ])
        .join(
            terms.lazy(),
            [col("org_id")],
            [col("org_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_column(
            when(col("legacy"))
                .then(col("billable_calls"))
                .otherwise(col("credits"))
                .alias("used"),
        )
        .collect()?;
    // The crossings need each org's calls in call order (`ts`, then `request_id`), but only
    // of the orgs that reach a threshold: most org-days do not, and sorting is the costly step.
    let reaching = figures.clone().lazy().filter(reaches).select(term_names);
    let crossings = calls
        .lazy()
        .join(
            reaching,
            [col("org_id")],
            [col("org_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_column(units.alias("units"))
        // An integer first key settles almost every comparison without strings.
        .sort_by_exprs(
            [col("ts"), col("request_id")],
            SortMultipleOptions::default(),
        )
        // The running totals are per org (`over`); each org's rows keep the call order.
        .with_column(
            col("units")
                .cum_sum(false)
                .over([col("org_id")])?
                .alias("running"),
        )
        .group_by([col("org_id")])
        .agg(firsts);
    let df = figures
        .lazy()
        .join(
            crossings,
            [col("org_id")],
            [col("org_id")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["org_id"], SortMultipleOptions::default())
        .collect()?;

    let org = df.column("org_id")?.str()?.clone();
    let num = |name: &str| -> PolarsResult<Int64Chunked> {
        Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.clone())
    };
    let calls = num("calls")?;
    let billable = num("billable_calls")?;
    let credits = num("credits")?;
    let used = num("used")?;
    let unpriced = num("unpriced_calls")?;
    let mut crossing_cols = Vec::new();
    for (i, name) in crossing_names.iter().enumerate() {
        let threshold = thresholds.get(i).copied().unwrap_or(100);
        crossing_cols.push((
            threshold,
            num(&format!("{name}_ts"))?,
            df.column(&format!("{name}_rid"))?.str()?.clone(),
        ));
    }
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut crossings = Vec::new();
        for (t, ts, rid) in &crossing_cols {
            if let (Some(ts), Some(rid)) = (ts.get(i), rid.get(i)) {
                crossings.push((*t, ts, rid.to_string()));
            }
        }
        out.push(DayFigures {
            org_id: org.get(i).unwrap_or_default().to_string(),
            calls: calls.get(i).unwrap_or(0) as u64,
            billable_calls: billable.get(i).unwrap_or(0) as u64,
            credits: credits.get(i).unwrap_or(0) as u64,
            used: used.get(i).unwrap_or(0) as u64,
            unpriced_calls: unpriced.get(i).unwrap_or(0) as u64,
            crossings,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events as (org, ts, request_id, billable, credits).
    fn frame(rows: &[(&str, i64, &str, bool, i64)]) -> LazyFrame {
        let n = rows.len();
        DataFrame::new(
            n,
            vec![
                Column::new(
                    "org_id".into(),
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                ),
                Column::new("ts".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
                Column::new(
                    "request_id".into(),
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                ),
                Column::new(
                    "billable".into(),
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                ),
                Column::new(
                    "credits".into(),
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                ),
                Column::new("unpriced".into(), vec![false; n]),
            ],
        )
        .unwrap()
        .lazy()
    }

    fn measure(org: &str, legacy: bool, allotted: u64) -> Measure {
        Measure {
            org_id: org.to_string(),
            legacy,
            allotted,
        }
    }

    #[test]
    fn crossings_follow_ts_then_request_id() {
        // Allotment 10: 8 reached by "b" (tie on ts broken by request id), above 10 by "d".
        let events = frame(&[
            ("1", 300, "d", true, 3),
            ("1", 100, "b", true, 4),
            ("1", 100, "a", true, 4),
            ("1", 200, "c", false, 50),
            ("1", 250, "c2", true, 2),
        ]);
        let figs = reconcile_day(events, &[measure("1", false, 10)], &[80, 90]).unwrap();
        assert_eq!(figs.len(), 1);
        let f = &figs[0];
        assert_eq!(
            (f.calls, f.billable_calls, f.credits, f.used),
            (5, 4, 13, 13)
        );
        assert_eq!(
            f.crossings,
            vec![
                (80, 100, "b".to_string()),
                (90, 250, "c2".to_string()),
                (100, 300, "d".to_string())
            ]
        );
    }

    #[test]
    fn legacy_days_count_billable_calls() {
        let events = frame(&[
            ("2", 1, "a", true, 50),
            ("2", 2, "b", false, 50),
            ("2", 3, "c", true, 50),
            ("2", 4, "d", true, 50),
            ("3", 1, "x", true, 50),
        ]);
        let figs = reconcile_day(events, &[measure("2", true, 2)], &[80]).unwrap();
        assert_eq!(figs.len(), 1, "only the measured org");
        let f = &figs[0];
        assert_eq!(
            (f.calls, f.billable_calls, f.credits, f.used),
            (4, 3, 150, 3)
        );
        assert_eq!(
            f.crossings,
            vec![(80, 3, "c".to_string()), (100, 4, "d".to_string())]
        );
    }

    #[test]
    fn orgs_below_every_threshold_are_summed_without_crossings() {
        // "5" stays under 80 % (only its billable credits count); legacy "6" reaches 80 % of
        // its two calls and goes above them; "7" reaches exactly 80 % with its last call.
        let events = frame(&[
            ("5", 3, "a", true, 4),
            ("5", 1, "b", false, 90),
            ("5", 2, "c", true, 3),
            ("6", 2, "d", true, 9),
            ("6", 1, "e", true, 9),
            ("6", 3, "f", true, 9),
            ("7", 1, "g", true, 4),
            ("7", 2, "h", true, 4),
        ]);
        let measures = [
            measure("5", false, 10),
            measure("6", true, 2),
            measure("7", false, 10),
        ];
        let figs = reconcile_day(events, &measures, &[80]).unwrap();
        let got: Vec<_> = figs
            .iter()
            .map(|f| {
                (
                    f.org_id.as_str(),
                    f.calls,
                    f.credits,
                    f.used,
                    f.crossings.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("5", 3, 7, 7, vec![]),
                (
                    "6",
                    3,
                    27,
                    3,
                    vec![(80, 2, "d".to_string()), (100, 3, "f".to_string())]
                ),
                ("7", 2, 8, 8, vec![(80, 2, "h".to_string())]),
            ]
        );
    }

    const SHA: &str = "abababababababababababababababababababababababababababababababab";

    /// Pushes `rows` events spread round-robin over `days` consecutive days from 2025-10-01:
    /// event `i` has request id `r<i>` and line `i + 1`.
    fn push_round_robin(writer: &mut PartWriter, rows: u64, days: u64) {
        let first = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
        let endpoint: std::sync::Arc<str> = "/api/v1/tickets".into();
        for i in 0..rows {
            let id = format!("r{i}");
            writer
                .push(&Event {
                    request_id: &id,
                    org_id: "1",
                    ts_ms: i as i64,
                    local_date: first + chrono::Days::new(i % days),
                    method: "GET",
                    endpoint: endpoint.clone(),
                    status: 200,
                    billable: true,
                    credits: 1,
                    unpriced: false,
                    latency_ms: None,
                    charged_credits: None,
                    dc: None,
                    file: SHA,
                    line: i + 1,
                })
                .unwrap();
        }
    }

    /// Every file under `dir`, relative to it.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    /// Writes `rows` events spread round-robin over `days` consecutive days; returns the row
    /// counts of each part's row groups, by day.
    fn row_groups_written(rows: u64, days: u64) -> Vec<Vec<usize>> {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::new(dir.path(), SHA);
        push_round_robin(&mut writer, rows, days);
        let parts = writer.finish().unwrap();
        assert_eq!(parts.len() as u64, days.min(rows));
        parts
            .iter()
            .map(|p| {
                let f = File::open(dir.path().join(&p.path)).unwrap();
                let mut reader = ParquetReader::new(f);
                let meta = reader.get_metadata().unwrap();
                let groups: Vec<usize> = meta.row_groups.iter().map(|g| g.num_rows()).collect();
                assert_eq!(groups.iter().sum::<usize>() as u64, p.rows);
                groups
            })
            .collect()
    }

    #[test]
    fn days_beyond_the_open_part_bound_get_more_parts_holding_every_row_once() {
        // 70 days, interleaved: the buffers are handed over once memory is full (936 rows a
        // day) and again at the end, so every day needs a writer twice while only 64 stay open.
        let (rows, days) = (70_000, 70);
        assert!(days as usize > MAX_OPEN_PARTS);
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::new(dir.path(), SHA);
        push_round_robin(&mut writer, rows, days);
        let parts = writer.finish().unwrap();

        let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for p in &parts {
            *per_day.entry(p.local_date).or_default() += 1;
        }
        assert_eq!(per_day.len() as u64, days);
        assert!(parts.len() > days as usize, "{} parts", parts.len());
        let mut listed: Vec<String> = parts.iter().map(|p| p.path.clone()).collect();
        listed.sort();
        assert_eq!(files_under(dir.path()), listed, "no temporary file left");

        // Read back, part by part: each holds its own day's rows, and all of them together
        // are the input, each row once.
        let first = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut seen = vec![false; rows as usize];
        for p in &parts {
            let df = scan_parts(dir.path(), std::slice::from_ref(&p.path))
                .unwrap()
                .select([
                    col("request_id"),
                    col("line"),
                    col("local_date").cast(DataType::Int32),
                ])
                .collect()
                .unwrap();
            assert_eq!(df.height() as u64, p.rows, "{}", p.path);
            let ids = df.column("request_id").unwrap().str().unwrap().clone();
            let lines = df.column("line").unwrap().i64().unwrap().clone();
            let dates = df.column("local_date").unwrap().i32().unwrap().clone();
            for r in 0..df.height() {
                let line = lines.get(r).unwrap() as u64;
                let i = line - 1;
                assert_eq!(ids.get(r), Some(format!("r{i}").as_str()));
                let date = first + chrono::Days::new(i % days);
                assert_eq!(date, p.local_date, "{}", p.path);
                assert_eq!(
                    dates.get(r),
                    Some(date.signed_duration_since(epoch).num_days() as i32)
                );
                assert!(!seen[i as usize], "r{i} twice");
                seen[i as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s), "every row written");
    }

    #[test]
    fn an_abandoned_writer_removes_its_closed_and_open_parts() {
        // More days than stay open, so some parts are closed (not yet in place) and some open
        // when the file is given up.
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::new(dir.path(), SHA);
        push_round_robin(&mut writer, 70_000, 70);
        drop(writer);
        assert_eq!(files_under(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn a_file_over_many_days_still_makes_row_groups_worth_reading() {
        // 900 rows on each of 30 days: no day reaches a row group of its own before the end,
        // so each part is one row group (not 30 slivers of every 4 Ki batch).
        let groups = row_groups_written(27_000, 30);
        assert!(groups.iter().all(|g| g == &vec![900]), "{groups:?}");
    }

    #[test]
    fn a_long_file_of_one_day_is_handed_over_in_batches_as_it_is_read() {
        // Encoding overlaps decoding: the rows go to the writer 4 Ki at a time.
        let groups = row_groups_written(10_000, 1);
        assert_eq!(groups, vec![vec![4096, 4096, 1808]]);
    }

    #[test]
    fn exactly_at_the_allotment_is_not_above_it() {
        let events = frame(&[("4", 1, "a", true, 5), ("4", 2, "b", true, 5)]);
        let figs = reconcile_day(events, &[measure("4", false, 10)], &[]).unwrap();
        assert_eq!(figs[0].crossings, vec![]);
    }
}

/// What the reports show about one org-day beyond its ledger row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayDetails {
    /// (endpoint, calls, credits charged), most credits first, at most 5.
    pub top_endpoints: Vec<(String, u64, u64)>,
    /// Units used (credits, or billable calls on legacy days) per hour since the day began.
    pub hourly: Vec<u64>,
    /// Most calls in flight at once, from `ts` and `latency_ms`.
    pub peak_concurrency: u64,
    /// (endpoint, calls) of calls no rule priced.
    pub unpriced: Vec<(String, u64)>,
    /// Calls that carried `charged_credits`, what the gateway charged and what creditd computed.
    pub drift: (u64, u64, u64),
}

/// The columns [`day_details`] reads.
const DETAIL_COLUMNS: [&str; 7] = [
    "ts",
    "endpoint",
    "billable",
    "credits",
    "unpriced",
    "latency_ms",
    "charged_credits",
];

/// The events of several orgs on one date, read in one scan and split by org, so that the
/// messages of many org-days of a date read the date's parts once rather than once each.
pub struct OrgEvents(HashMap<String, DataFrame>);

impl OrgEvents {
    /// Reads the detail columns of `orgs`' events from `parts` (relative to `state_dir`).
    pub fn load(state_dir: &Path, parts: &[String], orgs: &[String]) -> PolarsResult<OrgEvents> {
        let mut by_org = HashMap::new();
        if parts.is_empty() || orgs.is_empty() {
            return Ok(OrgEvents(by_org));
        }
        let wanted = DataFrame::new(
            orgs.len(),
            vec![Column::new("org_id".into(), orgs.to_vec())],
        )?;
        let mut columns = vec![col("org_id")];
        columns.extend(DETAIL_COLUMNS.iter().map(|c| col(*c)));
        let df = scan_parts(state_dir, parts)?
            .select(columns)
            .join(
                wanted.lazy(),
                [col("org_id")],
                [col("org_id")],
                JoinArgs::new(JoinType::Semi),
            )
            .sort(["org_id"], SortMultipleOptions::default())
            .collect()?;
        let ids = df.column("org_id")?.str()?.clone();
        let mut start = 0;
        for i in 1..=df.height() {
            if i == df.height() || ids.get(i) != ids.get(start) {
                let org = ids.get(start).unwrap_or_default().to_string();
                by_org.insert(org, df.slice(start as i64, i - start));
                start = i;
            }
        }
        Ok(OrgEvents(by_org))
    }

    /// The events of `org_id`, if it has any.
    pub fn of(&self, org_id: &str) -> Option<LazyFrame> {
        self.0.get(org_id).map(|df| df.clone().lazy())
    }
}

/// Computes the details of `org_id`'s day from the day's parts. `day_start_ms` anchors the
/// hourly buckets; `hours` is the day's length in hours (rounded up).
pub fn day_details(
    events: LazyFrame,
    org_id: &str,
    day_start_ms: i64,
    hours: usize,
    legacy: bool,
) -> PolarsResult<DayDetails> {
    let df = events
        .filter(col("org_id").eq(lit(org_id)))
        .select(DETAIL_COLUMNS.map(col))
        .collect()?;
    let mut out = DayDetails {
        hourly: vec![0; hours.max(1)],
        ..Default::default()
    };
    if df.height() == 0 {
        return Ok(out);
    }
    let charged = when(col("billable"))
        .then(col("credits"))
        .otherwise(lit(0i64));
    let top = df
        .clone()
        .lazy()
        .group_by([col("endpoint")])
        .agg([
            len().cast(DataType::Int64).alias("calls"),
            charged.clone().sum().alias("credits"),
        ])
        .sort_by_exprs(
            [col("credits"), col("calls"), col("endpoint")],
            SortMultipleOptions::default().with_order_descending_multi([true, true, false]),
        )
        .limit(5)
        .collect()?;
    let names = top.column("endpoint")?.str()?.clone();
    let calls = top.column("calls")?.i64()?.clone();
    let credits = top
        .column("credits")?
        .cast(&DataType::Int64)?
        .i64()?
        .clone();
    for i in 0..top.height() {
        out.top_endpoints.push((
            names.get(i).unwrap_or_default().to_string(),
            calls.get(i).unwrap_or(0) as u64,
            credits.get(i).unwrap_or(0) as u64,
        ));
    }

    let unit = if legacy {
        col("billable").cast(DataType::Int64)
    } else {
        charged
    };
    let hourly = df
        .clone()
        .lazy()
        .with_column(((col("ts") - lit(day_start_ms)) / lit(3_600_000i64)).alias("hour"))
        .group_by([col("hour")])
        .agg([unit.sum().cast(DataType::Int64).alias("units")])
        .collect()?;
    let hs = hourly
        .column("hour")?
        .cast(&DataType::Int64)?
        .i64()?
        .clone();
    let us = hourly.column("units")?.i64()?.clone();
    for i in 0..hourly.height() {
        if let (Some(h), Some(u)) = (hs.get(i), us.get(i)) {
            let idx = (h.max(0) as usize).min(out.hourly.len() - 1);
            out.hourly[idx] += u as u64;
        }
    }

    out.unpriced = unpriced_endpoints(df.clone().lazy(), 10)?;

    // Peak concurrency: +1 at each start, -1 at each end; ends sort before starts at the
    // same instant, so back-to-back calls do not overlap.
    let starts = df
        .clone()
        .lazy()
        .select([col("ts").alias("at"), lit(1i64).alias("delta")]);
    let ends = df.clone().lazy().select([
        (col("ts") + col("latency_ms").fill_null(lit(0i64))).alias("at"),
        lit(-1i64).alias("delta"),
    ]);
    let peak = concat([starts, ends], UnionArgs::default())?
        .sort_by_exprs([col("at"), col("delta")], SortMultipleOptions::default())
        .select([col("delta")
            .cum_sum(false)
            .max()
            .cast(DataType::Int64)
            .alias("peak")])
        .collect()?;
    out.peak_concurrency = peak.column("peak")?.i64()?.get(0).unwrap_or(0).max(0) as u64;

    let drift = df
        .lazy()
        .filter(col("charged_credits").is_not_null())
        .select([
            len().cast(DataType::Int64).alias("n"),
            col("charged_credits")
                .sum()
                .cast(DataType::Int64)
                .alias("charged"),
            when(col("billable"))
                .then(col("credits"))
                .otherwise(lit(0i64))
                .sum()
                .cast(DataType::Int64)
                .alias("computed"),
        ])
        .collect()?;
    let get = |c: &str| -> PolarsResult<u64> {
        Ok(drift.column(c)?.i64()?.get(0).unwrap_or(0).max(0) as u64)
    };
    out.drift = (get("n")?, get("charged")?, get("computed")?);
    Ok(out)
}

/// Unpriced endpoints and gateway drift over many org-days, for the ops digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestFigures {
    /// (endpoint, calls), most calls first.
    pub unpriced: Vec<(String, u64)>,
    /// (org_id, calls carrying charged_credits, charged, computed), by org.
    pub drift: Vec<(String, u64, u64, u64)>,
}

/// Computes [`DigestFigures`] over `events` restricted to the (org_id, local_date) pairs given.
pub fn digest_figures(
    events: LazyFrame,
    org_days: &[(String, NaiveDate)],
) -> PolarsResult<DigestFigures> {
    let mut out = DigestFigures::default();
    if org_days.is_empty() {
        return Ok(out);
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
    let keys = DataFrame::new(
        org_days.len(),
        vec![
            Column::new(
                "org_id".into(),
                org_days.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "local_date".into(),
                org_days
                    .iter()
                    .map(|o| o.1.signed_duration_since(epoch).num_days() as i32)
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Date)?,
        ],
    )?;
    let base = events.join(
        keys.lazy(),
        [col("org_id"), col("local_date")],
        [col("org_id"), col("local_date")],
        JoinArgs::new(JoinType::Semi),
    );
    out.unpriced = unpriced_endpoints(base.clone(), 20)?;
    let drift = base
        .filter(col("charged_credits").is_not_null())
        .group_by([col("org_id")])
        .agg([
            len().cast(DataType::Int64).alias("n"),
            col("charged_credits")
                .sum()
                .cast(DataType::Int64)
                .alias("charged"),
            when(col("billable"))
                .then(col("credits"))
                .otherwise(lit(0i64))
                .sum()
                .cast(DataType::Int64)
                .alias("computed"),
        ])
        .sort(["org_id"], SortMultipleOptions::default())
        .collect()?;
    let org = drift.column("org_id")?.str()?.clone();
    let n = drift.column("n")?.i64()?.clone();
    let charged = drift.column("charged")?.i64()?.clone();
    let computed = drift.column("computed")?.i64()?.clone();
    for i in 0..drift.height() {
        out.drift.push((
            org.get(i).unwrap_or_default().to_string(),
            n.get(i).unwrap_or(0) as u64,
            charged.get(i).unwrap_or(0) as u64,
            computed.get(i).unwrap_or(0) as u64,
        ));
    }
    Ok(out)
}
