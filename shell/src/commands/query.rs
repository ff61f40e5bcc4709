//! `flowsql query`: run SQL from the command line, a file or stdin and print
//! the results, for scripts. Results go to stdout, errors to stderr, and the
//! exit status says whether every statement worked.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::QueryArgs;
use crate::runner::Runner;
use flowsql_query::{Session, SessionOptions};
use flowsql_service::Config;

pub fn run(args: QueryArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = super::existing_store(config)?;
    // Read the script before opening anything: a missing file is the error.
    let script = match &args.file {
        Some(path) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read SQL from stdin")?;
            Some((text, "<stdin>".to_owned()))
        }
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some((text, path.display().to_string()))
        }
        None => None,
    };
    // Cheap: no flow is read until a query runs.
    let session = Session::open(SessionOptions::new(&dir))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(async {
        let mut runner = Runner::new(&session, args.format)?;
        match (script, &args.sql) {
            (Some((text, source)), _) => runner.run_script(&text, &source).await.map(drop),
            (None, Some(sql)) => runner.run_sql(sql).await,
            (None, None) => anyhow::bail!("no SQL to run: pass it as an argument or with -f FILE"),
        }
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `flowsql query ... | head` is not an error.
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
