//! Retention (DESIGN §6): removes what is older than each horizon of `[retention]`; the ledger,
//! the `files` rows and every outbox key with its status are kept forever.
//!
//! - **Events**: a local date's partition (its parts and its request-id claims) is dropped
//!   once the date is past the events horizon for every org with a ledger row on it — an org
//!   the registry no longer names counts as the westernmost zone, so it keeps the date
//!   longest — and only once every org-day of the date is settled (no recompute pending, the
//!   day closed), so nothing that still reads the events loses them.
//! - **Archive** and **quarantine** by their file's ingest time, **outbox** bodies by their send
//!   time, in whole UTC days.
//!
//! Each removal commits in the store first and deletes files after; a crash in between leaves
//! files nothing lists, which the next run removes. Every purge is recorded (for the digest and
//! `status`) and logged; the store then gives its free pages back.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::config::Retention;
use crate::setup::Setup;
use crate::store::{PurgeRecord, Store};

/// The zone whose local date is the earliest on Earth (UTC−12): a date past the horizon there
/// is past it for every org.
const WESTERNMOST: chrono_tz::Tz = chrono_tz::Etc::GMTPlus12;

/// What one run of retention removed and kept.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The purges, as recorded.
    pub purges: Vec<PurgeRecord>,
    /// Dates past the horizon kept for now, with the reason.
    pub kept: Vec<String>,
    /// Leftovers of an interrupted run removed (files nothing listed).
    pub leftovers: u64,
}

/// Runs retention at `now`.
pub fn run(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let state_dir = &setup.config.state_dir;
    let r: Retention = setup.config.retention;
    let mut out = Outcome::default();
    let at = now.timestamp_millis();
    if let Some(days) = r.events {
        purge_events(setup, store, now, days, stop, &mut out)?;
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(out);
    }
    if let Some(days) = r.archive {
        let before = utc_day_start(now, days);
        let files = store.archived_before(&before)?;
        if !files.is_empty() {
            let mut bytes = 0u64;
            let tx = store.transaction()?;
            for (seq, _) in &files {
                tx.mark_archive_purged(*seq)?;
            }
            tx.commit()?;
            for (_, path) in &files {
                bytes += remove_file(&state_dir.join(path));
            }
            out.purges.push(record(
                store,
                at,
                "archive",
                format!("{} archived file(s) ingested before {before}", files.len()),
                files.len() as u64,
                bytes,
            )?);
        }
    }
    // An archived copy whose purge committed before a crash removed it.
    for path in store.purged_archive_paths()? {
        let p = state_dir.join(&path);
        if p.exists() {
            remove_file(&p);
            out.leftovers += 1;
        }
    }
    if let Some(days) = r.quarantine {
        let before = utc_day_start(now, days);
        let files = store.quarantine_before(&before)?;
        if !files.is_empty() {
            let tx = store.transaction()?;
            for (sha, _) in &files {
                tx.purge_quarantine_of(sha)?;
            }
            tx.commit()?;
            let lines: u64 = files.iter().map(|(_, n)| n).sum();
            out.purges.push(record(
                store,
                at,
                "quarantine",
                format!(
                    "{lines} quarantined line(s) of {} file(s) ingested before {before}",
                    files.len()
                ),
                lines,
                0,
            )?);
        }
    }
    if let Some(days) = r.outbox {
        let before = utc_day_start(now, days);
        let before_ms = DateTime::parse_from_rfc3339(&before)
            .expect("an RFC 3339 instant")
            .timestamp_millis();
        let tx = store.transaction()?;
        let (keys, bytes) = tx.purge_sent_bodies(before_ms)?;
        // Without [smtp] each sent message is also a `.eml` file: it goes with its body, and
        // before the commit, so a crash in between leaves the bodies and the next run redoes
        // both (removing a file already gone is nothing).
        let dir = state_dir.join("outbox");
        let (mut eml_n, mut eml_bytes) = (0u64, 0u64);
        for key in &keys {
            let removed = remove_file(&dir.join(crate::mail::eml_name(key)));
            if removed > 0 {
                eml_bytes += removed;
                eml_n += 1;
            }
        }
        tx.commit()?;
        if !keys.is_empty() {
            let n = keys.len() as u64;
            out.purges.push(record(
                store,
                at,
                "outbox",
                format!("the bodies of {n} message(s) sent before {before}"),
                n,
                bytes,
            )?);
        }
        if eml_n > 0 {
            out.purges.push(record(
                store,
                at,
                "outbox",
                format!("the .eml files of {eml_n} message(s) sent before {before}"),
                eml_n,
                eml_bytes,
            )?);
        }
    }
    if !out.purges.is_empty() {
        store.give_back_space()?;
    }
    Ok(out)
}

/// Drops the event partitions past the horizon (see the module's documentation).
fn purge_events(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    days: u32,
    stop: &AtomicBool,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let state_dir = &setup.config.state_dir;
    // No org's horizon is later than the one of the easternmost zone (UTC+14).
    let latest = crate::ingest::events_horizon(chrono_tz::Etc::GMTMinus14, now, days);
    let everywhere = crate::ingest::events_horizon(WESTERNMOST, now, days);
    let mut dropped: Vec<NaiveDate> = Vec::new();
    let (mut parts, mut bytes) = (0u64, 0u64);
    for date in store.part_dates_before(latest)? {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let orgs = store.orgs_on(date)?;
        let (within, past): (Vec<&String>, Vec<&String>) = orgs.iter().partition(|org| {
            let tz = setup
                .registry
                .orgs
                .get(org.as_str())
                .map_or(WESTERNMOST, |o| o.timezone);
            date >= crate::ingest::events_horizon(tz, now, days)
        });
        if let Some(org) = within.first() {
            // Worth saying once the date is past the horizon of some org on it.
            if !past.is_empty() || date < everywhere {
                out.kept
                    .push(format!("{date}: within the horizon of org {org}"));
            }
            continue;
        }
        let unsettled = store.unsettled_on(date)?;
        if let Some(org) = unsettled.first() {
            out.kept.push(format!(
                "{date}: org {org}'s day is not settled yet (recompute or close pending)"
            ));
            continue;
        }
        let tx = store.transaction()?;
        let listed = tx.drop_parts_on(date)?;
        let runs = tx.forget_claims(date)?;
        tx.commit()?;
        crate::faults::check("retention:after-commit")?;
        parts += listed.len() as u64;
        for p in listed.iter().chain(runs.iter()) {
            bytes += remove_file(&state_dir.join(p));
        }
        remove_dir(&state_dir.join(crate::events::date_dir(date)));
        remove_dir(&state_dir.join(crate::claims::date_dir(date)));
        dropped.push(date);
    }
    // Directories of dates before every org's horizon that nothing lists: left by a crash
    // after a drop committed (no ingest writes there any more: such calls are expired).
    out.leftovers += remove_unlisted(state_dir, "events", everywhere, store)?;
    out.leftovers += remove_unlisted(state_dir, "claims", everywhere, store)?;
    if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
        let what = if first == last {
            format!("the events and claims of {first}")
        } else {
            format!(
                "the events and claims of {} dates from {first} to {last}",
                dropped.len()
            )
        };
        out.purges.push(record(
            store,
            now.timestamp_millis(),
            "events",
            format!("{what} ({parts} part(s))"),
            dropped.len() as u64,
            bytes,
        )?);
    }
    Ok(())
}

/// Removes `area/local_date=D` directories with D before `before` whose date the store lists
/// no parts or claims for; returns how many.
fn remove_unlisted(
    state_dir: &Path,
    area: &str,
    before: NaiveDate,
    store: &Store,
) -> anyhow::Result<u64> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(area)) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(date) = name
            .to_str()
            .and_then(|n| n.strip_prefix("local_date="))
            .and_then(|d| d.parse::<NaiveDate>().ok())
        else {
            continue;
        };
        if date >= before || store.date_is_listed(date)? {
            continue;
        }
        remove_dir(&entry.path());
        n += 1;
    }
    Ok(n)
}

/// Records one purge and logs it.
fn record(
    store: &mut Store,
    at: i64,
    area: &str,
    what: String,
    items: u64,
    bytes: u64,
) -> anyhow::Result<PurgeRecord> {
    let p = PurgeRecord {
        at,
        area: area.to_string(),
        what,
        items,
        bytes,
    };
    let tx = store.transaction()?;
    tx.record_purge(&p)?;
    tx.commit()?;
    tracing::info!(area, items, bytes, "retention removed {}", p.what);
    Ok(p)
}

/// The start of the UTC day `days` before today's, as `files.processed_at` is written.
fn utc_day_start(now: DateTime<Utc>, days: u32) -> String {
    let day = now
        .date_naive()
        .checked_sub_days(Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MIN);
    format!("{day}T00:00:00.000Z")
}

/// Removes a file; returns the bytes it held (0 when it was already gone).
fn remove_file(path: &Path) -> u64 {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(path) {
        Ok(()) => len,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!("cannot remove {}: {e}", path.display());
            0
        }
    }
}

fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}
