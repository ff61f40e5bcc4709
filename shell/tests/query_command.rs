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

/// Runs `flowsql ARGS` with `stdin`; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowsql"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FLOWSQL_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowsql");
    // A command that fails before reading its input closes it: not an error here.
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    let output = child.wait_with_output().expect("wait for flowsql");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bail_off_goes_on_after_errors_and_still_fails() {
    let data = fixture("bail-off");
    golden!(
        "bail_off",
        flowsql(&data, &["query", ".bail off\nSELECT nope FROM flows;\nSELECT 1 AS still_run;"], "")
    );
}

#[test]
fn read_commands_never_make_a_data_directory() {
    let temp = flowsql_store::test_util::TempDir::new("shell-no-store");
    let missing = temp.path().join("typo");
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let file = temp.path().join("a-file");
    std::fs::write(&file, "").expect("write a file");
    let below_file = file.join("data");
    let cases = [
        (&missing, format!("error: {} holds no flowsql data (it does not exist)\n", missing.display())),
        (&empty, format!("error: {} holds no flowsql data (no flowsql.db)\n", empty.display())),
        (&file, format!("error: {} is not a directory\n", file.display())),
        (&below_file, format!("error: {} is not a directory\n", file.display())),
    ];
    let copy_to = temp.path().join("copy");
    for (dir, expected) in &cases {
        let dir = dir.to_str().expect("utf-8");
        let commands: [&[&str]; 5] = [
            &["query", "--data-dir", dir, "SELECT count(*) FROM flows"],
            &["shell", "--data-dir", dir],
            &["status", "--data-dir", dir],
            &["export", "--data-dir", dir],
            &["export", "--data-dir", dir, "--to", copy_to.to_str().expect("utf-8")],
        ];
        for args in commands {
            let (code, stdout, stderr) = run(args, "SELECT 1;\n");
            assert_eq!((code, stdout.as_str(), stderr.as_str()), (1, "", expected.as_str()), "{args:?}");
        }
    }
    assert!(!missing.exists(), "{} was made", missing.display());
    assert_eq!(
        std::fs::read_dir(&empty).expect("list").count(),
        0,
        "something was written in {}",
        empty.display()
    );
    assert!(!copy_to.exists());
}

#[test]
fn sql_from_stdin_without_dash_f() {
    let data = fixture("stdin-plain");
    golden!(
        "stdin_plain",
        flowsql(
            &data,
            &["query", "--format", "csv"],
            "SELECT 42 AS answer;\nSELECT dstPort FROM flows\nORDER BY timestamp LIMIT 1\n"
        )
    );
}

#[test]
fn dot_commands_in_the_argument() {
    let data = fixture("dot-argument");
    golden!(
        "dot_argument",
        flowsql(&data, &["query", ".tables\n.mode csv\nSELECT count(*) AS flows FROM flows;"], "")
    );
}

#[test]
fn from_first_and_results_without_columns() {
    let data = fixture("no-columns");
    let sql = "FROM flows ORDER BY timestamp LIMIT 1; SELECT FROM flows LIMIT 2";
    let mut text = String::new();
    for format in ["table", "box", "line", "json", "ndjson", "csv"] {
        text.push_str(&format!("=== --format {format}\n"));
        text.push_str(&flowsql(&data, &["query", "--format", format, "--", sql], ""));
    }
    // The hot tier's rows (from 09:00) without columns are still rows.
    text.push_str("=== hot rows\n");
    text.push_str(&flowsql(
        &data,
        &["query", "SELECT FROM flows WHERE timestamp >= '2026-11-28T09:00:00Z'"],
        "",
    ));
    // Statements that return nothing print nothing.
    text.push_str("=== CREATE VIEW\n");
    text.push_str(&flowsql(&data, &["query", "CREATE VIEW v AS SELECT 1 AS one"], ""));
    golden!("no_columns", text);
}

#[test]
fn schema_and_describe_name_types_alike() {
    let data = fixture("types");
    for table in ["flows", "flow_ends", "domains", "capture_stats", "open_flows"] {
        let schema = flowsql(&data, &["query", &format!(".mode csv\n.headers off\n.schema {table}")], "");
        let describe = flowsql(
            &data,
            &[
                "query",
                "--format",
                "csv",
                &format!(
                    "SELECT column_name, data_type FROM information_schema.columns \
                     WHERE table_name = '{table}' ORDER BY ordinal_position"
                ),
            ],
            "",
        );
        let describe = describe.replacen("column_name,data_type\n", "", 1);
        assert_eq!(schema, describe, "{table}");
    }
    let schema = flowsql(&data, &["query", ".schema flows"], "");
    assert!(schema.contains("| timestamp           | Timestamp(ns, \"UTC\") |"), "{schema}");
    assert!(schema.contains("| dstDomains          | List(Utf8)           |"), "{schema}");
    let describe = flowsql(&data, &["query", "DESCRIBE flows"], "");
    assert!(describe.contains("| timestamp           | Timestamp(ns, \"UTC\") |"), "{describe}");
    assert!(describe.contains("| dstDomains          | List(Utf8)           |"), "{describe}");
    // The names are those arrow_typeof() gives and arrow_cast() takes.
    let typeof_ = flowsql(
        &data,
        &[
            "query",
            "--format",
            "csv",
            "SELECT arrow_typeof(timestamp) AS t, arrow_typeof(srcPort) AS p FROM flows LIMIT 1",
        ],
        "",
    );
    assert!(typeof_.contains("\"Timestamp(ns, \"\"UTC\"\")\",UInt16\n"), "{typeof_}");
}

#[test]
fn headers_once_box_and_markdown() {
    let data = fixture("modes");
    let once = data.path().join("once.txt");
    let script = format!(
        ".mode box\n\
         SELECT dstPort, count(*) AS flows FROM flows GROUP BY dstPort ORDER BY dstPort;\n\
         .mode markdown\n\
         SELECT dstPort, processName, 'a|b' AS pipe FROM flows ORDER BY timestamp LIMIT 2;\n\
         .headers off\n\
         .mode table\n\
         SELECT 1 AS one;\n\
         .mode csv\n\
         SELECT 2 AS two;\n\
         .headers\n\
         .headers on\n\
         .once {}\n\
         SELECT 3 AS three;\n\
         SELECT 4 AS four;\n",
        once.display()
    );
    let mut text = flowsql(&data, &["query", &script], "");
    text.push_str("--- once.txt\n");
    text.push_str(&std::fs::read_to_string(&once).expect("the .once file"));
    golden!("modes", text);
}

/// The text between `--- stdout` and `--- stderr` of a description.
fn stdout_of(text: &str) -> &str {
    text.split("--- stdout\n").nth(1).and_then(|t| t.split("--- stderr").next()).expect("stdout")
}

#[test]
fn csv_of_lists_is_the_same_in_copy_mode_and_format() {
    let data = fixture("csv-everywhere");
    let query = "SELECT timestamp, srcIP, dstDomains, srcDomains, processId FROM flows ORDER BY timestamp";
    let by_format = flowsql(&data, &["query", "--format", "csv", query], "");
    let by_mode = flowsql(&data, &["query", &format!(".mode csv\n{query}")], "");
    let copied = data.path().join("copy.csv");
    let copy = flowsql(&data, &["query", &format!("COPY ({query}) TO '{}'", copied.display())], "");
    let table = data.path().join("flows.csv");
    let whole_table = flowsql(&data, &["query", &format!("COPY flows TO '{}'", table.display())], "");
    assert_eq!(
        stdout_of(&copy),
        "+-------+\n| count |\n+-------+\n|     5 |\n+-------+\n(1 row)\n",
        "{copy}"
    );
    assert!(whole_table.starts_with("exit: 0\n"), "{whole_table}");
    assert_eq!(stdout_of(&by_format), stdout_of(&by_mode));
    assert_eq!(std::fs::read_to_string(&copied).expect("the copy"), stdout_of(&by_format));
    // Without ORDER BY, rows come in any order.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&std::fs::read_to_string(&table).expect("the copy of flows")),
        sorted(stdout_of(&flowsql(&data, &["query", "--format", "csv", "SELECT * FROM flows"], "")))
    );
    assert!(
        stdout_of(&by_format).contains(",\"[\"\"www.example.com\"\",\"\"example.com\"\"]\",[],"),
        "{by_format}"
    );
}

#[test]
fn export_to_a_file_in_a_format() {
    let data = fixture("export-formats");
    let dir = data.path().to_str().expect("utf-8");
    let csv = data.path().join("flows.csv");
    let ndjson = data.path().join("flows.ndjson");
    // Parquet is a directory: `--to flows.csv` without --format is refused,
    // and makes nothing.
    let (code, stdout, stderr) =
        run(&["export", "--data-dir", dir, "--to", csv.to_str().expect("utf-8")], "");
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("Parquet is written as a directory"), "{stderr}");
    assert!(!csv.exists());
    let (code, _, stderr) =
        run(&["export", "--data-dir", dir, "--to", csv.to_str().expect("utf-8"), "--format", "ndjson"], "");
    assert_eq!(code, 1);
    assert!(stderr.contains("--format ndjson writes one file: name it FILE.ndjson"), "{stderr}");
    for (path, format) in [(&csv, "csv"), (&ndjson, "ndjson")] {
        let (code, stdout, stderr) = run(
            &["export", "--data-dir", dir, "--to", path.to_str().expect("utf-8"), "--format", format],
            "",
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with(&format!("copied 5 rows into {}", path.display())), "{stdout}");
        let written = std::fs::read_to_string(path).expect("the export");
        let query =
            flowsql(&data, &["query", "--format", format, "SELECT * FROM flows ORDER BY timestamp"], "");
        assert_eq!(written, stdout_of(&query), "{format}");
        // An existing file is never replaced.
        let (code, _, stderr) = run(
            &["export", "--data-dir", dir, "--to", path.to_str().expect("utf-8"), "--format", format],
            "",
        );
        assert_eq!(code, 1);
        assert!(stderr.contains("it exists"), "{stderr}");
    }
    // The time range applies (the fixture's flows are at 07:10 .. 09:30).
    let range = data.path().join("range.csv");
    let (code, stdout, _) = run(
        &[
            "export",
            "--data-dir",
            dir,
            "--to",
            range.to_str().expect("utf-8"),
            "--format",
            "csv",
            "--since",
            "2026-11-28T08:00:00Z",
            "--until",
            "2026-11-28T09:15:00Z",
        ],
        "",
    );
    assert_eq!(code, 0);
    assert!(stdout.starts_with("copied 2 rows"), "{stdout}");
}

#[test]
fn tables_fit_a_maximum_width_and_rows() {
    let data = fixture("fit");
    let script = ".maxwidth 72\n\
                  SELECT * FROM flows ORDER BY timestamp;\n\
                  .maxwidth 40\n\
                  SELECT 'a rather long value that cannot fit in forty characters' AS long, 1 AS n;\n\
                  .maxwidth 0\n\
                  .maxrows 2\n\
                  SELECT dstPort FROM flows ORDER BY timestamp;\n\
                  .mode box\n\
                  .maxwidth 60\n\
                  SELECT * FROM flows ORDER BY timestamp LIMIT 1;\n";
    golden!("fit", flowsql(&data, &["query", script], ""));
}

#[test]
fn status_json_gives_every_time_in_rfc3339() {
    let data = fixture("status-times");
    // A capture session's counters, as the capture's store writer records them.
    let writer = flowsql_store::StoreWriter::spawn(data.path(), flowsql_store::WriterConfig::default())
        .expect("writer");
    writer.set_capture_counters(flowsql_store::CaptureCounters { events: 7, lost: 1, ..Default::default() });
    writer.finish();
    let (code, stdout, stderr) =
        run(&["status", "--json", "--data-dir", data.path().to_str().expect("utf-8")], "");
    assert_eq!(code, 0, "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let latest = &status["capture"]["latest"];
    assert_eq!(latest["events"], 7, "{status}");
    let times = [
        &latest["session"],
        &latest["time"],
        &status["cold"]["span"][0],
        &status["cold"]["span"][1],
        &status["hot"]["span"][0],
        &status["lastExport"]["at"],
    ];
    for time in times {
        let text = time.as_str().unwrap_or_else(|| panic!("{time} is not a string: {status}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok_and(|t| t.offset().local_minus_utc() == 0)
                && text.ends_with('Z'),
            "{text} is not RFC 3339 UTC"
        );
    }
    assert!(status["capture"]["total"].get("session").is_none(), "a sum has no session time: {status}");
}
