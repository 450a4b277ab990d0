//! In-place upgrades of a state directory written by an earlier version (DESIGN §6) that need
//! more than the store's schema: the single claims index of earlier versions is retired (every
//! date rebuilds its own claims from its parts on first touch), and parts that hold the events
//! of several input files (written by earlier backfills) are split into one part per input
//! file, as every part now is. Each writing task runs [`upgrade`] first; on a current state it
//! costs two queries.

use std::path::Path;

use crate::events::{sources_of, split_part_path, write_source};
use crate::store::{ListedPart, Store};

/// Brings the state directory of `store` to this version's layout.
pub fn upgrade(state_dir: &Path, store: &mut Store) -> anyhow::Result<()> {
    for legacy in store.retire_legacy_claims()? {
        let _ = std::fs::remove_file(state_dir.join(&legacy));
        tracing::info!(file = %legacy, "removed the claims index of an earlier version");
    }
    split_mixed_parts(state_dir, store)
}

/// Splits every listed part of several input files into one part per file, each in a
/// transaction of its own: the new parts are written first, then listed in place of the old
/// one, which is deleted after the commit. A crash leaves the old part listed (and unlisted
/// orphans that nothing reads).
fn split_mixed_parts(state_dir: &Path, store: &mut Store) -> anyhow::Result<()> {
    if !store.has_mixed_parts()? {
        return Ok(());
    }
    for (date, path) in store.mixed_parts()? {
        let mut new = Vec::new();
        for (sha, _) in sources_of(state_dir, &path)? {
            let rel = split_part_path(date, &path, &sha);
            let rows = write_source(state_dir, &path, &sha, &rel)?;
            new.push(ListedPart {
                path: rel,
                file_sha: sha,
                rows,
            });
        }
        let tx = store.transaction()?;
        tx.split_part(date, &path, &new)?;
        tx.commit()?;
        let _ = std::fs::remove_file(state_dir.join(&path));
        tracing::info!(
            part = %path,
            files = new.len(),
            "split an event part of an earlier version by input file"
        );
    }
    Ok(())
}
