//! The capture service: everything that keeps `flowsql capture` recording
//! for weeks, and runs `flowsql shell --capture`'s capture beside its
//! queries.
//!
//! ```text
//! settings   one table of keys -> Config (file < environment < flags), `flowsql config`, the flags
//! capture    start: attach, prepare the store, relearn names, writer + export, ready
//!            run:   ring buffer -> FlowSink -> JSON lines / store writer; counters; scrapes; signals
//!            shutdown: detach, drain, commit every row, stop the export (bounded)
//! supervision  service (signals, reload, metrics, privileges, systemd) or embedded (the shell)
//! metrics    Prometheus text over HTTP, the same counters as capture_stats
//! logging    stderr, the journal, or a file reopened on SIGHUP
//! allocator  malloc arenas and trimming after exports
//! ```
//!
//! The crate sits between the libraries of the data path (`flowsql-capture`,
//! `flowsql-store`) and the binary (`flowsql`, the `shell` package), which
//! parses the command line and calls [`run_service`] or
//! [`BackgroundCapture::start`]. It knows nothing of SQL, so the agent build
//! (`--no-default-features`) has it all without DataFusion.

pub mod allocator;
mod background;
pub mod capture;
mod error;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod reload;
pub mod remote;
pub mod settings;
mod shutdown;
mod supervision;
pub mod systemd;

pub use background::BackgroundCapture;
pub use capture::{
    CaptureOptions, CaptureService, CaptureSummary, OpenFlows, OpenFlowsRequests, Stopped, run_service,
};
pub use error::{ServiceError, error_chain};
pub use settings::{Config, ConfigError, Layers};
pub use supervision::{Service, Supervision};
