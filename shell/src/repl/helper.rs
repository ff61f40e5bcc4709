//! The rustyline helper of the shell: tab completion of SQL keywords, table
//! names, column names (spelled exactly: `dstDom<TAB>` gives `dstDomains`)
//! and function names, and of dot commands and their arguments.
//!
//! Whether a statement is finished is decided by the REPL loop line by line
//! (see [`crate::repl`]), not by a rustyline validator: a validator keeps
//! every line in one edit buffer, where rustyline cannot show the `   ...> `
//! continuation prompt.

use std::collections::HashSet;

use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use flowsql_query::Session;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::output::OutputMode;
use crate::runner::dot_command::COMMANDS;
use crate::sql_text::{Position, position_context};

/// Names the completer offers, gathered once when the shell starts.
pub struct ShellHelper {
    columns: Vec<String>,
    tables: Vec<String>,
    functions: Vec<String>,
    files: FilenameCompleter,
}

impl std::fmt::Debug for ShellHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellHelper")
            .field("columns", &self.columns.len())
            .field("tables", &self.tables.len())
            .field("functions", &self.functions.len())
            .finish_non_exhaustive()
    }
}

impl ShellHelper {
    pub fn new(session: &Session) -> Self {
        let mut columns: Vec<String> = Vec::new();
        let mut tables = Vec::new();
        for table in session.tables() {
            tables.push(table.name.to_owned());
            for field in table.schema.fields() {
                if !columns.contains(field.name()) {
                    columns.push(field.name().clone());
                }
            }
        }
        columns.sort();
        ShellHelper { columns, tables, functions: session.function_names(), files: FilenameCompleter::new() }
    }

    /// Candidates for the SQL word that ends at `pos`.
    fn complete_sql(&self, line: &str, pos: usize) -> (usize, Vec<Pair>) {
        let position = position_context(line, pos);
        if position == Position::Literal {
            return (pos, Vec::new());
        }
        let start = word_start(line, pos);
        let prefix = &line[start..pos];
        if prefix.is_empty() {
            return (pos, Vec::new());
        }
        let lower = prefix.to_lowercase();
        let matches = |name: &&String| name.to_lowercase().starts_with(&lower);
        let mut names: Vec<String> = Vec::new();
        names.extend(self.columns.iter().filter(matches).cloned());
        names.extend(self.tables.iter().filter(matches).cloned());
        if position == Position::Code {
            names.extend(self.functions.iter().filter(matches).cloned());
            // Keywords in the case the user types them in.
            let upper = prefix.chars().any(char::is_uppercase);
            names.extend(
                ALL_KEYWORDS
                    .iter()
                    .filter(|k| k.to_lowercase().starts_with(&lower))
                    .map(|k| if upper { (*k).to_owned() } else { k.to_lowercase() }),
            );
        }
        let mut seen = HashSet::new();
        names.retain(|name| seen.insert(name.to_lowercase()));
        (start, names.into_iter().map(pair).collect())
    }

    /// Candidates on a dot command line.
    fn complete_dot(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let indent = before.len() - before.trim_start().len();
        let command_line = &before[indent..];
        let Some((command, _)) = command_line.split_once(char::is_whitespace) else {
            // The command name itself.
            let prefix = &command_line[1..];
            let names =
                COMMANDS.iter().filter(|c| c.name.starts_with(prefix)).map(|c| pair(format!(".{}", c.name)));
            return Ok((indent, names.collect()));
        };
        let start = word_start(line, pos);
        let prefix = &line[start..pos];
        let options: Vec<String> = match command {
            ".schema" => self.tables.clone(),
            ".mode" => OutputMode::ALL.iter().map(|m| m.name().to_owned()).collect(),
            ".timer" => vec!["on".into(), "off".into()],
            ".read" | ".output" => return self.files.complete(line, pos, ctx),
            _ => Vec::new(),
        };
        let names =
            options.into_iter().filter(|o| o.to_lowercase().starts_with(&prefix.to_lowercase())).map(pair);
        Ok((start, names.collect()))
    }
}

fn pair(name: String) -> Pair {
    Pair { display: name.clone(), replacement: name }
}

/// Where the identifier that ends at `pos` begins.
fn word_start(line: &str, pos: usize) -> usize {
    line[..pos]
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .last()
        .map_or(pos, |(i, _)| i)
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        if line.trim_start().starts_with('.') {
            self.complete_dot(line, pos, ctx)
        } else {
            Ok(self.complete_sql(line, pos))
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

/// Always valid: the REPL loop decides when a statement is complete.
impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use rustyline::history::DefaultHistory;

    use super::*;

    fn helper() -> ShellHelper {
        ShellHelper {
            columns: vec![
                "dstDomains".into(),
                "dstIP".into(),
                "dstPort".into(),
                "srcIP".into(),
                "timestamp".into(),
            ],
            tables: vec!["flows".into(), "domains".into(), "capture_stats".into()],
            functions: vec!["count".into(), "ip_in_cidr".into(), "floor".into()],
            files: FilenameCompleter::new(),
        }
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        let (start, pairs) = helper().complete(line, line.len(), &ctx).expect("complete");
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn column_names_complete_with_their_exact_spelling() {
        assert_eq!(complete("SELECT dstDom"), (7, vec!["dstDomains".to_owned()]));
        assert_eq!(complete("select dstdom"), (7, vec!["dstDomains".to_owned()]));
        assert_eq!(complete("SELECT f.dstDom"), (9, vec!["dstDomains".to_owned()]));
        assert_eq!(complete("SELECT \"dstDom"), (8, vec!["dstDomains".to_owned()]));
        let (_, dst) = complete("SELECT dst");
        assert_eq!(dst[..3], ["dstDomains", "dstIP", "dstPort"]);
    }

    #[test]
    fn tables_functions_and_keywords_complete() {
        assert_eq!(complete("SELECT * FROM fl").1[..2], ["flows", "floor"]);
        assert!(complete("SELECT ip_in").1.contains(&"ip_in_cidr".to_owned()));
        assert!(complete("SELECT * FROM flows WH").1.contains(&"WHERE".to_owned()));
        assert!(complete("select * from flows wh").1.contains(&"where".to_owned()));
        // Each name once, even when it is also a keyword.
        let (_, names) = complete("SELECT timest");
        assert_eq!(names.iter().filter(|n| n.eq_ignore_ascii_case("timestamp")).count(), 1);
        assert_eq!(names[0], "timestamp");
    }

    #[test]
    fn nothing_inside_strings_comments_or_before_a_word() {
        assert_eq!(complete("SELECT 'dstDom").1, Vec::<String>::new());
        assert_eq!(complete("SELECT 1 -- dstDom").1, Vec::<String>::new());
        assert_eq!(complete("SELECT ").1, Vec::<String>::new());
    }

    #[test]
    fn dot_commands_and_their_arguments() {
        assert_eq!(complete(".sc"), (0, vec![".schema".to_owned()]));
        assert_eq!(complete(".schema fl"), (8, vec!["flows".to_owned()]));
        assert_eq!(complete(".mode nd"), (6, vec!["ndjson".to_owned()]));
        assert_eq!(complete(".timer o").1, ["on", "off"]);
        assert_eq!(complete(".").1.len(), COMMANDS.len());
    }
}
