//! Tells open pages that flows arrived, so that the timeline and the map
//! follow a capture: a background task looks for the newest flow once per
//! `poll_every` (only while a page listens), and every page gets a
//! server-sent event when it changed, at most once per poll.
//!
//! It reads the store like any query (the newest flow of the last minutes,
//! found through the time index), so it follows this process's own capture
//! (`flowsql serve --capture`, whose rows are seen before they are
//! committed) and a `flowsql capture` service writing the same directory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use flowsql_query::Session;
use futures::Stream;
use tokio::sync::watch;

use crate::statement::Limits;
use crate::views;

/// How far back the newest flow is looked for.
const LOOK_BACK_MS: i64 = 10 * 60_000;

/// What pages are told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// The newest flow of the last minutes, milliseconds since the epoch.
    pub newest_ms: Option<i64>,
}

/// The change feed: the poller's latest observation, and a switch that ends
/// every page's stream when the server stops.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    changes: watch::Receiver<Change>,
    stopped: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
}

impl ChangeFeed {
    /// Starts the poller on the current runtime.
    pub fn start(session: Arc<Session>, poll_every: Duration) -> ChangeFeed {
        let (sender, changes) = watch::channel(Change::default());
        let (stop, stopped) = watch::channel(false);
        let mut stop_poller = stopped.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(poll_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop_poller.changed() => return,
                }
                // Only pages' own receivers count (the feed keeps one).
                if sender.receiver_count() <= 1 {
                    continue;
                }
                match newest_recent(&session).await {
                    Ok(newest_ms) => {
                        sender.send_if_modified(|change| {
                            let modified = change.newest_ms != newest_ms;
                            change.newest_ms = newest_ms;
                            modified
                        });
                    }
                    Err(error) => tracing::warn!("cannot look for new flows: {error}"),
                }
            }
        });
        ChangeFeed { changes, stopped, stop: Arc::new(stop) }
    }

    /// What ends the poller and every page's stream (`send(true)`), held
    /// apart from the feed so that it counts as no listening page.
    pub fn stopper(&self) -> Arc<watch::Sender<bool>> {
        Arc::clone(&self.stop)
    }

    /// The stream of one page: an event `flows` each time new flows arrived.
    pub fn events(&self) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        let stopped = self.stopped.clone();
        let stream = futures::stream::unfold((changes, stopped), |(mut changes, mut stopped)| async move {
            if *stopped.borrow() {
                return None;
            }
            tokio::select! {
                changed = changes.changed() => {
                    changed.ok()?;
                    let change = *changes.borrow_and_update();
                    let data = serde_json::json!({ "newest": change.newest_ms }).to_string();
                    Some((Ok(Event::default().event("flows").data(data)), (changes, stopped)))
                }
                _ = stopped.changed() => None,
            }
        });
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

/// The newest flow and the newest DNS answer of the last minutes (names
/// are committed a moment after the flows they name, and change the map).
async fn newest_recent(session: &Session) -> Result<Option<i64>, crate::statement::SqlError> {
    let since = flowsql_event::format_timestamp((now_ms() - LOOK_BACK_MS).saturating_mul(1_000_000));
    let sql = format!(
        "SELECT CAST(max(t) AS BIGINT) / 1000000 FROM (\
           SELECT max(\"timestamp\") AS t FROM flows WHERE \"timestamp\" >= TIMESTAMP '{since}' \
           UNION ALL SELECT max(\"lastSeen\") AS t FROM domains WHERE \"lastSeen\" >= TIMESTAMP '{since}')"
    );
    let limits = Limits { max_rows: 1, timeout: Duration::from_secs(10) };
    let batches = views::run(session, &sql, limits).await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        let column = b.column(0);
        crate::cells::text_at(column.as_ref(), 0).and_then(|t| t.parse().ok())
    }))
}

/// Now, milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
