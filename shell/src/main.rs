//! `flowsql`: record every TCP connection begin with eBPF and query the flows
//! with SQL. This binary wires the crates together; each subcommand lives in
//! `commands/`.

mod cli;
mod commands;
mod logging;
mod output;
mod repl;
mod runner;
mod sql_text;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The interactive shell owns its terminal: its logs go to a file.
    let log_file = matches!(cli.command, cli::Command::Shell(_)).then(repl::log_path).flatten();
    init_logging(cli.log_level.as_deref(), log_file);
    match commands::run(cli.command) {
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

/// Logs go to stderr, never stdout (which carries data), or to `file` (the
/// shell's; opened at the first message). The level comes from
/// `--log-level`, else `RUST_LOG`, else `warn`.
fn init_logging(level: Option<&str>, file: Option<std::path::PathBuf>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => builder.with_ansi(false).with_writer(logging::LazyFile::new(path)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}
