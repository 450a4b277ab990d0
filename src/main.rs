//! The `creditd` binary: parses the command line and hands over to `creditd::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything creditd creates (store, parts, archive copies, .eml files) is its own: files
    // 0600, directories 0700, whatever umask it was started with.
    // SAFETY: umask only sets this process's file-creation mask; no memory is involved.
    unsafe {
        libc::umask(0o077);
    }
    let cli = creditd::cli::Cli::parse();
    // The daemon logs a line per job run (journald reads stderr); commands only warnings.
    let default = match cli.command {
        creditd::cli::Command::Daemon => "info,tokio_cron_scheduler=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDITD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match creditd::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("creditd: {e:#}");
            if e.downcast_ref::<creditd::cli::ConfigError>().is_some()
                || e.downcast_ref::<creditd::cli::UsageError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
