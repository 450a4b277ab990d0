//! In-place upgrades of stores written by earlier versions (DESIGN §6): columns added since,
//! each added once, inside the transaction that creates the schema.

use rusqlite::Connection;

/// Columns added to tables of earlier versions: (table, column, declaration).
const ADDED: [(&str, &str, &str); 9] = [
    ("files", "expired", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "archive_purged", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "quarantine_purged", "INTEGER NOT NULL DEFAULT 0"),
    ("quarantine", "org_id", "TEXT"),
    ("quarantine", "local_date", "TEXT"),
    ("quarantine", "ts", "INTEGER"),
    // When `outbox retry` last made the message due: its 7 days of retries start there.
    ("outbox", "retry_from", "INTEGER"),
    // The order parts were listed in (a counter, never reused): 0 for those listed before.
    ("parts", "added", "INTEGER NOT NULL DEFAULT 0"),
    // The last part (by `added`) whose events a ledger row counts: 0 when not known.
    ("ledger", "parts_seen", "INTEGER NOT NULL DEFAULT 0"),
];

/// Columns added since the version that wrote the store, as `table.column` (empty for a
/// store of this version, or one with no tables yet).
pub(super) fn missing(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (table, column, _) in ADDED {
        let has_table = conn
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
            .exists([table])?;
        let has = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ))?
            .exists([])?;
        if has_table && !has {
            out.push(format!("{table}.{column}"));
        }
    }
    Ok(out)
}

/// Adds every column of [`ADDED`] that the store lacks.
pub(super) fn upgrade(conn: &Connection) -> anyhow::Result<()> {
    for (table, column, decl) in ADDED {
        let has = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
            ))?
            .exists([])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    // Crossings held back by `max_age` were `expired` before they had a status of their own.
    conn.execute(
        "UPDATE outbox SET status = 'held' WHERE status = 'expired' AND kind IN ('near', 'over')",
        [],
    )?;
    Ok(())
}
