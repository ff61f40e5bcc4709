//! The HTTP routes: the page, its assets and the JSON API the views use.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /assets/NAME` | an embedded script or style sheet |
//! | `GET /api/info` | tables and columns, completion words, limits, what the views can show |
//! | `GET /api/map?FILTERS` | nodes and edges (the heaviest [`views::MAX_EDGES`]) |
//! | `GET /api/timeline?FILTERS&stack=direction\|destination` | flows per time bucket, per series |
//! | `GET /api/flows?FILTERS&local=..&remote=..` | the newest flows of a node or an edge |
//! | `POST /api/sql` `{"sql": ...}` | the result of one read statement, every cell as text |
//! | `POST /api/sql/csv`, `/api/sql/parquet` | the same result as a file |
//! | `GET /api/events` | server-sent events: `flows` when new flows arrived |
//!
//! FILTERS: `last=1h` (or `since=MS&until=MS`), `direction`, `host`, `port`.
//! Errors are JSON `{"kind": ..., "message": ...}` (with `line` and `column`
//! where the SQL says where), status 400.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use flowsql_query::Session;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::access::{self, Access};
use crate::assets;
use crate::live::{self, ChangeFeed};
use crate::statement::{self, Limits, SqlError};
use crate::views::{self, Columns, FlowsParams, Table, TimelineParams};

/// Queries running at once at most; more wait their turn.
const CONCURRENT_QUERIES: usize = 4;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    session: Arc<Session>,
    columns: Columns,
    limits: Limits,
    capturing: bool,
    feed: ChangeFeed,
    queries: Semaphore,
    /// Names of addresses, kept across the views' calls.
    names: views::Names,
}

impl AppState {
    pub fn new(session: Arc<Session>, limits: Limits, capturing: bool, feed: ChangeFeed) -> Self {
        let columns = Columns::of(&session);
        // Names keep their place in the SQL, so that errors can say where.
        session.context().state_ref().write().config_mut().options_mut().sql_parser.collect_spans = true;
        AppState {
            session,
            columns,
            limits,
            capturing,
            feed,
            queries: Semaphore::new(CONCURRENT_QUERIES),
            names: views::Names::default(),
        }
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }
}

type Shared = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>, access: Access) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/info", get(info))
        .route("/api/map", get(map))
        .route("/api/timeline", get(timeline))
        .route("/api/flows", get(flows))
        .route("/api/sql", post(sql))
        .route("/api/sql/csv", post(sql_csv))
        .route("/api/sql/parquet", post(sql_parquet))
        .route("/api/events", get(events))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// An error as the page shows it.
struct Failure(SqlError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = match self.0 {
            SqlError::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(self.0)).into_response()
    }
}

impl From<SqlError> for Failure {
    fn from(error: SqlError) -> Self {
        Failure(error)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TableInfo {
    name: &'static str,
    description: &'static str,
    columns: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    version: &'static str,
    capturing: bool,
    columns: Columns,
    max_rows: usize,
    timeout_seconds: f64,
    tables: Vec<TableInfo>,
    /// The shell's completion words: columns, tables, functions, keywords.
    words: Vec<String>,
    /// The newest flow, milliseconds since the epoch.
    newest: Option<i64>,
}

async fn info(State(state): Shared) -> Result<Json<Info>, Failure> {
    let tables: Vec<TableInfo> = state
        .session
        .tables()
        .iter()
        .map(|t| TableInfo {
            name: t.name,
            description: t.description,
            columns: t.schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
        .collect();
    let mut words: Vec<String> = tables.iter().flat_map(|t| t.columns.iter().cloned()).collect();
    words.extend(tables.iter().map(|t| t.name.to_owned()));
    words.extend(state.session.function_names());
    words.extend(ALL_KEYWORDS.iter().map(|k| (*k).to_owned()));
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(w.to_lowercase()));
    let newest = {
        let _permit = state.queries.acquire().await;
        views::newest(&state.session, state.limits).await?
    };
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION"),
        capturing: state.capturing,
        columns: state.columns,
        max_rows: state.limits.max_rows,
        timeout_seconds: state.limits.timeout.as_secs_f64(),
        tables,
        words,
        newest,
    }))
}

async fn map(
    State(state): Shared,
    Query(filters): Query<views::Filters>,
) -> Result<Json<views::MapView>, Failure> {
    let range = filters.range(live::now_ms())?;
    let _permit = state.queries.acquire().await;
    Ok(Json(
        views::map_named(&state.session, &state.names, state.columns, &filters, range, state.limits).await?,
    ))
}

async fn timeline(
    State(state): Shared,
    Query(filters): Query<views::Filters>,
    Query(params): Query<TimelineParams>,
) -> Result<Json<views::TimelineView>, Failure> {
    let range = filters.range(live::now_ms())?;
    let _permit = state.queries.acquire().await;
    Ok(Json(
        views::timeline_named(
            &state.session,
            &state.names,
            state.columns,
            &filters,
            &params,
            range,
            state.limits,
        )
        .await?,
    ))
}

async fn flows(
    State(state): Shared,
    Query(filters): Query<views::Filters>,
    Query(params): Query<FlowsParams>,
) -> Result<Json<Table>, Failure> {
    let range = filters.range(live::now_ms())?;
    let _permit = state.queries.acquire().await;
    Ok(Json(views::flows(&state.session, state.columns, &filters, &params, range, state.limits).await?))
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SqlAnswer {
    #[serde(flatten)]
    table: Table,
    row_count: usize,
    elapsed_ms: f64,
}

async fn answer(state: &AppState, sql: &str) -> Result<statement::Answer, SqlError> {
    let _permit = state.queries.acquire().await;
    statement::run_read_only(&state.session, sql, state.limits).await
}

async fn sql(State(state): Shared, Json(request): Json<SqlRequest>) -> Result<Json<SqlAnswer>, Failure> {
    let answer = answer(&state, &request.sql).await?;
    Ok(Json(SqlAnswer {
        table: Table::from_batches(&answer.schema, &answer.batches),
        row_count: answer.rows,
        elapsed_ms: answer.elapsed.as_secs_f64() * 1e3,
    }))
}

fn download(content_type: &'static str, name: &'static str, body: Vec<u8>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

async fn sql_csv(State(state): Shared, Json(request): Json<SqlRequest>) -> Result<Response, Failure> {
    let answer = answer(&state, &request.sql).await?;
    let names: Vec<&str> = answer.schema.fields().iter().map(|f| f.name().as_str()).collect();
    let text = crate::cells::csv(&names, &answer.batches);
    Ok(download("text/csv; charset=utf-8", "flowsql.csv", text.into_bytes()))
}

async fn sql_parquet(State(state): Shared, Json(request): Json<SqlRequest>) -> Result<Response, Failure> {
    let answer = answer(&state, &request.sql).await?;
    let failed = |e: datafusion::parquet::errors::ParquetError| SqlError::Failed {
        message: format!("cannot write the result as Parquet: {e}"),
        line: None,
        column: None,
    };
    let mut bytes = Vec::new();
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut bytes, answer.schema.clone(), None)
            .map_err(failed)?;
    for batch in &answer.batches {
        writer.write(batch).map_err(failed)?;
    }
    writer.close().map_err(failed)?;
    Ok(download("application/vnd.apache.parquet", "flowsql.parquet", bytes))
}

async fn events(State(state): Shared) -> Response {
    state.feed.events().into_response()
}
