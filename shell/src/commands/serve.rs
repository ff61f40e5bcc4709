//! `flowsql serve`: the web view (`flowsql-web`) over a data directory,
//! optionally with an in-process capture, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};
use flowsql_web::{Access, Limits, ServeOptions, Server};

use super::in_process::InProcessCapture;
use crate::cli::ServeArgs;
use crate::config::Config;

/// The token of a non-loopback listener, when not generated.
const TOKEN_VARIABLE: &str = "FLOWSQL_SERVE_TOKEN";

pub fn run(args: ServeArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir()?;
    let capture = args.capture.then(|| InProcessCapture::start(config, &dir)).transpose()?;
    let options =
        SessionOptions { live: capture.as_ref().map(|c| Arc::clone(&c.live)), ..SessionOptions::new(&dir) };
    let session = Arc::new(Session::open(options)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let serve = ServeOptions {
        token: std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty()),
        limits: Limits { max_rows: args.max_rows.max(1), timeout: args.query_timeout },
        capturing: capture.is_some(),
        ..ServeOptions::new(args.listen.clone())
    };
    let result = runtime.block_on(async {
        let server = Server::bind(session, serve).await.with_context(|| format!("cannot serve on {}", args.listen))?;
        if let Some(_capture) = &capture {
            println!("capturing TCP connection begins of {} into {}", InProcessCapture::watched(config), dir.display());
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
                if std::env::var(TOKEN_VARIABLE).is_ok_and(|t| !t.is_empty()) {
                    format!("from {TOKEN_VARIABLE}")
                } else {
                    format!("generated now; set {TOKEN_VARIABLE} to choose it")
                }
            ),
        }
        server.run(stop_signal()).await.context("the web server failed")
    });
    if let Some(capture) = capture {
        capture.capture.stop().context("capture failed")?;
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
