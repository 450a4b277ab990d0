//! `creditd outbox`: the messages not sent yet, and the hand actions on a parked one
//! (DESIGN §4, §7).

use std::process::ExitCode;

use chrono::{DateTime, Utc};

use super::{OutboxAction, Stdout, UsageError};
use crate::ledger::format_ts;
use crate::report::one_line;
use crate::setup::Setup;
use crate::state::State;
use crate::store::Change;

/// Runs one `outbox` action. `list` reads; `retry` and `drop` take the writer lock.
pub fn run(setup: &Setup, action: OutboxAction, now: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let dir = &setup.config.state_dir;
    let (key, change) = match action {
        OutboxAction::List => {
            let Some(store) = State::open_store_read_only(dir)? else {
                Stdout::default().text(HEADER)?;
                eprintln!("no data yet: nothing has been queued in {}", dir.display());
                return Ok(ExitCode::SUCCESS);
            };
            let mut out = String::from(HEADER);
            for m in store.unsent()? {
                out.push_str(&csv_line(&[
                    &m.key,
                    m.status.as_str(),
                    &m.attempts.to_string(),
                    &format_ts(m.failing_since),
                    &m.recipients.join(";"),
                    &one_line(m.last_error.as_deref().unwrap_or("")),
                ]));
            }
            Stdout::default().text(&out)?;
            return Ok(ExitCode::SUCCESS);
        }
        OutboxAction::Retry { key } => {
            let mut state = State::open(dir)?;
            let change = state.store().retry_message(&key, now.timestamp_millis())?;
            (key, change)
        }
        OutboxAction::Drop { key } => {
            let mut state = State::open(dir)?;
            let change = state.store().drop_message(&key)?;
            (key, change)
        }
    };
    match change {
        Change::Done => {
            Stdout::default().text(&format!("{key}: done\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Change::Unknown => Err(UsageError(format!("no message has the key {key:?}")).into()),
        Change::Covered(by) => Err(UsageError(format!(
            "{key} is reported inside {by} (X-Creditd-Covers), never on its own: retry or drop {by}"
        ))
        .into()),
        Change::NotAllowed(status) => Err(UsageError(format!(
            "{key} is {status}: only a failed or queued message can be retried or dropped"
        ))
        .into()),
    }
}

const HEADER: &str = "key,status,attempts,since,recipients,last_error\n";

fn csv_line(fields: &[&str]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(fields);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
