//! The day query: a day's figures per org and the threshold crossings (running totals).

use super::*;

/// What an org-day is measured against, for the reconcile query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub org_id: String,
    /// Legacy days count billable calls; the others count credits.
    pub legacy: bool,
    pub allotted: u64,
}

/// The figures of one org-day computed from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFigures {
    pub org_id: String,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub used: u64,
    pub unpriced_calls: u64,
    /// (threshold, ts, request_id) for each configured threshold reached, and 100 for the
    /// call that took the total above the allotment.
    pub crossings: Vec<(u64, i64, String)>,
}

/// The most measured orgs whose filter [`reconcile_day`] hands to the Parquet reader.
const FILTER_IN_READER_AT_MOST: usize = 4;

/// Reconciles one local day from its listed `parts` (relative to `state_dir`; any orgs):
/// `measures` names the orgs to compute and their allotments. Calls are ordered by `ts`, then
/// `request_id`.
pub fn reconcile_day(
    state_dir: &Path,
    parts: &[String],
    measures: &[Measure],
    thresholds: &[u64],
) -> anyhow::Result<Vec<DayFigures>> {
    let all = measures.len();
    Ok(reconcile_day_keeping(state_dir, parts, measures, thresholds, false, all)?.0)
}

/// [`reconcile_day`], and, with `keep`, the events of the orgs that reach a threshold, read
/// in the same scan: those the alerts' details need (the orgs with crossings among them).
/// `day_orgs`: how many orgs the day has at least, as far as the caller knows (at least the
/// measured ones: the ledger passes the date's dirty orgs); when the measured orgs are a small
/// part of them, their calls are kept apart before anything is worked out.
pub fn reconcile_day_keeping(
    state_dir: &Path,
    parts: &[String],
    measures: &[Measure],
    thresholds: &[u64],
    keep: bool,
    day_orgs: usize,
) -> anyhow::Result<(Vec<DayFigures>, OrgEvents)> {
    if parts.is_empty() || measures.is_empty() {
        return Ok((Vec::new(), OrgEvents::default()));
    }
    let scan = scan_parts(state_dir, parts)?;
    let (figures, kept) = reconcile(scan, measures, thresholds, keep, day_orgs)?;
    let kept = kept.map(OrgEvents::from_frame).transpose()?;
    Ok((figures, kept.unwrap_or_default()))
}

/// [`reconcile_day`] over a frame of events.
#[cfg(test)]
pub(super) fn reconcile_frame(
    events: LazyFrame,
    measures: &[Measure],
    thresholds: &[u64],
) -> PolarsResult<Vec<DayFigures>> {
    Ok(reconcile(events, measures, thresholds, false, measures.len())?.0)
}

/// The most measured orgs, as a share of the day's orgs known to the caller, whose calls
/// [`reconcile_day_keeping`] keeps apart from the others' once read (1 in 8): the joins, sums
/// and sorts then work on theirs alone. For a late file's few org-days that must be read again
/// from a day of 740 orgs (31 of them), that took the query from about 115 to 100 ms.
const KEEP_APART_AT_MOST_ONE_IN: usize = 8;

/// The day query over a frame of events, and with `keep` the detail columns of the orgs that
/// reach a threshold (`day_orgs` as for [`reconcile_day_keeping`]).
fn reconcile(
    events: LazyFrame,
    measures: &[Measure],
    thresholds: &[u64],
    keep: bool,
    day_orgs: usize,
) -> PolarsResult<(Vec<DayFigures>, Option<DataFrame>)> {
    if measures.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut term_columns = vec![
        Column::new(
            "org_id".into(),
            measures
                .iter()
                .map(|m| m.org_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "legacy".into(),
            measures.iter().map(|m| m.legacy).collect::<Vec<_>>(),
        ),
        Column::new(
            "allotted".into(),
            measures
                .iter()
                .map(|m| i64::try_from(m.allotted).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        ),
    ];
    // The least total that reaches t %: 100 × used ≥ t × allotted exactly when used ≥
    // ⌈t × allotted / 100⌉, worked out here in u128 because t × allotted overflows i64 for
    // allotments that the bounds allow (up to about 10^18).
    for t in thresholds {
        term_columns.push(Column::new(
            format!("need{t}").into(),
            measures
                .iter()
                .map(|m| {
                    let need = (u128::from(m.allotted) * u128::from(*t)).div_ceil(100);
                    i64::try_from(need).unwrap_or(i64::MAX)
                })
                .collect::<Vec<_>>(),
        ));
    }
    let term_names: Vec<Expr> = term_columns.iter().map(|c| col(c.name().clone())).collect();
    let terms = DataFrame::new(measures.len(), term_columns)?;
    let units = when(col("billable"))
        .then(
            when(col("legacy"))
                .then(lit(1i64))
                .otherwise(col("credits")),
        )
        .otherwise(lit(0i64));
    let mut firsts = Vec::new();
    let mut crossing_names = Vec::new();
    let mut crossing_at = |name: String, pred: Expr| {
        firsts.push(
            col("ts")
                .filter(pred.clone())
                .first()
                .alias(format!("{name}_ts")),
        );
        firsts.push(
            col("request_id")
                .filter(pred)
                .first()
                .alias(format!("{name}_rid")),
        );
        crossing_names.push(name);
    };
    // An org-day reaches a threshold at all exactly when its total does: units are never
    // negative, so the running total only rises.
    let mut reaches = col("used").gt(col("allotted"));
    for t in thresholds {
        crossing_at(
            format!("near{t}"),
            col("running")
                .gt_eq(col(format!("need{t}")))
                .and(col("units").gt(lit(0i64))),
        );
        reaches = reaches.or(col("used").gt_eq(col(format!("need{t}"))));
    }
    crossing_at(
        "over".to_string(),
        col("running")
            .gt(col("allotted"))
            .and(col("units").gt(lit(0i64))),
    );

    let read: Vec<&str> = if keep {
        std::iter::once("org_id").chain(DETAIL_COLUMNS).collect()
    } else {
        vec![
            "org_id",
            "ts",
            "request_id",
            "billable",
            "credits",
            "unpriced",
        ]
    };
    let calls = events.select(read.iter().map(|c| col(*c)).collect::<Vec<_>>());
    // For a few orgs of a day of many, the Parquet reader filters their calls, and decodes the
    // other columns only for the rows kept. For more orgs a filter costs more than it saves,
    // there (1.6 × the whole query's time with every org of a day measured) or on the frame
    // read: the joins with the measured orgs below keep their figures alone.
    let wanted = || -> PolarsResult<Expr> {
        let orgs = terms.column("org_id")?.as_materialized_series().clone();
        Ok(col("org_id").is_in(lit(orgs).implode(false), false))
    };
    let calls = if measures.len() <= FILTER_IN_READER_AT_MOST {
        calls.filter(wanted()?).collect()?
    } else if measures.len() * KEEP_APART_AT_MOST_ONE_IN <= day_orgs {
        // Read whole, then filtered: in the reader, the filter was the slower of the two.
        calls.collect()?.lazy().filter(wanted()?).collect()?
    } else {
        calls.collect()?
    };
    // The day's figures need no order: sums per org, then the org's terms (used = billable
    // calls on legacy days, else their credits).
    let figures = calls
        .clone()
        .lazy()
        .group_by([col("org_id")])
        .agg(sums())
        .join(
            terms.lazy(),
            [col("org_id")],
            [col("org_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_column(
            when(col("legacy"))
                .then(col("billable_calls"))
                .otherwise(col("credits"))
                .alias("used"),
        )
        .collect()?;
    // The crossings need each org's calls in call order (`ts`, then `request_id`), but only
    // of the orgs that reach a threshold: most org-days do not, and sorting is the costly step.
    let reaching = figures.clone().lazy().filter(reaches).select(term_names);
    let mut held = calls.lazy().join(
        reaching,
        [col("org_id")],
        [col("org_id")],
        JoinArgs::new(JoinType::Inner),
    );
    let mut kept = None;
    if keep {
        let df = held.collect()?;
        kept = Some(df.select(read.iter().copied())?);
        held = df.lazy();
    }
    let crossings = held
        .with_column(units.alias("units"))
        // An integer first key settles almost every comparison without strings.
        .sort_by_exprs(
            [col("ts"), col("request_id")],
            SortMultipleOptions::default(),
        )
        // The running totals are per org (`over`); each org's rows keep the call order.
        .with_column(
            col("units")
                .cum_sum(false)
                .over([col("org_id")])?
                .alias("running"),
        )
        .group_by([col("org_id")])
        .agg(firsts);
    let df = figures
        .lazy()
        .join(
            crossings,
            [col("org_id")],
            [col("org_id")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["org_id"], SortMultipleOptions::default())
        .collect()?;

    let org = df.column("org_id")?.str()?.clone();
    let num = |name: &str| -> PolarsResult<Int64Chunked> {
        Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.clone())
    };
    let calls = num("calls")?;
    let billable = num("billable_calls")?;
    let credits = num("credits")?;
    let used = num("used")?;
    let unpriced = num("unpriced_calls")?;
    let mut crossing_cols = Vec::new();
    for (i, name) in crossing_names.iter().enumerate() {
        let threshold = thresholds.get(i).copied().unwrap_or(100);
        crossing_cols.push((
            threshold,
            num(&format!("{name}_ts"))?,
            df.column(&format!("{name}_rid"))?.str()?.clone(),
        ));
    }
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut crossings = Vec::new();
        for (t, ts, rid) in &crossing_cols {
            if let (Some(ts), Some(rid)) = (ts.get(i), rid.get(i)) {
                crossings.push((*t, ts, rid.to_string()));
            }
        }
        out.push(DayFigures {
            org_id: org.get(i).unwrap_or_default().to_string(),
            calls: calls.get(i).unwrap_or(0) as u64,
            billable_calls: billable.get(i).unwrap_or(0) as u64,
            credits: credits.get(i).unwrap_or(0) as u64,
            used: used.get(i).unwrap_or(0) as u64,
            unpriced_calls: unpriced.get(i).unwrap_or(0) as u64,
            crossings,
        });
    }
    Ok((out, kept))
}

/// An org's sums over its calls, per group: `calls`, `billable_calls`, `credits` (of billable
/// calls) and `unpriced_calls`.
fn sums() -> [Expr; 4] {
    [
        len().cast(DataType::Int64).alias("calls"),
        col("billable")
            .cast(DataType::Int64)
            .sum()
            .alias("billable_calls"),
        col("credits")
            .filter(col("billable"))
            .sum()
            .alias("credits"),
        col("unpriced")
            .cast(DataType::Int64)
            .sum()
            .alias("unpriced_calls"),
    ]
}

/// What the calls of some parts add to one org's figures on their day, and the first of them
/// (in call order) that counts under each model: a billable call (legacy days), a billable
/// call that costs credits (the others).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    pub org_id: String,
    pub calls: u64,
    pub billable_calls: u64,
    pub credits: u64,
    pub unpriced_calls: u64,
    /// (ts, request_id) of the first billable call.
    pub first_billable: Option<(i64, String)>,
    /// (ts, request_id) of the first billable call that costs credits.
    pub first_charged: Option<(i64, String)>,
}

/// What the calls of `parts` (relative to `state_dir`; all of one local day) add to each org's
/// figures, by org: the parts a late file added to a day, read alone.
pub fn added_by(state_dir: &Path, parts: &[String]) -> anyhow::Result<Vec<Added>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    Ok(added(scan_parts(state_dir, parts)?)?)
}

/// [`added_by`] over a frame of events.
pub(super) fn added(events: LazyFrame) -> PolarsResult<Vec<Added>> {
    let first = |name: &str, pred: Expr| {
        [
            col("ts")
                .filter(pred.clone())
                .first()
                .alias(format!("{name}_ts")),
            col("request_id")
                .filter(pred)
                .first()
                .alias(format!("{name}_rid")),
        ]
    };
    let charged = col("billable").and(col("credits").gt(lit(0i64)));
    let df = events
        .select([
            col("org_id"),
            col("ts"),
            col("request_id"),
            col("billable"),
            col("credits").cast(DataType::Int64),
            col("unpriced"),
        ])
        // `first` in each org's group is the first call in call order.
        .sort_by_exprs(
            [col("ts"), col("request_id")],
            SortMultipleOptions::default(),
        )
        .group_by([col("org_id")])
        .agg(
            sums()
                .into_iter()
                .chain(first("billable", col("billable")))
                .chain(first("charged", charged))
                .collect::<Vec<_>>(),
        )
        .sort(["org_id"], SortMultipleOptions::default())
        .collect()?;
    let num = |name: &str| -> PolarsResult<Int64Chunked> {
        Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.clone())
    };
    let org = df.column("org_id")?.str()?.clone();
    let (calls, billable, credits, unpriced) = (
        num("calls")?,
        num("billable_calls")?,
        num("credits")?,
        num("unpriced_calls")?,
    );
    let (billable_ts, charged_ts) = (num("billable_ts")?, num("charged_ts")?);
    let billable_rid = df.column("billable_rid")?.str()?.clone();
    let charged_rid = df.column("charged_rid")?.str()?.clone();
    let key = |ts: Option<i64>, rid: Option<&str>| Some((ts?, rid?.to_string()));
    Ok((0..df.height())
        .map(|i| Added {
            org_id: org.get(i).unwrap_or_default().to_string(),
            calls: calls.get(i).unwrap_or(0) as u64,
            billable_calls: billable.get(i).unwrap_or(0) as u64,
            credits: credits.get(i).unwrap_or(0) as u64,
            unpriced_calls: unpriced.get(i).unwrap_or(0) as u64,
            first_billable: key(billable_ts.get(i), billable_rid.get(i)),
            first_charged: key(charged_ts.get(i), charged_rid.get(i)),
        })
        .collect())
}

/// Test support: a frame of events given as (org, ts, request_id, billable, credits).
#[cfg(test)]
pub(super) fn frame(rows: &[(&str, i64, &str, bool, i64)]) -> LazyFrame {
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            Column::new(
                "org_id".into(),
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ),
            Column::new("ts".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            Column::new(
                "request_id".into(),
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            ),
            Column::new(
                "billable".into(),
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            ),
            Column::new(
                "credits".into(),
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            ),
            Column::new("unpriced".into(), vec![false; n]),
        ],
    )
    .unwrap()
    .lazy()
}

/// Test support: [`reconcile_day`] over events given as for [`frame`].
#[cfg(test)]
pub(crate) fn figures_of(
    rows: &[(&str, i64, &str, bool, i64)],
    measures: &[Measure],
    thresholds: &[u64],
) -> Vec<DayFigures> {
    reconcile(frame(rows), measures, thresholds, false, measures.len())
        .unwrap()
        .0
}

/// Test support: [`added_by`] over events given as for [`frame`].
#[cfg(test)]
pub(crate) fn added_of(rows: &[(&str, i64, &str, bool, i64)]) -> Vec<Added> {
    added(frame(rows)).unwrap()
}
