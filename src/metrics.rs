//! Metrics in the Prometheus text format (DESIGN §6), written after every job run (hand runs
//! included) to `[metrics] textfile` for node_exporter's textfile collector: temp file, mode
//! 0644, rename, so a scrape never reads half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::logline::Reason;
use crate::setup::Setup;
use crate::status::{Job, Status};
use crate::store::{Store, Unit};

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = writeln!(self.0, "{name}{{{}}} {value}", l.join(","));
        }
    }
}

/// The metrics of `store` and `status` as text.
pub fn render(store: &Store, status: &Status) -> anyhow::Result<String> {
    let mut o = Out(String::new());
    let files = store.files()?;
    let mut by_status: std::collections::BTreeMap<&str, u64> = crate::store::FileStatus::ALL
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    let (mut unique, mut duplicates) = (0u64, 0u64);
    let mut quarantined = [0u64; Reason::ALL.len()];
    for f in &files {
        *by_status.entry(f.status.as_str()).or_default() += 1;
        if f.status != crate::store::FileStatus::Ingested {
            continue;
        }
        unique += f.counts.unique;
        duplicates += f.counts.duplicates;
        for (i, n) in f.counts.quarantined.iter().enumerate() {
            quarantined[i] += n;
        }
    }
    o.family(
        "creditd_input_lines",
        "gauge",
        "Lines of the ingested input files by outcome (charged once, duplicate, quarantined) and quarantine reason, as `creditd files` counts them; a backfill can move lines between outcomes.",
    );
    o.sample(
        "creditd_input_lines",
        &[("outcome", "unique"), ("reason", "")],
        unique,
    );
    o.sample(
        "creditd_input_lines",
        &[("outcome", "duplicate"), ("reason", "")],
        duplicates,
    );
    for (i, r) in Reason::ALL.iter().enumerate() {
        o.sample(
            "creditd_input_lines",
            &[("outcome", "quarantined"), ("reason", r.as_str())],
            quarantined[i],
        );
    }
    o.family(
        "creditd_files",
        "gauge",
        "Input files by status (ingested, duplicate_file, failed).",
    );
    for (s, n) in &by_status {
        o.sample("creditd_files", &[("status", s)], n);
    }

    // One family per figure of a task's runs, one sample per task that has run.
    type Figure = fn(&Job) -> Option<String>;
    let per_task: [(&str, &str, &str, Figure); 5] = [
        (
            "creditd_job_runs_total",
            "counter",
            "Runs of each task, daemon jobs and hand runs alike.",
            |j| Some(j.runs.to_string()),
        ),
        (
            "creditd_job_failures_total",
            "counter",
            "Runs of each task that did not get everything done.",
            |j| Some(j.failures.to_string()),
        ),
        (
            "creditd_job_last_duration_seconds",
            "gauge",
            "Wall time of the last run of each task.",
            |j| Some(format!("{:.3}", j.duration_s)),
        ),
        (
            "creditd_job_last_run_timestamp_seconds",
            "gauge",
            "When the last run of each task started (Unix time, by the task's clock).",
            |j| seconds(&j.last_run).map(|t| t.to_string()),
        ),
        (
            "creditd_job_last_success_timestamp_seconds",
            "gauge",
            "When the last run of each task that got everything done started (Unix time).",
            |j| {
                j.last_success
                    .as_deref()
                    .and_then(seconds)
                    .map(|t| t.to_string())
            },
        ),
    ];
    for (name, kind, help, figure) in per_task {
        o.family(name, kind, help);
        for j in &status.jobs {
            if let Some(v) = figure(j) {
                o.sample(name, &[("task", &j.task)], v);
            }
        }
    }

    o.family(
        "creditd_inbox_files",
        "gauge",
        "Log files waiting in the inbox.",
    );
    o.sample("creditd_inbox_files", &[], status.inbox.files);
    o.family(
        "creditd_inbox_bytes",
        "gauge",
        "Bytes of the log files waiting in the inbox.",
    );
    o.sample("creditd_inbox_bytes", &[], status.inbox.bytes);
    if let Some(t) = status.inbox.oldest_modified.as_deref().and_then(seconds) {
        o.family(
            "creditd_inbox_oldest_file_timestamp_seconds",
            "gauge",
            "Modification time of the file waiting longest in the inbox (Unix time).",
        );
        o.sample("creditd_inbox_oldest_file_timestamp_seconds", &[], t);
    }

    o.family(
        "creditd_outbox_messages",
        "gauge",
        "Messages by status: queued, retrying (queued after failed attempts), failed (parked, needs a human), sent, dropped, held (crossings found past [alerts] max_age, never sent).",
    );
    let ob = &status.outbox;
    for (s, n) in [
        ("queued", ob.queued),
        ("retrying", ob.retrying),
        ("failed", ob.failed),
        ("sent", ob.sent),
        ("dropped", ob.dropped),
        ("held", ob.held),
    ] {
        o.sample("creditd_outbox_messages", &[("status", s)], n);
    }

    o.family(
        "creditd_open_problems",
        "gauge",
        "Open problems by unit (file, org-day, message, task, config); each needs a look until it clears.",
    );
    for u in Unit::ALL {
        let n = status
            .problems
            .iter()
            .filter(|p| p.unit == u.as_str())
            .count();
        o.sample("creditd_open_problems", &[("unit", u.as_str())], n);
    }

    o.family(
        "creditd_state_bytes",
        "gauge",
        "Bytes on disk per area of the state directory.",
    );
    let d = &status.disk;
    for (a, n) in [
        ("archive", d.archive),
        ("events", d.events),
        ("claims", d.claims),
        ("store", d.store),
        ("eml", d.outbox),
    ] {
        o.sample("creditd_state_bytes", &[("area", a)], n);
    }

    o.family(
        "creditd_gateway_last_file_timestamp_seconds",
        "gauge",
        "When ingest first saw the newest file of each gateway (the file name's part before the first '-'; Unix time).",
    );
    for g in &status.gateways {
        if let Some(t) = seconds(&g.last_seen) {
            o.sample(
                "creditd_gateway_last_file_timestamp_seconds",
                &[("gateway", &g.gateway)],
                t,
            );
        }
    }
    Ok(o.0)
}

/// Writes the metrics of the state to `[metrics] textfile` atomically.
pub fn write(setup: &Setup, store: &Store, now: DateTime<Utc>) -> anyhow::Result<()> {
    let status = crate::status::gather(setup, Some(store), now)?;
    let text = render(store, &status)?;
    let path = &setup.config.metrics_textfile;
    write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write the metrics to {}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics.prom".into());
    // node_exporter reads only `*.prom`: the temp file is never scraped half-written.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover of a killed run goes first; the new one is created, never followed.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // The umask may have taken bits away: 0644 whatever it is.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
