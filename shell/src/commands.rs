//! The subcommands. Each returns the process exit code, or an error that
//! `main` prints once as `error: ...`.

mod capture;
mod config;
mod data_dir;
mod export;
mod in_process;
mod query;
mod serve;
mod shell;
mod status;
mod store_stress;

use std::process::ExitCode;

use crate::cli::{CaptureSettingsArgs, Cli, Command};
use crate::config::Config;
use crate::logging::Logging;

pub fn run(cli: Cli, config: Config, logging: Logging) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Capture(args) => capture::run(args, cli.global, config, logging),
        Command::Shell(args) => shell::run(args, &config),
        Command::Query(args) => query::run(args, &config),
        Command::Export(args) => export::run(args, &config),
        Command::Status(args) => status::run(args, &config),
        Command::Config(_) => config::run(&config),
        Command::Serve(args) => serve::run(args, &config),
        Command::StoreStress(args) => store_stress::run(args),
    }
}

/// The configuration of `cli`'s command: its flags over the environment
/// over the configuration file.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let (data_dir, capture) = capture_flags(&cli.command);
    Config::load(&cli.global, data_dir.as_deref(), capture.as_ref())
}

/// The data directory flag and capture settings flags of `command`.
pub fn capture_flags(command: &Command) -> (Option<std::path::PathBuf>, Option<CaptureSettingsArgs>) {
    match command {
        Command::Capture(args) => (None, Some(args.settings.clone())),
        Command::Config(args) => (None, Some(args.settings.clone())),
        // The shell's --capture uses the capture settings; --cgroup is its own.
        Command::Shell(args) => (
            None,
            Some(CaptureSettingsArgs {
                store: args.store.clone(),
                cgroup: args.cgroup.clone(),
                ..CaptureSettingsArgs::default()
            }),
        ),
        // Like the shell's: --capture uses the capture settings.
        Command::Serve(args) => (
            None,
            Some(CaptureSettingsArgs {
                store: args.store.clone(),
                cgroup: args.cgroup.clone(),
                ..CaptureSettingsArgs::default()
            }),
        ),
        Command::Query(args) => (args.store.data_dir.clone(), None),
        Command::Export(args) => (args.store.data_dir.clone(), None),
        Command::Status(args) => (args.store.data_dir.clone(), None),
        Command::StoreStress(args) => (args.store.data_dir.clone(), None),
    }
}
