//! The decoding and validation rules of one log line, case by case (DESIGN §2.1).

use super::*;

/// Renders a decode result as its reason, or as
/// `ts_ms request_id org method path status latency charged dc`.
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
    assert_eq!(parse_ts(""), None);
    assert_eq!(parse_ts("-"), None);
    assert_eq!(parse_ts("99999999999999999999"), None);
}

#[test]
fn timestamps_outside_2000_to_2100_are_refused_in_every_form() {
    for (ts, want) in [
        ("2000-01-01T00:00:00Z", Some(MIN_TS_MS)),
        ("1999-12-31T23:59:59.999Z", None),
        ("2000-01-01T05:29:59.999+05:30", None),
        ("2000-01-01T05:30:00+05:30", Some(MIN_TS_MS)),
        ("1999-12-31T19:00:00-05:00", Some(MIN_TS_MS)),
        ("2099-12-31T23:59:59.999Z", Some(END_TS_MS - 1)),
        ("2099-12-31T23:59:59.999999999Z", Some(END_TS_MS - 1)),
        ("2100-01-01T00:00:00Z", None),
        ("2100-01-01T01:00:00+01:00", None),
        ("2099-12-31T20:00:00-04:00", None),
        ("0001-01-01T00:00:00Z", None),
        ("0001-01-01T00:00:00+23:59", None),
        ("9999-12-31T23:59:59.999Z", None),
        ("9999-12-31T23:59:59-23:59", None),
        ("946684800000", Some(MIN_TS_MS)),
        ("946684799999", None),
        ("4102444799999", Some(END_TS_MS - 1)),
        ("4102444800000", None),
        ("8210266876799999", None),
        ("9223372036854775807", None),
        ("9223372036854775808", None),
        ("-9223372036854775808", None),
        ("-1759881599123", None),
        ("0", None),
        ("-0", None),
    ] {
        assert_eq!(parse_ts(ts), want, "{ts}");
    }
}

/// A valid line with `field` set to the JSON text `value` (`None`: the key left out).
fn line_with(field: &str, value: Option<&str>) -> String {
    let base = [
        ("ts", "\"2025-10-08T10:00:00Z\""),
        ("request_id", "\"r1\""),
        ("org_id", "\"100\""),
        ("method", "\"GET\""),
        ("path", "\"/x\""),
        ("status", "200"),
        ("latency_ms", "35"),
        ("charged_credits", "3"),
        ("dc", "\"us\""),
    ];
    let members: Vec<String> = base
        .iter()
        .filter_map(|(k, v)| match (*k == field, value) {
            (false, _) => Some(format!("\"{k}\":{v}")),
            (true, Some(v)) => Some(format!("\"{k}\":{v}")),
            (true, None) => None,
        })
        .collect();
    format!("{{{}}}", members.join(","))
}

/// The valid line above, decoded; `{}` marks the changed field's rendering.
const BASE: &str = "1759917600000 r1 100 GET /x 200 Some(35) Some(3) Some(\"us\")";

/// Every JSON type in every field, with huge and edge values: the outcome §2.1 gives.
#[test]
fn every_json_type_in_every_field() {
    let ok = |from: &str, to: &str| BASE.replacen(from, to, 1);
    let nines = "9".repeat(400);
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        // ts: string or integer; any other type is a bad timestamp; null is absent.
        ("ts", None, "missing_field".into()),
        ("ts", Some("null"), "missing_field".into()),
        ("ts", Some("\"\""), "missing_field".into()),
        ("ts", Some("\"  \""), "missing_field".into()),
        ("ts", Some("true"), "bad_timestamp".into()),
        ("ts", Some("false"), "bad_timestamp".into()),
        ("ts", Some("[1759917600000]"), "bad_timestamp".into()),
        ("ts", Some("{\"a\":1}"), "bad_timestamp".into()),
        ("ts", Some("1759917600000.0"), "bad_timestamp".into()),
        ("ts", Some("1.7599176e12"), "bad_timestamp".into()),
        ("ts", Some("1e400"), "bad_timestamp".into()),
        ("ts", Some("-1e400"), "bad_timestamp".into()),
        ("ts", Some("18446744073709551615"), "bad_timestamp".into()),
        ("ts", Some("-9223372036854775809"), "bad_timestamp".into()),
        ("ts", Some(&nines), "bad_timestamp".into()),
        ("ts", Some("8210266876799999"), "bad_timestamp".into()),
        ("ts", Some("-8210266876799999"), "bad_timestamp".into()),
        ("ts", Some("0"), "bad_timestamp".into()),
        ("ts", Some("946684799999"), "bad_timestamp".into()),
        ("ts", Some("4102444800000"), "bad_timestamp".into()),
        ("ts", Some("\"soon\""), "bad_timestamp".into()),
        (
            "ts",
            Some("\"2100-01-01T00:00:00Z\""),
            "bad_timestamp".into(),
        ),
        (
            "ts",
            Some("\"1999-12-31T23:59:59.999Z\""),
            "bad_timestamp".into(),
        ),
        (
            "ts",
            Some("\"0001-01-01T00:00:00Z\""),
            "bad_timestamp".into(),
        ),
        (
            "ts",
            Some("\"9999-12-31T23:59:59Z\""),
            "bad_timestamp".into(),
        ),
        (
            "ts",
            Some("946684800000"),
            ok("1759917600000", "946684800000"),
        ),
        (
            "ts",
            Some("\"2099-12-31T23:59:59.999Z\""),
            ok("1759917600000", "4102444799999"),
        ),
        ("ts", Some("\"1759917600000\""), BASE.into()),
        ("ts", Some("1759917600000"), BASE.into()),
        // request_id: string or integer (its decimal text, however long).
        ("request_id", None, "missing_field".into()),
        ("request_id", Some("null"), "missing_field".into()),
        ("request_id", Some("\"\""), "missing_field".into()),
        ("request_id", Some("true"), "malformed".into()),
        ("request_id", Some("[1,2]"), "malformed".into()),
        ("request_id", Some("{\"a\":1}"), "malformed".into()),
        ("request_id", Some("1.5"), "malformed".into()),
        ("request_id", Some("1e400"), "malformed".into()),
        ("request_id", Some("2.0"), "malformed".into()),
        ("request_id", Some("42"), ok("r1", "42")),
        ("request_id", Some("-7"), ok("r1", "-7")),
        (
            "request_id",
            Some("18446744073709551615"),
            ok("r1", "18446744073709551615"),
        ),
        (
            "request_id",
            Some("123456789012345678901234567890"),
            ok("r1", "123456789012345678901234567890"),
        ),
        ("request_id", Some("\"r\\u0031\""), BASE.into()),
        // org_id: the same types.
        ("org_id", Some("null"), "missing_field".into()),
        ("org_id", Some("false"), "malformed".into()),
        ("org_id", Some("[]"), "malformed".into()),
        ("org_id", Some("{}"), "malformed".into()),
        ("org_id", Some("100.0"), "malformed".into()),
        ("org_id", Some("100"), BASE.into()),
        // method and path: strings only.
        ("method", Some("null"), "missing_field".into()),
        ("method", Some("1"), "malformed".into()),
        ("method", Some("true"), "malformed".into()),
        ("method", Some("[\"GET\"]"), "malformed".into()),
        ("method", Some("\"HEAD\""), "bad_method".into()),
        ("method", Some("\" delete \""), ok("GET", "DELETE")),
        ("path", None, "missing_field".into()),
        ("path", Some("7"), "malformed".into()),
        ("path", Some("1.5"), "malformed".into()),
        ("path", Some("{\"p\":\"/x\"}"), "malformed".into()),
        // status: integer or a string of digits.
        ("status", None, "missing_field".into()),
        ("status", Some("null"), "missing_field".into()),
        ("status", Some("true"), "malformed".into()),
        ("status", Some("200.0"), "malformed".into()),
        ("status", Some("2e2"), "malformed".into()),
        ("status", Some("1e400"), "malformed".into()),
        ("status", Some("[200]"), "malformed".into()),
        ("status", Some("{}"), "malformed".into()),
        ("status", Some("99"), "bad_status".into()),
        ("status", Some("600"), "bad_status".into()),
        ("status", Some("-200"), "bad_status".into()),
        ("status", Some("18446744073709551615"), "bad_status".into()),
        ("status", Some("\"2xx\""), "bad_status".into()),
        ("status", Some("\"0200\""), "bad_status".into()),
        ("status", Some("\"204\""), ok(" 200 ", " 204 ")),
        ("status", Some("599"), ok(" 200 ", " 599 ")),
        ("status", Some("100"), ok(" 200 ", " 100 ")),
        // Optional fields: absent, wrong type or out of range is absent, never a reason.
        ("latency_ms", None, ok("Some(35)", "None")),
        ("latency_ms", Some("null"), ok("Some(35)", "None")),
        ("latency_ms", Some("true"), ok("Some(35)", "None")),
        ("latency_ms", Some("\"35\""), ok("Some(35)", "None")),
        ("latency_ms", Some("35.0"), ok("Some(35)", "None")),
        ("latency_ms", Some("1e400"), ok("Some(35)", "None")),
        ("latency_ms", Some("[35]"), ok("Some(35)", "None")),
        ("latency_ms", Some("{}"), ok("Some(35)", "None")),
        ("latency_ms", Some("-1"), ok("Some(35)", "None")),
        ("latency_ms", Some("86400001"), ok("Some(35)", "None")),
        (
            "latency_ms",
            Some("18446744073709551615"),
            ok("Some(35)", "None"),
        ),
        ("latency_ms", Some("0"), ok("Some(35)", "Some(0)")),
        (
            "latency_ms",
            Some("86400000"),
            ok("Some(35)", "Some(86400000)"),
        ),
        ("charged_credits", Some("1000001"), ok("Some(3)", "None")),
        ("charged_credits", Some("-3"), ok("Some(3)", "None")),
        ("charged_credits", Some("3.5"), ok("Some(3)", "None")),
        ("charged_credits", Some("\"lots\""), ok("Some(3)", "None")),
        ("charged_credits", Some("false"), ok("Some(3)", "None")),
        (
            "charged_credits",
            Some("1000000"),
            ok("Some(3)", "Some(1000000)"),
        ),
        ("dc", None, ok("Some(\"us\")", "None")),
        ("dc", Some("7"), ok("Some(\"us\")", "None")),
        ("dc", Some("1e400"), ok("Some(\"us\")", "None")),
        ("dc", Some("[\"us\"]"), ok("Some(\"us\")", "None")),
        ("dc", Some("\"\""), ok("Some(\"us\")", "None")),
        ("dc", Some("\" eu \""), ok("\"us\"", "\"eu\"")),
    ];
    for (field, value, want) in cases {
        json(&line_with(field, value), &want);
    }
}

#[test]
fn the_line_that_panicked_the_local_day_is_a_bad_timestamp() {
    json(
        r#"{"ts":8210266876799999,"request_id":"x","org_id":"<org>","method":"GET","path":"/a","status":200}"#,
        "bad_timestamp",
    );
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
    // Extra keys may hold anything, huge numbers included.
    json(
        r#"{"extra":1e400,"big":123456789012345678901234567890,"ts":1759881599123,"request_id":"r","org_id":"1","method":"GET","path":"/x","status":200}"#,
        "1759881599123 r 1 GET /x 200 None None None",
    );
}

#[test]
fn json_reasons_in_order() {
    json("not json", "malformed");
    json("[1,2]", "malformed");
    json("", "malformed");
    json(r#"{"ts":1,"#, "malformed");
    json(r#"{"ts":1759881599123} {}"#, "malformed");
    // A known field twice: which one counts would be a guess.
    json(
        r#"{"ts":1759881599123,"request_id":"r","request_id":"s","org_id":"1","method":"GET","path":"/x","status":200}"#,
        "malformed",
    );
    // A field of the wrong type comes before a missing one.
    json(
        r#"{"request_id":true,"org_id":"1","method":"GET","path":"/x","status":200}"#,
        "malformed",
    );
    json(
        r#"{"request_id":"r","org_id":"1","method":"GET","path":"/x","status":200}"#,
        "missing_field",
    );
    // A missing field comes before a timestamp of the wrong type.
    json(
        r#"{"ts":true,"org_id":"1","method":"GET","path":"/x","status":200}"#,
        "missing_field",
    );
    // A bad timestamp comes before a bad method, and that before a bad status.
    json(
        r#"{"ts":"soon","request_id":"r","org_id":"1","method":"FETCH","path":"/x","status":600}"#,
        "bad_timestamp",
    );
    json(
        r#"{"ts":1759881599123,"request_id":"r","org_id":"1","method":"FETCH","path":"/x","status":600}"#,
        "bad_method",
    );
}

#[test]
fn csv_lines_any_column_order_extra_columns_ignored() {
    let layout = CsvLayout::from_header("status,path,method,org_id,request_id,ts,region").unwrap();
    assert_eq!(
        show(layout.decode("200,\"/a,b?x=\"\"1\"\"\",POST,7,r9,1759881599123,eu")),
        "1759881599123 r9 7 POST /a,b?x=\"1\" 200 None None None"
    );
    assert_eq!(
        show(layout.decode("200,/a,POST,7,r9,1759881599123")),
        "malformed"
    );
    assert_eq!(
        show(layout.decode("200,/a,POST,7,,1759881599123,eu")),
        "missing_field"
    );
    assert_eq!(
        show(layout.decode("abc,/a,POST,7,r,1759881599123,eu")),
        "bad_status"
    );
}

#[test]
fn csv_timestamps_and_optional_fields_follow_the_same_rules() {
    let layout = CsvLayout::from_header(
        "ts,request_id,org_id,method,path,status,latency_ms,charged_credits,dc",
    )
    .unwrap();
    let row = |ts: &str, latency: &str, charged: &str, dc: &str| {
        show(layout.decode(&format!("{ts},r,7,GET,/a,200,{latency},{charged},{dc}")))
    };
    for ts in [
        "8210266876799999",
        "-1",
        "0",
        "946684799999",
        "4102444800000",
        "18446744073709551615",
        "1.7599176e12",
        "1759917600000.0",
        "2100-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ] {
        assert_eq!(row(ts, "", "", ""), "bad_timestamp", "{ts}");
    }
    assert_eq!(
        row("2099-12-31T23:59:59.999Z", "", "", ""),
        "4102444799999 r 7 GET /a 200 None None None"
    );
    assert_eq!(
        row("946684800000", "86400000", "1000000", " us "),
        "946684800000 r 7 GET /a 200 Some(86400000) Some(1000000) Some(\"us\")"
    );
    for (latency, charged) in [
        ("86400001", "1000001"),
        ("-1", "-1"),
        ("1.5", "2e3"),
        ("x", "18446744073709551615"),
    ] {
        assert_eq!(
            row("946684800000", latency, charged, ""),
            "946684800000 r 7 GET /a 200 None None None",
            "{latency} {charged}"
        );
    }
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
    use serde_json::Value as J;

    /// Any JSON value, nested ones included.
    fn any_json() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            any::<i64>().prop_map(|i| serde_json::json!(i)),
            any::<u64>().prop_map(|u| serde_json::json!(u)),
            (946_684_800_000i64..4_102_444_800_000).prop_map(|i| serde_json::json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::json!(f)),
            "\\PC{0,12}".prop_map(J::String),
            prop_oneof![
                "GET",
                " post ",
                "HEAD",
                "200",
                "0200",
                "2xx",
                "",
                " ",
                "2025-10-08T10:00:00Z",
                "2100-01-01T00:00:00Z",
                "1759917600000",
            ]
            .prop_map(J::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(J::Array),
                proptest::collection::btree_map("[a-z]{0,3}", inner, 0..3)
                    .prop_map(|m| J::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A field's value: usually a valid one, else any JSON value, or the key left out.
    fn field(valid: J) -> impl Strategy<Value = Option<J>> {
        prop_oneof![
            3 => Just(Some(valid)),
            4 => any_json().prop_map(Some),
            1 => Just(None),
        ]
    }

    fn is_int(v: &J) -> bool {
        v.as_i64().is_some() || v.as_u64().is_some()
    }

    /// The outcome DESIGN §2.1 gives a line, worked out from the JSON values directly.
    fn expected(f: &[Option<J>; 9]) -> Result<(), Reason> {
        let [ts, rid, org, method, path, status, ..] = f;
        let null = |v: &Option<J>| matches!(v, None | Some(J::Null));
        let id_ok = |v: &Option<J>| {
            null(v) || matches!(v, Some(J::String(_))) || v.as_ref().is_some_and(is_int)
        };
        let str_ok = |v: &Option<J>| null(v) || matches!(v, Some(J::String(_)));
        let status_ok = id_ok;
        if !(id_ok(rid) && id_ok(org) && str_ok(method) && str_ok(path) && status_ok(status)) {
            return Err(Reason::Malformed);
        }
        let blank =
            |v: &Option<J>| null(v) || matches!(v, Some(J::String(s)) if s.trim().is_empty());
        if [ts, rid, org, method, path, status].into_iter().any(blank) {
            return Err(Reason::MissingField);
        }
        let ts_ok = match ts {
            Some(J::String(s)) => parse_ts(s).is_some(),
            Some(v) if is_int(v) => v
                .as_i64()
                .is_some_and(|i| (MIN_TS_MS..END_TS_MS).contains(&i)),
            _ => false,
        };
        if !ts_ok {
            return Err(Reason::BadTimestamp);
        }
        let Some(J::String(m)) = method else {
            unreachable!()
        };
        if !["GET", "POST", "PUT", "PATCH", "DELETE"]
            .contains(&m.trim().to_ascii_uppercase().as_str())
        {
            return Err(Reason::BadMethod);
        }
        let code = match status {
            Some(J::String(s)) => {
                let s = s.trim();
                if s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()) {
                    s.parse::<u64>().ok()
                } else {
                    None
                }
            }
            Some(v) => v.as_u64(),
            None => None,
        };
        if !code.is_some_and(|c| (100..=599).contains(&c)) {
            return Err(Reason::BadStatus);
        }
        Ok(())
    }

    fn line(f: &[Option<J>; 9]) -> String {
        let map: serde_json::Map<String, J> = FIELDS
            .iter()
            .zip(f)
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect();
        serde_json::to_string(&J::Object(map)).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any JSON value in any field: no panic, and the outcome is the one the rules
        /// give; a request id that is not a string or an integer is never accepted, and
        /// optional fields never change the outcome.
        #[test]
        fn any_json_value_in_any_field_gets_the_outcome_of_the_rules(
            ts in field(J::String("2025-10-08T10:00:00Z".into())),
            rid in field(J::String("r1".into())),
            org in field(serde_json::json!(100)),
            method in field(J::String("GET".into())),
            path in field(J::String("/x".into())),
            status in field(serde_json::json!(200)),
            latency in field(serde_json::json!(35)),
            charged in field(serde_json::json!(3)),
            dc in field(J::String("us".into())),
        ) {
            let f = [ts, rid, org, method, path, status, latency, charged, dc];
            let text = line(&f);
            let got = decode_json(&text);
            prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|r| *r), expected(&f), "{}", text);
            if let Ok(call) = &got {
                let id = |v: &Option<J>| match v {
                    Some(J::String(s)) => s.trim().to_string(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                prop_assert_eq!(call.request_id.as_ref(), id(&f[1]));
                prop_assert_eq!(call.org_id.as_ref(), id(&f[2]));
                prop_assert!(call.latency_ms.is_none_or(|l| (0..=MAX_LATENCY_MS).contains(&l)));
                prop_assert!(call.charged_credits.is_none_or(|c| (0..=MAX_CHARGED_CREDITS).contains(&c)));
            }
            // Without the optional fields the outcome is the same.
            let mut bare = f.clone();
            bare[6] = None;
            bare[7] = None;
            bare[8] = None;
            let bare_got = decode_json(&line(&bare)).map(|c| (c.ts_ms, c.request_id.into_owned(), c.status));
            prop_assert_eq!(got.map(|c| (c.ts_ms, c.request_id.into_owned(), c.status)), bare_got);
        }

        /// Arbitrary text never panics the JSON decoder: it is a call or a reason.
        #[test]
        fn any_text_decodes_or_has_a_reason(line in "\\PC{0,200}") {
            match decode_json(&line) {
                Ok(call) => prop_assert!(!call.request_id.is_empty() && !call.org_id.is_empty()),
                Err(r) => prop_assert!(Reason::ALL.contains(&r)),
            }
        }

        /// Any timestamp text, in JSON and in CSV: accepted only inside 2000–2100.
        #[test]
        fn timestamps_are_accepted_only_inside_the_range(
            ts in prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                (0i64..5_000_000_000_000).prop_map(|i| i.to_string()),
                "[0-9]{1,5}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
                "\\PC{0,30}",
            ],
        ) {
            if let Some(ms) = parse_ts(&ts) {
                prop_assert!((MIN_TS_MS..END_TS_MS).contains(&ms), "{} → {}", ts, ms);
            }
            let layout = CsvLayout::from_header("ts,request_id,org_id,method,path,status").unwrap();
            let csv = format!("\"{}\",r,1,GET,/x,200", ts.replace('"', "\"\""));
            if let Ok(call) = layout.decode(&csv) {
                prop_assert_eq!(Some(call.ts_ms), parse_ts(&ts));
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
