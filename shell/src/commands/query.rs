//! `flowsql query`: run SQL (and dot commands) from the command line, a
//! file or stdin and print the results, for scripts. Results go to stdout,
//! errors to stderr; the first error stops it, and the exit status says
//! whether every statement worked.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::QueryArgs;
use crate::runner::{Runner, is_broken_pipe};
use flowsql_query::{Session, SessionOptions};
use flowsql_service::Config;

pub fn run(args: QueryArgs, config: &Config) -> anyhow::Result<ExitCode> {
    // With --source the fleet's files are queried, not a data directory.
    let dir = if args.source.is_some() { None } else { Some(super::existing_store(config)?) };
    // Read the script before opening anything: a missing file is the error.
    // Errors name the script's source, but not for SQL given as an argument.
    let (script, source) = match (&args.file, args.sql) {
        (Some(path), _) if path.as_os_str() == "-" => (read_stdin()?, Some("<stdin>".to_owned())),
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            (text, Some(path.display().to_string()))
        }
        (None, Some(sql)) => (sql, None),
        (None, None) if std::io::stdin().is_terminal() => anyhow::bail!(
            "no SQL to run: give it as an argument (flowsql query \"SELECT ...\"), with -f FILE, or on standard input"
        ),
        (None, None) => (read_stdin()?, Some("<stdin>".to_owned())),
    };
    // Cheap: no flow is read until a query runs.
    let session = match (&args.source, &dir) {
        (Some(url), _) => super::fleet::open(url, config)?,
        (None, Some(dir)) => Session::open(SessionOptions::new(dir))?,
        (None, None) => anyhow::bail!("no data directory to query"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(async {
        let mut runner = Runner::new(&session, args.format)?;
        runner.run_script(&script, source.as_deref()).await?;
        // With `.bail off` errors were printed and the script went on.
        Ok(runner.failures())
    });
    match result {
        Ok(0) => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        // `flowsql query ... | head` is not an error.
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error),
    }
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read SQL from stdin")?;
    Ok(text)
}
