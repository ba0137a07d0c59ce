//! Fan-out through the binary: items rendered into real processes (hostile ones too), rolled
//! back last first with their own `item`, logged and shown per item, and resumed after a
//! `kill -9` in the middle without running a finished item again.

use std::collections::HashMap;

use serde_json::Value;

use crate::durable::{Sandbox, start, wait_for_line};

/// `wayline run --json` of `flow` in the sandbox, on its database.
fn run(sandbox: &Sandbox, flow: &str, args: &[&str]) -> (i32, Value, String) {
    let path = sandbox.write("flow.yaml", flow);
    let output = sandbox.output(&[&["run", path.to_str().unwrap(), "--json"], args].concat());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("--json prints one JSON object ({error}); {stderr}"));
    (output.status.code().expect("exited"), report, stderr)
}

#[test]
fn items_are_data_in_the_shell_and_roll_back_last_first_with_their_own_item() {
    let sandbox = Sandbox::new();
    let flow = r#"
name: fan
on_failure: rollback
inputs:
  regions: { type: array, required: true }
steps:
  - id: deploy
    for_each: ${{ inputs.regions }}
    max_parallel: 1
    run: printf '%s\n' "${{ index }}:${{ item }}" >> deployed.txt && echo "region=${{ item }}" >> "$WAYLINE_OUTPUT"
    compensate:
      run: printf '%s\n' ${{ item }} >> undone.txt
  - id: verify
    needs: [deploy]
    run: echo "verifying ${{ steps.deploy.outputs.size() }} regions" && exit 4
"#;
    let evil = r#"eu; touch pwned $(touch pwned2)"#;
    let regions = serde_json::json!(["us", evil, "ap"]).to_string();
    let (code, report, stderr) = run(&sandbox, flow, &["-i", &format!("regions={regions}")]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["status"], "rolled_back");
    // One at a time, in item order (max_parallel: 1), each value one word.
    assert_eq!(sandbox.read("deployed.txt"), format!("0:us\n1:{evil}\n2:ap\n"));
    // Compensated last item first, each with its own item.
    assert_eq!(sandbox.read("undone.txt"), format!("ap\n{evil}\nus\n"));
    for file in ["pwned", "pwned2"] {
        assert!(!sandbox.path(file).exists(), "an item ran as shell code ({file})");
    }
    let deploy = &report["steps"][0];
    assert_eq!(deploy["status"], "compensated");
    assert_eq!(deploy["outputs"][1]["region"], evil);
    let items: Vec<&str> =
        deploy["items"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(items, ["compensated", "compensated", "compensated"]);
    // Progress, logs and events name the item.
    assert!(stderr.contains("deploy[2]: compensated"), "{stderr}");
    assert!(stderr.contains("verify | verifying 3 regions"), "{stderr}");
    let id = report["id"].as_str().unwrap();
    let logs = sandbox.output(&["logs", id, "deploy"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    let events = sandbox.events(id);
    let subjects: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "io.serverlessworkflow.task.started.v1")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(&subjects[..3], ["deploy[0]", "deploy[1]", "deploy[2]"]);
    let fanned = events.iter().find(|e| e["type"] == "dev.wayline.task.fanned_out.v1");
    assert_eq!(fanned.expect("a fanned_out event")["data"]["items"][1], evil);
    // `show` counts the items and lists those that did not succeed.
    let shown = sandbox.output(&["show", id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("items: 3 compensated"), "{shown}\n{logs}");
}

#[test]
fn a_matrix_past_its_tolerance_fails_naming_the_items_and_plan_shows_the_count() {
    let sandbox = Sandbox::new();
    let flow = r#"
name: matrix
steps:
  - id: test
    matrix:
      os: [linux, mac, win]
      v: [1, 2]
      exclude: [{ os: win, v: 1 }]
    tolerate: 20%
    max_parallel: 1
    run: echo "on ${{ item.os }} v${{ item.v }}" && test ${{ item.os }} = linux
"#;
    let path = sandbox.write("flow.yaml", flow);
    let plan = sandbox.output(&["plan", path.to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("matrix     5 items, 1 at a time, tolerates 20% of the items failing"),
        "{plan}"
    );

    let (code, report, stderr) = run(&sandbox, flow, &[]);
    assert_eq!(code, 1, "{stderr}");
    let message = report["error"]["message"].as_str().unwrap();
    // 20% of 5 is one: mac v1 is tolerated, mac v2 is one too many, win v2 never runs.
    assert_eq!(
        message,
        "step `test` failed: 2 of 5 items failed, 1 tolerated: test[2]: exited with code 1"
    );
    let statuses: Vec<&str> = report["steps"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "failed", "failed", "skipped"]);
    let id = report["id"].as_str().unwrap();
    let logs = sandbox.output(&["logs", id]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("test[0]#1 | on linux v1\n"), "{logs}");
    assert!(logs.contains("test[3]#1 | on mac v2\n"), "{logs}");
    assert!(!logs.contains("win"), "{logs}");

    // A rerun keeps the items that succeeded and runs the others again.
    let rerun = sandbox.output(&["rerun", id, "--json"]);
    assert_eq!(rerun.status.code(), Some(1), "{}", String::from_utf8_lossy(&rerun.stderr));
    let logs = sandbox.output(&["logs", id]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("test[2]#2 | on mac v1\n"), "{logs}");
    assert!(!logs.contains("test[0]#2") && !logs.contains("test[1]#2"), "{logs}");
}

const SLOW_ITEMS: &str = r#"
name: slow
steps:
  - id: each
    for_each: [0, 1, 2, 3, 4, 5]
    max_parallel: 2
    run: sleep 0.3 && echo ${{ item }} >> effects.txt
"#;

#[test]
fn killed_mid_fan_out_and_resumed_no_finished_item_runs_again() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", SLOW_ITEMS);
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "each[1]: succeeded");
    let _ = child.kill(); // SIGKILL, with items in flight
    let _ = child.wait();
    let committed: Vec<String> = sandbox
        .events(&id)
        .iter()
        .filter(|e| e["type"] == "io.serverlessworkflow.task.completed.v1")
        .map(|e| e["subject"].as_str().unwrap().to_owned())
        .collect();
    assert!(!committed.is_empty() && committed.len() < 6, "{committed:?}");
    // The dead owner's step processes may still append their line (the new owner stops them
    // as it takes over): that only adds to items not committed, which the checks allow.
    let resumed = sandbox.output(&["resume", &id, "--json"]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let report = sandbox.report(&id);
    assert_eq!(report["status"], "succeeded");
    let effects = sandbox.read("effects.txt");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in effects.lines() {
        *counts.entry(line).or_default() += 1;
    }
    for item in 0..6 {
        let count = counts.get(item.to_string().as_str()).copied().unwrap_or(0);
        assert!(count >= 1, "item {item} never ran: {effects}");
        if committed.contains(&format!("each[{item}]")) {
            assert_eq!(count, 1, "finished item {item} ran again: {effects}");
        }
    }
    let outputs = report["steps"][0]["outputs"].as_array().expect("a list").len();
    assert_eq!(outputs, 6);
}

#[test]
fn inspect_shows_what_an_item_runs_and_names_the_items_there_are() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: slow\nsteps:\n  - id: each\n    for_each: [north, south]\n    run: echo ${{ item }} && sleep 30\n",
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "each[1]: running");
    let inspect = |step: &str| sandbox.output(&["inspect", &id, step, "--json"]);
    let shown = inspect("each[1]");
    let _ = sandbox.output(&["cancel", &id]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["step"], "each[1]");
    assert_eq!(shown["reads"]["item"], "south");
    assert_eq!(shown["reads"]["index"], 1);
    let env = shown["command"]["env"].to_string();
    assert!(env.contains("south") && !env.contains("north"), "{shown:#}");
    // The step itself shows its first item; an item it does not have is named as such.
    let first: Value = serde_json::from_slice(&inspect("each").stdout).expect("JSON");
    assert_eq!(first["reads"]["item"], "north");
    let missing = inspect("each[2]");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("step `each` has 2 items, from each[0] to each[1]; there is no each[2]"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let _ = child.wait();
}

#[test]
fn testing_a_fan_out_step_alone_runs_its_items_over_the_given_list() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"
name: fo
steps:
  - id: list
    set: { l: [x, y] }
  - id: each
    needs: [list]
    for_each: ${{ steps.list.outputs.l }}
    run: echo "n=${{ index }}${{ item }}" >> "$WAYLINE_OUTPUT"
"#,
    );
    let output =
        sandbox.output(&["test", flow.to_str().unwrap(), "each", "-o", r#"list.l=["p","q","r"]"#]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let printed: Value = serde_json::from_slice(&output.stdout).expect("the outputs as JSON");
    let names: Vec<&str> =
        printed.as_array().expect("a list").iter().map(|o| o["n"].as_str().unwrap()).collect();
    assert_eq!(names, ["0p", "1q", "2r"]);
    assert!(stderr.contains("each: 3 items"), "{stderr}");
}

#[test]
fn testing_a_step_after_a_fan_out_takes_its_items_outputs_from_a_list_or_a_past_execution() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"
name: fo
steps:
  - id: each
    for_each: [a, b]
    run: echo "v=${{ item }}" >> "$WAYLINE_OUTPUT"
  - id: after
    needs: [each]
    set: { n: "${{ size(steps.each.outputs) }}", first: "${{ steps.each.outputs[0].v }}", item: "${{ steps.each.items[1].item }}" }
"#,
    );
    let flow = flow.to_str().unwrap();
    let printed = |output: std::process::Output| -> Value {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        serde_json::from_slice(&output.stdout).expect("the outputs as JSON")
    };
    let given = printed(sandbox.output(&[
        "test",
        flow,
        "after",
        "-o",
        r#"each=[{"v":"p"},{"v":"q"},{"v":"r"}]"#,
    ]));
    assert_eq!(given, serde_json::json!({ "n": 3, "first": "p", "item": null }));
    // From a past execution: the items as they were, values included.
    let (_, report, _) = run(&sandbox, &std::fs::read_to_string(flow).unwrap(), &[]);
    let id = report["id"].as_str().unwrap();
    let past = printed(sandbox.output(&["test", flow, "after", "--from-execution", id]));
    assert_eq!(past, serde_json::json!({ "n": 2, "first": "a", "item": "b" }));
    let refused = sandbox.output(&["test", flow, "after", "-o", "each=[1]"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn each_item_has_its_own_timeout_and_idempotency_key() {
    let sandbox = Sandbox::new();
    let flow = r#"
name: limits
on_failure: continue
steps:
  - id: probe
    for_each: [{ host: a, limit: 5s }, { host: b, limit: 0.2 }, { host: c, limit: soon }]
    tolerate: 100%
    timeout: ${{ item.limit }}
    run: echo "$WAYLINE_IDEMPOTENCY_KEY" >> keys.txt && sleep 1
"#;
    let path = sandbox.write("flow.yaml", flow);
    let plan = sandbox.output(&["plan", path.to_str().unwrap()]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("timeout    from item.limit for each attempt"), "{plan}");
    let (_, report, stderr) = run(&sandbox, flow, &[]);
    let items = report["steps"][0]["items"].as_array().expect("items").clone();
    let ends: Vec<(String, String)> = items
        .iter()
        .map(|item| {
            let error = &item["error"];
            (
                item["status"].as_str().unwrap().to_owned(),
                error["class"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("succeeded".to_owned(), String::new()),
            ("failed".to_owned(), "timeout".to_owned()),
            ("failed".to_owned(), "expression".to_owned()),
        ],
        "{stderr}"
    );
    let message = items[2]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`timeout` must give a duration (`90s`) or a number of seconds"),
        "{message}"
    );
    // Two items ran (the third never started); each had a key of its own.
    let keys = sandbox.read("keys.txt");
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|key| key.ends_with(":probe[0]")), "{keys:?}");
    assert!(keys.iter().any(|key| key.ends_with(":probe[1]")), "{keys:?}");
}
