//! The command line: parses arguments, runs one command, maps the outcome to an exit status
//! (0 done, 1 done with failures, 2 usage or configuration error).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::ledger;
use crate::setup::Setup;
use crate::state::State;
use crate::store::Store;
use crate::tasks;
use crate::usage;

mod outbox;

/// creditd reconciles API access logs into a daily credit ledger per organization.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The config file; relative paths inside it are relative to its directory.
    #[arg(long, global = true, default_value = "creditd.toml")]
    pub config: PathBuf,
    /// Fix the clock of this command (RFC 3339), for tests and replays.
    #[arg(long, global = true, value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one task now.
    Run {
        #[arg(value_enum)]
        task: Task,
    },
    /// Export the ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// What happened to every input file, one row each.
    Files {
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// The operator's one screen: last job runs, inbox backlog, gateways, outbox, open
    /// problems, disk use, retention; exit 1 when something needs a human.
    Status {
        #[arg(long, value_enum, default_value_t = TextFormat::Text)]
        format: TextFormat,
    },
    /// The quarantined lines: file, line, reason, org, local date and the raw line.
    Quarantine {
        /// Only the lines of this file (its inbox name).
        #[arg(long)]
        file: Option<String>,
        /// Only this reason (malformed, missing_field, bad_timestamp, bad_method, bad_status,
        /// unknown_org, before_signup, expired).
        #[arg(long)]
        reason: Option<String>,
        /// Only lines of calls on local dates from this one (lines without a date are left out).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Only lines of calls on local dates up to this one (lines without a date are left out).
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
    /// Every call of one org-day in running-total order: rule, tier, credits, running total,
    /// crossings; its totals are the ledger row's.
    Explain {
        #[arg(long)]
        org: String,
        /// The org's local date.
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
    },
    /// The "API details" view of one org-day.
    Usage {
        #[arg(long)]
        org: String,
        /// The org's local date; defaults to its current day.
        #[arg(long)]
        date: Option<NaiveDate>,
    },
    /// Validate config, registry, purchases, pricing and job files; exit 2 on any problem.
    Check,
    /// The messages waiting in the outbox (queued, failed); send a parked one again, or drop it.
    Outbox {
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Run the jobs of jobs/*.toml on their schedules until SIGTERM or SIGINT.
    Daemon,
    /// Recompute org-days from the archived raw files with today's registry, purchases and
    /// pricing; print what changed and queue the diff as a report to ops.
    Backfill {
        /// First local date of the range.
        #[arg(long)]
        from: NaiveDate,
        /// Last local date of the range (inclusive).
        #[arg(long)]
        to: NaiveDate,
        /// Only these orgs (repeatable); every org when absent.
        #[arg(long)]
        org: Vec<String>,
        /// Print the diff and change nothing: the state directory stays byte-identical.
        #[arg(long)]
        dry_run: bool,
        /// Also queue alerts for crossings the backfill reveals and amended summaries of
        /// closed days that changed.
        #[arg(long)]
        resend: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Every message not sent yet: queued (with its next attempt) and failed (parked).
    List,
    /// Make a failed (or queued) message due now; `run deliver` sends it.
    Retry { key: String },
    /// Mark a failed (or queued) message dropped: kept, never sent.
    Drop { key: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Ingest the inbox and update the ledger.
    Ingest,
    /// Close every org-day whose local midnight plus close_grace has passed.
    CloseDays,
    /// Send queued messages (SMTP, or .eml files without [smtp]).
    Deliver,
    /// Queue today's ops digest.
    OpsDigest,
    /// Remove what is past the horizons of [retention] (the ledger is kept forever).
    Retention,
    /// Every task, in pipeline order: ingest, close-days, ops-digest, deliver.
    All,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// One row per org × local day with at least one accepted call.
    Export {
        #[arg(long)]
        from: Option<NaiveDate>,
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long)]
        org: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextFormat {
    Text,
    Json,
}

fn parse_now(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time like 2025-10-08T02:00:00Z: {e}"))
}

/// A configuration error: exit status 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A usage error (an unknown org in `--org`, `--from` after `--to`): exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Standard output for a command's results. A reader that went away (`creditd ledger export |
/// head -1`) ends the output quietly: the command has done its job, so it still exits 0.
pub struct Stdout {
    out: std::io::StdoutLock<'static>,
    closed: bool,
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout {
            out: std::io::stdout().lock(),
            closed: false,
        }
    }
}

impl Stdout {
    /// Writes `text` as it is; nothing more once the reader has closed the pipe.
    pub fn text(&mut self, text: &str) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e).context("cannot write to standard output"),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, line: impl std::fmt::Display) -> anyhow::Result<()> {
        self.text(&format!("{line}\n"))
    }
}

/// The note a reader gives on a state where nothing was ingested yet.
fn note_no_data(state_dir: &Path) {
    eprintln!(
        "no data yet: nothing has been ingested in {}",
        state_dir.display()
    );
}

/// Refuses a date range that ends before it starts.
fn check_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> anyhow::Result<()> {
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(UsageError(format!(
                "--from {from} is after --to {to}: the range is empty"
            ))
            .into());
        }
    }
    Ok(())
}

/// Refuses an `--org` that is neither in the registry nor in the ledger (an org removed from the
/// registry keeps its ledger rows, and they can still be read and backfilled).
fn check_orgs(setup: &Setup, store: Option<&Store>, orgs: &[String]) -> anyhow::Result<()> {
    for org in orgs {
        if setup.org(org).is_some() {
            continue;
        }
        let in_ledger = match store {
            Some(s) => !s.ledger(None, None, std::slice::from_ref(org))?.is_empty(),
            None => false,
        };
        if !in_ledger {
            return Err(UsageError(format!(
                "--org {org}: no such org in the registry {} or in the ledger",
                setup.config.orgs.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let now = cli.now.unwrap_or_else(Utc::now);
    match cli.command {
        Command::Check => check(&cli.config),
        Command::Outbox { action } => {
            let setup = load_setup(&cli.config)?;
            outbox::run(&setup, action.unwrap_or(OutboxAction::List), now)
        }
        Command::Daemon => {
            crate::daemon::run(cli.config.clone(), cli.now)
                .map_err(|e| ConfigError(format!("{e:#}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { task } => {
            let setup = load_setup(&cli.config)?;
            let mut state = State::open(&setup.config.state_dir)?;
            let name = match task {
                Task::Ingest => "ingest",
                Task::CloseDays => "close-days",
                Task::Deliver => "deliver",
                Task::OpsDigest => "ops-digest",
                Task::Retention => "retention",
                Task::All => "all",
            };
            let report = tasks::run(name, &setup, &mut state, now, &AtomicBool::new(false))?;
            let mut out = Stdout::default();
            for line in &report.details {
                out.line(line)?;
            }
            for line in &report.problems {
                eprintln!("{line}");
            }
            out.line(&report.summary)?;
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Backfill {
            from,
            to,
            org,
            dry_run,
            resend,
        } => {
            check_range(Some(from), Some(to))?;
            let setup = load_setup(&cli.config)?;
            let opts = crate::backfill::Options {
                from,
                to,
                orgs: org,
                dry_run,
                resend,
                // The wall clock's nanoseconds: unique per run even under a fixed --now.
                nonce: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            };
            backfill(&setup, &opts, now)
        }
        Command::Ledger {
            command:
                LedgerCommand::Export {
                    from,
                    to,
                    org,
                    format,
                },
        } => {
            check_range(from, to)?;
            let setup = load_setup(&cli.config)?;
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            check_orgs(&setup, store.as_ref(), &org)?;
            let rows = match &store {
                Some(store) => ledger::query(store, from, to, &org)?,
                None => {
                    note_no_data(&setup.config.state_dir);
                    Vec::new()
                }
            };
            let rows = ledger::export_rows(&setup, &rows, now);
            let mut out = Stdout::default();
            match format {
                Format::Csv => out.text(&ledger::to_csv(&rows))?,
                Format::Json => out.line(serde_json::to_string_pretty(&rows)?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Files { format } => {
            let setup = load_setup(&cli.config)?;
            let rows = match State::open_store_read_only(&setup.config.state_dir)? {
                Some(store) => store.files()?,
                None => {
                    note_no_data(&setup.config.state_dir);
                    Vec::new()
                }
            };
            Stdout::default().text(&crate::files::render(&rows, format == Format::Json)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { org, date, format } => {
            let setup = load_setup(&cli.config)?;
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            let found = match &store {
                Some(store) => crate::explain::explain(&setup, store, &org, date)?,
                None => None,
            };
            let Some(x) = found else {
                if setup.org(&org).is_none() {
                    return Err(UsageError(format!(
                        "--org {org}: no such org in the registry {}",
                        setup.config.orgs.display()
                    ))
                    .into());
                }
                eprintln!("explain: org {org} has no calls on {date} (no ledger row)");
                if format == ExplainFormat::Csv {
                    Stdout::default().text(&format!("{}\n", crate::report::EXPLAIN_HEADER))?;
                }
                return Ok(ExitCode::SUCCESS);
            };
            let text = match format {
                ExplainFormat::Text => crate::report::explain_text(&x),
                ExplainFormat::Csv => crate::report::explain_csv(&x)?,
            };
            Stdout::default().text(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { format } => {
            let setup = load_setup(&cli.config)?;
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            let status = crate::status::gather(&setup, store.as_ref(), now)?;
            let text = match format {
                TextFormat::Text => crate::status::render_text(&status),
                TextFormat::Json => serde_json::to_string_pretty(&status)? + "\n",
            };
            Stdout::default().text(&text)?;
            Ok(if status.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Quarantine {
            file,
            reason,
            from,
            to,
            format,
        } => {
            let reason = match reason.as_deref() {
                None => None,
                Some(r) => Some(crate::logline::Reason::parse(r).ok_or_else(|| {
                    let all: Vec<&str> = crate::logline::Reason::ALL
                        .iter()
                        .map(|r| r.as_str())
                        .collect();
                    UsageError(format!("--reason {r}: expected one of {}", all.join(", ")))
                })?),
            };
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err(UsageError(format!(
                        "--from {f} is after --to {t}: the range is empty"
                    ))
                    .into());
                }
            }
            let setup = load_setup(&cli.config)?;
            let filter = crate::store::QuarantineFilter {
                file,
                reason,
                from,
                to,
            };
            let rows = match State::open_store_read_only(&setup.config.state_dir)? {
                Some(store) => store.quarantined(&filter)?,
                None => {
                    note_no_data(&setup.config.state_dir);
                    Vec::new()
                }
            };
            Stdout::default().text(&crate::quarantine::render(&rows, format == Format::Json)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { org, date } => {
            let setup = load_setup(&cli.config)?;
            if setup.org(&org).is_none() {
                return Err(UsageError(format!(
                    "--org {org}: no such org in the registry {}",
                    setup.config.orgs.display()
                ))
                .into());
            }
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            if store.is_none() {
                note_no_data(&setup.config.state_dir);
            }
            Stdout::default().text(&usage::render(&setup, store.as_ref(), &org, date, now)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn backfill(
    setup: &Setup,
    opts: &crate::backfill::Options,
    now: DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let mut bar;
    let mut lines;
    let progress: &mut dyn crate::backfill::Progress = if std::io::stderr().is_terminal() {
        bar = BarProgress::default();
        &mut bar
    } else {
        lines = LineProgress;
        &mut lines
    };
    let mut state;
    let mut read_only;
    let store = if opts.dry_run {
        read_only = State::open_locked_read_only(&setup.config.state_dir)?;
        match &mut read_only {
            // The lock (the pair's first half) is held until the end of this function.
            Some((_lock, store)) => store,
            None => {
                check_orgs(setup, None, &opts.orgs)?;
                Stdout::default().line(format_args!(
                    "backfill: nothing stored yet in {}",
                    setup.config.state_dir.display()
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        state = State::open(&setup.config.state_dir)?;
        state.store()
    };
    check_orgs(setup, Some(&*store), &opts.orgs)?;
    let out = crate::backfill::run(setup, store, opts, now, progress)?;
    let mut stdout = Stdout::default();
    for c in &out.changes {
        stdout.line(format_args!(
            "{} {} {}: {} → {}",
            c.org_id, c.local_date, c.column, c.before, c.after
        ))?;
    }
    if out.no_data() {
        stdout.line(format_args!(
            "backfill {} to {}: no data in this range (no events, no ledger rows); nothing changed",
            opts.from, opts.to
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let view = crate::report::BackfillView {
        id: &out.id,
        from: opts.from,
        to: opts.to,
        orgs: &opts.orgs,
        changes: &out.changes,
        days: &out.days,
        changed_org_days: out.changed_org_days,
        rows_before: out.rows_before,
        rows_after: out.rows_after,
        recovered: out.recovered,
        quarantined: out.quarantined,
        resend: opts.resend,
    };
    stdout.line(format_args!(
        "{} Read {} file(s), {} line(s).",
        crate::report::backfill_summary(&view),
        out.files,
        out.lines
    ))?;
    if opts.dry_run {
        stdout.line("Dry run: nothing was written.")?;
    } else if out.queued.is_empty() {
        stdout.line("Nothing changed, so nothing was queued.")?;
    } else {
        stdout.line(format_args!("Queued: {}", out.queued.join(", ")))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar with rows/s and ETA, on a terminal.
#[derive(Default)]
struct BarProgress {
    bar: Option<indicatif::ProgressBar>,
    lines: u64,
    started: Option<std::time::Instant>,
}

impl crate::backfill::Progress for BarProgress {
    fn start(&mut self, files: usize, bytes: u64) {
        let bar = indicatif::ProgressBar::new(bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "backfill [{bar:30}] {bytes}/{total_bytes}  {msg}  ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("0 of {files} file(s)"));
        self.bar = Some(bar);
        self.started = Some(std::time::Instant::now());
    }

    fn file_done(&mut self, _name: &str, bytes: u64, lines: u64) {
        self.lines += lines;
        if let (Some(bar), Some(t)) = (&self.bar, self.started) {
            bar.inc(bytes);
            let rate = self.lines as f64 / t.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{} rows, {rate:.0} rows/s", self.lines));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// One log line per file read, when stderr is not a terminal.
struct LineProgress;

impl crate::backfill::Progress for LineProgress {
    fn start(&mut self, files: usize, bytes: u64) {
        tracing::info!(files, bytes, "backfill: reading the archive");
    }

    fn file_done(&mut self, name: &str, _bytes: u64, lines: u64) {
        tracing::info!(file = name, lines, "backfill: read");
    }

    fn finish(&mut self) {}
}

fn load_setup(config: &Path) -> anyhow::Result<Setup> {
    let (setup, problems) = Setup::load(config).map_err(|e| ConfigError(format!("{e:#}")))?;
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(ConfigError(format!(
            "the inputs have {} problem(s); `creditd check` lists them:\n  {}",
            list.len(),
            list.join("\n  ")
        ))
        .into());
    }
    Ok(setup)
}

fn check(config: &Path) -> anyhow::Result<ExitCode> {
    let (setup, mut problems) = Setup::load(config).map_err(|e| ConfigError(format!("{e:#}")))?;
    // A missing jobs directory means no jobs (the daemon refuses to start without any).
    let jobs = if setup.config.jobs_dir.exists() {
        let (jobs, job_problems) = crate::jobs::load(&setup.config.jobs_dir);
        problems.extend(job_problems);
        jobs.len()
    } else {
        0
    };
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("check: {} problem(s)", problems.len());
        return Ok(ExitCode::from(2));
    }
    let plans: usize = setup.registry.orgs.values().map(|o| o.plans.len()).sum();
    let rules: usize = setup.catalogs.iter().map(|c| c.rules().len()).sum();
    Stdout::default().line(format_args!(
        "check: ok — {} orgs ({} plan rows), {} purchases, {} pricing catalog(s) with {} rules, {} job(s)",
        setup.registry.orgs.len(),
        plans,
        setup.registry.purchases.len(),
        setup.catalogs.len(),
        rules,
        jobs
    ))?;
    Ok(ExitCode::SUCCESS)
}
