//! The in-memory store: everything in one process's memory, gone when it exits
//! (`--ephemeral`). Also the reference the conformance suite is written against.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wayline_journal::{Event, Time};

use crate::{
    Changes, Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Result,
    Store, StoredRequest, TokenRecord, WorkflowVersion, check_sequence, stale_lease,
};

/// Everything in this process's memory. Clones share the same state.
///
/// ```
/// use wayline_store::{MemoryStore, Store};
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert!(store.list(Default::default()).await.unwrap().is_empty());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change, for [`Store::changes`].
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct Inner {
    executions: BTreeMap<String, Entry>,
    tokens: BTreeMap<String, TokenRecord>,
    workflows: BTreeMap<String, Vec<WorkflowVersion>>,
    next_request: u64,
}

#[derive(Debug)]
struct Entry {
    record: ExecutionRecord,
    idempotency_key: Option<String>,
    events: Vec<Event>,
    token: u64,
    requests: Vec<StoredRequest>,
    logs: Vec<LogLine>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn fence(entry: &Entry, lease: &Lease) -> Result<()> {
    if entry.token != lease.token || entry.record.owner.as_deref() != Some(lease.owner.as_str()) {
        return Err(stale_lease(lease, entry.record.owner.as_deref(), entry.token));
    }
    Ok(())
}

impl Store for MemoryStore {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        let mut inner = self.lock();
        if inner.executions.contains_key(&execution.id) {
            return Err(Error::Exists(execution.id));
        }
        if let Some(key) = &execution.idempotency_key
            && inner.executions.values().any(|entry| entry.idempotency_key.as_ref() == Some(key))
        {
            return Err(Error::Exists(execution.id));
        }
        check_sequence(&execution.id, 0, events.iter().map(|e| e.seq))?;
        let last_seq = events.last().map_or(0, |e| e.seq);
        let lease =
            Lease { execution: execution.id.clone(), owner: execution.owner.clone(), token: 1 };
        let record = ExecutionRecord {
            id: execution.id.clone(),
            workflow: execution.workflow,
            status: execution.summary.status,
            created_at: execution.created_at,
            started_at: execution.summary.started_at,
            finished_at: execution.summary.finished_at,
            last_seq,
            owner: Some(execution.owner),
            lease_until: Some(execution.created_at.after(execution.ttl)),
            error: execution.summary.error,
        };
        inner.executions.insert(
            execution.id,
            Entry {
                record,
                idempotency_key: execution.idempotency_key,
                events,
                token: 1,
                requests: Vec::new(),
                logs: Vec::new(),
            },
        );
        drop(inner);
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
        Ok(lease)
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        let mut inner = self.lock();
        let mut results = Vec::with_capacity(commits.len());
        for commit in commits {
            let Some(entry) = inner.executions.get_mut(&commit.lease.execution) else {
                results.push(Err(Error::NotFound(commit.lease.execution.clone())));
                continue;
            };
            if let Err(error) = fence(entry, &commit.lease) {
                results.push(Err(error));
                continue;
            }
            if let Err(error) = check_sequence(
                &commit.lease.execution,
                entry.record.last_seq,
                commit.events.iter().map(|e| e.seq),
            ) {
                results.push(Err(error));
                continue;
            }
            entry.record.last_seq += commit.events.len() as u64;
            entry.events.extend(commit.events);
            entry.record.status = commit.summary.status;
            entry.record.started_at = commit.summary.started_at;
            entry.record.finished_at = commit.summary.finished_at;
            entry.record.error = commit.summary.error;
            entry.requests.retain(|request| !commit.handled.contains(&request.id));
            results.push(Ok(()));
        }
        drop(inner);
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
        Ok(results)
    }

    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        let inner = self.lock();
        inner
            .executions
            .get(id)
            .map(|entry| entry.record.clone())
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        let inner = self.lock();
        Ok(inner
            .executions
            .iter()
            .find(|(_, entry)| entry.idempotency_key.as_deref() == Some(key))
            .map(|(id, _)| id.clone()))
    }

    async fn resolve(&self, prefix: &str) -> Result<String> {
        let inner = self.lock();
        if prefix.is_empty() {
            return Err(Error::NotFound(String::new()));
        }
        if inner.executions.contains_key(prefix) {
            return Ok(prefix.to_owned());
        }
        let matches: Vec<&String> = inner
            .executions
            .range(prefix.to_owned()..)
            .map(|(id, _)| id)
            .take_while(|id| id.starts_with(prefix))
            .take(2)
            .collect();
        match matches.as_slice() {
            [] => Err(Error::NotFound(prefix.to_owned())),
            [one] => Ok((*one).clone()),
            _ => {
                let count = inner.executions.keys().filter(|id| id.starts_with(prefix)).count();
                Err(Error::Ambiguous { prefix: prefix.to_owned(), count })
            }
        }
    }

    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let inner = self.lock();
        let entry = inner.executions.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(entry.events.len());
        Ok(entry.events[start..].iter().take(limit).cloned().collect())
    }

    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        let inner = self.lock();
        let mut out: Vec<ExecutionRecord> = inner
            .executions
            .values()
            .map(|entry| &entry.record)
            .filter(|record| filter.status.is_empty() || filter.status.contains(&record.status))
            .filter(|record| filter.workflow.as_ref().is_none_or(|w| *w == record.workflow))
            .filter(|record| filter.since.is_none_or(|since| record.created_at >= since))
            .filter(|record| {
                filter.before.as_ref().is_none_or(|(at, id)| {
                    (record.created_at, record.id.as_str()) < (*at, id.as_str())
                })
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> Result<Lease> {
        let mut inner = self.lock();
        let entry = inner.executions.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let free = match (&entry.record.owner, entry.record.lease_until) {
            (None, _) => true,
            (Some(current), until) => {
                until.is_none_or(|until| until <= now) || dead_owner == Some(current.as_str())
            }
        };
        if !free {
            return Err(Error::Held {
                execution: id.to_owned(),
                owner: entry.record.owner.clone().unwrap_or_default(),
                until: entry.record.lease_until.unwrap_or_default(),
            });
        }
        entry.token += 1;
        entry.record.owner = Some(owner.to_owned());
        entry.record.lease_until = Some(now.after(ttl));
        Ok(Lease { execution: id.to_owned(), owner: owner.to_owned(), token: entry.token })
    }

    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        let mut inner = self.lock();
        Ok(leases
            .iter()
            .map(|lease| match inner.executions.get_mut(&lease.execution) {
                Some(entry) if fence(entry, lease).is_ok() => {
                    entry.record.lease_until = Some(now.after(ttl));
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        let mut inner = self.lock();
        if let Some(entry) = inner.executions.get_mut(&lease.execution)
            && fence(entry, &lease).is_ok()
        {
            entry.record.owner = None;
            entry.record.lease_until = None;
        }
        Ok(())
    }

    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        let mut inner = self.lock();
        if !inner.executions.contains_key(id) {
            return Err(Error::NotFound(id.to_owned()));
        }
        inner.next_request += 1;
        let number = inner.next_request;
        let entry = inner.executions.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        entry.requests.push(StoredRequest {
            id: number,
            execution: id.to_owned(),
            request,
            created_at: now,
        });
        drop(inner);
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
        Ok(number)
    }

    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        let inner = self.lock();
        let mut out: Vec<StoredRequest> = ids
            .iter()
            .filter_map(|id| inner.executions.get(id))
            .flat_map(|entry| entry.requests.iter().cloned())
            .collect();
        out.sort_by_key(|request| request.id);
        Ok(out)
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        let mut inner = self.lock();
        let mut by_execution: HashMap<String, Vec<LogLine>> = HashMap::new();
        for line in lines {
            by_execution.entry(line.execution.clone()).or_default().push(line);
        }
        for (id, lines) in by_execution {
            if let Some(entry) = inner.executions.get_mut(&id) {
                for mut line in lines {
                    line.line = entry.logs.len() as u64 + 1;
                    entry.logs.push(line);
                }
            }
        }
        drop(inner);
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
        Ok(())
    }

    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let inner = self.lock();
        let entry = inner.executions.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        Ok(entry
            .logs
            .iter()
            .filter(|line| line.line > after && step.is_none_or(|s| s == line.step))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: Time,
    ) -> Result<(WorkflowVersion, bool)> {
        let mut inner = self.lock();
        let versions = inner.workflows.entry(name.to_owned()).or_default();
        if let Some(newest) = versions.last()
            && newest.source == source
        {
            return Ok((newest.clone(), false));
        }
        let version = WorkflowVersion {
            name: name.to_owned(),
            version: versions.last().map_or(1, |newest| newest.version + 1),
            source: source.to_owned(),
            created_at: now,
        };
        versions.push(version.clone());
        Ok((version, true))
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<WorkflowVersion>> {
        match self.lock().workflows.get(name) {
            Some(versions) if !versions.is_empty() => Ok(versions.clone()),
            _ => Err(Error::NotFound(name.to_owned())),
        }
    }

    async fn workflows(&self) -> Result<Vec<WorkflowVersion>> {
        Ok(self.lock().workflows.values().filter_map(|versions| versions.last().cloned()).collect())
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        Ok(self.lock().workflows.remove(name).is_some())
    }

    async fn add_token(&self, token: TokenRecord) -> Result<()> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&token.name)
            || inner.tokens.values().any(|other| other.id == token.id)
        {
            return Err(Error::Exists(token.name));
        }
        inner.tokens.insert(token.name.clone(), token);
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.lock().tokens.values().cloned().collect())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        Ok(self.lock().tokens.values().find(|token| token.id == id).cloned())
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        Ok(self.lock().tokens.remove(name).is_some())
    }

    async fn gc(&self, before: Time) -> Result<u64> {
        let mut inner = self.lock();
        let count = inner.executions.len();
        inner.executions.retain(|_, entry| {
            !(entry.record.status.is_final()
                && entry.record.finished_at.is_some_and(|t| t < before))
        });
        Ok((count - inner.executions.len()) as u64)
    }

    fn changes(&self) -> Changes {
        Changes::new(self.changed.subscribe(), None)
    }
}
