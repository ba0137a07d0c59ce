//! `wayline plan`: levels, groups and retry schedules, as text and as JSON; `-i` values are
//! converted to the declared input types, and bad ones exit 2.

use expect_test::expect;
use serde_json::{Value, json};

use crate::wayline;

fn plan_json(args: &[&str]) -> Value {
    let run = wayline(&[&["plan", "--json"], args].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("stdout is one JSON object")
}

#[test]
fn retry_schedules_follow_the_formulas() {
    let run = wayline(&["plan", "examples/retries.yaml"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    // The issue's example: exponential, 1s, factor 2, max_delay 5s, 5 attempts.
    let exponential = run.stdout.split("  exponential  [run]\n").nth(1).unwrap();
    let delays = exponential.lines().nth(1).unwrap();
    assert_eq!(delays, "      delays     1s, 2s, 4s, 5s");
    expect![[r#"
        retries: 10 steps in 1 level, on_failure fail_fast

        Levels (the steps of a level may run in parallel)
            0  exponential, fixed, linear, random, full_jitter, equal_jitter, budget, timeouts_only, inherited, partial

        Steps
          exponential  [run]
              retry      5 attempts, exponential from 1s x2, max 5s
              delays     1s, 2s, 4s, 5s
          fixed  [run]
              retry      3 attempts, fixed from 200ms
              delays     200ms, 200ms
          linear  [run]
              retry      4 attempts, linear from 100ms
              delays     100ms, 200ms, 300ms
          random  [run]
              retry      3 attempts, random from 100ms, max 1s
              delays     100ms..1s, 100ms..1s
          full_jitter  [run]
              retry      4 attempts, exponential from 100ms x2, jitter full
              delays     0s..100ms, 0s..200ms, 0s..400ms
          equal_jitter  [run]
              retry      4 attempts, exponential from 100ms x2, jitter equal
              delays     50ms..100ms, 100ms..200ms, 200ms..400ms
          budget  [run]
              retry      10 attempts, fixed from 100ms, budget 1s
              delays     100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms, 100ms
          timeouts_only  [run]
              timeout    500ms
              retry      3 attempts, fixed from 100ms, on timeout/lost
              delays     100ms, 100ms
          inherited  [run]
              retry      2 attempts, fixed from 100ms
              delays     100ms
          partial  [run]
              retry      4 attempts, fixed from 100ms, on failure
              delays     100ms, 100ms, 100ms
    "#]]
    .assert_eq(&run.stdout);
}

#[test]
fn levels_groups_and_branches_as_text() {
    let run = wayline(&["plan", "examples/release.yaml", "-i", "version=1.0"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let head: String = run.stdout.split("\nSteps\n").next().unwrap().to_owned();
    expect![[r#"
        release: 10 steps in 7 levels, on_failure fail_fast, max_parallel 8, timeout 30m

        Inputs
          version = "1.0"
          replicas = 3
          workdir = "/tmp/wayline-release"
          chat_url = "https://chat.example/hooks/releases"
          hooks_url = "https://hooks.example/ops"

        Levels (the steps of a level may run in parallel)
            0  build
            1  test, meta
            2  coverage_ok
            3  deploy_eu, deploy_us, report
            4  settle
            5  announce
            6  cleanup

        Groups
          deploys  (max_parallel 2)  deploy_eu, deploy_us
    "#]]
    .assert_eq(&head);
}

#[test]
fn json_plan_has_a_stable_shape() {
    let plan = plan_json(&["examples/release.yaml", "-i", "version=1.0"]);
    let keys = |value: &Value| -> Vec<String> {
        value.as_object().expect("an object").keys().cloned().collect()
    };
    assert_eq!(
        keys(&plan),
        [
            "workflow",
            "max_parallel",
            "timeout",
            "on_failure",
            "levels",
            "groups",
            "steps",
            "inputs"
        ]
    );
    assert_eq!(plan["workflow"], "release");
    assert_eq!(plan["levels"][0], json!(["build"]));
    assert_eq!(
        plan["groups"],
        json!([{ "name": "deploys", "max_parallel": 2, "steps": ["deploy_eu", "deploy_us"] }])
    );
    assert_eq!(
        plan["inputs"],
        json!({
            "version": "1.0",
            "replicas": 3,
            "workdir": "/tmp/wayline-release",
            "chat_url": "https://chat.example/hooks/releases",
            "hooks_url": "https://hooks.example/ops",
        })
    );
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10);
    for step in steps {
        for key in ["id", "kind", "level", "needs", "on_failure", "retry", "compensate"] {
            assert!(step.get(key).is_some(), "step {} has no `{key}`", step["id"]);
        }
        // `set`, `condition` and `wait` steps are never retried: their `retry` is null.
        if !matches!(step["kind"].as_str(), Some("run" | "http")) {
            assert!(step["retry"].is_null(), "{step}");
            continue;
        }
        for key in ["max_attempts", "backoff", "delay", "jitter", "on", "schedule"] {
            assert!(step["retry"].get(key).is_some(), "retry of {} has no `{key}`", step["id"]);
        }
    }
    let condition = &steps[2];
    assert_eq!(condition["kind"], "condition");
    assert_eq!(
        condition["branches"],
        json!({ "then": ["deploy_eu", "deploy_us"], "else": ["report"] })
    );
    assert_eq!(steps[3]["runs_when"], json!(["coverage_ok:then"]));
    assert_eq!(steps[3]["agent_labels"], json!(["eu", "prod"]));
    assert_eq!(steps[9]["if"], "always()");
    // test: 4 attempts, exponential from 500ms, max 10s, full jitter: ranges from zero.
    assert_eq!(
        steps[1]["retry"]["schedule"],
        json!([
            { "before_attempt": 2, "min_ms": 0, "max_ms": 500, "text": "0s..500ms" },
            { "before_attempt": 3, "min_ms": 0, "max_ms": 1000, "text": "0s..1s" },
            { "before_attempt": 4, "min_ms": 0, "max_ms": 2000, "text": "0s..2s" },
        ])
    );
}

#[test]
fn exact_schedules_in_json() {
    let plan = plan_json(&["examples/retries.yaml"]);
    let exponential = &plan["steps"][0];
    assert_eq!(exponential["id"], "exponential");
    let bounds: Vec<(u64, u64)> = exponential["retry"]["schedule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["min_ms"].as_u64().unwrap(), d["max_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(bounds, [(1000, 1000), (2000, 2000), (4000, 4000), (5000, 5000)]);
}

#[test]
fn inputs_are_converted_to_their_declared_types() {
    let plan = plan_json(&[
        "examples/inputs.yaml",
        "-i",
        "version=2.0",
        "-i",
        "replicas=5",
        "-i",
        "dry_run=false",
        "-i",
        "regions=[\"eu\"]",
        "-i",
        "labels={\"team\": \"data\"}",
        "-i",
        "ratio=1",
    ]);
    assert_eq!(
        plan["inputs"],
        json!({
            "version": "2.0",
            "replicas": 5,
            "dry_run": false,
            "regions": ["eu"],
            "labels": { "team": "data" },
            "ratio": 1.0,
            "environment": "staging",
        })
    );
}

#[test]
fn bad_inputs_exit_2_with_every_problem() {
    let run =
        wayline(&["plan", "examples/inputs.yaml", "-i", "replicas=five", "-i", "enviroment=prod"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    expect![[r#"
        error: input `replicas` must be an integer, got `five`
               unknown input `enviroment`; did you mean `environment`?
               input `version` is required (string); pass it with `-i version=…`
    "#]]
    .assert_eq(&run.stderr);
}

#[test]
fn missing_required_inputs_exit_2_as_for_run() {
    for args in
        [&["plan", "examples/inputs.yaml"][..], &["plan", "--json", "examples/release.yaml"]]
    {
        let run = wayline(args);
        assert_eq!(run.code, 2, "{args:?}");
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.starts_with("error: input `version` is required (string)"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn input_values_outside_the_enum_exit_2() {
    let run = wayline(&["plan", "examples/inputs.yaml", "-i", "version=1", "-i", "environment=qa"]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: input `environment` must be one of \"staging\", \"prod\", got \"qa\"\n"
    );
}

#[test]
fn an_input_without_a_value_is_a_usage_error() {
    let run = wayline(&["plan", "examples/inputs.yaml", "-i", "version"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr, "error: `-i version`: write inputs as name=value\n");
}

#[test]
fn an_invalid_workflow_cannot_be_planned() {
    let run = wayline(&["plan", "crates/lang/tests/fixtures/invalid/cycle.yaml"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("error[cycle]: dependency cycle: a -> b -> c -> a\n"));
    assert!(
        run.stderr.ends_with(
            "error: crates/lang/tests/fixtures/invalid/cycle.yaml is invalid (1 error)\n"
        )
    );
}

#[test]
fn inputs_come_from_a_yaml_or_json_file_and_flags_override_them() {
    let (_dir, yaml) =
        crate::temp_file("inputs.yaml", "version: '3.1'\nreplicas: 7\nregions: [ap]\n");
    let plan = plan_json(&[
        "examples/inputs.yaml",
        "--input-file",
        yaml.to_str().unwrap(),
        "-i",
        "replicas=9",
    ]);
    assert_eq!(plan["inputs"]["version"], "3.1");
    assert_eq!(plan["inputs"]["replicas"], 9);
    assert_eq!(plan["inputs"]["regions"], json!(["ap"]));

    let (_dir, json) = crate::temp_file("inputs.json", r#"{ "version": "3.2", "dry_run": false }"#);
    let plan = plan_json(&["examples/inputs.yaml", "--input-file", json.to_str().unwrap()]);
    assert_eq!(plan["inputs"]["version"], "3.2");
    assert_eq!(plan["inputs"]["dry_run"], false);

    let (_dir, list) = crate::temp_file("list.yaml", "- version\n");
    let run = wayline(&["plan", "examples/inputs.yaml", "--input-file", list.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.ends_with("list.yaml: expected a mapping of input names to values\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn http_steps_show_their_effective_timeout() {
    let (_dir, flow) = crate::temp_file(
        "flow.yaml",
        "name: calls\nsteps:\n  - id: default\n    http: { url: https://a.example/ }\n  - id: own\n    http: { url: https://a.example/ }\n    timeout: 2m\n  - id: command\n    run: \"true\"\n",
    );
    let flow = flow.to_str().unwrap();
    let run = wayline(&["plan", flow]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let steps = &run.stdout[run.stdout.find("\nSteps\n").unwrap() + 1..];
    expect![[r#"
        Steps
          default  [http]
              timeout    30s (default)
          own  [http]
              timeout    2m
          command  [run]
    "#]]
    .assert_eq(steps);
    let plan = plan_json(&[flow]);
    let timeouts: Vec<(&Value, &Value)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| (&step["timeout"], &step["timeout_default"]))
        .collect();
    assert_eq!(
        timeouts,
        [(&json!("30s"), &json!(true)), (&json!("2m"), &Value::Null), (&Value::Null, &Value::Null)]
    );
}
