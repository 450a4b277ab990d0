//! `creditd daemon`: runs the jobs of `jobs/*.toml` on their schedules until SIGTERM/SIGINT.
//!
//! Schedules run in UTC through tokio-cron-scheduler. A job with a `timezone` ticks every
//! second in UTC and runs when its expression matches the local wall clock, so DST changes
//! never shift it (the scheduler's own zone support keeps the offset of its start). A job never
//! overlaps itself: a tick that finds it running is skipped and logged. All tasks share one
//! locked state; a task stops at its next safe point when shutdown begins.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use crate::jobs::{self, Job};
use crate::setup::Setup;
use crate::state::{DaemonLock, State};
use crate::store::Unit;
use crate::tasks;

/// How long shutdown waits for a running task before giving up on it (the exit deadline is
/// 10 s; the rest is for the runtime's own shutdown).
const DRAIN: Duration = Duration::from_secs(8);

struct Shared {
    config: PathBuf,
    state_dir: PathBuf,
    stop: AtomicBool,
    running: AtomicUsize,
    /// `--now` minus the real clock at start (zero without `--now`): the daemon's clock runs
    /// at real speed from the instant it was given.
    offset: chrono::Duration,
    /// The last setup that passed every check: a reload that fails keeps running on it.
    last_valid: Mutex<Setup>,
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
            .checked_add_signed(self.offset)
            .unwrap_or_else(Utc::now)
    }
}

/// Runs the daemon; returns when a shutdown signal has been handled. `now` (from `--now`)
/// starts its clock at that instant.
pub fn run(config: PathBuf, now: Option<DateTime<Utc>>) -> anyhow::Result<()> {
    // The runtime and the signal handlers come first: a SIGTERM from here on is a clean stop,
    // even during the checks below.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let signals = {
        let _inside = runtime.enter();
        Signals::listen()?
    };
    let (setup, problems) = Setup::load(&config)?;
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("the inputs have problems:\n  {}", list.join("\n  "));
    }
    let (jobs, problems) = jobs::load(&setup.config.jobs_dir);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("the job files have problems:\n  {}", list.join("\n  "));
    }
    if jobs.is_empty() {
        anyhow::bail!(
            "no jobs in {}: nothing to run",
            setup.config.jobs_dir.display()
        );
    }
    for job in &jobs {
        if !tasks::AVAILABLE.contains(&job.task.as_str()) {
            anyhow::bail!(
                "job {}: task {} is not available in this build (available: {})",
                job.name,
                job.task,
                tasks::AVAILABLE.join(", ")
            );
        }
    }
    // One daemon per state directory, for its whole life; each task run also takes the writer
    // lock, so a `creditd run` or backfill by hand slips in between runs, never during one.
    let _daemon = DaemonLock::acquire(&setup.config.state_dir)?;
    let offset = now.map_or(chrono::Duration::zero(), |n| n - Utc::now());
    let shared = Arc::new(Shared {
        config,
        state_dir: setup.config.state_dir.clone(),
        stop: AtomicBool::new(false),
        running: AtomicUsize::new(0),
        offset,
        last_valid: Mutex::new(setup),
    });

    let result = runtime.block_on(serve(shared, jobs, signals));
    // A task still running past the drain is left behind (its transaction rolls back when the
    // process ends) rather than holding the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// SIGTERM and SIGINT, listened for from the daemon's first moment.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the runtime.
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }
}

async fn serve(shared: Arc<Shared>, jobs: Vec<Job>, signals: Signals) -> anyhow::Result<()> {
    let Signals { mut term, mut int } = signals;

    let mut scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    let shifted = shared.offset != chrono::Duration::zero();
    for job in jobs {
        let busy = Arc::new(AtomicBool::new(false));
        // A zoned job, or any job on a clock given by `--now`, ticks every second and runs
        // when its expression matches the daemon's own wall clock.
        let every_second = job.timezone.is_some() || shifted;
        let schedule = if every_second {
            "* * * * * *".to_string()
        } else {
            job.schedule.clone()
        };
        let shared = shared.clone();
        let job = Arc::new(job);
        let cron_job = CronJob::new_async(schedule.as_str(), move |_id, _lock| {
            let shared = shared.clone();
            let job = job.clone();
            let busy = busy.clone();
            Box::pin(async move {
                if every_second {
                    let tz = job.timezone.unwrap_or(chrono_tz::UTC);
                    let local = shared.now().with_timezone(&tz);
                    if !job.cron.is_time_matching(&local).unwrap_or(false) {
                        return;
                    }
                }
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if busy.swap(true, Ordering::SeqCst) {
                    tracing::warn!(job = %job.name, "still running; this tick is skipped");
                    return;
                }
                run_job(shared, job.clone()).await;
                busy.store(false, Ordering::SeqCst);
            })
        })
        .with_context(|| format!("cannot schedule {}", job_name(&schedule)))?;
        scheduler.add(cron_job).await.context("cannot add a job")?;
    }

    // systemd hears READY now: config, jobs and the state are checked, and the catch-up may
    // be long. The watchdog is fed while it runs.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    // Catch up first: whatever arrived and every close missed while nothing ran. The schedule
    // starts once it is done.
    tracing::info!("creditd daemon ready; catching up (ingest, close-days, ops-digest, deliver) before the schedule starts");
    let mut catch_up = tokio::spawn(run_job(shared.clone(), Arc::new(startup_job()?)));
    let mut started = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = &mut catch_up, if !started => {
                started = true;
                scheduler
                    .start()
                    .await
                    .context("cannot start the scheduler")?;
                tracing::info!("catch-up done; the schedule runs");
            }
        }
    }

    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shared.stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + DRAIN;
    if started {
        let _ = tokio::time::timeout(Duration::from_secs(1), scheduler.shutdown()).await;
    }
    while shared.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if shared.running.load(Ordering::SeqCst) > 0 {
        tracing::warn!("a task was still running at the deadline; its open transaction rolls back");
    }
    tracing::info!("stopped");
    Ok(())
}

fn job_name(schedule: &str) -> String {
    format!("schedule {schedule:?}")
}

fn startup_job() -> anyhow::Result<Job> {
    Ok(Job {
        name: "startup".to_string(),
        schedule: String::new(),
        cron: jobs::parse_cron("0 0 0 * * *").map_err(anyhow::Error::msg)?,
        task: "all".to_string(),
        timezone: None,
    })
}

/// Runs one job's task on a blocking thread, logging one line with counts and duration.
async fn run_job(shared: Arc<Shared>, job: Arc<Job>) {
    shared.running.fetch_add(1, Ordering::SeqCst);
    let guard = shared.clone();
    let name = job.name.clone();
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<tasks::TaskReport> {
        let started = Instant::now();
        let now = shared.now();
        let mut state = State::open_announced(&shared.state_dir, false)?;
        let setup = reload(&shared, &mut state, now)?;
        let report = tasks::run(&job.task, &setup, &mut state, now, &shared.stop)?;
        for p in &report.problems {
            tracing::warn!(job = %job.name, "{p}");
        }
        tracing::info!(job = %job.name, ms = started.elapsed().as_millis() as u64, "{}", report.summary);
        Ok(report)
    })
    .await;
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(job = %name, "failed: {e:#}"),
        Err(e) => tracing::error!(job = %name, "panicked: {e}"),
    }
    guard.running.fetch_sub(1, Ordering::SeqCst);
}

/// Reads the config, registry, purchases and pricing afresh (DESIGN §7). A version that would
/// fail `check` is not used: the job runs on the last valid one, the rejection is an open
/// problem, and ops hear of it once per rejected version (`config:<sha256>`).
fn reload(shared: &Shared, state: &mut State, now: DateTime<Utc>) -> anyhow::Result<Setup> {
    let mut last = shared
        .last_valid
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let problems: Vec<String> = match Setup::load(&shared.config) {
        Ok((setup, problems)) if problems.is_empty() => {
            for p in state.store().problems(Some(Unit::Config))? {
                state.store().resolve_problem(Unit::Config, &p.target)?;
                tracing::info!("the config is valid again; problem {} closed", p.target);
            }
            *last = setup.clone();
            return Ok(setup);
        }
        Ok((_, problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(e) => vec![format!("{e:#}")],
    };
    let digest = rejected_digest(&shared.config, &last);
    let target = format!("config:{digest}");
    let error = format!(
        "{} problem(s), running on the last valid version: {}",
        problems.len(),
        problems.join("; ")
    );
    tracing::error!("{error}");
    state
        .store()
        .record_problem(Unit::Config, &target, &error, now.timestamp_millis())?;
    let tx = state.store().transaction()?;
    crate::alerts::queue_config_rejected(&last.config, &tx, &target, &problems, now)?;
    tx.commit()?;
    Ok(last.clone())
}

/// The SHA-256 of the rejected inputs: the config file and the registry, purchases and pricing
/// files (as the last valid config names them), so each rejected version is reported once.
fn rejected_digest(config: &Path, last: &Setup) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let c = &last.config;
    let files = [config, c.orgs.as_path(), c.purchases.as_path()]
        .into_iter()
        .chain(c.pricing.iter().map(PathBuf::as_path));
    for f in files {
        hasher.update(f.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(f).unwrap_or_default());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}
