//! Scenario tests: each strategy, retry delays, branches, caps, lifecycle control,
//! escalation and compensation, checked against a snapshot of the journal.

use std::time::Duration;

use expect_test::{Expect, expect};
use serde_json::{Map, json};
use wayline_core::execution::{Control, Input};
use wayline_journal::Decision;
use wayline_journal::ErrorClass;
use wayline_journal::Time;

use crate::harness::{Harness, actor, outputs};

fn check(harness: &Harness, expect: Expect) {
    harness.assert_replay_matches();
    expect.assert_eq(&harness.timeline());
}

const S: Duration = Duration::from_secs(1);

#[test]
fn a_chain_runs_in_order_and_outputs_flow() {
    let mut h = Harness::new(
        r#"
name: chain
steps:
  - id: a
    run: echo a
  - id: b
    needs: [a]
    set: { doubled: "${{ steps.a.outputs.n * 2 }}", text: "n=${{ steps.a.outputs.n }}" }
  - id: c
    needs: [b]
    run: echo ${{ steps.b.outputs.doubled }}
"#,
    );
    h.succeed_with("a", outputs(json!({ "n": 21 })));
    h.succeed("c");
    assert_eq!(h.status(), "succeeded");
    assert!(h.finished);
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start a#1
        [      0ms] succeeded a#1 {"n":21}
        [      0ms] start b#1
        [      0ms] succeeded b#1 {"doubled":42,"text":"n=21"}
        [      0ms] start c#1
        [      0ms] succeeded c#1
        [      0ms] finished succeeded
    "#]],
    );
}

#[test]
fn exponential_retry_uses_the_exact_delays() {
    let mut h = Harness::new(
        r#"
name: retry
steps:
  - id: flaky
    run: ./flaky.sh
    retry: { max_attempts: 5, backoff: exponential, delay: 1s, factor: 2, max_delay: 5s }
"#,
    );
    for _ in 0..4 {
        h.fail("flaky", ErrorClass::Failure);
        h.advance(Duration::from_secs(10));
    }
    h.succeed("flaky");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start flaky#1
        [      0ms] failed flaky#1 failure
        [      0ms] retry flaky#2 in 1000ms
        [   1000ms] start flaky#2
        [  10000ms] failed flaky#2 failure
        [  10000ms] retry flaky#3 in 2000ms
        [  12000ms] start flaky#3
        [  20000ms] failed flaky#3 failure
        [  20000ms] retry flaky#4 in 4000ms
        [  24000ms] start flaky#4
        [  30000ms] failed flaky#4 failure
        [  30000ms] retry flaky#5 in 5000ms
        [  35000ms] start flaky#5
        [  40000ms] succeeded flaky#5
        [  40000ms] finished succeeded
    "#]],
    );
}

#[test]
fn linear_and_fixed_retries_and_exhaustion() {
    let mut h = Harness::new(
        r#"
name: retry
steps:
  - id: lin
    run: "false"
    retry: { max_attempts: 3, backoff: linear, delay: 2s }
  - id: fix
    run: "false"
    retry: { max_attempts: 2, backoff: fixed, delay: 500ms }
"#,
    );
    h.fail("lin", ErrorClass::Failure);
    h.fail("fix", ErrorClass::Timeout);
    h.advance(Duration::from_millis(500));
    h.fail("fix", ErrorClass::Failure);
    assert_eq!(h.step_status("fix"), "failed");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start lin#1
        [      0ms] start fix#1
        [      0ms] failed lin#1 failure
        [      0ms] retry lin#2 in 2000ms
        [      0ms] failed fix#1 timeout
        [      0ms] retry fix#2 in 500ms
        [    500ms] start fix#2
        [    500ms] failed fix#2 failure (terminal)
        [    500ms] stopping (Failed, rollback: false)
        [    500ms] skipped lin: the execution stopped after a failure
        [    500ms] finished failed: step `fix` failed: fix broke
    "#]],
    );
}

#[test]
fn retry_on_limits_the_classes_and_fatal_errors_are_never_retried() {
    let mut h = Harness::new(
        r#"
name: retry
on_failure: continue
steps:
  - id: only_timeouts
    run: "false"
    retry: { max_attempts: 3, on: [timeout] }
  - id: fatal
    run: "false"
    retry: { max_attempts: 3 }
"#,
    );
    h.fail("only_timeouts", ErrorClass::Failure);
    h.fail("fatal", ErrorClass::Fatal);
    assert_eq!(h.step_status("only_timeouts"), "failed");
    assert_eq!(h.step_status("fatal"), "failed");
    assert_eq!(h.status(), "failed");
}

#[test]
fn retry_after_lengthens_the_delay_and_budget_stops_retries() {
    let mut h = Harness::new(
        r#"
name: retry
steps:
  - id: api
    http: { url: "http://127.0.0.1:1/x" }
    retry: { max_attempts: 10, delay: 1s, budget: 10s }
"#,
    );
    h.fail_after("api", ErrorClass::Failure, Some(Duration::from_secs(7)));
    h.advance(Duration::from_secs(7));
    // 7s spent; another 7s pause would start the third attempt past the 10s budget.
    h.fail_after("api", ErrorClass::Failure, Some(Duration::from_secs(7)));
    assert_eq!(h.step_status("api"), "failed");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start api#1
        [      0ms] failed api#1 failure
        [      0ms] retry api#2 in 7000ms
        [   7000ms] start api#2
        [   7000ms] failed api#2 failure (terminal)
        [   7000ms] stopping (Failed, rollback: false)
        [   7000ms] finished failed: step `api` failed: api broke
    "#]],
    );
}

#[test]
fn jitter_is_seeded_and_within_range() {
    let yaml = r#"
name: jitter
steps:
  - id: s
    run: "false"
    retry: { max_attempts: 4, backoff: exponential, delay: 1s, jitter: full }
"#;
    let delays = |mut h: Harness| {
        for _ in 0..3 {
            h.fail("s", ErrorClass::Failure);
            h.advance(Duration::from_secs(60));
        }
        h.journal
            .iter()
            .filter_map(|e| match &e.kind {
                wayline_journal::EventKind::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
                _ => None,
            })
            .collect::<Vec<u64>>()
    };
    let first = delays(Harness::new(yaml));
    let second = delays(Harness::new(yaml));
    assert_eq!(first, second, "same execution id, step and attempt give the same delays");
    for (n, delay) in first.iter().enumerate() {
        assert!(*delay <= 1000 << n, "{delay} exceeds the cap of retry {}", n + 1);
    }
    assert!(
        first.iter().collect::<std::collections::HashSet<_>>().len() > 1,
        "jitter varies: {first:?}"
    );
}

#[test]
fn branches_select_one_side_and_skips_propagate() {
    let mut h = Harness::new(
        r#"
name: branch
steps:
  - id: test
    run: ./test.sh
  - id: ok
    needs: [test]
    condition: ${{ steps.test.outputs.coverage >= 80 }}
    then: [deploy]
    else: [report]
  - id: deploy
    run: ./deploy.sh
  - id: announce
    needs: [deploy]
    run: ./announce.sh
  - id: report
    run: ./report.sh
  - id: always_runs
    needs: [announce, report]
    if: ${{ always() }}
    run: ./cleanup.sh
"#,
    );
    h.succeed_with("test", outputs(json!({ "coverage": 60 })));
    h.succeed("report");
    h.succeed("always_runs");
    assert_eq!(h.step_status("deploy"), "skipped");
    assert_eq!(h.step_status("announce"), "skipped");
    assert_eq!(h.status(), "succeeded");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start test#1
        [      0ms] succeeded test#1 {"coverage":60}
        [      0ms] start ok#1
        [      0ms] succeeded ok#1 {"result":false}
        [      0ms] skipped deploy: branch `then` of `ok` was not taken
        [      0ms] skipped announce: needs did not succeed: `deploy` skipped
        [      0ms] start report#1
        [      0ms] succeeded report#1
        [      0ms] start always_runs#1
        [      0ms] succeeded always_runs#1
        [      0ms] finished succeeded
    "#]],
    );
}

#[test]
fn if_expressions_see_inputs_and_step_status() {
    let mut inputs = serde_json::Map::new();
    inputs.insert("deploy".into(), json!(false));
    let mut h = Harness::with_inputs(
        r#"
name: ifs
inputs:
  deploy: { type: boolean, default: true }
steps:
  - id: build
    run: make
  - id: ship
    needs: [build]
    if: ${{ inputs.deploy && success() }}
    run: ./ship.sh
  - id: on_fail
    needs: [build]
    if: ${{ failure() }}
    run: ./alert.sh
  - id: status_check
    needs: [build]
    if: ${{ steps.build.status == 'succeeded' }}
    run: "true"
"#,
        inputs,
    );
    h.succeed("build");
    h.succeed("status_check");
    assert_eq!(h.step_status("ship"), "skipped");
    assert_eq!(h.step_status("on_fail"), "skipped");
    assert_eq!(h.status(), "succeeded");
}

#[test]
fn group_and_workflow_caps_are_never_exceeded() {
    let mut yaml =
        String::from("name: caps\nmax_parallel: 3\ngroups:\n  g: { max_parallel: 2 }\nsteps:\n");
    for i in 0..6 {
        yaml.push_str(&format!("  - id: g{i}\n    group: g\n    run: 'true'\n"));
    }
    for i in 0..4 {
        yaml.push_str(&format!("  - id: f{i}\n    run: 'true'\n"));
    }
    let mut h = Harness::new(&yaml);
    let g = |h: &Harness| h.running.iter().filter(|(s, _, _)| s.starts_with('g')).count();
    assert_eq!(h.running.len(), 3);
    assert_eq!(g(&h), 2);
    assert!(
        h.execution.waiting(h.index("g2")).unwrap().contains("group `g` is full (2/2 running)")
    );
    while let Some((step, _, _)) = h.running.iter().next().cloned() {
        h.succeed(&step);
        assert!(h.running.len() <= 3);
        assert!(g(&h) <= 2);
    }
    assert_eq!(h.peak, 3);
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
}

#[test]
fn fail_fast_cancels_running_steps_and_runs_cleanup() {
    let mut h = Harness::new(
        r#"
name: ff
steps:
  - id: a
    run: "false"
  - id: b
    run: sleep 100
  - id: after_b
    needs: [b]
    run: "true"
  - id: cleanup
    needs: [a, b]
    if: ${{ always() }}
    run: ./cleanup.sh
"#,
    );
    h.fail("a", ErrorClass::Failure);
    assert_eq!(h.cancels, [("b".to_owned(), 1)]);
    assert_eq!(h.status(), "running");
    h.cancelled("b");
    h.succeed("cleanup");
    assert_eq!(h.step_status("b"), "cancelled");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start a#1
        [      0ms] start b#1
        [      0ms] failed a#1 failure (terminal)
        [      0ms] stopping (Failed, rollback: false)
        [      0ms] skipped after_b: the execution stopped after a failure
        [      0ms] cancelled b#1
        [      0ms] start cleanup#1
        [      0ms] succeeded cleanup#1
        [      0ms] finished failed: step `a` failed: a broke
    "#]],
    );
}

/// `cancelled()` is true only while the execution is being cancelled (a cancel request or
/// its timeout), as in GitHub Actions; a fail_fast stop is a failure, seen by `failure()`
/// on the failed step's dependents, and by neither on the dependents of a step it cancelled.
#[test]
fn cancelled_is_true_only_when_the_execution_is_cancelled() {
    let yaml = r#"
name: status
steps:
  - id: a
    run: "false"
  - id: b
    run: sleep 100
  - id: on_cancel_b
    needs: [b]
    if: ${{ cancelled() }}
    run: ./notify.sh
  - id: on_failure_a
    needs: [a]
    if: ${{ failure() }}
    run: ./report.sh
  - id: on_failure_b
    needs: [b]
    if: ${{ failure() }}
    run: ./report.sh
"#;
    // A failure stops the execution: b is cancelled by the stop, but nobody cancelled the
    // execution.
    let mut h = Harness::new(yaml);
    h.fail("a", ErrorClass::Failure);
    h.cancelled("b");
    assert_eq!(h.step_status("on_cancel_b"), "skipped");
    assert_eq!(h.step_status("on_failure_b"), "skipped");
    h.succeed("on_failure_a");
    assert_eq!(h.status(), "failed");

    // A cancel request: `cancelled()` steps run.
    let mut h = Harness::new(yaml.replace("run: \"false\"", "run: sleep 100").as_str());
    h.control(Control::Cancel { actor: actor("ops"), rollback: false }).unwrap();
    h.cancelled("a");
    h.cancelled("b");
    assert_eq!(h.step_status("on_cancel_b"), "running");
    assert_eq!(h.step_status("on_failure_a"), "skipped");
    h.succeed("on_cancel_b");
    assert_eq!(h.status(), "cancelled");
}

#[test]
fn continue_runs_independent_branches_and_allow_failure_keeps_success() {
    let yaml = |allow: bool| {
        format!(
            r#"
name: cont
on_failure: continue
steps:
  - id: optional
    run: "false"
    allow_failure: {allow}
  - id: after_optional
    needs: [optional]
    run: "true"
  - id: independent
    run: "true"
"#
        )
    };
    let mut h = Harness::new(&yaml(true));
    h.fail("optional", ErrorClass::Failure);
    h.succeed("independent");
    assert_eq!(h.step_status("after_optional"), "skipped");
    assert_eq!(h.status(), "succeeded");

    let mut h = Harness::new(&yaml(false));
    h.fail("optional", ErrorClass::Failure);
    h.succeed("independent");
    assert_eq!(h.status(), "failed");
    h.assert_replay_matches();
}

const DIAMOND: &str = r#"
name: diamond
on_failure: rollback
steps:
  - id: base
    run: ./base.sh
    compensate: { run: ./undo-base.sh }
  - id: left
    needs: [base]
    run: ./left.sh
    compensate: { run: ./undo-left.sh }
  - id: right
    needs: [base]
    run: ./right.sh
    compensate: { run: ./undo-right.sh, retry: { max_attempts: 2, delay: 1s } }
  - id: middle
    needs: [base]
    run: ./middle.sh
  - id: top
    needs: [left, right, middle]
    run: ./top.sh
"#;

#[test]
fn rollback_compensates_in_reverse_dependency_order_with_parallel_branches() {
    let mut h = Harness::new(DIAMOND);
    h.succeed("base");
    h.succeed("left");
    h.succeed("right");
    h.succeed("middle");
    h.fail("top", ErrorClass::Failure);
    // left and right compensate in parallel; base waits for both.
    let compensating: Vec<&str> = h.running.iter().filter(|r| r.2).map(|r| r.0.as_str()).collect();
    assert_eq!(compensating, ["left", "right"]);
    assert_eq!(h.step_status("left"), "compensating");
    h.compensated("left", true);
    h.compensated("right", false);
    assert!(h.running.is_empty(), "base waits for right's retry");
    h.advance(S);
    h.compensated("right", true);
    h.compensated("base", true);
    assert_eq!(h.status(), "rolled_back");
    assert_eq!(h.step_status("base"), "compensated");
    assert_eq!(h.step_status("middle"), "succeeded");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start base#1
        [      0ms] succeeded base#1
        [      0ms] start left#1
        [      0ms] start right#1
        [      0ms] start middle#1
        [      0ms] succeeded left#1
        [      0ms] succeeded right#1
        [      0ms] succeeded middle#1
        [      0ms] start top#1
        [      0ms] failed top#1 failure (terminal)
        [      0ms] stopping (Failed, rollback: true)
        [      0ms] rollback started
        [      0ms] compensate right#1
        [      0ms] compensate left#1
        [      0ms] compensated left#1
        [      0ms] compensation failed right#1 failure
        [      0ms] retry right#2 in 1000ms
        [   1000ms] compensate right#2
        [   1000ms] compensated right#2
        [   1000ms] compensate base#1
        [   1000ms] compensated base#1
        [   1000ms] finished rolled_back: step `top` failed: top broke
    "#]],
    );
}

#[test]
fn a_failed_compensation_fails_the_rollback() {
    let mut h = Harness::new(DIAMOND);
    h.succeed("base");
    h.fail("left", ErrorClass::Failure);
    h.cancelled("right");
    h.cancelled("middle");
    h.compensated("base", false);
    assert_eq!(h.status(), "failed");
    let error = h.execution.outcome().unwrap().1.clone().unwrap();
    assert!(
        error.message.contains("rollback_failed: compensation of base failed"),
        "{}",
        error.message
    );
    h.assert_replay_matches();
}

const ESCALATE: &str = r#"
name: esc
on_failure: escalate
escalation:
  timeout: 1h
  then: skip
steps:
  - id: migrate
    run: ./migrate.sh
    compensate: { run: ./unmigrate.sh }
  - id: risky
    needs: [migrate]
    run: ./risky.sh
  - id: other
    needs: [migrate]
    run: sleep 5
  - id: after
    needs: [risky]
    run: "true"
"#;

#[test]
fn escalation_waits_for_a_decision_then_retries() {
    let mut h = Harness::new(ESCALATE);
    h.succeed("migrate");
    h.fail("risky", ErrorClass::Failure);
    assert_eq!(h.status(), "escalated");
    assert_eq!(h.notified, ["risky"]);
    assert!(h.execution.waiting(h.index("after")).unwrap().contains("waiting for risky"));
    assert_eq!(
        h.decide("after", Decision::Skip),
        Err("step `after` is not escalated (it is pending); only escalated steps take a decision"
            .into())
    );
    h.succeed("other"); // running steps finish while escalated
    h.decide("risky", Decision::Retry).unwrap();
    assert_eq!(h.status(), "running");
    h.succeed("risky");
    h.succeed("after");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(h.execution.steps()[h.index("risky")].attempts, 2);
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start migrate#1
        [      0ms] succeeded migrate#1
        [      0ms] start risky#1
        [      0ms] start other#1
        [      0ms] failed risky#1 failure (terminal)
        [      0ms] escalated risky
        [      0ms] succeeded other#1
        [      0ms] decided risky: retry by ops
        [      0ms] start risky#2
        [      0ms] succeeded risky#2
        [      0ms] start after#1
        [      0ms] succeeded after#1
        [      0ms] finished succeeded
    "#]],
    );
}

#[test]
fn escalation_decisions_skip_fail_and_rollback() {
    let mut h = Harness::new(ESCALATE);
    h.succeed("migrate");
    h.fail("risky", ErrorClass::Failure);
    h.succeed("other");
    h.control(Control::Decide {
        step: "risky".into(),
        decision: Decision::Skip,
        outputs: crate::harness::outputs(json!({ "rows": 3 })),
        actor: actor("ops"),
    })
    .unwrap();
    assert_eq!(h.step_status("risky"), "succeeded");
    h.succeed("after");
    assert_eq!(h.status(), "succeeded");

    let mut h = Harness::new(ESCALATE);
    h.succeed("migrate");
    h.fail("risky", ErrorClass::Failure);
    h.decide("risky", Decision::Fail).unwrap();
    assert_eq!(h.cancels, [("other".to_owned(), 1)]);
    h.cancelled("other");
    assert_eq!(h.status(), "failed");

    let mut h = Harness::new(ESCALATE);
    h.succeed("migrate");
    h.fail("risky", ErrorClass::Failure);
    h.succeed("other");
    h.decide("risky", Decision::Rollback).unwrap();
    h.compensated("migrate", true);
    assert_eq!(h.status(), "rolled_back");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start migrate#1
        [      0ms] succeeded migrate#1
        [      0ms] start risky#1
        [      0ms] start other#1
        [      0ms] failed risky#1 failure (terminal)
        [      0ms] escalated risky
        [      0ms] succeeded other#1
        [      0ms] decided risky: rollback by ops
        [      0ms] stopping (Failed, rollback: true)
        [      0ms] skipped after: the execution stopped after a failure
        [      0ms] rollback started
        [      0ms] compensate migrate#1
        [      0ms] compensated migrate#1
        [      0ms] finished rolled_back: step `risky` failed and ops decided to rollback
    "#]],
    );
}

#[test]
fn escalation_timeout_applies_then() {
    let mut h = Harness::new(ESCALATE);
    h.succeed("migrate");
    h.fail("risky", ErrorClass::Failure);
    h.succeed("other");
    h.advance(Duration::from_secs(3599));
    assert_eq!(h.status(), "escalated");
    h.advance(S);
    assert_eq!(h.step_status("risky"), "skipped");
    assert_eq!(h.step_status("after"), "skipped");
    assert_eq!(h.status(), "succeeded");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start migrate#1
        [      0ms] succeeded migrate#1
        [      0ms] start risky#1
        [      0ms] start other#1
        [      0ms] failed risky#1 failure (terminal)
        [      0ms] escalated risky
        [      0ms] succeeded other#1
        [3600000ms] decided risky: skip by escalation timeout
        [3600000ms] skipped after: needs did not succeed: `risky` skipped
        [3600000ms] finished succeeded
    "#]],
    );
}

const TWO_STAGES: &str = r#"
name: stages
steps:
  - id: one
    run: ./one.sh
  - id: pause_point
    needs: [one]
    wait: 10s
  - id: two
    needs: [pause_point]
    run: ./two.sh
"#;

#[test]
fn pause_drains_and_resume_continues() {
    let mut h = Harness::new(TWO_STAGES);
    h.control(Control::Pause { actor: actor("alice"), until: None }).unwrap();
    assert_eq!(h.status(), "paused");
    h.succeed("one"); // running steps finish
    assert!(h.running.is_empty(), "nothing new starts while paused");
    assert!(h.execution.waiting(h.index("pause_point")).unwrap().contains("paused by alice"));
    h.control(Control::Resume { actor: actor("alice") }).unwrap();
    h.control(Control::Pause { actor: actor("bob"), until: None }).unwrap();
    h.advance(Duration::from_secs(10)); // the wait keeps running while paused
    assert_eq!(h.step_status("pause_point"), "succeeded");
    assert!(h.running.is_empty());
    assert_eq!(h.control(Control::Resume { actor: actor("bob") }), Ok(()));
    assert_eq!(
        h.control(Control::Resume { actor: actor("bob") }),
        Err("execution ex1 is not paused (running)".into())
    );
    h.succeed("two");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] start one#1
        [      0ms] paused by alice
        [      0ms] succeeded one#1
        [      0ms] resumed by alice
        [      0ms] start pause_point#1 until +10000ms
        [      0ms] paused by bob
        [  10000ms] succeeded pause_point#1
        [  10000ms] resumed by bob
        [  10000ms] start two#1
        [  10000ms] succeeded two#1
        [  10000ms] finished succeeded
    "#]],
    );
}

#[test]
fn pause_until_resumes_by_itself() {
    let mut h = Harness::new(TWO_STAGES);
    let until = h.now.after(Duration::from_secs(30));
    h.control(Control::Pause { actor: actor("alice"), until: Some(until) }).unwrap();
    h.succeed("one");
    h.advance(Duration::from_secs(29));
    assert_eq!(h.status(), "paused");
    h.advance(S);
    assert_eq!(h.status(), "running");
    assert_eq!(h.step_status("pause_point"), "running");
}

#[test]
fn cancel_at_every_stage() {
    // Before anything finished.
    let mut h = Harness::new(TWO_STAGES);
    h.control(Control::Cancel { actor: actor("alice"), rollback: false }).unwrap();
    h.cancelled("one");
    assert_eq!(h.status(), "cancelled");
    assert_eq!(h.step_status("two"), "cancelled");

    // During a wait: the wait ends at once.
    let mut h = Harness::new(TWO_STAGES);
    h.succeed("one");
    h.control(Control::Cancel { actor: actor("alice"), rollback: false }).unwrap();
    assert_eq!(h.status(), "cancelled");
    assert_eq!(h.step_status("pause_point"), "cancelled");

    // While paused.
    let mut h = Harness::new(TWO_STAGES);
    h.control(Control::Pause { actor: actor("alice"), until: None }).unwrap();
    h.succeed("one");
    h.control(Control::Cancel { actor: actor("bob"), rollback: false }).unwrap();
    assert_eq!(h.status(), "cancelled");

    // During a retry pause.
    let mut h = Harness::new(
        "name: r\nsteps:\n  - id: s\n    run: 'false'\n    retry: { max_attempts: 3 }\n",
    );
    h.fail("s", ErrorClass::Failure);
    h.control(Control::Cancel { actor: actor("alice"), rollback: false }).unwrap();
    assert_eq!(h.status(), "cancelled");
    assert_eq!(h.step_status("s"), "cancelled");
    h.advance(Duration::from_secs(5));
    assert!(h.running.is_empty(), "a stale retry timer starts nothing");

    // After the end.
    assert_eq!(
        h.control(Control::Cancel { actor: actor("alice"), rollback: false }),
        Err("execution ex1 already finished (cancelled)".into())
    );
    h.assert_replay_matches();
}

#[test]
fn cancel_with_rollback_compensates() {
    let mut h = Harness::new(DIAMOND);
    h.succeed("base");
    h.succeed("left");
    h.control(Control::Cancel { actor: actor("alice"), rollback: true }).unwrap();
    h.cancelled("right");
    h.succeed("middle"); // finished before the cancel reached it
    h.compensated("left", true);
    h.compensated("base", true);
    assert_eq!(h.status(), "cancelled");
    assert_eq!(h.step_status("left"), "compensated");
    h.assert_replay_matches();
}

#[test]
fn execution_timeout_fails_with_reason_timeout() {
    let mut h = Harness::new(
        "name: t\ntimeout: 1m\non_failure: rollback\nsteps:\n  - id: a\n    run: x\n    compensate: { run: undo }\n  - id: b\n    needs: [a]\n    run: sleep 1000\n",
    );
    h.succeed("a");
    h.advance(Duration::from_secs(60));
    assert_eq!(h.cancels, [("b".to_owned(), 1)]);
    h.cancelled("b");
    h.compensated("a", true);
    assert_eq!(h.status(), "failed");
    let error = h.execution.outcome().unwrap().1.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Timeout);
    assert_eq!(error.message, "the execution ran past its timeout of 1m");
}

#[test]
fn step_timeouts_are_retried_as_class_timeout() {
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    run: sleep 10\n    timeout: 1s\n    retry: { max_attempts: 2, on: [timeout] }\n",
    );
    h.fail("a", ErrorClass::Timeout);
    h.advance(S);
    h.succeed("a");
    assert_eq!(h.status(), "succeeded");
}

#[test]
fn recovery_marks_in_flight_attempts_lost_and_retries_them() {
    let h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    run: x\n    retry: { max_attempts: 2, delay: 1s }\n  - id: w\n    wait: 1m\n",
    );
    // The owner dies; a new one folds the journal.
    let workflow = std::sync::Arc::clone(h.execution.workflow());
    let mut replayed =
        wayline_core::Execution::replay("ex1".into(), workflow, Default::default(), &h.journal)
            .unwrap();
    let now = h.now.after(Duration::from_secs(5));
    let step =
        replayed.handle(wayline_core::Input::Recover { owner: "host:2".into() }, now).unwrap();
    let kinds: Vec<String> = step
        .events
        .iter()
        .map(|e| serde_json::to_value(&e.kind).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["recovered", "attempt_failed", "retry_scheduled"]);
    assert!(
        matches!(&step.events[1].kind, wayline_journal::EventKind::AttemptFailed { error, .. } if error.class == ErrorClass::Lost)
    );
    // The wait was not lost: its timer is armed again at its original end.
    let wait_end = h.journal.iter().find_map(|e| match &e.kind {
        wayline_journal::EventKind::AttemptStarted { until: Some(until), .. } => Some(*until),
        _ => None,
    });
    assert!(step.effects.iter().any(|e| matches!(e, wayline_core::Effect::Timer { at, timer: wayline_core::execution::Timer::Wait { .. } } if Some(*at) == wait_end)));
}

#[test]
fn lost_attempts_run_again_at_once_outside_the_attempt_budget() {
    // The default policy: one attempt. A crash is not the step's fault, so it runs again.
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    run: x\n  - id: b\n    needs: [a]\n    run: y\n",
    );
    for lost in 1..=wayline_core::retry::MAX_LOST {
        h.crash_and_recover();
        h.advance(Duration::ZERO);
        assert_eq!(h.step_status("a"), "running", "after {lost} lost attempts");
        assert!(h.running.contains(&("a".to_owned(), lost + 1, false)), "{:?}", h.running);
    }
    h.succeed("a");
    h.succeed("b");
    assert_eq!(h.status(), "succeeded");
    let timeline = h.timeline();
    assert!(timeline.contains("failed a#1 lost\n"), "{timeline}");
    assert!(timeline.contains("retry a#2 in 0ms\n"), "{timeline}");
    h.assert_replay_matches();
}

#[test]
fn a_step_lost_more_than_three_times_fails_with_class_lost() {
    let mut h = Harness::new("name: t\nsteps:\n  - id: a\n    run: x\n");
    for _ in 0..wayline_core::retry::MAX_LOST {
        h.crash_and_recover();
        h.advance(Duration::ZERO);
    }
    h.crash_and_recover();
    assert_eq!(h.step_status("a"), "failed");
    assert_eq!(h.status(), "failed");
    let error = h.execution.steps()[h.index("a")].error.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Lost);
    assert!(error.message.contains("lost 4 times"), "{}", error.message);
    h.assert_replay_matches();
}

#[test]
fn lost_attempts_leave_the_budget_and_the_backoff_to_real_failures() {
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    run: x\n    retry: { max_attempts: 2, backoff: linear, delay: 10s }\n",
    );
    h.crash_and_recover();
    h.advance(Duration::ZERO);
    // Attempt 2 fails for real: the first retry of the budget, 10 s (not the second, 20 s).
    h.fail("a", ErrorClass::Failure);
    assert!(h.timeline().ends_with("retry a#3 in 10000ms\n"), "{}", h.timeline());
    h.advance(Duration::from_secs(10));
    h.fail("a", ErrorClass::Failure);
    assert_eq!(h.step_status("a"), "failed", "two attempts that did not die count, and no more");
    h.assert_replay_matches();
}

#[test]
fn a_step_that_must_not_run_twice_fails_when_lost() {
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: charge\n    run: x\n    retry: { max_attempts: 3, on: [failure, timeout] }\n",
    );
    h.crash_and_recover();
    assert_eq!(h.step_status("charge"), "failed");
    assert!(h.running.is_empty());
    let error = h.execution.steps()[h.index("charge")].error.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Lost);
    h.assert_replay_matches();
}

#[test]
fn expression_errors_fail_without_retry() {
    let h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    set: { x: 1 }\n  - id: b\n    needs: [a]\n    set: { y: \"${{ steps.a.outputs.x / 0 }}\" }\n    retry: { max_attempts: 3 }\n",
    );
    assert_eq!(h.step_status("b"), "failed");
    assert_eq!(h.status(), "failed");
    let error = h.execution.steps()[h.index("b")].error.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Expression);
    h.assert_replay_matches();
    let _ = Time::default();
}

#[test]
fn a_journal_from_a_newer_wayline_is_refused_not_misread() {
    let mut h = Harness::new("name: v\nsteps:\n  - id: a\n    run: echo a\n");
    h.succeed("a");
    let mut journal = h.journal.clone();
    journal.last_mut().expect("events").v = wayline_journal::FORMAT + 1;
    let error = wayline_core::Execution::replay(
        "ex1".into(),
        std::sync::Arc::clone(h.execution.workflow()),
        std::sync::Arc::default(),
        &journal,
    )
    .expect_err("a newer format is refused");
    assert!(error.contains("newer than this wayline reads"), "{error}");
}

#[test]
fn a_rejected_request_names_its_reason() {
    let mut h = Harness::new(
        "name: r\non_failure: escalate\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: y\n  - id: c\n    needs: [b]\n    run: z\n",
    );
    let mut seen = String::new();
    let mut reject = |h: &Harness, control: Control| {
        // On a copy: a rejected request must change nothing anyway.
        let error = h.execution.clone().handle(Input::Control(control), h.now).unwrap_err();
        seen.push_str(&format!("{error:?}\n  {error}\n"));
    };
    let decide = |step: &str, decision, outputs| Control::Decide {
        step: step.into(),
        decision,
        outputs,
        actor: actor("ops"),
    };
    h.fail("a", ErrorClass::Fatal);
    reject(&h, decide("nope", Decision::Skip, Map::new()));
    reject(&h, decide("c", Decision::Skip, Map::new()));
    reject(&h, decide("a", Decision::Retry, outputs(json!({ "x": 1 }))));
    reject(&h, Control::Resume { actor: actor("ops") });
    h.control(Control::Cancel { actor: actor("ops"), rollback: false }).unwrap();
    reject(&h, Control::Pause { actor: actor("ops"), until: None });
    reject(&h, Control::Cancel { actor: actor("ops"), rollback: false });
    h.cancelled("b");
    reject(&h, Control::Resume { actor: actor("ops") });
    expect![[r#"
        UnknownStep { workflow: "r", step: "nope" }
          workflow `r` has no step `nope`
        NotEscalated { step: "c", status: Pending }
          step `c` is not escalated (it is pending); only escalated steps take a decision
        OutputsWithoutSkip
          outputs can only be given with `skip`
        NotPaused { id: "ex1", status: Escalated }
          execution ex1 is not paused (escalated)
        Stopping
          the execution is stopping; it cannot be paused
        AlreadyStopping
          the execution is already stopping
        Finished { id: "ex1", status: Cancelled }
          execution ex1 already finished (cancelled)
    "#]]
    .assert_eq(&seen);
}

#[test]
fn a_journal_written_in_a_newer_format_is_refused_not_misread() {
    let h = Harness::new("name: t\nsteps:\n  - id: a\n    run: x\n");
    let workflow = std::sync::Arc::clone(h.execution.workflow());
    let mut journal = h.journal.clone();
    assert!(journal.len() >= 2, "{journal:?}");
    // The same journal reads back; one event from a newer wayline makes it unreadable.
    wayline_core::Execution::replay(
        "ex1".into(),
        std::sync::Arc::clone(&workflow),
        Default::default(),
        &journal,
    )
    .unwrap();
    journal[1].v = wayline_journal::FORMAT + 1;
    let error =
        wayline_core::Execution::replay("ex1".into(), workflow, Default::default(), &journal)
            .expect_err("a newer format is refused");
    assert!(
        error.contains("newer than this wayline reads") && error.contains("upgrade wayline"),
        "{error}"
    );
}

const CHAIN: &str = "name: t\ninputs:\n  version: { type: string, default: '1' }\nsteps:\n  - id: a\n    run: x\n  - id: b\n    needs: [a]\n    run: y\n  - id: c\n    needs: [b]\n    run: z\n  - id: side\n    run: w\n";

#[test]
fn a_rerun_runs_what_failed_and_what_it_held_up_and_keeps_what_succeeded() {
    let mut h = Harness::new(CHAIN);
    h.succeed_with("a", outputs(json!({ "built": "a-1" })));
    h.succeed("side");
    h.fail("b", ErrorClass::Failure);
    assert_eq!(h.status(), "failed");
    assert_eq!(h.step_status("c"), "skipped");
    let before = h.journal.len();
    h.rerun(&[], Map::new()).unwrap();
    assert!(h.timeline().lines().nth(before - 1).unwrap().ends_with("rerun by ops: b, c"));
    assert_eq!(h.status(), "running");
    // The numbering of b's attempts continues; a and side are untouched.
    assert!(h.running.contains(&("b".to_owned(), 2, false)), "{:?}", h.running);
    assert_eq!(h.step_status("a"), "succeeded");
    assert_eq!(h.execution.steps()[h.index("a")].outputs["built"], "a-1");
    h.assert_replay_matches();
    h.succeed("b");
    h.succeed("c");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(h.execution.steps()[h.index("b")].attempts, 2);
    h.assert_replay_matches();
}

#[test]
fn a_rerun_from_a_step_runs_it_and_everything_downstream() {
    let mut h = Harness::new(CHAIN);
    for step in ["a", "side", "b", "c"] {
        h.succeed(step);
    }
    assert_eq!(h.status(), "succeeded");
    assert_eq!(
        h.rerun(&[], Map::new()).unwrap_err(),
        "every step of execution ex1 succeeded; name the steps to run again with --from STEP"
    );
    h.rerun(&["b"], Map::new()).unwrap();
    assert_eq!(h.step_status("a"), "succeeded");
    assert_eq!(h.step_status("side"), "succeeded");
    assert_eq!(h.step_status("c"), "pending");
    assert!(h.running.contains(&("b".to_owned(), 2, false)));
    h.succeed("b");
    h.succeed("c");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
}

#[test]
fn a_rerun_is_refused_with_the_reason_and_changes_nothing() {
    let mut h = Harness::new(CHAIN);
    assert_eq!(
        h.rerun(&[], Map::new()).unwrap_err(),
        "execution ex1 is running; only a finished execution can be rerun (pause, cancel or wait for it first)"
    );
    h.succeed("a");
    h.succeed("side");
    h.fail("b", ErrorClass::Failure);
    let before = h.journal.len();
    assert_eq!(
        h.rerun(&["c"], Map::new()).unwrap_err(),
        "step `c` needs `b`, which failed and does not run again, so `c` would be skipped again; add --from b, or rerun without --from"
    );
    assert_eq!(h.rerun(&["nope"], Map::new()).unwrap_err(), "workflow `t` has no step `nope`");
    assert_eq!(h.journal.len(), before);
    assert_eq!(h.status(), "failed");
}

#[test]
fn a_rerun_records_new_inputs_for_the_steps_that_run_again() {
    let mut h = Harness::new(CHAIN);
    h.succeed("a");
    h.succeed("side");
    h.fail("b", ErrorClass::Failure);
    h.rerun(&[], outputs(json!({ "version": "2" }))).unwrap();
    assert_eq!(h.execution.inputs()["version"], "2");
    assert!(
        h.timeline().contains("rerun by ops: b, c with {\"version\":\"2\"}"),
        "{}",
        h.timeline()
    );
    h.assert_replay_matches();
}

#[test]
fn a_rerun_after_a_rollback_redoes_what_was_undone() {
    let mut h = Harness::new(
        "name: t\non_failure: rollback\nsteps:\n  - id: a\n    run: x\n    compensate: { run: undo, retry: { max_attempts: 2, delay: 1s } }\n  - id: b\n    needs: [a]\n    run: y\n",
    );
    h.succeed("a");
    h.fail("b", ErrorClass::Failure);
    h.compensated("a", false);
    h.advance(S);
    h.compensated("a", true);
    assert_eq!(h.status(), "rolled_back");
    h.rerun(&[], Map::new()).unwrap();
    assert_eq!(h.step_status("a"), "running");
    h.succeed("a");
    h.fail("b", ErrorClass::Failure);
    // The second rollback has the compensation's whole budget again.
    h.compensated("a", false);
    h.advance(S);
    assert!(h.running.contains(&("a".to_owned(), 4, true)), "{:?}", h.running);
    h.compensated("a", true);
    assert_eq!(h.status(), "rolled_back");
    h.assert_replay_matches();
}

#[test]
fn a_rerun_has_the_whole_execution_timeout_again() {
    let mut h = Harness::new("name: t\ntimeout: 1m\nsteps:\n  - id: a\n    run: x\n");
    h.advance(Duration::from_secs(60));
    h.cancelled("a");
    assert_eq!(h.status(), "failed");
    h.advance(Duration::from_secs(600));
    h.rerun(&[], Map::new()).unwrap();
    h.advance(Duration::from_secs(59));
    assert_eq!(h.status(), "running");
    h.succeed("a");
    assert_eq!(h.status(), "succeeded");
}

const PIPELINE: &str = "name: t\ninputs:\n  target: { type: string, default: staging }\nsteps:\n  - id: build\n    run: b\n  - id: test\n    needs: [build]\n    run: t\n  - id: deploy\n    needs: [test]\n    run: d\n  - id: notify\n    needs: [deploy]\n    set: { said: yes }\n";

fn breakpoints(h: &mut Harness, steps: &[&str], every: bool) -> Result<(), String> {
    h.control(Control::Break {
        steps: steps.iter().map(|s| s.to_string()).collect(),
        every,
        actor: actor("dev"),
    })
}

#[test]
fn a_breakpoint_pauses_before_its_step_with_the_reason_and_resume_goes_on() {
    let mut h = Harness::new(PIPELINE);
    breakpoints(&mut h, &["deploy"], false).unwrap();
    h.succeed("build");
    h.succeed("test");
    assert_eq!(h.status(), "paused");
    assert!(h.running.is_empty(), "deploy did not start: {:?}", h.running);
    let report = wayline_core::report::Report::new(&h.execution);
    let paused = report.paused.clone().unwrap();
    assert_eq!(
        (paused.by.as_str(), paused.reason.as_deref()),
        ("breakpoint", Some("breakpoint before deploy"))
    );
    let deploy = report.steps.iter().find(|s| s.id == "deploy").unwrap();
    assert!(deploy.waiting.as_deref().unwrap().starts_with("at its breakpoint"), "{deploy:?}");
    h.control(Control::Resume { actor: actor("dev") }).unwrap();
    assert!(h.running.contains(&("deploy".to_owned(), 1, false)));
    h.succeed("deploy");
    assert_eq!(h.status(), "succeeded", "no breakpoint before notify");
    h.assert_replay_matches();
}

#[test]
fn stepping_starts_exactly_the_next_ready_steps_and_pauses_again_once_they_finish() {
    let mut h = Harness::unstarted(
        "name: t\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: y\n  - id: c\n    needs: [a, b]\n    run: z\n",
        Map::new(),
    );
    breakpoints(&mut h, &[], true).unwrap();
    h.input(Input::Start);
    // Before the first step: a and b are ready, both held.
    assert_eq!(h.status(), "paused");
    assert!(h.timeline().ends_with("breakpoint before a, b\n"), "{}", h.timeline());
    h.control(Control::Step { actor: actor("dev") }).unwrap();
    assert_eq!(h.running.len(), 2);
    h.succeed("a");
    assert_eq!(h.status(), "running", "b is still under way");
    h.succeed("b");
    assert_eq!(h.status(), "paused");
    assert!(h.running.is_empty());
    assert_eq!(h.execution.paused().unwrap().0.reason.as_deref(), Some("breakpoint before c"));
    h.control(Control::Step { actor: actor("dev") }).unwrap();
    h.succeed("c");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
}

#[test]
fn a_patch_at_a_breakpoint_changes_what_the_next_step_sees_and_is_refused_otherwise() {
    let patch = |step: &str, version: &str| Control::Patch {
        step: Some(step.into()),
        outputs: outputs(json!({ "version": version })),
        inputs: Map::new(),
        actor: actor("dev"),
    };
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: a\n    run: x\n  - id: b\n    needs: [a]\n    set: { seen: \"${{ steps.a.outputs.version }}\" }\n",
    );
    assert!(
        h.control(patch("a", "2.0")).unwrap_err().contains("must be paused"),
        "running: refused"
    );
    breakpoints(&mut h, &["b"], false).unwrap();
    h.succeed_with("a", outputs(json!({ "version": "1.0" })));
    assert_eq!(h.status(), "paused");
    let refused = h.control(patch("b", "3")).unwrap_err();
    assert!(refused.contains("only the outputs of a succeeded step"), "{refused}");
    h.control(patch("a", "2.0")).unwrap();
    assert!(
        h.timeline().contains("patched by dev: a {\"version\":\"2.0\"} {}"),
        "{}",
        h.timeline()
    );
    h.control(Control::Resume { actor: actor("dev") }).unwrap();
    assert_eq!(h.execution.steps()[h.index("b")].outputs["seen"], "2.0");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
}

#[test]
fn a_breakpoint_before_a_step_that_started_is_refused() {
    let mut h = Harness::new(PIPELINE);
    let error = breakpoints(&mut h, &["build"], false).unwrap_err();
    assert_eq!(
        error,
        "step `build` has already started (it is running); a breakpoint before it would never be reached"
    );
    assert!(breakpoints(&mut h, &["nope"], false).unwrap_err().contains("has no step `nope`"));
}

#[test]
fn workflow_outputs_are_computed_when_the_execution_succeeds_and_recorded_with_its_end() {
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: build\n    run: b\n  - id: tag\n    needs: [build]\n    set: { name: \"v${{ steps.build.outputs.version }}\" }\noutputs:\n  tag: ${{ steps.tag.outputs.name }}\n  built: ${{ steps.build.status == 'succeeded' }}\n",
    );
    h.succeed_with("build", outputs(json!({ "version": "1.2" })));
    assert_eq!(h.status(), "succeeded");
    assert_eq!(
        serde_json::Value::Object(h.execution.outputs().clone()),
        json!({ "tag": "v1.2", "built": true })
    );
    h.assert_replay_matches();
}

#[test]
fn an_output_that_cannot_be_computed_fails_the_execution_with_the_reason() {
    let mut h = Harness::new(
        "name: t\nsteps:\n  - id: build\n    run: b\noutputs:\n  version: ${{ steps.build.outputs.version }}\n",
    );
    h.succeed("build");
    assert_eq!(h.status(), "failed");
    let error = h.execution.outcome().unwrap().1.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Expression);
    assert!(error.message.starts_with("workflow output `version`: "), "{}", error.message);
    assert!(h.execution.outputs().is_empty());
    // A failed execution has no outputs to promise.
    let mut h = Harness::new("name: t\nsteps:\n  - id: build\n    run: b\noutputs:\n  x: 1\n");
    h.fail("build", ErrorClass::Failure);
    assert!(h.execution.outputs().is_empty());
}

#[test]
fn a_templated_step_reads_its_template_inputs_from_with_and_defaults() {
    let mut h = Harness::with_inputs(
        "name: t\ninputs:\n  env: { type: string, default: prod }\ntemplates:\n  tag:\n    inputs:\n      base: { type: string, required: true }\n      count: { type: integer, default: 3 }\n    set: { tag: \"${{ inputs.base }}-${{ inputs.count }}\" }\nsteps:\n  - id: build\n    run: b\n  - id: named\n    needs: [build]\n    uses: tag\n    with: { base: \"${{ inputs.env }}-${{ steps.build.outputs.version }}\" }\n  - id: counted\n    needs: [build]\n    uses: tag\n    with: { base: x, count: \"${{ steps.build.outputs.n }}\" }\n",
        outputs(json!({ "env": "prod" })),
    );
    h.succeed_with("build", outputs(json!({ "version": "1.2", "n": "many" })));
    let named = &h.execution.steps()[h.index("named")];
    assert_eq!(named.outputs.get("tag"), Some(&json!("prod-1.2-3")), "{named:?}\n{}", h.timeline());
    // A value of the wrong type for the template fails the step, saying which input.
    assert_eq!(h.step_status("counted"), "failed");
    let error = h.execution.steps()[h.index("counted")].error.clone().unwrap();
    assert_eq!(error.class, ErrorClass::Expression);
    assert!(
        error.message.contains("`with.count` must be of type integer for template `tag`"),
        "{}",
        error.message
    );
    h.assert_replay_matches();
}
