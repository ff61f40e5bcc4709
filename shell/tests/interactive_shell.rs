//! `flowsql shell` driven through a pseudo-terminal, as a person would use
//! it: multi-line statements, errors, dot commands, tab completion, Ctrl-C,
//! Ctrl-D, history across restarts, and hostile strings kept off the
//! terminal.

#[path = "support/fixture.rs"]
mod fixture;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fixture::{Fixture, fixture};
use rexpect::session::{PtySession, spawn_command};

const PROMPT: &str = "flowsql> ";
const CONTINUATION: &str = "   ...> ";

/// A data directory and a history file for one test.
struct Setup {
    data: Fixture,
    history: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let data = fixture(name);
        let history = data.path().join("state/history");
        Setup { data, history }
    }

    /// Starts the shell and waits for its first prompt.
    fn start(&self) -> PtySession {
        start_shell(self.data.path(), &self.history)
    }
}

fn start_shell(data: &Path, history: &Path) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowsql"));
    command
        .arg("shell")
        .arg("--data-dir")
        .arg(data)
        .env("FLOWSQL_HISTORY", history)
        .env("FLOWSQL_LOG_FILE", data.join("shell.log"))
        .env("TERM", "xterm")
        .env_remove("RUST_LOG");
    let mut shell = spawn_command(command, Some(15_000)).expect("start flowsql shell");
    shell.exp_string(PROMPT).expect("the first prompt");
    shell
}

/// Sends `line`, waits for `end` in what the shell prints, then for the
/// next prompt; returns the output up to and including `end`. (Waiting for
/// the prompt alone is not enough: rustyline redraws the prompt and the line
/// while it is typed.)
fn run(shell: &mut PtySession, line: &str, end: &str) -> String {
    shell.send_line(line).expect("send a line");
    let output = shell.exp_string(end).unwrap_or_else(|e| panic!("{end:?} after {line:?}: {e}"));
    shell.exp_string(PROMPT).expect("the prompt after the output");
    output + end
}

/// Sends a command that prints nothing and waits until it is done.
fn quietly(shell: &mut PtySession, line: &str) {
    shell.send_line(line).expect("send a line");
    run(shell, ".timer", "timer: ");
}

/// Types `text` without Enter.
fn type_text(shell: &mut PtySession, text: &str) {
    shell.send(text).expect("send");
    shell.flush().expect("flush");
}

#[test]
fn a_statement_can_span_lines() {
    let setup = Setup::new("pty-multiline");
    let mut shell = setup.start();
    shell.send_line("SELECT dstPort,").expect("send");
    shell.exp_string(CONTINUATION).expect("continuation prompt");
    shell.send_line("       count(*) AS n").expect("send");
    shell.exp_string(CONTINUATION).expect("continuation prompt");
    let output = run(&mut shell, "  FROM flows GROUP BY dstPort ORDER BY dstPort;", "(3 rows)");
    assert!(output.contains("|     443 | 3 |"), "{output}");
}

#[test]
fn an_error_prints_one_line_and_the_shell_goes_on() {
    let setup = Setup::new("pty-error");
    let mut shell = setup.start();
    run(
        &mut shell,
        "SELEC 1;",
        "error: syntax error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\r\n",
    );
    run(
        &mut shell,
        "SELECT count(*) AS flows FROM flowz;",
        "error: Error during planning: table 'datafusion.public.flowz' not found at Line: 1, Column: 31\r\n",
    );
    let output = run(&mut shell, "SELECT count(*) AS flows FROM flows;", "(1 row)");
    assert!(output.contains("|     5 |"), "{output}");
}

#[test]
fn tables_schema_and_help() {
    let setup = Setup::new("pty-dot");
    let mut shell = setup.start();
    let output = run(&mut shell, ".tables", "(5 rows)");
    for table in ["flows", "flow_ends", "open_flows", "domains", "capture_stats"] {
        assert!(output.contains(&format!("| {table} ")), "{output}");
    }
    let output = run(&mut shell, ".schema flow_ends", "(29 rows)");
    assert!(output.contains("| endReason "), "{output}");
    let output = run(&mut shell, ".schema flows", "(17 rows)");
    assert!(output.contains("| timestamp           | timestamp[ns, UTC] |"), "{output}");
    assert!(output.contains("| dstDomains          | list<string>       |"), "{output}");
    run(
        &mut shell,
        ".schema nope",
        "error: no table named \"nope\": the tables are flows, flow_ends, open_flows, domains, capture_stats",
    );
    run(&mut shell, ".help", ".mode table|csv|json|ndjson|line");
    run(&mut shell, ".bogus", "error: unknown command \".bogus\": type .help for the list");
}

#[test]
fn mode_csv_and_several_statements_on_one_line() {
    let setup = Setup::new("pty-csv");
    let mut shell = setup.start();
    quietly(&mut shell, ".mode csv");
    run(
        &mut shell,
        "SELECT dstPort, dstDomains FROM flows ORDER BY timestamp LIMIT 1; SELECT 2 AS two;",
        "dstPort,dstDomains\r\n443,\"[\"\"www.example.com\"\",\"\"example.com\"\"]\"\r\ntwo\r\n2\r\n",
    );
    run(&mut shell, ".mode", "mode: csv");
}

#[test]
fn tab_completes_a_column_name() {
    let setup = Setup::new("pty-complete");
    let mut shell = setup.start();
    type_text(&mut shell, "SELECT dstDom");
    type_text(&mut shell, "\t");
    shell.exp_string("ains").expect("the completed name");
    let output = run(&mut shell, " FROM flows ORDER BY timestamp LIMIT 1;", "(1 row)");
    assert!(output.contains("| dstDomains "), "{output}");
    assert!(output.contains("| [www.example.com, example.com] |"), "{output}");
}

#[test]
fn ctrl_c_cancels_a_running_query_and_clears_a_line() {
    let setup = Setup::new("pty-ctrl-c");
    let mut shell = setup.start();
    // Minutes of work if left alone.
    shell.send_line("SELECT count(*) AS n FROM range(10000000000) WHERE value % 7 = 3;").expect("send");
    std::thread::sleep(Duration::from_millis(1000));
    shell.send_control('c').expect("Ctrl-C");
    let output = shell.exp_string("query cancelled").expect("the query is cancelled");
    assert!(!output.contains("(1 row)"), "the query finished instead: {output}");
    shell.exp_string(PROMPT).expect("the prompt after Ctrl-C");
    run(&mut shell, "SELECT 'still here' AS status;", "| still here |");
    // A cross join computes for long stretches without yielding: its
    // threads are left behind, and the next query runs all the same.
    shell.send_line("SELECT count(*) AS n FROM range(100000) a CROSS JOIN range(100000) b WHERE a.value + b.value = 7;").expect("send");
    std::thread::sleep(Duration::from_millis(1000));
    shell.send_control('c').expect("Ctrl-C");
    shell.exp_string("query cancelled").expect("the cross join is cancelled");
    shell.exp_string(PROMPT).expect("the prompt after Ctrl-C");
    run(&mut shell, "SELECT 'still here' AS status;", "| still here |");
    // At the prompt, Ctrl-C drops what was typed: an open quote would
    // otherwise swallow the next statement.
    type_text(&mut shell, "SELECT 'abandoned");
    shell.send_control('c').expect("Ctrl-C");
    shell.exp_string("\r\n").expect("the line ends");
    shell.exp_string(PROMPT).expect("a fresh prompt");
    run(&mut shell, "SELECT 1 AS one;", "|   1 |");
    // Ctrl-D quits.
    shell.send_control('d').expect("Ctrl-D");
    shell.exp_eof().expect("the shell ends");
}

#[test]
fn history_survives_a_restart() {
    let setup = Setup::new("pty-history");
    let mut shell = setup.start();
    run(&mut shell, "SELECT 'remember me' AS note;", "| remember me |");
    shell.send_line(".quit").expect("send");
    shell.exp_eof().expect("the shell ends");
    let saved = std::fs::read_to_string(&setup.history).expect("the history file");
    assert!(saved.contains("SELECT 'remember me' AS note;"), "{saved}");

    let mut shell = setup.start();
    // Up twice: the last entry is `.quit`.
    type_text(&mut shell, "\x1b[A");
    shell.exp_string(".quit").expect("the last entry recalled");
    type_text(&mut shell, "\x1b[A");
    shell.exp_string("SELECT 'remember me' AS note;").expect("the entry before recalled");
    run(&mut shell, "", "| remember me |");
    shell.send_line("\\q").expect("send");
    shell.exp_eof().expect("the shell ends");
}

#[test]
fn hostile_names_print_escaped() {
    let setup = Setup::new("pty-hostile");
    let mut shell = setup.start();
    let output = run(&mut shell, "SELECT dstDomains FROM flows WHERE dstIP = '192.0.2.10';", "(1 row)");
    assert!(output.contains("| [evil\\x1b[2J.test] |"), "{output:?}");
    assert!(!output.contains("\x1b[2J"), "a raw escape sequence reached the terminal: {output:?}");
    quietly(&mut shell, ".mode line");
    let output = run(
        &mut shell,
        "SELECT unnest(dstDomains) AS name FROM flows WHERE dstIP = '192.0.2.10';",
        ".test\r\n",
    );
    assert!(output.contains("name = evil\\x1b[2J.test"), "{output:?}");
    assert!(!output.contains("\x1b[2J"), "a raw escape sequence reached the terminal: {output:?}");
}

#[test]
fn output_and_read_files() {
    let setup = Setup::new("pty-files");
    let dir = setup.data.path();
    let script = dir.join("ports.sql");
    std::fs::write(&script, ".mode csv\nSELECT dstPort\n  FROM flows\n ORDER BY timestamp\n LIMIT 2;\n")
        .expect("script");
    let out = dir.join("ports.csv");
    let mut shell = setup.start();
    quietly(&mut shell, &format!(".output {}", out.display()));
    quietly(&mut shell, &format!(".read {}", script.display()));
    quietly(&mut shell, ".output stdout");
    assert_eq!(std::fs::read_to_string(&out).expect("the output file"), "dstPort\n443\n443\n");
    // The mode set by the script stays.
    run(&mut shell, "SELECT 7 AS n;", "n\r\n7\r\n");
}
