//! Reading ahead: with `[ingest] threads` above 1, the inbox's files are hashed, read and
//! decoded on threads of their own, file after file, while the calling thread claims, writes
//! and commits them one at a time.
//!
//! The calling thread still does everything that touches the store, the claims and the parts,
//! in file order, exactly as with one thread; what runs ahead is only what depends on nothing
//! but the file's bytes: its SHA-256 and its decoded lines. So while one file's parts are
//! finished and synced and its transaction commits, the next file is already being read and
//! decoded. A file the calling thread does not read to its end (a duplicate, a failure, a stop)
//! is skipped: the reading thread moves on to the next, and what it decoded ahead is dropped.
//! At most a few batches per thread are being decoded, and [`HANDED_OVER`] wait for the calling
//! thread, so memory stays bounded.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, SyncSender};

use super::pipeline::{
    decode_guarded, open_listed, panicked, read_guarded, Batch, RawBatch, IN_FLIGHT_PER_WORKER,
    MAX_IN_FLIGHT,
};
use super::*;

/// Batches taken and not yet handed over at most: their bytes and decoded copies stay within
/// 64 × 2 × `BATCH_BYTES` even on a machine of many cores.
pub fn in_flight(threads: usize) -> usize {
    (threads * IN_FLIGHT_PER_WORKER).min(MAX_IN_FLIGHT)
}

/// Decoded batches handed over and not yet taken by the calling thread at most. At the end of
/// each file the calling thread takes nothing for a while (its last rows encoded, its parts
/// synced, its transaction committed: ~10 ms a file on the bench's main set); this many let the
/// workers decode on through it. With as few as [`in_flight`] (4 on two cores), the reading
/// thread waited 0.9 s of a 7 s two-thread ingest for room, the workers stood idle with it, and
/// the calling thread then waited for batches instead. 32 decoded batches are ~30 MiB of lines
/// of 300 bytes, and at most 32 × 2 × `BATCH_BYTES`.
pub const HANDED_OVER: usize = 32;

/// What the reading thread hands over, file after file, in the order of the files.
pub enum Item {
    /// A file begins: its SHA-256, or why it cannot be read.
    Start(anyhow::Result<String>),
    /// A batch of the file decoded, or the first line of a batch whose decoding panicked.
    Batch(Result<Batch, u64>),
    /// Reading the file failed (opening it, or in the middle): its last item before `End`.
    Failed(anyhow::Error),
    /// The file ends: read to its end, failed, or skipped.
    End,
}

/// What the reading thread takes from the files, before hashing and decoding.
enum Raw {
    Start(PathBuf),
    Batch(RawBatch),
    Failed(anyhow::Error),
    End,
}

/// Where a file's SHA-256 and decoded lines come from.
pub enum Source<'a> {
    /// Read and decoded here, on the calling thread (`[ingest] threads = 1`).
    Here {
        setup: &'a Setup,
        now: DateTime<Utc>,
        path: &'a Path,
        name: &'a str,
    },
    /// Read ahead by [`read_ahead`].
    Ahead(Ahead<'a>),
}

impl Source<'_> {
    /// The SHA-256 of the file's bytes (hex).
    pub fn sha(&mut self) -> anyhow::Result<String> {
        match self {
            Source::Here { path, .. } => hash_guarded(path),
            Source::Ahead(a) => match a.recv()? {
                Item::Start(sha) => sha,
                _ => anyhow::bail!("the reading thread handed over a file out of order"),
            },
        }
    }

    /// Hands every batch of the file's decoded lines to `consume`, in file order. An error of
    /// `consume` or of reading stops the rest.
    pub fn decode(
        &mut self,
        mut consume: impl FnMut(&Batch) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        match self {
            Source::Here {
                setup,
                now,
                path,
                name,
            } => {
                let mut reader = open_listed(path, name)?;
                super::pipeline::run(&mut reader, setup, *now, consume)
            }
            Source::Ahead(a) => loop {
                match a.recv()? {
                    Item::Batch(Ok(batch)) => consume(&batch)?,
                    Item::Batch(Err(first_line)) => return Err(panicked(a.path, first_line)),
                    Item::Failed(e) => return Err(e),
                    Item::End => {
                        a.ended = true;
                        return Ok(());
                    }
                    Item::Start(_) => {
                        anyhow::bail!("the reading thread handed over a file out of order")
                    }
                }
            },
        }
    }
}

/// The calling thread's end of one file read ahead. Dropped before the file's end, it has the
/// rest skipped, and drops what was decoded ahead.
pub struct Ahead<'a> {
    items: &'a Receiver<Item>,
    /// Set once the reading thread is found gone: the files left are read here.
    gone: &'a Cell<bool>,
    /// Files before this index are not to be read on: the reading thread's signal.
    skip: &'a AtomicUsize,
    index: usize,
    path: &'a Path,
    ended: bool,
}

impl<'a> Ahead<'a> {
    /// The file at `index` of the files handed to [`read_ahead`].
    pub fn new(
        items: &'a Receiver<Item>,
        gone: &'a Cell<bool>,
        skip: &'a AtomicUsize,
        index: usize,
        path: &'a Path,
    ) -> Ahead<'a> {
        Ahead {
            items,
            gone,
            skip,
            index,
            path,
            ended: false,
        }
    }

    fn recv(&mut self) -> anyhow::Result<Item> {
        let item = self.items.recv().map_err(|_| {
            anyhow::anyhow!(
                "the thread reading ahead stopped before the end of {} (the files after it are read without it)",
                self.path.display()
            )
        });
        if item.is_err() {
            self.ended = true;
            self.gone.set(true);
        }
        item
    }
}

impl Drop for Ahead<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.skip.fetch_max(self.index + 1, Ordering::SeqCst);
        while let Ok(item) = self.items.recv() {
            if matches!(item, Item::End) {
                break;
            }
        }
    }
}

/// [`sha256_file`], with a panic as an error of the file.
fn hash_guarded(path: &Path) -> anyhow::Result<String> {
    std::panic::catch_unwind(|| sha256_file(path))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing {} panicked", path.display())))
}

/// Reads `files` (paths and names, in order) on this thread, hashing and decoding them on
/// `threads` workers, and hands every file's items to `to_main` in order. Returns when every
/// file was handed over, or when the receiving end is gone. A panic while opening, hashing,
/// reading or decoding one file fails that file alone.
pub fn read_ahead(
    files: &[(PathBuf, String)],
    setup: &Setup,
    now: DateTime<Utc>,
    threads: usize,
    to_main: SyncSender<Item>,
    skip: &AtomicUsize,
) {
    // The decoding workers started below inherit it.
    yield_to_the_writer();
    let mut index = 0;
    let mut reader: Option<LogReader> = None;
    let mut queued: VecDeque<Raw> = VecDeque::new();
    let next = || -> anyhow::Result<Option<Raw>> {
        loop {
            if let Some(raw) = queued.pop_front() {
                return Ok(Some(raw));
            }
            if let Some(r) = &mut reader {
                if skip.load(Ordering::SeqCst) > index {
                    reader = None;
                    index += 1;
                    return Ok(Some(Raw::End));
                }
                match read_guarded(r) {
                    Ok(Some(raw)) => return Ok(Some(Raw::Batch(raw))),
                    Ok(None) => queued.push_back(Raw::End),
                    Err(e) => queued.extend([Raw::Failed(e), Raw::End]),
                }
                reader = None;
                index += 1;
                continue;
            }
            let Some((path, name)) = files.get(index) else {
                return Ok(None);
            };
            if crate::faults::check(&format!("read-ahead:{index}")).is_err() {
                panic!("fault injected at read-ahead:{index} (CREDITD_FAULTS)");
            }
            // The hash is worked out on a worker, beside the reading.
            queued.push_back(Raw::Start(path.clone()));
            let opened = std::panic::catch_unwind(AssertUnwindSafe(|| open_listed(path, name)))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("opening {} panicked", path.display())));
            match opened {
                Ok(r) => reader = Some(r),
                Err(e) => {
                    queued.extend([Raw::Failed(e), Raw::End]);
                    index += 1;
                }
            }
        }
    };
    // The receiving end gone is the only error: nothing is left to do.
    let _ = crate::parallel::in_order(
        threads,
        in_flight(threads),
        next,
        || Ingester::new(setup, now),
        |checker, raw| match raw {
            Raw::Start(path) => Item::Start(hash_guarded(&path)),
            Raw::Batch(raw) => Item::Batch(decode_guarded(&raw, checker)),
            Raw::Failed(e) => Item::Failed(e),
            Raw::End => Item::End,
        },
        |item| {
            to_main
                .send(item)
                .map_err(|_| anyhow::anyhow!("the ingest stopped"))
        },
    );
}

/// How much lower than the run the threads reading ahead are scheduled (added to the nice
/// value).
const AHEAD_NICE: i32 = 10;

/// Lowers the calling thread's priority by [`AHEAD_NICE`] (on Linux a thread has a nice value
/// of its own, and the threads it starts inherit it): what reads and decodes ahead then runs on the CPU that the writing thread and
/// its Parquet lanes — the run's critical path — leave. At one priority, on two cores, the
/// lanes had a third of a core among the decoding threads and the writing thread waited for
/// them at the end of every file; measured pair by pair on the bench's main set, the lower
/// priority took `run ingest` to 0.91 × its wall time. Nothing is lost if it fails.
fn yield_to_the_writer() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority read and set the calling thread's nice value; errno
    // is the calling thread's own.
    unsafe {
        // -1 is a nice value as well as the error return: errno tells them apart.
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            return;
        }
        libc::setpriority(libc::PRIO_PROCESS, 0, (nice + AHEAD_NICE).min(19));
    }
}
