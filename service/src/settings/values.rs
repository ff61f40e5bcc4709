//! How the values of settings are read, checked and printed: a [`Kind`] per
//! type of value (a path, a duration, a size in bytes, ...), used by every
//! key of that type in [`super::keys`].
//!
//! A value comes as text (an environment variable, a flag) or as TOML (the
//! file). Each refusal is a reason without the place; the caller adds where
//! the value came from (`PATH: key: reason`, `FLOWSQL_X: reason`,
//! `--flag: reason`).

use std::path::PathBuf;
use std::time::Duration;

/// A value as the file or the environment gives it.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
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

/// A check of a flag's text, with the reason it is refused.
pub type Syntax = fn(&str) -> Result<(), String>;

/// The type of a setting's value: how the file, the environment and a flag
/// give it, and how `flowsql config` prints it.
#[derive(Debug)]
pub struct Kind<T> {
    /// A value of the file or the environment.
    pub read: fn(Raw<'_>) -> Result<T, String>,
    /// A flag's text.
    pub flag: fn(&str) -> Result<T, String>,
    /// What the command line checks itself when it parses a flag (its
    /// error names the flag and its value name), if anything.
    pub syntax: Option<Syntax>,
    /// The value as a TOML value's text; `None` when it is not set.
    pub show: fn(&T) -> Option<String>,
    /// For settings that may be unset: the value an empty environment
    /// variable gives (`FLOWSQL_RETAIN=` keeps everything).
    pub empty: Option<fn() -> T>,
}

fn toml_text(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn show_path(path: &std::path::Path) -> String {
    toml_text(&path.display().to_string())
}

fn show_duration(duration: &Duration) -> String {
    toml_text(&humantime::format_duration(*duration).to_string())
}

/// The data directory: a path, never unset (`None` only without a default).
pub const DATA_DIR: Kind<Option<PathBuf>> = Kind {
    read: |raw| parse_path(raw).map(Some),
    flag: |text| Ok(Some(PathBuf::from(text))),
    syntax: None,
    show: |path| path.as_deref().map(show_path),
    empty: None,
};

/// A path that may be unset.
pub const OPTIONAL_PATH: Kind<Option<PathBuf>> = Kind { empty: Some(|| None), ..DATA_DIR };

/// A duration longer than zero.
pub const DURATION: Kind<Duration> = Kind {
    read: parse_duration_value,
    flag: parse_duration,
    syntax: Some(|text| parse_duration(text).map(drop)),
    show: |duration| Some(show_duration(duration)),
    empty: None,
};

/// A duration longer than zero that may be unset.
pub const OPTIONAL_DURATION: Kind<Option<Duration>> = Kind {
    read: |raw| parse_duration_value(raw).map(Some),
    flag: |text| parse_duration(text).map(Some),
    syntax: Some(|text| parse_duration(text).map(drop)),
    show: |duration| duration.as_ref().map(show_duration),
    empty: Some(|| None),
};

/// The kernel ring buffer's size: a power of two, at least a page.
pub const RING_BUFFER_BYTES: Kind<u32> = Kind {
    read: |raw| check_ring_buffer_bytes(parse_size_value(raw)?),
    flag: |text| check_ring_buffer_bytes(parse_size(text)?),
    syntax: Some(|text| parse_size(text).map(drop)),
    show: |bytes| Some(bytes.to_string()),
    empty: None,
};

/// A count of at least 1.
pub const COUNT: Kind<usize> = Kind {
    read: parse_count_value,
    flag: |text| check_count(text.trim().parse().map_err(|e: std::num::ParseIntError| e.to_string())?),
    syntax: Some(|text| text.trim().parse::<usize>().map(drop).map_err(|e| e.to_string())),
    show: |count| Some(count.to_string()),
    empty: None,
};

/// A memory bound in bytes, at least 1.
pub const MEMORY_BYTES: Kind<usize> = Kind {
    read: |raw| check_memory_bytes(parse_size_value(raw)?),
    flag: |text| check_memory_bytes(parse_size(text)?),
    syntax: Some(|text| parse_size(text).map(drop)),
    show: |bytes| Some(bytes.to_string()),
    empty: None,
};

/// `HOST:PORT` to listen on, or unset.
pub const OPTIONAL_LISTEN_ADDR: Kind<Option<String>> = Kind {
    read: |raw| check_listen_addr(string_value(raw)?).map(Some),
    flag: |text| check_listen_addr(text).map(Some),
    syntax: None,
    show: |addr| addr.as_deref().map(toml_text),
    empty: Some(|| None),
};

/// `HOST:PORT`, always set.
pub const LISTEN_ADDR: Kind<String> = Kind {
    read: |raw| check_listen_addr(string_value(raw)?),
    flag: check_listen_addr,
    syntax: None,
    show: |addr| Some(toml_text(addr)),
    empty: None,
};

/// A secret of at least [`MIN_TOKEN_LEN`] letters, digits, `-`, `_`, `.`,
/// `~` (they need no escaping in an address or a cookie); unset: none.
pub const OPTIONAL_TOKEN: Kind<Option<String>> = Kind {
    read: |raw| check_token(string_value(raw)?).map(Some),
    flag: |text| check_token(text).map(Some),
    syntax: None,
    show: |token| token.as_deref().map(toml_text),
    empty: Some(|| None),
};

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A token as [`OPTIONAL_TOKEN`] takes it.
pub fn check_token(text: &str) -> Result<String, String> {
    let text = text.trim();
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
    if text.len() < MIN_TOKEN_LEN || !text.bytes().all(plain) {
        return Err(format!(
            "is not a token: give at least {MIN_TOKEN_LEN} letters, digits, '-', '_', '.' or '~'"
        ));
    }
    Ok(text.to_owned())
}

/// A log level or a `tracing` filter.
pub const LOG_LEVEL: Kind<String> = Kind {
    read: |raw| check_log_level(string_value(raw)?),
    flag: check_log_level,
    syntax: None,
    show: |level| Some(toml_text(level)),
    empty: None,
};

fn parse_path(raw: Raw<'_>) -> Result<PathBuf, String> {
    match raw.text() {
        Some("") => Err("is empty: give a path".to_owned()),
        Some(text) => Ok(PathBuf::from(text)),
        None => Err(format!("{raw} is not a path (a string)")),
    }
}

/// `5m`, `30d`, `1h 30m`, `90s` (humantime), as a flag gives it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1h, 30d)"))?;
    if duration.is_zero() {
        return Err(format!("{text:?} is not a duration longer than zero"));
    }
    Ok(duration)
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

fn check_memory_bytes(bytes: u64) -> Result<usize, String> {
    let bytes = usize::try_from(bytes).map_err(|_| format!("{bytes} is too large"))?;
    check_count(bytes)
}

/// `HOST:PORT`: an IP address and port, or a host name and port.
pub fn check_listen_addr(text: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn what_the_command_line_checks_is_what_the_flag_reads() {
        // A flag's text passes the command line's check exactly when it is
        // well formed for the kind; the value's own limits are checked after.
        assert_eq!((DURATION.flag)("90s"), Ok(Duration::from_secs(90)));
        assert!(DURATION.syntax.is_some_and(|check| check("soon").is_err()));
        assert_eq!((COUNT.flag)("0"), Err("must be at least 1".to_owned()));
        assert!(COUNT.syntax.is_some_and(|check| check("0").is_ok() && check("many").is_err()));
        assert!((RING_BUFFER_BYTES.flag)("5000").is_err());
        assert!(RING_BUFFER_BYTES.syntax.is_some_and(|check| check("5000").is_ok()));
        assert_eq!((OPTIONAL_DURATION.show)(&None), None);
        assert_eq!((OPTIONAL_DURATION.show)(&Some(Duration::from_secs(5400))), Some("\"1h 30m\"".to_owned()));
    }
}
