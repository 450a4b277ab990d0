//! Job files: `jobs/<name>.toml` with a six-field cron `schedule` (seconds first), a `task`,
//! and an optional IANA `timezone` for the schedule (default UTC).

use std::path::Path;

use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::Deserialize;

use crate::registry::Problem;

/// The tasks a job may run: every task this build has.
pub const TASKS: [&str; 6] = crate::tasks::AVAILABLE;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    /// Six-field cron expression, seconds first: `0 */5 * * * *`.
    schedule: String,
    /// One of [`TASKS`].
    task: String,
    /// Time zone the schedule is read in; absent = UTC.
    timezone: Option<String>,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: String,
    pub cron: Cron,
    pub task: String,
    pub timezone: Option<Tz>,
}

/// Parses a six-field cron expression the way the scheduler does.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    if expr.split_whitespace().count() != 6 {
        return Err(format!(
            "expected six fields (seconds first), like \"0 */5 * * * *\", found {expr:?}"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("not a cron expression ({e}): {expr:?}"))
}

/// Reads every `*.toml` in `dir`, in name order; problems name the file and field.
pub fn load(dir: &Path) -> (Vec<Job>, Vec<Problem>) {
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    let problem = |file: &Path, field: Option<&str>, message: String| Problem {
        file: file.display().to_string(),
        line: None,
        field: field.map(str::to_string),
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(
                dir,
                None,
                format!("cannot list the jobs directory: {e}"),
            ));
            return (jobs, problems);
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(problem(&path, None, format!("cannot read: {e}")));
                continue;
            }
        };
        let raw: RawJob = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text[..s.start].bytes().filter(|b| *b == b'\n').count() as u64 + 1);
                problems.push(Problem {
                    line,
                    ..problem(&path, None, e.message().to_string())
                });
                continue;
            }
        };
        let before = problems.len();
        let cron = parse_cron(&raw.schedule)
            .map_err(|m| problems.push(problem(&path, Some("schedule"), m)))
            .ok();
        if !TASKS.contains(&raw.task.as_str()) {
            problems.push(problem(
                &path,
                Some("task"),
                format!("expected one of {}, found {:?}", TASKS.join(", "), raw.task),
            ));
        }
        let timezone = match &raw.timezone {
            None => None,
            Some(z) => match z.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    problems.push(problem(
                        &path,
                        Some("timezone"),
                        format!("expected an IANA time zone like Europe/Berlin, found {z:?}"),
                    ));
                    None
                }
            },
        };
        if problems.len() > before {
            continue;
        }
        jobs.push(Job {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            schedule: raw.schedule,
            cron: cron.expect("checked"),
            task: raw.task,
            timezone,
        });
    }
    (jobs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_needs_six_fields_with_seconds() {
        assert!(parse_cron("0 */5 * * * *").is_ok());
        assert!(parse_cron("*/5 * * * *")
            .unwrap_err()
            .contains("expected six fields"));
        assert!(parse_cron("0 61 * * * *")
            .unwrap_err()
            .contains("not a cron expression"));
    }

    #[test]
    fn every_shipped_job_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let (jobs, problems) = load(&dir);
        assert!(problems.is_empty(), "{problems:?}");
        let mut tasks: Vec<&str> = jobs.iter().map(|j| j.task.as_str()).collect();
        tasks.sort_unstable();
        assert_eq!(
            tasks,
            ["close-days", "deliver", "ingest", "ops-digest", "retention"]
        );
    }

    #[test]
    fn job_files_are_checked_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "schedule = \"0 * * * * *\"\ntask = \"ingest\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "schedule = \"0 * * * *\"\ntask = \"sleep\"\ntimezone = \"Mars/Base\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c.toml"),
            "schedule = \"0 * * * * *\"\ntask = \"ingest\"\nevery = 5\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let (jobs, problems) = load(dir.path());
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].name, "a");
        let shown: Vec<String> = problems
            .iter()
            .map(|p| {
                p.to_string()
                    .replace(&dir.path().display().to_string(), "jobs")
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                "jobs/b.toml: field schedule: expected six fields (seconds first), like \"0 */5 * * * *\", found \"0 * * * *\"",
                "jobs/b.toml: field task: expected one of ingest, close-days, deliver, ops-digest, retention, all, found \"sleep\"",
                "jobs/b.toml: field timezone: expected an IANA time zone like Europe/Berlin, found \"Mars/Base\"",
                "jobs/c.toml:3: unknown field `every`, expected one of `schedule`, `task`, `timezone`",
            ]
        );
    }
}
