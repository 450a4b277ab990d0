//! The ops digest's figures: unpriced endpoints and gateway drift over closed org-days.

use super::*;

/// Unpriced endpoints and gateway drift over many org-days, for the ops digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestFigures {
    /// (endpoint, calls), most calls first, at most [`UNPRICED_LISTED`].
    pub unpriced: Vec<(String, u64)>,
    /// How many distinct unpriced endpoints there are, listed or not.
    pub unpriced_endpoints: u64,
    /// (org_id, calls carrying charged_credits, charged, computed), by org.
    pub drift: Vec<(String, u64, u64, u64)>,
}

/// The most unpriced endpoints the digest lists (in its CSV attachment): paths that carry
/// unique ids can make every call an endpoint of its own.
pub const UNPRICED_LISTED: usize = 10_000;

/// Computes [`DigestFigures`] over the events of `parts` (relative to `state_dir`)
/// restricted to the org-days given.
pub fn digest_figures(
    state_dir: &Path,
    parts: &[String],
    org_days: &[OrgDay],
) -> anyhow::Result<DigestFigures> {
    let mut out = DigestFigures::default();
    if org_days.is_empty() || parts.is_empty() {
        return Ok(out);
    }
    let events = scan_parts(state_dir, parts)?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
    let keys = DataFrame::new(
        org_days.len(),
        vec![
            Column::new(
                "org_id".into(),
                org_days
                    .iter()
                    .map(|o| o.org_id.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "local_date".into(),
                org_days
                    .iter()
                    .map(|o| o.date.signed_duration_since(epoch).num_days() as i32)
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Date)?,
        ],
    )?;
    let base = events.join(
        keys.lazy(),
        [col("org_id"), col("local_date")],
        [col("org_id"), col("local_date")],
        JoinArgs::new(JoinType::Semi),
    );
    (out.unpriced, out.unpriced_endpoints) =
        unpriced_endpoints_counted(base.clone(), UNPRICED_LISTED as IdxSize)?;
    let drift = base
        .filter(col("charged_credits").is_not_null())
        .group_by([col("org_id")])
        .agg(drift_figures())
        .sort(["org_id"], SortMultipleOptions::default())
        .collect()?;
    let org = drift.column("org_id")?.str()?.clone();
    let n = drift.column("n")?.i64()?.clone();
    let charged = drift.column("charged")?.i64()?.clone();
    let computed = drift.column("computed")?.i64()?.clone();
    for i in 0..drift.height() {
        out.drift.push((
            org.get(i).unwrap_or_default().to_string(),
            n.get(i).unwrap_or(0) as u64,
            charged.get(i).unwrap_or(0) as u64,
            computed.get(i).unwrap_or(0) as u64,
        ));
    }
    Ok(out)
}
