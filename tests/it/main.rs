//! Integration tests: the real `creditd` binary against real files in a temporary directory.

mod backfill;
mod check;
mod cli;
mod crash;
mod daemon;
mod days;
mod explain;
mod golden;
mod hostile;
mod ingest;
mod ingest_files;
mod isolation;
mod late_calls;
mod mail;
mod mail_late;
mod metrics;
mod quarantine;
mod resources;
mod retention;
mod security;
mod status;
mod systemd;
mod tidy;
mod upgrade;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary creditd installation: config, registry, pricing and an inbox.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    /// An empty directory with a config pointing at `orgs.csv`, `credit-purchases.csv`,
    /// `pricing.toml`, `inbox/` and `state/` inside it.
    pub fn empty() -> Dir {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("inbox")).unwrap();
        std::fs::write(
            tmp.path().join("creditd.toml"),
            "[paths]\ninbox = \"inbox\"\nstate_dir = \"state\"\norgs = \"orgs.csv\"\npurchases = \"credit-purchases.csv\"\npricing = \"pricing.toml\"\n",
        )
        .unwrap();
        Dir { tmp }
    }

    /// A directory holding a generated data set (`creditd-gen` with `args`).
    pub fn generated(args: &[&str]) -> Dir {
        let dir = Dir::empty();
        let out = Command::new(env!("CARGO_BIN_EXE_creditd-gen"))
            .arg("--out")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run creditd-gen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// A copy of the repository's sample data.
    pub fn sample() -> Dir {
        let dir = Dir::empty();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
        for f in ["orgs.csv", "credit-purchases.csv", "pricing.toml"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        for e in std::fs::read_dir(src.join("inbox")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join("inbox").join(e.file_name())).unwrap();
        }
        for f in ["expected-ledger.csv", "expected-files.csv"] {
            std::fs::copy(src.join("expected").join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Sets `[ingest] threads` in the directory's config.
    pub fn set_threads(&self, threads: u32) {
        let config = self.read("creditd.toml") + &format!("\n[ingest]\nthreads = {threads}\n");
        self.write("creditd.toml", config);
    }

    /// Runs creditd with the directory's config and the given arguments.
    pub fn creditd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run creditd")
    }

    /// Runs creditd like [`Dir::creditd`] with the fault points `faults` set (`CREDITD_FAULTS`).
    pub fn creditd_with_faults(&self, faults: &str, args: &[&str]) -> Output {
        self.command(args)
            .env("CREDITD_FAULTS", faults)
            .output()
            .expect("run creditd")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_creditd"));
        cmd.current_dir(self.path())
            .arg("--config")
            .arg(self.path().join("creditd.toml"))
            .args(args);
        cmd
    }

    /// Runs creditd and expects exit status `code`; returns stdout.
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.creditd(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "creditd {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ledger export` (CSV) at a fixed clock.
    pub fn export(&self) -> String {
        self.expect(0, &["--now", "2026-01-01T00:00:00Z", "ledger", "export"])
    }

    /// Moves the inbox files `pick` accepts aside, as if not delivered yet; returns their
    /// names for [`Dir::release`].
    pub fn hold_back(&self, pick: impl Fn(&str) -> bool) -> Vec<String> {
        let held = self.path().join("held");
        std::fs::create_dir_all(&held).unwrap();
        let names: Vec<String> = self.inbox().into_iter().filter(|n| pick(n)).collect();
        for n in &names {
            std::fs::rename(self.path().join("inbox").join(n), held.join(n)).unwrap();
        }
        names
    }

    /// Delivers files held back by [`Dir::hold_back`] into the inbox.
    pub fn release(&self, names: &[String]) {
        let held = self.path().join("held");
        for n in names {
            std::fs::rename(held.join(n), self.path().join("inbox").join(n)).unwrap();
        }
    }

    /// Names of the files left in the inbox.
    pub fn inbox(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path().join("inbox"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Drops the `status` column (the 18th) of an export, to compare with expected ledgers.
pub fn without_status(export: &str) -> String {
    export
        .lines()
        .map(|l| l.rsplit_once(',').expect("18 columns").0.to_string() + "\n")
        .collect()
}

/// Parses CSV text into rows of fields (header included).
pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}
