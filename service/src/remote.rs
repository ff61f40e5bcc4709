//! Object storage (`export.remote = "s3://bucket/prefix"`): the client,
//! the object names, and the uploader that puts every exported file there
//! exactly once.
//!
//! # Names
//! A file `<table>/date=D/hour=H/part-X.parquet` of the data directory is
//! the object `<prefix>/<table>/host=<host>/date=D/hour=H/part-X.parquet`,
//! where `<host>` is the `hostName` of its rows made safe for a path
//! ([`path_safe_host`]). The name depends on the file alone, so uploading
//! it again (a retry, a restart after a crash) replaces the object with the
//! same bytes instead of adding a second one.
//!
//! # Exactly once, nothing partial
//! Each file goes up in one `PUT` (no multipart upload: an S3 object is
//! visible to readers only once its `PUT` completed, whole), and its
//! manifest row records `uploadedAt` only after the store acknowledged it.
//! A crash between the two uploads the file again, under the same name
//! (a `HEAD` first skips it when the object is there with its size).
//!
//! # Failures
//! An unreachable or refusing store never blocks the capture or the local
//! export: the uploader is a thread of its own that works from the manifest.
//! After a failure it waits (1 s, doubling up to 5 min) and tries the same
//! file again; the error is logged once when failures start, recorded for
//! `flowsql status` at every attempt and shown in the metrics, and the
//! recovery is logged when uploads work again. Local retention keeps every file not
//! uploaded yet.
//!
//! # Credentials
//! The usual AWS chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
//! (`AWS_SESSION_TOKEN`), then the shared files (`~/.aws/credentials`
//! and `~/.aws/config`, profile `AWS_PROFILE` or `default`), then web
//! identity, container and instance metadata credentials. `AWS_REGION`
//! (or the profile's region) picks the region; `export.remote_endpoint`
//! (or `AWS_ENDPOINT_URL`) an S3-compatible store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig};

use flowsql_store::{LastUpload, PendingUpload, Store};

/// Why object storage cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url:?} is not s3://BUCKET/PREFIX")]
    InvalidUrl { url: String },
    #[error("failed to configure object storage {url}")]
    Configure {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to upload {key} to {url}")]
    Upload {
        url: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("failed to start the uploader's runtime")]
    Runtime(#[source] std::io::Error),
}

/// A bucket and a prefix in it, with a client.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `s3://bucket/prefix`, as configured (no trailing slash).
    pub url: String,
    pub bucket: String,
    /// The prefix without slashes at either end; may be empty.
    pub prefix: String,
    pub store: Arc<dyn ObjectStore>,
}

/// Splits `s3://bucket/prefix` into bucket and prefix.
pub fn parse_url(url: &str) -> Result<(String, String), RemoteError> {
    let invalid = || RemoteError::InvalidUrl { url: url.to_owned() };
    let rest = url.strip_prefix("s3://").ok_or_else(invalid)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid());
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

impl Remote {
    /// A client for `url` (`s3://bucket/prefix`), with credentials and
    /// region from the AWS chain and `endpoint` instead of AWS's if given
    /// (`http://` allowed: S3-compatible stores on a private network).
    pub fn new(url: &str, endpoint: Option<&str>) -> Result<Remote, RemoteError> {
        let (bucket, prefix) = parse_url(url)?;
        let configure = |source| RemoteError::Configure { url: url.to_owned(), source };
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket).with_retry(RetryConfig {
            // The uploader retries with its own backoff; a request gives up
            // soon, so that a failure is seen (status, metrics) at once.
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        });
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let profile = SharedProfile::load();
        if env("AWS_ACCESS_KEY_ID").is_none()
            && let Some((key, secret, token)) = profile.credentials()
        {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
            builder = builder.with_region(profile.region().unwrap_or_else(|| "us-east-1".to_owned()));
        }
        if let Some(endpoint) = endpoint.map(str::to_owned).or_else(|| env("AWS_ENDPOINT_URL")) {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_config(AmazonS3ConfigKey::Endpoint, endpoint);
        }
        let store = builder.build().map_err(configure)?;
        Ok(Remote { url: url.to_owned(), bucket, prefix, store: Arc::new(store) })
    }

    /// The object name of the data directory's file `relative`
    /// (`<table>/date=D/hour=H/name`) from host `host` (see the module
    /// documentation).
    pub fn object_name(&self, host: &str, relative: &str) -> String {
        let (table, rest) = relative.split_once('/').unwrap_or((relative, ""));
        let key = format!("{table}/host={}/{rest}", path_safe_host(host));
        if self.prefix.is_empty() { key } else { format!("{}/{key}", self.prefix) }
    }

    /// Uploads the file at `path` as `key` in one `PUT`, unless an object of
    /// its size is there already. Returns whether it sent the bytes.
    pub async fn upload(&self, path: &Path, key: &str) -> Result<bool, RemoteError> {
        let upload_err = |source| RemoteError::Upload { url: self.url.clone(), key: key.to_owned(), source };
        let location = ObjectPath::from(key);
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| RemoteError::Read { path: path.to_owned(), source })?;
        match self.store.head(&location).await {
            Ok(meta) if meta.size == bytes.len() as u64 => return Ok(false),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(upload_err(e)),
        }
        self.store.put(&location, PutPayload::from(bytes)).await.map_err(upload_err)?;
        Ok(true)
    }
}

/// `host` as a path segment: ASCII letters, digits, `.`, `-` and `_` kept,
/// anything else (`/`, `=`, spaces, non-ASCII) becomes `_`; never empty,
/// never `.` or `..`.
pub fn path_safe_host(host: &str) -> String {
    let safe: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    match safe.as_str() {
        "" | "." | ".." => format!("_{safe}"),
        _ => safe,
    }
}

/// The shared AWS files (`~/.aws/credentials`, `~/.aws/config`), as far as
/// static keys and the region go.
#[derive(Debug, Default)]
struct SharedProfile {
    credentials: Vec<(String, String)>,
    config: Vec<(String, String)>,
}

impl SharedProfile {
    fn load() -> SharedProfile {
        let profile = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()).unwrap_or("default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| {
            std::env::var_os(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        let read = |path: Option<PathBuf>, section: &str| {
            path.and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| ini_section(&t, section))
                .unwrap_or_default()
        };
        let config_section =
            if profile == "default" { profile.clone() } else { format!("profile {profile}") };
        SharedProfile {
            credentials: read(file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &profile),
            config: read(file("AWS_CONFIG_FILE", ".aws/config"), &config_section),
        }
    }

    fn get<'a>(entries: &'a [(String, String)], key: &str) -> Option<&'a str> {
        entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn credentials(&self) -> Option<(String, String, Option<String>)> {
        let key = Self::get(&self.credentials, "aws_access_key_id")?;
        let secret = Self::get(&self.credentials, "aws_secret_access_key")?;
        let token = Self::get(&self.credentials, "aws_session_token").map(str::to_owned);
        Some((key.to_owned(), secret.to_owned(), token))
    }

    fn region(&self) -> Option<String> {
        Self::get(&self.config, "region").map(str::to_owned)
    }
}

/// The `key = value` lines of `[section]` of an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((key, value)) = line.split_once('=') {
            entries.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    entries
}

/// The first wait after a failure, doubled after each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often the uploader looks for files when nothing woke it.
const IDLE_POLL: Duration = Duration::from_secs(10);

/// What wakes the uploader thread.
#[derive(Debug, Clone, Copy)]
enum Wake {
    /// New files may be in the manifest.
    Exported,
    Stop,
}

/// The uploader thread of a capture (see the module documentation).
#[derive(Debug)]
pub struct Uploader {
    wake: Sender<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Uploader {
    /// Starts uploading the files of the data directory `dir` from host
    /// `host` to `remote`, and records the remote in the store (so that
    /// retention keeps what is not uploaded).
    pub fn start(dir: &Path, remote: Remote, host: String) -> Result<Uploader, crate::ServiceError> {
        let mut store =
            Store::open_without_recovery(dir).map_err(|e| crate::ServiceError::Store(Box::new(e)))?;
        store.set_upload_remote(Some(&remote.url)).map_err(|e| crate::ServiceError::Store(Box::new(e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::ServiceError::Start { what: "the uploader's runtime", source })?;
        let (wake, woken) = std::sync::mpsc::channel();
        tracing::info!(remote = %remote.url, host = %path_safe_host(&host), "uploading exported files");
        let thread = std::thread::Builder::new()
            .name("flowsql-upload".into())
            .spawn(move || upload_loop(store, &runtime, &remote, &host, &woken))
            .map_err(|source| crate::ServiceError::Start { what: "the uploader thread", source })?;
        Ok(Uploader { wake, thread: Some(thread) })
    }

    /// Tells the uploader that an export added files.
    pub fn exported(&self) {
        let _ = self.wake.send(Wake::Exported);
    }

    /// A callback for [`flowsql_store::ExportSchedule::after_export`].
    pub fn notifier(&self) -> impl Fn() + Send + Sync + 'static {
        let wake = std::sync::Mutex::new(self.wake.clone());
        move || {
            let sender = wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = sender.send(Wake::Exported);
        }
    }

    /// Stops the thread after the file it is uploading, if any.
    pub fn stop(mut self) {
        self.stop_now();
    }

    /// Tells the thread to stop, without waiting for an upload in flight
    /// (it is repeated, under the same name, by the next start).
    fn stop_now(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take()
            && thread.is_finished()
            && thread.join().is_err()
        {
            tracing::warn!("the uploader thread panicked");
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The `hostName` of rows and uploads: the `host_name` setting, else the
/// machine's name.
pub fn host_name(config: &crate::Config) -> String {
    config.host_name.value.clone().unwrap_or_else(flowsql_capture::assemble::host_name)
}

/// [`upload_backlog`] on a runtime of its own (`flowsql export`).
pub fn upload_backlog_now(store: &mut Store, remote: &Remote, host: &str) -> Result<u64, RemoteError> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RemoteError::Runtime)?;
    upload_backlog(store, &runtime, remote, host)
}

/// Uploads the backlog of `store` once, stopping at the first failure.
/// Returns the files uploaded, or the failure (also recorded in the store).
pub fn upload_backlog(
    store: &mut Store,
    runtime: &tokio::runtime::Runtime,
    remote: &Remote,
    host: &str,
) -> Result<u64, RemoteError> {
    let mut uploaded = 0;
    loop {
        let batch = match store.pending_uploads(64) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "failed to list the files to upload");
                return Ok(uploaded);
            }
        };
        if batch.is_empty() {
            return Ok(uploaded);
        }
        for file in batch {
            match upload_one(store, runtime, remote, host, &file) {
                Ok(()) => uploaded += 1,
                Err(e) => {
                    record(store, Some(crate::error_chain(&e)));
                    return Err(e);
                }
            }
        }
        record(store, None);
    }
}

fn upload_one(
    store: &mut Store,
    runtime: &tokio::runtime::Runtime,
    remote: &Remote,
    host: &str,
    file: &PendingUpload,
) -> Result<(), RemoteError> {
    let path = store.dir().root().join(&file.relative);
    let key = remote.object_name(host, &file.relative);
    let sent = runtime.block_on(remote.upload(&path, &key))?;
    match store.mark_uploaded(file.id, now_ns()) {
        Ok(_) => {}
        // Uploaded again (same name, same bytes) after the next start.
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), key, "failed to record an upload"),
    }
    tracing::debug!(key, bytes = file.bytes, sent, "uploaded");
    Ok(())
}

fn record(store: &mut Store, error: Option<String>) {
    let now = now_ns();
    let previous = store.upload_status().ok().flatten().and_then(|s| s.last);
    let last_success_ns = if error.is_none() { Some(now) } else { previous.and_then(|p| p.last_success_ns) };
    if let Err(e) = store.record_upload(&LastUpload { at_ns: now, error, last_success_ns }) {
        tracing::warn!(error = %crate::error_chain(&e), "failed to record the upload outcome");
    }
}

fn upload_loop(
    mut store: Store,
    runtime: &tokio::runtime::Runtime,
    remote: &Remote,
    host: &str,
    woken: &Receiver<Wake>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut failing: Option<String> = None;
    loop {
        let wait = match upload_backlog(&mut store, runtime, remote, host) {
            Ok(uploaded) => {
                if let Some(error) = failing.take() {
                    tracing::info!(uploaded, previous_error = %error, "uploads recovered");
                } else if uploaded > 0 {
                    tracing::debug!(uploaded, "uploaded the backlog");
                }
                backoff = FIRST_BACKOFF;
                IDLE_POLL
            }
            Err(e) => {
                let error = crate::error_chain(&e);
                // Once when failures start (a message holds timings, so
                // it differs at every attempt); the attempts after at debug.
                if failing.is_none() {
                    tracing::warn!(
                        retry_in = %humantime::format_duration(backoff),
                        "upload failed, files stay queued: {error}"
                    );
                } else {
                    tracing::debug!(retry_in = %humantime::format_duration(backoff), "upload failed again: {error}");
                }
                failing = Some(error);
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        // While failing, an export does not cut the wait short: only a stop.
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match woken.recv_timeout(left) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Exported) if failing.is_none() => break,
                Ok(Wake::Exported) => continue,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_names_and_hosts() {
        assert_eq!(parse_url("s3://flows/fleet/x/").expect("valid"), ("flows".into(), "fleet/x".into()));
        assert_eq!(parse_url("s3://flows").expect("valid"), ("flows".into(), String::new()));
        assert!(parse_url("gs://flows").is_err());
        assert_eq!(path_safe_host("web-1.example"), "web-1.example");
        assert_eq!(path_safe_host("a/b=c d"), "a_b_c_d");
        assert_eq!(path_safe_host(".."), "_..");
        assert_eq!(path_safe_host(""), "_");
    }

    #[test]
    fn profiles() {
        let text =
            "[default]\naws_access_key_id = A\n[other]\naws_access_key_id=B\naws_secret_access_key = S\n";
        assert_eq!(
            ini_section(text, "other"),
            [("aws_access_key_id".into(), "B".into()), ("aws_secret_access_key".into(), "S".into())]
        );
        assert_eq!(ini_section(text, "default").len(), 1);
    }
}
