//! The real daemon: second-level schedules, files dropped while it runs, SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{csv_rows, Dir};

pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn call(i: usize) -> String {
    format!(
        "{{\"ts\":\"2025-10-08T10:{:02}:{:02}.000Z\",\"request_id\":\"d{i}\",\"org_id\":\"200\",\"method\":\"GET\",\"path\":\"/api/v1/tickets\",\"status\":200}}\n",
        i / 60 % 60,
        i % 60
    )
}

#[test]
fn daemon_ingests_dropped_files_and_stops_cleanly_on_sigterm() {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         200,Beta,professional,10,0,Asia/Kathmandu,us,2025-06-01,true,,admin@beta.example,\n",
    );
    dir.write("pricing.toml", "effective_from = \"2025-10-01\"\n");
    dir.write(
        "jobs/ingest.toml",
        "schedule = \"* * * * * *\"\ntask = \"ingest\"\n",
    );
    dir.write(
        "jobs/close-days.toml",
        "schedule = \"*/2 * * * * *\"\ntask = \"close-days\"\ntimezone = \"Asia/Kathmandu\"\n",
    );
    let err_path = dir.path().join("daemon.err");
    // Stand in for systemd: receive the daemon's notifications on a datagram socket.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let mut notes: Vec<String> = Vec::new();
    let drain = |notes: &mut Vec<String>| {
        let mut buf = [0u8; 512];
        while let Ok(n) = notify.recv(&mut buf) {
            notes.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_creditd"))
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .args(["--config", "creditd.toml", "daemon"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&err_path).unwrap_or_default();
    wait_for("READY=1 from the daemon", Duration::from_secs(30), || {
        drain(&mut notes);
        notes.iter().any(|n| n.contains("READY=1"))
    });
    assert!(log().contains("creditd daemon ready"));

    // A second daemon on the same state is refused with a clear message.
    let second = dir.creditd(&["daemon"]);
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr)
        .contains("another creditd daemon is already running"));

    // Writers drop files under a temporary name and rename them when done.
    for f in 0..3 {
        let body: String = (f * 100..f * 100 + 100).map(call).collect();
        dir.write(&format!("inbox/.f{f}.ndjson.tmp"), body);
        std::fs::rename(
            dir.path().join(format!("inbox/.f{f}.ndjson.tmp")),
            dir.path().join(format!("inbox/f{f}.ndjson")),
        )
        .unwrap();
    }
    wait_for(
        "the ledger to show 300 calls",
        Duration::from_secs(30),
        || {
            let rows = csv_rows(&dir.export());
            rows.len() == 2 && rows[1][5] == "300"
        },
    );

    // A command by hand takes its turn between the daemon's runs.
    dir.write("inbox/g.ndjson", (300..310).map(call).collect::<String>());
    dir.expect(0, &["run", "ingest"]);

    // The zoned job runs too (its expression is matched against Kathmandu's wall clock).
    wait_for("a close-days run", Duration::from_secs(10), || {
        log().contains("job=close-days")
    });

    let pid = child.id().to_string();
    let stopped = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no exit within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}\n{}", log());
    assert!(log().contains("stopped"), "{}", log());
    drain(&mut notes);
    assert!(notes.iter().any(|n| n.contains("WATCHDOG=1")), "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("STOPPING=1")), "{notes:?}");

    // Nothing lost: every file ingested once, the inbox empty, the ledger complete.
    assert!(dir.inbox().is_empty(), "{:?}", dir.inbox());
    let files = csv_rows(&dir.expect(0, &["files"]));
    assert_eq!(files.len(), 5, "header + 4 files");
    assert!(files[1..]
        .iter()
        .all(|r| r[2] == "ingested" && r[3] == r[5]));
    let rows = csv_rows(&dir.export());
    assert_eq!(rows[1][5], "310");
    // Every job run left one line with its counts and duration.
    assert!(log().contains("job=ingest"), "{}", log());
    assert!(log().contains("job=close-days"), "{}", log());
}

/// The real daemon on `dir`, its stderr in a file; returns once it is ready.
pub struct Daemon {
    child: std::process::Child,
    err_path: std::path::PathBuf,
}

/// A test that fails while its daemon runs leaves no daemon behind.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub fn start(dir: &Dir) -> Daemon {
        let err_path = dir.path().join("daemon.err");
        let child = Command::new(env!("CARGO_BIN_EXE_creditd"))
            .current_dir(dir.path())
            .args(["--config", "creditd.toml", "daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let daemon = Daemon { child, err_path };
        wait_for("the daemon to be ready", Duration::from_secs(30), || {
            daemon.log().contains("catch-up done; the schedule runs")
        });
        daemon
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// SIGTERM, then its exit, which must be a success.
    pub fn stop(mut self) {
        assert!(Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(self.child.wait().unwrap().success(), "{}", self.log());
    }
}

#[test]
fn a_tick_that_finds_its_job_still_running_is_skipped_and_logged() {
    let dir = Dir::sample();
    let names = dir.hold_back(|_| true);
    dir.write(
        "jobs/ingest.toml",
        "schedule = \"* * * * * *\"\ntask = \"ingest\"\n",
    );
    let daemon = Daemon::start(&dir);
    let log = || daemon.log();
    // Forty files take the every-second ingest longer than a second.
    dir.release(&names);
    wait_for("the inbox to empty", Duration::from_secs(120), || {
        dir.inbox().is_empty()
    });
    wait_for("a skipped tick", Duration::from_secs(10), || {
        log().contains("still running; this tick is skipped")
    });
    let expected = dir.read("expected-ledger.csv");
    wait_for("the ledger", Duration::from_secs(30), || {
        crate::without_status(&dir.export()) == expected
    });
    daemon.stop();
}
