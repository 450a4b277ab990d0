//! Decoding and validating one access-log line (DESIGN §2.1).
//!
//! Lines are decoded one at a time so that a bad line is quarantined on its own with its
//! reason, never taking its neighbours down. Pure code: a line in, a call or a reason out.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;

use crate::pricing::Method;

mod json;

/// Why a line was quarantined, in the order the checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Malformed,
    MissingField,
    BadTimestamp,
    BadMethod,
    BadStatus,
    UnknownOrg,
    BeforeSignup,
    /// The call's org-day lies before the events retention horizon (DESIGN §6): its events
    /// are gone, so it can no longer be counted exactly.
    Expired,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Malformed,
        Reason::MissingField,
        Reason::BadTimestamp,
        Reason::BadMethod,
        Reason::BadStatus,
        Reason::UnknownOrg,
        Reason::BeforeSignup,
        Reason::Expired,
    ];

    /// The exact quarantine reason string of DESIGN §2.1.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::MissingField => "missing_field",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadMethod => "bad_method",
            Reason::BadStatus => "bad_status",
            Reason::UnknownOrg => "unknown_org",
            Reason::BeforeSignup => "before_signup",
            Reason::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded, well-formed call (org checks come later, against the registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    pub ts_ms: i64,
    pub request_id: Cow<'a, str>,
    pub org_id: Cow<'a, str>,
    pub method: Method,
    pub path: Cow<'a, str>,
    pub status: u16,
    pub latency_ms: Option<i64>,
    pub charged_credits: Option<i64>,
    pub dc: Option<Cow<'a, str>>,
}

/// The input fields, by position in [`FIELDS`].
pub const FIELDS: [&str; 9] = [
    "ts",
    "request_id",
    "org_id",
    "method",
    "path",
    "status",
    "latency_ms",
    "charged_credits",
    "dc",
];

/// The first instant a call may carry: 2000-01-01T00:00:00Z, in epoch milliseconds.
pub const MIN_TS_MS: i64 = 946_684_800_000;
/// The first instant after the calls' range: 2100-01-01T00:00:00Z, in epoch milliseconds.
pub const END_TS_MS: i64 = 4_102_444_800_000;
/// The largest `latency_ms` taken (a day).
pub const MAX_LATENCY_MS: i64 = 86_400_000;
/// The largest `charged_credits` taken.
pub const MAX_CHARGED_CREDITS: i64 = 1_000_000;

/// Parses a timestamp: RFC 3339 with an offset, or integer epoch milliseconds. Digits below
/// the millisecond are truncated. `None` when unparseable or outside
/// [`MIN_TS_MS`, `END_TS_MS`): every later step (local days, prices, reports) may rely on it.
pub fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ms = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for an i64 is out of range too.
        s.parse::<i64>().ok()?
    } else {
        let dt = DateTime::parse_from_rfc3339(s).ok()?;
        dt.timestamp()
            .checked_mul(1000)?
            .checked_add(i64::from(dt.timestamp_subsec_millis()))?
    };
    (MIN_TS_MS..END_TS_MS).contains(&ms).then_some(ms)
}

fn parse_status(s: &str) -> Option<u16> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 3 {
        return None;
    }
    let v: u16 = s.parse().ok()?;
    (100..=599).contains(&v).then_some(v)
}

/// An optional count: digits only, at most `max`; anything else counts as absent.
fn parse_optional_count(s: Option<&str>, max: i64) -> Option<i64> {
    let s = s?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v| *v <= max)
}

/// One field of a line before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Field<'a> {
    /// Not there, or JSON `null`.
    #[default]
    Absent,
    /// The field's text (a JSON integer as its decimal text).
    Text(Cow<'a, str>),
    /// A JSON value of a type the field never takes: the line is `malformed`.
    WrongType,
    /// Present, but of a type that can only fail the field's own check (a `ts` that is a
    /// float, boolean, array or object is a `bad_timestamp`).
    Invalid,
}

impl Field<'_> {
    /// Present and not blank, for the `missing_field` check.
    fn present(&self) -> bool {
        match self {
            Field::Absent => false,
            Field::Text(t) => !t.trim().is_empty(),
            Field::WrongType | Field::Invalid => true,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Field::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// Validates the fields of a line (by position in [`FIELDS`]) in the order of the quarantine
/// reasons: `malformed`, `missing_field`, `bad_timestamp`, `bad_method`, `bad_status`.
/// Optional fields never give a reason: unusable ones count as absent.
fn validate<'a>(fields: [Field<'a>; 9]) -> Result<Call<'a>, Reason> {
    let [ts, request_id, org_id, method, path, status, latency, charged, dc] = fields;
    let required = [&ts, &request_id, &org_id, &method, &path, &status];
    if required.iter().any(|f| **f == Field::WrongType) {
        return Err(Reason::Malformed);
    }
    if !required.iter().all(|f| f.present()) {
        return Err(Reason::MissingField);
    }
    let ts_ms = ts.text().and_then(parse_ts).ok_or(Reason::BadTimestamp)?;
    let method = method
        .text()
        .and_then(|m| Method::parse(m.trim()))
        .ok_or(Reason::BadMethod)?;
    let status = status
        .text()
        .and_then(parse_status)
        .ok_or(Reason::BadStatus)?;
    let text = |f: Field<'a>| -> Cow<'a, str> {
        match f {
            Field::Text(Cow::Borrowed(s)) => Cow::Borrowed(s.trim()),
            Field::Text(Cow::Owned(s)) => Cow::Owned(s.trim().to_string()),
            // Checked above: every required field is text by now.
            _ => Cow::Borrowed(""),
        }
    };
    Ok(Call {
        ts_ms,
        latency_ms: parse_optional_count(latency.text(), MAX_LATENCY_MS),
        charged_credits: parse_optional_count(charged.text(), MAX_CHARGED_CREDITS),
        request_id: text(request_id),
        org_id: text(org_id),
        method,
        path: text(path),
        status,
        dc: match dc {
            Field::Text(_) => Some(text(dc)).filter(|d| !d.is_empty()),
            _ => None,
        },
    })
}

/// Decodes one NDJSON line: one JSON object, extra keys ignored, `null` counts as absent.
/// Each field takes the JSON types of DESIGN §2.1; a known field given twice is `malformed`
/// (which one would count is a guess).
pub fn decode_json(line: &str) -> Result<Call<'_>, Reason> {
    let mut values: [Option<json::Value<'_>>; 9] = Default::default();
    let mut repeated = false;
    json::object_members(line, |key, value| {
        let slot = match key.as_ref() {
            "ts" => Some(0),
            "request_id" => Some(1),
            "org_id" => Some(2),
            "method" => Some(3),
            "path" => Some(4),
            "status" => Some(5),
            "latency_ms" => Some(6),
            "charged_credits" => Some(7),
            "dc" => Some(8),
            _ => None,
        };
        if let Some(i) = slot {
            repeated |= values[i].is_some();
            values[i] = Some(value);
        }
    })
    .map_err(|()| Reason::Malformed)?;
    if repeated {
        return Err(Reason::Malformed);
    }
    let mut fields: [Field<'_>; 9] = Default::default();
    for (i, (slot, value)) in fields.iter_mut().zip(values).enumerate() {
        *slot = json_field(FIELDS[i], value.unwrap_or(json::Value::Null));
    }
    validate(fields)
}

/// What a JSON value means for the field `name` (DESIGN §2.1, "JSON types per field").
fn json_field<'a>(name: &str, value: json::Value<'a>) -> Field<'a> {
    use json::Value as V;
    match (name, value) {
        (_, V::Null) => Field::Absent,
        // `ts`: string or integer; any other type is a bad timestamp, not a malformed line.
        ("ts", V::Str(s)) => Field::Text(s),
        ("ts", V::Int(t)) => Field::Text(Cow::Borrowed(t)),
        ("ts", _) => Field::Invalid,
        ("request_id" | "org_id", V::Str(s)) => Field::Text(s),
        ("request_id" | "org_id", V::Int(t)) => Field::Text(Cow::Borrowed(t)),
        ("method" | "path", V::Str(s)) => Field::Text(s),
        // A string status that is not digits is a bad status, checked in turn.
        ("status", V::Str(s)) => Field::Text(s),
        ("status", V::Int(t)) => Field::Text(Cow::Borrowed(t)),
        // Optional fields: the wrong type counts as absent.
        ("latency_ms" | "charged_credits", V::Int(t)) => Field::Text(Cow::Borrowed(t)),
        ("dc", V::Str(s)) => Field::Text(s),
        ("latency_ms" | "charged_credits" | "dc", _) => Field::Absent,
        _ => Field::WrongType,
    }
}

/// Where each field sits in a CSV file's records, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLayout {
    index: [Option<usize>; 9],
    width: usize,
}

impl CsvLayout {
    /// Reads the header line; `None` if it is not a CSV record.
    pub fn from_header(header: &str) -> Option<CsvLayout> {
        let names = split_csv_line(header)?;
        let mut index = [None; 9];
        for (i, field) in FIELDS.iter().enumerate() {
            index[i] = names.iter().position(|n| n.trim() == *field);
        }
        Some(CsvLayout {
            index,
            width: names.len(),
        })
    }

    /// Decodes one data line.
    pub fn decode<'a>(&self, line: &'a str) -> Result<Call<'a>, Reason> {
        let fields = split_csv_line(line).ok_or(Reason::Malformed)?;
        if fields.len() != self.width {
            return Err(Reason::Malformed);
        }
        let mut values: [Field<'a>; 9] = Default::default();
        for (slot, idx) in values.iter_mut().zip(self.index) {
            if let Some(text) = idx.and_then(|i| fields.get(i)) {
                *slot = Field::Text(text.clone());
            }
        }
        validate(values)
    }
}

/// Splits one line into RFC 4180 fields. `None` for an unbalanced quote or a quote inside an
/// unquoted field: such a line is malformed on its own.
pub fn split_csv_line(line: &str) -> Option<Vec<Cow<'_, str>>> {
    let bytes = line.as_bytes();
    let mut fields = Vec::with_capacity(10);
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            // Quoted field: runs to the closing quote; "" is one quote.
            let mut value = String::new();
            let mut start = i + 1;
            let mut j = start;
            loop {
                match bytes.get(j) {
                    None => return None,
                    Some(b'"') if bytes.get(j + 1) == Some(&b'"') => {
                        value.push_str(&line[start..=j]);
                        j += 2;
                        start = j;
                    }
                    Some(b'"') => {
                        value.push_str(&line[start..j]);
                        j += 1;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            fields.push(Cow::Owned(value));
            match bytes.get(j) {
                None => return Some(fields),
                Some(b',') => i = j + 1,
                Some(_) => return None,
            }
        } else {
            let end = bytes[i..]
                .iter()
                .position(|b| *b == b',')
                .map_or(bytes.len(), |p| i + p);
            let field = &line[i..end];
            if field.contains('"') {
                return None;
            }
            fields.push(Cow::Borrowed(field));
            if end == bytes.len() {
                return Some(fields);
            }
            i = end + 1;
        }
    }
}

#[cfg(test)]
mod tests;
