//! Benchmark workloads shared by the backends' `cargo bench` targets, so that every backend
//! and the in-memory baseline run exactly the same commits.
//!
//! A step costs three events, committed together the way an engine commits them: the
//! attempt's end (with small outputs), and the starts of what follows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wayline_journal::Status;
use wayline_journal::{Event, EventKind, Time};

use crate::{Commit, Lease, NewExecution, Store, Summary};

/// Events per step in these workloads.
pub const EVENTS_PER_STEP: u64 = 3;

/// What one workload did and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub steps: u64,
    pub commits: u64,
    pub elapsed: Duration,
}

impl Figures {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.elapsed.as_secs_f64()
    }

    pub fn events_per_second(&self) -> f64 {
        (self.steps * EVENTS_PER_STEP) as f64 / self.elapsed.as_secs_f64()
    }
}

/// One execution running `steps` steps one after another: one commit per step, each awaited
/// before the next (what a sequential chain of `set` steps costs).
pub async fn chain<S: Store>(store: &S, id: &str, steps: u64) -> Figures {
    let lease = create(store, id).await;
    let started = Instant::now();
    for step in 0..steps {
        let results = store.commit(vec![step_commit(&lease, step)]).await.expect("commit");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    Figures { steps, commits: steps, elapsed: started.elapsed() }
}

/// `executions` executions of `steps` steps each, the engine batching: every round, the step
/// of every execution is committed in one group commit.
pub async fn batched<S: Store>(store: &S, prefix: &str, executions: u64, steps: u64) -> Figures {
    let mut leases = Vec::new();
    for n in 0..executions {
        leases.push(create(store, &format!("{prefix}-{n:05}")).await);
    }
    let started = Instant::now();
    for step in 0..steps {
        let commits = leases.iter().map(|lease| step_commit(lease, step)).collect();
        let results = store.commit(commits).await.expect("commit");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    Figures { steps: executions * steps, commits: steps, elapsed: started.elapsed() }
}

/// `executions` executions of `steps` steps each, every execution committing its own steps
/// concurrently with the others (any batching is the store's own group commit).
pub async fn concurrent<S: Store>(store: &S, prefix: &str, executions: u64, steps: u64) -> Figures {
    let mut leases = Vec::new();
    for n in 0..executions {
        leases.push(create(store, &format!("{prefix}-{n:05}")).await);
    }
    let started = Instant::now();
    let runs: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = leases
        .iter()
        .map(|lease| {
            let run = async move {
                for step in 0..steps {
                    let results =
                        store.commit(vec![step_commit(lease, step)]).await.expect("commit");
                    assert!(results.iter().all(Result::is_ok), "{results:?}");
                }
            };
            Box::pin(run) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
        })
        .collect();
    JoinAll(runs.into_iter().map(Some).collect()).await;
    Figures { steps: executions * steps, commits: executions * steps, elapsed: started.elapsed() }
}

/// One line comparing a backend's figures with the in-memory baseline of the same workload.
pub fn report(workload: &str, backend: &str, measured: Figures, baseline: Figures) -> String {
    format!(
        "{workload:<44} {backend:<10} {:>9.1} ms  {:>9.0} steps/s  {:>9.0} events/s  {:>6} commits  ×{:.1} the in-memory time",
        measured.elapsed.as_secs_f64() * 1000.0,
        measured.steps_per_second(),
        measured.events_per_second(),
        measured.commits,
        measured.elapsed.as_secs_f64() / baseline.elapsed.as_secs_f64(),
    )
}

async fn create<S: Store>(store: &S, id: &str) -> Lease {
    let created = Event {
        v: wayline_journal::FORMAT,
        seq: 1,
        time: Time::from_micros(0),
        kind: EventKind::Created {
            workflow: "bench".into(),
            source: "name: bench\nsteps: []\n".into(),
            path: "bench.yaml".into(),
            inputs: Map::new(),
            imports: Default::default(),
        },
    };
    let new = NewExecution {
        id: id.into(),
        workflow: "bench".into(),
        created_at: Time::from_micros(0),
        owner: "bench".into(),
        ttl: Duration::from_secs(3600),
        summary: crate::Summary {
            status: wayline_journal::Status::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        },
        idempotency_key: None,
    };
    store.create(new, vec![created]).await.expect("create")
}

/// Step `step`'s commit: events `2 + 3 step ..`.
fn step_commit(lease: &Lease, step: u64) -> Commit {
    let seq = 2 + step * EVENTS_PER_STEP;
    let name = format!("step-{step:04}");
    let time = Time::from_micros(seq as i64);
    let mut outputs = Map::new();
    outputs.insert("exit_code".into(), Value::from(0));
    outputs.insert("artifact".into(), Value::from(format!("build/{name}.tar.gz")));
    let events = vec![
        Event {
            v: wayline_journal::FORMAT,
            seq,
            time,
            kind: EventKind::AttemptStarted {
                item: None,
                step: name.clone(),
                attempt: 1,
                compensation: false,
                until: None,
            },
        },
        Event {
            v: wayline_journal::FORMAT,
            seq: seq + 1,
            time,
            kind: EventKind::AttemptSucceeded {
                item: None,
                step: name,
                attempt: 1,
                compensation: false,
                outputs,
            },
        },
        Event {
            v: wayline_journal::FORMAT,
            seq: seq + 2,
            time,
            kind: EventKind::AttemptStarted {
                item: None,
                step: format!("step-{:04}", step + 1),
                attempt: 1,
                compensation: false,
                until: None,
            },
        },
    ];
    let summary =
        Summary { status: Status::Running, started_at: Some(time), finished_at: None, error: None };
    Commit { lease: lease.clone(), events, summary, handled: Vec::new() }
}

/// Polls every future until all are done (a spawn-free `join_all`).
struct JoinAll<'a>(Vec<Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>>);

impl Future for JoinAll<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for slot in self.0.iter_mut() {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    }
}
