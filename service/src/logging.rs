//! Where log messages go, and changing that while running.
//!
//! - **stderr** by default. When stderr is the systemd journal's stream
//!   (`JOURNAL_STREAM` names its device and inode), each line starts with
//!   its syslog priority (`<3>` error ... `<7>` debug/trace) and has no
//!   timestamp: journald stores the priority and adds its own time.
//! - **a file** with `--log-file` / `log.file`, opened at start and opened
//!   again by [`Logging::reopen`] (SIGHUP, after a log rotation).
//! - **the interactive shell's file** (its terminal belongs to the user):
//!   created with its directory only when the first message comes, and
//!   silently nothing if it cannot be opened.
//!
//! The level filter can be replaced while running ([`Logging::set_level`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Mode of a log file flowsql creates: owner read-write, group read (the
/// messages name hosts and addresses).
const LOG_FILE_MODE: u32 = 0o640;

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log level {level:?}")]
    Level {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("cannot change the log level")]
    Reload(#[source] tracing_subscriber::reload::Error),
    #[error("cannot open the log file {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot install the logger")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(level).map_err(|source| LoggingError::Level { level: level.to_owned(), source })
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    /// Opened now; an error if it cannot be.
    File(PathBuf),
    /// Opened at the first message; messages are dropped if it cannot be.
    LazyFile(PathBuf),
}

/// The installed logger: change its level, reopen its file.
#[derive(Debug, Clone)]
pub struct Logging {
    filter: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    file: Option<Arc<LogFile>>,
    level: Arc<Mutex<String>>,
}

impl Logging {
    /// Replaces the level filter; returns whether it changed.
    pub fn set_level(&self, level: &str) -> Result<bool, LoggingError> {
        let mut current = self.level.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == level {
            return Ok(false);
        }
        self.filter.reload(filter(level)?).map_err(LoggingError::Reload)?;
        *current = level.to_owned();
        Ok(true)
    }

    /// The log file, if messages go to one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref().map(LogFile::path)
    }

    /// Opens the log file again (after it was rotated); `Ok(false)` when
    /// messages do not go to a file.
    pub fn reopen(&self) -> io::Result<bool> {
        match &self.file {
            Some(file) => file.reopen().map(|()| true),
            None => Ok(false),
        }
    }
}

/// Installs the global logger.
pub fn init(level: &str, destination: Destination) -> Result<Logging, LoggingError> {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter(level)?);
    let (file, journal) = match destination {
        Destination::Stderr => (None, stderr_is_journal()),
        Destination::File(path) => (Some(Arc::new(LogFile::open(path)?)), false),
        Destination::LazyFile(path) => (Some(Arc::new(LogFile::lazy(path))), false),
    };
    let registry = tracing_subscriber::registry().with(filter);
    match (&file, journal) {
        (Some(file), _) => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(SharedFile(Arc::clone(file))))
            .try_init(),
        (None, true) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JournalFormat::default())
                    .with_writer(io::stderr),
            )
            .try_init(),
        // Colours only on a terminal: not in files stderr is redirected to.
        (None, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
                    .with_writer(io::stderr),
            )
            .try_init(),
    }
    .map_err(LoggingError::Install)?;
    Ok(Logging { filter: handle, file, level: Arc::new(Mutex::new(level.to_owned())) })
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of the stream systemd gave the service.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else { return false };
    let stderr = std::fs::metadata("/proc/self/fd/2");
    matches!(stderr, Ok(meta) if dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()))
}

/// Lines for journald: `<priority>` first, no timestamp, no colours.
#[derive(Debug)]
struct JournalFormat {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat { inner: tracing_subscriber::fmt::format().without_time().with_ansi(false) }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// A log file that can be opened again.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    lazy: bool,
    /// `None`: not opened yet (lazy), or could not be (lazy: dropped).
    file: Mutex<Option<File>>,
    /// A lazy file that failed to open is not tried again for every line.
    tried: std::sync::atomic::AtomicBool,
}

impl LogFile {
    /// Opens `path` (appending, created 0640) now.
    pub fn open(path: PathBuf) -> Result<Self, LoggingError> {
        let file = match open_append(&path) {
            Ok(file) => file,
            Err(source) => return Err(LoggingError::Open { path, source }),
        };
        Ok(LogFile { path, lazy: false, file: Mutex::new(Some(file)), tried: true.into() })
    }

    /// Opens `path` (and its directory) at the first message.
    pub fn lazy(path: PathBuf) -> Self {
        LogFile { path, lazy: true, file: Mutex::new(None), tried: false.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again and writes to the new file from now on.
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.lock() = Some(file);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<File>> {
        // A poisoned lock only means another thread panicked mid-line.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> LogWriter<'_> {
        let mut guard = self.lock();
        if guard.is_none() && self.lazy && !self.tried.swap(true, std::sync::atomic::Ordering::Relaxed) {
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            *guard = open_append(&self.path).ok();
        }
        LogWriter(guard)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(LOG_FILE_MODE).open(path)
}

/// One log event's writer: the locked file, or nothing.
#[derive(Debug)]
pub struct LogWriter<'a>(MutexGuard<'a, Option<File>>);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0 {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0 {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// The [`MakeWriter`] of a shared [`LogFile`].
#[derive(Debug, Clone)]
struct SharedFile(Arc<LogFile>);

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = LogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.writer()
    }
}

#[cfg(test)]
mod tests {
    use flowsql_store::test_util::TempDir;

    use super::*;

    #[test]
    fn a_lazy_file_appears_with_the_first_message() {
        let dir = TempDir::new("log-lazy");
        let path = dir.path().join("state/shell.log");
        let log = LogFile::lazy(path.clone());
        assert!(!path.exists());
        log.writer().write_all(b"one\n").expect("write");
        log.writer().write_all(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
    }

    #[test]
    fn an_unusable_lazy_path_drops_messages() {
        let log = LogFile::lazy(PathBuf::from("/proc/flowsql-cannot-exist/shell.log"));
        log.writer().write_all(b"lost\n").expect("write");
    }

    #[test]
    fn reopening_follows_a_rotation() {
        let temp = TempDir::new("log-rotate");
        let dir = temp.path();
        let path = dir.join("capture.log");
        let log = LogFile::open(path.clone()).expect("open");
        log.writer().write_all(b"before\n").expect("write");
        std::fs::rename(&path, dir.join("capture.log.1")).expect("rotate");
        log.writer().write_all(b"still the old file\n").expect("write");
        log.reopen().expect("reopen");
        log.writer().write_all(b"after\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("capture.log.1")).expect("read"),
            "before\nstill the old file\n"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "no access for others: {mode:o}");
    }

    #[test]
    fn an_unwritable_log_file_is_an_error() {
        let error =
            LogFile::open(PathBuf::from("/proc/flowsql-cannot-exist/capture.log")).expect_err("refused");
        assert!(
            error.to_string().contains("cannot open the log file /proc/flowsql-cannot-exist/capture.log")
        );
    }
}
