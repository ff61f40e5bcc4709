//! The interactive shell: read a statement, run it, print the result, again.
//!
//! - The prompt is `flowsql> `; a statement that goes on over more lines
//!   gets `   ...> ` until a `;` outside quotes and comments ends it. Each
//!   line is read on its own so that the continuation prompt shows; the
//!   finished statement is one history entry.
//! - A line starting with `.` (or `\q`) at the prompt is a dot command.
//! - Ctrl-C while a query runs cancels it (its stream is dropped, which
//!   stops DataFusion's tasks) and the prompt comes back; Ctrl-C at the
//!   prompt clears the input; Ctrl-D quits.
//! - Errors print as one `error: ...` line and the shell goes on.
//! - History persists in `$FLOWSQL_HISTORY`, else
//!   `$XDG_STATE_HOME/flowsql/history`, else `~/.local/state/flowsql/history`,
//!   appended to after every entry.
//!
//! [`run`] takes a session that is already open, so that a caller can open
//! it with live rows and start capturing before handing it over.

pub mod helper;
pub mod interrupt;

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flowsql_query::Session;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};

use self::helper::ShellHelper;
use self::interrupt::Interrupts;
use crate::output::OutputMode;
use crate::runner::dot_command::{DotCommand, is_dot_command};
use crate::runner::{Flow, Runner};
use crate::sql_text::{InputState, input_state};

pub const PROMPT: &str = "flowsql> ";
pub const CONTINUATION_PROMPT: &str = "   ...> ";

/// Entries kept in the history file.
const HISTORY_SIZE: usize = 10_000;

/// How the shell starts.
#[derive(Debug, Clone)]
pub struct ReplOptions {
    /// History file; `None` keeps history for this session only.
    pub history: Option<PathBuf>,
    pub mode: OutputMode,
}

impl ReplOptions {
    /// Table mode, and the history file of [`history_path`].
    pub fn from_env() -> Self {
        ReplOptions { history: history_path(), mode: OutputMode::Table }
    }
}

/// `$XDG_STATE_HOME/flowsql`, else `~/.local/state/flowsql`.
pub fn state_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_STATE_HOME")
        .or_else(|| non_empty("HOME").map(|home| home.join(".local/state")))
        .map(|dir| dir.join("flowsql"))
}

/// `$FLOWSQL_HISTORY`, else `history` in [`state_dir`].
pub fn history_path() -> Option<PathBuf> {
    std::env::var_os("FLOWSQL_HISTORY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| state_dir().map(|dir| dir.join("history")))
}

/// Where the shell's logs go, since they must not reach its terminal:
/// `$FLOWSQL_LOG_FILE`, else `shell.log` in [`state_dir`].
pub fn log_path() -> Option<PathBuf> {
    std::env::var_os("FLOWSQL_LOG_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| state_dir().map(|dir| dir.join("shell.log")))
}

/// Runs the shell on `session` until `.quit`, `\q` or Ctrl-D.
pub async fn run(session: &Session, options: ReplOptions) -> anyhow::Result<()> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .max_history_size(HISTORY_SIZE)
        .and_then(|b| b.history_ignore_dups(true))
        .context("cannot configure the line editor")?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::with_config(config).context("cannot set up the terminal")?;
    editor.set_helper(Some(ShellHelper::new(session)));
    let mut history = History::load(&mut editor, options.history);
    let mut interrupts = Interrupts::listen()?;
    let mut runner = Runner::new(session, options.mode)?;

    println!("flowsql {}: end SQL statements with ';', type .help for help", env!("CARGO_PKG_VERSION"));
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { PROMPT } else { CONTINUATION_PROMPT };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("cannot read from the terminal"),
        };
        if pending.is_empty() && is_dot_command(&line) {
            history.add(&mut editor, line.trim());
            let command = match line.parse::<DotCommand>() {
                Ok(command) => command,
                Err(message) => {
                    eprintln!("error: {message}");
                    continue;
                }
            };
            match cancellable(&mut interrupts, runner.run_dot(command)).await {
                Some(Ok(Flow::Quit)) => break,
                Some(Ok(Flow::Continue)) => {}
                Some(Err(error)) => eprintln!("error: {}", flowsql_service::error_chain(error.as_ref())),
                None => {
                    eprintln!("cancelled");
                    runner.recover_from_cancel().await;
                }
            }
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        match input_state(&pending) {
            InputState::Empty => pending.clear(),
            InputState::Incomplete => {}
            InputState::Complete => {
                let input = std::mem::take(&mut pending);
                history.add(&mut editor, input.trim());
                match cancellable(&mut interrupts, runner.run_sql(&input)).await {
                    Some(Ok(())) => {}
                    Some(Err(error)) => eprintln!("error: {}", flowsql_service::error_chain(error.as_ref())),
                    None => {
                        eprintln!("query cancelled");
                        runner.recover_from_cancel().await;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `work` until it ends or Ctrl-C comes; `None` if cancelled (`work`
/// is dropped, which cancels the query it runs).
async fn cancellable<T>(interrupts: &mut Interrupts, work: impl Future<Output = T>) -> Option<T> {
    // A Ctrl-C from before this command does not cancel it.
    interrupts.clear();
    tokio::select! {
        result = work => Some(result),
        () = interrupts.next() => None,
    }
}

/// The history file, appended to after each entry.
struct History {
    path: Option<PathBuf>,
}

impl History {
    fn load(editor: &mut Editor<ShellHelper, DefaultHistory>, path: Option<PathBuf>) -> History {
        if let Some(path) = &path {
            match editor.load_history(path) {
                Ok(()) => {}
                Err(ReadlineError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => eprintln!("warning: cannot read the history in {}: {error}", path.display()),
            }
        }
        History { path }
    }

    fn add(&mut self, editor: &mut Editor<ShellHelper, DefaultHistory>, entry: &str) {
        if !matches!(editor.add_history_entry(entry), Ok(true)) {
            return;
        }
        let Some(path) = &self.path else { return };
        if let Err(error) = save(editor, path) {
            eprintln!("warning: history is not saved: {}", flowsql_service::error_chain(error.as_ref()));
            self.path = None;
        }
    }
}

fn save(editor: &mut Editor<ShellHelper, DefaultHistory>, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    editor.append_history(path).with_context(|| format!("cannot write {}", path.display()))
}
