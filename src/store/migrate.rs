//! In-place upgrades of stores written by earlier versions (DESIGN §6): columns added since,
//! each added once, inside the transaction that creates the schema.

use rusqlite::Connection;

/// Columns added to tables of earlier versions: (table, column, declaration).
const ADDED: [(&str, &str, &str); 6] = [
    ("files", "expired", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "archive_purged", "INTEGER NOT NULL DEFAULT 0"),
    ("files", "quarantine_purged", "INTEGER NOT NULL DEFAULT 0"),
    ("quarantine", "org_id", "TEXT"),
    ("quarantine", "local_date", "TEXT"),
    ("quarantine", "ts", "INTEGER"),
];

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
    Ok(())
}
