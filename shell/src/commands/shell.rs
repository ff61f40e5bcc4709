//! `flowsql shell`: the interactive SQL shell over a data directory.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};

use crate::cli::ShellArgs;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let dir = super::data_dir::resolve(&args.store)?;
    let session = open_session(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(repl::run(&session, ReplOptions::from_env()))?;
    Ok(ExitCode::SUCCESS)
}

/// Opens `dir` for queries. Cheap: no flow is read until a query runs.
pub fn open_session(dir: &Path) -> anyhow::Result<Session> {
    Ok(Session::open(SessionOptions::new(dir))?)
}
