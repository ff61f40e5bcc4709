//! `flowsql`: record every TCP connection begin with eBPF and query the flows
//! with SQL. This binary wires the crates together; each subcommand lives in
//! `commands/`.

mod cli;
mod commands;
mod config;
mod logging;
mod metrics;
#[cfg(feature = "sql")]
mod output;
mod privileges;
#[cfg(feature = "sql")]
mod repl;
#[cfg(feature = "sql")]
mod runner;
#[cfg(feature = "sql")]
mod sql_text;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (config, logging) = match setup(&cli) {
        Ok(setup) => setup,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    match commands::run(cli, config, logging) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `outer: inner: root`, except that a
/// message that spans lines (a verifier log) keeps its lines.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for (i, cause) in error.chain().enumerate() {
        let message = cause.to_string();
        if i > 0 {
            // Causes that merely repeat their parent's text add nothing.
            if text.contains(&message) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// Reads the configuration (file, environment, flags) and installs the
/// logger it asks for: stderr (never stdout, which carries data), or a file.
/// The interactive shell owns its terminal: its logs go to a file.
fn setup(cli: &cli::Cli) -> anyhow::Result<(config::Config, logging::Logging)> {
    let config = commands::load_config(cli)?;
    let destination = match (&config.log_file.value, interactive_log(&cli.command)) {
        (Some(path), None) => logging::Destination::File(path.clone()),
        (Some(path), Some(_)) => logging::Destination::LazyFile(path.clone()),
        (None, Some(default)) => default.map_or(logging::Destination::Stderr, logging::Destination::LazyFile),
        (None, None) => logging::Destination::Stderr,
    };
    let logging = logging::init(&config.log_level.value, destination)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    Ok((config, logging))
}

/// For the interactive shell, which owns its terminal: `Some` with its
/// default log file (if it has one). `None` for every other command.
#[expect(clippy::option_option, reason = "is the shell running, and if so, its default log file")]
fn interactive_log(command: &cli::Command) -> Option<Option<std::path::PathBuf>> {
    match command {
        #[cfg(feature = "sql")]
        cli::Command::Shell(_) => Some(repl::log_path()),
        _ => None,
    }
}
