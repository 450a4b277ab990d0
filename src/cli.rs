//! The command line: parses arguments, runs one command, maps the outcome to an exit status
//! (0 done, 1 done with failures, 2 usage or configuration error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use crate::ledger;
use crate::setup::Setup;
use crate::state::State;
use crate::tasks;
use crate::usage;

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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let now = cli.now.unwrap_or_else(Utc::now);
    match cli.command {
        Command::Check => check(&cli.config),
        Command::Outbox { action } => {
            let setup = load_setup(&cli.config)?;
            crate::outbox::run(&setup, action.unwrap_or(OutboxAction::List), now)
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
                Task::All => "all",
            };
            let report = tasks::run(name, &setup, &mut state, now, &AtomicBool::new(false))?;
            for line in &report.details {
                println!("{line}");
            }
            for line in &report.problems {
                eprintln!("{line}");
            }
            println!("{}", report.summary);
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
            let setup = load_setup(&cli.config)?;
            let opts = crate::backfill::Options {
                from,
                to,
                orgs: org,
                dry_run,
                resend,
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
            let setup = load_setup(&cli.config)?;
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            let rows = match store {
                Some(store) => ledger::query(&store, from, to, &org)?,
                None => Vec::new(),
            };
            let rows = ledger::export_rows(&setup, &rows, now);
            match format {
                Format::Csv => print!("{}", ledger::to_csv(&rows)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Files { format } => {
            let setup = load_setup(&cli.config)?;
            let rows = match State::open_store_read_only(&setup.config.state_dir)? {
                Some(store) => store.files()?,
                None => Vec::new(),
            };
            print!("{}", crate::files::render(&rows, format == Format::Json)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { org, date } => {
            let setup = load_setup(&cli.config)?;
            let store = State::open_store_read_only(&setup.config.state_dir)?;
            print!(
                "{}",
                usage::render(&setup, store.as_ref(), &org, date, now)?
            );
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
                println!(
                    "backfill: nothing stored yet in {}",
                    setup.config.state_dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        state = State::open(&setup.config.state_dir)?;
        state.store()
    };
    let out = crate::backfill::run(setup, store, opts, now, progress)?;
    for c in &out.changes {
        println!(
            "{} {} {}: {} → {}",
            c.org_id, c.local_date, c.column, c.before, c.after
        );
    }
    if out.no_data() {
        println!(
            "backfill {} to {}: no data in this range (no events, no ledger rows); nothing changed",
            opts.from, opts.to
        );
        return Ok(ExitCode::SUCCESS);
    }
    let view = crate::report::BackfillView {
        id: &out.id,
        from: opts.from,
        to: opts.to,
        orgs: &opts.orgs,
        changes: &out.changes,
        changed_org_days: out.changed_org_days,
        rows_before: out.rows_before,
        rows_after: out.rows_after,
        recovered: out.recovered,
        quarantined: out.quarantined,
        resend: opts.resend,
    };
    println!(
        "{} Read {} file(s), {} line(s).",
        crate::report::backfill_summary(&view),
        out.files,
        out.lines
    );
    if opts.dry_run {
        println!("Dry run: nothing was written.");
    } else if out.queued.is_empty() {
        println!("Nothing changed, so nothing was queued.");
    } else {
        println!("Queued: {}", out.queued.join(", "));
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
    println!(
        "check: ok — {} orgs ({} plan rows), {} purchases, {} pricing catalog(s) with {} rules, {} job(s)",
        setup.registry.orgs.len(),
        plans,
        setup.registry.purchases.len(),
        setup.catalogs.len(),
        rules,
        jobs
    );
    Ok(ExitCode::SUCCESS)
}
