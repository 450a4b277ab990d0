//! Request-id claims: which request ids already have an event, so that a later occurrence is
//! counted as a duplicate and never charged.
//!
//! The claimed ids are exactly the `request_id`s of the listed Parquet parts, so the claims
//! are an index that can always be rebuilt from the parts. The index is kept as 128-bit
//! fingerprints (the first 16 bytes of the id's SHA-256):
//! - a **base** file, `state/claims/base-<n>.fp`: every fingerprint of the parts it covers,
//!   sorted, 16 bytes each, mapped into memory and binary-searched (nothing is loaded);
//! - up to eight **recent** files of the same form, one per ingest run since the base was
//!   last rewritten;
//! - the **pending** parts, listed in the store's `claims_pending` table in the same
//!   transaction as the parts themselves. The ids claimed during a run are held in an
//!   in-memory set; at the end of the run [`Claims::checkpoint`] writes them as a recent file
//!   (or merges everything into a new base) and empties `claims_pending` in one transaction.
//!   Only after a crash are pending parts left, and the next open reads their ids.
//!
//! A file is written whole and renamed before the transaction that names it, so a crash leaves
//! at worst an unnamed file behind, never a named partial one. A backfill marks the claims
//! stale in its own transaction; the next open rebuilds them from the parts.
//!
//! Two different ids share a fingerprint with probability about n²/2¹²⁹ (10⁻²⁵ for 20 million
//! ids), and SHA-256 makes it infeasible to construct such a pair on purpose.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::events::for_each_request_id;
use crate::store::Store;

/// The fingerprint of a request id.
pub type Fingerprint = u128;

pub fn fingerprint(request_id: &str) -> Fingerprint {
    let digest = Sha256::digest(request_id.as_bytes());
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

/// The claims of a store: the base file, the recent files, and the pending set.
pub struct Claims {
    base: Option<Sorted>,
    recent: Vec<Sorted>,
    pending: FingerprintSet,
}

/// Recent files allowed before they are merged into the base.
const MAX_RECENT: usize = 8;

impl Claims {
    /// Opens the claims of the store in `state_dir`, rebuilding them from the parts when the
    /// store has none yet or a backfill left them stale. A read-only store (`writable` false)
    /// rebuilds them in memory only.
    pub fn open(state_dir: &Path, store: &Store, writable: bool) -> anyhow::Result<Claims> {
        let base_rel = store.meta("claims_base")?;
        let stale = store.meta("claims_stale")?.is_some();
        let Some(base_rel) = base_rel.filter(|_| !stale) else {
            if writable {
                return rebuild(state_dir, store);
            }
            let all = store.all_parts()?;
            return Ok(Claims {
                base: None,
                recent: Vec::new(),
                pending: read_fingerprints(state_dir, &all)?,
            });
        };
        let mapped = map(&state_dir.join(&base_rel)).and_then(|base| {
            let mut recent = Vec::new();
            for rel in recent_files(store)? {
                recent.extend(map(&state_dir.join(rel))?);
            }
            Ok((base, recent))
        });
        let (base, recent) = match mapped {
            Ok(files) => files,
            // The files are an index of the parts: a lost one is rebuilt, not fatal.
            Err(e) if writable => {
                tracing::warn!("rebuilding the request-id claims from the events: {e:#}");
                return rebuild(state_dir, store);
            }
            Err(e) => return Err(e),
        };
        if writable {
            // A crash between writing a file and naming it leaves it unnamed: remove it.
            let mut named = recent_files(store)?;
            named.push(base_rel);
            remove_unnamed(state_dir, &named);
        }
        let pending = read_fingerprints(state_dir, &store.claims_pending()?)?;
        Ok(Claims {
            base,
            recent,
            pending,
        })
    }

    /// Whether `fp` is claimed.
    pub fn contains(&self, fp: Fingerprint) -> bool {
        self.pending.contains(&fp)
            || self.base.as_deref().is_some_and(|b| search(b, fp))
            || self.recent.iter().any(|r| search(r, fp))
    }

    /// Adds the claims of a file whose parts were just committed as pending.
    pub fn extend(&mut self, fps: FingerprintSet) {
        self.pending.extend(fps);
    }

    /// How many fingerprints are held in memory.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn base_len(&self) -> usize {
        self.base.as_deref().map_or(0, |b| b.len() / WIDTH)
    }

    fn recent_len(&self) -> usize {
        self.recent.iter().map(|r| r.len() / WIDTH).sum()
    }

    /// Writes the pending fingerprints to disk at the end of a run, so the next run reads no
    /// parts: as a new recent file, or merged with the recent files into a new base once they
    /// are an eighth of it (each fingerprint is then rewritten a bounded number of times on
    /// average) or too many.
    pub fn checkpoint(&mut self, state_dir: &Path, store: &mut Store) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let small = self.recent.len() < MAX_RECENT
            && (self.pending.len() + self.recent_len()) * 8 < self.base_len();
        if !small {
            // The run is over: nothing searches the new base before the next run maps it.
            return self.merge_into_base(state_dir, store, false);
        }
        let mut pending: Vec<Fingerprint> = self.pending.iter().copied().collect();
        pending.sort_unstable();
        let covered = store.claims_pending()?;
        let rel = write_file(state_dir, store, "recent", pending.into_iter())?;
        let written = map(&state_dir.join(&rel))?;
        let base = store.meta("claims_base")?.expect("open claims have a base");
        let mut recent = recent_files(store)?;
        recent.push(rel);
        let tx = store.transaction()?;
        tx.set_claims_files(&base, &recent, &covered)?;
        tx.commit()?;
        self.recent.extend(written);
        self.pending = FingerprintSet::default();
        Ok(())
    }

    /// Writes base ∪ recent ∪ pending as the new base, with no recent files and nothing
    /// pending, in the middle of a run that goes on searching it. On failure before the new
    /// base is committed the claims are left as they were; if it cannot be read back after,
    /// the error says so and these claims must not be searched again (the next open reads it).
    pub fn compact(&mut self, state_dir: &Path, store: &mut Store) -> anyhow::Result<()> {
        self.merge_into_base(state_dir, store, true)
    }

    fn merge_into_base(
        &mut self,
        state_dir: &Path,
        store: &mut Store,
        searched_next: bool,
    ) -> anyhow::Result<()> {
        let mut newer: Vec<Fingerprint> = self.pending.iter().copied().collect();
        for r in &self.recent {
            newer.extend((0..r.len() / WIDTH).map(|i| at(r, i)));
        }
        newer.sort_unstable();
        newer.dedup();
        let covered = store.claims_pending()?;
        let mut previous = recent_files(store)?;
        previous.extend(store.meta("claims_base")?);
        let old = self.base.as_deref().unwrap_or(&[]);
        let rel = write_file(state_dir, store, "base", merge(old, &newer))?;
        let tx = store.transaction()?;
        tx.set_claims_files(&rel, &[], &covered)?;
        tx.commit()?;
        // The new base holds them all now. The old base and these copies go before the new one
        // is read: one base in memory at a time.
        drop(newer);
        self.base = None;
        self.recent.clear();
        self.pending = FingerprintSet::default();
        let path = state_dir.join(&rel);
        self.base = if searched_next {
            for_search(&path).or_else(|e| {
                tracing::warn!("mapping the request-id claims instead of reading them: {e:#}");
                map(&path)
            })
        } else {
            map(&path)
        }
        .context("the request-id claims were rewritten but cannot be read back; this run must stop, the next one reads them")?;
        for prev in previous.into_iter().filter(|p| *p != rel) {
            let _ = std::fs::remove_file(state_dir.join(prev));
        }
        Ok(())
    }
}

/// Removes the files of `state_dir/claims` that `named` (paths relative to `state_dir`) does
/// not list.
fn remove_unnamed(state_dir: &Path, named: &[String]) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("claims")) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = format!("claims/{}", entry.file_name().to_string_lossy());
        if !named.contains(&rel) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The recent files named in the store, oldest first.
fn recent_files(store: &Store) -> anyhow::Result<Vec<String>> {
    Ok(store
        .meta("claims_recent")?
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default())
}

/// Rebuilds the claims from every listed part.
fn rebuild(state_dir: &Path, store: &Store) -> anyhow::Result<Claims> {
    let all = store.all_parts()?;
    let mut fps: Vec<Fingerprint> = read_fingerprints(state_dir, &all)?.into_iter().collect();
    fps.sort_unstable();
    let rel = write_file(state_dir, store, "base", fps.into_iter())?;
    let map = for_search(&state_dir.join(&rel))?;
    let mut previous = recent_files(store)?;
    previous.extend(store.meta("claims_base")?);
    store.replace_claims_base(&rel)?;
    for prev in previous.into_iter().filter(|p| *p != rel) {
        let _ = std::fs::remove_file(state_dir.join(prev));
    }
    Ok(Claims {
        base: map,
        recent: Vec::new(),
        pending: FingerprintSet::default(),
    })
}

/// The fingerprints of the request ids in `parts`.
fn read_fingerprints(state_dir: &Path, parts: &[String]) -> anyhow::Result<FingerprintSet> {
    let mut out = FingerprintSet::default();
    for_each_request_id(state_dir, parts, |_, id| {
        out.insert(fingerprint(id));
    })?;
    Ok(out)
}

/// Writes a new claims file (`kind` is base or recent) from sorted fingerprints; returns its
/// path relative to `state_dir` and its mapping (`None` when empty).
fn write_file(
    state_dir: &Path,
    store: &Store,
    kind: &str,
    sorted: impl Iterator<Item = Fingerprint>,
) -> anyhow::Result<String> {
    let generation: u64 = store
        .meta("claims_generation")?
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
        + 1;
    store.set_meta("claims_generation", &generation.to_string())?;
    let rel = format!("claims/{kind}-{generation}.fp");
    let path = state_dir.join(&rel);
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
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rel)
}

/// The largest claims file read into memory (32 Mi ids); a larger one is mapped, and the
/// operating system keeps what it can of it in the page cache.
const IN_MEMORY_MAX: u64 = 512 << 20;

/// Opens a claims file that the rest of this run will search, millions of times when the run
/// is large enough to have rewritten it: read into memory when it is at most
/// [`IN_MEMORY_MAX`], else mapped. `None` when it is empty.
fn for_search(path: &Path) -> anyhow::Result<Option<Sorted>> {
    let Some((file, len)) = open_sorted(path)? else {
        return Ok(None);
    };
    if len > IN_MEMORY_MAX {
        return map_file(&file, path).map(Some);
    }
    // In memory on huge pages where the kernel offers them on request: a search is a random
    // access, and with 4 KiB pages a large file costs an address-translation miss on nearly
    // every one.
    let mut bytes = memmap2::MmapMut::map_anon(len as usize)
        .context("cannot allocate memory for the request-id claims")?;
    #[cfg(target_os = "linux")]
    if let Err(e) = bytes.advise(memmap2::Advice::HugePage) {
        // Only slower without them.
        tracing::debug!("no huge pages for the request-id claims: {e}");
    }
    (&file)
        .read_exact(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(Sorted(bytes.make_read_only()?)))
}

/// The bytes of a sorted fingerprint file: mapped from disk, or held in memory when this run
/// wrote it.
struct Sorted(memmap2::Mmap);

impl std::ops::Deref for Sorted {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps a claims file; `None` when it is empty (an empty file cannot be mapped).
fn map(path: &Path) -> anyhow::Result<Option<Sorted>> {
    open_sorted(path)?
        .map(|(file, _)| map_file(&file, path))
        .transpose()
}

/// Opens a claims file and checks its size: `None` when it is empty, else the file and its
/// length.
fn open_sorted(path: &Path) -> anyhow::Result<Option<(File, u64)>> {
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
    Ok(Some((file, len)))
}

fn map_file(file: &File, path: &Path) -> anyhow::Result<Sorted> {
    // Safety: claims files are written once, renamed into place, and never modified after.
    let map = unsafe { memmap2::Mmap::map(file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    Ok(Sorted(map))
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

/// The sorted union of a base and sorted fingerprints.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base_of(fps: &[Fingerprint]) -> Vec<u8> {
        fps.iter().flat_map(|f| f.to_be_bytes()).collect()
    }

    #[test]
    fn claims_folded_in_mid_run_and_at_the_end_are_all_found() {
        // A run that compacts twice (the base then held in memory), then checkpoints a recent
        // file; a new open (base and recent file mapped) finds every id, and no other.
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let mut store = Store::open(&state.join("creditd.sqlite")).unwrap();
        let mut claims = Claims::open(state, &store, true).unwrap();
        let ids = |range: std::ops::Range<u32>| range.map(|i| fingerprint(&format!("id-{i}")));
        for end in [3000, 5000] {
            claims.extend(ids(end - 3000..end).collect());
            claims.compact(state, &mut store).unwrap();
            assert_eq!(claims.pending_len(), 0);
            assert!(ids(0..end).all(|f| claims.contains(f)));
            assert!(!ids(end..end + 1000).any(|f| claims.contains(f)));
        }
        claims.extend(ids(5000..5100).collect());
        claims.checkpoint(state, &mut store).unwrap();
        assert!(ids(0..5100).all(|f| claims.contains(f)));
        let reopened = Claims::open(state, &store, true).unwrap();
        assert_eq!((reopened.base_len(), reopened.recent_len()), (5000, 100));
        assert!(ids(0..5100).all(|f| reopened.contains(f)));
        assert!(!ids(5100..8000).any(|f| reopened.contains(f)));
    }

    #[test]
    fn search_finds_exactly_the_members() {
        let mut fps: Vec<Fingerprint> = (0..1000).map(|i| fingerprint(&format!("r{i}"))).collect();
        fps.sort_unstable();
        let base = base_of(&fps);
        assert!(fps.iter().all(|f| search(&base, *f)));
        assert!((1000..2000).all(|i| !search(&base, fingerprint(&format!("r{i}")))));
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
    fn fingerprints_differ_for_ids_that_differ_in_one_byte() {
        assert_ne!(fingerprint("req-1"), fingerprint("req-2"));
        assert_ne!(fingerprint(""), fingerprint(" "));
        assert_eq!(fingerprint("req-1"), fingerprint("req-1"));
    }
}
