//! `flowsql`: record every TCP connection begin with eBPF and query the flows
//! with SQL. This binary parses the command line and runs one command of
//! `commands/`; the long-running capture is the `flowsql-service` crate.

mod cli;
mod commands;
mod output;
#[cfg(feature = "sql")]
mod repl;
#[cfg(feature = "sql")]
mod runner;
#[cfg(feature = "sql")]
mod sql_text;
mod units;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match commands::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", flowsql_service::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
