//! The command line: every subcommand and option, with the help users see.
//!
//! The flags of settings (`--data-dir`, `--export-every`, `--log-level`,
//! ...) are not written here: [`SettingFlags`] makes them from the table of
//! keys ([`flowsql_service::settings::KEYS`]), each with its help, and hands
//! what was given to the configuration loader as text.

use std::marker::PhantomData;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use flowsql_service::settings::{FlagValue, KEYS, Key, Layers, Scope};

#[derive(Debug, Parser)]
#[command(
    name = "flowsql",
    version,
    about = "Record every TCP connection begin with eBPF and query the flows with SQL"
)]
pub struct Cli {
    /// Configuration file (TOML). Default: FLOWSQL_CONFIG, else /etc/flowsql/config.toml if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub global: SettingFlags<GlobalFlags>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line's part of the configuration: the file it names,
    /// and every setting flag given (global and the command's).
    pub fn layers(&self) -> Layers {
        let mut flags = self.global.given.clone();
        flags.extend(self.command.setting_flags());
        Layers { file: self.config.clone(), flags }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record TCP connection begins of the sockets in a cgroup (needs root, or CAP_BPF and CAP_NET_ADMIN).
    Capture(CaptureArgs),
    /// Move recorded flows from the hot tier (SQLite) to Parquet now, or copy a time range out with --to.
    Export(ExportArgs),
    /// Show what the data directory holds: rows per tier, files, bytes, capture counters, last export.
    Status(StatusArgs),
    /// Interactive SQL shell over the flows (statements end with ';', .help for help).
    #[cfg(feature = "sql")]
    Shell(ShellArgs),
    /// Run SQL and print the results, for scripts: exit status 0 only if every statement worked.
    #[cfg(feature = "sql")]
    Query(QueryArgs),
    /// Print the configuration in effect (TOML), with where each value comes from.
    Config(ConfigArgs),
    /// Serve a web view of the flows (service map, timeline, SQL) over HTTP, on loopback by default.
    #[cfg(feature = "sql")]
    Serve(ServeArgs),
}

impl Command {
    /// The setting flags given to this command.
    fn setting_flags(&self) -> Vec<FlagValue> {
        match self {
            Command::Capture(args) => args.settings.given.clone(),
            Command::Config(args) => [args.settings.given.clone(), args.serve.given.clone()].concat(),
            Command::Export(args) => args.store.given.clone(),
            Command::Status(args) => args.store.given.clone(),
            #[cfg(feature = "sql")]
            Command::Shell(args) => [args.store.given.clone(), args.cgroup.given.clone()].concat(),
            #[cfg(feature = "sql")]
            Command::Query(args) => args.store.given.clone(),
            #[cfg(feature = "sql")]
            Command::Serve(args) => {
                [args.store.given.clone(), args.cgroup.given.clone(), args.serve.given.clone()].concat()
            }
        }
    }

    /// Whether this is the interactive shell, which owns its terminal (its
    /// logs go to a file).
    pub fn is_interactive(&self) -> bool {
        match self {
            #[cfg(feature = "sql")]
            Command::Shell(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Print one JSON object per flow on stdout.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many seconds. Default: run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Do not store the flows, only print them (needs --json).
    #[arg(long)]
    pub no_store: bool,

    #[command(flatten)]
    pub settings: SettingFlags<CaptureFlags>,
}

/// `flowsql config`: the settings of `flowsql capture` and `flowsql serve`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub settings: SettingFlags<CaptureFlags>,

    #[command(flatten)]
    pub serve: SettingFlags<ServeFlags>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: SettingFlags<DataDirFlags>,

    /// Instead of moving rows to the cold tier, copy the flows of a time range (both tiers) out: with
    /// --format parquet (the default) into DIR as a self-contained Parquet dataset,
    /// DIR/date=YYYY-MM-DD/hour=HH/part-0.parquet (DIR must be empty or not exist); with --format
    /// csv or ndjson into one new file.
    #[arg(long, value_name = "DIR|FILE")]
    pub to: Option<PathBuf>,

    /// With --to: what to write. A path whose extension says otherwise (out.csv for parquet) is
    /// refused.
    #[arg(long, value_name = "FORMAT", default_value = "parquet", requires = "to")]
    pub format: ExportFormat,

    /// With --to: start of the range (RFC 3339 such as 2026-11-28T07:00:00Z, a date such as
    /// 2026-11-28 meaning its midnight UTC, or a duration such as 2h meaning that long ago).
    #[arg(long, value_name = "TIME", requires = "to")]
    pub since: Option<String>,

    /// End of the range (exclusive), same forms as --since. Without --to: export only rows older
    /// than this. Default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// What `flowsql export --to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A hive-partitioned directory of Parquet files.
    Parquet,
    /// One CSV file, as `flowsql query --format csv` prints (lists as JSON arrays, times in RFC 3339).
    Csv,
    /// One file of JSON objects, one a line, as `flowsql query --format ndjson` prints.
    Ndjson,
}

#[cfg(feature = "sql")]
#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub store: SettingFlags<DataDirFlags>,

    /// Record flows in this process while the shell runs (needs root, or
    /// CAP_BPF and CAP_NET_ADMIN): queries see them at once, before they are
    /// committed. Stored in the data directory like `flowsql capture`.
    #[arg(long)]
    pub capture: bool,

    #[command(flatten)]
    pub cgroup: SettingFlags<ShellCgroupFlag>,

    /// Query the files a fleet uploaded (export.remote) instead of the data directory: s3://BUCKET/PREFIX.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
}

#[cfg(feature = "sql")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: SettingFlags<DataDirFlags>,

    /// Record flows in this process while serving (needs root, or CAP_BPF and
    /// CAP_NET_ADMIN): the timeline and the map follow them as they arrive.
    #[arg(long)]
    pub capture: bool,

    #[command(flatten)]
    pub cgroup: SettingFlags<ShellCgroupFlag>,

    #[command(flatten)]
    pub serve: SettingFlags<ServeFlags>,
}

#[cfg(feature = "sql")]
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// SQL to run: one or more statements separated by ';', and dot commands (.tables, .mode csv, ...)
    /// on lines of their own. Without SQL or -f, standard input is read (when it is not a terminal).
    #[arg(value_name = "SQL", conflicts_with = "file")]
    pub sql: Option<String>,

    /// Run the SQL statements and dot commands (.mode csv, ...) of FILE instead; - reads stdin.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// How to print results.
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: crate::output::OutputMode,

    /// Query the files a fleet uploaded (export.remote) instead of the data directory: s3://BUCKET/PREFIX.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,

    #[command(flatten)]
    pub store: SettingFlags<DataDirFlags>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: SettingFlags<DataDirFlags>,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which keys a group of setting flags holds, and how they appear.
pub trait FlagGroup {
    /// Whether the flags are global (given before or after the command).
    const GLOBAL: bool = false;

    fn includes(key: &Key) -> bool;

    /// The flag as this group shows it (a different help, a requirement).
    fn adapt(arg: Arg) -> Arg {
        arg
    }
}

/// `--log-level`, `--log-file`: every command, anywhere on the line.
#[derive(Debug, Default, Clone)]
pub struct GlobalFlags;

impl FlagGroup for GlobalFlags {
    const GLOBAL: bool = true;

    fn includes(key: &Key) -> bool {
        key.scope == Scope::Global
    }
}

/// `--data-dir`: the commands that open a data directory.
#[derive(Debug, Default, Clone)]
pub struct DataDirFlags;

impl FlagGroup for DataDirFlags {
    fn includes(key: &Key) -> bool {
        key.scope == Scope::DataDir
    }
}

/// `--data-dir` and every capture setting: `flowsql capture` and
/// `flowsql config`.
#[derive(Debug, Default, Clone)]
pub struct CaptureFlags;

impl FlagGroup for CaptureFlags {
    fn includes(key: &Key) -> bool {
        matches!(key.scope, Scope::DataDir | Scope::Capture)
    }
}

/// `--listen`, `--token`, `--max-rows`, `--query-timeout`: `flowsql serve`
/// and `flowsql config`.
#[derive(Debug, Default, Clone)]
pub struct ServeFlags;

impl FlagGroup for ServeFlags {
    fn includes(key: &Key) -> bool {
        key.scope == Scope::Serve
    }
}

/// `flowsql shell --capture --cgroup PATH` (and `flowsql serve`).
#[cfg(feature = "sql")]
#[derive(Debug, Default, Clone)]
pub struct ShellCgroupFlag;

#[cfg(feature = "sql")]
impl FlagGroup for ShellCgroupFlag {
    fn includes(key: &Key) -> bool {
        key.name == "capture.cgroup"
    }

    fn adapt(arg: Arg) -> Arg {
        let help = "With --capture: the cgroup v2 directory to watch. Default: the root of the unified hierarchy, i.e. the whole host.";
        arg.help(help).long_help(help).requires("capture")
    }
}

/// The setting flags of group `G` that the command line gave, as text for
/// the configuration loader (which checks and reports their values).
#[derive(Debug, Clone)]
pub struct SettingFlags<G> {
    pub given: Vec<FlagValue>,
    group: PhantomData<G>,
}

impl<G> Default for SettingFlags<G> {
    fn default() -> Self {
        SettingFlags { given: Vec::new(), group: PhantomData }
    }
}

/// The clap argument of `key`: its long flag, value name and help; the
/// command line checks only what the key's kind says it checks (a
/// duration's syntax), the loader the rest.
fn flag_arg(key: &'static Key, global: bool) -> Arg {
    let fallback = key.fallback_env.map(|v| format!(" (then {v})")).unwrap_or_default();
    let long_help = format!(
        "{}\n\nDefault: {}. Also {}{fallback}, or {} in the configuration file.",
        key.help,
        key.default_doc.replace('`', ""),
        key.env,
        key.name
    );
    Arg::new(key.name)
        .long(key.flag.trim_start_matches("--"))
        .value_name(key.value_name)
        .action(ArgAction::Set)
        .global(global)
        .help(format!("{} Default: {}.", key.help, key.default_doc.replace('`', "")))
        .long_help(long_help)
        .value_parser(move |text: &str| key.check_flag_syntax(text).map(|()| text.to_owned()))
}

impl<G: FlagGroup> Args for SettingFlags<G> {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(KEYS.iter().filter(|key| G::includes(key)).map(|key| G::adapt(flag_arg(key, G::GLOBAL))))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

impl<G: FlagGroup> FromArgMatches for SettingFlags<G> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = SettingFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for key in KEYS.iter().filter(|key| G::includes(key)) {
            if let Ok(Some(text)) = matches.try_get_one::<String>(key.name) {
                self.given.retain(|given| given.key.name != key.name);
                self.given.push(FlagValue { key, text: text.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn every_key_has_its_flag_where_its_scope_says() {
        let command = Cli::command();
        let subcommand = |name: &str| command.find_subcommand(name).expect(name).clone();
        for key in KEYS {
            let long = key.flag.trim_start_matches("--");
            let has = |cmd: &clap::Command| cmd.get_arguments().any(|a| a.get_long() == Some(long));
            match key.scope {
                Scope::Global => assert!(has(&command), "{} is global", key.flag),
                Scope::DataDir => {
                    for name in ["capture", "config", "export", "status"] {
                        assert!(has(&subcommand(name)), "{} on {name}", key.flag);
                    }
                }
                Scope::Capture => {
                    for name in ["capture", "config"] {
                        assert!(has(&subcommand(name)), "{} on {name}", key.flag);
                    }
                    assert!(!has(&subcommand("export")), "{} not on export", key.flag);
                }
                // The agent build has no `serve`: its keys are still read
                // from the file and the environment, and `config` shows them.
                #[cfg(feature = "sql")]
                Scope::Serve => {
                    for name in ["serve", "config"] {
                        assert!(has(&subcommand(name)), "{} on {name}", key.flag);
                    }
                    assert!(!has(&subcommand("capture")), "{} not on capture", key.flag);
                }
                #[cfg(not(feature = "sql"))]
                Scope::Serve => assert!(has(&subcommand("config")), "{} on config", key.flag),
            }
        }
    }

    #[test]
    fn every_key_round_trips_through_its_flag_on_the_command_line() {
        use flowsql_service::settings::Source;
        for key in KEYS {
            let args = ["flowsql", "config", key.flag, key.example];
            let layers = parse(&args).layers();
            let config =
                flowsql_service::Config::load_from(&layers, &[]).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let from_file = flowsql_service::Config::load_from(
                &Layers { file: None, flags: vec![FlagValue { key, text: key.example.to_owned() }] },
                &[],
            )
            .expect("valid");
            assert_eq!(config.show(key), (from_file.show(key).0, &Source::Flag(key.flag)), "{args:?}");
        }
    }

    #[test]
    fn given_flags_reach_the_configuration_as_text() {
        let cli = parse(&[
            "flowsql",
            "--log-level",
            "info",
            "capture",
            "--export-every",
            "90s",
            "--data-dir",
            "/srv/d",
            "--log-file",
            "/tmp/x.log",
        ]);
        let layers = cli.layers();
        let given: Vec<(&str, &str)> = layers.flags.iter().map(|f| (f.key.name, f.text.as_str())).collect();
        assert_eq!(
            given,
            [
                ("log.level", "info"),
                ("log.file", "/tmp/x.log"),
                ("data_dir", "/srv/d"),
                ("capture.export_every", "90s")
            ]
        );
        // A flag's syntax is the command line's to check, naming the flag.
        let error =
            Cli::try_parse_from(["flowsql", "config", "--export-every", "soon"]).expect_err("refused");
        assert!(
            error.to_string().starts_with(
                "error: invalid value 'soon' for '--export-every <DURATION>': \"soon\" is not a duration (e.g. 90s, 5m, 1h, 30d)"
            ),
            "{error}"
        );
        // A capture setting is not a flag of export.
        assert!(Cli::try_parse_from(["flowsql", "export", "--export-every", "5m"]).is_err());
    }

    #[cfg(feature = "sql")]
    #[test]
    fn the_shell_takes_cgroup_only_with_capture() {
        assert!(Cli::try_parse_from(["flowsql", "shell", "--cgroup", "/sys/fs/cgroup/x"]).is_err());
        let cli = parse(&["flowsql", "shell", "--capture", "--cgroup", "/sys/fs/cgroup/x"]);
        assert_eq!(cli.layers().flags.iter().map(|f| f.key.name).collect::<Vec<_>>(), ["capture.cgroup"]);
    }
}
