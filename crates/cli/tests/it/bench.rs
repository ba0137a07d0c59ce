//! `wayline bench` runs its measurements for real and reports them; the figures themselves are
//! for people to read (a timed test would fail on a busy machine), so only their shape and
//! sanity are checked here.

use serde_json::Value;

use super::wayline;

/// A figure that must be a positive, finite number.
fn positive(figures: &Value, path: &str) -> f64 {
    let value = figures.pointer(path).and_then(Value::as_f64);
    match value {
        Some(value) if value.is_finite() && value > 0.0 => value,
        _ => panic!("{path} is {value:?} in {figures:#}"),
    }
}

#[test]
fn bench_measures_memory_and_sqlite_and_reports_json() {
    let run = wayline(&[
        "bench",
        "--steps",
        "5",
        "--parallel",
        "6",
        "--max-parallel",
        "3",
        "--items",
        "50",
        "--rounds",
        "2",
        "--waiting",
        "1",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let figures: Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    assert_eq!(figures["steps"], 5);
    assert_eq!(figures["rounds"], 2);
    positive(&figures, "/shell_loop_ms");
    positive(&figures, "/parallel_shell_loops_steps_per_second");
    for store in ["memory", "sqlite"] {
        positive(&figures, &format!("/{store}/chain_ms"));
        positive(&figures, &format!("/{store}/set_chain_ms"));
        positive(&figures, &format!("/{store}/parallel_steps_per_second"));
        positive(&figures, &format!("/{store}/parallel_vs_shell_loops/median"));
        positive(&figures, &format!("/{store}/items_per_second"));
        positive(&figures, &format!("/{store}/set_items_ms"));
        positive(&figures, &format!("/{store}/items_vs_parallel_steps/median"));
        let median = positive(&figures, &format!("/{store}/chain_vs_shell_loop/median"));
        let low = positive(&figures, &format!("/{store}/chain_vs_shell_loop/quartiles/0"));
        let high = positive(&figures, &format!("/{store}/chain_vs_shell_loop/quartiles/1"));
        assert!(low <= median && median <= high, "{figures:#}");
    }
    // Memory against itself is exactly 1.
    assert_eq!(figures["memory"]["chain_vs_memory"]["median"], 1.0);
    assert!(figures["waiting_core_percent"].as_f64().is_some_and(|share| share >= 0.0));
    assert!(figures.get("postgres").is_none());
}

#[test]
fn bench_refuses_empty_measurements() {
    let run = wayline(&["bench", "--steps", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--steps, --parallel and --rounds must be at least 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn bench_refuses_more_items_than_a_fan_out_may_have() {
    let run = wayline(&["bench", "--items", "10001"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--items must be from 1 to 10000, the most items of a fan-out"),
        "{}",
        run.stderr
    );
}
