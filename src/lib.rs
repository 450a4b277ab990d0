//! creditd: reconciles API access logs into a daily credit ledger per organization.
//!
//! The rules (`pricing`, `allotment`, `localday`, `logline`) are plain functions over plain
//! data; IO lives at the edges (`ingest`, `store`, `events`, the CLI).

pub mod allotment;
pub mod catalog;
pub mod config;
pub mod localday;
pub mod logline;
pub mod pricing;
pub mod registry;
