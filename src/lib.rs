//! creditd: reconciles API access logs into a daily credit ledger per organization.
//!
//! The rules (`pricing`, `allotment`, `localday`, `logline`, `billing`) are the crate
//! `creditd-rules`: plain functions over plain data, no IO, re-exported here under the same
//! names. IO lives at the edges (`ingest`, `store`, `events`, `state`, the CLI).

pub mod address;
pub mod alerts;
pub mod backfill;
pub mod catalog;
pub mod claims;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod faults;
pub mod files;
pub mod ingest;
pub mod jobs;
pub mod ledger;
pub mod mail;
pub mod metrics;
pub mod parallel;
pub mod quarantine;
pub mod registry;
pub mod report;
pub mod retention;
pub mod setup;
pub mod state;
pub mod status;
pub mod store;
pub mod tasks;
pub mod upgrade;
pub mod usage;

pub use creditd_rules::{allotment, billing, localday, logline, pricing};
