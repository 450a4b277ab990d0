//! Column buffers: the events of one day of one input file, column by column, until they are
//! handed to a writing lane as a frame.

use super::writer::epoch_days;
use super::*;

/// A string column buffer: the strings back to back in one allocation, and where each ends
/// (`None` for a null), so a row costs no allocation of its own.
#[derive(Default)]
struct Strings {
    bytes: String,
    ends: Vec<Option<usize>>,
}

impl Strings {
    fn push(&mut self, s: Option<&str>) {
        self.ends.push(s.map(|s| {
            self.bytes.push_str(s);
            self.bytes.len()
        }));
    }

    fn column(&self, name: &str) -> Column {
        let mut start = 0;
        let values: Vec<Option<&str>> = self
            .ends
            .iter()
            .map(|end| {
                end.map(|end| {
                    let s = &self.bytes[start..end];
                    start = end;
                    s
                })
            })
            .collect();
        if values.iter().all(Option::is_some) {
            Column::new(
                name.into(),
                values.into_iter().flatten().collect::<Vec<&str>>(),
            )
        } else {
            Column::new(name.into(), values)
        }
    }
}

/// A string column whose rows repeat one value in long runs (the input file, the same for
/// every event of a writer): each run is kept once, and a single run becomes a column of one
/// value repeated, with no copy per row.
#[derive(Default)]
struct Runs {
    runs: Vec<(String, usize)>,
}

impl Runs {
    fn push(&mut self, s: &str) {
        match self.runs.last_mut() {
            Some((value, n)) if value == s => *n += 1,
            _ => self.runs.push((s.to_string(), 1)),
        }
    }

    fn column(&self, name: &str) -> Column {
        match self.runs.as_slice() {
            [(value, n)] => Column::new_scalar(
                name.into(),
                Scalar::new(
                    DataType::String,
                    AnyValue::StringOwned(value.as_str().into()),
                ),
                *n,
            ),
            runs => Column::new(
                name.into(),
                runs.iter()
                    .flat_map(|(value, n)| std::iter::repeat_n(value.as_str(), *n))
                    .collect::<Vec<&str>>(),
            ),
        }
    }
}

/// Column buffers for one batch of events of one day.
#[derive(Default)]
pub(super) struct Columns {
    request_id: Strings,
    org_id: Strings,
    ts: Vec<i64>,
    method: Vec<&'static str>,
    endpoint: Strings,
    status: Vec<i32>,
    billable: Vec<bool>,
    credits: Vec<i64>,
    unpriced: Vec<bool>,
    latency_ms: Vec<Option<i64>>,
    charged_credits: Vec<Option<i64>>,
    dc: Strings,
    file: Runs,
    line: Vec<i64>,
}

impl Columns {
    pub(super) fn push(&mut self, e: &Event<'_>) {
        self.request_id.push(Some(e.request_id));
        self.org_id.push(Some(e.org_id));
        self.ts.push(e.ts_ms);
        self.method.push(e.method);
        self.endpoint.push(Some(&e.endpoint));
        self.status.push(e.status as i32);
        self.billable.push(e.billable);
        self.credits.push(e.credits as i64);
        self.unpriced.push(e.unpriced);
        self.latency_ms.push(e.latency_ms);
        self.charged_credits.push(e.charged_credits);
        self.dc.push(e.dc);
        self.file.push(e.file);
        self.line.push(e.line as i64);
    }

    pub(super) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(super) fn take_frame(&mut self, date: NaiveDate) -> PolarsResult<DataFrame> {
        let c = std::mem::take(self);
        let n = c.ts.len();
        let days = epoch_days(date) as i32;
        let local_date = Column::new("local_date".into(), vec![days; n]).cast(&DataType::Date)?;
        DataFrame::new(
            n,
            vec![
                c.request_id.column("request_id"),
                c.org_id.column("org_id"),
                Column::new("ts".into(), c.ts),
                local_date,
                Column::new("method".into(), c.method),
                c.endpoint.column("endpoint"),
                Column::new("status".into(), c.status),
                Column::new("billable".into(), c.billable),
                Column::new("credits".into(), c.credits),
                Column::new("unpriced".into(), c.unpriced),
                Column::new("latency_ms".into(), c.latency_ms),
                Column::new("charged_credits".into(), c.charged_credits),
                c.dc.column("dc"),
                c.file.column("file"),
                Column::new("line".into(), c.line),
            ],
        )
    }
}
