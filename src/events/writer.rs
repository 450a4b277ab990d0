//! Writing parts: buffers per day (`columns`), the writer threads, at most
//! [`MAX_OPEN_PARTS`] parts open, and the part paths (only this module builds them).

use super::columns::Columns;
use super::*;

/// Days since 1970-01-01: Parquet's `Date`, and which lane owns a day.
pub(super) fn epoch_days(date: NaiveDate) -> i64 {
    date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid"))
        .num_days()
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

/// A part's file, buffered ([`PART_BUFFER`]). Shared so that the buffer can be flushed, and its errors seen, once the writer is done.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl SharedFile {
    /// Writes out the buffer. The part is made durable later, with all the file's others
    /// ([`PartWriter::finish`]).
    fn flush_buffer(&self) -> anyhow::Result<()> {
        let mut file = self.0.lock().expect("never poisoned: writes do not panic");
        file.flush()?;
        Ok(())
    }
}

/// Up to this many parts, a file's parts are synced one by one; past it, the filesystem once.
const SYNC_EACH_MAX: usize = 64;

/// Makes the parts moved into place under `state_dir` durable, with their names. A file of
/// few parts (an hourly file touches one or two days) syncs each part and its directory, a
/// cost of its own. A file spread over many days (24 files over 151 days made 3,624 parts,
/// whose `fsync`s took ~3.5 s) syncs the state directory's filesystem once instead (`syncfs`,
/// on Linux, through `handle`, opened when the writer was, so it reports the write-back errors
/// since): that costs whatever else waits to be written there too, so only a file of many
/// parts pays it.
fn sync_parts(state_dir: &Path, handle: Option<File>, parts: &[Part]) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if parts.len() > SYNC_EACH_MAX {
            let dir = match handle {
                Some(h) => h,
                None => File::open(state_dir)?,
            };
            // SAFETY: `dir` is an open file descriptor for the whole call.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            return Ok(());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = handle;
    let mut dirs = std::collections::BTreeSet::new();
    for p in parts {
        let path = state_dir.join(&p.path);
        File::open(&path)?.sync_all()?;
        if let Some(d) = path.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        File::open(d)?.sync_all()?;
    }
    Ok(())
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
pub(super) const WRITE_BUFFER: usize = 1 << 20;

/// The write buffer of each open part: enough to gather page headers and small pages, small
/// enough that [`MAX_OPEN_PARTS`] of them stay in a few tens of MiB.
const PART_BUFFER: usize = 64 << 10;

/// What the writing thread is told.
enum ToWriter {
    Batch(NaiveDate, Box<Columns>),
    /// Close the day's open part (it was the least recently written when another day needed a
    /// part): the day's next batch starts a new one.
    Close(NaiveDate),
    /// Finish every part and move it into place. Without it (the sender dropped), the parts are
    /// abandoned and their temporary files removed.
    Finish,
}

/// Writes the events of one input file into per-day Parquet parts, in bounded batches.
///
/// Encoding and compressing Parquet runs on threads of their own (lanes, each owning the days
/// whose number modulo the lane count is its own), fed through channels of two batches, while
/// the caller goes on decoding lines: memory stays bounded by the batch size, and a file spread
/// over many days, whose buffers are handed over at its end, is encoded on every lane.
pub struct PartWriter {
    state_dir: PathBuf,
    buffers: BTreeMap<NaiveDate, Columns>,
    buffered: usize,
    lanes: Vec<Lane>,
    /// The days with an open part, and when each was last handed rows. Which part closes when
    /// is decided here, in the order rows are handed over, so the parts are the same for any
    /// number of lanes.
    open: HashMap<NaiveDate, u64>,
    clock: u64,
    /// [`MAX_OPEN_PARTS`], or fewer in tests.
    max_open: usize,
    /// The state directory, open from the start: `syncfs` through it reports the write-back
    /// errors of everything written since (Linux 5.8 and later).
    sync_handle: Option<File>,
}

/// One writing thread and its channel.
struct Lane {
    to_writer: Option<std::sync::mpsc::SyncSender<ToWriter>>,
    writer: Option<std::thread::JoinHandle<anyhow::Result<Vec<ClosedPart>>>>,
}

impl Lane {
    /// Waits for the thread: the parts it closed, or why it stopped.
    fn join(&mut self) -> anyhow::Result<Vec<ClosedPart>> {
        self.to_writer = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the Parquet writer panicked"),
            None => anyhow::bail!("the Parquet writer stopped"),
        }
    }
}

/// Rows buffered before a day's buffer is handed to the writer (as one row group). Small, so
/// that encoding overlaps decoding even in a file of a few thousand lines: with a whole file
/// in one batch, the writer waited for the reader and then the reader for the writer.
const BATCH_ROWS: usize = 4 * 1024;

/// The fewest rows of one day handed over as a row group, unless memory forces it: a file
/// spread over many days still makes row groups worth reading.
const MIN_GROUP_ROWS: usize = 1024;

/// Rows buffered over all days before every buffer is handed over, which bounds memory for a
/// file that spans many days (about 300 bytes a row: 75 MiB). A file of shuffled lines over
/// 151 days, with 64 Ki rows, handed over row groups of ~420 rows, and polars' writer paid a
/// zstd context for each column of each: 1.5 × the time of one row group a day.
pub(super) const BUFFERED_ROWS: usize = 256 * 1024;

/// The most writing threads of one [`PartWriter`].
pub const MAX_LANES: usize = 4;

impl PartWriter {
    /// A writer of the parts of the input file with this SHA-256, named by its first 16 hex
    /// digits (`<prefix>.parquet`, `<prefix>.1.parquet`, …), encoding on `threads` threads (at
    /// most [`MAX_LANES`]).
    pub fn new(state_dir: &Path, file_sha: &str, threads: usize) -> PartWriter {
        PartWriter::named(state_dir, &file_sha[..16.min(file_sha.len())], threads)
    }

    /// A writer of parts named `<name>.parquet`, `<name>.1.parquet`, … in each day's directory.
    pub fn named(state_dir: &Path, name: &str, threads: usize) -> PartWriter {
        let n = threads.clamp(1, MAX_LANES);
        let lanes = (0..n)
            .map(|i| {
                let (to_writer, batches) = std::sync::mpsc::sync_channel(2);
                let state_dir = state_dir.to_path_buf();
                let name = name.to_string();
                let writer = std::thread::Builder::new()
                    .name(format!("parquet-writer-{i}"))
                    .spawn(move || write_parts(&state_dir, &name, batches))
                    .expect("a thread can be started");
                Lane {
                    to_writer: Some(to_writer),
                    writer: Some(writer),
                }
            })
            .collect();
        PartWriter {
            state_dir: state_dir.to_path_buf(),
            buffers: BTreeMap::new(),
            buffered: 0,
            lanes,
            open: HashMap::new(),
            clock: 0,
            max_open: MAX_OPEN_PARTS,
            sync_handle: File::open(state_dir).ok(),
        }
    }

    /// The same writer keeping at most `n` parts open (tests reach the bound with few days).
    #[cfg(test)]
    pub(super) fn with_max_open(mut self, n: usize) -> PartWriter {
        self.max_open = n.max(1);
        self
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
            self.send(e.local_date, cols)?;
        }
        Ok(())
    }

    /// Hands a day's rows to the lane of that day, first closing the least recently written
    /// part when [`MAX_OPEN_PARTS`] are open and this day has none.
    fn send(&mut self, date: NaiveDate, cols: Columns) -> anyhow::Result<()> {
        self.clock += 1;
        if !self.open.contains_key(&date) && self.open.len() >= self.max_open {
            let lru = self
                .open
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(d, _)| *d)
                .expect("MAX_OPEN_PARTS > 0");
            self.open.remove(&lru);
            self.tell(lru, ToWriter::Close(lru))?;
        }
        self.open.insert(date, self.clock);
        self.tell(date, ToWriter::Batch(date, Box::new(cols)))
    }

    /// Sends `message` to the lane that owns `date`.
    fn tell(&mut self, date: NaiveDate, message: ToWriter) -> anyhow::Result<()> {
        let n = self.lanes.len() as i64;
        let lane = &mut self.lanes[epoch_days(date).rem_euclid(n) as usize];
        if lane
            .to_writer
            .as_ref()
            .is_some_and(|s| s.send(message).is_ok())
        {
            return Ok(());
        }
        // The writer stopped early: its error says why.
        match lane.join() {
            Err(e) => Err(e),
            Ok(_) => anyhow::bail!("the Parquet writer stopped"),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for (date, cols) in std::mem::take(&mut self.buffers) {
            if cols.len() > 0 {
                self.send(date, cols)?;
            }
        }
        self.buffered = 0;
        Ok(())
    }

    /// Finishes every part and moves it into place, by day and then in the order written;
    /// returns what was written. On a failure no part of the file stays behind.
    pub fn finish(mut self) -> anyhow::Result<Vec<Part>> {
        self.flush()?;
        for lane in &self.lanes {
            if let Some(s) = &lane.to_writer {
                // A lane that stopped reports why when joined.
                let _ = s.send(ToWriter::Finish);
            }
        }
        let mut done = Vec::new();
        let mut failed = None;
        for lane in &mut self.lanes {
            match lane.join() {
                Ok(parts) => done.extend(parts),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            for part in &done {
                let _ = std::fs::remove_file(&part.tmp);
            }
            return Err(e);
        }
        done.sort_by(|a, b| (a.local_date, &a.path).cmp(&(b.local_date, &b.path)));
        let mut parts: Vec<Part> = Vec::with_capacity(done.len());
        let state_dir = &self.state_dir;
        let mut done = done.into_iter();
        while let Some(part) = done.next() {
            if let Err(e) = std::fs::rename(&part.tmp, state_dir.join(&part.path))
                .with_context(|| format!("cannot move {} into place", part.tmp.display()))
            {
                let _ = std::fs::remove_file(&part.tmp);
                for rest in done {
                    let _ = std::fs::remove_file(&rest.tmp);
                }
                for moved in &parts {
                    let _ = std::fs::remove_file(state_dir.join(&moved.path));
                }
                return Err(e);
            }
            parts.push(Part {
                local_date: part.local_date,
                path: part.path,
                rows: part.rows,
            });
        }
        // Durable before the store lists them: the caller commits the listing next.
        if let Err(e) = sync_parts(state_dir, self.sync_handle.take(), &parts)
            .with_context(|| format!("cannot sync the parts under {}", state_dir.display()))
        {
            for p in &parts {
                let _ = std::fs::remove_file(state_dir.join(&p.path));
            }
            return Err(e);
        }
        Ok(parts)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // An abandoned file leaves no temporary parts behind: each writer removes them once
        // its channel closes without `Finish`, and is waited for here.
        for lane in &mut self.lanes {
            if let Ok(parts) = lane.join() {
                // Finished but never moved into place (an earlier lane failed).
                for part in parts {
                    let _ = std::fs::remove_file(&part.tmp);
                }
            }
        }
    }
}

/// The most parts one [`PartWriter`] keeps open at once. A file touching more days than this
/// closes the least recently written part to open another; a closed day that gets more rows
/// later gets another part. More than a year of days, so that a file spread over a year of
/// calls (a gateway's late export, a backfill of old archives) in any order still writes one
/// part a day: with 64, a file of shuffled lines over 151 days wrote four parts a day. Each open part holds a file descriptor and up to [`PART_BUFFER`] of memory,
/// so this bounds both: 25 MiB, and well below systemd's default soft limit of 1,024 files.
pub const MAX_OPEN_PARTS: usize = 400;

/// A part whose file is complete (flushed, not yet synced), still under its temporary name until every part
/// of the input file is done.
struct ClosedPart {
    local_date: NaiveDate,
    tmp: PathBuf,
    path: String,
    rows: u64,
}

/// A writing thread's parts: those open (the [`PartWriter`] decides when one closes), and
/// those closed.
struct Parts<'a> {
    state_dir: &'a Path,
    name: &'a str,
    open: HashMap<NaiveDate, OpenPart>,
    closed: Vec<ClosedPart>,
    /// Parts started so far per day, which numbers the next one.
    started: HashMap<NaiveDate, u32>,
}

impl Parts<'_> {
    fn write(&mut self, date: NaiveDate, cols: &mut Columns) -> anyhow::Result<()> {
        let df = cols.take_frame(date)?;
        if !self.open.contains_key(&date) {
            let part = self.start(date, df.schema())?;
            self.open.insert(date, part);
        }
        let part = self.open.get_mut(&date).expect("opened");
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
            PART_BUFFER,
            f,
        ))));
        // From here on a failure leaves `tmp` to be removed: it is the caller's once returned,
        // and removed here otherwise.
        // LZ4: polars' writer makes a compression context for every page, and zstd's took a
        // fifth of the writers' time on a file spread over 151 days (parts ~1.5 × larger).
        let writer = match ParquetWriter::new(file.clone())
            .with_compression(ParquetCompression::Lz4Raw)
            // The lanes are the parallelism: encoding a row group's columns on the polars
            // threads as well woke them ~140 k times in a two-thread ingest of the bench's main
            // set, for ~15 µs of work each; encoded on its lane, `run ingest` took 0.98 × as
            // long, and as long with one thread.
            .set_parallel(false)
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
            .and_then(|_| part.file.flush_buffer())
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

    /// Closes every part; they keep their temporary names until every lane is done.
    fn finish(&mut self) -> anyhow::Result<Vec<ClosedPart>> {
        let mut open: Vec<(NaiveDate, OpenPart)> = self.open.drain().collect();
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
        Ok(std::mem::take(&mut self.closed))
    }

    /// Removes the temporary file of every part not moved into place.
    fn abandon(&mut self) {
        for part in self.open.values() {
            let _ = std::fs::remove_file(&part.tmp);
        }
        for part in &self.closed {
            let _ = std::fs::remove_file(&part.tmp);
        }
    }
}

/// A writing thread: parts written batch by batch and closed when told; returns them
/// closed, under their temporary names.
fn write_parts(
    state_dir: &Path,
    name: &str,
    batches: std::sync::mpsc::Receiver<ToWriter>,
) -> anyhow::Result<Vec<ClosedPart>> {
    let mut parts = Parts {
        state_dir,
        name,
        open: HashMap::new(),
        closed: Vec::new(),
        started: HashMap::new(),
    };
    let result = (|| {
        loop {
            match batches.recv() {
                Ok(ToWriter::Batch(date, mut cols)) => parts.write(date, &mut cols)?,
                Ok(ToWriter::Close(date)) => {
                    if let Some(part) = parts.open.remove(&date) {
                        parts.close(date, part)?;
                    }
                }
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

/// The name a backfill named `token` gives the parts of the input file `file_sha`.
pub fn backfill_part_name(file_sha: &str, token: &str) -> String {
    format!("{}-{token}", &file_sha[..16.min(file_sha.len())])
}

/// Where a backfill named `token` puts the events of `date` from input file `file_sha` that it
/// keeps (those of the orgs it does not recompute), relative to the state directory.
pub fn kept_part_path(date: NaiveDate, file_sha: &str, token: &str) -> String {
    format!(
        "events/local_date={date}/{}-kept.parquet",
        backfill_part_name(file_sha, token)
    )
}

/// Where the events of input file `file_sha` go when the upgrade splits `old`, a part of
/// several input files written by an earlier version, on `date`.
pub fn split_part_path(date: NaiveDate, old: &str, file_sha: &str) -> String {
    let stem = old
        .rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".parquet"))
        .unwrap_or("part");
    format!(
        "{}/{}.parquet",
        date_dir(date),
        backfill_part_name(file_sha, &format!("split-{stem}"))
    )
}

/// The directory of `date`'s parts, relative to the state directory.
pub fn date_dir(date: NaiveDate) -> String {
    format!("events/local_date={date}")
}
