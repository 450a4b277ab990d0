//! `creditd daemon`: runs the jobs of `jobs/*.toml` on their schedules until SIGTERM/SIGINT.
//!
//! Schedules run in UTC through tokio-cron-scheduler. A job with a `timezone` ticks every
//! second in UTC and runs when its expression matches the local wall clock, so DST changes
//! never shift it (the scheduler's own zone support keeps the offset of its start). A job never
//! overlaps itself: a tick that finds it running is skipped and logged. All tasks share one
//! locked state; a task stops at its next safe point when shutdown begins.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};

use crate::jobs::{self, Job};
use crate::setup::Setup;
use crate::state::{DaemonLock, State};
use crate::tasks;

/// How long shutdown waits for a running task before giving up on it.
const DRAIN: Duration = Duration::from_secs(8);

struct Shared {
    config: PathBuf,
    state_dir: PathBuf,
    stop: AtomicBool,
    running: AtomicUsize,
}

/// Runs the daemon; returns when a shutdown signal has been handled.
pub fn run(config: PathBuf) -> anyhow::Result<()> {
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
    let shared = Arc::new(Shared {
        config,
        state_dir: setup.config.state_dir.clone(),
        stop: AtomicBool::new(false),
        running: AtomicUsize::new(0),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(shared, jobs))
}

async fn serve(shared: Arc<Shared>, jobs: Vec<Job>) -> anyhow::Result<()> {
    let mut scheduler = JobScheduler::new()
        .await
        .context("cannot start the scheduler")?;
    for job in jobs {
        let busy = Arc::new(AtomicBool::new(false));
        let schedule = match job.timezone {
            None => job.schedule.clone(),
            Some(_) => "* * * * * *".to_string(),
        };
        let shared = shared.clone();
        let job = Arc::new(job);
        let cron_job = CronJob::new_async(schedule.as_str(), move |_id, _lock| {
            let shared = shared.clone();
            let job = job.clone();
            let busy = busy.clone();
            Box::pin(async move {
                if let Some(tz) = job.timezone {
                    let local = Utc::now().with_timezone(&tz);
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

    // Catch up first: whatever arrived and every close missed while nothing ran.
    run_job(shared.clone(), Arc::new(startup_job()?)).await;

    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("creditd daemon ready");

    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }

    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shared.stop.store(true, Ordering::SeqCst);
    let _ = scheduler.shutdown().await;
    let deadline = Instant::now() + DRAIN;
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
        // The registry, purchases and pricing are read afresh for every run.
        let (setup, problems) = Setup::load(&shared.config)?;
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("inputs have problems, run skipped:\n  {}", list.join("\n  "));
        }
        let mut state = State::open_announced(&shared.state_dir, false)?;
        let report = tasks::run(&job.task, &setup, &mut state, Utc::now(), &shared.stop)?;
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
