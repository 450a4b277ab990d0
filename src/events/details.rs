//! The details of an org-day the messages show: hourly usage, top endpoints, peak
//! concurrency, unpriced calls.

use super::*;

/// What the reports show about one org-day beyond its ledger row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayDetails {
    /// (endpoint, calls, units used: credits charged, or billable calls on legacy days), most
    /// units first, at most 5.
    pub top_endpoints: Vec<(String, u64, u64)>,
    /// Units used (credits, or billable calls on legacy days) per hour since the day began.
    pub hourly: Vec<u64>,
    /// Most calls in flight at once, from `ts` and `latency_ms`.
    pub peak_concurrency: u64,
    /// (endpoint, calls) of calls no rule priced.
    pub unpriced: Vec<(String, u64)>,
    /// Calls that carried `charged_credits`, what the gateway charged and what creditd computed.
    pub drift: (u64, u64, u64),
    /// Units used per five minutes since the day began (the charts' running total).
    pub per_5min: Vec<u64>,
    /// The figures at each [`Mark`] asked for, in the order asked.
    pub marks: Vec<AtMark>,
}

/// The length of the buckets of [`DayDetails::per_5min`], in ms.
pub const FINE_MS: i64 = 300_000;

/// An instant of the day whose figures a message shows: a crossing (the call `request_id` at
/// `ts`, counted with the calls before it in call order) or a moment (`request_id` `None`:
/// every call at or before `ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark<'a> {
    pub ts: i64,
    pub request_id: Option<&'a str>,
}

/// The day's figures at a [`Mark`] (DESIGN §5.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtMark {
    /// Units used up to and including the mark.
    pub used: u64,
    /// Units used in the hour before it: calls with `ts` in (ts − 1 h, ts].
    pub last_hour: u64,
}

/// The columns [`day_details`] reads.
pub(super) const DETAIL_COLUMNS: [&str; 8] = [
    "ts",
    "request_id",
    "endpoint",
    "billable",
    "credits",
    "unpriced",
    "latency_ms",
    "charged_credits",
];

/// The events of several orgs on one date, read in one scan and split by org, so that the
/// messages of many org-days of a date read the date's parts once rather than once each.
#[derive(Default)]
pub struct OrgEvents(HashMap<String, DataFrame>);

impl OrgEvents {
    /// Reads the detail columns of `orgs`' events from `parts` (relative to `state_dir`). The
    /// day query keeps those of the orgs that reach a threshold (`reconcile_day_keeping`),
    /// which every org with crossings does: this is for an org asked for beyond them.
    pub fn load(state_dir: &Path, parts: &[String], orgs: &[String]) -> anyhow::Result<OrgEvents> {
        if parts.is_empty() || orgs.is_empty() {
            return Ok(OrgEvents::default());
        }
        let wanted = Series::new("org_id".into(), orgs.to_vec());
        let mut columns = vec![col("org_id")];
        columns.extend(DETAIL_COLUMNS.iter().map(|c| col(*c)));
        // A filter, not a join: it reaches the Parquet reader, which then decodes the other
        // columns only for the rows kept when they are few.
        let df = scan_parts(state_dir, parts)?
            .select(columns)
            .filter(col("org_id").is_in(lit(wanted).implode(false), false))
            .collect()?;
        Ok(OrgEvents::from_frame(df)?)
    }

    /// Splits `df` (`org_id` and the detail columns, any orgs) by org.
    pub fn from_frame(df: DataFrame) -> PolarsResult<OrgEvents> {
        let mut by_org = HashMap::new();
        let df = df.sort(["org_id"], SortMultipleOptions::default())?;
        let ids = df.column("org_id")?.str()?.clone();
        let mut start = 0;
        for i in 1..=df.height() {
            if i == df.height() || ids.get(i) != ids.get(start) {
                let org = ids.get(start).unwrap_or_default().to_string();
                by_org.insert(org, df.slice(start as i64, i - start));
                start = i;
            }
        }
        Ok(OrgEvents(by_org))
    }

    /// Whether `org_id`'s events are here.
    pub fn has(&self, org_id: &str) -> bool {
        self.0.contains_key(org_id)
    }

    /// Keeps the orgs for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|org, _| keep(org));
    }

    /// Adds the orgs read by `other` (read from the same parts).
    pub fn extend(&mut self, other: OrgEvents) {
        self.0.extend(other.0);
    }

    /// The details of `org_id`'s day (see [`day_details`]), `None` if it has no events here.
    pub fn details(
        &self,
        org_id: &str,
        day: DaySpan,
        marks: &[Mark<'_>],
    ) -> anyhow::Result<Option<DayDetails>> {
        match self.0.get(org_id) {
            None => Ok(None),
            Some(df) => Ok(Some(details_of(df.clone().lazy(), org_id, day, marks)?)),
        }
    }
}

/// Where an org-day's hourly figures start, how many hours it has, and what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySpan {
    /// The start of the local day (ms since the epoch): it anchors the hourly buckets.
    pub start_ms: i64,
    /// The day's length in hours, rounded up.
    pub hours: usize,
    /// The day's length in [`FINE_MS`] slots, rounded up (a 23.5-hour day has 282).
    pub slots: usize,
    /// Legacy days count billable calls; the others credits.
    pub legacy: bool,
}

impl DaySpan {
    /// The span of local day `day` in `tz`; `legacy` days count billable calls.
    pub fn new(tz: chrono_tz::Tz, day: chrono::NaiveDate, legacy: bool) -> DaySpan {
        let (start, end) = crate::localday::day_span(tz, day);
        let minutes = (end - start).num_minutes().max(0) as usize;
        DaySpan {
            start_ms: start.timestamp_millis(),
            hours: minutes.div_ceil(60),
            slots: minutes.div_ceil(5),
            legacy,
        }
    }
}

impl DayDetails {
    /// The details of a day without calls.
    pub fn empty(day: DaySpan, marks: usize) -> DayDetails {
        DayDetails {
            hourly: vec![0; day.hours.max(1)],
            per_5min: vec![0; day.slots.max(1)],
            marks: vec![AtMark::default(); marks],
            ..Default::default()
        }
    }
}

/// Computes the details of `org_id`'s day from the day's `parts` (relative to `state_dir`),
/// with the figures at each of `marks`.
pub fn day_details(
    state_dir: &Path,
    parts: &[String],
    org_id: &str,
    day: DaySpan,
    marks: &[Mark<'_>],
) -> anyhow::Result<DayDetails> {
    if parts.is_empty() {
        return Ok(DayDetails::empty(day, marks.len()));
    }
    Ok(details_of(
        scan_parts(state_dir, parts)?,
        org_id,
        day,
        marks,
    )?)
}

fn details_of(
    events: LazyFrame,
    org_id: &str,
    day: DaySpan,
    marks: &[Mark<'_>],
) -> PolarsResult<DayDetails> {
    let DaySpan {
        start_ms: day_start_ms,
        legacy,
        ..
    } = day;
    let df = events
        .filter(col("org_id").eq(lit(org_id)))
        .select(DETAIL_COLUMNS.map(col))
        .collect()?;
    let mut out = DayDetails::empty(day, marks.len());
    if df.height() == 0 {
        return Ok(out);
    }
    let charged = when(col("billable"))
        .then(col("credits"))
        .otherwise(lit(0i64));
    let unit = if legacy {
        col("billable").cast(DataType::Int64)
    } else {
        charged
    };
    let top = df
        .clone()
        .lazy()
        .group_by([col("endpoint")])
        .agg([
            len().cast(DataType::Int64).alias("calls"),
            unit.clone().sum().alias("units"),
        ])
        .sort_by_exprs(
            [col("units"), col("calls"), col("endpoint")],
            SortMultipleOptions::default().with_order_descending_multi([true, true, false]),
        )
        .limit(5)
        .collect()?;
    let names = top.column("endpoint")?.str()?.clone();
    let calls = top.column("calls")?.i64()?.clone();
    let units = top.column("units")?.cast(&DataType::Int64)?.i64()?.clone();
    for i in 0..top.height() {
        out.top_endpoints.push((
            names.get(i).unwrap_or_default().to_string(),
            calls.get(i).unwrap_or(0) as u64,
            units.get(i).unwrap_or(0) as u64,
        ));
    }

    let hourly = df
        .clone()
        .lazy()
        .with_column(((col("ts") - lit(day_start_ms)) / lit(3_600_000i64)).alias("hour"))
        .group_by([col("hour")])
        .agg([unit.clone().sum().cast(DataType::Int64).alias("units")])
        .collect()?;
    let hs = hourly
        .column("hour")?
        .cast(&DataType::Int64)?
        .i64()?
        .clone();
    let us = hourly.column("units")?.i64()?.clone();
    for i in 0..hourly.height() {
        if let (Some(h), Some(u)) = (hs.get(i), us.get(i)) {
            let idx = (h.max(0) as usize).min(out.hourly.len() - 1);
            out.hourly[idx] += u as u64;
        }
    }

    let fine = df
        .clone()
        .lazy()
        .with_column(((col("ts") - lit(day_start_ms)) / lit(FINE_MS)).alias("slot"))
        .group_by([col("slot")])
        .agg([unit.clone().sum().cast(DataType::Int64).alias("units")])
        .collect()?;
    let slots = fine.column("slot")?.cast(&DataType::Int64)?.i64()?.clone();
    let units = fine.column("units")?.i64()?.clone();
    for i in 0..fine.height() {
        if let (Some(s), Some(u)) = (slots.get(i), units.get(i)) {
            let idx = (s.max(0) as usize).min(out.per_5min.len() - 1);
            out.per_5min[idx] += u as u64;
        }
    }

    if !marks.is_empty() {
        let mut figures = Vec::new();
        for (i, m) in marks.iter().enumerate() {
            let upto = match m.request_id {
                Some(rid) => col("ts").lt(lit(m.ts)).or(col("ts")
                    .eq(lit(m.ts))
                    .and(col("request_id").lt_eq(lit(rid.to_string())))),
                None => col("ts").lt_eq(lit(m.ts)),
            };
            let hour = col("ts")
                .gt(lit(m.ts - 3_600_000))
                .and(col("ts").lt_eq(lit(m.ts)));
            figures.push(
                unit.clone()
                    .filter(upto)
                    .sum()
                    .cast(DataType::Int64)
                    .alias(format!("used{i}")),
            );
            figures.push(
                unit.clone()
                    .filter(hour)
                    .sum()
                    .cast(DataType::Int64)
                    .alias(format!("hour{i}")),
            );
        }
        let at = df.clone().lazy().select(figures).collect()?;
        for i in 0..marks.len() {
            let get = |c: String| -> PolarsResult<u64> {
                Ok(at.column(&c)?.i64()?.get(0).unwrap_or(0).max(0) as u64)
            };
            out.marks[i] = AtMark {
                used: get(format!("used{i}"))?,
                last_hour: get(format!("hour{i}"))?,
            };
        }
    }

    out.unpriced = unpriced_endpoints(df.clone().lazy(), 10)?;

    // Peak concurrency: +1 at each start, -1 at each end; ends sort before starts at the
    // same instant, so back-to-back calls do not overlap.
    let starts = df
        .clone()
        .lazy()
        .select([col("ts").alias("at"), lit(1i64).alias("delta")]);
    let ends = df.clone().lazy().select([
        (col("ts") + col("latency_ms").fill_null(lit(0i64))).alias("at"),
        lit(-1i64).alias("delta"),
    ]);
    let peak = concat([starts, ends], UnionArgs::default())?
        .sort_by_exprs([col("at"), col("delta")], SortMultipleOptions::default())
        .select([col("delta")
            .cum_sum(false)
            .max()
            .cast(DataType::Int64)
            .alias("peak")])
        .collect()?;
    out.peak_concurrency = peak.column("peak")?.i64()?.get(0).unwrap_or(0).max(0) as u64;

    let drift = df
        .lazy()
        .filter(col("charged_credits").is_not_null())
        .select(drift_figures())
        .collect()?;
    let get = |c: &str| -> PolarsResult<u64> {
        Ok(drift.column(c)?.i64()?.get(0).unwrap_or(0).max(0) as u64)
    };
    out.drift = (get("n")?, get("charged")?, get("computed")?);
    Ok(out)
}
