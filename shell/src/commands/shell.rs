//! `flowsql shell`: the interactive SQL shell over a data directory; with
//! `--capture`, a capture runs beside it ([`InProcessCapture`]) and its
//! uncommitted rows are part of `flows` and `flow_ends`.
//!
//! With standard input not a terminal (`flowsql shell < file.sql`, a pipe)
//! it behaves as `sqlite3 < file.sql`: no banner, no prompt, no history; it
//! runs every statement and dot command, printing each error on stderr and
//! going on (`.bail on` stops at the first), and exits 1 if any failed.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};
use flowsql_service::Config;

use super::in_process::InProcessCapture;
use crate::cli::ShellArgs;
use crate::output::OutputMode;
use crate::repl::{self, ReplOptions};
use crate::runner::{Runner, is_broken_pipe};

pub fn run(args: ShellArgs, config: Config) -> anyhow::Result<ExitCode> {
    if args.source.is_some() && args.capture {
        anyhow::bail!("--source queries the fleet's uploaded files: it cannot be combined with --capture");
    }
    // A capture makes its data directory; a shell that only reads does not
    // (and one over the fleet's files needs none).
    let dir = if args.capture {
        std::path::absolute(config.data_dir()?).context("cannot resolve the data directory")?
    } else if args.source.is_some() {
        config.data_dir()?
    } else {
        super::existing_store(&config)?
    };
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    let fleet_config = config.clone();
    let capture = args.capture.then(|| InProcessCapture::start(config)).transpose()?;
    let mut options = SessionOptions::new(&dir);
    if let Some(capture) = &capture {
        options = capture.session_options(options);
    }
    let session = match &args.source {
        Some(url) => super::fleet::open(url, &fleet_config)?,
        None => Session::open(options)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let interactive = std::io::stdin().is_terminal();
    if let Some(capture) = &capture {
        let mut lines = capture.unavailable().to_vec();
        lines.push(format!(
            "capturing TCP connections of {} into {}: they appear in `flows` and `flow_ends` at once, open ones in `open_flows`",
            capture.watched,
            dir.display()
        ));
        for line in lines {
            // Above the prompt; with no prompt, off the results.
            if interactive {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    let result = if interactive {
        runtime.block_on(repl::run(&session, ReplOptions::from_env())).map(|()| ExitCode::SUCCESS)
    } else {
        runtime.block_on(run_input(&session))
    };
    if let Some(capture) = capture {
        capture.stop().context("capture failed")?;
    }
    result
}

/// Runs what standard input holds, as sqlite3 does when it is not a
/// terminal: every statement, errors on stderr, exit status 1 after any.
async fn run_input(session: &Session) -> anyhow::Result<ExitCode> {
    let mut script = String::new();
    std::io::stdin().read_to_string(&mut script).context("cannot read standard input")?;
    let mut runner = Runner::new(session, OutputMode::Table)?;
    runner.set_bail(false);
    match runner.run_script(&script, Some("<stdin>")).await {
        Ok(_) if runner.failures() == 0 => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::FAILURE),
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error),
    }
}
