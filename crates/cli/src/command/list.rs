//! `wayline list`: executions, newest first, filtered by status, workflow and age.

use std::time::Duration;

use wayline_backend::Location;
use wayline_journal::{Status, Time};
use wayline_runtime::clock::Clock;
use wayline_store::{Filter, Store};

use serde_json::Value;

use crate::error::{Error, Exit, Result};
use crate::remote::{Remote, Target};

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
    pub target: Target,
}

/// One line of the table.
struct Row {
    id: String,
    workflow: String,
    status: Status,
    created_at: Time,
    started_at: Option<Time>,
    finished_at: Option<Time>,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let mut filter =
        Filter { workflow: args.workflow, limit: Some(args.limit), ..Filter::default() };
    filter.status = statuses(&args.status)?;
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
    let rows = records.into_iter().map(|record| Row {
        id: record.id,
        workflow: record.workflow,
        status: record.status,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
    });
    table(rows, now)
}

/// `list --server`: the server's listing, page after page up to `--limit`. `--json` prints the
/// API's summaries of the executions (the server keeps its leases to itself).
pub async fn remote(args: Args, remote: Remote) -> Result<Exit> {
    let statuses = statuses(&args.status)?;
    let now = Clock::system().now();
    let mut query = Vec::new();
    if !statuses.is_empty() {
        let names: Vec<&str> = statuses.iter().map(|status| status.name()).collect();
        query.push(format!("status={}", names.join(",")));
    }
    if let Some(workflow) = &args.workflow {
        query.push(format!("workflow={}", crate::remote::segment(workflow)));
    }
    if let Some(since) = &args.since {
        // Checked here, so that a mistake reads as it does without --server.
        let since = parse_since(since, now)?;
        query.push(format!("since={}", crate::remote::segment(&since.rfc3339())));
    }
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    while items.len() < args.limit {
        let mut page = query.clone();
        page.push(format!("limit={}", (args.limit - items.len()).min(1000)));
        if let Some(cursor) = &cursor {
            page.push(format!("cursor={}", crate::remote::segment(cursor)));
        }
        let answer = remote.get(&format!("/api/v1/executions?{}", page.join("&"))).await?;
        let found = answer.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        let done = found.is_empty();
        items.extend(found);
        cursor = answer.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
        if done || cursor.is_none() {
            break;
        }
    }
    items.truncate(args.limit);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(Exit::Success);
    }
    if items.is_empty() {
        say!("no executions in {}", remote.describe());
        return Ok(Exit::Success);
    }
    let rows = items.iter().map(row_of).collect::<Result<Vec<_>>>()?;
    table(rows.into_iter(), now)
}

/// An execution summary of the API, as a row.
fn row_of(item: &Value) -> Result<Row> {
    let bad = || Error::infrastructure(format!("the server listed an execution oddly: {item}"));
    let text = |name: &str| item.get(name).and_then(Value::as_str);
    let time = |name: &str| -> Result<Option<Time>> {
        text(name).map(|text| Time::parse(text).map_err(|_| bad())).transpose()
    };
    Ok(Row {
        id: text("id").ok_or_else(bad)?.to_owned(),
        workflow: text("workflow").ok_or_else(bad)?.to_owned(),
        status: text("status").and_then(Status::parse).ok_or_else(bad)?,
        created_at: time("created_at")?.ok_or_else(bad)?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
    })
}

fn statuses(names: &[String]) -> Result<Vec<Status>> {
    names
        .iter()
        .map(|status| {
            Status::parse(status).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown status `{status}`; use pending, running, paused, escalated, succeeded, failed, cancelled or rolled_back"
                ))
            })
        })
        .collect()
}

fn table(rows: impl Iterator<Item = Row>, now: Time) -> Result<Exit> {
    outln!(
        "{:<26}  {:<20}  {:<11}  {:<20}  {:>9}",
        "ID",
        "WORKFLOW",
        "STATUS",
        "CREATED",
        "DURATION"
    )?;
    for record in rows {
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
