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
    start_shell_in(data, history, None)
}

/// Starts the shell in a terminal `columns` wide (set with `stty` before
/// the shell starts; `None`: the pseudo-terminal's own size).
fn start_shell_in(data: &Path, history: &Path, columns: Option<u16>) -> PtySession {
    let mut command = match columns {
        Some(columns) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("stty cols {columns} rows 50 && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_flowsql"));
            sh
        }
        None => Command::new(env!("CARGO_BIN_EXE_flowsql")),
    };
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

/// What rexpect read, which it hands over one char per byte, as the UTF-8
/// text the shell wrote (`…`, box-drawing characters).
fn utf8(read: &str) -> String {
    let bytes: Vec<u8> = read.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect();
    String::from_utf8_lossy(&bytes).into_owned()
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
    // Types as DESCRIBE names them (Arrow's names): one vocabulary.
    let output = run(&mut shell, ".schema flows", "(17 rows)");
    assert!(output.contains("| timestamp           | Timestamp(ns, \"UTC\") |"), "{output}");
    assert!(output.contains("| dstDomains          | List(Utf8)           |"), "{output}");
    let output = run(&mut shell, "DESCRIBE flows;", "(17 rows)");
    assert!(output.contains("| timestamp           | Timestamp(ns, \"UTC\") | NO          |"), "{output}");
    run(
        &mut shell,
        ".schema nope",
        "error: no table named \"nope\": the tables are flows, flow_ends, open_flows, domains, capture_stats",
    );
    run(&mut shell, ".help", ".mode table|box|markdown|csv|json|ndjson|line");
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

#[test]
fn tables_fit_the_terminal() {
    let setup = Setup::new("pty-fit");
    let mut shell = start_shell_in(setup.data.path(), &setup.history, Some(80));
    let output = utf8(&run(
        &mut shell,
        "SELECT * FROM flows ORDER BY timestamp LIMIT 2;",
        "columns shown to fit 80 characters: .maxwidth 0 shows all)",
    ));
    let table: Vec<&str> = output.lines().filter(|l| l.starts_with('+') || l.starts_with('|')).collect();
    assert!(table.len() >= 6, "{output}");
    for line in &table {
        assert!(line.trim_end().chars().count() <= 80, "wider than the terminal: {line:?}\n{output}");
    }
    assert!(table.iter().any(|l| l.contains(" … ")), "no elision marker: {output}");
    assert!(output.contains("(2 rows)"), "{output}");
    run(&mut shell, ".maxwidth", "maxwidth: the terminal's (80)");
    // A long value is cut, and the note says so.
    let output = utf8(&run(
        &mut shell,
        "SELECT repeat('x', 200) AS long;",
        "(long values cut to fit 80 characters: .maxwidth 0 shows them whole)",
    ));
    assert!(output.contains("xxx…"), "{output}");
    // .maxwidth 0: the whole table, whatever the terminal.
    quietly(&mut shell, ".maxwidth 0");
    let output = run(&mut shell, "SELECT repeat('x', 200) AS long;", "(1 row)");
    assert!(output.contains(&"x".repeat(200)), "{output}");
    // .maxrows: the first rows, and a count of all.
    quietly(&mut shell, ".maxrows 2");
    let output = utf8(&run(
        &mut shell,
        "SELECT dstPort FROM flows ORDER BY timestamp;",
        "(5 rows, 2 shown: .maxrows 0 shows all)",
    ));
    assert!(output.contains("|       … |"), "{output}");
}

#[test]
fn results_in_a_file_are_not_fitted() {
    let setup = Setup::new("pty-fit-file");
    let out = setup.data.path().join("wide.txt");
    let mut shell = start_shell_in(setup.data.path(), &setup.history, Some(60));
    quietly(&mut shell, &format!(".once {}", out.display()));
    quietly(&mut shell, "SELECT repeat('y', 100) AS long, dstDomains FROM flows ORDER BY timestamp LIMIT 1;");
    let text = std::fs::read_to_string(&out).expect("the .once file");
    assert!(text.contains(&"y".repeat(100)), "{text}");
    assert!(!text.contains('…'), "{text}");
    // The next result is on the terminal again.
    run(&mut shell, "SELECT 'back' AS here;", "| back |");
}

/// `flowsql shell` with `stdin` piped in, as `sqlite3 < file.sql`.
fn piped_shell(setup: &Setup, stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowsql"))
        .arg("shell")
        .arg("--data-dir")
        .arg(setup.data.path())
        .env("FLOWSQL_HISTORY", &setup.history)
        .env("FLOWSQL_LOG_FILE", setup.data.path().join("shell.log"))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start flowsql shell");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("flowsql shell ends");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_piped_shell_goes_on_after_errors_and_exits_1() {
    let setup = Setup::new("piped");
    let (code, stdout, stderr) = piped_shell(
        &setup,
        "SELECT nosuch FROM flows;\n.mode csv\nSELECT 1 AS one;\n.bogus\nSELECT 2 AS two;\n",
    );
    assert_eq!(code, 1, "sqlite3 exits 1 after an error: {stdout}{stderr}");
    // No banner, no prompt: stdout is the results.
    assert_eq!(stdout, "one\n1\ntwo\n2\n");
    assert_eq!(
        stderr,
        "error: <stdin>: Schema error: No field named nosuch at Line: 1, Column: 8\n\
         error: <stdin>:4: unknown command \".bogus\": type .help for the list\n"
    );
    assert!(!setup.history.exists(), "piped statements went into the history");
    // Without errors: exit 0. With .bail on: the first error stops it.
    let (code, stdout, _) = piped_shell(&setup, ".mode csv\nSELECT 3 AS three;\n");
    assert_eq!((code, stdout.as_str()), (0, "three\n3\n"));
    let (code, stdout, stderr) =
        piped_shell(&setup, ".bail on\n.mode csv\nSELECT nosuch FROM flows;\nSELECT 4 AS four;\n");
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!setup.history.exists());
}

#[test]
fn box_markdown_and_headers_in_the_shell() {
    let setup = Setup::new("pty-modes");
    let mut shell = setup.start();
    quietly(&mut shell, ".mode box");
    let output = utf8(&run(
        &mut shell,
        "SELECT dstPort, count(*) AS n FROM flows GROUP BY dstPort ORDER BY dstPort;",
        "(3 rows)",
    ));
    assert!(output.contains("│ dstPort │ n │"), "{output}");
    assert!(output.contains("└─────────┴───┘"), "{output}");
    quietly(&mut shell, ".mode markdown");
    let output = run(&mut shell, "SELECT 22 AS port, 'ssh' AS name;", "|   22 | ssh  |");
    assert!(output.contains("| port | name |\r\n|-----:|------|"), "{output:?}");
    quietly(&mut shell, ".headers off");
    quietly(&mut shell, ".mode table");
    let output = run(&mut shell, "SELECT 'only' AS hidden;", "(1 row)");
    assert!(!output.contains("| hidden"), "{output}");
    assert!(output.contains("+------+\r\n| only |\r\n+------+\r\n(1 row)"), "{output:?}");
}
