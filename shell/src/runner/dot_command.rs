//! The dot commands of the shell and of scripts (`.mode csv`, `.tables`,
//! ...), as in sqlite3 and DuckDB: one enum parsed with [`FromStr`], and one
//! table, [`COMMANDS`], that names them for parsing, completion and `.help`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use crate::output::OutputMode;

/// A dot command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DotCommand {
    Help,
    Tables,
    /// The columns of one table, or of every table.
    Schema(Option<String>),
    /// Set the output mode, or show it.
    Mode(Option<OutputMode>),
    /// Turn the timer on or off, or show it.
    Timer(Option<bool>),
    /// Send results to a file or back to stdout, or show where they go.
    Output(Option<OutputTarget>),
    /// Send the next result to a file.
    Once(PathBuf),
    /// Print a header row in table, box and csv modes, or show whether.
    Headers(Option<bool>),
    /// Fit tables into a width, or show it.
    MaxWidth(Option<MaxWidth>),
    /// Show at most this many rows of a table (0: all), or show it.
    MaxRows(Option<usize>),
    /// Stop a script at its first error, or go on; or show which.
    Bail(Option<bool>),
    /// Run the SQL and dot commands of a file.
    Read(PathBuf),
    Quit,
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
}

/// How wide a table may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxWidth {
    /// The terminal's width when results go to one; no limit for a file or
    /// a pipe.
    Terminal,
    /// This many characters, wherever results go; 0: no limit.
    Fixed(usize),
}

/// One line of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// The name after the dot.
    pub name: &'static str,
    /// Arguments as `.help` shows them.
    pub arguments: &'static str,
    pub description: &'static str,
}

/// Every dot command, in the order `.help` lists them.
pub const COMMANDS: [CommandSpec; 13] = [
    CommandSpec { name: "help", arguments: "", description: "Show this help" },
    CommandSpec { name: "tables", arguments: "", description: "List the tables" },
    CommandSpec {
        name: "schema",
        arguments: "[TABLE]",
        description: "Show the columns and types of TABLE, or of every table",
    },
    CommandSpec {
        name: "mode",
        arguments: "table|box|markdown|csv|json|ndjson|line",
        description: "Set how results are printed (no argument: show it)",
    },
    CommandSpec {
        name: "headers",
        arguments: "on|off",
        description: "Print header rows in table, box and csv modes",
    },
    CommandSpec {
        name: "maxwidth",
        arguments: "N|auto",
        description: "Fit tables into N characters (0: no limit; auto: the terminal's)",
    },
    CommandSpec {
        name: "maxrows",
        arguments: "N",
        description: "Show at most N rows of a table (0, the default: all)",
    },
    CommandSpec { name: "timer", arguments: "on|off", description: "Print how long each statement took" },
    CommandSpec {
        name: "output",
        arguments: "FILE|stdout",
        description: "Write results to FILE (replaced), or back to stdout",
    },
    CommandSpec { name: "once", arguments: "FILE", description: "Write the next result to FILE (replaced)" },
    CommandSpec {
        name: "bail",
        arguments: "on|off",
        description: "Stop a script at its first error, or go on (a piped shell)",
    },
    CommandSpec {
        name: "read",
        arguments: "FILE",
        description: "Run the SQL statements and dot commands in FILE",
    },
    CommandSpec { name: "quit", arguments: "", description: "Leave the shell (also \\q, .exit, or Ctrl-D)" },
];

/// Whether `line` is a dot command rather than SQL.
pub fn is_dot_command(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with('.') || line.trim_end() == "\\q"
}

/// The text of `.help`.
pub fn help_text() -> String {
    let usage = |spec: &CommandSpec| {
        if spec.arguments.is_empty() {
            format!(".{}", spec.name)
        } else {
            format!(".{} {}", spec.name, spec.arguments)
        }
    };
    let width = COMMANDS.iter().map(|spec| usage(spec).len()).max().unwrap_or(0);
    let mut text = String::new();
    for spec in &COMMANDS {
        let _ = writeln!(text, "{:width$}  {}", usage(spec), spec.description);
    }
    text.push_str(
        "\nSQL statements end with ';' and may span lines. Tab completes keywords, tables,\n\
         columns and functions. Ctrl-C cancels a running query, Ctrl-D quits.\n",
    );
    text
}

impl FromStr for DotCommand {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let line = line.trim();
        let line = line.strip_suffix(';').unwrap_or(line).trim_end();
        if line == "\\q" {
            return Ok(DotCommand::Quit);
        }
        let Some(body) = line.strip_prefix('.') else {
            return Err(format!("{line:?} is not a dot command: type .help for the list"));
        };
        let (name, argument) = match body.split_once(char::is_whitespace) {
            Some((name, rest)) => (name, Some(unquote(rest.trim()))),
            None => (body, None),
        };
        let usage = |name: &str| match COMMANDS.iter().find(|spec| spec.name == name) {
            Some(spec) if !spec.arguments.is_empty() => format!("usage: .{name} {}", spec.arguments),
            _ => format!("usage: .{name} (no arguments)"),
        };
        let command = match (name, argument) {
            ("help", None) => DotCommand::Help,
            ("tables", None) => DotCommand::Tables,
            ("schema", table) => DotCommand::Schema(table.map(str::to_owned)),
            ("mode", None) => DotCommand::Mode(None),
            ("mode", Some(mode)) => DotCommand::Mode(Some(mode.parse()?)),
            ("timer", None) => DotCommand::Timer(None),
            ("timer", Some(state)) => DotCommand::Timer(Some(on_off(state).ok_or_else(|| usage(name))?)),
            ("output", None) => DotCommand::Output(None),
            ("output", Some("stdout")) => DotCommand::Output(Some(OutputTarget::Stdout)),
            ("output", Some(path)) => DotCommand::Output(Some(OutputTarget::File(PathBuf::from(path)))),
            ("read", Some(path)) => DotCommand::Read(PathBuf::from(path)),
            ("once", Some(path)) => DotCommand::Once(PathBuf::from(path)),
            ("headers" | "header", None) => DotCommand::Headers(None),
            ("headers" | "header", Some(state)) => {
                DotCommand::Headers(Some(on_off(state).ok_or_else(|| usage("headers"))?))
            }
            ("bail", None) => DotCommand::Bail(None),
            ("bail", Some(state)) => DotCommand::Bail(Some(on_off(state).ok_or_else(|| usage(name))?)),
            ("maxwidth", None) => DotCommand::MaxWidth(None),
            ("maxwidth", Some(width)) if width.eq_ignore_ascii_case("auto") => {
                DotCommand::MaxWidth(Some(MaxWidth::Terminal))
            }
            ("maxwidth", Some(width)) => {
                DotCommand::MaxWidth(Some(MaxWidth::Fixed(width.parse().map_err(|_| usage(name))?)))
            }
            ("maxrows", None) => DotCommand::MaxRows(None),
            ("maxrows", Some(rows)) => DotCommand::MaxRows(Some(rows.parse().map_err(|_| usage(name))?)),
            ("quit" | "exit", None) => DotCommand::Quit,
            ("help" | "tables" | "read" | "once" | "quit" | "exit", _) => return Err(usage(name)),
            _ => return Err(format!("unknown command \".{name}\": type .help for the list")),
        };
        Ok(command)
    }
}

/// `on`/`off` and their synonyms.
fn on_off(state: &str) -> Option<bool> {
    match state.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// `'a file.sql'` or `"a file.sql"` without its quotes.
fn unquote(text: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            return inner;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<DotCommand, String> {
        line.parse()
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse(".help"), Ok(DotCommand::Help));
        assert_eq!(parse(".tables"), Ok(DotCommand::Tables));
        assert_eq!(parse(".schema"), Ok(DotCommand::Schema(None)));
        assert_eq!(parse(".schema flows"), Ok(DotCommand::Schema(Some("flows".into()))));
        assert_eq!(parse(".mode"), Ok(DotCommand::Mode(None)));
        assert_eq!(parse(".mode csv"), Ok(DotCommand::Mode(Some(OutputMode::Csv))));
        assert_eq!(parse(".mode  NDJSON "), Ok(DotCommand::Mode(Some(OutputMode::Ndjson))));
        assert_eq!(parse(".timer on"), Ok(DotCommand::Timer(Some(true))));
        assert_eq!(parse(".timer off"), Ok(DotCommand::Timer(Some(false))));
        assert_eq!(parse(".timer"), Ok(DotCommand::Timer(None)));
        assert_eq!(parse(".output stdout"), Ok(DotCommand::Output(Some(OutputTarget::Stdout))));
        assert_eq!(
            parse(".output out.csv"),
            Ok(DotCommand::Output(Some(OutputTarget::File("out.csv".into()))))
        );
        assert_eq!(
            parse(".output 'my results.csv'"),
            Ok(DotCommand::Output(Some(OutputTarget::File("my results.csv".into()))))
        );
        assert_eq!(parse(".output"), Ok(DotCommand::Output(None)));
        assert_eq!(parse(".read q.sql"), Ok(DotCommand::Read("q.sql".into())));
        assert_eq!(parse(".once out.csv"), Ok(DotCommand::Once("out.csv".into())));
        assert_eq!(parse(".headers off"), Ok(DotCommand::Headers(Some(false))));
        assert_eq!(parse(".maxwidth 100"), Ok(DotCommand::MaxWidth(Some(MaxWidth::Fixed(100)))));
        assert_eq!(parse(".maxwidth auto"), Ok(DotCommand::MaxWidth(Some(MaxWidth::Terminal))));
        assert_eq!(parse(".maxrows 0"), Ok(DotCommand::MaxRows(Some(0))));
        assert_eq!(parse(".bail on"), Ok(DotCommand::Bail(Some(true))));
        assert_eq!(parse(".mode box"), Ok(DotCommand::Mode(Some(OutputMode::Box))));
        assert_eq!(parse(".quit"), Ok(DotCommand::Quit));
        assert_eq!(parse(".exit"), Ok(DotCommand::Quit));
        assert_eq!(parse("\\q"), Ok(DotCommand::Quit));
        // A habitual semicolon and surrounding spaces are forgiven.
        assert_eq!(parse("  .tables; "), Ok(DotCommand::Tables));
    }

    #[test]
    fn mistakes_say_what_is_expected() {
        assert_eq!(
            parse(".mode xml"),
            Err("unknown output mode \"xml\": use one of table, box, markdown, csv, json, ndjson, line"
                .into())
        );
        assert_eq!(parse(".timer maybe"), Err("usage: .timer on|off".into()));
        assert_eq!(parse(".read"), Err("usage: .read FILE".into()));
        assert_eq!(parse(".tables flows"), Err("usage: .tables (no arguments)".into()));
        assert_eq!(
            parse(".frobnicate"),
            Err("unknown command \".frobnicate\": type .help for the list".into())
        );
        assert!(parse("SELECT 1").is_err());
    }

    #[test]
    fn help_lists_every_command_from_the_table() {
        let help = help_text();
        for spec in &COMMANDS {
            assert!(help.contains(&format!(".{}", spec.name)), "{help}");
            assert!(help.contains(spec.description), "{help}");
        }
        assert!(help.contains(".mode table|box|markdown|csv|json|ndjson|line"));
    }

    #[test]
    fn dot_commands_are_told_from_sql() {
        assert!(is_dot_command(".tables"));
        assert!(is_dot_command("  .mode csv"));
        assert!(is_dot_command("\\q"));
        assert!(!is_dot_command("SELECT 1;"));
        assert!(!is_dot_command("SELECT .5;"));
    }
}
