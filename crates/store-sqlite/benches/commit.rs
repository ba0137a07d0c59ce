//! Commit throughput of the SQLite store, with the in-memory store measured in the same run
//! as the baseline (docs/design.md §4: the 1000-step chain ≤ 250 ms; ≥ 20,000 steps/s over 100
//! concurrent executions, WAL with synchronous=NORMAL).
//!
//! `cargo bench -p wayline-store-sqlite`. Each figure is the median of a few runs, each on a
//! fresh database file under the target directory (a real disk, not tmpfs).

use std::future::Future;
use std::path::Path;

use wayline_store::MemoryStore;
use wayline_store::bench::{self, Figures};
use wayline_store_sqlite::{Options, SqliteStore, Synchronous};

const RUNS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let normal = Options::default();
    let full = Options { synchronous: Synchronous::Full, ..Options::default() };

    println!("SQLite store, {RUNS} runs each, median; ratio = time / in-memory time");
    let memory = median(|_| async { bench::chain(&MemoryStore::new(), "chain", 1000).await }).await;
    let sqlite =
        median(|n| {
            on_file(dir.path(), n, &normal, |store| async move {
                bench::chain(&store, "chain", 1000).await
            })
        })
        .await;
    let sqlite_full = median(|n| {
        on_file(dir.path(), n + 100, &full, |store| async move {
            bench::chain(&store, "chain", 1000).await
        })
    })
    .await;
    let chain = "1000-step chain, one commit per step";
    println!("{}", bench::report(chain, "memory", memory, memory));
    println!("{}    (target ≤ 250 ms)", bench::report(chain, "sqlite", sqlite, memory));
    println!("{}", bench::report(chain, "sqlite/full", sqlite_full, memory));

    let memory =
        median(|_| async { bench::batched(&MemoryStore::new(), "x", 100, 10).await }).await;
    let sqlite = median(|n| {
        on_file(dir.path(), n + 200, &normal, |store| async move {
            bench::batched(&store, "x", 100, 10).await
        })
    })
    .await;
    let batched = "100 executions × 10 steps, engine batches";
    println!("{}", bench::report(batched, "memory", memory, memory));
    println!("{}    (target ≥ 20,000 steps/s)", bench::report(batched, "sqlite", sqlite, memory));

    let memory =
        median(|_| async { bench::concurrent(&MemoryStore::new(), "x", 100, 10).await }).await;
    let sqlite = median(|n| {
        on_file(dir.path(), n + 300, &normal, |store| async move {
            bench::concurrent(&store, "x", 100, 10).await
        })
    })
    .await;
    let concurrent = "100 executions × 10 steps, each commits alone";
    println!("{}", bench::report(concurrent, "memory", memory, memory));
    println!(
        "{}    (target ≥ 20,000 steps/s)",
        bench::report(concurrent, "sqlite", sqlite, memory)
    );
}

/// Runs `work` on a fresh database file.
async fn on_file<W, F>(dir: &Path, n: usize, options: &Options, work: W) -> Figures
where
    W: FnOnce(SqliteStore) -> F,
    F: Future<Output = Figures>,
{
    let store =
        SqliteStore::open(dir.join(format!("bench-{n}.db")), options.clone()).await.expect("open");
    work(store).await
}

/// The run with the median time out of [`RUNS`].
async fn median<W, F>(mut work: W) -> Figures
where
    W: FnMut(usize) -> F,
    F: Future<Output = Figures>,
{
    let mut runs = Vec::new();
    for n in 0..RUNS {
        runs.push(work(n).await);
    }
    runs.sort_by_key(|figures| figures.elapsed);
    runs[RUNS / 2]
}
