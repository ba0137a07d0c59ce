//! Engine benchmarks with the in-memory store (docs/design.md §4), printed as figures and as
//! ratios to their targets. Run with `cargo bench -p wayline-runtime --bench engine`.
//!
//! - a 1000-step chain of `set` steps (target ≤ 10 ms)
//! - a 10,000-step fan-out/fan-in of `set` steps (target ≤ 100 ms)
//! - a 1000-step chain of `run: "true"` steps, against spawning `true` 1000 times in a row
//!   as the baseline measured in the same run (target: ≤ 200 µs of overhead per step)
//! - 100,000 executions parked on a `wait` step (target ≤ 1 GiB RSS)

#![allow(clippy::disallowed_methods)] // a benchmark spawns its baseline processes

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wayline_runtime::{Engine, EngineHandle, Options, Workload};
use wayline_store::MemoryStore;

/// Runs `work` against a fresh engine on an in-memory store.
fn with_engine<T>(work: impl AsyncFnOnce(EngineHandle<MemoryStore>) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let options = Options { requests: wayline_runtime::Requests::Off, ..Options::default() };
        let (engine, handle) = Engine::new(MemoryStore::new(), options, shutdown.clone());
        let (_, value) = tokio::join!(engine.run(), async {
            let value = work(handle).await;
            shutdown.cancel();
            value
        });
        value
    })
}

/// Median time from submit to the final report, over `rounds` executions.
fn time_executions(workload: &Workload, rounds: usize) -> Duration {
    with_engine(async |handle| {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = Instant::now();
            let id = handle.submit(workload.submission()).await.expect("submitted");
            let report = handle.wait(&id).await.expect("finished");
            times.push(started.elapsed());
            assert_eq!(report.status, wayline_journal::Status::Succeeded);
        }
        times.sort();
        times[times.len() / 2]
    })
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn report(name: &str, value: Duration, target: Duration) {
    println!(
        "{name:<44} {:>10.3} ms   target {:>8.3} ms   {:.2}x of target",
        value.as_secs_f64() * 1000.0,
        target.as_secs_f64() * 1000.0,
        value.as_secs_f64() / target.as_secs_f64()
    );
}

fn main() {
    let only = std::env::args().nth(1).filter(|arg| !arg.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|only| name.contains(only));

    if wanted("set-chain") {
        let median =
            time_executions(&Workload::chain(1000, "set: { x: \"${{ 1 + 1 }}\" }").unwrap(), 11);
        report("set-chain: 1000 set steps, submit to end", median, Duration::from_millis(10));
    }
    if wanted("fan") {
        // 1 root + 9,998 parallel steps + 1 sink: the 10,000-step limit exactly.
        let median = time_executions(&Workload::fan(9_998).unwrap(), 5);
        report("fan: 10,000-step fan-out/fan-in", median, Duration::from_millis(100));
        // The same work as one step over 10,000 items (the item limit), against the steps
        // measured just before: items should cost no more than steps.
        let items = time_executions(
            &Workload::items(10_000, None, "set: { x: \"${{ item }}\" }").unwrap(),
            5,
        );
        report("fan: one step over 10,000 items, then a sink", items, Duration::from_millis(100));
        println!(
            "fan: 10,000 items / 10,000 steps                 ratio {:.2}",
            items.as_secs_f64() / median.as_secs_f64()
        );
    }
    if wanted("run-chain") {
        // The machine is shared and noisy: alternate the baseline and wayline in rounds and
        // compare each round with its own baseline.
        let steps = 200;
        let rounds = 7;
        let chain_flow = Workload::chain(steps, "run: \"true\"").unwrap();
        let mut baseline_ms = Vec::new();
        let mut wayline_ms = Vec::new();
        let mut overhead_us = Vec::new();
        for _ in 0..rounds {
            // The same kind of runtime the engine runs on.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..steps {
                    let status = tokio::process::Command::new("sh")
                        .args(["-c", "true"])
                        .status()
                        .await
                        .expect("sh runs");
                    assert!(status.success());
                }
            });
            let baseline = started.elapsed();
            let wayline = time_executions(&chain_flow, 1);
            baseline_ms.push(baseline.as_secs_f64() * 1000.0);
            wayline_ms.push(wayline.as_secs_f64() * 1000.0);
            overhead_us.push((wayline.as_secs_f64() - baseline.as_secs_f64()) * 1e6 / steps as f64);
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let (baseline, wayline, overhead) =
            (median(&mut baseline_ms), median(&mut wayline_ms), median(&mut overhead_us));
        println!(
            "run-chain: {steps} `run: true` steps × {rounds} rounds   wayline {wayline:.1} ms   spawn-only baseline {baseline:.1} ms   ratio {:.2}",
            wayline / baseline
        );
        println!(
            "run-chain: wayline overhead per step (median of per-round differences)   {overhead:.0} µs   target 200 µs   {:.2}x of target",
            overhead / 200.0
        );
    }
    if wanted("parked") {
        let count = 100_000;
        let flow =
            Workload::parse("name: parked\nsteps:\n  - id: wait\n    wait: 1h\n".into()).unwrap();
        let before = rss_bytes();
        let (elapsed, after) = with_engine(async |handle| {
            let started = Instant::now();
            let mut last = String::new();
            for _ in 0..count {
                last = handle.submit(flow.submission()).await.expect("submitted");
            }
            // The last one is parked once its wait started: wait for that event.
            let mut subscription = handle.subscribe(&last, 0);
            loop {
                match subscription.next().await.expect("events") {
                    Some(wayline_runtime::Item::Event(event))
                        if matches!(
                            event.kind,
                            wayline_journal::EventKind::AttemptStarted { .. }
                        ) =>
                    {
                        break;
                    }
                    Some(_) => {}
                    None => panic!("the parked execution ended"),
                }
            }
            let report = handle.report(&last).await.expect("a report");
            assert_eq!(report.status, wayline_journal::Status::Running);
            (started.elapsed(), rss_bytes())
        });
        let grown = after.saturating_sub(before);
        println!(
            "parked: 100,000 executions on a wait step       RSS {:.0} MiB (+{:.0} MiB, {:.1} KiB each)   target 1024 MiB   {:.2}x of target   submitted in {:.1}s",
            after as f64 / 1048576.0,
            grown as f64 / 1048576.0,
            grown as f64 / count as f64 / 1024.0,
            after as f64 / (1024.0 * 1048576.0),
            elapsed.as_secs_f64()
        );
    }
}
