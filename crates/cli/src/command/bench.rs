//! `wayline bench`: what wayline itself costs, measured the way `wayline run` runs, as ratios
//! to baselines taken in the same run (the machine may be shared and noisy; single timings mean
//! little).
//!
//! - **chain**: N chained `run: "true"` steps, against a shell loop of N spawns of the same
//!   `/bin/sh -c true` (the baseline), on memory, SQLite and, with `--postgres`, PostgreSQL;
//! - **parallel**: N independent `run: "true"` steps with `max_parallel`, in steps per second,
//!   against `max_parallel` shell loops sharing out the same N spawns;
//! - **set**: N chained `set` steps (the engine and the store without processes);
//! - **items**: one step fanned out over as many `run: "true"` items as the parallel run has
//!   steps, with the same `max_parallel`, against that parallel run (an item should cost what
//!   a step costs);
//! - **set items**: one `set` step fanned out over `--items` items (10,000, the limit, by
//!   default): the engine and the store at the largest fan-out, without processes;
//! - **waiting**: the CPU an execution parked on a `wait` costs while nothing happens.
//!
//! Rounds alternate the baseline and wayline's runs; each ratio is the median of the rounds'
//! ratios, each of two figures measured back to back. Every timed execution follows an untimed
//! one on the same engine and store.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wayline_backend::Location;
use wayline_runtime::{Engine, Workload};
use wayline_store::Store;

use super::block_on;
use crate::error::{Error, Exit, Result};
use crate::follow;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Steps in the chains.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Steps of the parallel run, and items of the fan-out run.
    #[arg(long, default_value_t = 1000)]
    parallel: usize,
    /// `max_parallel` of the parallel run.
    #[arg(long, default_value_t = 16)]
    max_parallel: u32,
    /// Items of the `set` fan-out.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Rounds of each measurement (medians are reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long to watch a waiting execution, in seconds (0 to skip).
    #[arg(long, default_value_t = 10)]
    waiting: u64,
    /// Also measure on this PostgreSQL database, in a schema of its own (`wayline_bench`),
    /// emptied afterwards.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn exec(args: Args) -> Result<Exit> {
    if args.steps == 0 || args.parallel == 0 || args.rounds == 0 {
        return Err(Error::invalid("--steps, --parallel and --rounds must be at least 1"));
    }
    if args.items == 0 || args.items > wayline_lang::fan_out::MAX_ITEMS {
        return Err(Error::invalid(format!(
            "--items must be from 1 to {}, the most items of a fan-out",
            wayline_lang::fan_out::MAX_ITEMS
        )));
    }
    let scratch = tempfile::tempdir()?;
    let mut stores: Vec<(&str, Place)> = vec![("memory", Place::Memory), ("sqlite", Place::Sqlite)];
    if let Some(url) = &args.postgres {
        let place = Place::Postgres(url.clone());
        place.location(scratch.path(), "")?; // a wrong URL is refused before measuring
        stores.push(("postgres", place));
    }
    let commands = Workload::chain(args.steps, "run: \"true\"")?;
    let sets = Workload::chain(args.steps, "set: { x: 1 }")?;
    let spread = Workload::parallel(args.parallel, args.max_parallel, "run: \"true\"")?;
    let fanned = Workload::items(args.parallel, Some(args.max_parallel), "run: \"true\"")?;
    let set_items = Workload::items(args.items, None, "set: { x: \"${{ item }}\" }")?;

    let mut baseline = Vec::new();
    let mut parallel_baseline = Vec::new();
    let mut chains: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    let mut set_chains: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    let mut parallels: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    let mut fan_outs: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    let mut set_fan_outs: Vec<Vec<Duration>> = vec![Vec::new(); stores.len()];
    for round in 0..args.rounds {
        baseline.push(shell_loop(args.steps)?);
        // Each kind of run on every store back to back, so that a round's ratios compare runs
        // made under the same load.
        for (index, (_, place)) in stores.iter().enumerate() {
            let location = place.location(scratch.path(), &format!("chain-{round}"))?;
            chains[index].push(run_once(&location, &commands)?);
        }
        for (index, (_, place)) in stores.iter().enumerate() {
            let location = place.location(scratch.path(), &format!("set-{round}"))?;
            set_chains[index].push(run_once(&location, &sets)?);
            let location = place.location(scratch.path(), &format!("set-items-{round}"))?;
            set_fan_outs[index].push(run_once(&location, &set_items)?);
        }
        parallel_baseline.push(parallel_shell_loops(args.parallel, args.max_parallel as usize)?);
        for (index, (_, place)) in stores.iter().enumerate() {
            let location = place.location(scratch.path(), &format!("parallel-{round}"))?;
            parallels[index].push(run_once(&location, &spread)?);
            let location = place.location(scratch.path(), &format!("items-{round}"))?;
            fan_outs[index].push(run_once(&location, &fanned)?);
        }
    }
    let waiting = if args.waiting > 0 {
        let location = Place::Sqlite.location(scratch.path(), "waiting")?;
        Some(waiting_cost(&location, Duration::from_secs(args.waiting))?)
    } else {
        None
    };
    for (_, place) in &stores {
        place.clean_up(scratch.path())?;
    }

    let base = median(&baseline);
    let per_step = |d: Duration| d.as_secs_f64() * 1e6 / args.steps as f64;
    let mut figures = serde_json::Map::new();
    figures.insert("load_average".into(), json!(load_average()));
    figures.insert("steps".into(), json!(args.steps));
    figures.insert("rounds".into(), json!(args.rounds));
    figures.insert("shell_loop_ms".into(), json!(millis(base)));
    let memory_chains = chains[0].clone();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "wayline bench: {} steps, {} rounds, load average {}",
        args.steps,
        args.rounds,
        load_average()
    );
    let _ = writeln!(
        text,
        "  shell loop of {} spawns             {:>9.1} ms  ({:.0} µs per spawn)",
        args.steps,
        millis(base),
        per_step(base)
    );
    let parallel_base = median(&parallel_baseline);
    let parallel_base_rate = args.parallel as f64 / parallel_base.as_secs_f64();
    figures.insert("parallel_shell_loops_steps_per_second".into(), json!(parallel_base_rate));
    let _ = writeln!(
        text,
        "  {} shell loops, {} spawns in all      {:>7.0} spawns/s",
        args.max_parallel, args.parallel, parallel_base_rate
    );
    for (index, (name, _)) in stores.iter().enumerate() {
        let chain = median(&chains[index]);
        let set = median(&set_chains[index]);
        let parallel = median(&parallels[index]);
        let rate = args.parallel as f64 / parallel.as_secs_f64();
        let _ = writeln!(
            text,
            "  {name:<8} chain of run: true            {:>9.1} ms  {} the shell loop{}",
            millis(chain),
            Ratios::of(&chains[index], &baseline),
            if index > 0 {
                format!(", {} memory", Ratios::of(&chains[index], &memory_chains))
            } else {
                String::new()
            },
        );
        let _ = writeln!(
            text,
            "  {name:<8} {} parallel run: true (max {})  {:>7.0} steps/s, {} the shell loops' time",
            args.parallel,
            args.max_parallel,
            rate,
            Ratios::of(&parallels[index], &parallel_baseline)
        );
        let fan_out = median(&fan_outs[index]);
        let _ = writeln!(
            text,
            "  {name:<8} {} items of run: true (max {})  {:>7.0} items/s, {} the parallel steps' time",
            args.parallel,
            args.max_parallel,
            args.parallel as f64 / fan_out.as_secs_f64(),
            Ratios::of(&fan_outs[index], &parallels[index])
        );
        let _ = writeln!(
            text,
            "  {name:<8} chain of set                  {:>9.1} ms  ({:.0} µs per step)",
            millis(set),
            per_step(set)
        );
        let set_fan_out = median(&set_fan_outs[index]);
        let _ = writeln!(
            text,
            "  {name:<8} {} set items                {:>9.1} ms  ({:.1} µs per item)",
            args.items,
            millis(set_fan_out),
            set_fan_out.as_secs_f64() * 1e6 / args.items as f64
        );
        figures.insert(
            (*name).into(),
            json!({
                "chain_ms": millis(chain),
                "chain_vs_shell_loop": Ratios::of(&chains[index], &baseline).json(),
                "chain_vs_memory": Ratios::of(&chains[index], &memory_chains).json(),
                "parallel_steps_per_second": rate,
                "parallel_vs_shell_loops": Ratios::of(&parallels[index], &parallel_baseline).json(),
                "items_per_second": args.parallel as f64 / fan_out.as_secs_f64(),
                "items_vs_parallel_steps": Ratios::of(&fan_outs[index], &parallels[index]).json(),
                "set_chain_ms": millis(set),
                "set_items_ms": millis(set_fan_out),
            }),
        );
    }
    if let Some(share) = waiting {
        let _ = writeln!(
            text,
            "  sqlite   waiting on a `wait` step          {:>7.3} % of a core",
            share * 100.0
        );
        figures.insert("waiting_core_percent".into(), json!(share * 100.0));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&figures)?)?;
    } else {
        out!("{text}")?;
    }
    Ok(Exit::Success)
}

/// Where a measurement runs.
enum Place {
    Memory,
    Sqlite,
    Postgres(String),
}

/// The schema the PostgreSQL measurements use, dropped afterwards.
const BENCH_SCHEMA: &str = "wayline_bench";

impl Place {
    fn location(&self, scratch: &std::path::Path, name: &str) -> Result<Location> {
        Ok(match self {
            Place::Memory => Location::Ephemeral,
            Place::Sqlite => {
                Location::parse(Some(&scratch.join(format!("{name}.db")).display().to_string()))?
            }
            Place::Postgres(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(Error::invalid(format!(
                        "--postgres takes a postgres:// URL, not {url}"
                    )));
                }
                let separator = if url.contains('?') { '&' } else { '?' };
                Location::parse(Some(&format!("{url}{separator}schema={BENCH_SCHEMA}")))?
            }
        })
    }

    /// Deletes what the measurements left in a database that outlives them.
    fn clean_up(&self, scratch: &std::path::Path) -> Result<()> {
        let Place::Postgres(_) = self else { return Ok(()) };
        let location = self.location(scratch, "")?;
        block_on(async {
            let store = wayline_backend::open(&location).await?;
            let now = wayline_runtime::clock::Clock::system().now();
            store.gc(now.after(Duration::from_secs(1))).await?;
            Ok(())
        })
    }
}

/// The baseline: a shell spawning `sh -c true` `count` times in a row, as many processes as a
/// chain of `run: "true"` steps starts.
fn shell_loop(count: usize) -> Result<Duration> {
    let script = format!("i=0; while [ $i -lt {count} ]; do /bin/sh -c true; i=$((i+1)); done");
    let start = Instant::now();
    // The baseline starts the same processes a run would; it is not a step.
    #[allow(clippy::disallowed_methods)]
    let status = std::process::Command::new("/bin/sh").arg("-c").arg(script).status()?;
    if !status.success() {
        return Err(Error::infrastructure("the baseline shell loop failed"));
    }
    Ok(start.elapsed())
}

/// The parallel baseline: `lanes` shell loops at once, `count` spawns of `sh -c true` in all,
/// as many processes as the parallel run starts with at most `lanes` at a time.
fn parallel_shell_loops(count: usize, lanes: usize) -> Result<Duration> {
    let lanes = lanes.clamp(1, count);
    let start = Instant::now();
    let children = (0..lanes)
        .map(|lane| {
            // Lanes share the spawns out: the first `count % lanes` lanes take one more.
            let share = count / lanes + usize::from(lane < count % lanes);
            let script =
                format!("i=0; while [ $i -lt {share} ]; do /bin/sh -c true; i=$((i+1)); done");
            #[allow(clippy::disallowed_methods)]
            std::process::Command::new("/bin/sh").arg("-c").arg(script).spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for mut child in children {
        if !child.wait()?.success() {
            return Err(Error::infrastructure("a baseline shell loop failed"));
        }
    }
    Ok(start.elapsed())
}

/// Runs one execution of `definition` at `location` the way `wayline run` does and returns
/// the time from submission to its end.
fn run_once(location: &Location, definition: &Workload) -> Result<Duration> {
    block_on(async {
        let store = wayline_backend::open(location).await?;
        let options = follow::engine_options(&store);
        let closed = store.closed();
        let shutdown = CancellationToken::new();
        let (engine, handle) = Engine::new(store, options, shutdown.clone());
        let run = async {
            // A first execution warms the store up (a new database's first pages, prepared
            // statements) and is not timed.
            let warm_up = async {
                let id = handle.submit(definition.submission()).await?;
                handle.wait(&id).await
            };
            if let Err(error) = warm_up.await {
                shutdown.cancel();
                return Err(error.into());
            }
            let start = Instant::now();
            let outcome = async {
                let id = handle.submit(definition.submission()).await?;
                let report = handle.wait(&id).await?;
                if report.status != wayline_journal::Status::Succeeded {
                    return Err(Error::infrastructure(format!(
                        "a benchmark execution ended {}",
                        report.status
                    )));
                }
                Ok(start.elapsed())
            }
            .await;
            shutdown.cancel();
            outcome
        };
        let (engine, elapsed) = tokio::join!(engine.run(), run);
        engine?;
        drop(handle);
        let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
        elapsed
    })
}

/// The share of a core this process uses while one execution waits on a long `wait`.
fn waiting_cost(location: &Location, watch: Duration) -> Result<f64> {
    let definition =
        Workload::parse("name: bench-waiting\nsteps:\n  - id: w\n    wait: 1h\n".into())?;
    block_on(async {
        let store = wayline_backend::open(location).await?;
        let options = follow::engine_options(&store);
        let shutdown = CancellationToken::new();
        let (engine, handle) = Engine::new(store, options, shutdown.clone());
        let measure = async {
            let outcome = async {
                handle.submit(definition.submission()).await?;
                // Let the start settle before watching.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (cpu, wall) = (cpu_time()?, Instant::now());
                tokio::time::sleep(watch).await;
                Ok((cpu_time()? - cpu) / wall.elapsed().as_secs_f64())
            }
            .await;
            shutdown.cancel();
            outcome
        };
        let (engine, share) = tokio::join!(engine.run(), measure);
        engine?;
        share
    })
}

fn cpu_time() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let ticks = |index: usize| fields.get(index).and_then(|t| t.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) / 100.0),
        _ => Err(Error::infrastructure("cannot read this process's CPU time")),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(value: Duration, base: Duration) -> f64 {
    value.as_secs_f64() / base.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The rounds' ratios of one figure to another: each round measured the two back to back, so
/// the machine's load changes between rounds mostly cancel out. Shown as the median with the
/// middle half of the rounds, which says how far the figure can be trusted.
struct Ratios(Vec<f64>);

impl Ratios {
    fn of(values: &[Duration], bases: &[Duration]) -> Ratios {
        let mut ratios: Vec<f64> =
            values.iter().zip(bases).map(|(value, base)| ratio(*value, *base)).collect();
        ratios.sort_by(f64::total_cmp);
        Ratios(ratios)
    }

    fn at(&self, fraction: f64) -> f64 {
        let last = self.0.len().saturating_sub(1);
        self.0.get((last as f64 * fraction).round() as usize).copied().unwrap_or(f64::NAN)
    }

    fn json(&self) -> serde_json::Value {
        json!({ "median": self.at(0.5), "quartiles": [self.at(0.25), self.at(0.75)] })
    }
}

impl std::fmt::Display for Ratios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}x (middle half {:.2}–{:.2})", self.at(0.5), self.at(0.25), self.at(0.75))
    }
}
