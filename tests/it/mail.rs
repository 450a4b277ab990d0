//! Email: the outbox, `.eml` files, and delivery to a real SMTP server on loopback.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{csv_rows, Dir};

/// A real SMTP server (aiosmtpd, from Debian's python3-aiosmtpd) on a loopback port; it
/// records what it accepts as files and is stopped when dropped.
pub struct SmtpServer {
    child: Child,
    out: PathBuf,
}

impl SmtpServer {
    /// Starts the server on `port`, refusing the first `refuse` messages with a 451.
    pub fn start(port: u16, out: &Path, refuse: usize) -> SmtpServer {
        SmtpServer::start_slow(port, out, refuse, 0)
    }

    /// Like [`SmtpServer::start`], answering each message `delay_ms` after its data.
    pub fn start_slow(port: u16, out: &Path, refuse: usize, delay_ms: u64) -> SmtpServer {
        SmtpServer::spawn(port, out, refuse, delay_ms, None)
    }

    /// Like [`SmtpServer::start`], refusing for good (550) every recipient containing
    /// `reject`.
    pub fn start_rejecting(port: u16, out: &Path, reject: &str) -> SmtpServer {
        SmtpServer::spawn(port, out, 0, 0, Some(reject))
    }

    fn spawn(
        port: u16,
        out: &Path,
        refuse: usize,
        delay_ms: u64,
        reject: Option<&str>,
    ) -> SmtpServer {
        std::fs::create_dir_all(out).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut child = Command::new("/usr/bin/python3");
        if let Some(reject) = reject {
            child.env("REJECT_RCPT", reject);
        }
        let mut child = child
            .arg(script)
            .arg(port.to_string())
            .arg(out)
            .arg(refuse.to_string())
            .arg(delay_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (Debian: python3-aiosmtpd; .ci/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpServer {
            child,
            out: out.to_path_buf(),
        }
    }

    /// Every accepted message: (envelope recipients, raw message), in arrival order.
    pub fn received(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.out.join(format!("{n}.eml"));
            if !eml.exists() {
                break;
            }
            let rcpt = std::fs::read_to_string(self.out.join(format!("{n}.rcpt"))).unwrap();
            out.push((
                rcpt.lines().map(String::from).collect(),
                std::fs::read(eml).unwrap(),
            ));
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on loopback that nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn header(raw: &[u8], name: &str) -> String {
    let (headers, _) = mailparse::parse_headers(raw).unwrap();
    headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case(name))
        .map(|h| h.get_value())
        .unwrap_or_default()
}

/// The thread root of an org-day message's key (DESIGN §5), on the sample's From domain.
fn thread_of(key: &str) -> String {
    let mut fields = key.split(':').skip(1);
    format!(
        "<orgday.{}.{}@example.com>",
        fields.next().unwrap(),
        fields.next().unwrap()
    )
}

/// The content types of every MIME part, depth first.
fn parts(raw: &[u8]) -> Vec<String> {
    fn walk(p: &mailparse::ParsedMail<'_>, out: &mut Vec<String>) {
        out.push(p.ctype.mimetype.clone());
        for s in &p.subparts {
            walk(s, out);
        }
    }
    let mut out = Vec::new();
    walk(&mailparse::parse_mail(raw).unwrap(), &mut out);
    out
}

pub fn body_of(raw: &[u8], mimetype: &str) -> String {
    fn find(p: &mailparse::ParsedMail<'_>, t: &str) -> Option<String> {
        if p.ctype.mimetype == t {
            return Some(p.get_body().unwrap());
        }
        p.subparts.iter().find_map(|s| find(s, t))
    }
    find(&mailparse::parse_mail(raw).unwrap(), mimetype).unwrap_or_default()
}

/// The text of the attachment named `name`, if the message has one.
pub fn attachment(raw: &[u8], name: &str) -> Option<String> {
    fn find(p: &mailparse::ParsedMail<'_>, name: &str) -> Option<String> {
        let d = p.get_content_disposition();
        if d.params.get("filename").map(String::as_str) == Some(name) {
            return Some(p.get_body().unwrap());
        }
        p.subparts.iter().find_map(|s| find(s, name))
    }
    find(&mailparse::parse_mail(raw).unwrap(), name)
}

pub fn eml_keys(dir: &Dir) -> BTreeSet<String> {
    let out = dir.path().join("state/outbox");
    std::fs::read_dir(out)
        .map(|rd| {
            rd.map(|e| {
                let raw = std::fs::read(e.unwrap().path()).unwrap();
                header(&raw, "X-Creditd-Key")
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Every key the outbox's `.eml` files report: their own and those they cover
/// (`X-Creditd-Covers`, DESIGN §5).
pub fn reported_keys(dir: &Dir) -> BTreeSet<String> {
    let out = dir.path().join("state/outbox");
    let mut keys = BTreeSet::new();
    for e in std::fs::read_dir(out).into_iter().flatten() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        keys.insert(header(&raw, "X-Creditd-Key"));
        let covers = header(&raw, "X-Creditd-Covers");
        keys.extend(
            covers
                .split(", ")
                .filter(|k| !k.is_empty())
                .map(String::from),
        );
    }
    keys
}

/// The keys of the messages one run mails for the crossings in `keys`: one per org-day, the
/// highest news (over, else the highest threshold); other keys as they are.
pub fn one_alert_per_org_day(keys: &BTreeSet<String>) -> BTreeSet<String> {
    let rank = |k: &str| -> u64 {
        let f: Vec<&str> = k.split(':').collect();
        match f[0] {
            "over" => 100,
            _ => f[3].parse().unwrap(),
        }
    };
    let mut best: std::collections::BTreeMap<String, &String> = Default::default();
    let mut out = BTreeSet::new();
    for k in keys {
        if !(k.starts_with("near:") || k.starts_with("over:")) {
            out.insert(k.clone());
            continue;
        }
        let f: Vec<&str> = k.split(':').collect();
        let day = format!("{}:{}", f[1], f[2]);
        match best.get(&day) {
            Some(b) if rank(b) >= rank(k) => {}
            _ => {
                best.insert(day, k);
            }
        }
    }
    out.extend(best.into_values().cloned());
    out
}

/// The messages the sample data must produce, from its independently computed ledger: 80 % and
/// 90 % reached (exactly: 100 × used ≥ t × allotted), over when above, and a summary for each
/// alerted day (the default policy).
pub fn expected_alerts(dir: &Dir) -> BTreeSet<String> {
    let mut expected = BTreeSet::new();
    for r in &csv_rows(&dir.read("expected-ledger.csv"))[1..] {
        let (org, day) = (&r[0], &r[1]);
        let allotted: u128 = r[12].parse().unwrap();
        let used: u128 = r[13].parse().unwrap();
        let mut alerted = false;
        for t in [80u128, 90] {
            if 100 * used >= t * allotted {
                expected.insert(format!("near:{org}:{day}:{t}"));
                alerted = true;
            }
        }
        if used > allotted {
            expected.insert(format!("over:{org}:{day}"));
            alerted = true;
        }
        if alerted {
            expected.insert(format!("summary:{org}:{day}"));
        }
    }
    expected
}

#[test]
fn sample_run_writes_each_alert_and_summary_once_as_eml() {
    let dir = Dir::sample();
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "all"]);
    let mut reported = expected_alerts(&dir);
    reported.insert("digest:2026-01-02".to_string());
    assert!(reported.len() > 20);
    // Every crossing is reported once; the crossings of an org-day found in one run share
    // one message, keyed by the highest news.
    let expected = one_alert_per_org_day(&reported);
    assert!(expected.len() < reported.len());
    assert_eq!(eml_keys(&dir), expected);
    assert_eq!(reported_keys(&dir), reported);

    // One over-limit message, read as a mail client would.
    let over = expected.iter().find(|k| k.starts_with("over:")).unwrap();
    let name = over.replace(':', ".") + ".eml";
    let raw = std::fs::read(dir.path().join("state/outbox").join(name)).unwrap();
    // Headers of DESIGN §5: the Message-ID on the From domain, no auto-replies, and the
    // org-day's thread root.
    let dotted = over.replace(':', ".");
    assert_eq!(
        header(&raw, "Message-ID"),
        format!("<{dotted}@example.com>")
    );
    assert_eq!(header(&raw, "Auto-Submitted"), "auto-generated");
    let root = thread_of(over);
    assert_eq!(header(&raw, "In-Reply-To"), root);
    assert_eq!(header(&raw, "References"), root);
    assert!(header(&raw, "Subject").contains("went over its daily API allotment"));
    assert!(header(&raw, "To").contains("admin@org"));
    // It reports the lower thresholds the same run found, ascending.
    let day = over.trim_start_matches("over:");
    assert_eq!(
        header(&raw, "X-Creditd-Covers"),
        format!("near:{day}:80, near:{day}:90")
    );
    assert_eq!(
        parts(&raw),
        vec!["multipart/alternative", "text/plain", "text/html"]
    );
    let text = body_of(&raw, "text/plain");
    for want in [
        "Base credits",
        "Variable credits",
        "Additional credits",
        "Allotted",
        "At the crossing",
        "Reached 80%",
        "Reached 90%",
        "Top endpoints by credits",
        "429 THRESHOLD_EXCEEDED",
        "buy additional credits",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let summary = expected.iter().find(|k| k.starts_with("summary:")).unwrap();
    let raw = std::fs::read(
        dir.path()
            .join("state/outbox")
            .join(summary.replace(':', ".") + ".eml"),
    )
    .unwrap();
    assert_eq!(
        parts(&raw),
        vec![
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png"
        ]
    );
    // The related part names its root part's type (RFC 2387).
    let related = mailparse::parse_mail(&raw).unwrap();
    let related = &related.subparts[1];
    assert_eq!(related.ctype.mimetype, "multipart/related");
    assert_eq!(
        related.ctype.params.get("type").map(String::as_str),
        Some("text/html")
    );
    // The chart's Content-ID is unique to the message, and the HTML names it.
    let cid = format!("chart.{}@example.com", summary.replace(':', "."));
    assert!(body_of(&raw, "text/html").contains(&format!("<img src=\"cid:{cid}\"")));
    assert!(String::from_utf8_lossy(&raw).contains(&format!("Content-ID: <{cid}>")));
    assert_eq!(
        header(&raw, "References"),
        thread_of(summary),
        "a summary joins its org-day's thread"
    );
    let digest = std::fs::read(dir.path().join("state/outbox/digest.2026-01-02.eml")).unwrap();
    assert_eq!(header(&digest, "Auto-Submitted"), "auto-generated");
    assert_eq!(
        header(&digest, "References"),
        "",
        "the digest belongs to no org-day"
    );

    // Re-running changes nothing: every key is sent once, ever.
    let out = dir.expect(0, &["--now", "2026-01-02T13:00:00Z", "run", "all"]);
    assert!(out.contains("deliver: 0 sent"), "{out}");
    assert_eq!(eml_keys(&dir), expected);
    assert_eq!(reported_keys(&dir), reported);
}

#[test]
fn sample_run_against_a_real_smtp_server_delivers_each_message_exactly_once() {
    let dir = Dir::sample();
    let port = free_port();
    let cfg = dir.read("creditd.toml")
        + &format!("\n[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\n");
    dir.write("creditd.toml", cfg);
    let server = SmtpServer::start(port, &dir.path().join("smtp-received"), 0);
    let mut expected = expected_alerts(&dir);
    expected.insert("digest:2026-01-02".to_string());
    let expected = one_alert_per_org_day(&expected);
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "all"]);
    dir.expect(0, &["--now", "2026-01-02T12:05:00Z", "run", "all"]);

    let received = server.received();
    let keys: Vec<String> = received
        .iter()
        .map(|(_, raw)| header(raw, "X-Creditd-Key"))
        .collect();
    assert_eq!(keys.len(), expected.len(), "one copy of each: {keys:?}");
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(
        !dir.path().join("state/outbox").exists(),
        "no .eml files when [smtp] is set"
    );

    // Recipients are the org's report_to (from the registry); the digest goes to ops.
    let orgs = csv_rows(&dir.read("orgs.csv"));
    let report_to = |org: &str| -> Vec<String> {
        let row = orgs.iter().find(|r| r[0] == org).unwrap();
        row[10].split(';').map(|a| a.trim().to_string()).collect()
    };
    for (to, raw) in &received {
        let key = header(raw, "X-Creditd-Key");
        let subject = header(raw, "Subject");
        let fields: Vec<&str> = key.split(':').collect();
        if fields[0] == "digest" {
            assert_eq!(to, &vec!["api-ops@example.com".to_string()]);
            assert!(subject.contains("ops digest 2026-01-02"), "{subject}");
            continue;
        }
        let (org, day) = (fields[1], fields[2]);
        assert_eq!(to, &report_to(org), "{key}");
        assert!(
            subject.contains(org) && subject.contains(day),
            "{key}: {subject}"
        );
        let news = match fields[0] {
            "near" => format!("reached {}%", fields[3]),
            "over" => "went over its daily API allotment".to_string(),
            _ => "of its API allotment on".to_string(),
        };
        assert!(subject.contains(&news), "{key}: {subject}");
        let want: &[&str] = if fields[0] == "summary" {
            &[
                "multipart/alternative",
                "text/plain",
                "multipart/related",
                "text/html",
                "image/png",
            ]
        } else {
            &["multipart/alternative", "text/plain", "text/html"]
        };
        assert_eq!(parts(raw), want, "{key}");
    }
}

pub const ORGS: &str = "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
300,\"<script>alert(1)</script>\r\nBcc: evil@attacker.example\",free,0,0,Europe/Berlin,eu,2025-01-01,false,,admin@three.example;boss@three.example,\n";

pub fn calls(day: &str, prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"ts\":\"{day}T10:{:02}:{:02}.000Z\",\"request_id\":\"{prefix}{i}\",\"org_id\":\"300\",\"method\":\"GET\",\"path\":\"/api/v1/tasks/count\",\"status\":200}}\n",
                i / 60,
                i % 60
            )
        })
        .collect()
}

pub fn mail_dir(smtp_port: Option<u16>) -> Dir {
    let dir = Dir::empty();
    dir.write("orgs.csv", ORGS);
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/tasks/count\"\ncredits = 50\n",
    );
    if let Some(port) = smtp_port {
        let cfg = dir.read("creditd.toml")
            + &format!("\n[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\n");
        dir.write("creditd.toml", cfg);
    }
    dir
}

#[test]
fn smtp_down_then_4xx_then_delivered_exactly_once_and_escaped() {
    let port = free_port();
    let dir = mail_dir(Some(port));
    // 110 calls × 50 credits on a 5000-credit day: 80 %, 90 % and over.
    dir.write("inbox/a.ndjson", calls("2025-10-08", "a", 110));

    // The server is down: the run does its job, the messages stay queued.
    let out = dir.creditd(&["--now", "2025-10-09T12:00:00Z", "run", "all"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not send"), "{stderr}");

    // Back, but refusing the first message with 451: that one waits for its backoff.
    let server = SmtpServer::start(port, &dir.path().join("smtp-received"), 1);
    let out = dir.expect(0, &["--now", "2025-10-09T12:01:00Z", "run", "deliver"]);
    assert!(out.contains("deliver: 2 sent, 1 left queued"), "{out}");
    let out = dir.expect(0, &["--now", "2025-10-09T12:01:10Z", "run", "deliver"]);
    assert!(
        out.contains("deliver: 0 sent, 0 left queued"),
        "the retry waits: {out}"
    );
    let out = dir.expect(0, &["--now", "2025-10-09T12:30:00Z", "run", "deliver"]);
    assert!(out.contains("deliver: 1 sent"), "{out}");
    dir.expect(0, &["--now", "2025-10-09T13:00:00Z", "run", "all"]);

    let received = server.received();
    let keys: Vec<String> = received
        .iter()
        .map(|(_, raw)| header(raw, "X-Creditd-Key"))
        .collect();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), unique.len(), "a key arrived twice: {keys:?}");
    // One alert for the three crossings one run found.
    let expected: BTreeSet<String> = [
        "over:300:2025-10-08",
        "summary:300:2025-10-08",
        "digest:2025-10-09",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );

    for (to, raw) in &received {
        let key = header(raw, "X-Creditd-Key");
        if key.starts_with("digest") {
            assert_eq!(to, &vec!["api-ops@example.com".to_string()]);
            continue;
        }
        assert_eq!(
            to,
            &vec![
                "admin@three.example".to_string(),
                "boss@three.example".to_string()
            ]
        );
        // The hostile name neither injects a header nor HTML.
        let (headers, _) = mailparse::parse_headers(raw).unwrap();
        assert!(
            headers
                .iter()
                .all(|h| !h.get_key().eq_ignore_ascii_case("Bcc")),
            "{key}"
        );
        let html = body_of(raw, "text/html");
        assert!(!html.contains("<script>"), "{key}: {html}");
        assert!(html.contains("&lt;script&gt;"), "{key}");
        assert!(header(raw, "Subject").contains("300"), "{key}");
    }
}
