//! The statements behind each [`wayline_store::Store`] operation, run on a worker's
//! connection.
//!
//! Write operations run inside the writer's batch transaction. They return
//! `rusqlite::Result<Result<T>>`: the outer error is a database failure (the batch is rolled
//! back), the inner one a refusal (not found, fenced, held) that writes nothing.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::Serialize;
use wayline_journal::Status;
use wayline_journal::{Event, Time};
use wayline_store::{
    Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Result,
    StoredRequest, Summary, TokenRecord, WorkflowVersion, check_sequence, stale_lease,
};

/// A commit with its events already turned into JSON (done by the caller, off the writer
/// thread).
pub(crate) struct Encoded {
    lease: Lease,
    events: Vec<(u64, String)>,
    summary: Summary,
    handled: Vec<u64>,
}

impl Encoded {
    pub(crate) fn new(commit: Commit) -> Result<Encoded> {
        let events = encode(&commit.events)?;
        Ok(Encoded {
            lease: commit.lease,
            events,
            summary: commit.summary,
            handled: commit.handled,
        })
    }
}

pub(crate) fn encode(events: &[Event]) -> Result<Vec<(u64, String)>> {
    events.iter().map(|event| Ok((event.seq, to_json(event)?))).collect()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| Error::Corrupt(format!("cannot encode a record as JSON: {error}")))
}

// ---------------------------------------------------------------------------------------------
// Writes.

pub(crate) fn create(
    conn: &Connection,
    execution: &NewExecution,
    events: &[(u64, String)],
) -> rusqlite::Result<Result<Lease>> {
    if exists(conn, &execution.id)? {
        return Ok(Err(Error::Exists(execution.id.clone())));
    }
    if let Some(key) = &execution.idempotency_key
        && by_idempotency_key(conn, key)?.is_some()
    {
        return Ok(Err(Error::Exists(execution.id.clone())));
    }
    let last_seq = events.last().map_or(0, |(seq, _)| *seq);
    conn.prepare_cached(
        "INSERT INTO executions (id, workflow, status, created_at, started_at, finished_at, error, last_seq, owner, lease_until, token, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11)",
    )?
    .execute(params![
        execution.id,
        execution.workflow,
        execution.summary.status.name(),
        execution.created_at.as_micros(),
        execution.summary.started_at.map(|t| t.as_micros()),
        execution.summary.finished_at.map(|t| t.as_micros()),
        execution.summary.error,
        to_i64(last_seq),
        execution.owner,
        execution.created_at.after(execution.ttl).as_micros(),
        execution.idempotency_key,
    ])?;
    insert_events(conn, &execution.id, events)?;
    Ok(Ok(Lease { execution: execution.id.clone(), owner: execution.owner.clone(), token: 1 }))
}

pub(crate) fn commit(conn: &Connection, commits: &[Encoded]) -> rusqlite::Result<Vec<Result<()>>> {
    commits.iter().map(|commit| commit_one(conn, commit)).collect()
}

fn commit_one(conn: &Connection, commit: &Encoded) -> rusqlite::Result<Result<()>> {
    let id = &commit.lease.execution;
    let summary = &commit.summary;
    let status = summary.status.name();
    let started_at = summary.started_at.map(Time::as_micros);
    let finished_at = summary.finished_at.map(Time::as_micros);
    let Some((owner, token, last_seq, same_summary)) = conn
        .prepare_cached(
            "SELECT owner, token, last_seq,
                    status = ?2 AND started_at IS ?3 AND finished_at IS ?4 AND error IS ?5
             FROM executions WHERE id = ?1",
        )?
        .query_row(params![id, status, started_at, finished_at, summary.error], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, u64>(1)?,
                row.get::<_, u64>(2)?,
                row.get::<_, bool>(3)?,
            ))
        })
        .optional()?
    else {
        return Ok(Err(Error::NotFound(id.clone())));
    };
    if token != commit.lease.token || owner.as_deref() != Some(commit.lease.owner.as_str()) {
        return Ok(Err(stale_lease(&commit.lease, owner.as_deref(), token)));
    }
    if let Err(error) = check_sequence(id, last_seq, commit.events.iter().map(|(seq, _)| *seq)) {
        return Ok(Err(error));
    }
    insert_events(conn, id, &commit.events)?;
    let new_last = to_i64(last_seq + commit.events.len() as u64);
    // Most commits leave the summary as it was (a step finished, the next one started):
    // then only `last_seq` changes, and no index of the summary's columns is rewritten.
    if same_summary {
        conn.prepare_cached("UPDATE executions SET last_seq = ?2 WHERE id = ?1")?
            .execute(params![id, new_last])?;
    } else {
        conn.prepare_cached(
            "UPDATE executions SET status = ?2, started_at = ?3, finished_at = ?4, error = ?5, last_seq = ?6 WHERE id = ?1",
        )?
        .execute(params![id, status, started_at, finished_at, summary.error, new_last])?;
    }
    if !commit.handled.is_empty() {
        let mut handled = conn
            .prepare_cached("UPDATE requests SET handled = 1 WHERE id = ?1 AND execution = ?2")?;
        for request in &commit.handled {
            handled.execute(params![to_i64(*request), id])?;
        }
    }
    Ok(Ok(()))
}

fn insert_events(conn: &Connection, id: &str, events: &[(u64, String)]) -> rusqlite::Result<()> {
    let mut insert =
        conn.prepare_cached("INSERT INTO events (execution, seq, body) VALUES (?1, ?2, ?3)")?;
    for (seq, body) in events {
        insert.execute(params![id, to_i64(*seq), body])?;
    }
    Ok(())
}

pub(crate) fn acquire(
    conn: &Connection,
    id: &str,
    owner: &str,
    until: Time,
    now: Time,
    dead_owner: Option<&str>,
) -> rusqlite::Result<Result<Lease>> {
    let Some((current, lease_until)) = conn
        .prepare_cached("SELECT owner, lease_until FROM executions WHERE id = ?1")?
        .query_row([id], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, Option<i64>>(1)?.map(Time::from_micros),
            ))
        })
        .optional()?
    else {
        return Ok(Err(Error::NotFound(id.to_owned())));
    };
    let free = match &current {
        None => true,
        Some(current) => {
            lease_until.is_none_or(|until| until <= now) || dead_owner == Some(current.as_str())
        }
    };
    if !free {
        return Ok(Err(Error::Held {
            execution: id.to_owned(),
            owner: current.unwrap_or_default(),
            until: lease_until.unwrap_or_default(),
        }));
    }
    let token = conn
        .prepare_cached("UPDATE executions SET token = token + 1, owner = ?2, lease_until = ?3 WHERE id = ?1 RETURNING token")?
        .query_row(params![id, owner, until.as_micros()], |row| row.get::<_, u64>(0))?;
    Ok(Ok(Lease { execution: id.to_owned(), owner: owner.to_owned(), token }))
}

pub(crate) fn renew(
    conn: &Connection,
    leases: &[Lease],
    until: Time,
) -> rusqlite::Result<Vec<bool>> {
    let mut renew = conn.prepare_cached(
        "UPDATE executions SET lease_until = ?4 WHERE id = ?1 AND owner = ?2 AND token = ?3",
    )?;
    leases
        .iter()
        .map(|lease| {
            Ok(renew.execute(params![
                lease.execution,
                lease.owner,
                to_i64(lease.token),
                until.as_micros()
            ])? == 1)
        })
        .collect()
}

pub(crate) fn release(conn: &Connection, lease: &Lease) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE executions SET owner = NULL, lease_until = NULL WHERE id = ?1 AND owner = ?2 AND token = ?3")?
        .execute(params![lease.execution, lease.owner, to_i64(lease.token)])?;
    Ok(())
}

pub(crate) fn request(
    conn: &Connection,
    id: &str,
    body: &str,
    now: Time,
) -> rusqlite::Result<Result<u64>> {
    if !exists(conn, id)? {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let number = conn
        .prepare_cached(
            "INSERT INTO requests (execution, body, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        )?
        .query_row(params![id, body, now.as_micros()], |row| row.get::<_, u64>(0))?;
    Ok(Ok(number))
}

pub(crate) fn append_logs(conn: &Connection, lines: &[LogLine]) -> rusqlite::Result<()> {
    // The last line number of each execution seen; `None`: no such execution.
    let mut last: HashMap<&str, Option<u64>> = HashMap::new();
    let mut insert = conn.prepare_cached(
        "INSERT INTO logs (execution, line, step, attempt, compensation, stream, time, text, item)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for line in lines {
        let number = match last.entry(line.execution.as_str()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(
                conn.prepare_cached("SELECT last_log FROM executions WHERE id = ?1")?
                    .query_row([&line.execution], |row| row.get::<_, u64>(0))
                    .optional()?,
            ),
        };
        let Some(number) = number else { continue };
        *number += 1;
        insert.execute(params![
            line.execution,
            to_i64(*number),
            line.step,
            line.attempt,
            line.kind == wayline_journal::AttemptKind::Compensation,
            line.stream,
            line.time.as_micros(),
            line.text,
            line.item,
        ])?;
    }
    let mut update = conn.prepare_cached("UPDATE executions SET last_log = ?2 WHERE id = ?1")?;
    for (id, number) in last {
        if let Some(number) = number {
            update.execute(params![id, to_i64(number)])?;
        }
    }
    Ok(())
}

pub(crate) fn gc(conn: &Connection, before: Time) -> rusqlite::Result<u64> {
    // Events, requests and logs go with their execution (ON DELETE CASCADE).
    let deleted = conn
        .prepare_cached(
            "DELETE FROM executions
             WHERE finished_at < ?1 AND status IN ('succeeded', 'failed', 'cancelled', 'rolled_back')",
        )?
        .execute([before.as_micros()])?;
    Ok(deleted as u64)
}

// ---------------------------------------------------------------------------------------------
// Reads.

const RECORD: &str = "id, workflow, status, created_at, started_at, finished_at, last_seq, owner, lease_until, error";

pub(crate) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Result<ExecutionRecord>> {
    let record = conn
        .prepare_cached(&format!("SELECT {RECORD} FROM executions WHERE id = ?1"))?
        .query_row([id], record)
        .optional()?;
    Ok(record.ok_or_else(|| Error::NotFound(id.to_owned())))
}

fn workflow_version(row: &rusqlite::Row<'_>) -> rusqlite::Result<WorkflowVersion> {
    Ok(WorkflowVersion {
        name: row.get(0)?,
        version: row.get(1)?,
        source: row.get(2)?,
        created_at: Time::from_micros(row.get(3)?),
    })
}

pub(crate) fn put_workflow(
    conn: &Connection,
    name: &str,
    source: &str,
    now: Time,
) -> rusqlite::Result<(WorkflowVersion, bool)> {
    let newest = conn
        .prepare_cached(
            "SELECT name, version, source, created_at FROM workflows WHERE name = ?1
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row([name], workflow_version)
        .optional()?;
    if let Some(newest) = &newest
        && newest.source == source
    {
        return Ok((newest.clone(), false));
    }
    let version = WorkflowVersion {
        name: name.to_owned(),
        version: newest.map_or(1, |newest| newest.version + 1),
        source: source.to_owned(),
        created_at: now,
    };
    conn.prepare_cached(
        "INSERT INTO workflows (name, version, source, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![version.name, version.version, version.source, now.as_micros()])?;
    Ok((version, true))
}

pub(crate) fn workflow_versions(
    conn: &Connection,
    name: &str,
) -> rusqlite::Result<Result<Vec<WorkflowVersion>>> {
    let versions: Vec<WorkflowVersion> = conn
        .prepare_cached(
            "SELECT name, version, source, created_at FROM workflows WHERE name = ?1 ORDER BY version",
        )?
        .query_map([name], workflow_version)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if versions.is_empty() { Err(Error::NotFound(name.to_owned())) } else { Ok(versions) })
}

pub(crate) fn workflows(conn: &Connection) -> rusqlite::Result<Vec<WorkflowVersion>> {
    conn.prepare_cached(
        "SELECT name, version, source, created_at FROM workflows AS w
         WHERE version = (SELECT max(version) FROM workflows WHERE name = w.name) ORDER BY name",
    )?
    .query_map([], workflow_version)?
    .collect()
}

pub(crate) fn delete_workflow(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM workflows WHERE name = ?1")?.execute([name])? > 0)
}

pub(crate) fn add_token(conn: &Connection, token: &TokenRecord) -> rusqlite::Result<Result<()>> {
    let added = conn
        .prepare_cached(
            "INSERT INTO tokens (name, id, hash, role, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            token.name,
            token.id,
            token.hash,
            token.role,
            token.created_at.as_micros(),
            token.expires_at.map(|t| t.as_micros()),
        ])?;
    Ok(if added == 1 { Ok(()) } else { Err(Error::Exists(token.name.clone())) })
}

fn token_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        name: row.get(0)?,
        id: row.get(1)?,
        hash: row.get(2)?,
        role: row.get(3)?,
        created_at: Time::from_micros(row.get(4)?),
        expires_at: row.get::<_, Option<i64>>(5)?.map(Time::from_micros),
    })
}

pub(crate) fn tokens(conn: &Connection) -> rusqlite::Result<Vec<TokenRecord>> {
    conn.prepare_cached(
        "SELECT name, id, hash, role, created_at, expires_at FROM tokens ORDER BY name",
    )?
    .query_map([], token_record)?
    .collect()
}

pub(crate) fn token(conn: &Connection, id: &str) -> rusqlite::Result<Option<TokenRecord>> {
    conn.prepare_cached(
        "SELECT name, id, hash, role, created_at, expires_at FROM tokens WHERE id = ?1",
    )?
    .query_row([id], token_record)
    .optional()
}

pub(crate) fn revoke_token(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.prepare_cached("DELETE FROM tokens WHERE name = ?1")?.execute([name])? > 0)
}

pub(crate) fn by_idempotency_key(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT id FROM executions WHERE idempotency_key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()
}

pub(crate) fn resolve(conn: &Connection, prefix: &str) -> rusqlite::Result<Result<String>> {
    if prefix.is_empty() {
        return Ok(Err(Error::NotFound(String::new())));
    }
    if exists(conn, prefix)? {
        return Ok(Ok(prefix.to_owned()));
    }
    // Ids sort bytewise (BINARY collation); every id starting with `prefix` lies in
    // [prefix, prefix + U+10FFFF).
    let upper = format!("{prefix}{}", char::MAX);
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM executions WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 2")?
        .query_map([prefix, &upper], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(match ids.as_slice() {
        [] => Err(Error::NotFound(prefix.to_owned())),
        [one] => Ok(one.clone()),
        _ => {
            let count: u64 = conn
                .prepare_cached("SELECT count(*) FROM executions WHERE id >= ?1 AND id < ?2")?
                .query_row([prefix, &upper], |row| row.get(0))?;
            Err(Error::Ambiguous { prefix: prefix.to_owned(), count: count as usize })
        }
    })
}

pub(crate) fn events(
    conn: &Connection,
    id: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Result<Vec<Event>>> {
    let rows: Vec<(u64, String)> = conn
        .prepare_cached(
            "SELECT seq, body FROM events WHERE execution = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?
        .query_map(params![id, to_i64(after), to_i64(limit as u64)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if rows.is_empty() && !exists(conn, id)? {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    Ok(rows
        .into_iter()
        .map(|(seq, body)| {
            serde_json::from_str(&body).map_err(|error| {
                Error::Corrupt(format!("execution {id}: event {seq} cannot be read: {error}"))
            })
        })
        .collect())
}

pub(crate) fn list(
    conn: &Connection,
    filter: &Filter,
) -> rusqlite::Result<Result<Vec<ExecutionRecord>>> {
    use rusqlite::types::Value;
    let mut sql = format!("SELECT {RECORD} FROM executions WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    if !filter.status.is_empty() {
        let names: Vec<&str> = filter.status.iter().map(|status| status.name()).collect();
        values.push(Value::Text(serde_json::to_string(&names).unwrap_or_default()));
        sql.push_str(&format!(" AND status IN (SELECT value FROM json_each(?{}))", values.len()));
    }
    if let Some(workflow) = &filter.workflow {
        values.push(Value::Text(workflow.clone()));
        sql.push_str(&format!(" AND workflow = ?{}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(Value::Integer(since.as_micros()));
        sql.push_str(&format!(" AND created_at >= ?{}", values.len()));
    }
    if let Some((at, id)) = &filter.before {
        values.push(Value::Integer(at.as_micros()));
        values.push(Value::Text(id.clone()));
        let (at, id) = (values.len() - 1, values.len());
        sql.push_str(&format!(" AND (created_at, id) < (?{at}, ?{id})"));
    }
    values.push(Value::Integer(filter.limit.map_or(-1, |limit| to_i64(limit as u64))));
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ?{}", values.len()));
    let records = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), record)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Ok(records))
}

pub(crate) fn requests(
    conn: &Connection,
    ids: &str,
) -> rusqlite::Result<Result<Vec<StoredRequest>>> {
    let rows: Vec<(u64, String, String, i64)> = conn
        .prepare_cached(
            "SELECT id, execution, body, created_at FROM requests
             WHERE handled = 0 AND execution IN (SELECT value FROM json_each(?1)) ORDER BY id",
        )?
        .query_map([ids], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows
        .into_iter()
        .map(|(id, execution, body, created_at)| {
            let request: Request = serde_json::from_str(&body).map_err(|error| {
                Error::Corrupt(format!(
                    "execution {execution}: request {id} cannot be read: {error}"
                ))
            })?;
            Ok(StoredRequest { id, execution, request, created_at: Time::from_micros(created_at) })
        })
        .collect())
}

pub(crate) fn logs(
    conn: &Connection,
    id: &str,
    step: Option<&str>,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Result<Vec<LogLine>>> {
    let lines: Vec<LogLine> = conn
        .prepare_cached(
            "SELECT line, step, attempt, compensation, stream, time, text, item FROM logs
             WHERE execution = ?1 AND line > ?2 AND (?3 IS NULL OR step = ?3) ORDER BY line LIMIT ?4",
        )?
        .query_map(params![id, to_i64(after), step, to_i64(limit as u64)], |row| {
            Ok(LogLine {
                execution: id.to_owned(),
                line: row.get(0)?,
                step: row.get(1)?,
                item: row.get(7)?,
                attempt: row.get(2)?,
                kind: wayline_store::attempt_kind(row.get(3)?, row.get(2)?),
                stream: row.get(4)?,
                time: Time::from_micros(row.get(5)?),
                text: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if lines.is_empty() && !exists(conn, id)? {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    Ok(Ok(lines))
}

// ---------------------------------------------------------------------------------------------

fn exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM executions WHERE id = ?1")?.exists([id])
}

fn record(row: &Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let time =
        |index: usize| row.get::<_, Option<i64>>(index).map(|micros| micros.map(Time::from_micros));
    Ok(ExecutionRecord {
        id: row.get(0)?,
        workflow: row.get(1)?,
        status: row.get::<_, StatusColumn>(2)?.0,
        created_at: Time::from_micros(row.get(3)?),
        started_at: time(4)?,
        finished_at: time(5)?,
        last_seq: row.get(6)?,
        owner: row.get(7)?,
        lease_until: time(8)?,
        error: row.get(9)?,
    })
}

/// A status as stored: its name.
struct StatusColumn(Status);

impl FromSql for StatusColumn {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<StatusColumn> {
        let text = value.as_str()?;
        Status::parse(text)
            .map(StatusColumn)
            .ok_or_else(|| FromSqlError::Other(format!("unknown execution status `{text}`").into()))
    }
}

/// Sequence numbers, tokens, ids and limits are far below `i64::MAX`; saturate rather than
/// wrap if one is not.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
