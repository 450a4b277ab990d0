//! Decoding and validating one access-log line (DESIGN §2.1).
//!
//! Lines are decoded one at a time so that a bad line is quarantined on its own with its
//! reason, never taking its neighbours down. Pure code: a line in, a call or a reason out.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;
use serde::Deserialize;

use crate::pricing::Method;

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
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Malformed,
        Reason::MissingField,
        Reason::BadTimestamp,
        Reason::BadMethod,
        Reason::BadStatus,
        Reason::UnknownOrg,
        Reason::BeforeSignup,
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

/// Parses a timestamp: RFC 3339 with an offset, or integer epoch milliseconds. Digits below
/// the millisecond are truncated.
pub fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().ok()?;
        // Keep to the range chrono can show as a date.
        return DateTime::from_timestamp_millis(ms).map(|_| ms);
    }
    let dt = DateTime::parse_from_rfc3339(s).ok()?;
    let secs = dt.timestamp();
    let millis = dt.timestamp_subsec_millis() as i64;
    Some(secs * 1000 + millis)
}

fn parse_status(s: &str) -> Option<u16> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 3 {
        return None;
    }
    let v: u16 = s.parse().ok()?;
    (100..=599).contains(&v).then_some(v)
}

fn parse_optional_count(s: Option<&str>) -> Option<i64> {
    let s = s?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Validates the text fields of a line, in the order of the quarantine reasons.
/// `fields` holds the raw text of each of [`FIELDS`] (`None` when absent).
fn validate<'a>(fields: [Option<Cow<'a, str>>; 9]) -> Result<Call<'a>, Reason> {
    let [ts, request_id, org_id, method, path, status, latency, charged, dc] = fields;
    let present = |f: &Option<Cow<'a, str>>| f.as_ref().is_some_and(|v| !v.trim().is_empty());
    if ![&ts, &request_id, &org_id, &method, &path, &status]
        .into_iter()
        .all(present)
    {
        return Err(Reason::MissingField);
    }
    let ts_ms = parse_ts(ts.as_deref().expect("present")).ok_or(Reason::BadTimestamp)?;
    let method =
        Method::parse(method.as_deref().expect("present").trim()).ok_or(Reason::BadMethod)?;
    let status = parse_status(status.as_deref().expect("present")).ok_or(Reason::BadStatus)?;
    let trim = |c: Cow<'a, str>| -> Cow<'a, str> {
        match c {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
        }
    };
    Ok(Call {
        ts_ms,
        request_id: trim(request_id.expect("present")),
        org_id: trim(org_id.expect("present")),
        method,
        path: trim(path.expect("present")),
        status,
        latency_ms: parse_optional_count(latency.as_deref()),
        charged_credits: parse_optional_count(charged.as_deref()),
        dc: dc.map(trim).filter(|d| !d.is_empty()),
    })
}

/// A JSON scalar as it may appear for a field: a string, a number, or something else.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Other,
}

/// Takes whatever JSON value comes, in one pass (an untagged enum would try each variant in
/// turn and build an error message for every miss).
impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Any<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Scalar<'a>, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Scalar<'a>, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(Any(std::marker::PhantomData))
    }
}

impl<'a> Scalar<'a> {
    /// The field's text; floats, booleans, arrays and objects become text that fails the
    /// field's own check (so `1.5e12` is a bad timestamp, not a missing one).
    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s) => Some(s),
            Scalar::Int(i) => Some(Cow::Owned(i.to_string())),
            Scalar::UInt(u) => Some(Cow::Owned(u.to_string())),
            Scalar::Float(f) => Some(Cow::Owned(format!("{f}!"))),
            Scalar::Other => Some(Cow::Borrowed("?")),
        }
    }
}

#[derive(Debug, Deserialize)]
struct JsonLine<'a> {
    #[serde(borrow)]
    ts: Option<Scalar<'a>>,
    #[serde(borrow)]
    request_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    org_id: Option<Scalar<'a>>,
    #[serde(borrow)]
    method: Option<Scalar<'a>>,
    #[serde(borrow)]
    path: Option<Scalar<'a>>,
    #[serde(borrow)]
    status: Option<Scalar<'a>>,
    #[serde(borrow)]
    latency_ms: Option<Scalar<'a>>,
    #[serde(borrow)]
    charged_credits: Option<Scalar<'a>>,
    #[serde(borrow)]
    dc: Option<Scalar<'a>>,
}

/// Decodes one NDJSON line: one JSON object, extra keys ignored, `null` counts as absent.
pub fn decode_json<'a>(line: &'a str) -> Result<Call<'a>, Reason> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Err(Reason::Malformed);
    }
    let j: JsonLine<'a> = serde_json::from_str(line).map_err(|_| Reason::Malformed)?;
    fn t(s: Option<Scalar<'_>>) -> Option<Cow<'_, str>> {
        s.and_then(Scalar::text)
    }
    validate([
        t(j.ts),
        t(j.request_id),
        t(j.org_id),
        t(j.method),
        t(j.path),
        t(j.status),
        t(j.latency_ms),
        t(j.charged_credits),
        t(j.dc),
    ])
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
        let mut values: [Option<Cow<'a, str>>; 9] = Default::default();
        for (slot, idx) in values.iter_mut().zip(self.index) {
            *slot = idx.map(|i| fields[i].clone());
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
mod tests {
    use super::*;

    /// Renders a decode result as `reason` or `ts_ms request_id org method path status`.
    fn show(r: Result<Call<'_>, Reason>) -> String {
        match r {
            Err(reason) => reason.to_string(),
            Ok(c) => format!(
                "{} {} {} {} {} {} {:?} {:?} {:?}",
                c.ts_ms,
                c.request_id,
                c.org_id,
                c.method.as_str(),
                c.path,
                c.status,
                c.latency_ms,
                c.charged_credits,
                c.dc.as_deref()
            ),
        }
    }

    fn json(line: &str, expect: &str) {
        assert_eq!(show(decode_json(line)), expect, "{line}");
    }

    #[test]
    fn timestamps_in_every_form() {
        assert_eq!(
            parse_ts("2025-10-07T23:59:59.123Z"),
            Some(1_759_881_599_123)
        );
        assert_eq!(
            parse_ts("2025-10-08T05:29:59.123+05:30"),
            Some(1_759_881_599_123)
        );
        // Digits below the millisecond are truncated, not rounded.
        assert_eq!(
            parse_ts("2025-10-07T23:59:59.123999Z"),
            Some(1_759_881_599_123)
        );
        assert_eq!(parse_ts("1759881599123"), Some(1_759_881_599_123));
        assert_eq!(parse_ts("2025-10-07T23:59:59"), None); // no offset
        assert_eq!(parse_ts("2025-10-07"), None);
        assert_eq!(parse_ts("1759881599123.5"), None);
        assert_eq!(parse_ts("yesterday"), None);
        assert_eq!(parse_ts("99999999999999999999"), None);
    }

    #[test]
    fn json_lines() {
        json(
            r#"{"ts":"2025-10-07T23:59:59.123Z","request_id":"r1","org_id":"100","method":"get","path":"/api/v1/tickets?from=1","status":200,"latency_ms":35,"charged_credits":3,"dc":"us","extra":[1,2]}"#,
            "1759881599123 r1 100 GET /api/v1/tickets?from=1 200 Some(35) Some(3) Some(\"us\")",
        );
        json(
            r#"{"ts":1759881599123,"request_id":"r\"2","org_id":100,"method":"DELETE","path":"/x","status":"204"}"#,
            "1759881599123 r\"2 100 DELETE /x 204 None None None",
        );
        // Unusable optional values are dropped, not fatal.
        json(
            r#"{"ts":1,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":200,"latency_ms":-4,"charged_credits":"lots"}"#,
            "1 r 1 GET /x 200 None None None",
        );
    }

    #[test]
    fn json_reasons_in_order() {
        json("not json", "malformed");
        json("[1,2]", "malformed");
        json(r#"{"ts":1,"#, "malformed");
        json(
            r#"{"request_id":"r","org_id":"1","method":"GET","path":"/x","status":200}"#,
            "missing_field",
        );
        json(
            r#"{"ts":1,"request_id":"","org_id":"1","method":"GET","path":"/x","status":200}"#,
            "missing_field",
        );
        json(
            r#"{"ts":1,"request_id":"r","org_id":null,"method":"GET","path":"/x","status":200}"#,
            "missing_field",
        );
        // A bad timestamp is reported before a bad method.
        json(
            r#"{"ts":"soon","request_id":"r","org_id":"1","method":"FETCH","path":"/x","status":200}"#,
            "bad_timestamp",
        );
        json(
            r#"{"ts":1.5,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":200}"#,
            "bad_timestamp",
        );
        json(
            r#"{"ts":1,"request_id":"r","org_id":"1","method":"HEAD","path":"/x","status":200}"#,
            "bad_method",
        );
        json(
            r#"{"ts":1,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":600}"#,
            "bad_status",
        );
        json(
            r#"{"ts":1,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":99}"#,
            "bad_status",
        );
        json(
            r#"{"ts":1,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":"2xx"}"#,
            "bad_status",
        );
    }

    #[test]
    fn csv_lines_any_column_order_extra_columns_ignored() {
        let layout =
            CsvLayout::from_header("status,path,method,org_id,request_id,ts,region").unwrap();
        assert_eq!(
            show(layout.decode("200,\"/a,b?x=\"\"1\"\"\",POST,7,r9,1000,eu")),
            "1000 r9 7 POST /a,b?x=\"1\" 200 None None None"
        );
        assert_eq!(show(layout.decode("200,/a,POST,7,r9,1000")), "malformed");
        assert_eq!(
            show(layout.decode("200,/a,POST,7,,1000,eu")),
            "missing_field"
        );
        assert_eq!(show(layout.decode("abc,/a,POST,7,r,1000,eu")), "bad_status");
    }

    #[test]
    fn csv_quotes_unbalanced_or_stray_are_malformed() {
        assert_eq!(split_csv_line("a,\"b"), None);
        assert_eq!(split_csv_line("a,b\"c,d"), None);
        assert_eq!(split_csv_line("a,\"b\"c"), None);
        assert_eq!(
            split_csv_line("\"\",,\"x,\"\"y\"").unwrap(),
            vec!["", "", "x,\"y"]
        );
        assert_eq!(split_csv_line("").unwrap(), vec![""]);
    }

    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary text never panics the JSON decoder: it is a call or a reason.
            #[test]
            fn any_text_decodes_or_has_a_reason(line in "\\PC{0,200}") {
                match decode_json(&line) {
                    Ok(call) => prop_assert!(!call.request_id.is_empty() && !call.org_id.is_empty()),
                    Err(r) => prop_assert!(Reason::ALL.contains(&r)),
                }
            }

            /// Near-valid JSON lines, with fields dropped or garbled, decode or get a reason.
            #[test]
            fn mangled_json_lines_decode_or_have_a_reason(
                ts in prop_oneof!["2025-10-08T10:00:00Z", "\\PC{0,30}", "1759917600000", "null"],
                rid in "\\PC{0,20}",
                method in prop_oneof!["GET", "post", "HEAD", "\\PC{0,6}"],
                status in prop_oneof!["200", "\"200\"", "-1", "99999999999999999999", "\\PC{0,5}"],
                drop in 0usize..6,
            ) {
                let mut fields = vec![
                    format!("\"ts\":{}", if ts.starts_with('2') { format!("\"{ts}\"") } else { ts.clone() }),
                    format!("\"request_id\":{:?}", rid),
                    "\"org_id\":\"1\"".to_string(),
                    format!("\"method\":{:?}", method),
                    "\"path\":\"/api/v1/x\"".to_string(),
                    format!("\"status\":{status}"),
                ];
                fields.remove(drop);
                let line = format!("{{{}}}", fields.join(","));
                match decode_json(&line) {
                    Ok(call) => prop_assert!(!call.request_id.is_empty()),
                    Err(r) => prop_assert!(Reason::ALL.contains(&r)),
                }
            }

            /// Arbitrary CSV lines, quotes anywhere, never panic the CSV decoder.
            #[test]
            fn any_csv_line_decodes_or_has_a_reason(line in "[a-zA-Z0-9,\"/: .-]{0,120}") {
                let layout = CsvLayout::from_header("ts,request_id,org_id,method,path,status").unwrap();
                match layout.decode(&line) {
                    Ok(call) => prop_assert!(!call.request_id.is_empty() && !call.org_id.is_empty()),
                    Err(r) => prop_assert!(Reason::ALL.contains(&r)),
                }
                // An unbalanced quote anywhere makes the line malformed, never a guess.
                if line.matches('"').count() % 2 == 1 {
                    prop_assert_eq!(layout.decode(&line).err(), Some(Reason::Malformed));
                }
            }
        }
    }
}
