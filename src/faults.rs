//! Injected faults, for the tests of fault isolation (DESIGN §7).
//!
//! `CREDITD_FAULTS` holds comma-separated names of points that fail on purpose, e.g.
//! `build:over:60000000:2025-10-08` (building that message fails) or `task:close-days` (the
//! task fails). Unset, as in every real deployment, no point fails. The tests use it where no
//! real input can make a unit fail any more because `check` refuses such inputs first.

/// Fails with a clear error when `point` is named in `CREDITD_FAULTS`.
pub fn check(point: &str) -> anyhow::Result<()> {
    let Some(list) = std::env::var_os("CREDITD_FAULTS") else {
        return Ok(());
    };
    if list.to_string_lossy().split(',').any(|p| p.trim() == point) {
        anyhow::bail!("fault injected at {point} (CREDITD_FAULTS)");
    }
    Ok(())
}
