//! The bound on a stop: a service waits for its store to commit every row
//! until `capture.shutdown_timeout` after the stop began, and not at all
//! after a second SIGINT or SIGTERM.

use std::future::Future;

use tokio::time::Instant;

/// Why a stop was cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The deadline passed.
    TimedOut,
    /// A second stop request, by this signal.
    Again(&'static str),
}

/// Waits for `done` until `deadline` (`None`: no deadline), and only until
/// `again` (the next stop request) completes.
pub async fn within<T>(
    done: impl Future<Output = T>,
    deadline: Option<Instant>,
    again: impl Future<Output = &'static str>,
) -> Result<T, Cut> {
    let timeout = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = done => Ok(done),
        () = timeout => Err(Cut::TimedOut),
        signal = again => Err(Cut::Again(signal)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn never<T>() -> impl Future<Output = T> {
        std::future::pending()
    }

    async fn after<T>(wait: Duration, value: T) -> T {
        tokio::time::sleep(wait).await;
        value
    }

    #[tokio::test]
    async fn a_stop_that_finishes_in_time_is_not_cut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(within(after(Duration::from_millis(20), 42), Some(deadline), never()).await, Ok(42));
        assert_eq!(within(async { 7 }, None, never()).await, Ok(7));
    }

    #[tokio::test]
    async fn a_stop_is_cut_at_its_deadline() {
        let began = Instant::now();
        let result = within(never::<()>(), Some(began + Duration::from_millis(50)), never()).await;
        assert_eq!(result, Err(Cut::TimedOut));
        let took = began.elapsed();
        assert!(Duration::from_millis(50) <= took && took < Duration::from_secs(5), "{took:?}");
        // A deadline already past cuts at once.
        let began = Instant::now();
        let result = within(never::<()>(), Some(began - Duration::from_secs(1)), never()).await;
        assert_eq!(result, Err(Cut::TimedOut));
        assert!(began.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_second_signal_cuts_the_stop_at_once() {
        let began = Instant::now();
        let again = after(Duration::from_millis(20), "SIGTERM");
        let result = within(never::<()>(), Some(began + Duration::from_secs(10)), again).await;
        assert_eq!(result, Err(Cut::Again("SIGTERM")));
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        // Without a deadline too.
        let result = within(never::<()>(), None, async { "SIGINT" }).await;
        assert_eq!(result, Err(Cut::Again("SIGINT")));
    }
}
