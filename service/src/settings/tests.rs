//! The settings table at work: every key through every layer, every refusal
//! naming its place, and the README table kept equal to the keys.

use std::time::Duration;

use flowsql_store::test_util::TempDir;

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
}

fn with_file(text: &str) -> Result<Config, ConfigError> {
    let mut config = Config::defaults();
    config.apply_file(Path::new("/etc/flowsql/config.toml"), text)?;
    Ok(config)
}

fn file_error(text: &str) -> String {
    with_file(text).expect_err("must be refused").to_string()
}

fn flag(name: &str, text: &str) -> FlagValue {
    FlagValue { key: keys::key(name).expect("a key"), text: text.to_owned() }
}

/// `key = value` in its table, the value as TOML: a whole number bare,
/// anything else quoted.
fn file_line(key: &Key, text: &str) -> String {
    let (table, name) = key.table_and_name();
    let value = match text.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => toml::Value::String(text.to_owned()).to_string(),
    };
    if table.is_empty() { format!("{name} = {value}\n") } else { format!("[{table}]\n{name} = {value}\n") }
}

#[test]
fn every_key_round_trips_through_file_environment_flag_and_the_printed_configuration() {
    let defaults = Config::defaults();
    for key in KEYS {
        let from_flag = Config::load_from(
            &Layers { file: None, flags: vec![FlagValue { key, text: key.example.to_owned() }] },
            &[],
        )
        .unwrap_or_else(|e| panic!("{}: the example {:?} as a flag: {e}", key.name, key.example));
        let value = from_flag.show(key).0;
        assert_ne!(value, defaults.show(key).0, "{}: the example must differ from the default", key.name);
        assert_eq!(from_flag.show(key).1, &Source::Flag(key.flag), "{}", key.name);
        assert_eq!(from_flag.differences(&defaults).iter().map(|k| k.name).collect::<Vec<_>>(), [key.name]);

        let from_env = Config::load_from(&Layers::default(), &env(&[(key.env, key.example)]))
            .unwrap_or_else(|e| panic!("{}: the example in {}: {e}", key.name, key.env));
        assert_eq!(from_env.show(key), (value.clone(), &Source::Env(key.env)), "{}", key.name);

        let from_file = with_file(&file_line(key, key.example))
            .unwrap_or_else(|e| panic!("{}: the example in the file: {e}", key.name));
        assert_eq!(from_file.show(key), (value.clone(), &Source::File), "{}", key.name);

        // What `flowsql config` prints reads back as the same value.
        let printed = from_flag.to_toml();
        let again = with_file(&printed).unwrap_or_else(|e| panic!("{}: printed:\n{printed}\n{e}", key.name));
        assert_eq!(again.show(key).0, value, "{}: printed:\n{printed}", key.name);
        assert!(again.differences(&from_flag).is_empty(), "{}", key.name);
    }
}

#[test]
fn an_unknown_or_misspelt_key_or_variable_is_refused_by_name() {
    for key in KEYS {
        let (table, name) = key.table_and_name();
        let misspelt = format!("{name}x");
        let line = file_line(key, key.example).replace(&format!("{name} ="), &format!("{misspelt} ="));
        let error = file_error(&line);
        let full = if table.is_empty() { misspelt.clone() } else { format!("{table}.{misspelt}") };
        assert!(
            error.starts_with(&format!("/etc/flowsql/config.toml: {full}: unknown key (known ")),
            "{}: {error}",
            key.name
        );
        assert!(error.contains(name), "the known keys are listed: {error}");

        let variable = format!("{}X", key.env);
        let error = Config::load_from(&Layers::default(), &env(&[(&variable, key.example)]))
            .expect_err("refused")
            .to_string();
        assert!(error.starts_with(&format!("{variable}: unknown environment variable")), "{error}");
        assert!(error.contains(key.env), "the known variables are listed: {error}");
    }
}

#[test]
fn keys_are_spelt_alike_in_the_file_the_environment_and_the_flags() {
    let mut seen = std::collections::BTreeSet::new();
    for key in KEYS {
        // capture.name_cache.max_bytes: FLOWSQL_NAME_CACHE_MAX_BYTES, --name-cache-max-bytes;
        // serve.max_rows (a flag of `flowsql serve`): FLOWSQL_SERVE_MAX_ROWS, --max-rows.
        let base = key.name.strip_prefix("capture.").unwrap_or(key.name).replace('.', "_");
        assert_eq!(key.env, format!("FLOWSQL_{}", base.to_ascii_uppercase()), "{}", key.name);
        let flag = base.strip_prefix("serve_").unwrap_or(&base);
        assert_eq!(key.flag, format!("--{}", flag.replace('_', "-")), "{}", key.name);
        assert!(seen.insert(key.name), "{} declared twice", key.name);
        assert!(!key.help.is_empty() && !key.default_doc.is_empty(), "{} is documented", key.name);
        // A setting that can be unset says what that means; one that does
        // not say so always has a value.
        if (key.ops.unset)(&mut Config::defaults(), Source::Default) {
            assert!(!key.unset_note.is_empty(), "{}: says what unset means", key.name);
        }
        if key.unset_note.is_empty() {
            assert!(Config::defaults().show(key).0.is_some(), "{}: has a default", key.name);
        }
    }
}

#[test]
fn the_readme_table_is_the_keys_table() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let begin = "<!-- settings table: made by markdown_table() in service/src/settings.rs -->\n";
    let end = "<!-- end of settings table -->";
    let start = readme.find(begin).expect("the README marks its settings table") + begin.len();
    let stop = start + readme[start..].find(end).expect("the table's end marker");
    let expected = markdown_table();
    if readme[start..stop] != expected {
        if std::env::var_os("FLOWSQL_TEST_UPDATE_README").is_some() {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[stop..]);
            std::fs::write(&readme_path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md's settings table differs from the keys: run this test with FLOWSQL_TEST_UPDATE_README=1 to rewrite it\n--- README\n{}--- keys\n{expected}",
                &readme[start..stop]
            );
        }
    }
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
        (
            "colour = \"blue\"",
            "colour: unknown key (known at the top level: data_dir, [capture], [serve], [log])",
        ),
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
        ("[capture.name_cache]\nmax_addresses = 0", "capture.name_cache.max_addresses: must be at least 1"),
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
        (("FLOWSQL_EXPORT_EVERY", "soon"), "FLOWSQL_EXPORT_EVERY: \"soon\" is not a duration (e.g. 5m, 1h)"),
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
        let error = config.apply_env(&env(&[(name, value)])).expect_err("must be refused").to_string();
        assert!(error.contains(expected), "{name}={value:?}:\n  got      {error}\n  expected {expected}");
    }
}

#[test]
fn flag_errors_name_the_flag() {
    let cases = [
        (
            flag("capture.metrics_addr", "9464"),
            "--metrics-addr: \"9464\" is not HOST:PORT (e.g. 127.0.0.1:9464",
        ),
        (
            flag("capture.ring_buffer_bytes", "5000"),
            "--ring-buffer-bytes: 5000 is not a valid ring buffer size",
        ),
        (flag("log.level", "loud"), "--log-level: \"loud\" is not a log level or filter"),
        (flag("capture.name_cache.max_addresses", "0"), "--name-cache-max-addresses: must be at least 1"),
    ];
    for (given, expected) in cases {
        let layers = Layers { file: None, flags: vec![given.clone()] };
        let error = Config::load_from(&layers, &[]).expect_err("must be refused").to_string();
        assert!(error.contains(expected), "{given:?}:\n  got      {error}\n  expected {expected}");
    }
}

#[test]
fn an_empty_variable_unsets_an_optional_setting() {
    let mut config = with_file("[capture]\nretain = \"30d\"\nmetrics_addr = \"127.0.0.1:1\"").expect("valid");
    config.apply_env(&env(&[("FLOWSQL_RETAIN", ""), ("FLOWSQL_METRICS_ADDR", "")])).expect("valid");
    assert_eq!(config.retain, Setting { value: None, source: Source::Env("FLOWSQL_RETAIN") });
    assert_eq!(config.metrics_addr.value, None);
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let dir = TempDir::new("config");
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[capture]\nexport_every = \"10m\"\nretain = \"7d\"\nmetrics_addr = \"127.0.0.1:1\"\n[log]\nlevel = \"info\"\n",
    )
    .expect("write");
    let layers =
        Layers { file: Some(file.clone()), flags: vec![flag("capture.metrics_addr", "127.0.0.1:3")] };
    let vars =
        env(&[("FLOWSQL_RETAIN", "30d"), ("FLOWSQL_METRICS_ADDR", "127.0.0.1:2"), ("RUST_LOG", "debug")]);
    let config = Config::load_from(&layers, &vars).expect("valid");
    // Default (nothing sets it), file, environment over file, flag over both.
    assert_eq!(config.shutdown_timeout, Setting { value: DEFAULT_SHUTDOWN_TIMEOUT, source: Source::Default });
    assert_eq!(config.export_every, Setting { value: Duration::from_secs(600), source: Source::File });
    assert_eq!(config.retain.value, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(config.retain.source, Source::Env("FLOWSQL_RETAIN"));
    assert_eq!(config.metrics_addr.value.as_deref(), Some("127.0.0.1:3"));
    assert_eq!(config.metrics_addr.source, Source::Flag("--metrics-addr"));
    // RUST_LOG is environment too; FLOWSQL_LOG_LEVEL beats it, --log-level both.
    assert_eq!(config.log_level.value, "debug");
    let vars = env(&[("RUST_LOG", "debug"), ("FLOWSQL_LOG_LEVEL", "error")]);
    let layers = Layers { file: Some(file.clone()), flags: Vec::new() };
    let config = Config::load_from(&layers, &vars).expect("valid");
    assert_eq!(config.log_level, Setting { value: "error".into(), source: Source::Env("FLOWSQL_LOG_LEVEL") });
    let layers = Layers { file: Some(file.clone()), flags: vec![flag("log.level", "trace")] };
    let config = Config::load_from(&layers, &vars).expect("valid");
    assert_eq!(config.log_level, Setting { value: "trace".into(), source: Source::Flag("--log-level") });
    let printed = config.to_toml();
    assert!(printed.contains("level = \"trace\"  # flag --log-level"), "{printed}");
    assert!(printed.contains(&format!("export_every = \"10m\"  # file {}", file.display())), "{printed}");
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
        printed
            .contains("# cgroup = (not set: the root of the unified hierarchy, the whole host)  # default"),
        "{printed}"
    );
}

#[test]
fn the_tables_of_the_file_come_from_the_keys() {
    assert_eq!(keys::tables(), ["capture", "capture.name_cache", "serve", "log"]);
}
