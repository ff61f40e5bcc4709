//! flowsql's settings and where each comes from: a TOML file (`--config`,
//! `FLOWSQL_CONFIG`, else `/etc/flowsql/config.toml` when it exists),
//! `FLOWSQL_*` environment variables and command-line flags, with one
//! precedence: **flags over environment over file over defaults**.
//!
//! Unknown keys (in the file, and `FLOWSQL_*` variables flowsql does not
//! know) and bad values are errors that name the key and the reason, e.g.
//! `/etc/flowsql/config.toml: capture.export_every: "soon" is not a duration
//! (e.g. 5m, 1h)`. `flowsql config` prints the result with each value's
//! source ([`Config::to_toml`]).
//!
//! ```toml
//! data_dir = "/var/lib/flowsql"
//!
//! [capture]
//! cgroup = "/sys/fs/cgroup"
//! ring_buffer_bytes = "4MiB"
//! export_every = "5m"
//! retain = "30d"
//! metrics_addr = "127.0.0.1:9464"
//! shutdown_timeout = "10s"
//!
//! [capture.name_cache]
//! max_addresses = 65536
//! max_names_per_address = 32
//! max_bytes = "16MiB"
//!
//! [log]
//! level = "info"
//! file = "/var/log/flowsql/capture.log"
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{CaptureSettingsArgs, GlobalArgs};

/// The configuration file read when neither `--config` nor
/// `FLOWSQL_CONFIG` names one, if it exists.
pub const DEFAULT_PATH: &str = "/etc/flowsql/config.toml";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    /// The environment variable's name.
    Env(&'static str),
    /// The flag, `--name`.
    Flag(&'static str),
}

/// A value and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting { value, source: Source::Default }
    }

    fn set(&mut self, value: T, source: Source) {
        *self = Setting { value, source };
    }
}

/// The DNS name cache's limits (see `flowsql_capture::dns::NameCacheConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCacheSettings {
    pub max_addresses: Setting<usize>,
    pub max_names_per_address: Setting<usize>,
    pub max_bytes: Setting<usize>,
}

/// Every setting, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// `None` only when no default can be found (no `HOME`).
    pub data_dir: Setting<Option<PathBuf>>,
    /// `None`: the root of the unified hierarchy (the whole host).
    pub cgroup: Setting<Option<PathBuf>>,
    pub ring_buffer_bytes: Setting<u32>,
    pub export_every: Setting<Duration>,
    /// `None`: keep everything.
    pub retain: Setting<Option<Duration>>,
    /// `HOST:PORT` to serve Prometheus metrics on; `None`: no metrics.
    pub metrics_addr: Setting<Option<String>>,
    /// How long a stop (SIGTERM, SIGINT) may take at most.
    pub shutdown_timeout: Setting<Duration>,
    pub name_cache: NameCacheSettings,
    /// A level or a `tracing` filter (`info`, `flowsql_capture=debug`).
    pub log_level: Setting<String>,
    /// `None`: stderr (the interactive shell: its own log file).
    pub log_file: Setting<Option<PathBuf>>,
    /// Problems that are not errors, to log once logging is set up.
    pub warnings: Vec<String>,
}

/// One key of the configuration, in each of its three spellings.
#[derive(Debug)]
pub struct Key {
    /// In the file: `capture.export_every`.
    pub name: &'static str,
    pub env: &'static str,
    pub flag: &'static str,
    /// Whether it may be unset (an empty environment variable unsets it).
    optional: bool,
}

const fn key(name: &'static str, env: &'static str, flag: &'static str, optional: bool) -> Key {
    Key { name, env, flag, optional }
}

/// Every key, in the order `flowsql config` prints them.
pub const KEYS: &[Key] = &[
    key("data_dir", "FLOWSQL_DATA_DIR", "--data-dir", false),
    key("capture.cgroup", "FLOWSQL_CGROUP", "--cgroup", true),
    key("capture.ring_buffer_bytes", "FLOWSQL_RING_BUFFER_BYTES", "--ring-buffer-bytes", false),
    key("capture.export_every", "FLOWSQL_EXPORT_EVERY", "--export-every", false),
    key("capture.retain", "FLOWSQL_RETAIN", "--retain", true),
    key("capture.metrics_addr", "FLOWSQL_METRICS_ADDR", "--metrics-addr", true),
    key("capture.shutdown_timeout", "FLOWSQL_SHUTDOWN_TIMEOUT", "--shutdown-timeout", false),
    key(
        "capture.name_cache.max_addresses",
        "FLOWSQL_NAME_CACHE_MAX_ADDRESSES",
        "--name-cache-max-addresses",
        false,
    ),
    key(
        "capture.name_cache.max_names_per_address",
        "FLOWSQL_NAME_CACHE_MAX_NAMES_PER_ADDRESS",
        "--name-cache-max-names-per-address",
        false,
    ),
    key("capture.name_cache.max_bytes", "FLOWSQL_NAME_CACHE_MAX_BYTES", "--name-cache-max-bytes", false),
    key("log.level", "FLOWSQL_LOG_LEVEL", "--log-level", false),
    key("log.file", "FLOWSQL_LOG_FILE", "--log-file", true),
];

/// Tables of the file.
const SECTIONS: &[&str] = &["capture", "capture.name_cache", "log"];

/// `FLOWSQL_*` variables that are not settings but are known.
const OTHER_VARIABLES: &[&str] = &["FLOWSQL_CONFIG", "FLOWSQL_HISTORY", "FLOWSQL_SERVE_TOKEN"];
const OTHER_PREFIXES: &[&str] = &["FLOWSQL_BENCH_", "FLOWSQL_TEST_"];

/// The default log level.
pub const DEFAULT_LOG_LEVEL: &str = "warn";

/// The default bound of a stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A value as the file or the environment gives it.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Text(&'a str),
    Toml(&'a toml::Value),
}

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Raw::Text(text) => write!(f, "{text:?}"),
            Raw::Toml(value) => write!(f, "{value}"),
        }
    }
}

impl<'a> Raw<'a> {
    /// The text of a string value.
    fn text(self) -> Option<&'a str> {
        match self {
            Raw::Text(text) => Some(text),
            Raw::Toml(toml::Value::String(text)) => Some(text),
            Raw::Toml(_) => None,
        }
    }
}

fn parse_path(raw: Raw<'_>) -> Result<PathBuf, String> {
    match raw.text() {
        Some("") => Err("is empty: give a path".to_owned()),
        Some(text) => Ok(PathBuf::from(text)),
        None => Err(format!("{raw} is not a path (a string)")),
    }
}

fn parse_duration_value(raw: Raw<'_>) -> Result<Duration, String> {
    let not_a_duration = || format!("{raw} is not a duration (e.g. 5m, 1h)");
    let text = raw.text().ok_or_else(not_a_duration)?;
    let duration = humantime::parse_duration(text.trim()).map_err(|_| not_a_duration())?;
    if duration.is_zero() {
        return Err(format!("{raw} is not a duration longer than zero"));
    }
    Ok(duration)
}

/// A byte count: an integer, or text with a unit (`4MiB`, `512 KiB`, `1G`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a size in bytes (e.g. 4194304, 4MiB)"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size in bytes (e.g. 4194304, 4MiB)")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

fn parse_size_value(raw: Raw<'_>) -> Result<u64, String> {
    match raw {
        Raw::Toml(toml::Value::Integer(n)) => {
            u64::try_from(*n).map_err(|_| format!("{n} is not a size in bytes (it is negative)"))
        }
        _ => match raw.text() {
            Some(text) => parse_size(text),
            None => Err(format!("{raw} is not a size in bytes (e.g. 4194304 or \"4MiB\")")),
        },
    }
}

fn parse_count_value(raw: Raw<'_>) -> Result<usize, String> {
    let count = match raw {
        Raw::Toml(toml::Value::Integer(n)) => usize::try_from(*n).ok(),
        Raw::Text(text) => text.trim().parse().ok(),
        Raw::Toml(_) => None,
    };
    check_count(count.ok_or_else(|| format!("{raw} is not a whole number (e.g. 65536)"))?)
}

fn check_count(count: usize) -> Result<usize, String> {
    if count == 0 { Err("must be at least 1".to_owned()) } else { Ok(count) }
}

/// A ring buffer size the kernel accepts: a power of two, at least a page.
pub fn check_ring_buffer_bytes(bytes: u64) -> Result<u32, String> {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    match u32::try_from(bytes) {
        Ok(size) if bytes.is_power_of_two() && bytes >= page => Ok(size),
        _ => Err(format!(
            "{bytes} is not a valid ring buffer size: it must be a power of two, at least the page size ({page}) and at most 2 GiB"
        )),
    }
}

fn check_max_bytes(bytes: u64) -> Result<usize, String> {
    let bytes = usize::try_from(bytes).map_err(|_| format!("{bytes} is too large"))?;
    check_count(bytes)
}

/// `HOST:PORT`: an IP address and port, or a host name and port.
pub fn check_metrics_addr(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let bad = || format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464, localhost:9464)");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(text.to_owned())
}

/// A level or a `tracing` filter directive.
pub fn check_log_level(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty: give a level (error, warn, info, debug, trace) or a filter".to_owned());
    }
    let refused = |detail: &dyn std::fmt::Display| {
        format!(
            "{text:?} is not a log level or filter (error, warn, info, debug, trace, off, or e.g. flowsql_capture=debug){detail}"
        )
    };
    // A bare word is a level: a filter for one target says its level
    // (`flowsql_capture=debug`), so a misspelt level is not taken for a
    // target name that matches nothing.
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level).trim();
        let is_level = ["error", "warn", "info", "debug", "trace", "off"]
            .iter()
            .any(|known| known.eq_ignore_ascii_case(level));
        if !is_level {
            return Err(refused(&format_args!(": {level:?} is not a level")));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text).map_err(|e| refused(&format_args!(": {e}")))?;
    Ok(text.to_owned())
}

fn string_value(raw: Raw<'_>) -> Result<&str, String> {
    raw.text().ok_or_else(|| format!("{raw} is not a string"))
}

/// Where each layer's error is reported: `PATH: key: reason`,
/// `FLOWSQL_X: reason`, `--flag: reason`.
fn in_file(path: &Path, name: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {name}: {reason}", path.display())
}

impl Config {
    /// Defaults only.
    pub fn defaults() -> Config {
        let cache = flowsql_capture::dns::NameCacheConfig::default();
        Config {
            file: None,
            data_dir: Setting::default(default_data_dir()),
            cgroup: Setting::default(None),
            ring_buffer_bytes: Setting::default(flowsql_capture::loader::DEFAULT_RING_BUFFER_BYTES),
            export_every: Setting::default(flowsql_store::ExportSchedule::default().every),
            retain: Setting::default(None),
            metrics_addr: Setting::default(None),
            shutdown_timeout: Setting::default(DEFAULT_SHUTDOWN_TIMEOUT),
            name_cache: NameCacheSettings {
                max_addresses: Setting::default(cache.max_addresses),
                max_names_per_address: Setting::default(cache.max_names_per_address),
                max_bytes: Setting::default(cache.max_bytes),
            },
            log_level: Setting::default(DEFAULT_LOG_LEVEL.to_owned()),
            log_file: Setting::default(None),
            warnings: Vec::new(),
        }
    }

    /// Reads every layer: the file, this process's environment, the flags.
    /// `data_dir` is the command's `--data-dir`; `capture` its capture
    /// settings, if it has them.
    pub fn load(
        global: &GlobalArgs,
        data_dir: Option<&Path>,
        capture: Option<&CaptureSettingsArgs>,
    ) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                (name.starts_with("FLOWSQL_") || name == "RUST_LOG").then_some((name, value))
            })
            .map(|(name, value)| match value.into_string() {
                Ok(value) => Ok((name, value)),
                Err(_) => Err(anyhow::anyhow!("{name}: is not valid UTF-8")),
            })
            .collect::<anyhow::Result<_>>()?;
        Config::load_from(global, data_dir, capture, &env)
    }

    /// [`load`](Self::load) with the given environment variables.
    pub fn load_from(
        global: &GlobalArgs,
        data_dir: Option<&Path>,
        capture: Option<&CaptureSettingsArgs>,
        env: &[(String, String)],
    ) -> anyhow::Result<Config> {
        let mut config = Config::defaults();
        let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let (path, explicit) = match (&global.config, var("FLOWSQL_CONFIG").filter(|v| !v.is_empty())) {
            (Some(path), _) => (Some(path.clone()), true),
            (None, Some(path)) => (Some(PathBuf::from(path)), true),
            (None, None) => (Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()), false),
        };
        if let Some(path) = path {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    config.apply_file(&path, &text)?;
                    config.file = Some(path);
                }
                Err(e) if !explicit && e.kind() == std::io::ErrorKind::PermissionDenied => {
                    config.warnings.push(format!(
                        "{} is not readable by this user: its settings are not used ({e})",
                        path.display()
                    ));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
        config.apply_env(env)?;
        config.apply_flags(global, data_dir, capture)?;
        Ok(config)
    }

    /// Applies the TOML text of the file `path`.
    fn apply_file(&mut self, path: &Path, text: &str) -> anyhow::Result<()> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end())
        })?;
        self.apply_table(path, &table, "")
    }

    fn apply_table(&mut self, path: &Path, table: &toml::Table, prefix: &str) -> anyhow::Result<()> {
        for (name, value) in table {
            let full = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if SECTIONS.contains(&full.as_str()) {
                match value {
                    toml::Value::Table(inner) => self.apply_table(path, inner, &full)?,
                    _ => return Err(in_file(path, &full, format!("must be a table ([{full}])"))),
                }
            } else if let Some(key) = KEYS.iter().find(|k| k.name == full) {
                self.apply(key, Raw::Toml(value), Source::File)
                    .map_err(|reason| in_file(path, &full, reason))?;
            } else {
                return Err(in_file(path, &full, unknown_key(prefix)));
            }
        }
        Ok(())
    }

    /// Applies the `FLOWSQL_*` variables (and `RUST_LOG`, below
    /// `FLOWSQL_LOG_LEVEL`); rejects unknown `FLOWSQL_*` ones.
    fn apply_env(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        for (name, _) in env {
            let known = name == "RUST_LOG"
                || KEYS.iter().any(|k| k.env == name)
                || OTHER_VARIABLES.contains(&name.as_str())
                || OTHER_PREFIXES.iter().any(|p| name.starts_with(p));
            if !known {
                anyhow::bail!(
                    "{name}: unknown environment variable (flowsql reads {}, FLOWSQL_CONFIG, FLOWSQL_HISTORY and FLOWSQL_SERVE_TOKEN)",
                    KEYS.iter().map(|k| k.env).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if let Some(level) = var("RUST_LOG").filter(|v| !v.trim().is_empty()) {
            let level = check_log_level(level).map_err(|reason| anyhow::anyhow!("RUST_LOG: {reason}"))?;
            self.log_level.set(level, Source::Env("RUST_LOG"));
        }
        for key in KEYS {
            let Some(text) = var(key.env) else { continue };
            if text.is_empty() && key.optional {
                self.unset(key, Source::Env(key.env));
                continue;
            }
            self.apply(key, Raw::Text(text), Source::Env(key.env))
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", key.env))?;
        }
        Ok(())
    }

    fn apply_flags(
        &mut self,
        global: &GlobalArgs,
        data_dir: Option<&Path>,
        capture: Option<&CaptureSettingsArgs>,
    ) -> anyhow::Result<()> {
        let flag = |name: &str| -> Source { Source::Flag(key_named(name).flag) };
        if let Some(dir) = data_dir {
            self.data_dir.set(Some(dir.to_owned()), flag("data_dir"));
        }
        if let Some(level) = &global.log_level {
            let level = check_log_level(level).map_err(|reason| anyhow::anyhow!("--log-level: {reason}"))?;
            self.log_level.set(level, flag("log.level"));
        }
        if let Some(file) = &global.log_file {
            self.log_file.set(Some(file.clone()), flag("log.file"));
        }
        let Some(args) = capture else { return Ok(()) };
        if let Some(dir) = &args.store.data_dir {
            self.data_dir.set(Some(dir.clone()), flag("data_dir"));
        }
        if let Some(cgroup) = &args.cgroup {
            self.cgroup.set(Some(cgroup.clone()), flag("capture.cgroup"));
        }
        if let Some(bytes) = args.ring_buffer_bytes {
            let bytes = check_ring_buffer_bytes(bytes)
                .map_err(|reason| anyhow::anyhow!("--ring-buffer-bytes: {reason}"))?;
            self.ring_buffer_bytes.set(bytes, flag("capture.ring_buffer_bytes"));
        }
        if let Some(every) = args.export_every {
            self.export_every.set(every, flag("capture.export_every"));
        }
        if let Some(retain) = args.retain {
            self.retain.set(Some(retain), flag("capture.retain"));
        }
        if let Some(addr) = &args.metrics_addr {
            let addr =
                check_metrics_addr(addr).map_err(|reason| anyhow::anyhow!("--metrics-addr: {reason}"))?;
            self.metrics_addr.set(Some(addr), flag("capture.metrics_addr"));
        }
        if let Some(timeout) = args.shutdown_timeout {
            self.shutdown_timeout.set(timeout, flag("capture.shutdown_timeout"));
        }
        let counts = [
            (args.name_cache_max_addresses, "capture.name_cache.max_addresses"),
            (args.name_cache_max_names_per_address, "capture.name_cache.max_names_per_address"),
        ];
        for (value, name) in counts {
            if let Some(value) = value {
                let value = check_count(value)
                    .map_err(|reason| anyhow::anyhow!("{}: {reason}", key_named(name).flag))?;
                let setting = if name.ends_with("max_addresses") {
                    &mut self.name_cache.max_addresses
                } else {
                    &mut self.name_cache.max_names_per_address
                };
                setting.set(value, flag(name));
            }
        }
        if let Some(bytes) = args.name_cache_max_bytes {
            let bytes = check_max_bytes(bytes)
                .map_err(|reason| anyhow::anyhow!("--name-cache-max-bytes: {reason}"))?;
            self.name_cache.max_bytes.set(bytes, flag("capture.name_cache.max_bytes"));
        }
        Ok(())
    }

    /// Sets `key` from a value of the file or the environment.
    fn apply(&mut self, key: &Key, raw: Raw<'_>, source: Source) -> Result<(), String> {
        match key.name {
            "data_dir" => self.data_dir.set(Some(parse_path(raw)?), source),
            "capture.cgroup" => self.cgroup.set(Some(parse_path(raw)?), source),
            "capture.ring_buffer_bytes" => {
                let bytes = check_ring_buffer_bytes(parse_size_value(raw)?)?;
                self.ring_buffer_bytes.set(bytes, source);
            }
            "capture.export_every" => self.export_every.set(parse_duration_value(raw)?, source),
            "capture.retain" => self.retain.set(Some(parse_duration_value(raw)?), source),
            "capture.metrics_addr" => {
                self.metrics_addr.set(Some(check_metrics_addr(string_value(raw)?)?), source);
            }
            "capture.shutdown_timeout" => self.shutdown_timeout.set(parse_duration_value(raw)?, source),
            "capture.name_cache.max_addresses" => {
                self.name_cache.max_addresses.set(parse_count_value(raw)?, source)
            }
            "capture.name_cache.max_names_per_address" => {
                self.name_cache.max_names_per_address.set(parse_count_value(raw)?, source);
            }
            "capture.name_cache.max_bytes" => {
                self.name_cache.max_bytes.set(check_max_bytes(parse_size_value(raw)?)?, source);
            }
            "log.level" => self.log_level.set(check_log_level(string_value(raw)?)?, source),
            "log.file" => self.log_file.set(Some(parse_path(raw)?), source),
            other => return Err(format!("{other} is not a setting")),
        }
        Ok(())
    }

    /// Unsets an optional key (an empty environment variable).
    fn unset(&mut self, key: &Key, source: Source) {
        match key.name {
            "capture.cgroup" => self.cgroup.set(None, source),
            "capture.retain" => self.retain.set(None, source),
            "capture.metrics_addr" => self.metrics_addr.set(None, source),
            "log.file" => self.log_file.set(None, source),
            _ => {}
        }
    }

    /// The data directory, or why there is none.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        self.data_dir.value.clone().context(
            "no data directory: pass --data-dir, or set FLOWSQL_DATA_DIR, data_dir in the configuration file, XDG_DATA_HOME or HOME",
        )
    }

    /// The name cache's limits for the assembler.
    pub fn name_cache(&self) -> flowsql_capture::dns::NameCacheConfig {
        flowsql_capture::dns::NameCacheConfig {
            max_addresses: self.name_cache.max_addresses.value,
            max_names_per_address: self.name_cache.max_names_per_address.value,
            max_bytes: self.name_cache.max_bytes.value,
        }
    }

    /// The settings as a TOML file, each value followed by its source;
    /// unset optional values are commented out.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str("# flowsql configuration in effect. Precedence: flags > environment (FLOWSQL_*) > file > defaults.\n");
        match &self.file {
            Some(path) => {
                let _ = writeln!(out, "# file: {}", path.display());
            }
            None => {
                let _ = writeln!(
                    out,
                    "# file: none ({DEFAULT_PATH} does not exist; --config or FLOWSQL_CONFIG name one)"
                );
            }
        }
        out.push('\n');
        let mut section = "";
        for key in KEYS {
            let (table, name) = match key.name.rsplit_once('.') {
                Some((table, name)) => (table, name),
                None => ("", key.name),
            };
            if table != section {
                let _ = write!(out, "\n[{table}]\n");
                section = table;
            }
            let (value, source, unset_note) = self.describe(key.name);
            let source = self.source_text(source);
            match value {
                Some(value) => {
                    let _ = writeln!(out, "{name} = {value}  # {source}");
                }
                None => {
                    let _ = writeln!(out, "# {name} = (not set: {unset_note})  # {source}");
                }
            }
        }
        out
    }

    fn source_text(&self, source: &Source) -> String {
        match source {
            Source::Default => "default".to_owned(),
            Source::File => match &self.file {
                Some(path) => format!("file {}", path.display()),
                None => "file".to_owned(),
            },
            Source::Env(name) => format!("environment {name}"),
            Source::Flag(flag) => format!("flag {flag}"),
        }
    }

    /// The TOML text of a key's value (`None`: unset), its source, and what
    /// unset means.
    fn describe(&self, name: &str) -> (Option<String>, &Source, &'static str) {
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: &Path| text(&p.display().to_string());
        let duration = |d: &Duration| text(&humantime::format_duration(*d).to_string());
        let int = |n: u64| n.to_string();
        match name {
            "data_dir" => (self.data_dir.value.as_deref().map(path), &self.data_dir.source, "no HOME"),
            "capture.cgroup" => (
                self.cgroup.value.as_deref().map(path),
                &self.cgroup.source,
                "the root of the unified hierarchy, the whole host",
            ),
            "capture.ring_buffer_bytes" => {
                (Some(int(u64::from(self.ring_buffer_bytes.value))), &self.ring_buffer_bytes.source, "")
            }
            "capture.export_every" => {
                (Some(duration(&self.export_every.value)), &self.export_every.source, "")
            }
            "capture.retain" => {
                (self.retain.value.as_ref().map(duration), &self.retain.source, "keep everything")
            }
            "capture.metrics_addr" => {
                (self.metrics_addr.value.as_deref().map(text), &self.metrics_addr.source, "no metrics")
            }
            "capture.shutdown_timeout" => {
                (Some(duration(&self.shutdown_timeout.value)), &self.shutdown_timeout.source, "")
            }
            "capture.name_cache.max_addresses" => (
                Some(int(self.name_cache.max_addresses.value as u64)),
                &self.name_cache.max_addresses.source,
                "",
            ),
            "capture.name_cache.max_names_per_address" => (
                Some(int(self.name_cache.max_names_per_address.value as u64)),
                &self.name_cache.max_names_per_address.source,
                "",
            ),
            "capture.name_cache.max_bytes" => {
                (Some(int(self.name_cache.max_bytes.value as u64)), &self.name_cache.max_bytes.source, "")
            }
            "log.level" => (Some(text(&self.log_level.value)), &self.log_level.source, ""),
            "log.file" => (
                self.log_file.value.as_deref().map(path),
                &self.log_file.source,
                "stderr; the interactive shell writes shell.log in its state directory",
            ),
            _ => (None, &Source::Default, ""),
        }
    }
}

fn key_named(name: &str) -> &'static Key {
    KEYS.iter().find(|k| k.name == name).unwrap_or(&KEYS[0])
}

/// Why a key is unknown: the keys its table does know.
fn unknown_key(table: &str) -> String {
    let mut known: Vec<String> = KEYS
        .iter()
        .filter_map(|k| {
            let (parent, name) = k.name.rsplit_once('.').unwrap_or(("", k.name));
            (parent == table).then(|| name.to_owned())
        })
        .collect();
    known.extend(SECTIONS.iter().filter_map(|s| {
        let (parent, _) = s.rsplit_once('.').unwrap_or(("", s));
        (parent == table).then(|| format!("[{s}]"))
    }));
    let place = if table.is_empty() { "at the top level".to_owned() } else { format!("in [{table}]") };
    format!("unknown key (known {place}: {})", known.join(", "))
}

/// `/var/lib/flowsql` as root, else `$XDG_DATA_HOME/flowsql`, else
/// `~/.local/share/flowsql`; `None` without any of them.
fn default_data_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/flowsql"));
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_DATA_HOME")
        .map(|xdg| xdg.join("flowsql"))
        .or_else(|| non_empty("HOME").map(|home| home.join(".local/share/flowsql")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    fn with_file(text: &str) -> anyhow::Result<Config> {
        let mut config = Config::defaults();
        config.apply_file(Path::new("/etc/flowsql/config.toml"), text)?;
        Ok(config)
    }

    fn file_error(text: &str) -> String {
        format!("{:#}", with_file(text).expect_err("must be refused"))
    }

    #[test]
    fn every_key_is_read_from_the_file() {
        let config = with_file(
            r#"
            data_dir = "/srv/flows"
            [capture]
            cgroup = "/sys/fs/cgroup/unified/web"
            ring_buffer_bytes = "8MiB"
            export_every = "1h"
            retain = "30d"
            metrics_addr = "127.0.0.1:9464"
            shutdown_timeout = "20s"
            [capture.name_cache]
            max_addresses = 1000
            max_names_per_address = 4
            max_bytes = 1048576
            [log]
            level = "info"
            file = "/var/log/flowsql.log"
            "#,
        )
        .expect("valid");
        assert_eq!(config.data_dir.value.as_deref(), Some(Path::new("/srv/flows")));
        assert_eq!(config.data_dir.source, Source::File);
        assert_eq!(config.cgroup.value.as_deref(), Some(Path::new("/sys/fs/cgroup/unified/web")));
        assert_eq!(config.ring_buffer_bytes.value, 8 << 20);
        assert_eq!(config.export_every.value, Duration::from_secs(3600));
        assert_eq!(config.retain.value, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.metrics_addr.value.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(config.shutdown_timeout.value, Duration::from_secs(20));
        assert_eq!(config.name_cache().max_addresses, 1000);
        assert_eq!(config.name_cache().max_names_per_address, 4);
        assert_eq!(config.name_cache().max_bytes, 1 << 20);
        assert_eq!(config.log_level.value, "info");
        assert_eq!(config.log_file.value.as_deref(), Some(Path::new("/var/log/flowsql.log")));
    }

    #[test]
    fn file_errors_name_the_file_the_key_and_the_reason() {
        let cases = [
            (
                "[capture]\nexport_every = \"soon\"",
                "/etc/flowsql/config.toml: capture.export_every: \"soon\" is not a duration (e.g. 5m, 1h)",
            ),
            ("[capture]\nexport_every = 300", "capture.export_every: 300 is not a duration (e.g. 5m, 1h)"),
            ("[capture]\nretain = \"0s\"", "capture.retain: \"0s\" is not a duration longer than zero"),
            (
                "[capture]\nexprt_every = \"5m\"",
                "capture.exprt_every: unknown key (known in [capture]: cgroup, ring_buffer_bytes, export_every, retain, metrics_addr, shutdown_timeout, [capture.name_cache])",
            ),
            ("colour = \"blue\"", "colour: unknown key (known at the top level: data_dir, [capture], [log])"),
            ("capture = 1", "capture: must be a table ([capture])"),
            (
                "[capture]\nring_buffer_bytes = 5000",
                "capture.ring_buffer_bytes: 5000 is not a valid ring buffer size: it must be a power of two",
            ),
            (
                "[capture]\nring_buffer_bytes = \"big\"",
                "capture.ring_buffer_bytes: \"big\" is not a size in bytes (e.g. 4194304, 4MiB)",
            ),
            (
                "[capture]\nring_buffer_bytes = -4096",
                "capture.ring_buffer_bytes: -4096 is not a size in bytes (it is negative)",
            ),
            ("[capture]\nring_buffer_bytes = true", "capture.ring_buffer_bytes: true is not a size in bytes"),
            ("[capture]\nmetrics_addr = \"9464\"", "capture.metrics_addr: \"9464\" is not HOST:PORT"),
            ("[capture]\nmetrics_addr = 9464", "capture.metrics_addr: 9464 is not a string"),
            ("[capture]\ncgroup = \"\"", "capture.cgroup: is empty: give a path"),
            ("data_dir = 7", "data_dir: 7 is not a path (a string)"),
            (
                "[capture.name_cache]\nmax_addresses = 0",
                "capture.name_cache.max_addresses: must be at least 1",
            ),
            (
                "[capture.name_cache]\nmax_addresses = \"many\"",
                "capture.name_cache.max_addresses: \"many\" is not a whole number",
            ),
            (
                "[capture.name_cache]\nmax_bytes = \"1 TB\"",
                "capture.name_cache.max_bytes: \"1 TB\" is not a size in bytes",
            ),
            ("[log]\nlevel = \"loud=\"", "log.level: \"loud=\" is not a log level or filter"),
            ("[log]\nlevl = \"info\"", "log.levl: unknown key (known in [log]: level, file)"),
            ("[capture\n", "/etc/flowsql/config.toml: TOML parse error at line 1"),
        ];
        for (text, expected) in cases {
            let error = file_error(text);
            assert!(error.contains(expected), "{text:?}:\n  got      {error}\n  expected {expected}");
        }
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let cases = [
            (
                ("FLOWSQL_EXPORT_EVERY", "soon"),
                "FLOWSQL_EXPORT_EVERY: \"soon\" is not a duration (e.g. 5m, 1h)",
            ),
            (
                ("FLOWSQL_RING_BUFFER_BYTES", "3000"),
                "FLOWSQL_RING_BUFFER_BYTES: 3000 is not a valid ring buffer size",
            ),
            (("FLOWSQL_METRICS_ADDR", "localhost"), "FLOWSQL_METRICS_ADDR: \"localhost\" is not HOST:PORT"),
            (
                ("FLOWSQL_NAME_CACHE_MAX_NAMES_PER_ADDRESS", "-1"),
                "FLOWSQL_NAME_CACHE_MAX_NAMES_PER_ADDRESS: \"-1\" is not a whole number",
            ),
            (("FLOWSQL_LOG_LEVEL", "loud="), "FLOWSQL_LOG_LEVEL: \"loud=\" is not a log level or filter"),
            (("RUST_LOG", "loud="), "RUST_LOG: \"loud=\" is not a log level or filter"),
            (("FLOWSQL_EXPORT_EVERY", ""), "FLOWSQL_EXPORT_EVERY: \"\" is not a duration"),
            (("FLOWSQL_EXPORT_EVRY", "5m"), "FLOWSQL_EXPORT_EVRY: unknown environment variable"),
        ];
        for ((name, value), expected) in cases {
            let mut config = Config::defaults();
            let error =
                format!("{:#}", config.apply_env(&env(&[(name, value)])).expect_err("must be refused"));
            assert!(error.contains(expected), "{name}={value:?}:\n  got      {error}\n  expected {expected}");
        }
    }

    #[test]
    fn an_empty_variable_unsets_an_optional_setting() {
        let mut config =
            with_file("[capture]\nretain = \"30d\"\nmetrics_addr = \"127.0.0.1:1\"").expect("valid");
        config.apply_env(&env(&[("FLOWSQL_RETAIN", ""), ("FLOWSQL_METRICS_ADDR", "")])).expect("valid");
        assert_eq!(config.retain, Setting { value: None, source: Source::Env("FLOWSQL_RETAIN") });
        assert_eq!(config.metrics_addr.value, None);
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("flowsql-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("config.toml");
        std::fs::write(
            &file,
            "[capture]\nexport_every = \"10m\"\nretain = \"7d\"\nmetrics_addr = \"127.0.0.1:1\"\n[log]\nlevel = \"info\"\n",
        )
        .expect("write");
        let global = GlobalArgs { config: Some(file.clone()), ..GlobalArgs::default() };
        let vars =
            env(&[("FLOWSQL_RETAIN", "30d"), ("FLOWSQL_METRICS_ADDR", "127.0.0.1:2"), ("RUST_LOG", "debug")]);
        let flags = CaptureSettingsArgs {
            metrics_addr: Some("127.0.0.1:3".into()),
            ..CaptureSettingsArgs::default()
        };
        let config = Config::load_from(&global, None, Some(&flags), &vars).expect("valid");
        // Default (nothing sets it), file, environment over file, flag over both.
        assert_eq!(config.shutdown_timeout, Setting::default(DEFAULT_SHUTDOWN_TIMEOUT));
        assert_eq!(config.export_every, Setting { value: Duration::from_secs(600), source: Source::File });
        assert_eq!(config.retain.value, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(config.retain.source, Source::Env("FLOWSQL_RETAIN"));
        assert_eq!(config.metrics_addr.value.as_deref(), Some("127.0.0.1:3"));
        assert_eq!(config.metrics_addr.source, Source::Flag("--metrics-addr"));
        // RUST_LOG is environment too; FLOWSQL_LOG_LEVEL beats it, --log-level both.
        assert_eq!(config.log_level.value, "debug");
        let vars = env(&[("RUST_LOG", "debug"), ("FLOWSQL_LOG_LEVEL", "error")]);
        let config = Config::load_from(&global, None, None, &vars).expect("valid");
        assert_eq!(
            config.log_level,
            Setting { value: "error".into(), source: Source::Env("FLOWSQL_LOG_LEVEL") }
        );
        let global = GlobalArgs { log_level: Some("trace".into()), ..global };
        let config = Config::load_from(&global, None, None, &vars).expect("valid");
        assert_eq!(config.log_level, Setting { value: "trace".into(), source: Source::Flag("--log-level") });
        let printed = config.to_toml();
        assert!(printed.contains("level = \"trace\"  # flag --log-level"), "{printed}");
        assert!(printed.contains(&format!("export_every = \"10m\"  # file {}", file.display())), "{printed}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let config = with_file("[capture]\nretain = \"1h 30m\"\nring_buffer_bytes = 65536").expect("valid");
        let printed = config.to_toml();
        let again = with_file(&printed).expect("the printed configuration is valid TOML with known keys");
        assert_eq!(again.retain.value, config.retain.value);
        assert_eq!(again.ring_buffer_bytes.value, 65536);
        assert_eq!(again.export_every.value, config.export_every.value);
        assert!(
            printed.contains(
                "# cgroup = (not set: the root of the unified hierarchy, the whole host)  # default"
            ),
            "{printed}"
        );
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
