//! `flowsql config`: the configuration in effect, as TOML, with the source
//! of each value (flag, environment variable, file, default).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

use flowsql_service::Config;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(config.to_toml().as_bytes()).context("failed to write to stdout")?;
    out.flush().context("failed to write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
