//! Golden output of the real binary: `flowsql query` in every format over a
//! fixture data directory with rows in both tiers, scripts with dot
//! commands, and the exit status and message of each kind of error.
//!
//! Snapshots are in `snapshots/`; timings and temporary paths are filtered.

#[path = "support/fixture.rs"]
mod fixture;

use std::io::Write as _;
use std::process::{Command, Stdio};

use fixture::{Fixture, fixture};

const ALL_FLOWS: &str = "SELECT * FROM flows ORDER BY timestamp";

/// Runs `flowsql ARGS` with `stdin`, and describes what it did.
fn flowsql(fixture: &Fixture, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowsql"))
        .args(args)
        .env("FLOWSQL_DATA_DIR", fixture.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowsql");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait for flowsql");
    let text = format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        output.status.code().map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    text.replace(fixture.path().to_str().expect("temp paths are UTF-8"), "[DATA_DIR]")
}

macro_rules! golden {
    ($name:expr, $text:expr) => {
        insta::with_settings!({ filters => vec![(r"Time: \d+\.\d+ s", "Time: [ELAPSED] s")] }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

#[test]
fn table_format() {
    let data = fixture("table");
    golden!("table", flowsql(&data, &["query", ALL_FLOWS], ""));
}

#[test]
fn csv_format() {
    let data = fixture("csv");
    golden!("csv", flowsql(&data, &["query", "--format", "csv", ALL_FLOWS], ""));
}

#[test]
fn json_format() {
    let data = fixture("json");
    let text = flowsql(&data, &["query", "--format", "json", ALL_FLOWS], "");
    golden!("json", &text);
    let json = text.split("--- stdout\n").nth(1).and_then(|t| t.split("--- stderr").next()).expect("stdout");
    let rows: serde_json::Value = serde_json::from_str(json).expect("stdout is one JSON document");
    assert_eq!(rows.as_array().map(Vec::len), Some(5));
    assert_eq!(rows[1]["dstDomains"][0], "evil\x1b[2J.test", "JSON keeps the data exact");
}

#[test]
fn ndjson_format() {
    let data = fixture("ndjson");
    golden!("ndjson", flowsql(&data, &["query", "--format", "ndjson", ALL_FLOWS], ""));
}

#[test]
fn line_format() {
    let data = fixture("line");
    golden!(
        "line",
        flowsql(&data, &["query", "--format", "line", "SELECT * FROM flows ORDER BY timestamp LIMIT 2"], "")
    );
}

#[test]
fn several_statements_print_each_result() {
    let data = fixture("statements");
    let sql = "SELECT count(*) AS flows FROM flows; \
               select dstport, count(*) AS n from flows group by dstport order by dstport;\
               SELECT unnest(dstDomains) AS name FROM flows ORDER BY name";
    golden!("several_statements", flowsql(&data, &["query", sql], ""));
}

#[test]
fn scripts_mix_sql_and_dot_commands() {
    let data = fixture("script");
    let script = data.path().join("report.sql");
    std::fs::write(
        &script,
        "-- flows by direction, then HTTPS flows\n\
         .mode csv\n\
         SELECT connectionDirection, count(*) AS flows\n\
         FROM flows GROUP BY 1 ORDER BY 1;\n\
         .timer on\n\
         .mode table\n\
         SELECT count(*) AS https\n\
           FROM flows\n\
          WHERE dstPort = 443;\n\
         .timer off\n\
         SELECT 'no semicolon at the end' AS last\n",
    )
    .expect("write the script");
    golden!("script", flowsql(&data, &["query", "-f", script.to_str().expect("utf-8")], ""));
}

#[test]
fn sql_from_stdin() {
    let data = fixture("stdin");
    golden!(
        "stdin",
        flowsql(
            &data,
            &["query", "--format", "ndjson", "-f", "-"],
            "SELECT dstIP FROM flows WHERE ip_in_cidr(dstIP, '10.0.0.0/8') ORDER BY dstIP;\n"
        )
    );
}

#[test]
fn syntax_error_says_where() {
    let data = fixture("syntax");
    golden!("syntax_error", flowsql(&data, &["query", "SELECT count(*\nFROM flows"], ""));
}

#[test]
fn unknown_table() {
    let data = fixture("unknown-table");
    golden!("unknown_table", flowsql(&data, &["query", "SELECT * FROM flowz"], ""));
}

#[test]
fn unknown_column() {
    let data = fixture("unknown-column");
    golden!("unknown_column", flowsql(&data, &["query", "SELECT dstDomain FROM flows"], ""));
}

#[test]
fn an_error_stops_the_statements_after_it() {
    let data = fixture("stops");
    golden!(
        "error_stops",
        flowsql(&data, &["query", "SELECT 1 AS first; SELECT nope FROM flows; SELECT 3 AS third"], "")
    );
}

#[test]
fn errors_in_scripts_name_the_file_and_line() {
    let data = fixture("script-error");
    let script = data.path().join("broken.sql");
    std::fs::write(&script, "SELECT 1 AS fine;\n\n-- the next one is wrong\nSELECT dstPort\n  FROM flows\n WHERE dstPort >;\nSELECT 2;\n")
        .expect("write the script");
    golden!("script_error", flowsql(&data, &["query", "-f", script.to_str().expect("utf-8")], ""));
}

#[test]
fn bad_format_is_refused() {
    let data = fixture("bad-format");
    golden!("bad_format", flowsql(&data, &["query", "--format", "xml", "SELECT 1"], ""));
}

#[test]
fn missing_script_file() {
    let data = fixture("missing-file");
    golden!("missing_file", flowsql(&data, &["query", "-f", "/nonexistent/queries.sql"], ""));
}

#[test]
fn unusable_data_directory() {
    let data = fixture("bad-dir");
    let file = data.path().join("not-a-directory");
    std::fs::write(&file, "").expect("write a file");
    let dir = file.to_str().expect("utf-8");
    golden!("bad_data_dir", flowsql(&data, &["query", "--data-dir", dir, "SELECT 1"], ""));
}
