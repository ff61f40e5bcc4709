//! Why a capture could not start, ran into trouble, or stopped badly.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that ends a capture with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    /// Attaching the programs or reading the ring buffer.
    #[error(transparent)]
    Capture(Box<flowsql_capture::CaptureError>),
    /// The data directory cannot be used at all (a schema newer than this
    /// binary); other store problems are logged and counted, not fatal.
    #[error(transparent)]
    Store(Box<flowsql_store::StoreError>),
    #[error("failed to start the store writer for {}", dir.display())]
    StoreWriter {
        dir: PathBuf,
        #[source]
        source: Box<flowsql_store::StoreError>,
    },
    #[error("failed to start the scheduled export for {}", dir.display())]
    ScheduledExport {
        dir: PathBuf,
        #[source]
        source: Box<flowsql_store::StoreError>,
    },
    #[error(transparent)]
    Metrics(#[from] crate::metrics::http::BindError),
    #[error("failed to handle {signal}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A thread or runtime of the capture's own.
    #[error("failed to start {what}")]
    Start {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the stop took longer than {} (capture.shutdown_timeout): exiting before the store committed every row ({waiting} were waiting when the stop began)",
        humantime::format_duration(*bound)
    )]
    StopTimedOut { bound: Duration, waiting: usize },
    #[error(
        "{signal} again: exiting before the store committed every row ({waiting} were waiting when the stop began)"
    )]
    StoppedAgain { signal: &'static str, waiting: usize },
    #[error("failed to write to stdout")]
    Output(#[source] std::io::Error),
    #[error("the capture thread stopped before attaching")]
    ThreadEnded,
    #[error("the capture thread panicked")]
    ThreadPanicked,
}

impl From<flowsql_capture::CaptureError> for ServiceError {
    fn from(error: flowsql_capture::CaptureError) -> Self {
        ServiceError::Capture(Box::new(error))
    }
}

impl From<flowsql_store::StoreError> for ServiceError {
    fn from(error: flowsql_store::StoreError) -> Self {
        ServiceError::Store(Box::new(error))
    }
}

/// An error and its causes on one line, `outer: inner: root`, except that a
/// message that spans lines (a verifier log) keeps its lines; a cause that
/// only repeats its parent's text is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_reads_on_one_line_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error = ServiceError::Start { what: "the capture thread", source: io };
        assert_eq!(error_chain(&error), "failed to start the capture thread: address in use");
        let timed_out = ServiceError::StopTimedOut { bound: Duration::from_secs(10), waiting: 7 };
        assert_eq!(
            error_chain(&timed_out),
            "the stop took longer than 10s (capture.shutdown_timeout): exiting before the store committed every row (7 were waiting when the stop began)"
        );
    }
}
