//! `creditd check`: every problem named with file, line and field; exit status 2.

use crate::{csv_rows, Dir};

#[test]
fn sample_setup_checks_clean() {
    let dir = Dir::sample();
    let out = dir.expect(0, &["check"]);
    assert!(out.starts_with("check: ok — 24 orgs"), "{out}");
}

#[test]
fn broken_inputs_are_listed_with_file_line_and_field() {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         100,\"Acme, \"\"East\"\"\nDivision\",gold,3,0,Europe/Berlin,eu,2025-01-01,true,,a@acme.example,\n\
         101,Beta,free,0,0,Mars/Olympus,us,2025-01-01,false,,b@beta.example,\n\
         102,Gamma,free,0,0,UTC,jp,2025-01-01,false,,c@gamma.example,\n",
    );
    dir.write(
        "credit-purchases.csv",
        "purchase_id,org_id,credits_per_day,valid_from,valid_to\nP1,999,100,2025-10-01,2025-10-31\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/**/x\"\ncredits = 1\n",
    );
    let out = dir.creditd(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = |f: &str| dir.path().join(f).display().to_string();
    for want in [
        format!("{}:2: field edition: expected one of free, express", p("orgs.csv")),
        format!("{}:4: field timezone: expected an IANA time zone like Europe/Berlin, found \"Mars/Olympus\"", p("orgs.csv")),
        format!("{}:5: field data_center: \"jp\" has no [migration] dc_cutover date", p("orgs.csv")),
        format!("{}:2: field org_id: \"999\" is not in the org registry", p("credit-purchases.csv")),
        format!("{}:3: field rule[1].path: '**' may only be the last segment", p("pricing.toml")),
        "check: 5 problem(s)".to_string(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
    }
}

#[test]
fn unknown_config_keys_are_usage_errors() {
    let dir = Dir::empty();
    dir.write(
        "creditd.toml",
        "[paths]\ninbox = \"inbox\"\n\n[daemon]\nclose_grace = \"2h\"\nclose_grase = \"3h\"\n",
    );
    let out = dir.creditd(&["run", "ingest"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("creditd.toml: TOML parse error at line 6, column 1"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `close_grase`"), "{stderr}");
}

/// One broken input: which file gets what, and the exact line a user then reads.
struct Case {
    file: &'static str,
    /// Appended to the file's valid contents, or replacing them when `replace`.
    text: &'static str,
    replace: bool,
    /// `{}` stands for the file's full path.
    message: &'static str,
}

const fn add(file: &'static str, text: &'static str, message: &'static str) -> Case {
    Case {
        file,
        text,
        replace: false,
        message,
    }
}

const fn put(file: &'static str, text: &'static str, message: &'static str) -> Case {
    Case {
        file,
        text,
        replace: true,
        message,
    }
}

const ORGS_HEADER: &str = "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n";

#[test]
fn broken_inputs_each_get_their_exact_message() {
    let cases = [
        // creditd.toml: lines 1–6 are [paths]; an added table starts on line 8.
        add("creditd.toml", "\n[daemon]\nclose_grace = \"two hours\"\n", "{}:9: [daemon] close_grace: expected a duration like \"2h\" or \"90m\", found \"two hours\": expected number at 0"),
        add("creditd.toml", "\n[alerts]\nnear_limit_percent = [80, 120]\n", "{}:9: [alerts] near_limit_percent: expected percentages from 1 to 99, found 120"),
        add("creditd.toml", "\n[alerts]\ndaily_summary = \"sometimes\"\n", "{}:9: [alerts] daily_summary: expected \"all\", \"alerted\" or \"none\", found \"sometimes\""),
        add("creditd.toml", "\n[alerts]\nmax_age = \"forever\"\n", "{}:9: [alerts] max_age: expected a duration like \"2h\" or \"90m\", found \"forever\": expected number at 0"),
        add("creditd.toml", "\n[alerts]\nfrom = \"not an address\"\n", "{}:9: [alerts] from: expected a mail address like \"creditd <creditd@example.com>\", found \"not an address\""),
        add("creditd.toml", "\n[smtp]\nurl = \"smtp://127.0.0.1\"\ntls = \"maybe\"\n", "{}:10: [smtp] tls: expected \"required\" or \"none\", found \"maybe\""),
        add("creditd.toml", "\n[smtp]\nurl = \"ftp://mail.example.com\"\n", "{}:9: [smtp] url: expected smtp:// or smtps://, found ftp://"),
        add("creditd.toml", "\n[smtp]\nurl = \"smtp://mail.example.com\"\ntls = \"none\"\n", "{}:10: [smtp] tls = \"none\" is only allowed to a loopback host, not \"mail.example.com\""),
        add("creditd.toml", "\n[editions.free]\nbase = 0\n", "{}:9: [editions.free] base: expected a positive number of credits, found 0"),
        add("creditd.toml", "\n[editions.gold]\nbase = 5\n", "{}:8: [editions.gold]: unknown edition; expected one of free, express, standard, professional, enterprise, zoho_one, crm_plus, service_plus"),
        add("creditd.toml", "\n[migration]\ndc_cutover = { us = \"2025-13-06\" }\n", "{}:9: [migration] dc_cutover.us: expected a date like 2025-10-06, found \"2025-13-06\": input is out of range"),
        add("creditd.toml", "\n[billing]\nexempt_status = [\"6xx\"]\n", "{}:9: [billing] exempt_status: expected a status like \"429\" or a class like \"5xx\", found \"6xx\""),
        // Bounds of DESIGN §7: one above each is refused (the bounds themselves pass in
        // `a_setup_at_every_bound_checks_ingests_and_exports`).
        add("creditd.toml", "\n[editions.professional]\nbase = 1000000000001\n", "{}:9: [editions.professional] base: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[editions.express]\nper_agent = 1000000000001\n", "{}:9: [editions.express] per_agent: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[editions.standard]\nconcurrency = 1000000000001\n", "{}:9: [editions.standard] concurrency: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[editions.free]\nlegacy_base = 1000000000001\n", "{}:9: [editions.free] legacy_base: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[editions.enterprise]\nlegacy_per_agent = 1000000000001\n", "{}:9: [editions.enterprise] legacy_per_agent: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[editions.zoho_one]\nadditional_max_per_day = 1000000000001\n", "{}:9: [editions.zoho_one] additional_max_per_day: expected at most 1000000000000, found 1000000000001"),
        add("creditd.toml", "\n[daemon]\nclose_grace = \"1000000y\"\n", "{}:9: [daemon] close_grace: expected at most \"7d\", found \"1000000y\""),
        add("creditd.toml", "\n[daemon]\nclose_grace = \"7d 1s\"\n", "{}:9: [daemon] close_grace: expected at most \"7d\", found \"7d 1s\""),
        add("creditd.toml", "\n[alerts]\nmax_age = \"3650d 1s\"\n", "{}:9: [alerts] max_age: expected at most \"3650d\", found \"3650d 1s\""),
        // [retention]: whole days within bounds, and events that outlive the close.
        add("creditd.toml", "\n[retention]\narchive = \"0d\"\n", "{}:9: [retention] archive: expected whole days like \"400d\" (1d to 36500d), found \"0d\""),
        add("creditd.toml", "\n[retention]\nquarantine = \"400\"\n", "{}:9: [retention] quarantine: expected whole days like \"400d\" (1d to 36500d), found \"400\""),
        add("creditd.toml", "\n[retention]\noutbox = \"36501d\"\n", "{}:9: [retention] outbox: expected whole days like \"400d\" (1d to 36500d), found \"36501d\""),
        add("creditd.toml", "\n[retention]\nevents = \"2w\"\n", "{}:9: [retention] events: expected whole days like \"400d\" (1d to 36500d), found \"2w\""),
        add("creditd.toml", "\n[daemon]\nclose_grace = \"26h\"\n\n[retention]\nevents = \"2d\"\n", "{}:12: [retention] events: expected at least \"3d\" (close_grace + one day), found \"2d\""),
        // Addresses are read as sending reads them; ops_to is where ops messages go.
        add("creditd.toml", "\n[alerts]\nops_to = []\n", "{}:9: [alerts] ops_to: expected at least one address; ops messages, and org messages without report_to, go there"),
        add("creditd.toml", "\n[alerts]\nops_to = [\"api-ops@example.com\", \"nobody\"]\n", "{}:9: [alerts] ops_to: expected mail addresses like \"api-ops@example.com\", found \"nobody\" (Missing domain or user)"),
        add("creditd.toml", "\n[alerts]\nops_to = [\"billing..team@acme.example\"]\n", "{}:9: [alerts] ops_to: expected mail addresses like \"api-ops@example.com\", found \"billing..team@acme.example\" (Invalid email user)"),
        add("creditd.toml", "\n[alerts]\nfrom = \"creditd <billing..team@acme.example>\"\n", "{}:9: [alerts] from: expected a mail address like \"creditd <creditd@example.com>\", found \"creditd <billing..team@acme.example>\""),
        // orgs.csv: line 2 is a valid org; the added row is line 3.
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-13-01,false,,b@b.example,\n", "{}:3: field signup_date: expected a date like 2025-10-06, found \"2025-13-01\""),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,maybe,,b@b.example,\n", "{}:3: field paid: expected true or false, found \"maybe\""),
        add("orgs.csv", "101,Beta,free,-1,0,UTC,eu,2025-01-01,false,,b@b.example,\n", "{}:3: field agents: expected a whole number ≥ 0, found \"-1\""),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,false,,not-an-email,\n", "{}:3: field report_to: expected ';'-separated mail addresses, found \"not-an-email\" (Missing domain or user)"),
        add("orgs.csv", "100,Acme,standard,9,0,Asia/Tokyo,eu,2025-01-01,true,,a@acme.example,2025-11-01\n", "{}:3: field timezone: org 100 has timezone Europe/Berlin on line 2 but Asia/Tokyo here; it must be the same on every row"),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,false,,billing..team@acme.example,\n", "{}:3: field report_to: expected ';'-separated mail addresses, found \"billing..team@acme.example\" (Invalid email user)"),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,false,,b@b.example;nobody,\n", "{}:3: field report_to: expected ';'-separated mail addresses, found \"nobody\" (Missing domain or user)"),
        add("orgs.csv", "101,Beta,free,1000001,0,UTC,eu,2025-01-01,false,,b@b.example,\n", "{}:3: field agents: expected a whole number up to 1000000, found \"1000001\""),
        add("orgs.csv", "101,Beta,free,18446744073709551615,0,UTC,eu,2025-01-01,false,,b@b.example,\n", "{}:3: field agents: expected a whole number up to 1000000, found \"18446744073709551615\""),
        add("orgs.csv", "101,Beta,free,0,1000001,UTC,eu,2025-01-01,false,,b@b.example,\n", "{}:3: field light_agents: expected a whole number up to 1000000, found \"1000001\""),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,false,1000000000001,b@b.example,\n", "{}:3: field legacy_daily_limit: expected a whole number up to 1000000000000, found \"1000000000001\""),
        add("orgs.csv", "101,Beta,free,0,0,UTC,eu,2025-01-01,false,-5,b@b.example,\n", "{}:3: field legacy_daily_limit: expected a whole number ≥ 0, found \"-5\""),
        put("orgs.csv", "org_id,name,edition\n100,Acme,free\n", "{}:1: field agents: missing column; the header must name org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from"),
        // credit-purchases.csv
        put("credit-purchases.csv", "purchase_id,org_id,credits_per_day,valid_from,valid_to\nP1,100,lots,2025-10-01,2025-10-31\n", "{}:2: field credits_per_day: expected a whole number ≥ 0, found \"lots\""),
        put("credit-purchases.csv", "purchase_id,org_id,credits_per_day,valid_from,valid_to\nP1,100,10,2025-10-31,2025-10-01\n", "{}:2: field valid_to: 2025-10-01 is before valid_from 2025-10-31"),
        put("credit-purchases.csv", "purchase_id,org_id,credits_per_day,valid_from,valid_to\nP1,100,1000000000001,2025-10-01,2025-10-31\n", "{}:2: field credits_per_day: expected a whole number up to 1000000000000, found \"1000000000001\""),
        // pricing.toml: line 1 is effective_from.
        add("pricing.toml", "unpriced_credits = 1000000001\n", "{}:2: field unpriced_credits: expected at most 1000000000, found 1000000001"),
        add("pricing.toml", "[[rule]]\nmethod = \"GET\"\npath = \"/x\"\ncredits = 1000000001\n", "{}:2: field rule[1].credits: expected at most 1000000000, found 1000000001"),
        add("pricing.toml", "[[rule]]\nmethod = \"GET\"\npath = \"/x\"\ncredits = 1\noffset_param = \"from\"\ntiers = [ { upto = 1000000000001, credits = 1 }, { credits = 1000000001 } ]\n", "{}:2: field rule[1].tiers[1].upto: expected at most 1000000000000, found 1000000000001"),
        add("pricing.toml", "[[rule]]\nmethod = \"GET\"\npath = \"/x\"\ncredits = 1\noffset_param = \"from\"\ntiers = [ { upto = 10, credits = 1 }, { credits = 1000000001 } ]\n", "{}:2: field rule[1].tiers[2].credits: expected at most 1000000000, found 1000000001"),
        add("pricing.toml", "[[rule]]\nmethod = \"GET\"\npath = \"/x\"\ncredits = 1\noffset_param = \"from\"\ntiers = [ { upto = 100, credits = 1 }, { upto = 50, credits = 2 } ]\n", "{}:2: field rule[1].tiers[2].upto: expected tiers in increasing order of upto, found 50 after 100"),
        add("pricing.toml", "[[rule]]\nmethod = \"FETCH\"\npath = \"/x\"\ncredits = 1\n", "{}:2: field rule[1].method: expected GET, POST, PUT, PATCH, DELETE or *, found \"FETCH\""),
        add("pricing.toml", "[[rule]]\nmethod = \"GET\"\npath = \"/api/**/x\"\ncredits = 1\n", "{}:2: field rule[1].path: '**' may only be the last segment, found \"/api/**/x\""),
        // jobs/a.toml
        put("jobs/a.toml", "schedule = \"0 */5 * * *\"\ntask = \"ingest\"\n", "{}: field schedule: expected six fields (seconds first), like \"0 */5 * * * *\", found \"0 */5 * * *\""),
        put("jobs/a.toml", "schedule = \"0 */5 * * * *\"\ntask = \"sleep\"\n", "{}: field task: expected one of ingest, close-days, deliver, ops-digest, retention, all, found \"sleep\""),
        put("jobs/a.toml", "schedule = \"0 */5 * * * *\"\ntask = \"ingest\"\ntimezone = \"Mars/Base\"\n", "{}: field timezone: expected an IANA time zone like Europe/Berlin, found \"Mars/Base\""),
    ];
    assert!(cases.len() >= 50);
    for case in &cases {
        let dir = Dir::empty();
        dir.write(
            "orgs.csv",
            format!("{ORGS_HEADER}100,Acme,standard,5,0,Europe/Berlin,eu,2025-01-01,true,,a@acme.example,\n"),
        );
        dir.write("pricing.toml", "effective_from = \"2025-10-01\"\n");
        let text = if case.replace {
            case.text.to_string()
        } else {
            std::fs::read_to_string(dir.path().join(case.file)).unwrap_or_default() + case.text
        };
        dir.write(case.file, text);
        let out = dir.creditd(&["check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", case.message);
        let want = case
            .message
            .replace("{}", &dir.path().join(case.file).display().to_string());
        assert!(
            stderr
                .lines()
                .any(|l| l == want || l.strip_prefix("creditd: ") == Some(want.as_str())),
            "expected the line\n  {want}\nin\n{stderr}"
        );
    }
}

#[test]
fn negative_and_non_numbers_in_the_config_are_refused_at_their_line() {
    for (text, line, want) in [
        ("base = -1", 9, "invalid value: integer `-1`, expected u64"),
        (
            "per_agent = \"many\"",
            9,
            "invalid type: string \"many\", expected u64",
        ),
        ("base = 18446744073709551615", 9, "number too large"),
    ] {
        let stderr = refused_config(&format!("\n[editions.express]\n{text}\n"));
        assert!(
            stderr.contains(&format!(
                "creditd.toml: TOML parse error at line {line}, column"
            )),
            "{text}: {stderr}"
        );
        assert!(stderr.contains(want), "{text}: {stderr}");
    }
}

#[test]
fn ingest_threads_out_of_range_are_refused_with_the_key() {
    for bad in ["0", "-2", "257"] {
        let stderr = refused_config(&format!("\n[ingest]\nthreads = {bad}\n"));
        let want =
            format!("[ingest] threads: expected a number of threads from 1 to 256, found {bad}");
        assert!(stderr.contains(&want), "{stderr}");
    }
}

/// `check` on an empty setup whose config has `extra` appended: refused (exit 2); its stderr.
fn refused_config(extra: &str) -> String {
    let dir = Dir::empty();
    let config = dir.read("creditd.toml") + extra;
    dir.write("creditd.toml", config);
    let out = dir.creditd(&["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// Regression: `agents = 18446744073709551615` wrapped the allotment, `close_grace =
/// "1000000y"` made `close-days` and `ledger export` panic. Every figure at its bound is
/// accepted, and ingest, close-days, delivery and export compute it exactly.
#[test]
fn a_setup_at_every_bound_checks_ingests_and_exports() {
    let dir = Dir::empty();
    let config = dir.read("creditd.toml")
        + "\n[editions.enterprise]\nbase = 1000000000000\nadditional_max_per_day = 1000000000000\nconcurrency = 1000000000000\n\
           \n[editions.professional]\nbase = 1000000000000\nper_agent = 1000000000000\nlegacy_base = 1000000000000\nlegacy_per_agent = 1000000000000\nadditional_max_per_day = 1000000000000\n\
           \n[daemon]\nclose_grace = \"7d\"\n\n[alerts]\nmax_age = \"3650d\"\n";
    dir.write("creditd.toml", config);
    dir.write(
        "orgs.csv",
        format!(
            "{ORGS_HEADER}\
             100,Max,enterprise,1000000,1000000,UTC,us,2025-11-15,true,1000000000000,a@acme.example;b@acme.example,\n\
             200,Legacy,professional,1000000,0,UTC,us,2025-01-01,true,,c@acme.example,\n"
        ),
    );
    dir.write(
        "credit-purchases.csv",
        "purchase_id,org_id,credits_per_day,valid_from,valid_to\n\
         P1,100,1000000000000,2025-12-01,2025-12-01\n\
         P2,100,1000000000000,2025-12-01,2025-12-02\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\nunpriced_credits = 1000000000\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/{module}\"\ncredits = 1000000000\noffset_param = \"from\"\ntiers = [ { upto = 1000000000000, credits = 1000000000 }, { credits = 1000000000 } ]\n",
    );
    let call = |ts: &str, id: &str, org: &str, path: &str| {
        format!("{{\"ts\":\"{ts}\",\"request_id\":\"{id}\",\"org_id\":\"{org}\",\"method\":\"GET\",\"path\":\"{path}\",\"status\":200,\"latency_ms\":1,\"charged_credits\":1,\"dc\":\"us\",\"ua\":\"t\"}}\n")
    };
    dir.write(
        "inbox/a.ndjson",
        [
            call(
                "2025-12-01T10:00:00Z",
                "a",
                "100",
                "/api/v1/tickets?from=18446744073709551616",
            ),
            call("2025-12-01T11:00:00Z", "b", "100", "/api/v2/unpriced"),
            call("2025-10-03T11:00:00Z", "c", "200", "/api/v1/tickets"),
        ]
        .concat(),
    );
    let out = dir.expect(0, &["check"]);
    assert!(out.starts_with("check: ok — 2 orgs"), "{out}");
    dir.expect(0, &["--now", "2026-01-01T00:00:00Z", "run", "all"]);
    let rows = csv_rows(&dir.export());
    assert_eq!(
        rows[0][..17].join(","),
        "org_id,local_date,model,edition,agents,calls,billable_calls,credits,base,variable,additional,legacy_limit,allotted,used,pct_used,overage,exceeded_at"
    );
    let got: Vec<String> = rows[1..].iter().map(|r| r[..17].join(",")).collect();
    assert_eq!(
        got,
        vec![
            // Credits: 10^12 base + 1000 × 10^6 agents + 10^12 of the 2 × 10^12 bought.
            "100,2025-12-01,credits,enterprise,1000000,2,2,2000000000,1000000000000,1000000000,1000000000000,1000000000000,2001000000000,2000000000,0.10,0,",
            // Legacy: 10^12 + 10^12 × 10^6 calls, one used.
            "200,2025-10-03,legacy,professional,1000000,1,1,1000000000,1000000000000,1000000000000000000,0,1000001000000000000,1000001000000000000,1,0.00,0,",
        ]
    );
    // Neither org came near its allotment: no alert, and so no summary (policy "alerted").
    let keys = crate::mail::eml_keys(&dir);
    assert!(
        keys.iter()
            .all(|k| !k.contains(":100:") && !k.contains(":200:")),
        "{keys:?}"
    );
}
