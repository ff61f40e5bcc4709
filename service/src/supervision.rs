//! Who runs a capture, and what that adds to it.
//!
//! - [`Supervision::Service`] is `flowsql capture`: SIGINT and SIGTERM stop
//!   it within `capture.shutdown_timeout` (a second one at once), SIGHUP
//!   reopens the log file and reloads the configuration ([`crate::reload`]),
//!   metrics are served, capabilities are dropped once the programs are
//!   attached ([`crate::privileges`]), and systemd hears how it goes
//!   ([`crate::systemd`]).
//! - [`Supervision::Embedded`] is `flowsql shell --capture`: the shell
//!   handles Ctrl-C itself (to cancel queries) and stops the capture when it
//!   leaves; it keeps its privileges, serves no metrics and has no bound on
//!   its stop.

use std::path::Path;
use std::time::Duration;

use flowsql_capture::Capture;
use flowsql_store::ScheduledExport;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::capture::export_schedule;
use crate::error::error_chain;
use crate::logging::Logging;
use crate::metrics::http;
use crate::reload;
use crate::settings::{Config, Layers, OnReload};
use crate::{ServiceError, privileges, systemd};

/// What `flowsql capture` adds to a capture (see the module documentation).
#[derive(Debug)]
pub struct Service {
    /// The command line's part of the configuration, to read it again on
    /// SIGHUP.
    layers: Layers,
    logging: Logging,
    /// Installed when the capture starts (they need its runtime).
    signals: Option<Signals>,
}

impl Service {
    pub fn new(layers: Layers, logging: Logging) -> Service {
        Service { layers, logging, signals: None }
    }
}

/// How a capture is run (see the module documentation).
#[derive(Debug)]
pub enum Supervision {
    Service(Service),
    Embedded,
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Stop(&'static str),
    Reload,
}

/// The signals a service handles.
#[derive(Debug)]
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, ServiceError> {
        let handle = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| ServiceError::Signal { signal: name, source })
        };
        Ok(Signals {
            interrupt: handle(SignalKind::interrupt(), "SIGINT")?,
            terminate: handle(SignalKind::terminate(), "SIGTERM")?,
            hangup: handle(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

impl Supervision {
    /// Before anything is attached: installs the signal handlers and binds
    /// the metrics address (a port in use is an error before anything
    /// else, and a privileged port needs the capabilities dropped later).
    pub(crate) async fn prepare(&mut self, config: &Config) -> Result<Option<http::Server>, ServiceError> {
        let Supervision::Service(service) = self else { return Ok(None) };
        service.signals = Some(Signals::new()?);
        match config.metrics_addr.value.as_deref() {
            Some(addr) => Ok(Some(http::Server::bind(addr).await?)),
            None => Ok(None),
        }
    }

    /// Once the programs are attached, before any other thread starts
    /// (threads inherit what is left): a service keeps only the
    /// capabilities that reading the capture's maps needs.
    pub(crate) fn attached(&self, capture: &Capture) {
        if let Supervision::Embedded = self {
            return;
        }
        match privileges::drop_after_attach(&|| capture.counters().is_ok()) {
            Ok(dropped) => tracing::info!(
                kept = %dropped.kept_names(),
                bounding_set = dropped.bounding_set,
                "capabilities dropped: the capture keeps only what reading its maps needs"
            ),
            Err(error) => tracing::warn!(error = %error_chain(&error), "capabilities not dropped"),
        }
    }

    /// Tells systemd (`READY=1`, `STOPPING=1`, ...), as a service.
    pub(crate) fn notify(&self, state: &str) {
        if let Supervision::Service(_) = self {
            systemd::notify(state);
        }
    }

    /// The next signal; never, when embedded.
    pub(crate) async fn next_request(&mut self) -> Request {
        match self {
            Supervision::Service(Service { signals: Some(signals), .. }) => tokio::select! {
                _ = signals.interrupt.recv() => Request::Stop("SIGINT"),
                _ = signals.terminate.recv() => Request::Stop("SIGTERM"),
                _ = signals.hangup.recv() => Request::Reload,
            },
            _ => std::future::pending().await,
        }
    }

    /// The next stop request, ignoring reloads (while stopping).
    pub(crate) async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Request::Stop(signal) = self.next_request().await {
                return signal;
            }
        }
    }

    /// How long a stop may take: a service's `capture.shutdown_timeout`;
    /// embedded, no bound.
    pub(crate) fn stop_bound(&self, config: &Config) -> Option<Duration> {
        match self {
            Supervision::Service(_) => Some(config.shutdown_timeout.value),
            Supervision::Embedded => None,
        }
    }

    /// SIGHUP: reopens the log file, reads the configuration again and
    /// applies what can change without detaching (see [`crate::reload`]);
    /// says what it did, and which changed settings need a restart.
    pub(crate) fn reload(
        &mut self,
        config: &mut Config,
        export: &mut Option<ScheduledExport>,
        store_dir: Option<&Path>,
    ) {
        let Supervision::Service(service) = self else { return };
        systemd::notify_reloading();
        let mut done: Vec<String> = Vec::new();
        match service.logging.reopen() {
            Ok(true) => done.push(format!(
                "reopened the log file {}",
                service.logging.file().unwrap_or(Path::new("")).display()
            )),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "SIGHUP: cannot reopen the log file: logging to the old one")
            }
        }
        match Config::load(&service.layers) {
            Err(error) => tracing::error!(
                error = %error_chain(&error),
                "SIGHUP: the configuration has errors: keeping the one in effect"
            ),
            Ok(new) => service.apply(config, &new, export, store_dir, &mut done),
        }
        if done.is_empty() {
            tracing::info!("SIGHUP: configuration reloaded, nothing changed");
        } else {
            tracing::info!("SIGHUP: {}", done.join("; "));
        }
        systemd::notify("READY=1");
    }
}

impl Service {
    /// Applies what changed from `config` (in effect) to `new`, updating
    /// `config` with what was applied.
    fn apply(
        &self,
        config: &mut Config,
        new: &Config,
        export: &mut Option<ScheduledExport>,
        store_dir: Option<&Path>,
        done: &mut Vec<String>,
    ) {
        let plan = reload::plan(config, new);
        if let Some(level) = &plan.log_level {
            match self.logging.set_level(level) {
                Ok(_) => {
                    done.push(format!("log level {level} (was {})", config.log_level.value));
                    config.adopt_all(OnReload::LogLevel, new);
                }
                Err(error) => tracing::error!(error = %error_chain(&error), "SIGHUP: log level unchanged"),
            }
        }
        if plan.export_schedule && restart_export(new, export, store_dir) {
            done.push(reload::export_schedule(new));
            config.adopt_all(OnReload::ExportSchedule, new);
        }
        for key in &plan.adopt {
            config.adopt(key, new);
            done.push(reload::adopted(key, config));
        }
        if !plan.restart.is_empty() {
            tracing::warn!(
                settings = %plan.restart.join(", "),
                "SIGHUP: these settings changed and take effect only after a restart"
            );
        }
    }
}

/// Replaces the scheduled export with one on `config`'s schedule; returns
/// whether the new schedule is in effect (without a store, there is nothing
/// to restart).
fn restart_export(config: &Config, export: &mut Option<ScheduledExport>, store_dir: Option<&Path>) -> bool {
    let (Some(dir), Some(previous)) = (store_dir, export.take()) else { return true };
    match ScheduledExport::spawn(dir, export_schedule(config)) {
        Ok(next) => {
            *export = Some(next);
            // An export in progress ends at its next batch (its rows stay
            // hot for the new schedule); the two never overlap (they take
            // the export lock). Stopped on a thread of its own: the capture
            // loop goes on meanwhile.
            let stopping =
                std::thread::Builder::new().name("flowsql-export-stop".into()).spawn(move || previous.stop());
            if let Err(error) = stopping {
                // The closure, and the previous schedule with it, was
                // dropped: stopped here.
                tracing::warn!(%error, "SIGHUP: no thread to stop the previous export schedule on");
            }
            true
        }
        Err(error) => {
            *export = Some(previous);
            tracing::error!(error = %error_chain(&error), "SIGHUP: export schedule unchanged");
            false
        }
    }
}
