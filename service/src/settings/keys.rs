//! Every setting, declared once: its key in the file, its environment
//! variable, its flag, its type and default, what `flowsql config` says
//! when it is not set, what a reload does with a change, and the sentence
//! that documents it. The [`Config`](super::Config) struct, the loader,
//! `flowsql config`, the command line's flags (the binary's `cli.rs` builds
//! them from [`KEYS`]) and the README's configuration table
//! ([`markdown_table`](super::markdown_table), checked by a test) all come
//! from the one list below: a key cannot be in one of them and not in the
//! others.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{self, Kind, Raw, Syntax};
use super::{Setting, Source};

/// Which commands take a setting's flag (every command reads every key
/// from the file and the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every command, before or after its name (`--log-level`).
    Global,
    /// Every command that opens a data directory.
    DataDir,
    /// `flowsql capture` and `flowsql config`.
    Capture,
    /// `flowsql serve` and `flowsql config`.
    Serve,
}

/// What a reload (SIGHUP) does with a changed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReload {
    /// The new log level filters messages from now on.
    LogLevel,
    /// The scheduled export restarts with the new schedule.
    ExportSchedule,
    /// Taken as it is: the value is read when it is needed.
    Adopt,
    /// Needs a restart; the change is logged as such.
    Restart,
}

/// One setting (see the module documentation).
#[derive(Debug)]
pub struct Key {
    /// In the file: `capture.export_every` is `export_every` in `[capture]`.
    pub name: &'static str,
    pub env: &'static str,
    /// A variable read below `env` (`RUST_LOG` below `FLOWSQL_LOG_LEVEL`).
    pub fallback_env: Option<&'static str>,
    /// `--export-every`.
    pub flag: &'static str,
    /// What the flag's value is, in its help: `DURATION`.
    pub value_name: &'static str,
    pub scope: Scope,
    pub on_reload: OnReload,
    /// What the setting is for, one sentence (flag help, README).
    pub help: &'static str,
    /// The default, as the README says it (Markdown).
    pub default_doc: &'static str,
    /// What an unset value means, as `flowsql config` says it (empty for
    /// settings that always have a value).
    pub unset_note: &'static str,
    /// A valid value other than the default, as a flag or a variable
    /// gives it (the tests pass it through the file, the environment and a
    /// flag).
    pub example: &'static str,
    pub(crate) ops: KeyOps,
}

/// A key's typed work on a [`Config`], made by [`settings!`] from the
/// key's field and [`Kind`].
#[derive(Debug)]
pub(crate) struct KeyOps {
    /// Sets the value from the file or the environment.
    pub read: fn(&mut Config, Raw<'_>, Source) -> Result<(), String>,
    /// Sets the value from a flag's text.
    pub flag: fn(&mut Config, &str, Source) -> Result<(), String>,
    /// Unsets the value (an empty environment variable); false when the
    /// setting cannot be unset.
    pub unset: fn(&mut Config, Source) -> bool,
    /// The value's TOML text (`None`: not set) and its source.
    pub show: fn(&Config) -> (Option<String>, &Source),
    /// Whether two configurations differ in this setting.
    pub differs: fn(&Config, &Config) -> bool,
    /// Takes this setting (value and source) from another configuration.
    pub adopt: fn(&mut Config, &Config),
    /// The command line's own check of the flag's text.
    pub syntax: Option<Syntax>,
}

/// A key is its name (names are unique: a test checks).
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.name == other.name
    }
}

impl Eq for Key {}

impl Key {
    /// The flag's text checked by the command line, if it checks it.
    pub fn check_flag_syntax(&self, text: &str) -> Result<(), String> {
        self.ops.syntax.map_or(Ok(()), |check| check(text))
    }

    /// The table part of the name (`capture` of `capture.export_every`,
    /// empty at the top level) and the name in it.
    pub fn table_and_name(&self) -> (&'static str, &'static str) {
        self.name.rsplit_once('.').unwrap_or(("", self.name))
    }
}

/// Declares the settings: for each, the [`Config`] field (type, default,
/// [`Kind`]) and its [`Key`]. Generates `Config`'s fields, its defaults and
/// [`KEYS`], in the order given (the order `flowsql config` prints them).
macro_rules! settings {
    (@key $field:ident, $ty:ty, $kind:path, { $($name:ident: $value:expr,)* }) => {
        Key {
            $($name: $value,)*
            ops: KeyOps {
                read: |config, raw, source| {
                    let kind: &Kind<$ty> = &$kind;
                    config.$field = Setting { value: (kind.read)(raw)?, source };
                    Ok(())
                },
                flag: |config, text, source| {
                    let kind: &Kind<$ty> = &$kind;
                    config.$field = Setting { value: (kind.flag)(text)?, source };
                    Ok(())
                },
                unset: |config, source| {
                    let kind: &Kind<$ty> = &$kind;
                    match kind.empty {
                        Some(empty) => {
                            config.$field = Setting { value: empty(), source };
                            true
                        }
                        None => false,
                    }
                },
                show: |config| {
                    let kind: &Kind<$ty> = &$kind;
                    ((kind.show)(&config.$field.value), &config.$field.source)
                },
                differs: |a, b| a.$field.value != b.$field.value,
                adopt: |to, from| to.$field = from.$field.clone(),
                syntax: $kind.syntax,
            },
        }
    };
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr, $kind:path, $key:tt
    )*) => {
        /// Every setting, resolved, each with where its value came from.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {
            /// The file that was read, if any.
            pub file: Option<PathBuf>,
            /// Problems that are not errors, to log once logging is set up.
            pub warnings: Vec<String>,
            $( $(#[doc = $doc])* pub $field: Setting<$ty>, )*
        }

        impl Config {
            /// Defaults only.
            pub fn defaults() -> Config {
                Config {
                    file: None,
                    warnings: Vec::new(),
                    $( $field: Setting { value: $default, source: Source::Default }, )*
                }
            }
        }

        /// Every key, in the order `flowsql config` prints them.
        pub static KEYS: &[Key] = &[ $( settings!(@key $field, $ty, $kind, $key), )* ];
    };
}

settings! {
    /// `None` only when no default can be found (no `HOME`).
    data_dir: Option<PathBuf> = super::default_data_dir(), values::DATA_DIR, {
        name: "data_dir",
        env: "FLOWSQL_DATA_DIR",
        fallback_env: None,
        flag: "--data-dir",
        value_name: "DIR",
        scope: Scope::DataDir,
        on_reload: OnReload::Restart,
        help: "Data directory (created 0750): flowsql.db and flows/date=YYYY-MM-DD/hour=HH/*.parquet.",
        default_doc: "`/var/lib/flowsql` as root, else `$XDG_DATA_HOME/flowsql` (`~/.local/share/flowsql`)",
        unset_note: "no HOME",
        example: "/srv/flowsql",
    }
    /// `None`: the root of the unified hierarchy (the whole host).
    cgroup: Option<PathBuf> = None, values::OPTIONAL_PATH, {
        name: "capture.cgroup",
        env: "FLOWSQL_CGROUP",
        fallback_env: None,
        flag: "--cgroup",
        value_name: "PATH",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "cgroup v2 directory to watch, with everything below it.",
        default_doc: "the root of the unified hierarchy (found in `/proc/mounts`), i.e. the whole host",
        unset_note: "the root of the unified hierarchy, the whole host",
        example: "/sys/fs/cgroup/unified/web",
    }
    ring_buffer_bytes: u32 = flowsql_capture::loader::DEFAULT_RING_BUFFER_BYTES, values::RING_BUFFER_BYTES, {
        name: "capture.ring_buffer_bytes",
        env: "FLOWSQL_RING_BUFFER_BYTES",
        fallback_env: None,
        flag: "--ring-buffer-bytes",
        value_name: "BYTES",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "Size of the kernel ring buffer in bytes, a power of two (4194304, 4MiB).",
        default_doc: "`4MiB`",
        unset_note: "",
        example: "8MiB",
    }
    export_every: Duration = flowsql_store::ExportSchedule::default().every, values::DURATION, {
        name: "capture.export_every",
        env: "FLOWSQL_EXPORT_EVERY",
        fallback_env: None,
        flag: "--export-every",
        value_name: "DURATION",
        scope: Scope::Capture,
        on_reload: OnReload::ExportSchedule,
        help: "Move closed windows of this length from SQLite to Parquet this often (90s, 5m, 1h).",
        default_doc: "`5m`",
        unset_note: "",
        example: "1h",
    }
    /// `None`: keep everything.
    retain: Option<Duration> = None, values::OPTIONAL_DURATION, {
        name: "capture.retain",
        env: "FLOWSQL_RETAIN",
        fallback_env: None,
        flag: "--retain",
        value_name: "DURATION",
        scope: Scope::Capture,
        on_reload: OnReload::ExportSchedule,
        help: "Remove Parquet partitions older than this (30d, 12h); never touches rows not exported yet.",
        default_doc: "keep everything",
        unset_note: "keep everything",
        example: "30d",
    }
    /// `HOST:PORT` to serve Prometheus metrics on; `None`: no metrics.
    metrics_addr: Option<String> = None, values::OPTIONAL_LISTEN_ADDR, {
        name: "capture.metrics_addr",
        env: "FLOWSQL_METRICS_ADDR",
        fallback_env: None,
        flag: "--metrics-addr",
        value_name: "HOST:PORT",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464 (port 0: any free port, logged).",
        default_doc: "no metrics",
        unset_note: "no metrics",
        example: "127.0.0.1:9464",
    }
    /// How long a stop (SIGTERM, SIGINT) may take at most.
    shutdown_timeout: Duration = super::DEFAULT_SHUTDOWN_TIMEOUT, values::DURATION, {
        name: "capture.shutdown_timeout",
        env: "FLOWSQL_SHUTDOWN_TIMEOUT",
        fallback_env: None,
        flag: "--shutdown-timeout",
        value_name: "DURATION",
        scope: Scope::Capture,
        on_reload: OnReload::Adopt,
        help: "On SIGTERM or SIGINT, exit after this long at most, even if the store has not committed every row (they are then counted in the log).",
        default_doc: "`10s`",
        unset_note: "",
        example: "20s",
    }
    name_cache_max_addresses: usize = flowsql_capture::dns::NameCacheConfig::default().max_addresses, values::COUNT, {
        name: "capture.name_cache.max_addresses",
        env: "FLOWSQL_NAME_CACHE_MAX_ADDRESSES",
        fallback_env: None,
        flag: "--name-cache-max-addresses",
        value_name: "N",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "DNS name cache: addresses held at most.",
        default_doc: "`65536`",
        unset_note: "",
        example: "1000",
    }
    name_cache_max_names_per_address: usize = flowsql_capture::dns::NameCacheConfig::default().max_names_per_address, values::COUNT, {
        name: "capture.name_cache.max_names_per_address",
        env: "FLOWSQL_NAME_CACHE_MAX_NAMES_PER_ADDRESS",
        fallback_env: None,
        flag: "--name-cache-max-names-per-address",
        value_name: "N",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "DNS name cache: names held per address at most.",
        default_doc: "`32`",
        unset_note: "",
        example: "4",
    }
    name_cache_max_bytes: usize = flowsql_capture::dns::NameCacheConfig::default().max_bytes, values::MEMORY_BYTES, {
        name: "capture.name_cache.max_bytes",
        env: "FLOWSQL_NAME_CACHE_MAX_BYTES",
        fallback_env: None,
        flag: "--name-cache-max-bytes",
        value_name: "BYTES",
        scope: Scope::Capture,
        on_reload: OnReload::Restart,
        help: "DNS name cache: memory held at most (16777216, 16MiB).",
        default_doc: "`16MiB`",
        unset_note: "",
        example: "1MiB",
    }
    serve_listen: String = super::DEFAULT_SERVE_LISTEN.to_owned(), values::LISTEN_ADDR, {
        name: "serve.listen",
        env: "FLOWSQL_SERVE_LISTEN",
        fallback_env: None,
        flag: "--listen",
        value_name: "HOST:PORT",
        scope: Scope::Serve,
        on_reload: OnReload::Restart,
        help: "flowsql serve: the address of the web view. A loopback address needs no token; any other needs serve.token or the one printed at start.",
        default_doc: "`127.0.0.1:8686`",
        unset_note: "",
        example: "0.0.0.0:8080",
    }
    /// `None`: a non-loopback listener generates one at start.
    serve_token: Option<String> = None, values::OPTIONAL_TOKEN, {
        name: "serve.token",
        env: "FLOWSQL_SERVE_TOKEN",
        fallback_env: None,
        flag: "--token",
        value_name: "TOKEN",
        scope: Scope::Serve,
        on_reload: OnReload::Restart,
        help: "flowsql serve: the token requests to a non-loopback listener need (at least 16 letters, digits, '-', '_', '.', '~'); prefer the file or the environment to the flag, which other users can see.",
        default_doc: "a random one, generated and printed at start (loopback listeners need none)",
        unset_note: "a random one, printed at start, for a non-loopback listener",
        example: "correct-horse-battery-staple",
    }
    serve_max_rows: usize = super::DEFAULT_SERVE_MAX_ROWS, values::COUNT, {
        name: "serve.max_rows",
        env: "FLOWSQL_SERVE_MAX_ROWS",
        fallback_env: None,
        flag: "--max-rows",
        value_name: "N",
        scope: Scope::Serve,
        on_reload: OnReload::Restart,
        help: "flowsql serve: rows a statement of the SQL view may return at most (a larger result is refused).",
        default_doc: "`10000`",
        unset_note: "",
        example: "500",
    }
    serve_query_timeout: Duration = super::DEFAULT_SERVE_QUERY_TIMEOUT, values::DURATION, {
        name: "serve.query_timeout",
        env: "FLOWSQL_SERVE_QUERY_TIMEOUT",
        fallback_env: None,
        flag: "--query-timeout",
        value_name: "DURATION",
        scope: Scope::Serve,
        on_reload: OnReload::Restart,
        help: "flowsql serve: time a statement of the SQL view (or a view's query) may take at most.",
        default_doc: "`30s`",
        unset_note: "",
        example: "5s",
    }
    /// A level or a `tracing` filter (`info`, `flowsql_capture=debug`).
    log_level: String = super::DEFAULT_LOG_LEVEL.to_owned(), values::LOG_LEVEL, {
        name: "log.level",
        env: "FLOWSQL_LOG_LEVEL",
        fallback_env: Some("RUST_LOG"),
        flag: "--log-level",
        value_name: "LEVEL",
        scope: Scope::Global,
        on_reload: OnReload::LogLevel,
        help: "Log messages of this level and above: error, warn, info, debug, trace, or a filter such as flowsql_capture=debug.",
        default_doc: "`warn`",
        unset_note: "",
        example: "info",
    }
    /// `None`: stderr (the interactive shell: its own log file).
    log_file: Option<PathBuf> = None, values::OPTIONAL_PATH, {
        name: "log.file",
        env: "FLOWSQL_LOG_FILE",
        fallback_env: None,
        flag: "--log-file",
        value_name: "PATH",
        scope: Scope::Global,
        on_reload: OnReload::Restart,
        help: "Write log messages to this file instead of stderr (reopened on SIGHUP, for log rotation).",
        default_doc: "stderr (the journal under systemd); the interactive shell writes `shell.log` in its state directory",
        unset_note: "stderr; the interactive shell writes shell.log in its state directory",
        example: "/var/log/flowsql/capture.log",
    }
}

/// The key named `name` (`capture.export_every`).
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The tables of the file, in the order of their first key: `capture`,
/// `capture.name_cache`, `serve`, `log`.
pub fn tables() -> Vec<&'static str> {
    let mut tables: Vec<&'static str> = Vec::new();
    for key in KEYS {
        let (table, _) = key.table_and_name();
        let mut prefix = table;
        // Every enclosing table too, outermost first.
        let mut chain = Vec::new();
        while !prefix.is_empty() {
            chain.push(prefix);
            prefix = prefix.rsplit_once('.').map_or("", |(outer, _)| outer);
        }
        for table in chain.into_iter().rev() {
            if !tables.contains(&table) {
                tables.push(table);
            }
        }
    }
    tables
}
