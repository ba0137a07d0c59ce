//! The executor boundary: where the engine hands an attempt over to be carried out, and how
//! what happens to it comes back.
//!
//! The engine decides and commits; an [`Executor`] only runs what it is given. Each attempt
//! has a durable [`AttemptId`], so whoever runs it (this process, or later an agent on another
//! machine) names it the way the journal does. Everything an attempt reports — its process, its
//! log lines, its end — goes through its [`Reporter`] onto the engine's one channel, in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Map;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wayline_core::execution::AttemptResult;
use wayline_exec as exec;
use wayline_journal::{AttemptId, ErrorClass, ErrorInfo, Process};

use crate::clock::Clock;
use crate::render::Request;

/// Runs attempts. Implementations must not block: `start` hands the work to a task and
/// returns; the outcome arrives through the reporter.
pub trait Executor: Send + Sync + 'static {
    /// Starts attempt `id`. `lease` is the token of the owner's lease on the execution at
    /// dispatch: reports are fenced by it, so a late report of an owner that lost the
    /// execution is recognised.
    fn start(&self, id: AttemptId, lease: u64, request: Request, report: Reporter);

    /// Stops attempt `id` if it still runs (SIGTERM then SIGKILL, an aborted request). Its end
    /// is still reported, as cancelled.
    fn cancel(&self, id: &AttemptId);
}

/// What an attempt tells the engine.
#[derive(Debug)]
pub enum Report {
    /// The attempt's process started.
    Running(Process),
    /// A line of its log (stdout or stderr).
    Log { stream: exec::Stream, text: String },
    /// It ended.
    Finished(AttemptResult),
}

/// One report, addressed.
#[derive(Debug)]
pub struct Addressed {
    pub id: AttemptId,
    /// The lease token the attempt was started under.
    pub lease: u64,
    pub report: Report,
}

/// Sends one attempt's reports to the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    id: Arc<AttemptId>,
    lease: u64,
    sender: mpsc::UnboundedSender<Addressed>,
}

impl Reporter {
    pub fn new(id: AttemptId, lease: u64, sender: mpsc::UnboundedSender<Addressed>) -> Reporter {
        Reporter { id: Arc::new(id), lease, sender }
    }

    pub fn id(&self) -> &AttemptId {
        &self.id
    }

    pub fn send(&self, report: Report) {
        // The engine stopped: nobody is left to tell.
        let _ = self.sender.send(Addressed {
            id: AttemptId::clone(&self.id),
            lease: self.lease,
            report,
        });
    }
}

/// Runs attempts in this process: command steps as child processes, HTTP steps with one
/// shared client. Its tasks belong to the engine's task tracker and stop with its shutdown.
pub struct LocalExecutor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    clock: Clock,
    running: Mutex<HashMap<AttemptId, CancellationToken>>,
    http: Mutex<Option<exec::HttpClient>>,
    /// At most this many attempts run at once (`wayline server --local-slots`); the others
    /// wait for a slot in the order they were started.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl LocalExecutor {
    pub fn new(
        tracker: TaskTracker,
        shutdown: CancellationToken,
        clock: Clock,
        slots: Option<usize>,
    ) -> LocalExecutor {
        LocalExecutor {
            tracker,
            shutdown,
            clock,
            running: Mutex::new(HashMap::new()),
            http: Mutex::new(None),
            slots: slots.map(|slots| Arc::new(tokio::sync::Semaphore::new(slots))),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, CancellationToken>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The HTTP client, built on first use (it loads the platform's certificates).
    fn http(&self) -> Result<exec::HttpClient, String> {
        let mut http = self.http.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = &*http {
            return Ok(client.clone());
        }
        let client = exec::HttpClient::new().map_err(|error| format!("no HTTP client: {error}"))?;
        *http = Some(client.clone());
        Ok(client)
    }
}

impl Executor for Arc<LocalExecutor> {
    fn start(&self, id: AttemptId, _lease: u64, request: Request, report: Reporter) {
        let token = self.shutdown.child_token();
        self.running().insert(id.clone(), token.clone());
        let http = match &request {
            Request::Http(_) => Some(self.http()),
            Request::Command(_) => None,
        };
        let clock = self.clock;
        let this = Arc::clone(self);
        let slots = self.slots.clone();
        self.tracker.spawn(async move {
            // A fair semaphore: attempts get their slots in the order they were started. A
            // cancel while waiting ends the attempt without running it.
            let _slot = match slots {
                None => None,
                Some(slots) => tokio::select! {
                    slot = slots.acquire_owned() => slot.ok(),
                    () = token.cancelled() => {
                        this.running().remove(report.id());
                        report.send(Report::Finished(AttemptResult::Cancelled));
                        return;
                    }
                },
            };
            let outcome = match request {
                Request::Command(mut command) => {
                    let on_start = report.clone();
                    command.on_start = Some(Arc::new(move |process: exec::Process| {
                        on_start.send(Report::Running(Process {
                            host: crate::owner::hostname(),
                            pid: process.pid,
                            started: process.started,
                        }));
                    }));
                    let (sink, mut lines) = exec::LogSink::channel();
                    let run = exec::run_command(command, token, sink);
                    let forward = async {
                        while let Some(line) = lines.recv().await {
                            report.send(Report::Log { stream: line.stream, text: line.text });
                        }
                    };
                    tokio::join!(run, forward).0
                }
                Request::Http(request) => {
                    match http.unwrap_or_else(|| Err("no HTTP client".into())) {
                        Ok(client) => exec::run_http(&client, request, token).await,
                        Err(message) => exec::Outcome::Failed(exec::Failure {
                            class: exec::FailureClass::Fatal,
                            message,
                            outputs: Map::new(),
                            retry_after: None,
                        }),
                    }
                }
            };
            this.running().remove(report.id());
            report.send(Report::Finished(result(outcome, clock)));
        });
    }

    fn cancel(&self, id: &AttemptId) {
        if let Some(token) = self.running().get(id) {
            token.cancel();
        }
    }
}

/// An executor's outcome in the state machine's terms.
fn result(outcome: exec::Outcome, clock: Clock) -> AttemptResult {
    match outcome {
        exec::Outcome::Succeeded { outputs } => AttemptResult::Succeeded { outputs },
        exec::Outcome::Failed(failure) => {
            let class = match failure.class {
                exec::FailureClass::Failure => ErrorClass::Failure,
                exec::FailureClass::Timeout => ErrorClass::Timeout,
                exec::FailureClass::Fatal => ErrorClass::Fatal,
                exec::FailureClass::Cancelled => return AttemptResult::Cancelled,
            };
            let retry_after =
                failure.retry_after.map(|after| after.delay_from(clock.system_time()));
            AttemptResult::Failed {
                error: ErrorInfo::new(class, failure.message),
                outputs: failure.outputs,
                retry_after,
            }
        }
    }
}
