//! Gateway silence (DESIGN §6): one ops message when a gateway that sent files before has sent
//! none for `[alerts] gateway_silence` (`silence:<gateway>:<since>`, `since` when ingest first
//! saw its last file), and one when a file of it arrives again (`back:<gateway>:<at>`). Both
//! are worked out from the `files` rows and the outbox keys alone, so a restart, a missed run
//! or a crash neither loses nor repeats one.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::report;
use crate::store::{gateway_of, Tx};

/// A gateway's files in the order ingest first saw them: (file, first seen, RFC 3339).
pub type Timeline = BTreeMap<String, Vec<(String, String)>>;

/// Groups `files` (name, first seen; in ingest order) by gateway.
pub fn timeline(files: Vec<(String, String)>) -> Timeline {
    let mut t = Timeline::new();
    for (file, at) in files {
        t.entry(gateway_of(&file).to_string())
            .or_default()
            .push((file, at));
    }
    t
}

fn ms(rfc3339: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The gateways silent at `now`: (gateway, its last file, first seen).
pub fn silent(
    timeline: &Timeline,
    silence: Duration,
    now: DateTime<Utc>,
) -> Vec<(&str, &str, &str)> {
    let limit = silence.as_millis() as i64;
    timeline
        .iter()
        .filter_map(|(g, files)| {
            let (file, at) = files.last()?;
            let t = ms(at)?;
            (now.timestamp_millis() - t > limit).then_some((g.as_str(), file.as_str(), at.as_str()))
        })
        .collect()
}

/// Queues the silence and back messages not queued before; returns a line for each.
pub fn queue_silence_messages(
    config: &Config,
    tx: &Tx<'_>,
    timeline: &Timeline,
    keys: &HashSet<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let Some(silence) = config.alerts.gateway_silence else {
        return Ok(Vec::new());
    };
    let shown = humantime::format_duration(silence).to_string();
    let mut out = Vec::new();
    for (gateway, files) in timeline {
        // Back: the first file seen after the last one before a reported silence (files of
        // one run share their time).
        for pair in files.windows(2) {
            let ((_, since), (file, at)) = (&pair[0], &pair[1]);
            if ms(at) <= ms(since) {
                continue;
            }
            let silence_key = format!("silence:{gateway}:{since}");
            let back_key = format!("back:{gateway}:{at}");
            if keys.contains(&silence_key) && !keys.contains(&back_key) {
                let rendered = report::gateway_back(gateway, file, since, at);
                let failed = super::queue_isolated(tx, &back_key, now, |tx| {
                    super::queue_to_ops(config, tx, &back_key, "back", &rendered, now)?;
                    Ok(())
                })?;
                out.push(match failed {
                    None => format!("gateway {gateway} is back ({file}): ops told"),
                    Some(problem) => problem,
                });
            }
        }
    }
    for (gateway, file, since) in silent(timeline, silence, now) {
        let key = format!("silence:{gateway}:{since}");
        if keys.contains(&key) {
            continue;
        }
        let rendered = report::gateway_silence(gateway, file, since, &shown);
        // A message that cannot be built fails alone (DESIGN §7): a problem, retried next run.
        let failed = super::queue_isolated(tx, &key, now, |tx| {
            super::queue_to_ops(config, tx, &key, "silence", &rendered, now)?;
            Ok(())
        })?;
        out.push(match failed {
            None => format!("gateway {gateway} silent since {since} (more than {shown}): ops told"),
            Some(problem) => problem,
        });
    }
    Ok(out)
}
