//! Durable state: where journals, leases, control requests and logs live.
//!
//! The [`Store`] trait is all the runtime knows about storage; it never names a backend. Every
//! backend (in-memory here, SQLite and PostgreSQL in their own crates) passes the same
//! conformance suite (`conformance`, behind the `testing` feature).
//!
//! Appends are fenced: each execution has one lease at a time, identified by a token that
//! grows with every takeover, and an append must present the current token and continue the
//! journal exactly where it ends. A late write from an owner that lost its lease is rejected.

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "testing")]
pub mod bench;
#[cfg(feature = "testing")]
pub mod conformance;
mod memory;
mod record;

use std::future::Future;
use std::time::Duration;

use wayline_journal::{Event, Time};

pub use memory::MemoryStore;
pub use record::*;

/// What can go wrong in a store. Callers match on the kind to decide what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No execution with this id.
    #[error("no execution `{0}`")]
    NotFound(String),
    /// An id prefix matches more than one execution.
    #[error("`{prefix}` matches {count} executions; give more characters")]
    Ambiguous { prefix: String, count: usize },
    /// The execution's lease is held by a live owner.
    #[error("execution {execution} is owned by {owner} (lease valid until {until})")]
    Held { execution: String, owner: String, until: Time },
    /// The caller's lease token is stale or the journal moved on: another owner took over.
    #[error("execution {execution}: {detail}")]
    Fenced { execution: String, detail: String },
    /// The execution already exists, or another has the idempotency key it was created with.
    #[error("execution `{0}` already exists")]
    Exists(String),
    /// The database was written by a newer wayline.
    #[error(
        "the database schema is version {found}, newer than this wayline supports ({supported}); upgrade wayline"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// Stored data cannot be read back.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database cannot be reached or refused the operation (disk full, permission,
    /// connection lost). Usually worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The store was configured wrongly (a malformed URL, an invalid schema name): fix the
    /// configuration; retrying cannot help.
    #[error("invalid database configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Durable state for executions. Implementations are cheap to clone handles.
///
/// Journals: `create` and `commit` take events whose sequence numbers continue the stored
/// journal exactly (the first event of an execution is 1); anything else is
/// [`Error::Fenced`] and stores nothing of that execution's share.
///
/// Fencing is by token: [`Store::acquire`] bumps the execution's token, and a commit, renewal
/// or release presenting an older token (or another owner) is refused. A lease that merely
/// expired still commits until someone else acquires it.
pub trait Store: Clone + Send + Sync + 'static {
    /// Creates an execution with its first events (seq 1, 2, …; may be empty) and takes its
    /// lease, atomically. The record starts as [`wayline_journal::Status::Pending`].
    fn create(
        &self,
        execution: NewExecution,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// Appends events of several executions in one transaction (group commit). Each commit is
    /// fenced on its own and applied in order (two commits of one execution in a batch are
    /// fine when the second continues the first); one result per commit, in order. The outer
    /// error is for failures of the whole batch, when nothing was committed — or, after
    /// [`Error::Unavailable`], possibly everything: a retry of a commit that did land is then
    /// refused as [`Error::Fenced`].
    fn commit(&self, commits: Vec<Commit>) -> impl Future<Output = Result<Vec<Result<()>>>> + Send;

    /// One execution's record.
    fn get(&self, id: &str) -> impl Future<Output = Result<ExecutionRecord>> + Send;

    /// The full id of the one execution whose id starts with `prefix` (an exact id wins over
    /// longer ids it is a prefix of; an empty prefix matches nothing).
    fn resolve(&self, prefix: &str) -> impl Future<Output = Result<String>> + Send;

    /// The execution created with this idempotency key, if it still exists.
    fn by_idempotency_key(&self, key: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Events after `after` (a sequence number; 0 for all), in order, at most `limit`.
    /// [`Error::NotFound`] when the execution does not exist.
    fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// Executions matching the filter, newest first (ties: greater id first).
    fn list(&self, filter: Filter) -> impl Future<Output = Result<Vec<ExecutionRecord>>> + Send;

    /// Takes the lease of an execution when it is free, expired (`lease_until <= now`), or held
    /// by `dead_owner` (an owner the caller knows is gone: a process on this host that no
    /// longer exists). The new lease's token is greater than every earlier one. Otherwise
    /// [`Error::Held`], even for the current owner asking again.
    fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// Extends leases to `now + ttl`; returns, for each, whether it is still held (false
    /// when another owner took it over or the execution is gone).
    fn renew(
        &self,
        leases: Vec<Lease>,
        ttl: Duration,
        now: Time,
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Gives a lease up (the execution finished, or the process is shutting down). A stale
    /// lease is left alone without an error: whoever took it over keeps it.
    fn release(&self, lease: Lease) -> impl Future<Output = Result<()>> + Send;

    /// Records a control request for an execution, for its owner to act on; returns its id,
    /// greater than every earlier request's (ids are never reused).
    fn request(
        &self,
        id: &str,
        request: Request,
        now: Time,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Unhandled control requests of these executions, oldest first. Unknown ids are
    /// ignored. A request is handled once a commit of its execution lists it in
    /// [`Commit::handled`].
    fn requests(&self, ids: Vec<String>)
    -> impl Future<Output = Result<Vec<StoredRequest>>> + Send;

    /// Stores log lines. The store numbers them (from 1 per execution, in the order given;
    /// [`LogLine::line`] is ignored). Lines of executions that do not exist (any more) are
    /// dropped.
    fn append_logs(&self, lines: Vec<LogLine>) -> impl Future<Output = Result<()>> + Send;

    /// Log lines of an execution (optionally one step) after line number `after`, at most
    /// `limit`. [`Error::NotFound`] when the execution does not exist.
    fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LogLine>>> + Send;

    /// Registers `source` as the newest version of workflow `name`, unless it is already the
    /// newest; returns that version and whether it is new.
    fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: Time,
    ) -> impl Future<Output = Result<(WorkflowVersion, bool)>> + Send;

    /// Every version of workflow `name`, oldest first ([`Error::NotFound`] when none).
    fn workflow_versions(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<WorkflowVersion>>> + Send;

    /// The newest version of every registered workflow, by name.
    fn workflows(&self) -> impl Future<Output = Result<Vec<WorkflowVersion>>> + Send;

    /// Deletes every version of workflow `name`; whether there was one. Executions keep the
    /// source they started with (it is in their journal).
    fn delete_workflow(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Stores a new API token; [`Error::Exists`] (with the name) when one has its name or id.
    fn add_token(&self, token: TokenRecord) -> impl Future<Output = Result<()>> + Send;

    /// Every token, by name.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRecord>>> + Send;

    /// The token with this id, if any.
    fn token(&self, id: &str) -> impl Future<Output = Result<Option<TokenRecord>>> + Send;

    /// Deletes the token named `name`; whether there was one.
    fn revoke_token(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes finished executions (with their events, requests and logs) whose
    /// `finished_at` is before `before`; returns how many.
    fn gc(&self, before: Time) -> impl Future<Output = Result<u64>> + Send;

    /// A way to wait until something may have changed (events, requests or logs written by
    /// this or another process) that misses nothing between two waits. The in-memory store
    /// wakes at once, SQLite watches its files (or polls where it cannot), PostgreSQL listens
    /// for notifications.
    fn changes(&self) -> Changes;

    /// Resolves when something may have changed since the call, or after `timeout`. Wakes may
    /// be spurious; callers read again after it returns. Waiting repeatedly? Keep one
    /// [`Store::changes`] instead, which also sees what changed between two waits.
    fn changed(&self, timeout: Duration) -> impl Future<Output = ()> + Send {
        let mut changes = self.changes();
        async move { changes.next(timeout).await }
    }
}

/// Waits for a store to change. A change made after this was created, or after a wait last
/// returned, ends the next wait at once: nothing is missed between two waits.
pub struct Changes {
    receiver: tokio::sync::watch::Receiver<u64>,
    /// Keeps the backend watching for as long as someone may wait (SQLite's watcher).
    _watching: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Changes {
    /// Follows `receiver`, a counter the backend bumps on every change it sees; `watching`
    /// is dropped with this.
    pub fn new(
        receiver: tokio::sync::watch::Receiver<u64>,
        watching: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Changes {
        Changes { receiver, _watching: watching }
    }

    /// Resolves when something changed since this was created or the previous wait returned,
    /// or after `timeout`.
    pub async fn next(&mut self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.receiver.changed()).await {
            Ok(Ok(())) | Err(_) => {}
            // The store is gone: nothing will change any more, but do not spin.
            Ok(Err(_)) => tokio::time::sleep(timeout).await,
        }
    }
}

/// Checks that events with sequence numbers `seqs` continue a journal whose last event is
/// `last_seq`: consecutive numbers from `last_seq + 1`. For backends; [`Error::Fenced`]
/// otherwise.
pub fn check_sequence(
    execution: &str,
    last_seq: u64,
    seqs: impl IntoIterator<Item = u64>,
) -> Result<()> {
    for (expected, seq) in (last_seq + 1..).zip(seqs) {
        if seq != expected {
            return Err(Error::Fenced {
                execution: execution.to_owned(),
                detail: format!(
                    "event {seq} does not continue the journal, which expects event {expected}; \
                     another writer appended first or the events are out of order"
                ),
            });
        }
    }
    Ok(())
}

/// The kind of attempt a stored log line belongs to, from the stored `compensation` flag and
/// attempt number (escalation notices are attempt 0). For backends.
pub fn attempt_kind(compensation: bool, attempt: u32) -> wayline_journal::AttemptKind {
    match (compensation, attempt) {
        (true, _) => wayline_journal::AttemptKind::Compensation,
        (false, 0) => wayline_journal::AttemptKind::Notify,
        (false, _) => wayline_journal::AttemptKind::Step,
    }
}

/// The `Fenced` error for a commit whose lease is not the current one.
pub fn stale_lease(lease: &Lease, owner: Option<&str>, token: u64) -> Error {
    Error::Fenced {
        execution: lease.execution.clone(),
        detail: format!(
            "the lease of {} (token {}) is no longer valid: it is now held by {} (token {token}); \
             another engine took the execution over",
            lease.owner,
            lease.token,
            owner.unwrap_or("nobody"),
        ),
    }
}
