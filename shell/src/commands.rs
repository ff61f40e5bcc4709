//! The subcommands. Each returns the process exit code, or an error that
//! `main` prints once as `error: ...`.

mod capture;
mod data_dir;
mod export;
mod query;
mod shell;
mod status;
mod store_stress;

use std::process::ExitCode;

use crate::cli::Command;

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Capture(args) => capture::run(args),
        Command::Shell(args) => shell::run(args),
        Command::Query(args) => query::run(args),
        Command::Export(args) => export::run(args),
        Command::Status(args) => status::run(args),
        Command::StoreStress(args) => store_stress::run(args),
    }
}
