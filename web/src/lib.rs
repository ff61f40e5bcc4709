//! The web view of `flowsql serve`: one page with three views (a service
//! map, a timeline of connections and a SQL editor) and the JSON API they
//! use, over one [`flowsql_query::Session`].
//!
//! - [`access`]: who may ask: loopback listeners answer only requests for a
//!   loopback host name, any other listener only requests carrying its token;
//!   the security headers (a strict Content-Security-Policy) of every answer.
//! - [`assets`]: the page and its vendored scripts, embedded in the binary.
//! - [`statement`]: which SQL the SQL view may run (reads only) and the
//!   time and row limits it runs under.
//! - [`views`]: the map, timeline and flow-list queries, aggregated by
//!   DataFusion (the browser only draws), using the attribution and
//!   connection-end columns where the session has them.
//! - [`cells`]: every value as the text the CLI's CSV holds.
//! - [`live`]: a change feed (server-sent events, at most once a second)
//!   telling open pages that flows arrived.
//! - [`api`]: the HTTP routes.

pub mod access;
pub mod api;
pub mod assets;
pub mod cells;
pub mod live;
pub mod statement;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowsql_query::Session;

pub use access::{Access, Token};
pub use statement::Limits;

/// Something that kept the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot resolve the listen address {address}")]
    Resolve {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the listen address {address} resolves to no address")]
    NoAddress { address: String },
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token must be at least {min} letters, digits, '-', '_', '.' or '~'",
        min = access::MIN_TOKEN_LEN
    )]
    BadToken,
    #[error("cannot generate a token")]
    Random(#[source] getrandom::Error),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on (port 0: any free port).
    pub listen: String,
    /// The token a non-loopback listener requires; `None` generates one
    /// (ignored on loopback, which needs none).
    pub token: Option<String>,
    pub limits: Limits,
    /// Whether this process captures (the page says "live").
    pub capturing: bool,
    /// How often the change feed looks for new flows.
    pub poll_every: Duration,
}

impl ServeOptions {
    pub fn new(listen: impl Into<String>) -> Self {
        ServeOptions {
            listen: listen.into(),
            token: None,
            limits: Limits::default(),
            capturing: false,
            poll_every: Duration::from_secs(1),
        }
    }
}

/// A bound, not yet running server: its address and access are known, so
/// the caller can print them before serving.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    access: Access,
    state: Arc<api::AppState>,
}

impl Server {
    /// Resolves and binds `options.listen`; a non-loopback address gets a
    /// token (the one given, or a new random one).
    pub async fn bind(session: Arc<Session>, options: ServeOptions) -> Result<Server, WebError> {
        let candidates: Vec<SocketAddr> = tokio::net::lookup_host(&options.listen)
            .await
            .map_err(|source| WebError::Resolve { address: options.listen.clone(), source })?
            .collect();
        let first =
            *candidates.first().ok_or_else(|| WebError::NoAddress { address: options.listen.clone() })?;
        let listener = tokio::net::TcpListener::bind(first)
            .await
            .map_err(|source| WebError::Bind { address: first, source })?;
        let address = listener.local_addr().map_err(|source| WebError::Bind { address: first, source })?;
        let access = Access::for_listener(address, options.token.as_deref())?;
        let feed = live::ChangeFeed::start(Arc::clone(&session), options.poll_every);
        let state = Arc::new(api::AppState::new(session, options.limits, options.capturing, feed));
        Ok(Server { listener, address, access, state })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The address to open in a browser (with the token, when one is
    /// needed; the page then keeps it in a cookie and drops it from the URL).
    pub fn url(&self) -> String {
        let host = match self.address {
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
            SocketAddr::V4(v4) => v4.to_string(),
        };
        match &self.access {
            Access::Loopback => format!("http://{host}/"),
            Access::Token(token) => format!("http://{host}/?token={}", token.as_str()),
        }
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let router = api::router(Arc::clone(&self.state), self.access.clone());
        // Pages' event streams end when the server stops, or it would wait for them.
        let stop = self.state.feed().stopper();
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tracing::info!(address = %self.address, "serving the web view");
        axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(WebError::Serve)
    }
}
