//! The subcommands, each in a module of its own that uses the libraries
//! (`flowsql-service`, `flowsql-store`, `flowsql-query`, `flowsql-web`) and
//! nothing of another command (`in_process` is the capture that `shell
//! --capture` and `serve --capture` share). Each returns the process exit code, or an error that
//! `main` prints once as `error: ...`.

mod capture;
mod config;
mod export;
#[cfg(feature = "sql")]
mod fleet;
#[cfg(feature = "sql")]
mod in_process;
#[cfg(feature = "sql")]
mod query;
#[cfg(feature = "sql")]
mod serve;
#[cfg(feature = "sql")]
mod shell;
mod status;

use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_service::Config;
use flowsql_service::logging::{self, Destination};

use crate::cli::{Cli, Command};

/// Reads the configuration (file, environment, flags), installs the logger
/// it asks for and runs the command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let layers = cli.layers();
    let config = Config::load(&layers)?;
    let logging = logging::init(&config.log_level.value, log_destination(&config, &cli.command))?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Command::Capture(args) => capture::run(args, layers, config, logging),
        #[cfg(feature = "sql")]
        Command::Shell(args) => shell::run(args, config),
        #[cfg(feature = "sql")]
        Command::Query(args) => query::run(args, &config),
        Command::Export(args) => export::run(args, &config),
        Command::Status(args) => status::run(args, &config),
        Command::Config(_) => config::run(&config),
        #[cfg(feature = "sql")]
        Command::Serve(args) => serve::run(args, config),
    }
}

/// The data directory of a command that reads a store and must not make
/// one (`query`, `shell`, `status`, `export`): refused, naming the path,
/// unless it holds one.
fn existing_store(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    let dir = config.data_dir()?;
    flowsql_store::DataDir::new(&dir).check_holds_store()?;
    // Queries find Parquet files by absolute paths: `--data-dir data` is
    // made `$PWD/data`.
    std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Where log messages go: stderr (never stdout, which carries data), or
/// the configured file. The interactive shell owns its terminal: its logs
/// go to a file, opened at the first message.
fn log_destination(config: &Config, command: &Command) -> Destination {
    match (&config.log_file.value, command.is_interactive()) {
        (Some(path), false) => Destination::File(path.clone()),
        (Some(path), true) => Destination::LazyFile(path.clone()),
        (None, true) => interactive_log().map_or(Destination::Stderr, Destination::LazyFile),
        (None, false) => Destination::Stderr,
    }
}

/// The interactive shell's default log file.
#[cfg(feature = "sql")]
fn interactive_log() -> Option<std::path::PathBuf> {
    crate::repl::log_path()
}

#[cfg(not(feature = "sql"))]
fn interactive_log() -> Option<std::path::PathBuf> {
    None
}
