//! SIGHUP: what a configuration read again changes in a running capture.
//! [`plan`] compares the configuration in effect with the new one, key by
//! key, and sorts the changes by what each key's [`OnReload`] says; the
//! service applies the plan ([`crate::Supervision`]) and says what it did.

use crate::settings::{Config, Key, OnReload};

/// The changes a reload applies, and those it cannot.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// The new log level, when it changed.
    pub log_level: Option<String>,
    /// The export schedule changed: restart the scheduled export.
    pub export_schedule: bool,
    /// Settings taken as they are.
    pub adopt: Vec<&'static Key>,
    /// Changed settings that take effect only after a restart, by name.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }
}

/// What changes from `old` (in effect) to `new` (just read).
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for key in old.differences(new) {
        match key.on_reload {
            OnReload::LogLevel => plan.log_level = Some(new.log_level.value.clone()),
            OnReload::ExportSchedule => plan.export_schedule = true,
            OnReload::Adopt => plan.adopt.push(key),
            OnReload::Restart => plan.restart.push(key.name),
        }
    }
    plan
}

/// How the log says an adopted setting's new value: `shutdown timeout 12s`.
pub fn adopted(key: &Key, config: &Config) -> String {
    let (_, name) = key.table_and_name();
    let value = config.show(key).0.unwrap_or_else(|| "not set".to_owned());
    format!("{} {}", name.replace('_', " "), value.trim_matches('"'))
}

/// How the log says the export schedule in effect: `export every 5m,
/// retain 30days`.
pub fn export_schedule(config: &Config) -> String {
    let retain = config
        .retain
        .value
        .map_or("everything kept".to_owned(), |r| format!("retain {}", humantime::format_duration(r)));
    format!("export every {}, {retain}", humantime::format_duration(config.export_every.value))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::settings::{KEYS, Setting, Source};

    fn set<T>(value: T) -> Setting<T> {
        Setting { value, source: Source::File }
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let config = Config::defaults();
        assert!(plan(&config, &config.clone()).is_empty());
        // A value from another source is the same value.
        let mut new = config.clone();
        new.export_every = set(config.export_every.value);
        assert!(plan(&config, &new).is_empty());
    }

    #[test]
    fn each_change_goes_where_its_key_says() {
        let old = Config::defaults();
        let mut new = old.clone();
        new.log_level = set("debug".to_owned());
        new.retain = set(Some(Duration::from_secs(86400)));
        new.shutdown_timeout = set(Duration::from_secs(12));
        new.name_cache_max_addresses = set(1000);
        new.cgroup = set(Some(PathBuf::from("/sys/fs/cgroup/web")));
        new.metrics_addr = set(Some("127.0.0.1:9464".to_owned()));
        let plan = plan(&old, &new);
        assert_eq!(plan.log_level.as_deref(), Some("debug"));
        assert!(plan.export_schedule);
        assert_eq!(plan.adopt.iter().map(|k| k.name).collect::<Vec<_>>(), ["capture.shutdown_timeout"]);
        assert_eq!(adopted(plan.adopt[0], &new), "shutdown timeout 12s");
        assert_eq!(
            plan.restart,
            ["capture.cgroup", "capture.metrics_addr", "capture.name_cache.max_addresses"]
        );
        assert_eq!(export_schedule(&new), "export every 5m, retain 1day");
    }

    #[test]
    fn only_what_a_running_capture_can_change_is_applied() {
        // Everything but the log level, the export schedule and the
        // shutdown timeout needs a restart: the data directory, the cgroup,
        // the ring buffer, the metrics address, the name cache, the log file.
        let applied: Vec<&str> =
            KEYS.iter().filter(|k| k.on_reload != OnReload::Restart).map(|k| k.name).collect();
        assert_eq!(
            applied,
            ["capture.export_every", "capture.retain", "capture.shutdown_timeout", "log.level"]
        );
    }
}
