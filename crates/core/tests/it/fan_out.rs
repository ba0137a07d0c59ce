//! Fan-out (`for_each`, `matrix`): items are instances of one step with their own attempts;
//! the step ends from its items under `tolerate`, and the execution's strategies, rollback,
//! cancel, escalation and recovery treat each item as a unit of work.

use std::time::Duration;

use expect_test::{Expect, expect};
use serde_json::{Value, json};
use wayline_core::execution::{Control, StepState};
use wayline_core::report::Report;
use wayline_journal::{Decision, ErrorClass, StopReason};

use crate::harness::{Harness, actor, outputs};

const S: Duration = Duration::from_secs(1);

fn check(harness: &Harness, expect: Expect) {
    harness.assert_replay_matches();
    harness.assert_history_folds();
    expect.assert_eq(&harness.timeline());
}

/// The attempts each item of the `index`-th step made, in item order.
fn item_attempts(h: &Harness, index: usize) -> Vec<u32> {
    Report::new(&h.execution).steps[index].items.iter().map(|item| item.attempts).collect()
}

/// The items in flight, as the harness names them (`deploy[3]`).
fn running(h: &Harness) -> Vec<String> {
    h.running.iter().filter(|r| !r.2).map(|r| r.0.clone()).collect()
}

#[test]
fn items_come_from_an_upstream_list_run_at_most_max_parallel_and_their_outputs_flow_on() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: list
    run: list
  - id: shard
    needs: [list]
    for_each: ${{ steps.list.outputs.shards }}
    max_parallel: 2
    run: process ${{ item }} ${{ index }}
  - id: total
    needs: [shard]
    set:
      sizes: ${{ steps.shard.outputs.map(o, o.size) }}
      items: ${{ steps.shard.items.map(i, i.item) }}
      status: ${{ steps.shard.status }}
"#,
    );
    h.succeed_with("list", outputs(json!({ "shards": ["a", "b", "c"] })));
    assert_eq!(running(&h), ["shard[0]", "shard[1]"], "max_parallel: 2");
    assert_eq!(h.step_status("shard"), "running");
    h.succeed_with("shard[1]", outputs(json!({ "size": 20 })));
    assert_eq!(running(&h), ["shard[0]", "shard[2]"], "the freed slot goes to the next item");
    h.succeed_with("shard[2]", outputs(json!({ "size": 30 })));
    assert_eq!(h.step_status("shard"), "running", "item 0 still runs");
    h.succeed_with("shard[0]", outputs(json!({ "size": 10 })));
    assert_eq!(h.status(), "succeeded");
    // Outputs are in item order, whatever order the items ended in.
    let report = Report::new(&h.execution);
    let total = report.steps.iter().find(|s| s.id == "total").unwrap();
    assert_eq!(
        total.outputs,
        json!({ "sizes": [10, 20, 30], "items": ["a", "b", "c"], "status": "succeeded" })
    );
    let shard = report.steps.iter().find(|s| s.id == "shard").unwrap();
    assert_eq!(shard.outputs, json!([{ "size": 10 }, { "size": 20 }, { "size": 30 }]));
    assert_eq!(shard.items.len(), 3);
    assert_eq!(shard.items[2].item, json!("c"));
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] start list#1
            [      0ms] succeeded list#1 {"shards":["a","b","c"]}
            [      0ms] fanned out shard: ["a","b","c"]
            [      0ms] start shard[0]#1
            [      0ms] start shard[1]#1
            [      0ms] succeeded shard[1]#1 {"size":20}
            [      0ms] start shard[2]#1
            [      0ms] succeeded shard[2]#1 {"size":30}
            [      0ms] succeeded shard[0]#1 {"size":10}
            [      0ms] start total#1
            [      0ms] succeeded total#1 {"sizes":[10,20,30],"items":["a","b","c"],"status":"succeeded"}
            [      0ms] finished succeeded
        "#]],
    );
}

#[test]
fn a_matrix_is_every_combination_with_exclude_and_include_in_order() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: test
    matrix:
      os: [linux, mac]
      arch: [x64, arm]
      exclude: [{ os: mac, arch: x64 }]
      include: [{ os: linux, arch: arm, emulated: true }, { os: win, arch: x64 }]
    run: test ${{ item.os }} ${{ item.arch }}
"#,
    );
    assert_eq!(running(&h), ["test[0]", "test[1]", "test[2]", "test[3]"]);
    for item in 0..4 {
        h.succeed(&format!("test[{item}]"));
    }
    assert_eq!(h.status(), "succeeded");
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out test: [{"os":"linux","arch":"x64"},{"os":"linux","arch":"arm","emulated":true},{"os":"mac","arch":"arm"},{"os":"win","arch":"x64"}]
            [      0ms] start test[0]#1
            [      0ms] start test[1]#1
            [      0ms] start test[2]#1
            [      0ms] start test[3]#1
            [      0ms] succeeded test[0]#1
            [      0ms] succeeded test[1]#1
            [      0ms] succeeded test[2]#1
            [      0ms] succeeded test[3]#1
            [      0ms] finished succeeded
        "#]],
    );
}

#[test]
fn tolerated_failures_keep_the_step_succeeding_and_one_more_fails_it_and_stops_the_rest() {
    let yaml = r#"
name: fan
steps:
  - id: deploy
    for_each: [a, b, c, d, e]
    max_parallel: 2
    tolerate: 1
    run: deploy ${{ item }}
  - id: after
    needs: [deploy]
    run: after
"#;
    // One failure of five is tolerated.
    let mut h = Harness::new(yaml);
    h.fail("deploy[0]", ErrorClass::Failure);
    for item in 1..5 {
        h.succeed(&format!("deploy[{item}]"));
    }
    assert_eq!(h.step_status("deploy"), "succeeded");
    h.succeed("after");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();

    // A second one fails the step: under fail_fast the running item is cancelled and the
    // items not started yet are skipped.
    let mut h = Harness::new(yaml);
    h.fail("deploy[0]", ErrorClass::Failure);
    assert_eq!(running(&h), ["deploy[1]", "deploy[2]"]);
    h.fail("deploy[2]", ErrorClass::Failure);
    assert_eq!(h.cancels, [("deploy[1]".to_owned(), 1)]);
    assert_eq!(h.step_status("deploy"), "running", "until its last item is back");
    h.cancelled("deploy[1]");
    assert_eq!(h.step_status("deploy"), "failed");
    assert_eq!(h.status(), "failed");
    let report = Report::new(&h.execution);
    let deploy = report.steps.iter().find(|s| s.id == "deploy").unwrap();
    let statuses: Vec<String> = deploy.items.iter().map(|i| i.status.to_string()).collect();
    assert_eq!(statuses, ["failed", "cancelled", "failed", "skipped", "skipped"]);
    assert_eq!(
        deploy.error.as_ref().unwrap().message,
        "2 of 5 items failed, 1 tolerated: deploy[0]: deploy[0] broke"
    );
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out deploy: ["a","b","c","d","e"]
            [      0ms] start deploy[0]#1
            [      0ms] start deploy[1]#1
            [      0ms] failed deploy[0]#1 failure (terminal)
            [      0ms] start deploy[2]#1
            [      0ms] failed deploy[2]#1 failure (terminal)
            [      0ms] stopping (Failed, rollback: false)
            [      0ms] skipped deploy: the execution stopped after a failure
            [      0ms] skipped after: the execution stopped after a failure
            [      0ms] cancelled deploy[1]#1
            [      0ms] finished failed: step `deploy` failed: 2 of 5 items failed, 1 tolerated: deploy[0]: deploy[0] broke
        "#]],
    );
}

#[test]
fn a_percentage_tolerates_that_share_of_the_items_rounded_down() {
    let yaml = r#"
name: fan
on_failure: continue
steps:
  - id: probe
    for_each: [1, 2, 3, 4, 5, 6, 7]
    tolerate: 30%
    run: probe ${{ item }}
"#;
    // 30% of 7 is 2.1: two failures are tolerated, a third is not.
    for (failures, status) in [(2, "succeeded"), (3, "failed")] {
        let mut h = Harness::new(yaml);
        for item in 0..7 {
            let label = format!("probe[{item}]");
            if item < failures {
                h.fail(&label, ErrorClass::Failure);
            } else {
                h.succeed(&label);
            }
        }
        assert_eq!(h.step_status("probe"), status, "{failures} failures");
        assert_eq!(h.status(), status);
        h.assert_replay_matches();
    }
}

#[test]
fn an_item_retries_on_its_own_with_its_own_budget_while_the_others_go_on() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: fetch
    for_each: [a, b]
    retry: { max_attempts: 3, backoff: exponential, delay: 1s }
    run: fetch ${{ item }}
"#,
    );
    h.fail("fetch[1]", ErrorClass::Failure);
    assert_eq!(running(&h), ["fetch[0]"]);
    assert_eq!(h.step_status("fetch"), "running");
    h.advance(S);
    h.fail("fetch[1]", ErrorClass::Failure);
    h.succeed("fetch[0]");
    h.advance(2 * S);
    h.succeed("fetch[1]");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(item_attempts(&h, 0), [1, 3]);
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] fanned out fetch: ["a","b"]
        [      0ms] start fetch[0]#1
        [      0ms] start fetch[1]#1
        [      0ms] failed fetch[1]#1 failure
        [      0ms] retry fetch[1]#2 in 1000ms
        [   1000ms] start fetch[1]#2
        [   1000ms] failed fetch[1]#2 failure
        [   1000ms] retry fetch[1]#3 in 2000ms
        [   1000ms] succeeded fetch[0]#1
        [   3000ms] start fetch[1]#3
        [   3000ms] succeeded fetch[1]#3
        [   3000ms] finished succeeded
    "#]],
    );
}

#[test]
fn an_items_if_skips_it_alone_and_sees_its_item() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: deploy
    for_each: [{ region: eu, on: true }, { region: us, on: false }]
    if: ${{ item.on }}
    run: deploy ${{ item.region }}
"#,
    );
    assert_eq!(running(&h), ["deploy[0]"]);
    h.succeed("deploy[0]");
    assert_eq!(h.step_status("deploy"), "succeeded");
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out deploy: [{"region":"eu","on":true},{"region":"us","on":false}]
            [      0ms] start deploy[0]#1
            [      0ms] skipped deploy[1]: `if: item.on` is false
            [      0ms] succeeded deploy[0]#1
            [      0ms] finished succeeded
        "#]],
    );
}

#[test]
fn rollback_compensates_the_items_that_ran_one_at_a_time_last_first() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: rollback
steps:
  - id: deploy
    for_each: [eu, us, ap]
    run: deploy ${{ item }}
    compensate:
      run: undeploy ${{ item }}
  - id: verify
    needs: [deploy]
    run: verify
"#,
    );
    for item in [2, 0, 1] {
        h.succeed(&format!("deploy[{item}]"));
    }
    h.fail("verify", ErrorClass::Failure);
    let compensating: Vec<&str> = h.running.iter().filter(|r| r.2).map(|r| r.0.as_str()).collect();
    assert_eq!(compensating, ["deploy[2]"], "the last item first, alone");
    assert_eq!(h.step_status("deploy"), "compensating");
    h.compensated("deploy[2]", true);
    h.compensated("deploy[1]", true);
    h.compensated("deploy[0]", true);
    assert_eq!(h.status(), "rolled_back");
    assert_eq!(h.step_status("deploy"), "compensated");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] fanned out deploy: ["eu","us","ap"]
        [      0ms] start deploy[0]#1
        [      0ms] start deploy[1]#1
        [      0ms] start deploy[2]#1
        [      0ms] succeeded deploy[2]#1
        [      0ms] succeeded deploy[0]#1
        [      0ms] succeeded deploy[1]#1
        [      0ms] start verify#1
        [      0ms] failed verify#1 failure (terminal)
        [      0ms] stopping (Failed, rollback: true)
        [      0ms] rollback started
        [      0ms] compensate deploy[2]#1
        [      0ms] compensated deploy[2]#1
        [      0ms] compensate deploy[1]#1
        [      0ms] compensated deploy[1]#1
        [      0ms] compensate deploy[0]#1
        [      0ms] compensated deploy[0]#1
        [      0ms] finished rolled_back: step `verify` failed: verify broke
    "#]],
    );
}

#[test]
fn a_failing_item_under_rollback_compensates_its_finished_siblings() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: rollback
steps:
  - id: deploy
    for_each: [eu, us, ap]
    max_parallel: 2
    run: deploy ${{ item }}
    compensate:
      run: undeploy ${{ item }}
"#,
    );
    h.succeed("deploy[0]");
    h.fail("deploy[1]", ErrorClass::Failure);
    // deploy[2] had started when deploy[1] failed: it is cancelled, then nothing to undo.
    assert_eq!(h.cancels, [("deploy[2]".to_owned(), 1)]);
    h.cancelled("deploy[2]");
    h.compensated("deploy[0]", true);
    assert_eq!(h.status(), "rolled_back");
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] fanned out deploy: ["eu","us","ap"]
        [      0ms] start deploy[0]#1
        [      0ms] start deploy[1]#1
        [      0ms] succeeded deploy[0]#1
        [      0ms] start deploy[2]#1
        [      0ms] failed deploy[1]#1 failure (terminal)
        [      0ms] stopping (Failed, rollback: true)
        [      0ms] cancelled deploy[2]#1
        [      0ms] rollback started
        [      0ms] compensate deploy[0]#1
        [      0ms] compensated deploy[0]#1
        [      0ms] finished rolled_back: step `deploy` failed: 1 of 3 items failed, 0 tolerated: deploy[1]: deploy[1] broke
    "#]],
    );
}

#[test]
fn continue_lets_independent_steps_run_and_skips_those_that_need_the_failed_fan_out() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: continue
steps:
  - id: deploy
    for_each: [eu, us]
    run: deploy ${{ item }}
  - id: notify
    needs: [deploy]
    run: notify
  - id: other
    run: other
"#,
    );
    h.fail("deploy[0]", ErrorClass::Failure);
    // Past its tolerance the step has failed: its other items stop, whatever the strategy.
    assert_eq!(h.cancels, [("deploy[1]".to_owned(), 1)]);
    assert_eq!(h.status(), "running", "continue: no stop");
    assert_eq!(running(&h), ["deploy[1]", "other"]);
    h.cancelled("deploy[1]");
    assert_eq!(h.step_status("deploy"), "failed");
    assert_eq!(h.step_status("notify"), "skipped");
    h.succeed("other");
    assert_eq!(h.status(), "failed");
    h.assert_replay_matches();
    h.assert_history_folds();
}

#[test]
fn past_the_tolerance_under_continue_an_item_waiting_for_a_retry_is_skipped() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: continue
steps:
  - id: d
    for_each: [a, b]
    retry: { max_attempts: 2, delay: 10s }
    run: d
"#,
    );
    h.fail("d[0]", ErrorClass::Failure);
    assert_eq!(h.step_status("d"), "running", "d[0] waits for its retry");
    h.fail("d[1]", ErrorClass::Fatal);
    assert_eq!(h.step_status("d"), "failed", "d[0] is not retried");
    assert_eq!(h.status(), "failed");
    h.advance(10 * S);
    assert!(h.running.is_empty(), "the retry timer starts nothing");
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out d: ["a","b"]
            [      0ms] start d[0]#1
            [      0ms] start d[1]#1
            [      0ms] failed d[0]#1 failure
            [      0ms] retry d[0]#2 in 10000ms
            [      0ms] failed d[1]#1 fatal (terminal)
            [      0ms] skipped d[0]: not run again: 1 item failed, more than the 0 tolerated
            [      0ms] finished failed: step failed: d
        "#]],
    );
}

#[test]
fn cancel_stops_running_items_and_skips_those_not_started() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: deploy
    for_each: [a, b, c, d]
    max_parallel: 2
    run: deploy ${{ item }}
"#,
    );
    h.succeed("deploy[0]");
    h.control(Control::Cancel { rollback: false, actor: actor("ops") }).unwrap();
    assert_eq!(h.cancels, [("deploy[1]".to_owned(), 1), ("deploy[2]".to_owned(), 1)]);
    h.cancelled("deploy[1]");
    h.cancelled("deploy[2]");
    assert_eq!(h.status(), "cancelled");
    assert_eq!(h.step_status("deploy"), "cancelled");
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out deploy: ["a","b","c","d"]
            [      0ms] start deploy[0]#1
            [      0ms] start deploy[1]#1
            [      0ms] succeeded deploy[0]#1
            [      0ms] start deploy[2]#1
            [      0ms] stopping (Cancelled, rollback: false)
            [      0ms] cancelled deploy: the execution was cancelled
            [      0ms] cancelled deploy[1]#1
            [      0ms] cancelled deploy[2]#1
            [      0ms] finished cancelled: cancelled by ops
        "#]],
    );
}

#[test]
fn an_escalated_fan_out_retried_by_decision_runs_only_the_items_that_did_not_succeed() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: escalate
steps:
  - id: deploy
    for_each: [a, b, c]
    run: deploy ${{ item }}
"#,
    );
    h.succeed("deploy[0]");
    h.fail("deploy[1]", ErrorClass::Failure);
    h.succeed("deploy[2]");
    assert_eq!(h.step_status("deploy"), "escalated");
    assert!(h.running.is_empty());
    h.decide("deploy", Decision::Retry).unwrap();
    assert_eq!(running(&h), ["deploy[1]"]);
    h.succeed("deploy[1]");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(item_attempts(&h, 0), [1, 2, 1]);
    check(
        &h,
        expect![[r#"
        [      0ms] started
        [      0ms] fanned out deploy: ["a","b","c"]
        [      0ms] start deploy[0]#1
        [      0ms] start deploy[1]#1
        [      0ms] start deploy[2]#1
        [      0ms] succeeded deploy[0]#1
        [      0ms] failed deploy[1]#1 failure (terminal)
        [      0ms] succeeded deploy[2]#1
        [      0ms] escalated deploy
        [      0ms] decided deploy: retry by ops
        [      0ms] start deploy[1]#2
        [      0ms] succeeded deploy[1]#2
        [      0ms] finished succeeded
    "#]],
    );
}

#[test]
fn outputs_of_a_fan_out_cannot_be_given_by_hand() {
    let mut h = Harness::new(
        "name: fan\non_failure: escalate\nsteps:\n  - id: d\n    for_each: [a]\n    run: d\n",
    );
    h.fail("d[0]", ErrorClass::Failure);
    let refused = h.control(Control::Decide {
        step: "d".into(),
        decision: Decision::Skip,
        outputs: outputs(json!({ "url": "x" })),
        actor: actor("ops"),
    });
    assert!(refused.unwrap_err().contains("fans out"));
    assert_eq!(h.step_status("d"), "escalated", "nothing changed");
}

#[test]
fn after_a_crash_items_in_flight_are_lost_and_run_again_and_finished_ones_stay_done() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: deploy
    for_each: [a, b, c]
    max_parallel: 2
    retry: { max_attempts: 2, delay: 1s }
    run: deploy ${{ item }}
"#,
    );
    h.succeed("deploy[0]");
    assert_eq!(running(&h), ["deploy[1]", "deploy[2]"]);
    h.crash_and_recover();
    h.advance(Duration::ZERO);
    assert_eq!(running(&h), ["deploy[1]", "deploy[2]"], "both again, at once");
    h.succeed("deploy[1]");
    h.succeed("deploy[2]");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(item_attempts(&h, 0), [1, 2, 2]);
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out deploy: ["a","b","c"]
            [      0ms] start deploy[0]#1
            [      0ms] start deploy[1]#1
            [      0ms] succeeded deploy[0]#1
            [      0ms] start deploy[2]#1
            [      0ms] recovered by new-owner
            [      0ms] failed deploy[1]#1 lost
            [      0ms] retry deploy[1]#2 in 0ms
            [      0ms] failed deploy[2]#1 lost
            [      0ms] retry deploy[2]#2 in 0ms
            [      0ms] start deploy[1]#2
            [      0ms] start deploy[2]#2
            [      0ms] succeeded deploy[1]#2
            [      0ms] succeeded deploy[2]#2
            [      0ms] finished succeeded
        "#]],
    );
}

#[test]
fn items_that_are_not_a_list_or_too_many_fail_the_step_as_an_expression_error() {
    let yaml = r#"
name: fan
steps:
  - id: list
    run: list
  - id: each
    needs: [list]
    for_each: ${{ steps.list.outputs.items }}
    retry: { max_attempts: 5 }
    run: echo ${{ item }}
"#;
    let too_many: Vec<Value> = (0..10_001).map(|n| json!(n)).collect();
    for (items, message) in [
        (json!("eu,us"), "`for_each` must give a list or an object, but it gave a string"),
        (json!(too_many), "10001 items"),
    ] {
        let mut h = Harness::new(yaml);
        h.succeed_with("list", outputs(json!({ "items": items })));
        assert_eq!(h.status(), "failed");
        let run = &h.execution.steps()[h.index("each")];
        assert_eq!(run.state, StepState::Failed);
        let error = run.error.as_ref().unwrap();
        assert_eq!(error.class, ErrorClass::Expression, "never retried");
        assert!(error.message.contains(message), "{}", error.message);
        assert!(h.running.is_empty());
        h.assert_replay_matches();
    }
}

#[test]
fn an_empty_list_succeeds_at_once_with_no_items() {
    let mut h = Harness::new(
        r#"
name: fan
steps:
  - id: list
    run: list
  - id: each
    needs: [list]
    for_each: ${{ steps.list.outputs.items }}
    run: echo ${{ item }}
  - id: after
    needs: [each]
    set: { n: "${{ size(steps.each.outputs) }}" }
"#,
    );
    h.succeed_with("list", outputs(json!({ "items": [] })));
    assert_eq!(h.step_status("each"), "succeeded");
    assert_eq!(h.status(), "succeeded");
    let report = Report::new(&h.execution);
    assert_eq!(report.steps[2].outputs, json!({ "n": 0 }));
    h.assert_replay_matches();
}

#[test]
fn a_timeout_stop_reaches_every_item() {
    let mut h = Harness::new(
        "name: fan\ntimeout: 10s\nsteps:\n  - id: d\n    for_each: [a, b]\n    run: d\n",
    );
    h.advance(10 * S);
    assert_eq!(h.cancels.len(), 2);
    h.cancelled("d[0]");
    h.cancelled("d[1]");
    assert_eq!(h.status(), "failed");
    let stopping = h.journal.iter().any(|e| {
        matches!(&e.kind, wayline_journal::EventKind::Stopping { reason: StopReason::Timeout, .. })
    });
    assert!(stopping);
    h.assert_replay_matches();
}

#[test]
fn items_count_against_the_group_and_workflow_caps_as_steps_do() {
    let mut h = Harness::new(
        r#"
name: fan
max_parallel: 3
groups:
  deploys: { max_parallel: 2 }
steps:
  - id: deploy
    group: deploys
    for_each: [a, b, c, d]
    run: deploy ${{ item }}
  - id: other
    group: deploys
    run: other
  - id: free
    run: free
"#,
    );
    // The group allows two of deploy's items and other together; the workflow three in all.
    assert_eq!(running(&h), ["deploy[0]", "deploy[1]", "free"]);
    h.succeed("free");
    assert_eq!(running(&h), ["deploy[0]", "deploy[1]"], "the group is full");
    h.succeed("deploy[0]");
    assert_eq!(running(&h), ["deploy[1]", "deploy[2]"], "items in order, before `other`");
    h.succeed("deploy[1]");
    h.succeed("deploy[2]");
    h.succeed("deploy[3]");
    h.succeed("other");
    assert_eq!(h.status(), "succeeded");
    assert_eq!(h.peak, 3);
    h.assert_replay_matches();
}

#[test]
fn a_rollback_passes_a_fan_out_whose_items_were_all_skipped() {
    let mut h = Harness::new(
        r#"
name: fan
on_failure: rollback
steps:
  - id: first
    run: first
    compensate: { run: undo-first }
  - id: deploy
    needs: [first]
    for_each: [a, b]
    if: ${{ item == 'z' }}
    run: deploy
    compensate: { run: undeploy }
  - id: verify
    needs: [deploy]
    run: verify
"#,
    );
    h.succeed("first");
    assert_eq!(h.step_status("deploy"), "succeeded", "no item ran, none failed");
    h.fail("verify", ErrorClass::Failure);
    // Nothing of deploy's to undo: first's compensation follows at once.
    h.compensated("first", true);
    assert_eq!(h.status(), "rolled_back");
    h.assert_replay_matches();
}

#[test]
fn an_item_cancelled_from_outside_leaves_its_step_cancelled_not_succeeded() {
    let mut h = Harness::new(
        "name: fan\non_failure: continue\nsteps:\n  - id: d\n    for_each: [a, b]\n    run: d\n",
    );
    h.succeed("d[0]");
    h.cancelled("d[1]");
    assert_eq!(h.step_status("d"), "cancelled");
    // As a step whose only attempt was cancelled from outside: no failure, no stop.
    assert!(h.finished);
    h.assert_replay_matches();
}

#[test]
fn a_rerun_runs_again_only_the_items_that_did_not_succeed_and_from_the_step_all_of_them() {
    let yaml = r#"
name: fan
steps:
  - id: deploy
    for_each: [a, b, c]
    max_parallel: 1
    run: deploy ${{ item }}
  - id: after
    needs: [deploy]
    set: { n: "${{ size(steps.deploy.outputs.filter(o, o != null)) }}" }
"#;
    let mut h = Harness::new(yaml);
    h.succeed_with("deploy[0]", outputs(json!({ "v": 0 })));
    h.fail("deploy[1]", ErrorClass::Failure);
    assert_eq!(h.status(), "failed");
    h.rerun(&[], Default::default()).unwrap();
    assert_eq!(running(&h), ["deploy[1]"], "deploy[0] keeps its result");
    h.succeed_with("deploy[1]", outputs(json!({ "v": 1 })));
    h.succeed_with("deploy[2]", outputs(json!({ "v": 2 })));
    assert_eq!(h.status(), "succeeded");
    let report = Report::new(&h.execution);
    assert_eq!(report.steps[0].outputs, json!([{ "v": 0 }, { "v": 1 }, { "v": 2 }]));
    assert_eq!(report.steps[1].outputs, json!({ "n": 3 }));
    assert_eq!(item_attempts(&h, 0), [1, 2, 1]);
    check(
        &h,
        expect![[r#"
            [      0ms] started
            [      0ms] fanned out deploy: ["a","b","c"]
            [      0ms] start deploy[0]#1
            [      0ms] succeeded deploy[0]#1 {"v":0}
            [      0ms] start deploy[1]#1
            [      0ms] failed deploy[1]#1 failure (terminal)
            [      0ms] stopping (Failed, rollback: false)
            [      0ms] skipped after: the execution stopped after a failure
            [      0ms] finished failed: step `deploy` failed: 1 of 3 items failed, 0 tolerated: deploy[1]: deploy[1] broke
            [      0ms] rerun by ops: deploy, after (keeping the items of deploy)
            [      0ms] start deploy[1]#2
            [      0ms] succeeded deploy[1]#2 {"v":1}
            [      0ms] start deploy[2]#1
            [      0ms] succeeded deploy[2]#1 {"v":2}
            [      0ms] start after#1
            [      0ms] succeeded after#1 {"n":3}
            [      0ms] finished succeeded
        "#]],
    );

    // From the step itself: every item again, the items evaluated afresh.
    h.rerun(&["deploy"], Default::default()).unwrap();
    assert_eq!(running(&h), ["deploy[0]"]);
    for item in 0..3 {
        h.succeed(&format!("deploy[{item}]"));
    }
    assert_eq!(h.status(), "succeeded");
    let fanned = h.timeline().matches("fanned out deploy").count();
    assert_eq!(fanned, 2, "{}", h.timeline());
    h.assert_replay_matches();
    h.assert_history_folds();
}

#[test]
fn a_pause_lets_running_items_finish_and_starts_no_new_one_until_resumed() {
    let mut h = Harness::new(
        "name: fan\nsteps:\n  - id: d\n    for_each: [a, b, c, d]\n    max_parallel: 2\n    run: d\n",
    );
    h.control(Control::Pause { actor: actor("ops"), until: None }).unwrap();
    h.succeed("d[0]");
    h.succeed("d[1]");
    assert!(h.running.is_empty(), "nothing new starts while paused: {:?}", h.running);
    assert_eq!(h.status(), "paused");
    h.control(Control::Resume { actor: actor("ops") }).unwrap();
    assert_eq!(running(&h), ["d[2]", "d[3]"]);
    h.succeed("d[2]");
    h.succeed("d[3]");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
    h.assert_history_folds();
}

#[test]
fn stepping_past_a_breakpoint_before_a_fan_out_runs_all_its_items_then_pauses_again() {
    let mut h = Harness::new(
        "name: fan\nsteps:\n  - id: d\n    for_each: [a, b, c]\n    max_parallel: 2\n    run: d\n  - id: e\n    needs: [d]\n    run: e\n",
    );
    h.control(Control::Break { steps: vec![], every: true, actor: actor("dev") }).unwrap();
    // `every` holds before steps not started yet: d had already fanned out at the start.
    h.succeed("d[0]");
    h.succeed("d[1]");
    h.succeed("d[2]");
    assert_eq!(h.status(), "paused");
    assert!(h.timeline().ends_with("breakpoint before e\n"), "{}", h.timeline());
    let mut h = Harness::unstarted(
        "name: fan\nsteps:\n  - id: d\n    for_each: [a, b, c]\n    max_parallel: 2\n    run: d\n  - id: e\n    needs: [d]\n    run: e\n",
        Default::default(),
    );
    h.control(Control::Break { steps: vec!["d".into()], every: false, actor: actor("dev") })
        .unwrap();
    h.input(wayline_core::execution::Input::Start);
    assert_eq!(h.status(), "paused");
    assert!(h.running.is_empty(), "held before it fans out");
    h.control(Control::Step { actor: actor("dev") }).unwrap();
    assert_eq!(running(&h), ["d[0]", "d[1]"]);
    h.succeed("d[0]");
    assert_eq!(running(&h), ["d[1]", "d[2]"], "the released step's items go on");
    h.succeed("d[1]");
    h.succeed("d[2]");
    assert_eq!(h.status(), "paused", "stepping pauses again before e");
    h.control(Control::Resume { actor: actor("dev") }).unwrap();
    h.succeed("e");
    assert_eq!(h.status(), "succeeded");
    h.assert_replay_matches();
    h.assert_history_folds();
}
