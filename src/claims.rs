//! Request-id claims: which (org, request id) pairs of a local date already have an event, so
//! that a later occurrence on the same org-day is counted as a duplicate and never charged
//! (DESIGN §2.1: the dedupe scope is the org-day).
//!
//! The claims of a date are exactly the `(org_id, request_id)` pairs of its listed Parquet
//! parts, so they are an index that can always be rebuilt from the parts, and it is kept per
//! date: a lookup touches only the dates a file touches, a date's claims go with its events,
//! and nothing grows with history. Each pair is a 128-bit fingerprint (the first 16 bytes of
//! the SHA-256 of `org_id`, a NUL byte and the request id). For one date:
//! - **runs**: files `state/claims/local_date=D/run-<n>.fp` of sorted fingerprints, 16 bytes
//!   each, memory-mapped and searched, named in the store's `claim_days` row of the date;
//! - the **pending** parts, listed in `claims_pending` in the same transaction as the parts
//!   themselves. The fingerprints claimed during a run are held in memory; at the end of the
//!   run (or when they grow large) [`Claims::checkpoint`] writes each touched date's as a new
//!   run and clears its pending parts in one transaction. Only after a crash are pending parts
//!   left, and the next touch of their date reads their ids.
//!
//! A date's runs follow the logarithmic method: a new run swallows the newest runs that are at
//! most twice its size, so a date has O(log n) runs and each fingerprint is rewritten O(log n)
//! times. A date without a row (new, retired by a backfill, or from an earlier version's single
//! index) is rebuilt from its parts on first touch. A file is written whole and renamed before
//! the transaction that names it; an unnamed one (a crash in between) is removed when its date
//! is next loaded. At most [`MAX_MAPPED_DATES`] dates are mapped at once.
//!
//! Two different pairs share a fingerprint with probability about n²/2¹²⁹ for n pairs of a
//! date (10⁻²³ for a billion), and SHA-256 makes it infeasible to construct such a pair.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use crate::events::for_each_request_id;
use crate::store::{ClaimsView, Store};

/// The fingerprint of a call's dedupe key within its local date.
pub type Fingerprint = u128;

/// The fingerprint of `(org_id, request_id)`. Org ids are digits, so the NUL between them
/// keeps every pair apart.
pub fn fingerprint(org_id: &str, request_id: &str) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(org_id.as_bytes());
    h.update([0u8]);
    h.update(request_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// Fingerprints are uniformly distributed already: their low bits are the hash.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// A set of fingerprints.
pub type FingerprintSet = HashSet<Fingerprint, BuildHasherDefault<FingerprintHasher>>;

const WIDTH: usize = 16;

/// The most dates whose runs are mapped at once; others are mapped again when touched. More
/// than a year of days, like the Parquet writer's open parts: a file of shuffled lines over 151
/// days mapped and unmapped a date's runs at almost every line with 64. A mapping holds no file
/// descriptor, only address space (a few runs a date).
pub const MAX_MAPPED_DATES: usize = 400;

/// The claims of one date, as loaded.
struct Date {
    /// The runs named in the store, largest first.
    runs: Vec<String>,
    /// Their mappings (one per run; `None` for an empty file), or `None` while unmapped.
    mapped: Option<Vec<Option<Sorted>>>,
    /// Claims not in the runs: read from pending parts, rebuilt, or claimed by this run.
    pending: FingerprintSet,
    /// The store names no runs for this date: its claims were rebuilt from every part, and a
    /// checkpoint must name them even if nothing else is claimed.
    unnamed: bool,
    /// When this date was last searched, for choosing which to unmap.
    used: u64,
}

/// The claims of a state directory, loaded date by date as ingest touches them.
pub struct Claims {
    state_dir: PathBuf,
    dates: FxHashMap<NaiveDate, Date>,
    /// Fingerprints held in memory over all dates.
    pending: usize,
    clock: u64,
}

impl Claims {
    /// The claims of the store in `state_dir`; nothing is read until a date is touched.
    pub fn open(state_dir: &Path) -> Claims {
        Claims {
            state_dir: state_dir.to_path_buf(),
            dates: FxHashMap::default(),
            pending: 0,
            clock: 0,
        }
    }

    /// Whether `fp` is claimed on `date`; loads the date's claims on first touch.
    pub fn contains(
        &mut self,
        view: &dyn ClaimsView,
        date: NaiveDate,
        fp: Fingerprint,
    ) -> anyhow::Result<bool> {
        self.clock += 1;
        let clock = self.clock;
        if !self.dates.contains_key(&date) {
            let loaded = self.load(view, date)?;
            self.pending += loaded.pending.len();
            self.dates.insert(date, loaded);
        }
        if self.dates[&date].mapped.is_none() {
            self.map(date)?;
        }
        let d = self.dates.get_mut(&date).expect("loaded");
        d.used = clock;
        if d.pending.contains(&fp) {
            return Ok(true);
        }
        let runs = d.mapped.as_ref().expect("mapped");
        Ok(runs.iter().flatten().any(|r| search(r, fp)))
    }

    /// Adds the claims of a file whose parts were just committed as pending. Every date must
    /// have been searched by [`Claims::contains`] in this run.
    pub fn extend(&mut self, claimed: impl IntoIterator<Item = (NaiveDate, Fingerprint)>) {
        for (date, fp) in claimed {
            let d = self
                .dates
                .get_mut(&date)
                .expect("searched before it is claimed");
            if d.pending.insert(fp) {
                self.pending += 1;
            }
        }
    }

    /// How many fingerprints are held in memory.
    pub fn pending_len(&self) -> usize {
        self.pending
    }

    /// Writes every date's pending fingerprints as a new run (merged with the newest runs of at
    /// most twice its size) and names the runs, clearing the date's pending parts, in one
    /// transaction. Memory then holds no fingerprints. On failure nothing is named and the
    /// claims stay as they were (the pending parts are read again at the next load).
    pub fn checkpoint(&mut self, store: &mut Store) -> anyhow::Result<()> {
        let mut written: Vec<(NaiveDate, Vec<String>, u64)> = Vec::new();
        let mut replaced: Vec<String> = Vec::new();
        let mut dates: Vec<NaiveDate> = self
            .dates
            .iter()
            .filter(|(_, d)| !d.pending.is_empty() || d.unnamed)
            .map(|(date, _)| *date)
            .collect();
        dates.sort();
        let result = (|| -> anyhow::Result<()> {
            for date in &dates {
                if self.dates[date].mapped.is_none() {
                    self.map(*date)?;
                }
                let d = &self.dates[date];
                let mut new: Vec<Fingerprint> = d.pending.iter().copied().collect();
                new.sort_unstable();
                let mut runs = d.runs.clone();
                let mapped = d.mapped.as_ref().expect("mapped");
                // The logarithmic method: the new run takes in the newest runs that are at
                // most twice its size (as it grows).
                let mut k = runs.len();
                while k > 0 {
                    let run = mapped[k - 1].as_deref();
                    if run.map_or(0, |r| r.len() / WIDTH) > 2 * new.len().max(1) {
                        break;
                    }
                    k -= 1;
                    if let Some(r) = run {
                        new = merge(r, &new).collect();
                    }
                }
                let kept: Vec<Option<&[u8]>> = (0..k).map(|i| mapped[i].as_deref()).collect();
                let ids = kept
                    .iter()
                    .flatten()
                    .map(|r| (r.len() / WIDTH) as u64)
                    .sum::<u64>()
                    + new.len() as u64;
                replaced.extend(runs.drain(k..));
                if !new.is_empty() {
                    let rel = write_run(&self.state_dir, *date, &runs_after(&d.runs), &new)?;
                    runs.push(rel);
                }
                written.push((*date, runs, ids));
            }
            let tx = store.transaction()?;
            for (date, runs, ids) in &written {
                tx.set_claim_runs(*date, runs, *ids)?;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            // Nothing was named: remove what was written, keep the replaced runs.
            for (date, runs, _) in &written {
                let named = &self.dates[date].runs;
                for r in runs.iter().filter(|r| !named.contains(r)) {
                    let _ = std::fs::remove_file(self.state_dir.join(r));
                }
            }
            return Err(e);
        }
        for (date, runs, _) in written {
            let d = self.dates.get_mut(&date).expect("loaded");
            self.pending -= d.pending.len();
            d.pending = FingerprintSet::default();
            d.unnamed = false;
            d.runs = runs;
            d.mapped = None;
        }
        for r in replaced {
            let _ = std::fs::remove_file(self.state_dir.join(r));
        }
        Ok(())
    }

    /// Reads the claims of `date`: its runs as named (mapped later) and its pending parts, or,
    /// when the store names none (or a named run is lost), every part of the date.
    fn load(&mut self, view: &dyn ClaimsView, date: NaiveDate) -> anyhow::Result<Date> {
        let named = view.claim_runs(date)?;
        if let Some(runs) = named {
            let lost = runs
                .iter()
                .find(|r| open_sorted(&self.state_dir.join(r)).is_err());
            match lost {
                None => {
                    remove_unnamed(&self.state_dir, date, &runs);
                    let pending =
                        read_fingerprints(&self.state_dir, &view.pending_parts_of(date)?)?;
                    return Ok(Date {
                        runs,
                        mapped: None,
                        pending,
                        unnamed: false,
                        used: 0,
                    });
                }
                Some(r) => {
                    // The runs are an index of the parts: a lost one is rebuilt, not fatal.
                    tracing::warn!(
                        "rebuilding the request-id claims of {date} from its events: {r} is missing or damaged"
                    );
                }
            }
        }
        let parts = view.parts_of(date)?;
        remove_unnamed(&self.state_dir, date, &[]);
        let pending = read_fingerprints(&self.state_dir, &parts)?;
        Ok(Date {
            runs: Vec::new(),
            mapped: None,
            unnamed: !parts.is_empty(),
            pending,
            used: 0,
        })
    }

    /// Maps the runs of `date`, unmapping the least recently searched date first when
    /// [`MAX_MAPPED_DATES`] are mapped.
    fn map(&mut self, date: NaiveDate) -> anyhow::Result<()> {
        let mapped: Vec<NaiveDate> = self
            .dates
            .iter()
            .filter(|(_, d)| d.mapped.is_some())
            .map(|(k, _)| *k)
            .collect();
        if mapped.len() >= MAX_MAPPED_DATES {
            if let Some(lru) = mapped.iter().min_by_key(|k| self.dates[*k].used) {
                self.dates.get_mut(lru).expect("listed").mapped = None;
            }
        }
        let d = self.dates.get_mut(&date).expect("loaded");
        let mut maps = Vec::with_capacity(d.runs.len());
        for r in &d.runs {
            maps.push(map(&self.state_dir.join(r))?);
        }
        d.mapped = Some(maps);
        Ok(())
    }
}

/// The directory of `date`'s runs, relative to the state directory.
pub fn date_dir(date: NaiveDate) -> String {
    format!("claims/local_date={date}")
}

/// The next run number after the runs named: one more than the largest.
fn runs_after(runs: &[String]) -> u64 {
    runs.iter()
        .filter_map(|r| {
            r.rsplit('/')
                .next()?
                .strip_prefix("run-")?
                .strip_suffix(".fp")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(1, |n| n + 1)
}

/// Removes the files of `date`'s directory that `named` does not list (left by a crash
/// between writing a run and naming it).
fn remove_unnamed(state_dir: &Path, date: NaiveDate, named: &[String]) {
    let dir = date_dir(date);
    let Ok(entries) = std::fs::read_dir(state_dir.join(&dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if !named.contains(&rel) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The fingerprints of the calls in `parts`.
pub fn read_fingerprints(state_dir: &Path, parts: &[String]) -> anyhow::Result<FingerprintSet> {
    let mut out = FingerprintSet::default();
    for_each_request_id(state_dir, parts, |org, id| {
        out.insert(fingerprint(org, id));
    })?;
    Ok(out)
}

/// Writes run number `n` of `date` from sorted fingerprints; returns its path relative to
/// `state_dir`.
fn write_run(
    state_dir: &Path,
    date: NaiveDate,
    n: &u64,
    sorted: &[Fingerprint],
) -> anyhow::Result<String> {
    let rel = format!("{}/run-{n}.fp", date_dir(date));
    write_sorted(&state_dir.join(&rel), sorted)?;
    Ok(rel)
}

/// Writes sorted fingerprints to `path` whole: a temporary file, synced, then renamed.
fn write_sorted(path: &Path, sorted: &[Fingerprint]) -> anyhow::Result<()> {
    let dir = path.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("fp.tmp");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for fp in sorted {
        w.write_all(&fp.to_be_bytes())?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The bytes of a sorted fingerprint file, mapped from disk.
struct Sorted(memmap2::Mmap);

impl std::ops::Deref for Sorted {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps a claims file; `None` when it is empty (an empty file cannot be mapped).
fn map(path: &Path) -> anyhow::Result<Option<Sorted>> {
    let Some(file) = open_sorted(path)? else {
        return Ok(None);
    };
    // Safety: claims files are written once, renamed into place, and never modified after.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    Ok(Some(Sorted(map)))
}

/// Opens a claims file and checks its size: `None` when it is empty.
fn open_sorted(path: &Path) -> anyhow::Result<Option<File>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        len.is_multiple_of(WIDTH as u64),
        "{} is not a claims file (its size is not a multiple of {WIDTH})",
        path.display()
    );
    Ok(Some(file))
}

fn at(base: &[u8], i: usize) -> Fingerprint {
    let mut b = [0u8; WIDTH];
    b.copy_from_slice(&base[i * WIDTH..(i + 1) * WIDTH]);
    // Big-endian on disk, so the file sorts the same way as bytes and as numbers.
    u128::from_be_bytes(b)
}

/// Whether the sorted file `base` holds `fp`. Fingerprints are uniform, so interpolation
/// finds the place in a few probes (about log log n: three or four for 20 M ids, where
/// bisection needs 25, each a cache miss in a file this size). After eight rounds, or once the
/// range is small, it bisects: a skewed file costs at most eight probes more.
fn search(base: &[u8], fp: Fingerprint) -> bool {
    // The answer, if any, is in [lo, hi): the entry before lo is `below` (< fp), the entry at
    // hi is `above` (> fp); the ends of the file count as 0 and u128::MAX.
    let (mut lo, mut hi) = (0, base.len() / WIDTH);
    let (mut below, mut above) = (0u128, u128::MAX);
    let top = |k: Fingerprint| (k >> 64) as u64;
    for _ in 0..8 {
        let (a, b, f) = (top(below), top(above), top(fp));
        if hi - lo <= 16 || b <= a {
            break;
        }
        // Where fp would sit if [lo, hi) were spread evenly between `below` and `above`.
        let off = u128::from(f - a) * (hi - lo) as u128 / u128::from(b - a);
        let probe = (lo + off as usize).min(hi - 1);
        let v = at(base, probe);
        match v.cmp(&fp) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => (lo, below) = (probe + 1, v),
            std::cmp::Ordering::Greater => (hi, above) = (probe, v),
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at(base, mid).cmp(&fp) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    false
}

/// The sorted union of a file's fingerprints and sorted fingerprints.
fn merge<'a>(base: &'a [u8], sorted: &'a [Fingerprint]) -> impl Iterator<Item = Fingerprint> + 'a {
    let n = base.len() / WIDTH;
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let a = (i < n).then(|| at(base, i));
        let b = sorted.get(j).copied();
        match (a, b) {
            (None, None) => None,
            (Some(x), None) => {
                i += 1;
                Some(x)
            }
            (None, Some(y)) => {
                j += 1;
                Some(y)
            }
            (Some(x), Some(y)) => {
                if x <= y {
                    i += 1;
                    if x == y {
                        j += 1;
                    }
                    Some(x)
                } else {
                    j += 1;
                    Some(y)
                }
            }
        }
    })
}

/// Dedupe sets per local date that stay bounded in memory: a backfill's first-occurrence rule
/// over its range (DESIGN §7: a backfill's memory is bounded by its batches, not its range).
/// Past [`Scratch::MAX_HELD`] fingerprints in memory, every date's set is written as a sorted
/// run under its own directory (removed when dropped), merged by the logarithmic method.
pub struct Scratch {
    dir: PathBuf,
    dates: FxHashMap<NaiveDate, (FingerprintSet, Vec<Sorted>)>,
    held: usize,
    written: u64,
}

impl Scratch {
    /// Fingerprints held in memory before they are written out (64 MiB of them).
    pub const MAX_HELD: usize = 4 << 20;

    /// Dedupe sets whose runs go under `dir` (created on first need, removed on drop).
    pub fn new(dir: PathBuf) -> Scratch {
        Scratch {
            dir,
            dates: FxHashMap::default(),
            held: 0,
            written: 0,
        }
    }

    /// Whether `fp` is claimed on `date`.
    pub fn contains(&self, date: NaiveDate, fp: Fingerprint) -> bool {
        self.dates
            .get(&date)
            .is_some_and(|(set, runs)| set.contains(&fp) || runs.iter().any(|r| search(r, fp)))
    }

    /// Claims `fp` on `date`: true if it was not claimed there before.
    pub fn insert(&mut self, date: NaiveDate, fp: Fingerprint) -> anyhow::Result<bool> {
        let (set, runs) = self.dates.entry(date).or_default();
        if set.contains(&fp) || runs.iter().any(|r| search(r, fp)) {
            return Ok(false);
        }
        set.insert(fp);
        self.held += 1;
        if self.held >= Self::MAX_HELD {
            self.spill()?;
        }
        Ok(true)
    }

    /// Writes every date's set as a sorted run.
    fn spill(&mut self) -> anyhow::Result<()> {
        for (date, (set, runs)) in self.dates.iter_mut() {
            if set.is_empty() {
                continue;
            }
            let mut new: Vec<Fingerprint> = set.drain().collect();
            new.sort_unstable();
            while let Some(last) = runs.last() {
                if last.len() / WIDTH > 2 * new.len() {
                    break;
                }
                let last = runs.pop().expect("checked");
                new = merge(&last, &new).collect();
            }
            self.written += 1;
            let path = self
                .dir
                .join(format!("local_date={date}"))
                .join(format!("run-{}.fp", self.written));
            write_sorted(&path, &new)?;
            runs.extend(map(&path)?);
        }
        self.held = 0;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.dates.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_of(fps: &[Fingerprint]) -> Vec<u8> {
        fps.iter().flat_map(|f| f.to_be_bytes()).collect()
    }

    #[test]
    fn search_finds_exactly_the_members() {
        let mut fps: Vec<Fingerprint> = (0..1000)
            .map(|i| fingerprint("1", &format!("r{i}")))
            .collect();
        fps.sort_unstable();
        let base = base_of(&fps);
        assert!(fps.iter().all(|f| search(&base, *f)));
        assert!((1000..2000).all(|i| !search(&base, fingerprint("1", &format!("r{i}")))));
        assert!(!search(&[], fps[0]));
    }

    #[test]
    fn search_works_however_the_fingerprints_are_spread() {
        // Far from uniform: the first guess is wrong by nearly the whole file either way.
        let low: Vec<Fingerprint> = (0..500).map(|i| i * 2 + 1).collect();
        let high: Vec<Fingerprint> = (0..500).map(|i| u128::MAX - i * 2).rev().collect();
        // Clustered: interpolation keeps guessing wrong and must fall back to bisection.
        let clustered: Vec<Fingerprint> = (0..500u128)
            .map(|i| {
                if i < 490 {
                    i * 2 + 1
                } else {
                    u128::MAX - (500 - i) * 2
                }
            })
            .collect();
        // Equal top halves: nothing to interpolate on.
        let same_top: Vec<Fingerprint> = (0..500u128).map(|i| (5u128 << 64) | (i * 3)).collect();
        for fps in [low, high, clustered, same_top, vec![7], vec![0, u128::MAX]] {
            let base = base_of(&fps);
            for f in &fps {
                assert!(search(&base, *f), "{f} is a member");
                assert!(!search(&base, f.wrapping_add(1)) || fps.contains(&f.wrapping_add(1)));
                assert!(!search(&base, f.wrapping_sub(1)) || fps.contains(&f.wrapping_sub(1)));
            }
        }
    }

    #[test]
    fn merge_is_the_sorted_union_without_repeats() {
        let base = base_of(&[1, 3, 5, 7]);
        let merged: Vec<Fingerprint> = merge(&base, &[0, 3, 4, 8]).collect();
        assert_eq!(merged, vec![0, 1, 3, 4, 5, 7, 8]);
        let only_new: Vec<Fingerprint> = merge(&[], &[2, 9]).collect();
        assert_eq!(only_new, vec![2, 9]);
    }

    #[test]
    fn fingerprints_differ_per_org_and_per_id() {
        assert_ne!(fingerprint("1", "req-1"), fingerprint("1", "req-2"));
        assert_ne!(fingerprint("1", "req-1"), fingerprint("2", "req-1"));
        // The separator keeps the pair apart from a different split of the same bytes.
        assert_ne!(fingerprint("12", "3"), fingerprint("1", "23"));
        assert_eq!(fingerprint("1", "req-1"), fingerprint("1", "req-1"));
    }

    #[test]
    fn run_numbers_continue_after_the_largest_named() {
        let runs = vec![
            "claims/local_date=2025-10-08/run-3.fp".to_string(),
            "claims/local_date=2025-10-08/run-11.fp".to_string(),
        ];
        assert_eq!(runs_after(&runs), 12);
        assert_eq!(runs_after(&[]), 1);
    }

    #[test]
    fn scratch_sets_spill_to_disk_and_still_find_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let scratch_dir = dir.path().join("scratch");
        let mut s = Scratch::new(scratch_dir.clone());
        let d1 = NaiveDate::from_ymd_opt(2025, 10, 8).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2025, 10, 9).unwrap();
        for i in 0..3000u32 {
            assert!(s.insert(d1, fingerprint("1", &i.to_string())).unwrap());
            if i % 1000 == 999 {
                s.spill().unwrap();
            }
        }
        // The same ids on another date are other calls.
        assert!(s.insert(d2, fingerprint("1", "5")).unwrap());
        for i in 0..3000u32 {
            assert!(!s.insert(d1, fingerprint("1", &i.to_string())).unwrap());
        }
        assert!(!s.insert(d2, fingerprint("1", "5")).unwrap());
        // Three spills of 1,000 merged down by the logarithmic method.
        assert!(s.dates[&d1].1.len() <= 2, "{} runs", s.dates[&d1].1.len());
        assert!(scratch_dir.exists());
        drop(s);
        assert!(!scratch_dir.exists(), "the scratch runs go with it");
    }
}
