//! `creditd.toml`, in two phases: [`RawConfig`] mirrors the file, [`Config`] holds validated,
//! typed values with paths resolved against the config file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::NaiveDate;

use crate::allotment::{default_edition, EditionTerms, Migration, EDITIONS, MAX_DAILY};

/// The longest `[daemon] close_grace` (DESIGN §7): a day closes at most a week late.
pub const MAX_CLOSE_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// The longest `[alerts] max_age` (DESIGN §7): ten years.
pub const MAX_AGE: Duration = Duration::from_secs(3650 * 86_400);

mod raw;
pub use raw::*;

pub use crate::billing::StatusPattern;

/// The summary policy of `[alerts] daily_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryPolicy {
    All,
    Alerted,
    None,
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub near_limit_percent: Vec<u64>,
    pub daily_summary: SummaryPolicy,
    pub ops_to: Vec<String>,
    pub copy_ops: bool,
    pub max_age: Option<Duration>,
    pub from: String,
    /// `[alerts] gateway_silence` (DESIGN §6): absent, no gateway is watched.
    pub gateway_silence: Option<Duration>,
}

/// The line of the key a message like `[alerts] max_age: …` or `[editions.gold]: …` is
/// about, so every config error names file, line and field.
fn key_line(text: &str, msg: &str) -> Option<usize> {
    let rest = msg.strip_prefix('[')?;
    let (section, rest) = rest.split_once(']')?;
    let key = rest
        .trim_start()
        .split([':', '.', ' '])
        .next()
        .unwrap_or_default();
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = h.trim();
            if current == section && key.is_empty() {
                return Some(i + 1);
            }
            continue;
        }
        if current == section && !key.is_empty() {
            if let Some(after) = t.strip_prefix(key) {
                if after.trim_start().starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub url: String,
    pub tls_required: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub inbox: PathBuf,
    pub state_dir: PathBuf,
    pub orgs: PathBuf,
    pub purchases: PathBuf,
    pub pricing: Vec<PathBuf>,
    pub jobs_dir: PathBuf,
    pub editions: BTreeMap<String, EditionTerms>,
    pub migration: Migration,
    pub exempt_status: Vec<StatusPattern>,
    pub alerts: Alerts,
    pub close_grace: Duration,
    pub data_centers: Vec<String>,
    pub retention: Retention,
    /// `[metrics] textfile`: where the metrics are written after every job run.
    pub metrics_textfile: PathBuf,
    /// `[ingest] threads`: threads decoding, validating and pricing lines (at least 1).
    pub ingest_threads: usize,
    pub smtp: Option<Smtp>,
}

/// The retention horizons in whole days (DESIGN §6); `None` keeps forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub archive: Option<u32>,
    pub events: Option<u32>,
    pub quarantine: Option<u32>,
    pub outbox: Option<u32>,
}

impl Retention {
    /// Whether any horizon is set.
    pub fn any(&self) -> bool {
        self.archive.is_some()
            || self.events.is_some()
            || self.quarantine.is_some()
            || self.outbox.is_some()
    }
}

/// The longest retention horizon (DESIGN §6): 36,500 days.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// A retention horizon: whole days written `"Nd"`, 1 ≤ N ≤ [`MAX_RETENTION_DAYS`].
fn parse_days(field: &str, s: &str) -> anyhow::Result<u32> {
    let n = s
        .trim()
        .strip_suffix('d')
        .and_then(|n| n.trim().parse::<u32>().ok())
        .filter(|n| (1..=MAX_RETENTION_DAYS).contains(n));
    n.with_context(|| {
        format!(
            "{field}: expected whole days like \"400d\" (1d to {MAX_RETENTION_DAYS}d), found {s:?}"
        )
    })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(file: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read config file {}", file.display()))?;
        Config::parse(file, &text)
    }

    /// Validates `text` as the contents of `file`.
    pub fn parse(file: &Path, text: &str) -> anyhow::Result<Config> {
        let shown = file.display();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{shown}: {}",
                e.to_string().trim_end().replace('\n', "\n  ")
            )
        })?;
        Config::from_raw(file, raw).map_err(|e| {
            let msg = format!("{e:#}");
            match key_line(text, &msg) {
                Some(line) => anyhow::anyhow!("{shown}:{line}: {msg}"),
                None => anyhow::anyhow!("{shown}: {msg}"),
            }
        })
    }

    fn from_raw(file: &Path, raw: RawConfig) -> anyhow::Result<Config> {
        let base = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let resolve =
            |p: &Option<String>, default: &str| base.join(p.as_deref().unwrap_or(default));
        let pricing = match &raw.paths.pricing {
            None => vec![base.join("sample-data/pricing.toml")],
            Some(OneOrMany::One(p)) => vec![base.join(p)],
            Some(OneOrMany::Many(ps)) => {
                if ps.is_empty() {
                    bail!("[paths] pricing: expected at least one catalog file");
                }
                ps.iter().map(|p| base.join(p)).collect()
            }
        };

        let mut editions = BTreeMap::new();
        for name in EDITIONS {
            editions.insert(name.to_string(), default_edition(name).expect("built in"));
        }
        for (name, over) in &raw.editions {
            let Some(e) = editions.get_mut(name) else {
                bail!(
                    "[editions.{name}]: unknown edition; expected one of {}",
                    EDITIONS.join(", ")
                );
            };
            let set = |slot: &mut u64, v: Option<u64>| {
                if let Some(v) = v {
                    *slot = v;
                }
            };
            set(&mut e.base, over.base);
            set(&mut e.per_agent, over.per_agent);
            set(&mut e.concurrency, over.concurrency);
            set(&mut e.legacy_base, over.legacy_base);
            set(&mut e.legacy_per_agent, over.legacy_per_agent);
            set(&mut e.additional_max_per_day, over.additional_max_per_day);
            for (key, value) in [
                ("base", e.base),
                ("per_agent", e.per_agent),
                ("concurrency", e.concurrency),
                ("legacy_base", e.legacy_base),
                ("legacy_per_agent", e.legacy_per_agent),
                ("additional_max_per_day", e.additional_max_per_day),
            ] {
                if value > MAX_DAILY {
                    bail!("[editions.{name}] {key}: expected at most {MAX_DAILY}, found {value}");
                }
            }
            if e.base == 0 {
                bail!("[editions.{name}] base: expected a positive number of credits, found 0");
            }
            if e.legacy_base == 0 {
                bail!("[editions.{name}] legacy_base: expected a positive call limit, found 0");
            }
        }

        let migration = {
            let m = &raw.migration;
            let dc_cutover = match &m.dc_cutover {
                None => default_cutover(),
                Some(map) => {
                    let mut out = BTreeMap::new();
                    for (dc, lit) in map {
                        out.insert(
                            dc.clone(),
                            lit.parse(&format!("[migration] dc_cutover.{dc}"))?,
                        );
                    }
                    out
                }
            };
            let new_signup_cutoff = match &m.new_signup_cutoff {
                None => NaiveDate::from_ymd_opt(2025, 10, 30).expect("valid"),
                Some(l) => l.parse("[migration] new_signup_cutoff")?,
            };
            let grandfather_until = m
                .grandfather_until
                .as_ref()
                .map(|l| l.parse("[migration] grandfather_until"))
                .transpose()?;
            Migration {
                dc_cutover,
                new_signup_cutoff,
                grandfather_until,
            }
        };

        let exempt_status = match &raw.billing.exempt_status {
            None => vec![StatusPattern::Exact(429), StatusPattern::Class(5)],
            Some(list) => list
                .iter()
                .map(parse_status_pattern)
                .collect::<anyhow::Result<_>>()?,
        };

        let a = &raw.alerts;
        let near_limit_percent = a.near_limit_percent.clone().unwrap_or(vec![80, 90]);
        for t in &near_limit_percent {
            if !(1..=99).contains(t) {
                bail!("[alerts] near_limit_percent: expected percentages from 1 to 99, found {t}");
            }
        }
        let mut near_limit_percent = near_limit_percent;
        near_limit_percent.sort_unstable();
        near_limit_percent.dedup();
        let daily_summary = match a.daily_summary.as_deref().unwrap_or("alerted") {
            "all" => SummaryPolicy::All,
            "alerted" => SummaryPolicy::Alerted,
            "none" => SummaryPolicy::None,
            other => {
                bail!("[alerts] daily_summary: expected \"all\", \"alerted\" or \"none\", found {other:?}")
            }
        };
        let max_age = a
            .max_age
            .as_deref()
            .map(|s| parse_duration("[alerts] max_age", s, MAX_AGE))
            .transpose()?;
        let alerts = Alerts {
            near_limit_percent,
            daily_summary,
            ops_to: a
                .ops_to
                .clone()
                .unwrap_or(vec!["api-ops@example.com".to_string()]),
            copy_ops: a.copy_ops.unwrap_or(false),
            max_age,
            gateway_silence: a
                .gateway_silence
                .as_deref()
                .map(|s| {
                    let d = parse_duration("[alerts] gateway_silence", s, MAX_AGE)?;
                    if d.is_zero() {
                        bail!("[alerts] gateway_silence: expected a duration like \"30m\", found {s:?}");
                    }
                    Ok(d)
                })
                .transpose()?,
            from: a
                .from
                .clone()
                .unwrap_or("creditd <creditd@example.com>".to_string()),
        };

        if alerts.ops_to.is_empty() {
            bail!("[alerts] ops_to: expected at least one address; ops messages, and org messages without report_to, go there");
        }
        for addr in &alerts.ops_to {
            if let Err(why) = crate::address::check_recipient(addr) {
                bail!("[alerts] ops_to: expected mail addresses like \"api-ops@example.com\", found {addr:?} ({why})");
            }
        }
        if alerts.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!(
                "[alerts] from: expected a mail address like \"creditd <creditd@example.com>\", found {:?}",
                alerts.from
            );
        }
        let close_grace = parse_duration(
            "[daemon] close_grace",
            raw.daemon.close_grace.as_deref().unwrap_or("2h"),
            MAX_CLOSE_GRACE,
        )?;
        let r = &raw.retention;
        let days = |field: &str, v: &Option<String>| -> anyhow::Result<Option<u32>> {
            v.as_deref().map(|s| parse_days(field, s)).transpose()
        };
        let retention = Retention {
            archive: days("[retention] archive", &r.archive)?,
            events: days("[retention] events", &r.events)?,
            quarantine: days("[retention] quarantine", &r.quarantine)?,
            outbox: days("[retention] outbox", &r.outbox)?,
        };
        if let Some(n) = retention.events {
            // The events of a day must outlive its close: late data of a closed day still
            // amends it, and a day is past the horizon only once it has closed.
            let needed = close_grace.as_secs().div_ceil(86_400) + 1;
            if u64::from(n) < needed {
                bail!(
                    "[retention] events: expected at least \"{needed}d\" (close_grace + one day), found {:?}",
                    r.events.as_deref().unwrap_or_default()
                );
            }
        }
        let smtp = raw
            .smtp
            .as_ref()
            .map(|s| -> anyhow::Result<Smtp> {
                let tls_required = match s.tls.as_deref().unwrap_or("required") {
                    "required" => true,
                    "none" => false,
                    other => {
                        bail!("[smtp] tls: expected \"required\" or \"none\", found {other:?}")
                    }
                };
                let smtp = Smtp {
                    url: s.url.clone(),
                    tls_required,
                };
                crate::address::smtp_url(&smtp.url, smtp.tls_required)?;
                Ok(smtp)
            })
            .transpose()?;

        let state_dir = resolve(&raw.paths.state_dir, "state");
        let metrics_textfile = match &raw.metrics.textfile {
            Some(p) if p.is_empty() => {
                bail!("[metrics] textfile: expected a file path like \"/var/lib/node_exporter/textfile/creditd.prom\", found \"\"")
            }
            Some(p) => base.join(p),
            None => state_dir.join("metrics.prom"),
        };
        let ingest_threads = match raw.ingest.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n @ 1..=256) => n as usize,
            Some(n) => {
                bail!("[ingest] threads: expected a number of threads from 1 to 256, found {n}")
            }
        };
        Ok(Config {
            file: file.to_path_buf(),
            inbox: resolve(&raw.paths.inbox, "sample-data/inbox"),
            state_dir,
            orgs: resolve(&raw.paths.orgs, "sample-data/orgs.csv"),
            purchases: resolve(&raw.paths.purchases, "sample-data/credit-purchases.csv"),
            pricing,
            jobs_dir: resolve(&raw.paths.jobs_dir, "jobs"),
            editions,
            migration,
            exempt_status,
            alerts,
            close_grace,
            data_centers: raw.daemon.data_centers.clone().unwrap_or_default(),
            retention,
            metrics_textfile,
            ingest_threads,
            smtp,
        })
    }

    /// Whether calls with `status` are counted but never charged.
    pub fn is_exempt(&self, status: u16) -> bool {
        crate::billing::is_exempt(&self.exempt_status, status)
    }
}

fn default_cutover() -> BTreeMap<String, NaiveDate> {
    [
        ("us", (2025, 10, 6)),
        ("eu", (2025, 10, 7)),
        ("in", (2025, 10, 7)),
        ("au", (2025, 10, 8)),
    ]
    .into_iter()
    .map(|(dc, (y, m, d))| {
        (
            dc.to_string(),
            NaiveDate::from_ymd_opt(y, m, d).expect("valid"),
        )
    })
    .collect()
}

fn parse_status_pattern(lit: &StatusLit) -> anyhow::Result<StatusPattern> {
    let text = match lit {
        StatusLit::Int(i) => i.to_string(),
        StatusLit::Text(s) => s.trim().to_ascii_lowercase(),
    };
    match StatusPattern::parse(&text) {
        Some(p) => Ok(p),
        None => bail!("[billing] exempt_status: expected a status like \"429\" or a class like \"5xx\", found {text:?}"),
    }
}

/// A duration like `"2h"`, at most `max`.
fn parse_duration(field: &str, s: &str, max: Duration) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(s).with_context(|| {
        format!("{field}: expected a duration like \"2h\" or \"90m\", found {s:?}")
    })?;
    if d > max {
        bail!(
            "{field}: expected at most \"{}d\", found {s:?}",
            max.as_secs() / 86_400
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(Path::new("/etc/creditd/creditd.toml"), text)
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("").unwrap();
        assert_eq!(c.inbox, Path::new("/etc/creditd/sample-data/inbox"));
        assert_eq!(c.close_grace, Duration::from_secs(7200));
        assert!(c.is_exempt(429) && c.is_exempt(503) && !c.is_exempt(404) && !c.is_exempt(200));
        assert_eq!(c.alerts.near_limit_percent, vec![80, 90]);
        assert_eq!(c.editions["professional"].base, 75_000);
    }

    #[test]
    fn each_edition_key_overrides_alone() {
        let c = parse("[editions.professional]\nper_agent = 700\n").unwrap();
        let p = c.editions["professional"];
        assert_eq!((p.base, p.per_agent, p.concurrency), (75_000, 700, 15));
    }

    #[test]
    fn dates_as_toml_dates_or_strings() {
        let c = parse(
            "[migration]\ndc_cutover = { us = 2025-10-06, eu = \"2025-10-07\" }\nnew_signup_cutoff = \"2025-10-31\"\n",
        )
        .unwrap();
        assert_eq!(c.migration.dc_cutover["eu"].to_string(), "2025-10-07");
        assert_eq!(c.migration.new_signup_cutoff.to_string(), "2025-10-31");
    }

    #[test]
    fn errors_name_file_and_field() {
        assert_eq!(
            error("[paths]\ninbx = \"x\"\n"),
            "/etc/creditd/creditd.toml: TOML parse error at line 2, column 1\n    |\n  2 | inbx = \"x\"\n    | ^^^^\n  unknown field `inbx`, expected one of `inbox`, `state_dir`, `orgs`, `purchases`, `pricing`, `jobs_dir`"
        );
        assert_eq!(
            error("[migration]\ndc_cutover = { us = \"10/06/2025\" }\n"),
            "/etc/creditd/creditd.toml:2: [migration] dc_cutover.us: expected a date like 2025-10-06, found \"10/06/2025\": input contains invalid characters"
        );
        assert_eq!(
            error("[editions.gold]\nbase = 1\n"),
            "/etc/creditd/creditd.toml:1: [editions.gold]: unknown edition; expected one of free, express, standard, professional, enterprise, zoho_one, crm_plus, service_plus"
        );
        assert_eq!(
            error("[billing]\nexempt_status = [\"6xx\"]\n"),
            "/etc/creditd/creditd.toml:2: [billing] exempt_status: expected a status like \"429\" or a class like \"5xx\", found \"6xx\""
        );
        assert_eq!(
            error("[daemon]\nclose_grace = \"soon\"\n"),
            "/etc/creditd/creditd.toml:2: [daemon] close_grace: expected a duration like \"2h\" or \"90m\", found \"soon\": expected number at 0"
        );
    }

    #[test]
    fn numbers_and_durations_are_bounded() {
        let c = parse("[editions.enterprise]\nbase = 1000000000000\nper_agent = 1000000000000\nconcurrency = 1000000000000\nlegacy_base = 1000000000000\nlegacy_per_agent = 1000000000000\nadditional_max_per_day = 1000000000000\n\n[daemon]\nclose_grace = \"7days\"\n\n[alerts]\nmax_age = \"3650d\"\n").unwrap();
        assert_eq!(c.editions["enterprise"].additional_max_per_day, MAX_DAILY);
        assert_eq!(c.close_grace, MAX_CLOSE_GRACE);
        assert_eq!(c.alerts.max_age, Some(MAX_AGE));
        assert_eq!(
            error("[editions.express]\nlegacy_per_agent = 1000000000001\n"),
            "/etc/creditd/creditd.toml:2: [editions.express] legacy_per_agent: expected at most 1000000000000, found 1000000000001"
        );
        assert_eq!(
            error("[daemon]\nclose_grace = \"1000000y\"\n"),
            "/etc/creditd/creditd.toml:2: [daemon] close_grace: expected at most \"7d\", found \"1000000y\""
        );
        assert_eq!(
            error("[daemon]\nclose_grace = \"7d 1s\"\n"),
            "/etc/creditd/creditd.toml:2: [daemon] close_grace: expected at most \"7d\", found \"7d 1s\""
        );
        assert_eq!(
            error("\n[alerts]\nmax_age = \"3651d\"\n"),
            "/etc/creditd/creditd.toml:3: [alerts] max_age: expected at most \"3650d\", found \"3651d\""
        );
    }

    #[test]
    fn ops_to_is_not_empty_and_every_address_is_read_as_sending_reads_it() {
        let c = parse("[alerts]\nops_to = [\"ops@example.com\", \"noc@localhost\"]\n").unwrap();
        assert_eq!(c.alerts.ops_to, vec!["ops@example.com", "noc@localhost"]);
        assert_eq!(
            error("[alerts]\nops_to = []\n"),
            "/etc/creditd/creditd.toml:2: [alerts] ops_to: expected at least one address; ops messages, and org messages without report_to, go there"
        );
        assert_eq!(
            error("[alerts]\nops_to = [\"ops@example.com\", \"nobody\"]\n"),
            "/etc/creditd/creditd.toml:2: [alerts] ops_to: expected mail addresses like \"api-ops@example.com\", found \"nobody\" (Missing domain or user)"
        );
        assert_eq!(
            error("[alerts]\nops_to = [\"Ops <ops@example.com>\"]\n"),
            "/etc/creditd/creditd.toml:2: [alerts] ops_to: expected mail addresses like \"api-ops@example.com\", found \"Ops <ops@example.com>\" (Invalid email user)"
        );
    }
}
