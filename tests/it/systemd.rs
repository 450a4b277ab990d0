//! The systemd units pass `systemd-analyze verify`.

use std::process::Command;

#[test]
fn units_verify() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        // Verify against the binary just built, where the unit expects the installed one.
        let text = text.replace("/usr/local/bin/creditd", env!("CARGO_BIN_EXE_creditd"));
        let dest = tmp.path().join(p.file_name().unwrap());
        std::fs::write(&dest, text).unwrap();
        units.push(dest);
    }
    assert!(units.len() >= 3, "{units:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze is installed (.ci/run installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings:\n{stderr}");
}

#[test]
fn services_score_ok_or_better_in_systemd_analyze_security() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut checked = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "service") {
            continue;
        }
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&p)
            .output()
            .expect("systemd-analyze is installed (.ci/run installs systemd)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let verdict = stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{}: no verdict in\n{stdout}", p.display()));
        // "→ Overall exposure level for creditd.service: 1.4 OK 🙂"
        let words: Vec<&str> = verdict
            .rsplit(':')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let score: f64 = words[0].parse().unwrap();
        assert!(
            matches!(words[1], "OK" | "SAFE") && score < 2.5,
            "{}: {verdict}",
            p.display()
        );
        checked += 1;
    }
    assert!(checked >= 2);
}
