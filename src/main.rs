//! The `creditd` binary: parses the command line and hands over to `creditd::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CREDITD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = creditd::cli::Cli::parse();
    match creditd::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("creditd: {e:#}");
            if e.downcast_ref::<creditd::cli::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
