//! `creditd status`: the operator's one screen (DESIGN §4) — is it healthy right now, and if
//! not, what needs a human.

use std::path::Path;

use chrono::{DateTime, Utc};
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::one_line;
use crate::setup::Setup;
use crate::store::{OutboxCounts, Store};

/// Everything `status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub at: String,
    /// False when a human is needed; `attention` says why.
    pub healthy: bool,
    pub attention: Vec<String>,
    pub jobs: Vec<Job>,
    pub inbox: Inbox,
    pub gateways: Vec<Gateway>,
    pub skipped: Vec<Skipped>,
    pub outbox: Outbox,
    pub problems: Vec<Problem>,
    pub disk: Disk,
    pub retention: Retention,
}

#[derive(Debug, Serialize)]
pub struct Job {
    pub task: String,
    pub last_run: String,
    pub duration_s: f64,
    pub ok: bool,
    pub summary: String,
    pub last_success: Option<String>,
    pub runs: u64,
    pub failures: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Inbox {
    pub files: u64,
    pub bytes: u64,
    /// The file waiting longest (by its modification time) and that time.
    pub oldest_file: Option<String>,
    pub oldest_modified: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Gateway {
    pub gateway: String,
    pub last_file: String,
    pub last_seen: String,
    pub files: u64,
    /// Silent for longer than `[alerts] gateway_silence`.
    pub silent: bool,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub kind: String,
    pub since: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Outbox {
    pub queued: u64,
    pub retrying: u64,
    pub failed: u64,
    pub sent: u64,
    pub dropped: u64,
    /// Crossings found too late to mail (`[alerts] max_age`): kept, never sent.
    pub held: u64,
    pub oldest_queued: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub unit: String,
    pub target: String,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u64,
    pub error: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Disk {
    pub archive: u64,
    pub events: u64,
    pub claims: u64,
    pub store: u64,
    /// `.eml` files (without `[smtp]`).
    pub outbox: u64,
}

#[derive(Debug, Serialize)]
pub struct Retention {
    /// Days kept of each area; `None` keeps forever.
    pub archive: Option<u32>,
    pub events: Option<u32>,
    pub quarantine: Option<u32>,
    pub outbox: Option<u32>,
}

fn instant(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Bytes of the regular files under `dir` (0 when it does not exist).
pub fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Gathers the status of the state of `setup` at `now`; `store` is `None` on a fresh state.
pub fn gather(setup: &Setup, store: Option<&Store>, now: DateTime<Utc>) -> anyhow::Result<Status> {
    let state_dir = &setup.config.state_dir;
    let mut inbox = Inbox::default();
    let mut oldest: Option<(std::time::SystemTime, String)> = None;
    if let Ok(listing) = crate::ingest::list_inbox(&setup.config.inbox) {
        for (os_name, name) in &listing.files {
            let Ok(meta) = std::fs::symlink_metadata(setup.config.inbox.join(os_name)) else {
                continue;
            };
            inbox.files += 1;
            inbox.bytes += meta.len();
            if let Ok(m) = meta.modified() {
                if oldest.as_ref().is_none_or(|(t, _)| m < *t) {
                    oldest = Some((m, name.clone()));
                }
            }
        }
    }
    if let Some((t, name)) = oldest {
        inbox.oldest_file = Some(name);
        inbox.oldest_modified = Some(
            DateTime::<Utc>::from(t)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
        );
    }
    let mut store_bytes = 0;
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(m) = std::fs::metadata(state_dir.join(format!("creditd.sqlite{suffix}"))) {
            store_bytes += m.len();
        }
    }
    let disk = Disk {
        archive: bytes_under(&state_dir.join("archive")),
        events: bytes_under(&state_dir.join("events")),
        claims: bytes_under(&state_dir.join("claims")),
        store: store_bytes,
        outbox: bytes_under(&state_dir.join("outbox")),
    };
    let r = setup.config.retention;
    let retention = Retention {
        archive: r.archive,
        events: r.events,
        quarantine: r.quarantine,
        outbox: r.outbox,
    };
    type Parts = (Vec<Job>, Vec<Gateway>, Vec<Skipped>, Outbox, Vec<Problem>);
    let (jobs, gateways, skipped, outbox, problems): Parts = match store {
        None => Default::default(),
        Some(store) => {
            let jobs = store
                .task_runs()?
                .into_iter()
                .map(|j| Job {
                    task: j.task,
                    last_run: instant(j.last_at),
                    duration_s: j.last_ms as f64 / 1000.0,
                    ok: j.last_ok,
                    summary: one_line(&j.last_summary),
                    last_success: j.last_success_at.map(instant),
                    runs: j.runs,
                    failures: j.failures,
                })
                .collect();
            // One read of the files serves both the gateways and their silence.
            let timeline = crate::alerts::timeline(store.file_times()?);
            let silent: Vec<&str> = match setup.config.alerts.gateway_silence {
                Some(silence) => crate::alerts::silent(&timeline, silence, now)
                    .into_iter()
                    .map(|(g, _, _)| g)
                    .collect(),
                None => Vec::new(),
            };
            let gateways = timeline
                .iter()
                .filter_map(|(g, files)| {
                    let (file, at) = files.last()?;
                    Some(Gateway {
                        silent: silent.contains(&g.as_str()),
                        gateway: one_line(g),
                        last_file: one_line(file),
                        last_seen: at.clone(),
                        files: files.len() as u64,
                    })
                })
                .collect();
            let skipped = store
                .skipped_entries()?
                .into_iter()
                .map(|s| Skipped {
                    name: one_line(&s.name),
                    kind: s.kind,
                    since: s.first_seen,
                })
                .collect();
            let OutboxCounts {
                queued,
                retrying,
                failed,
                sent,
                dropped,
                held,
            } = store.outbox_counts()?;
            let outbox = Outbox {
                queued,
                retrying,
                failed,
                sent,
                dropped,
                held,
                oldest_queued: store.oldest_queued()?.map(instant),
            };
            let problems: Vec<Problem> = store
                .problems(None)?
                .into_iter()
                .map(|p| Problem {
                    unit: p.unit.as_str().to_string(),
                    target: one_line(&p.target),
                    first_seen: instant(p.first_seen),
                    last_seen: instant(p.last_seen),
                    attempts: p.attempts,
                    error: one_line(&p.error),
                })
                .collect();
            (jobs, gateways, skipped, outbox, problems)
        }
    };
    let mut attention = Vec::new();
    if !problems.is_empty() {
        attention.push(format!("{} open problem(s)", problems.len()));
    }
    let silent: Vec<&str> = gateways
        .iter()
        .filter(|g: &&Gateway| g.silent)
        .map(|g| g.gateway.as_str())
        .collect();
    if !silent.is_empty() {
        attention.push(format!("silent gateway(s): {}", silent.join(", ")));
    }
    if outbox.failed > 0 {
        attention.push(format!(
            "{} failed message(s): `creditd outbox list`, then `outbox retry KEY` or `outbox drop KEY`",
            outbox.failed
        ));
    }
    Ok(Status {
        at: now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        healthy: attention.is_empty(),
        attention,
        jobs,
        inbox,
        gateways,
        skipped,
        outbox,
        problems,
        disk,
        retention,
    })
}

fn mib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else if b < 1 << 30 {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    } else {
        format!("{:.2} GiB", b as f64 / 1073741824.0)
    }
}

fn days(d: Option<u32>) -> String {
    d.map_or_else(|| "forever".to_string(), |d| format!("{d}d"))
}

/// At most this many gateways and problems are listed in the text form.
const SHOWN: usize = 8;

/// The line that counts what a list of `total` left out past [`SHOWN`].
fn more(o: &mut String, total: usize) {
    if total > SHOWN {
        let _ = writeln!(
            o,
            "  … and {} more (`creditd status --format json` lists all)",
            total - SHOWN
        );
    }
}

/// The one-screen text form.
pub fn render_text(s: &Status) -> String {
    let mut o = String::new();
    let verdict = if s.healthy {
        "healthy".to_string()
    } else {
        format!("NEEDS ATTENTION: {}", s.attention.join("; "))
    };
    o.push_str(&format!("creditd status at {}: {verdict}\n\n", s.at));
    o.push_str("Jobs (last run, by the task's clock)\n");
    if s.jobs.is_empty() {
        o.push_str("  none has run yet\n");
    }
    for j in &s.jobs {
        o.push_str(&format!(
            "  {:<11} {}  {:>7.1} s  {}  (runs {}, failed {}{})\n",
            j.task,
            j.last_run,
            j.duration_s,
            if j.ok { "ok    " } else { "FAILED" },
            j.runs,
            j.failures,
            match (&j.last_success, j.ok) {
                (Some(t), false) => format!(", last ok {t}"),
                (None, false) => ", never ok".to_string(),
                _ => String::new(),
            }
        ));
    }
    o.push_str(&format!(
        "\nInbox      {} file(s), {}{}\n",
        s.inbox.files,
        mib(s.inbox.bytes),
        match (&s.inbox.oldest_file, &s.inbox.oldest_modified) {
            (Some(f), Some(t)) => format!(", oldest {} (modified {t})", one_line(f)),
            _ => String::new(),
        }
    ));
    if !s.skipped.is_empty() {
        o.push_str(&format!(
            "Skipped    {}\n",
            s.skipped
                .iter()
                .map(|k| format!("{} (a {}, since {})", k.name, k.kind, k.since))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    o.push_str("Gateways   last file (first seen by ingest)\n");
    if s.gateways.is_empty() {
        o.push_str("  none yet\n");
    }
    // One screen: silent gateways first, then the others, at most SHOWN lines; the JSON form
    // lists everything.
    let mut gateways: Vec<&Gateway> = s.gateways.iter().collect();
    gateways.sort_by_key(|g| !g.silent);
    for g in gateways.iter().take(SHOWN) {
        o.push_str(&format!(
            "  {:<10} {}  {}  ({} file(s)){}\n",
            g.gateway,
            g.last_seen,
            g.last_file,
            g.files,
            if g.silent { "  SILENT" } else { "" }
        ));
    }
    more(&mut o, gateways.len());
    let ob = &s.outbox;
    o.push_str(&format!(
        "Outbox     {} queued, {} retrying, {} failed{}; {} sent, {} dropped, {} held (max_age)\n",
        ob.queued,
        ob.retrying,
        ob.failed,
        ob.oldest_queued
            .as_ref()
            .map(|t| format!(" (oldest queued {t})"))
            .unwrap_or_default(),
        ob.sent,
        ob.dropped,
        ob.held
    ));
    o.push_str(&format!("Problems   {} open\n", s.problems.len()));
    for p in s.problems.iter().take(SHOWN) {
        o.push_str(&format!(
            "  {} {}: {} (since {}, {} attempt(s))\n",
            p.unit, p.target, p.error, p.first_seen, p.attempts
        ));
    }
    more(&mut o, s.problems.len());
    let d = &s.disk;
    o.push_str(&format!(
        "Disk       archive {}, events {}, claims {}, store {}, .eml {}\n",
        mib(d.archive),
        mib(d.events),
        mib(d.claims),
        mib(d.store),
        mib(d.outbox)
    ));
    let r = &s.retention;
    o.push_str(&format!(
        "Retention  archive {}, events {}, quarantine {}, outbox {}\n",
        days(r.archive),
        days(r.events),
        days(r.quarantine),
        days(r.outbox)
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(gateways: usize, problems: usize) -> Status {
        Status {
            at: "2026-01-02T12:00:00Z".into(),
            healthy: problems == 0,
            attention: Vec::new(),
            jobs: Vec::new(),
            inbox: Inbox::default(),
            gateways: (0..gateways)
                .map(|i| Gateway {
                    gateway: format!("gw{i}"),
                    last_file: format!("gw{i}-x.ndjson"),
                    last_seen: "2026-01-02T11:00:00.000Z".into(),
                    files: 1,
                    silent: i == gateways - 1,
                })
                .collect(),
            skipped: Vec::new(),
            outbox: Outbox::default(),
            problems: (0..problems)
                .map(|i| Problem {
                    unit: "org-day".into(),
                    target: format!("{i}:2025-10-07"),
                    first_seen: "2026-01-02T11:00:00Z".into(),
                    last_seen: "2026-01-02T12:00:00Z".into(),
                    attempts: 2,
                    error: "unreadable part".into(),
                })
                .collect(),
            disk: Disk::default(),
            retention: Retention {
                archive: None,
                events: Some(400),
                quarantine: None,
                outbox: None,
            },
        }
    }

    #[test]
    fn the_text_form_stays_on_one_screen_with_silent_gateways_first() {
        let text = render_text(&status(300, 500));
        assert!(text.lines().count() <= 40, "{text}");
        assert!(text.contains("Problems   500 open"), "{text}");
        assert!(text.contains("… and 492 more"), "{text}");
        assert!(text.contains("… and 292 more"), "{text}");
        // The one silent gateway is listed although it sorts last by name.
        let first = text
            .lines()
            .skip_while(|l| !l.starts_with("Gateways"))
            .nth(1)
            .unwrap();
        assert!(
            first.contains("gw299") && first.ends_with("SILENT"),
            "{first}"
        );
        assert!(text.contains("events 400d"), "{text}");
    }
}
