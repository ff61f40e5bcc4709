//! `flowsql serve`: the web view (`flowsql-web`) over a data directory,
//! optionally with an in-process capture, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};
use flowsql_web::{Access, Limits, ServeOptions, Server};

use flowsql_service::Config;
use flowsql_service::settings::Source;

use super::in_process::InProcessCapture;
use crate::cli::ServeArgs;

pub fn run(args: ServeArgs, config: Config) -> anyhow::Result<ExitCode> {
    // A capture makes its data directory; a view that only reads does not.
    let dir = if args.capture {
        std::path::absolute(config.data_dir()?).context("cannot resolve the data directory")?
    } else {
        super::existing_store(&config)?
    };
    let listen = config.serve_listen.value.clone();
    let token = config.serve_token.value.clone();
    let token_source = config.serve_token.source.clone();
    let limits =
        Limits { max_rows: config.serve_max_rows.value.max(1), timeout: config.serve_query_timeout.value };
    let capture = args.capture.then(|| InProcessCapture::start(config)).transpose()?;
    let mut options = SessionOptions::new(&dir);
    if let Some(capture) = &capture {
        options = capture.session_options(options);
    }
    let session = Arc::new(Session::open(options)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let serve = ServeOptions {
        token: token.clone(),
        limits,
        capturing: capture.is_some(),
        ..ServeOptions::new(listen.clone())
    };
    let result = runtime.block_on(async {
        let server = Server::bind(session, serve).await.with_context(|| format!("cannot serve on {listen}"))?;
        if let Some(capture) = &capture {
            for line in capture.unavailable() {
                println!("{line}");
            }
            println!("capturing TCP connections of {} into {}", capture.watched, dir.display());
        }
        match server.access() {
            Access::Loopback => println!(
                "serving {} at {} (loopback only; from another machine: ssh -L {port}:{}:{port} HOST, then open http://localhost:{port}/)",
                dir.display(),
                server.url(),
                server.address().ip(),
                port = server.address().port(),
            ),
            Access::Token(_) => println!(
                "serving {} at {} (not loopback: requests need this token, {})",
                dir.display(),
                server.url(),
                if token.is_some() {
                    match token_source {
                        Source::Env(variable) => format!("from {variable}"),
                        Source::Flag(flag) => format!("from {flag}"),
                        Source::File | Source::Default => "serve.token from the configuration file".to_owned(),
                    }
                } else {
                    "generated now; set serve.token (FLOWSQL_SERVE_TOKEN) to choose it".to_owned()
                }
            ),
        }
        server.run(stop_signal()).await.context("the web server failed")
    });
    if let Some(capture) = capture {
        capture.stop().context("capture failed")?;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::warn!("cannot watch SIGINT and SIGTERM: stop flowsql serve with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
