//! The engine in-process, on the in-memory store wrapped to watch or break commits: the
//! decide → commit → act order, group commit, subscriptions; and http steps rendered and sent
//! to a real local server.

mod http;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wayline_core::execution::Secrets;
use wayline_journal::{Event, EventKind, Time};
use wayline_runtime::{Engine, EngineHandle, Item, Options, Submission};
use wayline_store::{
    Changes, Commit, Error, ExecutionRecord, Filter, Lease, LogLine, MemoryStore, NewExecution,
    Request, Result, Store, StoredRequest,
};

/// The in-memory store, with a record of every commit batch and a switch that makes commits
/// fail as if the database were down.
#[derive(Clone, Default)]
struct Watched {
    inner: MemoryStore,
    batches: Arc<Mutex<Vec<usize>>>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl Store for Watched {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        self.inner.create(execution, events).await
    }
    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable("the test switched the database off".into()));
        }
        self.batches.lock().unwrap().push(commits.len());
        self.inner.commit(commits).await
    }
    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        self.inner.get(id).await
    }
    async fn resolve(&self, prefix: &str) -> Result<String> {
        self.inner.resolve(prefix).await
    }
    async fn by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        self.inner.by_idempotency_key(key).await
    }
    async fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: wayline_journal::Time,
    ) -> Result<(wayline_store::WorkflowVersion, bool)> {
        self.inner.put_workflow(name, source, now).await
    }
    async fn workflow_versions(&self, name: &str) -> Result<Vec<wayline_store::WorkflowVersion>> {
        self.inner.workflow_versions(name).await
    }
    async fn workflows(&self) -> Result<Vec<wayline_store::WorkflowVersion>> {
        self.inner.workflows().await
    }
    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        self.inner.delete_workflow(name).await
    }
    async fn add_token(&self, token: wayline_store::TokenRecord) -> Result<()> {
        self.inner.add_token(token).await
    }
    async fn tokens(&self) -> Result<Vec<wayline_store::TokenRecord>> {
        self.inner.tokens().await
    }
    async fn token(&self, id: &str) -> Result<Option<wayline_store::TokenRecord>> {
        self.inner.token(id).await
    }
    async fn revoke_token(&self, name: &str) -> Result<bool> {
        self.inner.revoke_token(name).await
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.inner.events(id, after, limit).await
    }
    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        self.inner.list(filter).await
    }
    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead: Option<&str>,
    ) -> Result<Lease> {
        self.inner.acquire(id, owner, ttl, now, dead).await
    }
    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        self.inner.renew(leases, ttl, now).await
    }
    async fn release(&self, lease: Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        self.inner.request(id, request, now).await
    }
    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        self.inner.requests(ids).await
    }
    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        self.inner.append_logs(lines).await
    }
    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        self.inner.logs(id, step, after, limit).await
    }
    async fn gc(&self, before: Time) -> Result<u64> {
        self.inner.gc(before).await
    }
    fn changes(&self) -> Changes {
        self.inner.changes()
    }
}

fn submission(yaml: &str) -> Submission {
    let loaded = wayline_lang::load(yaml);
    Submission {
        workflow: Arc::new(loaded.workflow.expect("a valid test workflow")),
        source: yaml.into(),
        imports: Default::default(),
        path: "test.yaml".into(),
        inputs: Default::default(),
        secrets: Arc::new(Secrets::default()),
        idempotency_key: None,
        breakpoints: Default::default(),
    }
}

/// Runs `work` with an engine on `store`; returns what `work` returned and how the engine ended.
async fn with_engine<T>(
    store: Watched,
    options: Options,
    work: impl AsyncFnOnce(EngineHandle<Watched>) -> T,
) -> (T, std::result::Result<(), wayline_runtime::Error>) {
    let shutdown = CancellationToken::new();
    let (engine, handle) = Engine::new(store, options, shutdown.clone());
    let (ended, value) = tokio::join!(engine.run(), async {
        let value = work(handle).await;
        shutdown.cancel();
        value
    });
    (value, ended)
}

fn quiet() -> Options {
    Options { requests: wayline_runtime::Requests::Off, ..Options::default() }
}

#[tokio::test]
async fn no_effect_runs_before_its_events_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let yaml = format!(
        "name: order\nsteps:\n  - id: first\n    wait: 0s\n  - id: second\n    needs: [first]\n    run: touch {}\n",
        marker.display()
    );
    let store = Watched::default();
    store.down.store(true, Ordering::SeqCst); // creation works, every later commit fails
    let options = Options { store_patience: Duration::from_millis(300), ..quiet() };
    let (engine, handle) = Engine::new(store.clone(), options, CancellationToken::new());
    let run = engine.run();
    tokio::pin!(run);
    tokio::select! {
        created = handle.submit(submission(&yaml)) => { created.expect("created"); }
        ended = &mut run => panic!("the engine ended before creating: {ended:?}"),
    }
    // `first` ends at once; the decision to start `second` cannot be committed, so the
    // engine keeps retrying, gives up after its patience, and stops without acting.
    let ended = run.await;
    assert!(
        matches!(ended, Err(wayline_runtime::Error::Store(Error::Unavailable(_)))),
        "{ended:?}"
    );
    assert!(store.refused.load(Ordering::SeqCst) >= 2, "the engine retried the commit");
    assert!(
        !marker.exists(),
        "`second` started although the decision to start it was never committed"
    );
}

#[tokio::test]
async fn concurrent_executions_share_commits() {
    let store = Watched::default();
    let yaml = "name: five\nsteps:\n  - id: a\n    wait: 0s\n  - id: b\n    needs: [a]\n    wait: 0s\n  - id: c\n    needs: [b]\n    wait: 0s\n";
    let executions = 30;
    let (statuses, ended) = with_engine(store.clone(), quiet(), async |handle| {
        let mut submits = tokio::task::JoinSet::new();
        for _ in 0..executions {
            let handle = handle.clone();
            submits.spawn(async move { handle.submit(submission(yaml)).await.expect("created") });
        }
        let ids = submits.join_all().await;
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(handle.wait(id).await.expect("finished").status);
        }
        statuses
    })
    .await;
    ended.expect("the engine ends cleanly");
    assert!(statuses.iter().all(|status| *status == wayline_journal::Status::Succeeded));
    let batches = store.batches.lock().unwrap().clone();
    let commits: usize = batches.iter().sum();
    // Every execution needs 3 commits after its creation (each wait ends and the next
    // starts); one commit call per execution and round would be 90 calls.
    assert_eq!(commits, executions * 3, "{batches:?}");
    assert!(batches.len() * 3 <= commits, "commits were not grouped: {batches:?}");
    assert!(batches.iter().any(|&size| size > 1), "{batches:?}");
}

#[tokio::test]
async fn a_subscription_resumes_from_a_sequence_number() {
    let store = Watched::default();
    let yaml = "name: sub\nsteps:\n  - id: a\n    set: { x: 1 }\n  - id: b\n    needs: [a]\n    wait: 0s\n";
    let (seqs, ended) = with_engine(store, quiet(), async |handle| {
        let id = handle.submit(submission(yaml)).await.expect("created");
        handle.wait(&id).await.expect("finished");
        // After the end, from the middle of the journal.
        let mut subscription = handle.subscribe(&id, 3);
        let mut seqs = Vec::new();
        while let Some(item) = subscription.next().await.expect("events") {
            if let Item::Event(event) = item {
                seqs.push((event.seq, matches!(event.kind, EventKind::Finished { .. })));
            }
        }
        seqs
    })
    .await;
    ended.expect("the engine ends cleanly");
    assert_eq!(seqs.first().map(|(seq, _)| *seq), Some(4), "{seqs:?}");
    assert!(seqs.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1), "{seqs:?}");
    assert_eq!(
        seqs.last().map(|(_, finished)| *finished),
        Some(true),
        "it ends with the last event"
    );
}

/// Through the executor boundary, a step's log reaches a subscriber while the step runs, in
/// order and complete — the first line before the step is told to go on, then every one of
/// thousands of lines written fast.
#[tokio::test]
async fn log_lines_arrive_live_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let yaml = format!(
        "name: logs\nsteps:\n  - id: talk\n    run: |\n      echo first\n      while [ ! -e {} ]; do sleep 0.01; done\n      i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done\n",
        go.display()
    );
    let (lines, ended) = with_engine(Watched::default(), quiet(), async |handle| {
        let id = handle.submit(submission(&yaml)).await.expect("created");
        let mut subscription = handle.subscribe(&id, 0).with_logs(0);
        let mut lines = Vec::new();
        let mut told = false;
        while let Some(item) = subscription.next().await.expect("items") {
            match item {
                Item::Log(line) => {
                    if line.text == "first" {
                        // The step is still waiting for `go`: this line came live.
                        assert!(!go.exists(), "the first line came only after the step went on");
                        std::fs::write(&go, "").unwrap();
                        told = true;
                    }
                    lines.push(line.text);
                }
                Item::Event(_) => {}
            }
        }
        assert!(told, "the first line never came");
        lines
    })
    .await;
    ended.expect("the engine ends cleanly");
    let expected: Vec<String> =
        std::iter::once("first".to_owned()).chain((0..3000).map(|i| format!("line {i}"))).collect();
    assert_eq!(lines.len(), expected.len(), "lines were lost or doubled");
    assert_eq!(lines, expected);
}
