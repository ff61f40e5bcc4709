//! A log destination for the interactive shell, whose terminal belongs to
//! the user: a file, created (with its directory) only when the first message
//! comes, and silently nothing if it cannot be opened.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Appends log lines to a file opened on first use.
#[derive(Debug)]
pub struct LazyFile {
    path: PathBuf,
    file: OnceLock<Option<Mutex<File>>>,
}

impl LazyFile {
    pub fn new(path: PathBuf) -> Self {
        LazyFile { path, file: OnceLock::new() }
    }

    fn file(&self) -> Option<&Mutex<File>> {
        self.file
            .get_or_init(|| {
                if let Some(dir) = self.path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                OpenOptions::new().create(true).append(true).open(&self.path).ok().map(Mutex::new)
            })
            .as_ref()
    }
}

/// One log event's writer: the locked file, or nothing.
#[derive(Debug)]
pub struct LogWriter<'a>(Option<MutexGuard<'a, File>>);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LazyFile {
    type Writer = LogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        // A poisoned lock only means another thread panicked mid-line.
        LogWriter(self.file().map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_appears_with_the_first_message() {
        let dir = std::env::temp_dir().join(format!("flowsql-log-test-{}", std::process::id()));
        let path = dir.join("state/shell.log");
        let _ = std::fs::remove_dir_all(&dir);
        let log = LazyFile::new(path.clone());
        assert!(!path.exists());
        log.make_writer().write_all(b"one\n").expect("write");
        log.make_writer().write_all(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one\ntwo\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_path_drops_messages() {
        let log = LazyFile::new(PathBuf::from("/proc/flowsql-cannot-exist/shell.log"));
        log.make_writer().write_all(b"lost\n").expect("write");
    }
}
