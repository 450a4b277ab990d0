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
    number_parts(conn)?;
    // Crossings held back by `max_age` were `expired` before they had a status of their own.
    conn.execute(
        "UPDATE outbox SET status = 'held' WHERE status = 'expired' AND kind IN ('near', 'over')",
        [],
    )?;
    Ok(())
}

/// Numbers the parts listed without a number (by an earlier version, before this one first
/// opened the store or since, were it run again) after every part numbered so far. A ledger
/// row that counts such a part was written by that version and names no part (its
/// `parts_seen` is 0): it is read again whole. Any other row counts none of them: they are new
/// calls to it, and are added.
fn number_parts(conn: &Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS parts_unnumbered ON parts (added) WHERE added = 0",
    )?;
    let unnumbered = conn
        .prepare("SELECT 1 FROM parts WHERE added = 0 LIMIT 1")?
        .exists([])?;
    if !unnumbered {
        return Ok(());
    }
    let counter: i64 = conn.query_row(
        "SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'parts_added'",
        [],
        |r| r.get(0),
    )?;
    // Row ids are positive and distinct: the numbers follow the counter, in listing order.
    conn.execute(
        "UPDATE parts SET added = ?1 + rowid WHERE added = 0",
        [counter],
    )?;
    conn.execute(
        "INSERT INTO meta (key, value) SELECT 'parts_added', CAST(MAX(added) AS TEXT) FROM parts WHERE true
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::super::Store;

    #[test]
    fn parts_listed_without_a_number_are_numbered_after_all_others_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creditd.sqlite");
        let day = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
        let mut store = Store::open(&path).unwrap();
        let tx = store.transaction().unwrap();
        tx.add_part("part-a", "f1", day, 10).unwrap();
        tx.add_part("part-b", "f1", day, 10).unwrap();
        tx.commit().unwrap();
        drop(store);
        // A part listed by a version that does not number them.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO parts (path, file_sha, local_date, rows) VALUES ('part-c', 'f2', ?1, 5)",
            [day],
        )
        .unwrap();
        drop(conn);
        let mut store = Store::open(&path).unwrap();
        let numbered =
            |store: &Store| -> Vec<(String, i64)> { store.numbered_parts_on(day).unwrap() };
        let listed = numbered(&store);
        let number = |name: &str, listed: &[(String, i64)]| {
            listed.iter().find(|(p, _)| p == name).unwrap().1
        };
        assert_eq!(
            (number("part-a", &listed), number("part-b", &listed)),
            (1, 2)
        );
        let c = number("part-c", &listed);
        assert!(c > 2, "{listed:?}");
        // The counter goes on after it.
        let tx = store.transaction().unwrap();
        tx.add_part("part-d", "f3", day, 1).unwrap();
        tx.commit().unwrap();
        assert!(number("part-d", &numbered(&store)) > c);
        // Opening again changes no number.
        drop(store);
        let store = Store::open(&path).unwrap();
        let again = numbered(&store);
        assert_eq!(number("part-c", &again), c);
    }
}
