//! The engine on durable stores (docs/design.md §4), each figure next to the in-memory store
//! measured in the same run. Run with `cargo bench -p wayline --bench durable`
//! (PostgreSQL figures when `WAYLINE_TEST_POSTGRES_URL` is set).
//!
//! - a 1000-step chain of `set` steps (SQLite target ≤ 250 ms)
//! - 100 concurrent executions of 10 steps each, steps that go through the executor path
//!   (`wait: 0s`: a start commit, a timer, a completion commit) — SQLite target ≥ 20,000 steps/s
//! - submit-to-first-step latency, p50 and p99 (targets: SQLite p50 ≤ 1 ms, PostgreSQL ≤ 5 ms)

#![allow(clippy::disallowed_methods)] // a benchmark drives its own runtime

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wayline_journal::EventKind;
use wayline_runtime::{Engine, EngineHandle, Item, Options, Workload};
use wayline_store::{MemoryStore, Store};
use wayline_store_postgres::PostgresStore;
use wayline_store_sqlite::SqliteStore;

async fn with_engine<S: Store, T>(store: S, work: impl AsyncFnOnce(EngineHandle<S>) -> T) -> T {
    let shutdown = CancellationToken::new();
    let options = Options { requests: wayline_runtime::Requests::Off, ..Options::default() };
    let (engine, handle) = Engine::new(store, options, shutdown.clone());
    let (_, value) = tokio::join!(engine.run(), async {
        let value = work(handle).await;
        shutdown.cancel();
        value
    });
    value
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

/// The figures of one store.
struct Figures {
    chain: Duration,
    wait_chain: Duration,
    steps_per_second: f64,
    latency_p50: Duration,
    latency_p99: Duration,
}

async fn measure<S: Store>(store: S) -> Figures {
    with_engine(store, async |handle| {
        // 1000-step set chain: median of 7.
        let set_chain = Workload::chain(1000, "set: { x: 1 }").unwrap();
        let mut times = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            let id = handle.submit(set_chain.submission()).await.expect("submitted");
            let report = handle.wait(&id).await.expect("finished");
            assert_eq!(report.status, wayline_journal::Status::Succeeded);
            times.push(started.elapsed());
        }
        let chain_time = median(times);

        // 1000-step chain where every step is a start commit, a timer and a completion commit.
        let wait_chain = Workload::chain(1000, "wait: 0s").unwrap();
        let started = Instant::now();
        let id = handle.submit(wait_chain.submission()).await.expect("submitted");
        assert_eq!(
            handle.wait(&id).await.expect("finished").status,
            wayline_journal::Status::Succeeded
        );
        let wait_chain_time = started.elapsed();

        // 100 concurrent executions × 10 steps through the timer/commit path.
        let ten = Workload::chain(10, "wait: 0s").unwrap();
        let started = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let handle = handle.clone();
            let submission = ten.submission();
            submits.spawn(async move { handle.submit(submission).await.expect("submitted") });
        }
        let ids = submits.join_all().await;
        for id in &ids {
            let report = handle.wait(id).await.expect("finished");
            assert_eq!(report.status, wayline_journal::Status::Succeeded);
        }
        let steps_per_second = 1000.0 / started.elapsed().as_secs_f64();

        // Submit to the first step's start being committed.
        let one =
            Workload::parse("name: one\nsteps:\n  - id: first\n    wait: 0s\n".into()).unwrap();
        let mut latencies = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            let id = handle.submit(one.submission()).await.expect("submitted");
            let mut subscription = handle.subscribe(&id, 0);
            loop {
                match subscription.next().await.expect("events") {
                    Some(Item::Event(event))
                        if matches!(event.kind, EventKind::AttemptStarted { .. }) =>
                    {
                        break;
                    }
                    Some(_) => {}
                    None => panic!("ended without starting a step"),
                }
            }
            latencies.push(started.elapsed());
            handle.wait(&id).await.expect("finished");
        }
        Figures {
            chain: chain_time,
            wait_chain: wait_chain_time,
            steps_per_second,
            latency_p50: percentile(&mut latencies, 0.5),
            latency_p99: percentile(&mut latencies, 0.99),
        }
    })
    .await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print(name: &str, figures: &Figures, baseline: &Figures) {
    println!(
        "{name:<10} set-chain(1000) {:>8.2} ms ({:>5.1}x memory)   wait-chain(1000) {:>8.2} ms ({:>5.1}x memory)   throughput {:>8.0} steps/s ({:>4.2}x memory)   submit→first step p50 {:>6.3} ms  p99 {:>6.3} ms",
        ms(figures.chain),
        figures.chain.as_secs_f64() / baseline.chain.as_secs_f64(),
        ms(figures.wait_chain),
        figures.wait_chain.as_secs_f64() / baseline.wait_chain.as_secs_f64(),
        figures.steps_per_second,
        figures.steps_per_second / baseline.steps_per_second,
        ms(figures.latency_p50),
        ms(figures.latency_p99),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let memory = measure(MemoryStore::new()).await;
        print("memory", &memory, &memory);
        let dir = tempfile::tempdir().expect("a temp dir");
        let sqlite = SqliteStore::open(dir.path().join("bench.db"), Default::default()).await.expect("SQLite opens");
        let figures = measure(sqlite).await;
        print("sqlite", &figures, &memory);
        println!(
            "           targets: chain ≤ 250 ms (set {:.2}x, wait {:.2}x), ≥ 20,000 steps/s ({:.2}x), p50 ≤ 1 ms ({:.2}x)",
            ms(figures.chain) / 250.0,
            ms(figures.wait_chain) / 250.0,
            figures.steps_per_second / 20_000.0,
            ms(figures.latency_p50) / 1.0
        );
        match std::env::var("WAYLINE_TEST_POSTGRES_URL") {
            Ok(url) => {
                let schema = format!("bench_{}", std::process::id());
                let options = wayline_store_postgres::Options { schema: schema.clone(), ..Default::default() };
                let postgres = PostgresStore::connect(&url, options).await.expect("PostgreSQL connects");
                let figures = measure(postgres.clone()).await;
                print("postgres", &figures, &memory);
                println!("           targets: p50 ≤ 5 ms ({:.2}x)", ms(figures.latency_p50) / 5.0);
                let _ = drop_schema(&url, &schema).await;
            }
            Err(_) => println!("postgres   skipped: set WAYLINE_TEST_POSTGRES_URL"),
        }
    });
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}
