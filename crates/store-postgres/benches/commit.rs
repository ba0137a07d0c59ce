//! Commit throughput of the PostgreSQL store, with the in-memory store measured in the same
//! run as the baseline (docs/design.md §4: ≥ 5,000 steps/s with several engines on loopback).
//!
//! `WAYLINE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! wayline-store-postgres`. Without the variable it says so and measures nothing. Each run
//! works in a fresh schema, dropped afterwards.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};

use wayline_store::MemoryStore;
use wayline_store::bench::{self, Figures};
use wayline_store_postgres::{Options, PostgresStore};

const RUNS: usize = 3;

fn main() {
    let Ok(url) = std::env::var("WAYLINE_TEST_POSTGRES_URL") else {
        eprintln!(
            "WAYLINE_TEST_POSTGRES_URL is not set: nothing measured (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(&url));
}

async fn run(url: &str) {
    println!("PostgreSQL store at {url}, {RUNS} runs each, median; ratio = time / in-memory time");

    let memory = median(|| async { bench::chain(&MemoryStore::new(), "chain", 1000).await }).await;
    let postgres =
        median(|| in_schema(url, |store| async move { bench::chain(&store, "chain", 1000).await }))
            .await;
    let chain = "1000-step chain, one commit per step";
    println!("{}", bench::report(chain, "memory", memory, memory));
    println!("{}", bench::report(chain, "postgres", postgres, memory));

    let memory = median(|| async { bench::batched(&MemoryStore::new(), "x", 100, 10).await }).await;
    let postgres = median(|| {
        in_schema(url, |store| async move { bench::batched(&store, "x", 100, 10).await })
    })
    .await;
    let batched = "100 executions × 10 steps, engine batches";
    println!("{}", bench::report(batched, "memory", memory, memory));
    println!("{}", bench::report(batched, "postgres", postgres, memory));

    let memory =
        median(|| async { bench::concurrent(&MemoryStore::new(), "x", 100, 10).await }).await;
    let postgres = median(|| {
        in_schema(url, |store| async move { bench::concurrent(&store, "x", 100, 10).await })
    })
    .await;
    let concurrent = "100 executions × 10 steps, each commits alone";
    println!("{}", bench::report(concurrent, "memory", memory, memory));
    println!("{}", bench::report(concurrent, "postgres", postgres, memory));

    // Several engines (each with its own pool) sharing the database, each batching its own
    // 100 executions.
    let memory = median(|| async {
        engines(&MemoryStore::new(), &MemoryStore::new(), &MemoryStore::new(), &MemoryStore::new())
            .await
    })
    .await;
    let postgres = median(|| {
        in_schema(url, |store| async move {
            let options = Options { schema: store.schema().to_owned(), ..Options::default() };
            let url = std::env::var("WAYLINE_TEST_POSTGRES_URL").expect("set");
            let (b, c, d) = (
                PostgresStore::connect(&url, options.clone()).await.expect("connect"),
                PostgresStore::connect(&url, options.clone()).await.expect("connect"),
                PostgresStore::connect(&url, options).await.expect("connect"),
            );
            engines(&store, &b, &c, &d).await
        })
    })
    .await;
    let several = "4 engines × 100 executions × 10 steps, batched";
    println!("{}", bench::report(several, "memory", memory, memory));
    println!(
        "{}    (target ≥ 5,000 steps/s)",
        bench::report(several, "postgres", postgres, memory)
    );
}

/// Four engines committing at once; the figures of the whole.
async fn engines<S: wayline_store::Store>(a: &S, b: &S, c: &S, d: &S) -> Figures {
    let (a, b, c, d) = tokio::join!(
        bench::batched(a, "a", 100, 10),
        bench::batched(b, "b", 100, 10),
        bench::batched(c, "c", 100, 10),
        bench::batched(d, "d", 100, 10),
    );
    // Creating the executions is not part of the figures; the slowest engine's commits are.
    let slowest = [a, b, c, d].into_iter().map(|figures| figures.elapsed).max().unwrap_or_default();
    Figures { steps: a.steps * 4, commits: a.commits * 4, elapsed: slowest }
}

/// Runs `work` on a store in a fresh schema, dropped afterwards.
async fn in_schema<W, F>(url: &str, work: W) -> Figures
where
    W: FnOnce(PostgresStore) -> F,
    F: Future<Output = Figures>,
{
    let schema = format!("wayline_bench_{:016x}", RandomState::new().hash_one(std::process::id()));
    let store =
        PostgresStore::connect(url, Options { schema: schema.clone(), ..Options::default() })
            .await
            .expect("connect");
    let figures = work(store).await;
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    let statement = format!("DROP SCHEMA \"{schema}\" CASCADE");
    let drop_schema = client.batch_execute(&statement);
    tokio::select! {
        dropped = drop_schema => dropped.expect("drop the bench schema"),
        _ = connection => panic!("the connection closed before the bench schema was dropped"),
    }
    figures
}

/// The run with the median time out of [`RUNS`].
async fn median<W, F>(mut work: W) -> Figures
where
    W: FnMut() -> F,
    F: Future<Output = Figures>,
{
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        runs.push(work().await);
    }
    runs.sort_by_key(|figures| figures.elapsed);
    runs[RUNS / 2]
}
