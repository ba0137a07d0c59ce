//! The engine: owns executions, asks the core what to do, commits the decision to the store,
//! and only then acts on it (starts attempts, arms timers, cancels, notifies).
//!
//! One task runs the loop. Inputs that arrive while a commit is in flight queue up and are
//! decided and committed together in the next round: group commit across executions comes
//! from the shape of the loop, not from a special code path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wayline_core::execution::{
    Attempt, AttemptResult, Control, Effect, Execution, Input, Redrive, Rejected, Secrets, Timer,
};
use wayline_core::report::Report;
use wayline_exec as exec;
use wayline_journal::{AttemptId, AttemptKind, ErrorInfo, Event, Status, Time};
use wayline_lang::inputs::Given;
use wayline_store::{self as store, Commit, Lease, LogLine, NewExecution, Store, Summary};

use crate::clock::Clock;
use crate::executor::{self, Addressed, Executor, LocalExecutor, Reporter};
use crate::owner;
use crate::render::{self, Limits};
use crate::submit::Submission;
use crate::subscription::{Published, Subscription};

/// How an engine behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// This engine's owner id (see [`owner::this_process`]).
    pub owner: String,
    /// How long a lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
    /// Limits and kill grace for attempts.
    pub limits: Limits,
    /// How control requests made by other processes reach this engine.
    pub requests: Requests,
    /// How long to keep retrying a commit while the store is unavailable before stopping.
    pub store_patience: Duration,
    /// How many command and http attempts run at once here (`None`: no limit).
    pub local_slots: Option<usize>,
    /// Told about every group commit (a server's metrics).
    pub observer: Option<Arc<dyn CommitObserver>>,
}

/// Watches the engine's group commits: how many executions and events each carried, and how
/// long the store took to make it durable. Called on the engine's task: it must be quick.
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    fn committed(&self, executions: usize, events: usize, took: Duration);
}

impl Default for Options {
    fn default() -> Options {
        Options {
            owner: owner::this_process(),
            lease_ttl: LEASE_TTL,
            limits: Limits::default(),
            requests: Requests::Wakeups { at_most_every: Duration::from_millis(50) },
            store_patience: Duration::from_secs(30),
            local_slots: None,
            observer: None,
        }
    }
}

/// How long a lease lasts without renewal (an engine renews it every third of that).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// How an engine learns of control requests written by other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// Only this process can make requests (an in-memory store).
    Off,
    /// Look at the inbox this often.
    Poll(Duration),
    /// Look when the store says something changed ([`Store::changed`]: SQLite watches its
    /// files, PostgreSQL listens), at most this often: the engine's own commits wake it too,
    /// and a busy engine must not read the inbox after every one. An idle engine does not
    /// look at all, apart from a check every [`REQUEST_SAFETY_NET`].
    Wakeups { at_most_every: Duration },
}

/// The longest an engine goes without looking at its inbox, whatever the store says.
pub const REQUEST_SAFETY_NET: Duration = Duration::from_secs(5);

/// What can go wrong when asking the engine for something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The control request does not apply to the execution as it is (already finished, not
    /// escalated, …): the state machine's own reason.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// This engine cannot do it: the execution is not (or already) running here, or its owner
    /// is alive elsewhere.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a secret is missing, the stored definition is invalid).
    #[error("{0}")]
    Invalid(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

enum Command {
    Submit(Box<Submission>, oneshot::Sender<Result<String>>),
    Control(String, Control, oneshot::Sender<Result<()>>),
    Report(String, oneshot::Sender<Option<Report>>),
    Recover(String, Arc<Secrets>, bool, oneshot::Sender<Result<Recovered>>),
    Rerun(String, Box<Rerun>, Arc<Secrets>, oneshot::Sender<Result<()>>),
    Drain(Duration, oneshot::Sender<()>),
}

/// What a rerun asks for, before its inputs are checked against the workflow.
#[derive(Debug, Clone, Default)]
pub struct Rerun {
    /// Steps to run again with everything downstream; empty: what did not succeed.
    pub from: Vec<String>,
    /// New values of inputs (`-i name=value`, or JSON from the API).
    pub inputs: Vec<(String, Given)>,
    pub actor: wayline_journal::Actor,
}

/// The outcome of [`EngineHandle::recover`].
#[derive(Debug, Clone)]
pub enum Recovered {
    /// This engine now owns the execution and continues it.
    Resumed,
    /// The execution had already finished; nothing to do.
    Finished(Status),
}

/// A cheap handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle<S> {
    commands: mpsc::Sender<Command>,
    bus: broadcast::Sender<Arc<Published>>,
    store: S,
}

impl<S: Store> EngineHandle<S> {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// Starts an execution; returns its id once its creation is durable.
    pub async fn submit(&self, submission: Submission) -> Result<String> {
        self.ask(|reply| Command::Submit(Box::new(submission), reply)).await?
    }

    /// Applies a control request to an execution this engine owns; returns once the
    /// resulting events are committed.
    pub async fn control(&self, id: &str, control: Control) -> Result<()> {
        self.ask(|reply| Command::Control(id.to_owned(), control, reply)).await?
    }

    /// Takes over an execution whose owner is gone and continues it. An owner on this host
    /// that is still alive (busy, stopped) is not taken over unless `force`: its lease may
    /// have lapsed, but it may well go on.
    pub async fn recover(&self, id: &str, secrets: Arc<Secrets>, force: bool) -> Result<Recovered> {
        self.ask(|reply| Command::Recover(id.to_owned(), secrets, force, reply)).await?
    }

    /// Reruns a finished execution in place (`wayline rerun`): takes it into this engine and
    /// records what runs again; returns once that is committed. Refused with the reason
    /// ([`Error::Rejected`], [`Error::Invalid`]) without changing anything when it does not
    /// apply.
    pub async fn rerun(&self, id: &str, rerun: Rerun, secrets: Arc<Secrets>) -> Result<()> {
        self.ask(|reply| Command::Rerun(id.to_owned(), Box::new(rerun), secrets, reply)).await?
    }

    /// Stops the engine gently: from now on it takes no submission or takeover and starts no
    /// attempt, records the attempts that end, and stops (as on shutdown: whatever still runs
    /// is cancelled and the leases are released) once none runs or `grace` has passed.
    /// Returns once the engine has begun to drain.
    pub async fn drain(&self, grace: Duration) -> Result<()> {
        self.ask(|reply| Command::Drain(grace, reply)).await
    }

    /// The current report of an execution: from memory when this engine owns it, otherwise
    /// rebuilt from the store.
    pub async fn report(&self, id: &str) -> Result<Report> {
        if let Some(report) = self.ask(|reply| Command::Report(id.to_owned(), reply)).await? {
            return Ok(report);
        }
        crate::inspect::report(&self.store, id).await
    }

    /// Events of an execution after `after` (0: all), then live as they are committed.
    pub fn subscribe(&self, id: &str, after: u64) -> Subscription<S> {
        Subscription::live(self.store.clone(), id, after, self.bus.subscribe())
    }

    /// Waits until the execution finishes and returns its final report.
    pub async fn wait(&self, id: &str) -> Result<Report> {
        let mut subscription = self.subscribe(id, 0);
        while let Some(item) = subscription.next().await? {
            if let crate::subscription::Item::Event(Event {
                kind: wayline_journal::EventKind::Finished { .. },
                ..
            }) = item
            {
                return self.report(id).await;
            }
        }
        Err(Error::Stopped)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Everything this engine publishes as it commits, for observers of all its executions
    /// (metrics). A receiver that falls behind misses messages (`Lagged`); it never slows the
    /// engine.
    pub fn published(&self) -> broadcast::Receiver<Arc<Published>> {
        self.bus.subscribe()
    }
}

/// An input waiting to be decided, and who waits for its outcome.
struct Pending {
    execution: Arc<str>,
    /// `None` for a stored request that is not a valid control: it is only marked handled.
    input: Option<Input>,
    reply: Option<oneshot::Sender<Result<()>>>,
    /// The stored control request this input carries out.
    request: Option<u64>,
}

/// An execution this engine owns.
struct Owned {
    execution: Execution,
    lease: Lease,
    /// Attempts in flight on the executor.
    attempts: HashSet<Attempt>,
}

/// A submission checked and built, waiting for its creation to be committed.
struct Prepared {
    execution: Execution,
    /// `created` and the decisions of the start, committed together.
    events: Vec<Event>,
    effects: Vec<Effect>,
    new: NewExecution,
}

/// A timer waiting to fire; ordered by time, then by when it was armed.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Armed {
    at: Time,
    seq: u64,
    execution: Arc<str>,
    timer: Timer,
}

/// The decisions about one execution in one round.
#[derive(Default)]
struct Decided {
    events: Vec<Event>,
    effects: Vec<Effect>,
    /// Stored control requests carried out (or rejected) by these decisions.
    handled: Vec<u64>,
}

/// Someone waiting for the outcome of a control input.
struct Reply {
    sender: Option<oneshot::Sender<Result<()>>>,
    result: Result<()>,
    execution: Arc<str>,
}

/// What the engine's own tasks report back.
enum Message {
    /// The renewal found this lease taken over.
    LeaseLost(Lease),
    /// The renewal met an error that retrying cannot fix.
    StoreFailed(store::Error),
}

/// The engine service. Build it with [`Engine::new`], then `run` it; talk to it through the
/// [`EngineHandle`].
pub struct Engine<S> {
    store: S,
    options: Options,
    clock: Clock,
    commands: mpsc::Receiver<Command>,
    messages: mpsc::UnboundedReceiver<Message>,
    sender: mpsc::UnboundedSender<Message>,
    /// Where attempts report (through their [`Reporter`]), in order per attempt.
    reports: mpsc::UnboundedSender<Addressed>,
    reports_in: mpsc::UnboundedReceiver<Addressed>,
    executor: Box<dyn Executor>,
    bus: broadcast::Sender<Arc<Published>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    executions: HashMap<Arc<str>, Owned>,
    /// The lease of every owned execution, shared with the renewal task.
    leases: Arc<LeaseTable>,
    timers: BinaryHeap<Reverse<Armed>>,
    timer_seq: u64,
    inputs: VecDeque<Pending>,
    /// Inputs whose events need not be committed at once (a process record).
    lazy: Vec<Pending>,
    /// When the lazy inputs are committed even if nothing else is.
    lazy_until: Option<tokio::time::Instant>,
    /// When draining, the instant to stop at the latest.
    draining: Option<tokio::time::Instant>,
    /// Control requests from other processes already queued.
    queued_requests: HashSet<u64>,
    logs: Vec<LogLine>,
    /// Reports of recently finished executions, for `report` after the end.
    finished: HashMap<String, Report>,
    finished_order: VecDeque<String>,
}

const FINISHED_KEPT: usize = 1024;

/// How long a record that nothing waits for may wait for a commit to ride with. A crash in
/// this window loses the record, and then a takeover cannot stop that attempt's process.
const LAZY_COMMIT: Duration = Duration::from_millis(20);

/// Leases by execution, for the renewal task.
#[derive(Default)]
struct LeaseTable(std::sync::Mutex<HashMap<Arc<str>, Lease>>);

impl LeaseTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Lease>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S: Store> Engine<S> {
    pub fn new(
        store: S,
        options: Options,
        shutdown: CancellationToken,
    ) -> (Engine<S>, EngineHandle<S>) {
        let (command_sender, commands) = mpsc::channel(1024);
        let (sender, messages) = mpsc::unbounded_channel();
        let (reports, reports_in) = mpsc::unbounded_channel();
        let tracker = TaskTracker::new();
        let clock = Clock::system();
        let executor: Box<dyn Executor> = Box::new(Arc::new(LocalExecutor::new(
            tracker.clone(),
            shutdown.clone(),
            clock,
            options.local_slots,
        )));
        let (bus, _) = broadcast::channel(4096);
        let handle =
            EngineHandle { commands: command_sender, bus: bus.clone(), store: store.clone() };
        let engine = Engine {
            store,
            options,
            clock,
            commands,
            messages,
            sender,
            reports,
            reports_in,
            executor,
            bus,
            tracker,
            shutdown,
            executions: HashMap::new(),
            leases: Arc::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            inputs: VecDeque::new(),
            lazy: Vec::new(),
            lazy_until: None,
            draining: None,
            queued_requests: HashSet::new(),
            logs: Vec::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
        };
        (engine, handle)
    }

    /// Runs until the shutdown token is cancelled or the store stays unavailable for longer
    /// than `store_patience`. Attempts still running are then cancelled and leases released,
    /// so another engine (or `wayline resume`) can continue the executions.
    pub async fn run(mut self) -> Result<()> {
        self.start_renewing();
        let mut poll = tokio::time::interval(match self.options.requests {
            Requests::Poll(every) => every,
            Requests::Off | Requests::Wakeups { .. } => REQUEST_SAFETY_NET,
        });
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let polling = matches!(self.options.requests, Requests::Poll(_));
        let (mut changes, at_most_every) = match self.options.requests {
            Requests::Wakeups { at_most_every } => (Some(self.store.changes()), at_most_every),
            Requests::Off | Requests::Poll(_) => (None, Duration::ZERO),
        };
        // Looks at the inbox are spaced by `at_most_every`; a wake-up sooner is deferred.
        let mut last_look = tokio::time::Instant::now();
        let mut deferred: Option<tokio::time::Instant> = None;
        let mut outcome = Ok(());
        loop {
            let next_timer = self.timers.peek().map(|Reverse(armed)| self.clock.instant(armed.at));
            let watching = changes.is_some() && deferred.is_none() && !self.executions.is_empty();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(addressed) = self.reports_in.recv() => self.report(addressed),
                Some(message) = self.messages.recv() => {
                    if let Err(error) = self.message(message) {
                        outcome = Err(error);
                        break;
                    }
                }
                Some(command) = self.commands.recv() => {
                    // Take every command already waiting: their submissions are created in
                    // one round (the store batches concurrent creates into one commit).
                    let mut commands = vec![command];
                    while commands.len() < 1024 {
                        match self.commands.try_recv() {
                            Ok(command) => commands.push(command),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = self.commands(commands).await {
                        outcome = Err(error);
                        break;
                    }
                }
                () = sleep_until(next_timer), if next_timer.is_some() => self.fire_timers(),
                _ = poll.tick(), if polling => self.poll_requests().await,
                () = async { if let Some(changes) = &mut changes { changes.next(REQUEST_SAFETY_NET).await } }, if watching => {
                    let now = tokio::time::Instant::now();
                    if now >= last_look + at_most_every {
                        last_look = now;
                        self.poll_requests().await;
                    } else {
                        deferred = Some(last_look + at_most_every);
                    }
                }
                () = sleep_until_instant(self.draining), if self.draining.is_some() => break,
                () = sleep_until_instant(self.lazy_until), if self.lazy_until.is_some() => {
                    self.take_lazy();
                }
                () = sleep_until_instant(deferred), if deferred.is_some() => {
                    deferred = None;
                    last_look = tokio::time::Instant::now();
                    self.poll_requests().await;
                }
            }
            while let Ok(addressed) = self.reports_in.try_recv() {
                self.report(addressed);
            }
            while let Ok(message) = self.messages.try_recv() {
                if let Err(error) = self.message(message) {
                    outcome = Err(error);
                    break;
                }
            }
            if outcome.is_err() {
                break;
            }
            if let Err(error) = self.process().await {
                outcome = Err(error);
                break;
            }
            if self.draining.is_some()
                && self.executions.values().all(|owned| owned.attempts.is_empty())
            {
                break;
            }
        }
        self.stop().await;
        outcome
    }

    /// Renews the leases of every owned execution on a task of its own, so that a long
    /// decision round or a slow commit never lets a lease lapse while the engine is alive.
    /// Lost leases and fatal store errors come back as messages.
    fn start_renewing(&self) {
        let store = self.store.clone();
        let leases = Arc::clone(&self.leases);
        let sender = self.sender.clone();
        let shutdown = self.shutdown.clone();
        let ttl = self.options.lease_ttl;
        let clock = self.clock;
        self.tracker.spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let held: Vec<Lease> = leases.lock().values().cloned().collect();
                if held.is_empty() {
                    continue;
                }
                match store.renew(held.clone(), ttl, clock.now()).await {
                    Ok(results) => {
                        for (lease, held) in held.into_iter().zip(results) {
                            if !held {
                                let _ = sender.send(Message::LeaseLost(lease));
                            }
                        }
                    }
                    // Not fatal yet: the lease lasts three renewal periods.
                    Err(store::Error::Unavailable(_)) => {}
                    Err(error) => {
                        let _ = sender.send(Message::StoreFailed(error));
                        return;
                    }
                }
            }
        });
    }

    async fn commands(&mut self, commands: Vec<Command>) -> Result<()> {
        let mut creating = Vec::new();
        for command in commands {
            match command {
                Command::Submit(_, reply) if self.draining.is_some() => {
                    let _ = reply.send(Err(Error::Stopped));
                }
                Command::Submit(submission, reply) => match self.prepare(*submission) {
                    Ok(prepared) => creating.push((prepared, reply)),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                other => self.command(other).await,
            }
        }
        if creating.is_empty() {
            return Ok(());
        }
        let store = &self.store;
        let began = std::time::Instant::now();
        let results = futures_util::future::join_all(
            creating
                .iter()
                .map(|(prepared, _)| store.create(prepared.new.clone(), prepared.events.clone())),
        )
        .await;
        // The store's writer takes the creations of one turn together: one group commit.
        if let Some(observer) = &self.options.observer {
            let created = creating.iter().zip(&results).filter(|(_, result)| result.is_ok());
            let events = created.clone().map(|((prepared, _), _)| prepared.events.len()).sum();
            observer.committed(created.count(), events, began.elapsed());
        }
        let mut unavailable = None;
        let mut starts = Vec::new();
        for ((prepared, reply), result) in creating.into_iter().zip(results) {
            match result {
                Ok(lease) => {
                    let id = prepared.new.id.clone();
                    starts.push(self.register(prepared, lease));
                    let _ = reply.send(Ok(id));
                }
                Err(error) => {
                    if matches!(error, store::Error::Unavailable(_)) {
                        unavailable = Some(error.clone());
                    }
                    let _ = reply.send(Err(error.into()));
                }
            }
        }
        if !starts.is_empty() {
            // The creations are committed and their submitters told; let them answer (an API
            // response, a progress line) before this thread starts the first processes, which
            // can hold it for a millisecond each.
            tokio::task::yield_now().await;
        }
        for (key, effects) in starts {
            for effect in effects {
                self.act(&key, effect).await;
            }
        }
        match unavailable {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Submit(..) => {} // handled in batches by `commands`
            Command::Control(id, control, reply) => {
                match self.executions.get_key_value(id.as_str()) {
                    Some((key, _)) => {
                        let execution = Arc::clone(key);
                        self.inputs.push_back(Pending {
                            execution,
                            input: Some(Input::Control(control)),
                            reply: Some(reply),
                            request: None,
                        });
                    }
                    None => {
                        let _ = reply.send(Err(Error::Conflict(format!(
                            "execution {id} is not running in this process"
                        ))));
                    }
                }
            }
            Command::Report(id, reply) => {
                let report = match self.executions.get(id.as_str()) {
                    Some(owned) => Some(Report::new(&owned.execution)),
                    None => self.finished.get(&id).cloned(),
                };
                let _ = reply.send(report);
            }
            Command::Recover(id, secrets, force, reply) => {
                let result = match self.draining {
                    Some(_) => Err(Error::Stopped),
                    None => self.recover(&id, secrets, force).await,
                };
                let _ = reply.send(result);
            }
            Command::Rerun(id, rerun, secrets, reply) => {
                let taken = match self.draining {
                    Some(_) => Err(Error::Stopped),
                    None => self.rerun(&id, *rerun, secrets).await,
                };
                match taken {
                    // Decided again in the next round, where its commit is awaited.
                    Ok(redrive) => self.inputs.push_back(Pending {
                        execution: id.as_str().into(),
                        input: Some(Input::Redrive(redrive)),
                        reply: Some(reply),
                        request: None,
                    }),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Drain(grace, reply) => {
                let deadline = tokio::time::Instant::now() + grace;
                self.draining = Some(self.draining.map_or(deadline, |at| at.min(deadline)));
                for owned in self.executions.values_mut() {
                    owned.execution.hold();
                }
                let _ = reply.send(());
            }
        }
    }

    /// Checks a submission and builds its execution and first events (nothing stored yet).
    fn prepare(&self, submission: Submission) -> Result<Prepared> {
        let now = self.clock.now();
        let idempotency_key = submission.idempotency_key.clone();
        let breakpoints = submission.breakpoints.clone();
        let (mut execution, first) = submission.create(now)?;
        let mut events = vec![first];
        if !breakpoints.steps.is_empty() || breakpoints.every {
            events.extend(breakpoints.set(&mut execution, now)?);
        }
        // The start is decided before anything is stored, so one commit creates the execution
        // and starts its first steps.
        let start = execution.handle(Input::Start, now).map_err(Error::Rejected)?;
        events.extend(start.events);
        let new = NewExecution {
            id: execution.id().to_owned(),
            workflow: execution.workflow().name.clone(),
            created_at: now,
            owner: self.options.owner.clone(),
            ttl: self.options.lease_ttl,
            summary: summary(&execution),
            idempotency_key,
        };
        Ok(Prepared { execution, events, effects: start.effects, new })
    }

    /// Takes a created execution into this engine; returns the decisions of its start, to act
    /// on.
    fn register(&mut self, prepared: Prepared, lease: Lease) -> (Arc<str>, Vec<Effect>) {
        let key: Arc<str> = prepared.new.id.as_str().into();
        self.publish(&key, prepared.events);
        self.own(
            Arc::clone(&key),
            Owned { execution: prepared.execution, lease, attempts: HashSet::new() },
        );
        (key, prepared.effects)
    }

    async fn recover(&mut self, id: &str, secrets: Arc<Secrets>, force: bool) -> Result<Recovered> {
        if self.executions.contains_key(id) {
            return Err(Error::Conflict(format!(
                "execution {id} is already running in this process"
            )));
        }
        let record = self.store.get(id).await?;
        if record.status.is_final() {
            return Ok(Recovered::Finished(record.status));
        }
        // An owner known to be gone (or pushed aside with `force`) does not hold its lease.
        let dead = match record.owner.as_deref().map(|owner| (owner, owner::liveness(owner))) {
            Some((owner, owner::Liveness::Dead)) => Some(owner),
            Some((owner, owner::Liveness::Alive { .. })) if force => Some(owner),
            Some((owner, owner::Liveness::Alive { pid })) => {
                return Err(Error::Conflict(owner::alive_owner(id, owner, pid)));
            }
            _ => None,
        };
        let now = self.clock.now();
        let lease =
            self.store.acquire(id, &self.options.owner, self.options.lease_ttl, now, dead).await?;
        let events = crate::inspect::all_events(&self.store, id).await?;
        let (workflow, _) = crate::inspect::definition(&events)?;
        if let Some(message) = render::missing_secrets(&workflow, &secrets) {
            let _ = self.store.release(lease).await;
            return Err(Error::Invalid(message));
        }
        let execution = Execution::replay(id.to_owned(), Arc::new(workflow), secrets, &events)
            .map_err(|error| {
                Error::Store(store::Error::Corrupt(format!("execution {id}: {error}")))
            })?;
        // Attempts of the old owner that still run on this host would run beside their
        // retries: stop them first (TERM, then KILL after the grace period).
        for process in execution.processes() {
            if owner::is_here(&process.host) {
                let process = exec::Process { pid: process.pid, started: process.started };
                exec::stop_orphan(process, self.options.limits.kill_grace).await;
            }
        }
        let key: Arc<str> = id.into();
        self.own(Arc::clone(&key), Owned { execution, lease, attempts: HashSet::new() });
        let owner = self.options.owner.clone();
        self.inputs.push_back(Pending {
            execution: key,
            input: Some(Input::Recover { owner }),
            reply: None,
            request: None,
        });
        // Requests made while nobody owned the execution apply right after the takeover, in
        // the same round, so whoever asked for the takeover sees their effect.
        if self.options.requests != Requests::Off {
            self.poll_requests().await;
        }
        Ok(Recovered::Resumed)
    }

    /// Takes a finished execution into this engine for a rerun, once the rerun is known to
    /// apply: the lease first (so nobody else writes), then the journal as it is, then the
    /// decision, tried on a copy. Returns the rerun to decide for real.
    async fn rerun(&mut self, id: &str, rerun: Rerun, secrets: Arc<Secrets>) -> Result<Redrive> {
        if self.executions.contains_key(id) {
            return Err(Error::Conflict(format!(
                "execution {id} is running in this process; only a finished execution can be rerun"
            )));
        }
        let record = self.store.get(id).await?;
        if !record.status.is_final() {
            return Err(Error::Rejected(Rejected::NotFinished {
                id: id.to_owned(),
                status: record.status,
            }));
        }
        let now = self.clock.now();
        let lease =
            self.store.acquire(id, &self.options.owner, self.options.lease_ttl, now, None).await?;
        match self.prepare_rerun(id, rerun, secrets, now).await {
            Ok((execution, redrive)) => {
                self.finished.remove(id);
                let key: Arc<str> = id.into();
                self.own(key, Owned { execution, lease, attempts: HashSet::new() });
                Ok(redrive)
            }
            Err(error) => {
                let _ = self.store.release(lease).await;
                Err(error)
            }
        }
    }

    async fn prepare_rerun(
        &self,
        id: &str,
        rerun: Rerun,
        secrets: Arc<Secrets>,
        now: Time,
    ) -> Result<(Execution, Redrive)> {
        let events = crate::inspect::all_events(&self.store, id).await?;
        let (workflow, _) = crate::inspect::definition(&events)?;
        if let Some(message) = render::missing_secrets(&workflow, &secrets) {
            return Err(Error::Invalid(message));
        }
        let execution = Execution::replay(id.to_owned(), Arc::new(workflow), secrets, &events)
            .map_err(|error| {
                Error::Store(store::Error::Corrupt(format!("execution {id}: {error}")))
            })?;
        let inputs =
            crate::inspect::changed_inputs(&execution, rerun.inputs).map_err(Error::Invalid)?;
        let redrive = Redrive { from: rerun.from, inputs, actor: rerun.actor };
        execution.clone().handle(Input::Redrive(redrive.clone()), now).map_err(Error::Rejected)?;
        Ok((execution, redrive))
    }

    /// What an attempt reported. Reports of attempts this engine no longer owns (another
    /// engine took the execution over), or started under an older lease, are dropped.
    fn report(&mut self, addressed: Addressed) {
        let Addressed { id, lease, report } = addressed;
        let Some((key, _)) = self.executions.get_key_value(id.execution.as_str()) else {
            return;
        };
        let execution = Arc::clone(key);
        let Some(owned) = self.executions.get_mut(&execution) else { return };
        if owned.lease.token != lease {
            return;
        }
        let Some(attempt) = core_attempt(&owned.execution, &id) else { return };
        match report {
            executor::Report::Running(process) => {
                // Nothing waits for this record: it rides with the next commit, or goes on
                // its own after a moment when nothing else is committed.
                if self.lazy.is_empty() {
                    self.lazy_until = Some(tokio::time::Instant::now() + LAZY_COMMIT);
                }
                self.lazy.push(Pending {
                    execution,
                    input: Some(Input::Running { attempt, process }),
                    reply: None,
                    request: None,
                });
            }
            executor::Report::Log { stream, text } => self.logs.push(LogLine {
                execution: execution.to_string(),
                line: 0,
                step: id.step,
                item: id.item,
                attempt: id.number,
                kind: id.kind,
                stream: match stream {
                    exec::Stream::Stdout => "stdout".into(),
                    exec::Stream::Stderr => "stderr".into(),
                },
                time: self.clock.now(),
                text,
            }),
            executor::Report::Finished(result) => {
                owned.attempts.remove(&attempt);
                if attempt.kind == AttemptKind::Notify {
                    let text = match &result {
                        AttemptResult::Succeeded { .. } => {
                            "[wayline] escalation notice sent".into()
                        }
                        AttemptResult::Failed { error, .. } => {
                            format!("[wayline] escalation notice failed: {}", error.message)
                        }
                        AttemptResult::Cancelled => "[wayline] escalation notice cancelled".into(),
                    };
                    self.logs.push(LogLine {
                        execution: execution.to_string(),
                        line: 0,
                        step: id.step,
                        item: id.item,
                        attempt: 0,
                        kind: AttemptKind::Notify,
                        stream: "stderr".into(),
                        time: self.clock.now(),
                        text,
                    });
                    return;
                }
                self.inputs.push_back(Pending {
                    execution,
                    input: Some(Input::Finished { attempt, result }),
                    reply: None,
                    request: None,
                });
            }
        }
    }

    fn message(&mut self, message: Message) -> Result<()> {
        match message {
            Message::LeaseLost(lease) => {
                let current = self.executions.get(lease.execution.as_str()).map(|o| &o.lease);
                if current == Some(&lease) {
                    self.abandon(&lease.execution, "its lease was taken over by another engine");
                }
            }
            Message::StoreFailed(error) => return Err(error.into()),
        }
        Ok(())
    }

    fn fire_timers(&mut self) {
        let now = self.clock.now();
        while let Some(Reverse(armed)) = self.timers.peek() {
            if armed.at > now {
                break;
            }
            let Some(Reverse(Armed { execution, timer, .. })) = self.timers.pop() else { break };
            if self.executions.contains_key(&execution) {
                self.inputs.push_back(Pending {
                    execution,
                    input: Some(Input::Timer(timer)),
                    reply: None,
                    request: None,
                });
            }
        }
    }

    async fn poll_requests(&mut self) {
        if self.executions.is_empty() {
            return;
        }
        let ids: Vec<String> = self.executions.keys().map(|id| id.to_string()).collect();
        let Ok(requests) = self.store.requests(ids).await else { return };
        for stored in requests {
            if !self.queued_requests.insert(stored.id) {
                continue;
            }
            let Some((key, _)) = self.executions.get_key_value(stored.execution.as_str()) else {
                continue;
            };
            let execution = Arc::clone(key);
            let Some(control) = crate::control::control(&stored) else {
                // Not a request any wayline writes: mark it handled and move on.
                self.inputs.push_back(Pending {
                    execution,
                    input: None,
                    reply: None,
                    request: Some(stored.id),
                });
                continue;
            };
            self.inputs.push_back(Pending {
                execution,
                input: Some(Input::Control(control)),
                reply: None,
                request: Some(stored.id),
            });
        }
    }

    /// Moves the lazy inputs to the front of the queue: a process record comes before its
    /// attempt's end.
    fn take_lazy(&mut self) {
        self.lazy_until = None;
        for pending in self.lazy.drain(..).rev() {
            self.inputs.push_front(pending);
        }
    }

    /// Decides every queued input, commits the decisions of all executions together, then
    /// acts on them. Acting can queue new inputs (an attempt that cannot even be rendered),
    /// so this repeats until nothing is queued.
    async fn process(&mut self) -> Result<()> {
        self.flush_logs().await;
        loop {
            // Timers already due (`wait: 0s`, a retry whose delay passed during a commit) fire
            // here rather than after another trip through the timer wheel.
            self.fire_timers();
            if self.inputs.is_empty() {
                return Ok(());
            }
            if !self.lazy.is_empty() {
                self.take_lazy();
            }
            let now = self.clock.now();
            let mut order: Vec<Arc<str>> = Vec::new();
            let mut batch: HashMap<Arc<str>, Decided> = HashMap::new();
            let mut replies: Vec<Reply> = Vec::new();
            while let Some(pending) = self.inputs.pop_front() {
                let Some(owned) = self.executions.get_mut(&pending.execution) else {
                    if let Some(reply) = pending.reply {
                        let _ = reply.send(Err(Error::Conflict(format!(
                            "execution {} is not running in this process",
                            pending.execution
                        ))));
                    }
                    continue;
                };
                let entry = batch.entry(Arc::clone(&pending.execution)).or_insert_with(|| {
                    order.push(Arc::clone(&pending.execution));
                    Default::default()
                });
                let result = match pending.input {
                    Some(input) => owned.execution.handle(input, now).map_err(Error::Rejected),
                    None => Err(Error::Conflict("not a valid request".into())),
                };
                let result = result.map(|step| {
                    entry.events.extend(step.events);
                    entry.effects.extend(step.effects);
                });
                if let Some(request) = pending.request {
                    entry.handled.push(request);
                }
                replies.push(Reply {
                    sender: pending.reply,
                    result,
                    execution: Arc::clone(&pending.execution),
                });
            }
            let mut commits = Vec::new();
            let mut committed: Vec<Arc<str>> = Vec::new();
            for id in &order {
                let decided = &batch[id];
                if decided.events.is_empty() && decided.handled.is_empty() {
                    continue;
                }
                let owned = &self.executions[id];
                commits.push(Commit {
                    lease: owned.lease.clone(),
                    events: decided.events.clone(),
                    summary: summary(&owned.execution),
                    handled: decided.handled.clone(),
                });
                committed.push(Arc::clone(id));
            }
            let results = self.commit(commits).await?;
            let mut failed: HashSet<Arc<str>> = HashSet::new();
            for (id, result) in committed.iter().zip(results) {
                if let Err(error) = result {
                    failed.insert(Arc::clone(id));
                    self.abandon(id, &error.to_string());
                }
            }
            // Handled requests are gone from the inbox (or their execution from this engine).
            for decided in batch.values() {
                for request in &decided.handled {
                    self.queued_requests.remove(request);
                }
            }
            for id in order {
                if failed.contains(&id) {
                    continue;
                }
                let Some(Decided { events, effects, .. }) = batch.remove(&id) else { continue };
                if !events.is_empty() {
                    self.publish(&id, events);
                }
                for effect in effects {
                    self.act(&id, effect).await;
                }
            }
            for Reply { sender, result, execution } in replies {
                if let Some(sender) = sender {
                    let result = if failed.contains(&execution) {
                        Err(Error::Conflict(format!(
                            "execution {execution} is no longer owned by this process"
                        )))
                    } else {
                        result
                    };
                    let _ = sender.send(result);
                }
            }
        }
    }

    /// Commits a batch, retrying while the store is unavailable (a restarting database) up to
    /// `store_patience`.
    async fn commit(&mut self, commits: Vec<Commit>) -> Result<Vec<store::Result<()>>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + self.options.store_patience;
        let mut pause = Duration::from_millis(50);
        let mut retried = false;
        loop {
            let began = std::time::Instant::now();
            let result = self.store.commit(commits.clone()).await;
            if let (Ok(_), Some(observer)) = (&result, &self.options.observer) {
                let events = commits.iter().map(|commit| commit.events.len()).sum();
                observer.committed(commits.len(), events, began.elapsed());
            }
            match result {
                Ok(mut results) if retried => {
                    // A try that failed as `Unavailable` may still have landed (the connection
                    // dropped during COMMIT): then this retry is refused as fenced although the
                    // events are ours. The journal tells.
                    for (commit, result) in commits.iter().zip(results.iter_mut()) {
                        let Err(store::Error::Fenced { .. }) = result else { continue };
                        let Some(last) = commit.events.last() else { continue };
                        if let Ok(record) = self.store.get(&commit.lease.execution).await
                            && record.last_seq == last.seq
                            && record.owner.as_deref() == Some(commit.lease.owner.as_str())
                        {
                            *result = Ok(());
                        }
                    }
                    return Ok(results);
                }
                Ok(results) => return Ok(results),
                Err(store::Error::Unavailable(reason))
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    retried = true;
                    tracing::warn!(
                        "database unavailable ({reason}); retrying in {}ms",
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn act(&mut self, id: &Arc<str>, effect: Effect) {
        match effect {
            Effect::Start(attempt) => {
                let Some(owned) = self.executions.get_mut(id) else { return };
                match render::attempt(&owned.execution, attempt, &self.options.limits) {
                    Ok(request) => {
                        owned.attempts.insert(attempt);
                        let attempt_id = attempt_id(&owned.execution, attempt);
                        let lease = owned.lease.token;
                        let reporter =
                            Reporter::new(attempt_id.clone(), lease, self.reports.clone());
                        self.executor.start(attempt_id, lease, request, reporter);
                    }
                    Err(error) => {
                        let error = ErrorInfo::new(error.class, error.message);
                        let result =
                            AttemptResult::Failed { error, outputs: Map::new(), retry_after: None };
                        self.inputs.push_back(Pending {
                            execution: Arc::clone(id),
                            input: Some(Input::Finished { attempt, result }),
                            reply: None,
                            request: None,
                        });
                    }
                }
            }
            Effect::Cancel(attempt) => {
                if let Some(owned) = self.executions.get(id)
                    && owned.attempts.contains(&attempt)
                {
                    self.executor.cancel(&attempt_id(&owned.execution, attempt));
                }
            }
            Effect::Timer { at, timer } => {
                self.timer_seq += 1;
                self.timers.push(Reverse(Armed {
                    at,
                    seq: self.timer_seq,
                    execution: Arc::clone(id),
                    timer,
                }));
            }
            Effect::Notify { step } => self.notify(id, step),
            Effect::Finished => {
                if let Some(owned) = self.disown(id) {
                    self.cancel_all(&owned);
                    self.remember(Report::new(&owned.execution));
                    if let Err(error) = self.store.release(owned.lease).await {
                        tracing::warn!("could not release the lease of {id}: {error}");
                    }
                }
            }
        }
    }

    /// Takes an execution into this engine; its lease is renewed from now on.
    fn own(&mut self, key: Arc<str>, owned: Owned) {
        self.leases.lock().insert(Arc::clone(&key), owned.lease.clone());
        self.executions.insert(key, owned);
    }

    /// Lets go of an execution; its lease is no longer renewed.
    fn disown(&mut self, id: &str) -> Option<Owned> {
        self.leases.lock().remove(id);
        self.executions.remove(id)
    }

    fn remember(&mut self, report: Report) {
        if self.finished_order.len() >= FINISHED_KEPT
            && let Some(oldest) = self.finished_order.pop_front()
        {
            self.finished.remove(&oldest);
        }
        self.finished_order.push_back(report.id.clone());
        self.finished.insert(report.id.clone(), report);
    }

    /// Calls `escalation.notify`, as an attempt of its own kind; its outcome goes to the
    /// step's log.
    fn notify(&mut self, id: &Arc<str>, step: usize) {
        let Some(owned) = self.executions.get_mut(id) else { return };
        let Some(request) = render::notify(&owned.execution, step, &self.options.limits) else {
            return;
        };
        let attempt = Attempt {
            step,
            item: None,
            number: owned.execution.steps()[step].attempts.max(1),
            kind: AttemptKind::Notify,
        };
        let attempt_id = attempt_id(&owned.execution, attempt);
        match request {
            Ok(request) => {
                owned.attempts.insert(attempt);
                let lease = owned.lease.token;
                let reporter = Reporter::new(attempt_id.clone(), lease, self.reports.clone());
                self.executor.start(attempt_id, lease, request, reporter);
            }
            Err(error) => self.logs.push(LogLine {
                execution: id.to_string(),
                line: 0,
                step: attempt_id.step,
                item: attempt_id.item,
                attempt: 0,
                kind: AttemptKind::Notify,
                stream: "stderr".into(),
                time: self.clock.now(),
                text: format!("[wayline] escalation notice failed: {}", error.message),
            }),
        }
    }

    /// Stops every attempt an execution has in flight.
    fn cancel_all(&self, owned: &Owned) {
        for attempt in &owned.attempts {
            self.executor.cancel(&attempt_id(&owned.execution, *attempt));
        }
    }

    async fn flush_logs(&mut self) {
        if self.logs.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.logs);
        // Tell subscribers only once the lines are stored: they read them from the store.
        let mut told: HashSet<String> = HashSet::new();
        let pokes: Vec<LogLine> =
            lines.iter().filter(|line| told.insert(line.execution.clone())).cloned().collect();
        if let Err(error) = self.store.append_logs(lines).await {
            tracing::warn!("could not store log lines: {error}");
        }
        for line in pokes {
            let _ = self.bus.send(Arc::new(Published::Log(line)));
        }
    }

    fn publish(&self, id: &Arc<str>, events: Vec<Event>) {
        // Nobody listening is fine.
        let _ = self
            .bus
            .send(Arc::new(Published::Events { execution: Arc::clone(id), events: events.into() }));
    }

    /// Stops working on an execution this engine can no longer write (lease lost, fenced):
    /// its attempts are cancelled and its state dropped; the journal stays the truth.
    fn abandon(&mut self, id: &str, why: &str) {
        if let Some(owned) = self.disown(id) {
            tracing::warn!("stopped working on execution {id}: {why}");
            self.cancel_all(&owned);
            let _ = self.bus.send(Arc::new(Published::Lost { execution: id.into() }));
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.tracker.close();
        // Attempts end promptly once cancelled (their processes are killed); give them the
        // kill grace period and a little more.
        let grace = self.options.limits.kill_grace + Duration::from_secs(2);
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
        while let Ok(addressed) = self.reports_in.try_recv() {
            if let executor::Report::Log { .. } = addressed.report {
                self.report(addressed);
            }
        }
        self.flush_logs().await;
        self.leases.lock().clear();
        for (_, owned) in self.executions.drain() {
            let _ = self.store.release(owned.lease).await;
        }
    }
}

/// The durable name of one of `execution`'s attempts.
fn attempt_id(execution: &Execution, attempt: Attempt) -> AttemptId {
    AttemptId {
        execution: execution.id().to_owned(),
        step: execution.workflow().steps[attempt.step].id.clone(),
        item: attempt.item,
        number: attempt.number,
        kind: attempt.kind,
    }
}

/// The state machine's name for a reported attempt, if the workflow has its step.
fn core_attempt(execution: &Execution, id: &AttemptId) -> Option<Attempt> {
    let step = execution.workflow().step(&id.step)?;
    Some(Attempt { step, item: id.item, number: id.number, kind: id.kind })
}

pub(crate) fn summary(execution: &Execution) -> Summary {
    Summary {
        status: execution.status(),
        started_at: execution.started_at(),
        finished_at: execution.finished_at(),
        error: execution
            .outcome()
            .and_then(|(_, error)| error.as_ref())
            .map(|error| error.message.clone()),
    }
}

async fn sleep_until_instant(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
