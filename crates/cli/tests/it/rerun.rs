//! `wayline rerun` through the binary: a finished execution runs again in place, only what
//! it has to, and the journal says who asked and what ran again.

use std::process::Stdio;

use serde_json::Value;

use super::durable::{Sandbox, start, step_status, wait_for_line};

/// How many times each line appears in the side-effect file.
fn count(sandbox: &Sandbox, line: &str) -> usize {
    sandbox.read("effects.txt").lines().filter(|l| *l == line).count()
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("exited")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The id a finished `run` names in its last line (`NAME ID STATUS`).
fn finished_id(stderr: &str) -> String {
    let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).expect("a last line");
    last.split_whitespace().nth(1).expect("an id").to_owned()
}

fn redriven(sandbox: &Sandbox, id: &str) -> Vec<Value> {
    sandbox
        .events(id)
        .into_iter()
        .filter(|event| event["type"] == "dev.wayline.workflow.redriven.v1")
        .collect()
}

const FIXABLE: &str = "name: fixable
steps:
  - id: prep
    run: echo prep >> effects.txt
  - id: build
    needs: [prep]
    run: test -f fixed && echo build >> effects.txt
  - id: ship
    needs: [build]
    run: echo ship >> effects.txt
";

#[test]
fn a_step_fixed_since_reruns_and_the_execution_succeeds_without_running_upstream_again() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", FIXABLE);
    let failed = sandbox.output(&["run", flow.to_str().unwrap()]);
    assert_eq!(code(&failed), 1, "{}", text(&failed.stderr));
    let id = finished_id(&text(&failed.stderr));
    assert_eq!(step_status(&sandbox.report(&id), "ship"), "skipped");

    sandbox.write("fixed", "");
    let rerun = sandbox.output(&["rerun", &id, "--reason", "fixed the build script"]);
    let stderr = text(&rerun.stderr);
    assert_eq!(code(&rerun), 0, "{stderr}");
    assert!(stderr.contains(&format!("execution {id} of fixable runs again")), "{stderr}");
    assert!(stderr.contains("build, ship run again"), "{stderr}");
    assert!(stderr.trim_end().ends_with(&format!("fixable {id} succeeded")), "{stderr}");
    // The earlier run is history: its failure is not shown again.
    assert!(!stderr.contains("build: failed"), "{stderr}");
    assert_eq!((count(&sandbox, "prep"), count(&sandbox, "build")), (1, 1));
    assert_eq!(count(&sandbox, "ship"), 1);

    let report = sandbox.report(&id);
    assert_eq!(report["status"], "succeeded");
    let build = report["steps"].as_array().unwrap().iter().find(|s| s["id"] == "build").unwrap();
    assert_eq!(build["attempts"], 2, "the numbering continues: {build}");
    let reruns = redriven(&sandbox, &id);
    assert_eq!(reruns.len(), 1);
    assert_eq!(reruns[0]["data"]["steps"], serde_json::json!(["build", "ship"]));
    assert_eq!(reruns[0]["data"]["actor"]["reason"], "fixed the build script");
    assert!(reruns[0]["data"]["actor"]["by"].as_str().unwrap().ends_with("(cli)"));
}

#[test]
fn a_rerun_from_a_middle_step_runs_exactly_it_and_what_is_downstream() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: chain
steps:
  - id: a
    run: echo a >> effects.txt
  - id: b
    needs: [a]
    run: echo b >> effects.txt
  - id: c
    needs: [b]
    run: echo c >> effects.txt
  - id: aside
    run: echo aside >> effects.txt
",
    );
    let first = sandbox.output(&["run", flow.to_str().unwrap()]);
    assert_eq!(code(&first), 0);
    let id = finished_id(&text(&first.stderr));
    let nothing = sandbox.output(&["rerun", &id]);
    assert_eq!(code(&nothing), 2);
    assert!(text(&nothing.stderr).contains("every step of execution"), "{nothing:?}");

    let rerun = sandbox.output(&["rerun", &id, "--from", "b", "--json"]);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun.stderr));
    let report: Value = serde_json::from_slice(&rerun.stdout).expect("the result object");
    assert_eq!(report["status"], "succeeded");
    let counts: Vec<usize> = ["a", "b", "c", "aside"].map(|s| count(&sandbox, s)).to_vec();
    assert_eq!(counts, [1, 2, 2, 1]);
    let unknown = sandbox.output(&["rerun", &id, "--from", "nope"]);
    assert_eq!(code(&unknown), 2);
    assert!(text(&unknown.stderr).contains("has no step `nope`"), "{unknown:?}");
}

#[test]
fn a_rerun_after_a_rollback_redoes_the_compensated_steps() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: undo
on_failure: rollback
steps:
  - id: reserve
    run: echo reserve >> effects.txt
    compensate: { run: echo release >> effects.txt }
  - id: charge
    needs: [reserve]
    run: test -f fixed && echo charge >> effects.txt
",
    );
    let failed = sandbox.output(&["run", flow.to_str().unwrap()]);
    assert_eq!(code(&failed), 1);
    let id = finished_id(&text(&failed.stderr));
    assert_eq!(sandbox.report(&id)["status"], "rolled_back");
    sandbox.write("fixed", "");
    let rerun = sandbox.output(&["rerun", &id]);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun.stderr));
    assert_eq!(sandbox.read("effects.txt"), "reserve\nrelease\nreserve\ncharge\n");
    let report = sandbox.report(&id);
    assert_eq!(step_status(&report, "reserve"), "succeeded");
    assert_eq!(
        redriven(&sandbox, &id)[0]["data"]["steps"],
        serde_json::json!(["reserve", "charge"])
    );
}

#[test]
fn a_rerun_with_a_new_input_records_it_for_the_steps_that_run_again() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: versioned
inputs:
  version: { type: integer, default: 1 }
steps:
  - id: deploy
    env: { V: \"${{ inputs.version }}\" }
    run: test \"$V\" = 2 && echo \"deployed $V\" >> effects.txt
",
    );
    let failed = sandbox.output(&["run", flow.to_str().unwrap()]);
    assert_eq!(code(&failed), 1);
    let id = finished_id(&text(&failed.stderr));
    let wrong = sandbox.output(&["rerun", &id, "-i", "version=two"]);
    assert_eq!(code(&wrong), 2);
    assert!(text(&wrong.stderr).contains("input `version` must be an integer"), "{wrong:?}");
    assert!(redriven(&sandbox, &id).is_empty(), "a refused rerun changes nothing");

    let rerun = sandbox.output(&["rerun", &id, "-i", "version=2"]);
    assert_eq!(code(&rerun), 0, "{}", text(&rerun.stderr));
    assert_eq!(sandbox.read("effects.txt"), "deployed 2\n");
    assert_eq!(sandbox.report(&id)["inputs"]["version"], 2);
    assert_eq!(redriven(&sandbox, &id)[0]["data"]["inputs"], serde_json::json!({ "version": 2 }));
}

#[test]
fn a_rerun_of_a_running_execution_is_refused_with_the_reason() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", "name: slow\nsteps:\n  - id: s\n    run: sleep 30\n");
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "s: running (attempt 1)");
    let refused = sandbox.output(&["rerun", &id]);
    assert_eq!(code(&refused), 2);
    let message = text(&refused.stderr);
    assert!(
        message.contains(&format!(
            "execution {id} is running; only a finished execution can be rerun"
        )),
        "{message}"
    );
    let cancel = sandbox.wayline(&["cancel", &id]).stdout(Stdio::null()).output().expect("runs");
    assert_eq!(code(&cancel), 0, "{}", text(&cancel.stderr));
    let _ = child.wait();
    assert!(redriven(&sandbox, &id).is_empty());
}
