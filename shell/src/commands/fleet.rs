//! `--source s3://bucket/prefix` of `flowsql query` and `flowsql shell`:
//! a session over the files a fleet uploaded (`export.remote`), with the
//! same credentials and endpoint settings as the upload.

use anyhow::Context as _;
use datafusion::execution::object_store::ObjectStoreUrl;
use flowsql_query::Session;
use flowsql_query::fleet::FleetSource;
use flowsql_service::Config;
use flowsql_service::remote::Remote;

/// A session over the fleet's files at `url`.
pub fn open(url: &str, config: &Config) -> anyhow::Result<Session> {
    let remote = Remote::new(url, config.remote_endpoint.value.as_deref())?;
    let store_url = ObjectStoreUrl::parse(format!("s3://{}", remote.bucket))
        .with_context(|| format!("{url:?} is not s3://BUCKET/PREFIX"))?;
    let source = FleetSource { url: store_url, store: remote.store, prefix: remote.prefix };
    Ok(Session::open_fleet(source, &flowsql_store::event_tables(), None)?)
}
