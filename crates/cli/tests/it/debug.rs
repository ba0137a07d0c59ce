//! Breakpoints, stepping, inspection and patches through the binary, driven from a second
//! process as a person at another terminal would.

use serde_json::Value;

use super::durable::{Sandbox, start, step_status, wait_for_line};

fn started(sandbox: &Sandbox, id: &str, step: &str) -> usize {
    sandbox
        .events(id)
        .iter()
        .filter(|e| e["type"] == "io.serverlessworkflow.task.started.v1" && e["subject"] == step)
        .count()
}

const DEPLOY: &str = "name: deploy
steps:
  - id: build
    run: echo version=1.0 >> \"$WAYLINE_OUTPUT\"
  - id: deploy
    needs: [build]
    env:
      TOKEN: ${{ secrets.TOKEN }}
      VERSION: ${{ steps.build.outputs.version }}
    run: echo \"deploying $VERSION with $TOKEN\" && echo \"deploy $VERSION\" >> effects.txt
";

#[test]
fn a_breakpoint_pauses_before_its_step_and_a_patch_changes_what_it_receives() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", DEPLOY);
    let mut run = sandbox.wayline(&["run", flow.to_str().unwrap(), "--break", "deploy"]);
    run.env("WAYLINE_SECRET_TOKEN", "hunter2-secret");
    let (mut child, id, mut stderr) = super::durable::spawn(run);
    wait_for_line(&mut stderr, "BREAKPOINT before deploy");
    let report = sandbox.report(&id);
    assert_eq!(report["status"], "paused");
    assert_eq!(report["paused"]["reason"], "breakpoint before deploy");
    assert_eq!(step_status(&report, "deploy"), "pending");
    assert_eq!(started(&sandbox, &id, "deploy"), 0);

    // What deploy will do, the secret masked (this process has it too).
    let inspect = sandbox
        .wayline(&["inspect", &id, "deploy"])
        .env("WAYLINE_SECRET_TOKEN", "hunter2-secret")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert_eq!(inspect.status.code(), Some(0), "{}", String::from_utf8_lossy(&inspect.stderr));
    assert!(text.starts_with("deploy (run step), attempt 1"), "{text}");
    assert!(text.contains("env        TOKEN=***"), "{text}");
    assert!(text.contains("env        VERSION=1.0"), "{text}");
    assert!(text.contains("reads      steps.build.outputs.version = \"1.0\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let patch = sandbox.output(&[
        "patch",
        &id,
        "build",
        "--output",
        "version=2.1-hotfix",
        "--reason",
        "hotfix",
    ]);
    assert_eq!(patch.status.code(), Some(0), "{}", String::from_utf8_lossy(&patch.stderr));
    let shown = String::from_utf8_lossy(&sandbox.output(&["show", &id]).stdout).into_owned();
    assert!(shown.contains("outputs patched by "), "{shown}");
    assert!(shown.contains(": hotfix"), "{shown}");
    let patched: Vec<Value> = sandbox
        .events(&id)
        .into_iter()
        .filter(|e| e["type"] == "dev.wayline.workflow.patched.v1")
        .collect();
    assert_eq!(patched.len(), 1);
    assert_eq!(patched[0]["data"]["outputs"]["version"], "2.1-hotfix");
    assert_eq!(patched[0]["data"]["actor"]["reason"], "hotfix");

    let resume = sandbox.output(&["resume", &id]);
    assert_eq!(resume.status.code(), Some(0), "{}", String::from_utf8_lossy(&resume.stderr));
    let status = child.wait().expect("run ends");
    assert_eq!(status.code(), Some(0));
    assert_eq!(sandbox.read("effects.txt"), "deploy 2.1-hotfix\n");
}

#[test]
fn step_runs_exactly_the_next_ready_steps_then_pauses_again() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: stepped\nsteps:\n  - id: a\n    run: echo a >> effects.txt\n  - id: b\n    run: echo b >> effects.txt\n  - id: c\n    needs: [a, b]\n    run: echo c >> effects.txt\n",
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &["--step"]);
    wait_for_line(&mut stderr, "BREAKPOINT before a, b");
    assert_eq!(sandbox.read("effects.txt"), "");
    let step = sandbox.output(&["step", &id]);
    assert_eq!(step.status.code(), Some(0), "{}", String::from_utf8_lossy(&step.stderr));
    wait_for_line(&mut stderr, "BREAKPOINT before c");
    let mut effects: Vec<String> = sandbox.read("effects.txt").lines().map(str::to_owned).collect();
    effects.sort();
    assert_eq!(effects, ["a", "b"], "a and b ran, c did not");
    assert_eq!(started(&sandbox, &id, "c"), 0);
    assert_eq!(sandbox.report(&id)["paused"]["reason"], "breakpoint before c");
    let step = sandbox.output(&["step", &id]);
    assert_eq!(step.status.code(), Some(0));
    assert_eq!(child.wait().expect("ends").code(), Some(0));
    assert_eq!(sandbox.read("effects.txt").lines().last(), Some("c"));
}

#[test]
fn pause_before_a_step_of_a_running_execution_pauses_there() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: later\nsteps:\n  - id: first\n    run: sleep 0.5\n  - id: second\n    needs: [first]\n    run: echo second >> effects.txt\n",
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "first: running (attempt 1)");
    let pause = sandbox.output(&["pause", &id, "--before", "second"]);
    assert_eq!(pause.status.code(), Some(0), "{}", String::from_utf8_lossy(&pause.stderr));
    let refused = sandbox.output(&["pause", &id, "--before", "first"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("step `first` has already started"));
    wait_for_line(&mut stderr, "BREAKPOINT before second");
    // The line is printed once the event is committed: the execution is paused now.
    assert_eq!(sandbox.report(&id)["status"], "paused");
    assert_eq!(sandbox.read("effects.txt"), "");
    let resume = sandbox.output(&["resume", &id]);
    assert_eq!(resume.status.code(), Some(0));
    assert_eq!(child.wait().expect("ends").code(), Some(0));
    assert_eq!(sandbox.read("effects.txt"), "second\n");
}

#[test]
fn a_breakpoint_on_a_step_the_workflow_lacks_is_refused_before_anything_runs() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", DEPLOY);
    let run = sandbox.output(&["run", flow.to_str().unwrap(), "--break", "deplyo"]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("has no step `deplyo`; did you mean `deploy`?"), "{stderr}");
    assert!(
        sandbox.output(&["list"]).stdout.is_empty()
            || !String::from_utf8_lossy(&sandbox.output(&["list"]).stdout).contains("deploy ")
    );
}

const PIPELINE: &str = "name: pipeline
inputs:
  region: { type: string, default: eu }
steps:
  - id: build
    run: echo version=1.0 >> \"$WAYLINE_OUTPUT\"
  - id: deploy
    needs: [build]
    env: { V: \"${{ steps.build.outputs.version }}\", R: \"${{ inputs.region }}\" }
    run: echo \"deploying $V to $R\" && echo \"url=https://$R.example/$V\" >> \"$WAYLINE_OUTPUT\"
  - id: notify
    needs: [deploy]
    run: echo notify >> effects.txt
";

#[test]
fn test_runs_one_step_with_the_upstream_outputs_given_or_from_a_past_execution_and_records_nothing()
{
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", PIPELINE);
    let flow = flow.to_str().unwrap();
    let given =
        sandbox.output(&["test", flow, "deploy", "-o", "build.version=2.5", "-i", "region=us"]);
    let stderr = String::from_utf8_lossy(&given.stderr);
    assert_eq!(given.status.code(), Some(0), "{stderr}");
    let outputs: Value = serde_json::from_slice(&given.stdout).expect("the step's outputs");
    assert_eq!(outputs["url"], "https://us.example/2.5");
    assert!(stderr.contains("deploy | deploying 2.5 to us"), "the step's log: {stderr}");
    assert_eq!(sandbox.read("effects.txt"), "", "only the step under test ran");
    let list = sandbox.output(&["list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&list.stdout).unwrap(),
        serde_json::json!([]),
        "nothing recorded"
    );

    let real = sandbox.output(&["run", flow, "-i", "region=ap", "--json"]);
    assert_eq!(real.status.code(), Some(0));
    let id =
        serde_json::from_slice::<Value>(&real.stdout).unwrap()["id"].as_str().unwrap().to_owned();
    let from = sandbox.output(&["test", flow, "deploy", "--from-execution", &id]);
    assert_eq!(from.status.code(), Some(0), "{}", String::from_utf8_lossy(&from.stderr));
    let outputs: Value = serde_json::from_slice(&from.stdout).unwrap();
    assert_eq!(outputs["url"], "https://ap.example/1.0", "build's outputs and the inputs of then");

    let missing = sandbox.output(&["test", flow, "deploy"]);
    assert_eq!(missing.status.code(), Some(1), "the step fails: it reads an output nobody gave");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("steps.build.outputs.version"));
    let list = sandbox.output(&["list", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&list.stdout).unwrap().as_array().unwrap().len(), 1);
}
