//! Metrics in the Prometheus text format (`GET /metrics`). What the engine does is counted
//! from what it publishes as it commits (the event bus), so the engine carries no metrics
//! code of its own; the HTTP side is counted by a middleware.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wayline_journal::{EventKind, Time};
use wayline_runtime::EngineHandle;
use wayline_runtime::subscription::Published;
use wayline_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    workflow: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    status: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms to ~9 minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    started: Family<WorkflowLabels, Counter>,
    finished: Family<FinishedLabels, Counter>,
    running: Gauge,
    attempts: Family<AttemptLabels, Counter>,
    attempts_running: Gauge,
    attempt_seconds: Histogram,
    queue_seconds: Histogram,
    commit_seconds: Histogram,
    commit_executions: Histogram,
    commit_events: Histogram,
    requests: Family<HttpLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    streams: Gauge,
    missed: Counter,
    fold: Mutex<Fold>,
}

/// What counting needs to remember between events.
#[derive(Default)]
struct Fold {
    /// The workflow of each execution seen running here.
    workflows: HashMap<Arc<str>, String>,
    /// When each attempt in flight started: (execution, step, attempt, compensation).
    attempts: HashMap<(Arc<str>, String, u32, bool), Time>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wayline");
        let metrics = Metrics {
            started: Family::default(),
            finished: Family::default(),
            running: Gauge::default(),
            attempts: Family::default(),
            attempts_running: Gauge::default(),
            attempt_seconds: seconds_histogram(),
            queue_seconds: seconds_histogram(),
            // From 20 µs: a SQLite commit on an idle connection takes about 50 µs.
            commit_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 18)),
            commit_executions: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds_histogram),
            streams: Gauge::default(),
            missed: Counter::default(),
            fold: Mutex::new(Fold::default()),
            registry: Registry::default(),
        };
        registry.register(
            "executions_started",
            "Executions started here, by workflow",
            metrics.started.clone(),
        );
        registry.register(
            "executions_finished",
            "Executions that ended here, by workflow and final status",
            metrics.finished.clone(),
        );
        registry.register(
            "executions_running",
            "Executions this server runs now",
            metrics.running.clone(),
        );
        registry.register(
            "attempts",
            "Step attempts that ended, by status and error class",
            metrics.attempts.clone(),
        );
        registry.register(
            "attempts_running",
            "Step attempts in flight",
            metrics.attempts_running.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "How long step attempts took, from their start to their end",
            metrics.attempt_seconds.clone(),
        );
        registry.register(
            "attempt_queue_seconds",
            "How long command attempts waited for a local slot, from their start to their process",
            metrics.queue_seconds.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "How long the store took to make a group commit durable",
            metrics.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_executions",
            "How many executions one group commit carried",
            metrics.commit_executions.clone(),
        );
        registry.register(
            "store_commit_events",
            "How many events one group commit carried",
            metrics.commit_events.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "How long HTTP requests took to answer (streams: until their headers)",
            metrics.request_seconds.clone(),
        );
        registry.register("event_streams", "Open event streams", metrics.streams.clone());
        registry.register(
            "bus_missed",
            "Times the metrics fell behind the engine and missed events",
            metrics.missed.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an event stream while the returned guard lives.
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        self.streams.inc();
        StreamGuard(Arc::clone(self))
    }

    fn count(&self, execution: &Arc<str>, workflow: Option<&str>, kind: &EventKind, time: Time) {
        let mut fold = self.fold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kind {
            EventKind::Created { workflow, .. } => {
                self.started.get_or_create(&WorkflowLabels { workflow: workflow.clone() }).inc();
                self.running.inc();
                fold.workflows.insert(Arc::clone(execution), workflow.clone());
            }
            EventKind::Recovered { .. } => {
                self.running.inc();
                if let Some(workflow) = workflow {
                    fold.workflows.insert(Arc::clone(execution), workflow.to_owned());
                }
            }
            EventKind::AttemptStarted { step, attempt, compensation, .. } => {
                self.attempts_running.inc();
                fold.attempts
                    .insert((Arc::clone(execution), step.clone(), *attempt, *compensation), time);
            }
            EventKind::AttemptRunning { step, attempt, compensation, .. } => {
                let key = (Arc::clone(execution), step.clone(), *attempt, *compensation);
                if let Some(started) = fold.attempts.get(&key) {
                    let micros = (time.as_micros() - started.as_micros()).max(0);
                    self.queue_seconds.observe(micros as f64 / 1e6);
                }
            }
            EventKind::AttemptSucceeded { step, attempt, compensation, .. }
            | EventKind::AttemptFailed { step, attempt, compensation, .. }
            | EventKind::AttemptCancelled { step, attempt, compensation, .. } => {
                let (status, class) = match kind {
                    EventKind::AttemptSucceeded { .. } => ("succeeded", String::new()),
                    EventKind::AttemptFailed { error, .. } => {
                        ("failed", error.class.name().to_owned())
                    }
                    _ => ("cancelled", String::new()),
                };
                self.attempts.get_or_create(&AttemptLabels { status: status.into(), class }).inc();
                let key = (Arc::clone(execution), step.clone(), *attempt, *compensation);
                if let Some(started) = fold.attempts.remove(&key) {
                    self.attempts_running.dec();
                    let micros = (time.as_micros() - started.as_micros()).max(0);
                    self.attempt_seconds.observe(micros as f64 / 1e6);
                }
            }
            EventKind::Finished { outcome, .. } => {
                let workflow = fold.workflows.remove(execution).unwrap_or_default();
                self.finished
                    .get_or_create(&FinishedLabels { workflow, status: outcome.name().to_owned() })
                    .inc();
                self.running.dec();
                forget_attempts(&mut fold, execution, &self.attempts_running);
            }
            _ => {}
        }
    }

    fn lost(&self, execution: &Arc<str>) {
        let mut fold = self.fold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fold.workflows.remove(execution).is_some() {
            self.running.dec();
        }
        forget_attempts(&mut fold, execution, &self.attempts_running);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl wayline_runtime::CommitObserver for Metrics {
    fn committed(&self, executions: usize, events: usize, took: std::time::Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_executions.observe(executions as f64);
        self.commit_events.observe(events as f64);
    }
}

fn forget_attempts(fold: &mut Fold, execution: &Arc<str>, running: &Gauge) {
    let before = fold.attempts.len();
    fold.attempts.retain(|(id, ..), _| id != execution);
    running.dec_by((before - fold.attempts.len()) as i64);
}

/// Keeps an event stream counted.
pub struct StreamGuard(Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.dec();
    }
}

/// Counts what the engine publishes until `stop`.
pub async fn keep_counting<S: Store>(
    handle: EngineHandle<S>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut bus = handle.published();
    loop {
        let published = tokio::select! {
            () = stop.cancelled() => return,
            published = bus.recv() => published,
        };
        match published {
            Ok(published) => match &*published {
                Published::Events { execution, events } => {
                    // A taken-over execution's workflow is in the store, not in its new events.
                    let recovered =
                        events.iter().any(|e| matches!(e.kind, EventKind::Recovered { .. }));
                    let workflow = if recovered {
                        handle.store().get(execution).await.ok().map(|record| record.workflow)
                    } else {
                        None
                    };
                    for event in events.iter() {
                        metrics.count(execution, workflow.as_deref(), &event.kind, event.time);
                    }
                }
                Published::Lost { execution } => metrics.lost(execution),
                Published::Log(_) => {}
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics.missed.inc_by(missed);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Counts every answered request by its route (the pattern, not the path, so that ids do not
/// make a label each).
pub async fn count_requests(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        target: "wayline::http",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        ms = start.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    metrics
        .request_seconds
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    response
}
