//! `creditd check`: every problem named with file, line and field; exit status 2.

use crate::Dir;

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
