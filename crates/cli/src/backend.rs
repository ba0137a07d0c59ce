//! Choosing the store: the one place that names concrete backends. `AnyStore` delegates every
//! call to the backend picked from `--db` / `WAYLINE_DB` (or in-memory with `--ephemeral`).

use std::time::Duration;

use wayline_core::{Event, Time};
use wayline_store::{
    Commit, ExecutionRecord, Filter, Lease, LogLine, MemoryStore, NewExecution, Request, Result,
    Store, StoredRequest,
};

#[derive(Clone)]
pub enum AnyStore {
    Memory(MemoryStore),
}

impl AnyStore {
    /// Whether other processes can see this store (and so send control requests).
    pub fn is_shared(&self) -> bool {
        !matches!(self, AnyStore::Memory(_))
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        delegate!(self, s => s.create(execution, events).await)
    }
    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        delegate!(self, s => s.commit(commits).await)
    }
    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        delegate!(self, s => s.get(id).await)
    }
    async fn resolve(&self, prefix: &str) -> Result<String> {
        delegate!(self, s => s.resolve(prefix).await)
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        delegate!(self, s => s.events(id, after, limit).await)
    }
    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        delegate!(self, s => s.list(filter).await)
    }
    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> Result<Lease> {
        delegate!(self, s => s.acquire(id, owner, ttl, now, dead_owner).await)
    }
    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        delegate!(self, s => s.renew(leases, ttl, now).await)
    }
    async fn release(&self, lease: Lease) -> Result<()> {
        delegate!(self, s => s.release(lease).await)
    }
    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        delegate!(self, s => s.request(id, request, now).await)
    }
    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        delegate!(self, s => s.requests(ids).await)
    }
    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        delegate!(self, s => s.append_logs(lines).await)
    }
    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        delegate!(self, s => s.logs(id, step, after, limit).await)
    }
    async fn gc(&self, before: Time) -> Result<u64> {
        delegate!(self, s => s.gc(before).await)
    }
    async fn changed(&self, timeout: Duration) {
        delegate!(self, s => s.changed(timeout).await)
    }
}

/// Where executions are stored.
#[derive(Debug, Clone)]
pub enum Location {
    Ephemeral,
}

pub async fn open(location: &Location) -> anyhow::Result<AnyStore> {
    match location {
        Location::Ephemeral => Ok(AnyStore::Memory(MemoryStore::new())),
    }
}
