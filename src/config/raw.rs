//! `creditd.toml` as written: each section mirrored with `deny_unknown_fields`, every key
//! optional, nothing checked yet ([`super::Config`] checks and types it).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use serde::Deserialize;

/// The file as written. Every section is optional; absent keys take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub paths: RawPaths,
    /// Per-edition overrides of the built-in defaults; each key overrides alone.
    #[serde(default)]
    pub editions: BTreeMap<String, RawEdition>,
    #[serde(default)]
    pub migration: RawMigration,
    #[serde(default)]
    pub billing: RawBilling,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub ingest: RawIngest,
    pub smtp: Option<RawSmtp>,
}

/// How ingest uses the machine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Threads that decode, validate and price lines; default: every core.
    pub threads: Option<i64>,
}

/// Where the metrics go (DESIGN §6).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// The Prometheus text file written after every job run; default `state_dir/metrics.prom`.
    pub textfile: Option<String>,
}

/// How long each kind of state is kept (DESIGN §6): whole days `"Nd"`; absent = forever.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Archived input files, by their ingest time (UTC days).
    pub archive: Option<String>,
    /// Priced events and their request-id claims, per org-local day; also the late-data horizon.
    pub events: Option<String>,
    /// Quarantined lines, by their file's ingest time (UTC days).
    pub quarantine: Option<String>,
    /// Bodies of sent messages, by their send time (UTC days); keys and statuses stay.
    pub outbox: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    /// Directory where gateways drop access logs.
    pub inbox: Option<String>,
    /// Directory for the store, priced events, archive, quarantine and outbox.
    pub state_dir: Option<String>,
    /// The org registry, `orgs.csv`.
    pub orgs: Option<String>,
    /// Additional credit purchases, `credit-purchases.csv`.
    pub purchases: Option<String>,
    /// One pricing catalog, or a list of them.
    pub pricing: Option<OneOrMany>,
    /// Directory of `*.toml` job files for the daemon.
    pub jobs_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdition {
    /// Credits granted every day.
    pub base: Option<u64>,
    /// Credits per billable agent.
    pub per_agent: Option<u64>,
    /// Concurrent-call limit.
    pub concurrency: Option<u64>,
    /// Old per-call daily limit: `legacy_base + legacy_per_agent × agents`.
    pub legacy_base: Option<u64>,
    pub legacy_per_agent: Option<u64>,
    /// Cap on purchased additional credits per day.
    pub additional_max_per_day: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMigration {
    /// First credit-model day per data center.
    pub dc_cutover: Option<BTreeMap<String, DateLit>>,
    /// Orgs signed up before this date may be grandfathered.
    pub new_signup_cutoff: Option<DateLit>,
    /// Last day of grandfathering; absent = no end.
    pub grandfather_until: Option<DateLit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    /// Statuses counted but never charged: `"429"`, `"5xx"`, or integers.
    pub exempt_status: Option<Vec<StatusLit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub near_limit_percent: Option<Vec<u64>>,
    pub daily_summary: Option<String>,
    pub ops_to: Option<Vec<String>>,
    pub copy_ops: Option<bool>,
    pub max_age: Option<String>,
    pub from: Option<String>,
    /// One ops message when a gateway that sent files before has sent none for this long.
    pub gateway_silence: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// How long after local midnight a day closes, e.g. `"2h"`.
    pub close_grace: Option<String>,
    /// Only orgs of these data centers; empty = all.
    pub data_centers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    /// `smtp://`, `smtps://` (implicit TLS) or `smtp+starttls://` with an optional user.
    pub url: String,
    /// `"required"` (default) or `"none"` (loopback hosts only).
    pub tls: Option<String>,
}

/// A date written as a TOML date or as a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DateLit {
    Toml(toml::value::Datetime),
    Text(String),
}

impl DateLit {
    pub fn parse(&self, field: &str) -> anyhow::Result<NaiveDate> {
        let text = match self {
            DateLit::Toml(dt) => match (dt.date, dt.time) {
                (Some(d), None) => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
                _ => bail!("{field}: expected a date like 2025-10-06, found {dt}"),
            },
            DateLit::Text(s) => s.clone(),
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .with_context(|| format!("{field}: expected a date like 2025-10-06, found {text:?}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusLit {
    Int(u64),
    Text(String),
}
