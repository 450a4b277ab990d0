//! The ops digest: what it covers (the org-days closed and the files processed since the
//! previous one, open problems, held crossings) and its queueing, once per UTC date.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::{queue_isolated, queue_to_ops};
use crate::events::digest_figures;
use crate::report::format::format_ts;
use crate::report::{self, DigestView};
use crate::setup::Setup;
use crate::store::Status;
use crate::store::Store;

/// What [`queue_digest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// The date's digest was queued before: a key is queued once, ever.
    QueuedBefore,
    /// A stop request came first; nothing was queued.
    Stopped,
    /// Queued, covering this many org-days closed since the previous digest.
    Queued { closed: usize },
    /// It could not be built: an open problem, tried again at the next run.
    Failed(String),
}

/// The outbox key of the digest of `now`'s UTC date.
pub fn digest_key(now: DateTime<Utc>) -> String {
    format!("digest:{}", now.date_naive())
}

/// Queues the ops digest of `now`'s UTC date (once per date), covering the org-days closed and
/// the files processed since the previous digest.
pub fn queue_digest(
    setup: &Setup,
    store: &mut Store,
    now: DateTime<Utc>,
    stop: &AtomicBool,
) -> anyhow::Result<Digest> {
    let date = now.date_naive();
    let key = digest_key(now);
    if store.outbox_status(&key)?.is_some() {
        return Ok(Digest::QueuedBefore);
    }
    let since_ms = store.last_digest_at()?.unwrap_or(i64::MIN);
    let since = if since_ms == i64::MIN {
        String::new()
    } else {
        format_ts(since_ms)
    };
    let closed = store.closed_since(since_ms)?;
    let mut view = DigestView {
        date,
        ..Default::default()
    };
    let min_threshold = setup
        .config
        .alerts
        .near_limit_percent
        .first()
        .copied()
        .unwrap_or(100);
    let mut org_days = Vec::new();
    let mut dates = std::collections::BTreeSet::new();
    for day in &closed {
        let (org_id, local_date) = (&day.org_id, day.date);
        if stop.load(Ordering::SeqCst) {
            return Ok(Digest::Stopped);
        }
        let rows = store.ledger(
            Some(local_date),
            Some(local_date),
            std::slice::from_ref(org_id),
        )?;
        let Some(r) = rows.first() else { continue };
        let name = setup
            .org(org_id)
            .and_then(|o| o.plan_on(r.local_date))
            .map(|p| p.name.clone())
            .unwrap_or_default();
        // An unused day is near nothing, even on an allotment of 0.
        if r.used > 0 && crate::allotment::reached(r.used, r.allotted, min_threshold) {
            let crossings = store.crossings(day)?;
            let top = crossings
                .iter()
                .map(|c| c.threshold)
                .max()
                .unwrap_or(min_threshold);
            let key = super::alert_key(org_id, local_date, top);
            let mailed = match store.outbox_status(&key)? {
                Some(Status::Sent) => "mailed".to_string(),
                Some(Status::Held) => "held (max_age)".to_string(),
                Some(other) => other.to_string(),
                None => "not queued".to_string(),
            };
            view.limits.push(report::LimitRow {
                org_id: org_id.clone(),
                name: name.clone(),
                local_date,
                model: r.model,
                used: r.used,
                allotted: r.allotted,
                over: r.used > r.allotted,
                threshold: top,
                mailed,
            });
        }
        if r.model == crate::allotment::Model::Grandfathered {
            let credit = r.base + r.variable + r.additional;
            view.grandfathered.push((
                org_id.clone(),
                name,
                local_date,
                r.legacy_limit,
                credit,
                r.allotted.saturating_sub(credit),
            ));
        }
        org_days.push(day.clone());
        dates.insert(local_date);
    }
    let mut parts = Vec::new();
    for d in &dates {
        parts.extend(store.parts_on(*d)?);
    }
    let figures = digest_figures(&setup.config.state_dir, &parts, &org_days)?;
    view.unpriced = figures.unpriced;
    view.unpriced_endpoints = figures.unpriced_endpoints;
    view.drift = figures.drift;
    view.quarantine_by_file = store.quarantine_by_file(&since)?;
    let mut by_reason = std::collections::BTreeMap::new();
    for (_, reason, n) in &view.quarantine_by_file {
        *by_reason.entry(reason.clone()).or_insert(0) += n;
    }
    view.quarantine = by_reason.into_iter().collect();
    view.files = store
        .files_since(&since)?
        .into_iter()
        .map(|f| report::FileRow {
            quarantined: f.counts.quarantined_total(),
            file: f.file,
            status: f.status,
            lines: f.counts.lines,
            accepted: f.counts.accepted,
            unique: f.counts.unique,
            duplicates: f.counts.duplicates,
        })
        .collect();
    view.stuck = store
        .unsent()?
        .into_iter()
        .filter(|m| m.status == Status::Failed || m.attempts > 0)
        .map(|m| report::StuckMessage {
            key: m.key,
            status: if m.status == Status::Failed {
                "failed (parked)".to_string()
            } else {
                "retrying".to_string()
            },
            attempts: m.attempts,
            since: format_ts(m.failing_since),
            error: m.last_error.unwrap_or_default(),
        })
        .collect();
    view.held = store.held_since(since_ms)?;
    view.problems = store
        .problems(None)?
        .into_iter()
        .map(|p| (p.unit.to_string(), p.target, p.attempts, p.error))
        .collect();
    view.purges = store
        .purges_since(since_ms)?
        .into_iter()
        .map(|p| (format_ts(p.at), p.area, p.what, p.bytes))
        .collect();
    let rendered = report::digest(&view);
    let tx = store.transaction()?;
    let mut queued = false;
    let failed = queue_isolated(&tx, &key, now, |tx| {
        queued = queue_to_ops(&setup.config, tx, &key, "digest", &rendered, now)?;
        Ok(())
    })?;
    tx.commit()?;
    Ok(match failed {
        Some(problem) => Digest::Failed(problem),
        None if queued => Digest::Queued {
            closed: closed.len(),
        },
        None => Digest::QueuedBefore,
    })
}
