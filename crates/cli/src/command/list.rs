//! `wayline list`: executions, newest first, filtered by status, workflow and age.

use std::time::Duration;

use wayline_backend::Location;
use wayline_journal::{Status, Time};
use wayline_runtime::clock::Clock;
use wayline_store::{Filter, Store};

use super::Db;
use crate::error::{Error, Exit, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these statuses (repeatable): pending, running, paused, escalated, succeeded,
    /// failed, cancelled, rolled_back.
    #[arg(long, value_name = "STATUS")]
    status: Vec<String>,
    /// Only executions of this workflow.
    #[arg(long, value_name = "NAME")]
    workflow: Option<String>,
    /// Only executions created since: a duration (`2h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the records as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub db: Db,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let mut filter =
        Filter { workflow: args.workflow, limit: Some(args.limit), ..Filter::default() };
    for status in &args.status {
        let parsed = Status::parse(status).ok_or_else(|| {
            Error::invalid(format!(
                "unknown status `{status}`; use pending, running, paused, escalated, succeeded, failed, cancelled or rolled_back"
            ))
        })?;
        filter.status.push(parsed);
    }
    let now = Clock::system().now();
    if let Some(since) = &args.since {
        filter.since = Some(parse_since(since, now)?);
    }
    let store = wayline_backend::open(&location).await?;
    let records = store.list(filter).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(Exit::Success);
    }
    if records.is_empty() {
        say!("no executions in {}", location.describe());
        return Ok(Exit::Success);
    }
    outln!(
        "{:<26}  {:<20}  {:<11}  {:<20}  {:>9}",
        "ID",
        "WORKFLOW",
        "STATUS",
        "CREATED",
        "DURATION"
    )?;
    for record in records {
        let duration = match (record.started_at, record.finished_at) {
            (Some(start), Some(end)) => short(end.since(start)),
            (Some(start), None) => short(now.since(start)),
            _ => "-".into(),
        };
        let created = record.created_at.rfc3339();
        outln!(
            "{:<26}  {:<20}  {:<11}  {:<20}  {:>9}",
            record.id,
            record.workflow,
            record.status.name(),
            &created[..19.min(created.len())],
            duration
        )?;
    }
    Ok(Exit::Success)
}

/// `7d`, `2h` (that long ago) or an RFC 3339 time.
fn parse_since(text: &str, now: Time) -> Result<Time> {
    if let Ok(duration) = wayline_journal::duration::parse(text) {
        return Ok(Time::from_micros(now.as_micros() - duration.as_micros() as i64));
    }
    Time::parse(text).map_err(|_| {
        Error::invalid(format!("`{text}` is neither a duration (like 2h, 7d) nor an RFC 3339 time"))
    })
}

fn short(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(60) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(duration.as_millis() as u64 / 100 * 100)
    };
    wayline_journal::duration::format(rounded)
}
