//! creditd's rules (DESIGN §2.1, §2.4, §3): plain functions over plain data.
//!
//! Architecture invariant: nothing in this crate does IO or reads the clock; `now` is always a
//! parameter. Cargo enforces it: this crate depends on no crate that could (no polars, SQLite,
//! lettre or tokio), and `cargo test -p creditd-rules` builds none of them.

pub mod allotment;
pub mod billing;
pub mod localday;
pub mod logline;
pub mod pricing;
