//! flowsql's settings and where each comes from: a TOML file (`--config`,
//! `FLOWSQL_CONFIG`, else `/etc/flowsql/config.toml` when it exists),
//! `FLOWSQL_*` environment variables and command-line flags, with one
//! precedence: **flags over environment over file over defaults**.
//!
//! Every key is declared once, in [`keys`]. Unknown keys (in the file, and
//! `FLOWSQL_*` variables flowsql does not know) and bad values are errors
//! that name the place, the key and the reason, e.g.
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
//! [serve]
//! listen = "127.0.0.1:8686"
//! max_rows = 10000
//! query_timeout = "30s"
//!
//! [log]
//! level = "info"
//! file = "/var/log/flowsql/capture.log"
//! ```

pub mod keys;
pub mod values;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::{Config, KEYS, Key, OnReload, Scope};
use values::Raw;

/// The configuration file read when neither `--config` nor
/// `FLOWSQL_CONFIG` names one, if it exists.
pub const DEFAULT_PATH: &str = "/etc/flowsql/config.toml";

/// The default log level.
pub const DEFAULT_LOG_LEVEL: &str = "warn";

/// The default bound of a stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `flowsql serve` listens by default (loopback: no token needed).
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8686";

/// Rows a statement of the web view's SQL may return by default.
pub const DEFAULT_SERVE_MAX_ROWS: usize = 10_000;

/// How long a statement of the web view may run by default.
pub const DEFAULT_SERVE_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// `FLOWSQL_*` variables that are not settings but are known.
const OTHER_VARIABLES: &[&str] = &["FLOWSQL_CONFIG", "FLOWSQL_HISTORY"];
const OTHER_PREFIXES: &[&str] = &["FLOWSQL_BENCH_", "FLOWSQL_TEST_"];

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

/// A configuration that cannot be used: where, which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key or value of the file.
    #[error("{}: {key}: {reason}", path.display())]
    File { path: PathBuf, key: String, reason: String },
    /// The file is not TOML.
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An environment variable.
    #[error("{name}: {reason}")]
    Env { name: String, reason: String },
    /// A flag's value.
    #[error("{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error(
        "no data directory: pass --data-dir, or set FLOWSQL_DATA_DIR, data_dir in the configuration file, XDG_DATA_HOME or HOME"
    )]
    NoDataDir,
}

/// A flag given on the command line, with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagValue {
    pub key: &'static Key,
    pub text: String,
}

/// What the command line contributes to the configuration: the file it
/// names and its setting flags. Kept by a service to read the
/// configuration again on SIGHUP, with the same flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    /// `--config PATH`.
    pub file: Option<PathBuf>,
    pub flags: Vec<FlagValue>,
}

impl Config {
    /// Reads every layer: the file, this process's environment, the flags.
    pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                (name.starts_with("FLOWSQL_") || KEYS.iter().any(|k| k.fallback_env == Some(name.as_str())))
                    .then_some((name, value))
            })
            .map(|(name, value)| match value.into_string() {
                Ok(value) => Ok((name, value)),
                Err(_) => Err(ConfigError::Env { name, reason: "is not valid UTF-8".to_owned() }),
            })
            .collect::<Result<_, _>>()?;
        Config::load_from(layers, &env)
    }

    /// [`load`](Self::load) with the given environment variables.
    pub fn load_from(layers: &Layers, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut config = Config::defaults();
        let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let (path, explicit) = match (&layers.file, var("FLOWSQL_CONFIG").filter(|v| !v.is_empty())) {
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
                Err(source) => return Err(ConfigError::Read { path, source }),
            }
        }
        config.apply_env(env)?;
        config.apply_flags(&layers.flags)?;
        Ok(config)
    }

    /// Applies the TOML text of the file `path`.
    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        self.apply_table(path, &table, "", &keys::tables())
    }

    fn apply_table(
        &mut self,
        path: &Path,
        table: &toml::Table,
        prefix: &str,
        tables: &[&str],
    ) -> Result<(), ConfigError> {
        let refused = |key: &str, reason: String| ConfigError::File {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        for (name, value) in table {
            let full = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            if tables.contains(&full.as_str()) {
                match value {
                    toml::Value::Table(inner) => self.apply_table(path, inner, &full, tables)?,
                    _ => return Err(refused(&full, format!("must be a table ([{full}])"))),
                }
            } else if let Some(key) = keys::key(&full) {
                (key.ops.read)(self, Raw::Toml(value), Source::File)
                    .map_err(|reason| refused(&full, reason))?;
            } else {
                return Err(refused(&full, unknown_key(prefix, tables)));
            }
        }
        Ok(())
    }

    /// Applies the `FLOWSQL_*` variables (and each key's fallback, such as
    /// `RUST_LOG` below `FLOWSQL_LOG_LEVEL`); rejects unknown `FLOWSQL_*`
    /// ones.
    fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        for (name, _) in env {
            let known = KEYS.iter().any(|k| k.env == name || k.fallback_env == Some(name.as_str()))
                || OTHER_VARIABLES.contains(&name.as_str())
                || OTHER_PREFIXES.iter().any(|p| name.starts_with(p));
            if !known {
                return Err(ConfigError::Env {
                    name: name.clone(),
                    reason: format!(
                        "unknown environment variable (flowsql reads {}, {})",
                        KEYS.iter().map(|k| k.env).collect::<Vec<_>>().join(", "),
                        OTHER_VARIABLES.join(" and ")
                    ),
                });
            }
        }
        let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        for key in KEYS {
            if let Some(fallback) = key.fallback_env
                && let Some(text) = var(fallback).filter(|v| !v.trim().is_empty())
            {
                (key.ops.read)(self, Raw::Text(text), Source::Env(fallback))
                    .map_err(|reason| ConfigError::Env { name: fallback.to_owned(), reason })?;
            }
            let Some(text) = var(key.env) else { continue };
            if text.is_empty() && (key.ops.unset)(self, Source::Env(key.env)) {
                continue;
            }
            (key.ops.read)(self, Raw::Text(text), Source::Env(key.env))
                .map_err(|reason| ConfigError::Env { name: key.env.to_owned(), reason })?;
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &[FlagValue]) -> Result<(), ConfigError> {
        for FlagValue { key, text } in flags {
            (key.ops.flag)(self, text, Source::Flag(key.flag))
                .map_err(|reason| ConfigError::Flag { flag: key.flag, reason })?;
        }
        Ok(())
    }

    /// The data directory, or why there is none.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        self.data_dir.value.clone().ok_or(ConfigError::NoDataDir)
    }

    /// The name cache's limits for the assembler.
    pub fn name_cache(&self) -> flowsql_capture::dns::NameCacheConfig {
        flowsql_capture::dns::NameCacheConfig {
            max_addresses: self.name_cache_max_addresses.value,
            max_names_per_address: self.name_cache_max_names_per_address.value,
            max_bytes: self.name_cache_max_bytes.value,
        }
    }

    /// The TOML text of `key`'s value (`None`: not set) and its source.
    pub fn show(&self, key: &Key) -> (Option<String>, &Source) {
        (key.ops.show)(self)
    }

    /// The keys whose values differ between this configuration and `other`.
    pub fn differences(&self, other: &Config) -> Vec<&'static Key> {
        KEYS.iter().filter(|key| (key.ops.differs)(self, other)).collect()
    }

    /// Takes `key`'s value and source from `other`.
    pub fn adopt(&mut self, key: &Key, other: &Config) {
        (key.ops.adopt)(self, other);
    }

    /// Takes every setting whose reload does `on_reload` from `other`.
    pub fn adopt_all(&mut self, on_reload: OnReload, other: &Config) {
        for key in KEYS.iter().filter(|key| key.on_reload == on_reload) {
            self.adopt(key, other);
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
            let (table, name) = key.table_and_name();
            if table != section {
                let _ = write!(out, "\n[{table}]\n");
                section = table;
            }
            let (value, source) = self.show(key);
            let source = self.source_text(source);
            match value {
                Some(value) => {
                    let _ = writeln!(out, "{name} = {value}  # {source}");
                }
                None => {
                    let _ = writeln!(out, "# {name} = (not set: {})  # {source}", key.unset_note);
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
}

/// Why a key of `table` (empty: the top level) is unknown: the keys and
/// tables it does have.
fn unknown_key(table: &str, tables: &[&str]) -> String {
    let parent = |name: &str| name.rsplit_once('.').map_or("", |(parent, _)| parent).to_owned();
    let mut known: Vec<String> = KEYS
        .iter()
        .filter_map(|k| {
            let (parent, name) = k.table_and_name();
            (parent == table).then(|| name.to_owned())
        })
        .collect();
    known.extend(tables.iter().filter(|t| parent(t) == table).map(|t| format!("[{t}]")));
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

/// The README's configuration table (between its `settings table` markers),
/// made from [`KEYS`]; a test keeps the README equal to it.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | environment | flag | default | meaning |\n|---|---|---|---|---|\n");
    for key in KEYS {
        let env = match key.fallback_env {
            Some(fallback) => format!("`{}` (then `{fallback}`)", key.env),
            None => format!("`{}`", key.env),
        };
        let _ = writeln!(
            out,
            "| `{}` | {env} | `{} {}` | {} | {} |",
            key.name, key.flag, key.value_name, key.default_doc, key.help
        );
    }
    out
}

#[cfg(test)]
mod tests;
