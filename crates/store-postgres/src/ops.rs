//! The statements behind each [`wayline_store::Store`] operation.
//!
//! Each returns `Result<Result<T>, Failure>`: the outer error is a database failure, the
//! inner one a refusal (not found, fenced, held) that wrote nothing. Batches go to the server
//! as arrays (`unnest`), so a group commit costs the same few round trips whatever its size:
//! BEGIN, lock the rows, one statement writing events, summaries and handled requests (and
//! notifying), COMMIT.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use wayline_journal::Status;
use wayline_journal::{Event, Time};
use wayline_store::{
    Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Result,
    StoredRequest, Summary, TokenRecord, WorkflowVersion, check_sequence, stale_lease,
};

use crate::Failure;
use crate::pool::Conn;

type Outcome<T> = std::result::Result<Result<T>, Failure>;

/// A commit with its events already turned into JSON.
pub(crate) struct Encoded {
    lease: Lease,
    events: Vec<(i64, String)>,
    summary: Summary,
    handled: Vec<i64>,
}

impl Encoded {
    pub(crate) fn new(commit: Commit) -> Result<Encoded> {
        Ok(Encoded {
            events: encode(&commit.events)?,
            handled: commit.handled.iter().map(|id| to_i64(*id)).collect(),
            lease: commit.lease,
            summary: commit.summary,
        })
    }
}

pub(crate) fn encode(events: &[Event]) -> Result<Vec<(i64, String)>> {
    events.iter().map(|event| Ok((to_i64(event.seq), to_json(event)?))).collect()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| Error::Corrupt(format!("cannot encode a record as JSON: {error}")))
}

// ---------------------------------------------------------------------------------------------
// Writes.

pub(crate) async fn create(
    conn: &mut Conn,
    execution: &NewExecution,
    events: &[(i64, String)],
    channel: &str,
    origin: &str,
) -> Outcome<Lease> {
    let seqs: Vec<i64> = events.iter().map(|(seq, _)| *seq).collect();
    let bodies: Vec<&str> = events.iter().map(|(_, body)| body.as_str()).collect();
    let last_seq = seqs.last().copied().unwrap_or(0);
    let row = conn
        .query_one(
            "WITH created AS (
                 INSERT INTO executions (id, workflow, status, created_at, last_seq, owner, lease_until, token, started_at, finished_at, error, idempotency_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $12, $13, $14, $15)
                 ON CONFLICT DO NOTHING
                 RETURNING id
             ), journal AS (
                 INSERT INTO events (execution, seq, body)
                 SELECT created.id, u.seq, u.body FROM created, unnest($8::int8[], $9::text[]) AS u (seq, body)
             )
             SELECT (SELECT count(*) FROM created), pg_notify($10, $11)",
            &[
                &clean(&execution.id),
                &clean(&execution.workflow),
                &execution.summary.status.name(),
                &execution.created_at.as_micros(),
                &last_seq,
                &clean(&execution.owner),
                &execution.created_at.after(execution.ttl).as_micros(),
                &seqs,
                &bodies,
                &channel,
                &origin,
                &execution.summary.started_at.map(|t| t.as_micros()),
                &execution.summary.finished_at.map(|t| t.as_micros()),
                &execution.summary.error.as_deref().map(clean),
                &execution.idempotency_key.as_deref().map(clean),
            ],
        )
        .await?;
    if row.col::<i64>(0)? == 0 {
        return Ok(Err(Error::Exists(execution.id.clone())));
    }
    Ok(Ok(Lease { execution: execution.id.clone(), owner: execution.owner.clone(), token: 1 }))
}

pub(crate) async fn commit(
    conn: &mut Conn,
    commits: &[Encoded],
    channel: &str,
    origin: &str,
) -> Outcome<Vec<Result<()>>> {
    /// An execution as the batch leaves it.
    struct Current<'a> {
        owner: Option<String>,
        token: u64,
        last_seq: u64,
        summary: Option<&'a Summary>,
    }

    let mut ids: Vec<&str> = commits.iter().map(|commit| commit.lease.execution.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    // Locks in id order: two batches over the same executions queue instead of deadlocking.
    let rows = conn
        .begin_with("SELECT id, owner, token, last_seq FROM executions WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", &[&ids])
        .await?;
    let mut current: HashMap<String, Current<'_>> = HashMap::new();
    for row in &rows {
        let state = Current {
            owner: row.col(1)?,
            token: row.col::<i64>(2)? as u64,
            last_seq: row.col::<i64>(3)? as u64,
            summary: None,
        };
        current.insert(row.col(0)?, state);
    }

    let mut results = Vec::with_capacity(commits.len());
    let (mut event_ids, mut seqs, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
    let (mut handled_ids, mut handled_executions) = (Vec::new(), Vec::new());
    for commit in commits {
        let id = commit.lease.execution.as_str();
        let Some(state) = current.get_mut(id) else {
            results.push(Err(Error::NotFound(id.to_owned())));
            continue;
        };
        if state.token != commit.lease.token
            || state.owner.as_deref() != Some(commit.lease.owner.as_str())
        {
            results.push(Err(stale_lease(&commit.lease, state.owner.as_deref(), state.token)));
            continue;
        }
        if let Err(error) =
            check_sequence(id, state.last_seq, commit.events.iter().map(|(seq, _)| *seq as u64))
        {
            results.push(Err(error));
            continue;
        }
        for (seq, body) in &commit.events {
            event_ids.push(id);
            seqs.push(*seq);
            bodies.push(body.as_str());
        }
        for request in &commit.handled {
            handled_ids.push(*request);
            handled_executions.push(id);
        }
        state.last_seq += commit.events.len() as u64;
        state.summary = Some(&commit.summary);
        results.push(Ok(()));
    }

    let mut summary_ids = Vec::new();
    let mut statuses = Vec::new();
    let mut started = Vec::new();
    let mut finished = Vec::new();
    let mut errors = Vec::new();
    let mut last_seqs = Vec::new();
    for (id, state) in &current {
        if let Some(summary) = state.summary {
            summary_ids.push(id.as_str());
            statuses.push(summary.status.name());
            started.push(summary.started_at.map(Time::as_micros));
            finished.push(summary.finished_at.map(Time::as_micros));
            errors.push(summary.error.as_deref().map(clean));
            last_seqs.push(to_i64(state.last_seq));
        }
    }
    if summary_ids.is_empty() {
        conn.rollback().await?;
        return Ok(Ok(results));
    }
    conn.commit_with(
        "WITH journal AS (
             INSERT INTO events (execution, seq, body)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])
         ), summaries AS (
             UPDATE executions AS e
             SET status = u.status, started_at = u.started_at, finished_at = u.finished_at, error = u.error, last_seq = u.last_seq
             FROM unnest($4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[], $9::int8[])
                 AS u (id, status, started_at, finished_at, error, last_seq)
             WHERE e.id = u.id
         ), handled AS (
             UPDATE requests AS r SET handled = true
             FROM unnest($10::int8[], $11::text[]) AS h (id, execution)
             WHERE r.id = h.id AND r.execution = h.execution
         )
         SELECT pg_notify($12, $13)",
        &[
            &event_ids,
            &seqs,
            &bodies,
            &summary_ids,
            &statuses,
            &started,
            &finished,
            &errors,
            &last_seqs,
            &handled_ids,
            &handled_executions,
            &channel,
            &origin,
        ],
    )
    .await?;
    Ok(Ok(results))
}

pub(crate) async fn acquire(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    until: Time,
    now: Time,
    dead_owner: Option<&str>,
) -> Outcome<Lease> {
    if id.contains('\0') {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let owner = clean(owner);
    let dead_owner = dead_owner.map(clean);
    // The update decides atomically; the read afterwards only explains a refusal (and when
    // the lease was freed in between, the update is tried again).
    for _ in 0..3 {
        let taken = conn
            .query_opt(
                "UPDATE executions SET token = token + 1, owner = $2, lease_until = $3
                 WHERE id = $1 AND (owner IS NULL OR lease_until IS NULL OR lease_until <= $4 OR owner = $5)
                 RETURNING token",
                &[&id, &owner, &until.as_micros(), &now.as_micros(), &dead_owner],
            )
            .await?;
        if let Some(row) = taken {
            let token = row.col::<i64>(0)? as u64;
            return Ok(Ok(Lease { execution: id.to_owned(), owner: owner.into_owned(), token }));
        }
        let Some(row) = conn
            .query_opt("SELECT owner, lease_until FROM executions WHERE id = $1", &[&id])
            .await?
        else {
            return Ok(Err(Error::NotFound(id.to_owned())));
        };
        let (current, lease_until): (Option<String>, Option<i64>) = (row.col(0)?, row.col(1)?);
        if let (Some(current), Some(lease_until)) = (current, lease_until)
            && Time::from_micros(lease_until) > now
        {
            return Ok(Err(Error::Held {
                execution: id.to_owned(),
                owner: current,
                until: Time::from_micros(lease_until),
            }));
        }
    }
    Ok(Err(Error::Unavailable(format!("the lease of {id} kept changing hands; try again"))))
}

pub(crate) async fn renew(conn: &mut Conn, leases: &[Lease], until: Time) -> Outcome<Vec<bool>> {
    let ids: Vec<&str> = leases.iter().map(|lease| lease.execution.as_str()).collect();
    let owners: Vec<&str> = leases.iter().map(|lease| lease.owner.as_str()).collect();
    let tokens: Vec<i64> = leases.iter().map(|lease| to_i64(lease.token)).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    conn.begin_with(
        "SELECT id FROM executions WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        &[&sorted],
    )
    .await?;
    let renewed = conn
        .commit_with(
            "UPDATE executions AS e SET lease_until = $4
             FROM unnest($1::text[], $2::text[], $3::int8[]) AS l (id, owner, token)
             WHERE e.id = l.id AND e.owner = l.owner AND e.token = l.token
             RETURNING e.id, e.token",
            &[&ids, &owners, &tokens, &until.as_micros()],
        )
        .await?;
    let renewed: Vec<(String, i64)> =
        renewed.iter().map(|row| Ok((row.col(0)?, row.col(1)?))).collect::<Result<_, Failure>>()?;
    Ok(Ok(leases
        .iter()
        .map(|lease| {
            renewed
                .iter()
                .any(|(id, token)| *id == lease.execution && *token == to_i64(lease.token))
        })
        .collect()))
}

pub(crate) async fn release(conn: &mut Conn, lease: &Lease) -> Outcome<()> {
    conn.execute(
        "UPDATE executions SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2 AND token = $3",
        &[&lease.execution, &lease.owner, &to_i64(lease.token)],
    )
    .await?;
    Ok(Ok(()))
}

pub(crate) async fn request(
    conn: &mut Conn,
    id: &str,
    body: &str,
    now: Time,
    channel: &str,
    origin: &str,
) -> Outcome<u64> {
    if id.contains('\0') {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let inserted = conn
        .query_opt(
            "WITH inserted AS (
                 INSERT INTO requests (execution, body, created_at)
                 SELECT $1::text, $2::text, $3::int8 WHERE EXISTS (SELECT 1 FROM executions WHERE id = $1)
                 RETURNING id
             )
             SELECT id, pg_notify($4, $5) FROM inserted",
            &[&id, &body, &now.as_micros(), &channel, &origin],
        )
        .await;
    match inserted {
        Ok(Some(row)) => Ok(Ok(row.col::<i64>(0)? as u64)),
        Ok(None) => Ok(Err(Error::NotFound(id.to_owned()))),
        // Deleted (gc) between the check and the insert.
        Err(Failure::Db { error, .. })
            if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) =>
        {
            Ok(Err(Error::NotFound(id.to_owned())))
        }
        Err(failure) => Err(failure),
    }
}

pub(crate) async fn append_logs(
    conn: &mut Conn,
    lines: &[LogLine],
    channel: &str,
    origin: &str,
) -> Outcome<()> {
    let mut ids: Vec<&str> =
        lines.iter().map(|line| line.execution.as_str()).filter(|id| !id.contains('\0')).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = conn
        .begin_with(
            "SELECT id, last_log FROM executions WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
    let mut last: HashMap<String, i64> =
        rows.iter().map(|row| Ok((row.col(0)?, row.col(1)?))).collect::<Result<_, Failure>>()?;

    let mut executions = Vec::new();
    let mut numbers = Vec::new();
    let mut steps = Vec::new();
    let mut attempts = Vec::new();
    let mut compensations = Vec::new();
    let mut streams = Vec::new();
    let mut times = Vec::new();
    let mut texts: Vec<&[u8]> = Vec::new();
    let mut items: Vec<Option<i32>> = Vec::new();
    for line in lines {
        let Some(number) = last.get_mut(&line.execution) else { continue };
        *number += 1;
        executions.push(line.execution.as_str());
        numbers.push(*number);
        steps.push(clean(&line.step));
        attempts.push(i32::try_from(line.attempt).unwrap_or(i32::MAX));
        compensations.push(line.kind == wayline_journal::AttemptKind::Compensation);
        streams.push(clean(&line.stream));
        times.push(line.time.as_micros());
        texts.push(line.text.as_bytes());
        items.push(line.item.map(|item| i32::try_from(item).unwrap_or(i32::MAX)));
    }
    if executions.is_empty() {
        conn.rollback().await?;
        return Ok(Ok(()));
    }
    let (last_ids, last_numbers): (Vec<&str>, Vec<i64>) =
        last.iter().map(|(id, number)| (id.as_str(), *number)).unzip();
    conn.commit_with(
        "WITH written AS (
             INSERT INTO logs (execution, line, step, attempt, compensation, stream, time, text, item)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int4[], $5::bool[], $6::text[], $7::int8[], $8::bytea[], $13::int4[])
         ), numbered AS (
             UPDATE executions AS e SET last_log = u.last_log
             FROM unnest($9::text[], $10::int8[]) AS u (id, last_log)
             WHERE e.id = u.id
         )
         SELECT pg_notify($11, $12)",
        &[
            &executions,
            &numbers,
            &steps,
            &attempts,
            &compensations,
            &streams,
            &times,
            &texts,
            &last_ids,
            &last_numbers,
            &channel,
            &origin,
            &items,
        ],
    )
    .await?;
    Ok(Ok(()))
}

pub(crate) async fn gc(conn: &mut Conn, before: Time) -> Outcome<u64> {
    let finals: Vec<&str> =
        [Status::Succeeded, Status::Failed, Status::Cancelled, Status::RolledBack]
            .into_iter()
            .map(Status::name)
            .collect();
    // Events, requests and logs go with their execution (ON DELETE CASCADE).
    let row = conn
        .query_one(
            "WITH gone AS (
                 DELETE FROM executions WHERE finished_at < $1 AND status = ANY($2::text[]) RETURNING 1
             )
             SELECT count(*) FROM gone",
            &[&before.as_micros(), &finals],
        )
        .await?;
    Ok(Ok(row.col::<i64>(0)? as u64))
}

// ---------------------------------------------------------------------------------------------
// Reads.

pub(crate) async fn get(conn: &mut Conn, id: &str) -> Outcome<ExecutionRecord> {
    if id.contains('\0') {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let row = conn
        .query_opt(
            "SELECT id, workflow, status, created_at, started_at, finished_at, last_seq, owner, lease_until, error
             FROM executions WHERE id = $1",
            &[&id],
        )
        .await?;
    match row {
        Some(row) => Ok(Ok(record(&row)?)),
        None => Ok(Err(Error::NotFound(id.to_owned()))),
    }
}

fn workflow_version(row: &tokio_postgres::Row) -> Result<WorkflowVersion, Failure> {
    Ok(WorkflowVersion {
        name: row.col(0)?,
        version: u32::try_from(row.col::<i32>(1)?).unwrap_or(0),
        source: row.col(2)?,
        created_at: Time::from_micros(row.col(3)?),
    })
}

/// Inserts the next version unless the newest has the same source, in one statement: two
/// servers registering at once cannot both take a version number (the primary key refuses the
/// second, which is then told to try again).
pub(crate) async fn put_workflow(
    conn: &mut Conn,
    name: &str,
    source: &str,
    now: Time,
) -> Outcome<(WorkflowVersion, bool)> {
    let (name, source) = (clean(name), clean(source));
    let newest = conn
        .query_opt(
            "SELECT name, version, source, created_at FROM workflows WHERE name = $1
             ORDER BY version DESC LIMIT 1",
            &[&name],
        )
        .await?
        .as_ref()
        .map(workflow_version)
        .transpose()?;
    if let Some(newest) = &newest
        && newest.source == *source
    {
        return Ok(Ok((newest.clone(), false)));
    }
    let version = newest.map_or(1, |newest| newest.version + 1);
    let added = conn
        .execute(
            "INSERT INTO workflows (name, version, source, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&name, &i32::try_from(version).unwrap_or(i32::MAX), &source, &now.as_micros()],
        )
        .await?;
    if added == 0 {
        return Ok(Err(Error::Exists(format!("{name} version {version}"))));
    }
    let stored = WorkflowVersion {
        name: name.into_owned(),
        version,
        source: source.into_owned(),
        created_at: now,
    };
    Ok(Ok((stored, true)))
}

pub(crate) async fn workflow_versions(
    conn: &mut Conn,
    name: &str,
) -> Outcome<Vec<WorkflowVersion>> {
    let rows = conn
        .query(
            "SELECT name, version, source, created_at FROM workflows WHERE name = $1 ORDER BY version",
            &[&clean(name)],
        )
        .await?;
    let versions: Vec<WorkflowVersion> =
        rows.iter().map(workflow_version).collect::<Result<_, _>>()?;
    Ok(if versions.is_empty() { Err(Error::NotFound(name.to_owned())) } else { Ok(versions) })
}

pub(crate) async fn workflows(conn: &mut Conn) -> Outcome<Vec<WorkflowVersion>> {
    let rows = conn
        .query(
            "SELECT DISTINCT ON (name) name, version, source, created_at FROM workflows
             ORDER BY name, version DESC",
            &[],
        )
        .await?;
    Ok(Ok(rows.iter().map(workflow_version).collect::<Result<_, _>>()?))
}

pub(crate) async fn delete_workflow(conn: &mut Conn, name: &str) -> Outcome<bool> {
    let deleted = conn.execute("DELETE FROM workflows WHERE name = $1", &[&clean(name)]).await?;
    Ok(Ok(deleted > 0))
}

pub(crate) async fn add_token(conn: &mut Conn, token: &TokenRecord) -> Outcome<()> {
    let added = conn
        .execute(
            "INSERT INTO tokens (name, id, hash, role, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &clean(&token.name),
                &clean(&token.id),
                &token.hash,
                &token.role,
                &token.created_at.as_micros(),
                &token.expires_at.map(Time::as_micros),
            ],
        )
        .await?;
    Ok(if added == 1 { Ok(()) } else { Err(Error::Exists(token.name.clone())) })
}

fn token_record(row: &tokio_postgres::Row) -> Result<TokenRecord, Failure> {
    Ok(TokenRecord {
        name: row.col(0)?,
        id: row.col(1)?,
        hash: row.col(2)?,
        role: row.col(3)?,
        created_at: Time::from_micros(row.col(4)?),
        expires_at: row.col::<Option<i64>>(5)?.map(Time::from_micros),
    })
}

pub(crate) async fn tokens(conn: &mut Conn) -> Outcome<Vec<TokenRecord>> {
    let rows = conn
        .query("SELECT name, id, hash, role, created_at, expires_at FROM tokens ORDER BY name", &[])
        .await?;
    Ok(Ok(rows.iter().map(token_record).collect::<Result<_, _>>()?))
}

pub(crate) async fn token(conn: &mut Conn, id: &str) -> Outcome<Option<TokenRecord>> {
    let row = conn
        .query_opt(
            "SELECT name, id, hash, role, created_at, expires_at FROM tokens WHERE id = $1",
            &[&clean(id)],
        )
        .await?;
    Ok(Ok(row.as_ref().map(token_record).transpose()?))
}

pub(crate) async fn revoke_token(conn: &mut Conn, name: &str) -> Outcome<bool> {
    let deleted = conn.execute("DELETE FROM tokens WHERE name = $1", &[&clean(name)]).await?;
    Ok(Ok(deleted > 0))
}

pub(crate) async fn by_idempotency_key(conn: &mut Conn, key: &str) -> Outcome<Option<String>> {
    let row = conn
        .query_opt("SELECT id FROM executions WHERE idempotency_key = $1", &[&clean(key)])
        .await?;
    Ok(Ok(row.map(|row| row.col(0)).transpose()?))
}

pub(crate) async fn resolve(conn: &mut Conn, prefix: &str) -> Outcome<String> {
    if prefix.is_empty() || prefix.contains('\0') {
        return Ok(Err(Error::NotFound(prefix.to_owned())));
    }
    if exists(conn, prefix).await? {
        return Ok(Ok(prefix.to_owned()));
    }
    // Ids compare bytewise (COLLATE "C"); every id starting with `prefix` lies in
    // [prefix, prefix + U+10FFFF).
    let upper = format!("{prefix}{}", char::MAX);
    let ids: Vec<String> = conn
        .query(
            "SELECT id FROM executions WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 2",
            &[&prefix, &upper],
        )
        .await?
        .iter()
        .map(|row| row.col(0))
        .collect::<Result<_, _>>()?;
    Ok(match ids.as_slice() {
        [] => Err(Error::NotFound(prefix.to_owned())),
        [one] => Ok(one.clone()),
        _ => {
            let count: i64 = conn
                .query_one(
                    "SELECT count(*) FROM executions WHERE id >= $1 AND id < $2",
                    &[&prefix, &upper],
                )
                .await?
                .col(0)?;
            Err(Error::Ambiguous { prefix: prefix.to_owned(), count: count as usize })
        }
    })
}

pub(crate) async fn events(
    conn: &mut Conn,
    id: &str,
    after: u64,
    limit: usize,
) -> Outcome<Vec<Event>> {
    if id.contains('\0') {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let rows = conn
        .query(
            "SELECT seq, body FROM events WHERE execution = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&id, &to_i64(after), &to_i64(limit as u64)],
        )
        .await?;
    if rows.is_empty() && !exists(conn, id).await? {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let (seq, body): (i64, &str) = (row.col(0)?, row.col(1)?);
        match serde_json::from_str(body) {
            Ok(event) => events.push(event),
            Err(error) => {
                return Err(Failure::Corrupt(format!(
                    "execution {id}: event {seq} cannot be read: {error}"
                )));
            }
        }
    }
    Ok(Ok(events))
}

pub(crate) async fn list(conn: &mut Conn, filter: &Filter) -> Outcome<Vec<ExecutionRecord>> {
    let statuses: Option<Vec<&str>> = (!filter.status.is_empty())
        .then(|| filter.status.iter().map(|status| status.name()).collect());
    let limit = filter.limit.map(|limit| to_i64(limit as u64));
    let before_at = filter.before.as_ref().map(|(at, _)| at.as_micros());
    let before_id = filter.before.as_ref().map(|(_, id)| id.as_str());
    let rows = conn
        .query(
            "SELECT id, workflow, status, created_at, started_at, finished_at, last_seq, owner, lease_until, error
             FROM executions
             WHERE ($1::text[] IS NULL OR status = ANY($1::text[]))
               AND ($2::text IS NULL OR workflow = $2::text)
               AND ($3::int8 IS NULL OR created_at >= $3::int8)
               AND ($5::int8 IS NULL OR (created_at, id) < ($5::int8, $6::text))
             ORDER BY created_at DESC, id DESC
             LIMIT $4",
            &[
                &statuses,
                &filter.workflow,
                &filter.since.map(Time::as_micros),
                &limit,
                &before_at,
                &before_id,
            ],
        )
        .await?;
    Ok(Ok(rows.iter().map(record).collect::<Result<_, _>>()?))
}

pub(crate) async fn requests(conn: &mut Conn, ids: &[String]) -> Outcome<Vec<StoredRequest>> {
    let rows = conn
        .query(
            "SELECT id, execution, body, created_at FROM requests
             WHERE NOT handled AND execution = ANY($1::text[]) ORDER BY id",
            &[&ids.iter().filter(|id| !id.contains('\0')).collect::<Vec<_>>()],
        )
        .await?;
    let mut requests = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, execution, body, created_at): (i64, String, &str, i64) =
            (row.col(0)?, row.col(1)?, row.col(2)?, row.col(3)?);
        let request: Request = serde_json::from_str(body).map_err(|error| {
            Failure::Corrupt(format!("execution {execution}: request {id} cannot be read: {error}"))
        })?;
        requests.push(StoredRequest {
            id: id as u64,
            execution,
            request,
            created_at: Time::from_micros(created_at),
        });
    }
    Ok(Ok(requests))
}

pub(crate) async fn logs(
    conn: &mut Conn,
    id: &str,
    step: Option<&str>,
    after: u64,
    limit: usize,
) -> Outcome<Vec<LogLine>> {
    if id.contains('\0') {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let rows = conn
        .query(
            "SELECT line, step, attempt, compensation, stream, time, text, item FROM logs
             WHERE execution = $1 AND line > $2 AND ($3::text IS NULL OR step = $3::text)
             ORDER BY line LIMIT $4",
            &[&id, &to_i64(after), &step, &to_i64(limit as u64)],
        )
        .await?;
    if rows.is_empty() && !exists(conn, id).await? {
        return Ok(Err(Error::NotFound(id.to_owned())));
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let number: i64 = row.col(0)?;
        let text = String::from_utf8(row.col::<Vec<u8>>(6)?).map_err(|_| {
            Failure::Corrupt(format!("execution {id}: log line {number} is not UTF-8"))
        })?;
        let attempt = row.col::<i32>(2)?.max(0) as u32;
        lines.push(LogLine {
            execution: id.to_owned(),
            line: number as u64,
            step: row.col(1)?,
            item: row.col::<Option<i32>>(7)?.map(|item| item.max(0) as u32),
            attempt,
            kind: wayline_store::attempt_kind(row.col(3)?, attempt),
            stream: row.col(4)?,
            time: Time::from_micros(row.col(5)?),
            text,
        });
    }
    Ok(Ok(lines))
}

// ---------------------------------------------------------------------------------------------

/// Reading a column without panicking: a value of an unexpected type means the tables were
/// changed behind wayline's back.
trait Column {
    fn col<'a, T: FromSql<'a>>(&'a self, index: usize) -> Result<T, Failure>;
}

impl Column for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, index: usize) -> Result<T, Failure> {
        self.try_get(index).map_err(|error| {
            Failure::Corrupt(format!(
                "a stored value cannot be read (column {index}): {}",
                crate::describe(&error)
            ))
        })
    }
}

async fn exists(conn: &mut Conn, id: &str) -> Result<bool, Failure> {
    Ok(conn.query_opt("SELECT 1 FROM executions WHERE id = $1", &[&id]).await?.is_some())
}

fn record(row: &Row) -> Result<ExecutionRecord, Failure> {
    let id: String = row.col(0)?;
    let status: &str = row.col(2)?;
    let Some(status) = Status::parse(status) else {
        return Err(Failure::Corrupt(format!("execution {id} has an unknown status `{status}`")));
    };
    let time =
        |index: usize| Ok::<_, Failure>(row.col::<Option<i64>>(index)?.map(Time::from_micros));
    Ok(ExecutionRecord {
        workflow: row.col(1)?,
        status,
        created_at: Time::from_micros(row.col(3)?),
        started_at: time(4)?,
        finished_at: time(5)?,
        last_seq: row.col::<i64>(6)? as u64,
        owner: row.col(7)?,
        lease_until: time(8)?,
        error: row.col(9)?,
        id,
    })
}

/// PostgreSQL text cannot hold NUL characters; they become U+FFFD in free text.
fn clean(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
