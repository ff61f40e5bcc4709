//! The subcommands. Each returns the process exit code, or an error that
//! `main` prints once as `error: ...`.

mod capture;

use std::process::ExitCode;

use crate::cli::Command;

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Capture(args) => capture::run(args),
    }
}
