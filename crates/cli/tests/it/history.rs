//! Time travel over the journal through the binary: `show --at SEQ` is the execution as it
//! was right after event SEQ, and `events --step` one step's story.

use serde_json::Value;
use wayline_core::report::Report;
use wayline_journal::cloudevents;

use super::durable::Sandbox;

const STORY: &str = "name: story
steps:
  - id: flaky
    run: test -f once || { touch once; exit 3; }
    retry: { max_attempts: 2, delay: 10ms }
  - id: pause
    needs: [flaky]
    wait: 20ms
  - id: after
    needs: [pause]
    set: { done: true }
";

fn recorded(sandbox: &Sandbox) -> (String, Vec<Value>) {
    let flow = sandbox.write("flow.yaml", STORY);
    let run = sandbox.output(&["run", flow.to_str().unwrap(), "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_owned();
    let events = sandbox.events(&id);
    (id, events)
}

#[test]
fn show_at_every_sequence_number_is_the_fold_of_the_journal_up_to_it() {
    let sandbox = Sandbox::new();
    let (id, lines) = recorded(&sandbox);
    let journal: Vec<_> =
        lines.iter().map(|line| cloudevents::from_json(line).expect("an event").1).collect();
    assert!(journal.len() > 10, "{lines:?}");
    for at in 1..=journal.len() {
        let shown = sandbox.output(&["show", &id, "--at", &at.to_string(), "--json"]);
        assert_eq!(shown.status.code(), Some(0), "--at {at}");
        let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
        let folded = wayline_runtime::inspect::fold(&id, &journal[..at]).unwrap();
        assert_eq!(shown, serde_json::to_value(Report::new(&folded)).unwrap(), "--at {at}");
    }
    // The moments that matter read as they were: the retry after the first failure, the wait.
    let seq_of = |kind: &str| {
        lines.iter().position(|line| line["type"] == kind).map(|at| (at + 1).to_string()).unwrap()
    };
    let retrying =
        sandbox.output(&["show", &id, "--at", &seq_of("io.serverlessworkflow.task.retried.v1")]);
    let text = String::from_utf8_lossy(&retrying.stdout);
    assert!(text.lines().next().unwrap().contains("running  as of event"), "{text}");
    assert!(text.contains("flaky  retrying      (attempt 2 at "), "{text}");
    assert!(text.contains("pause  pending       (waiting for flaky)"), "{text}");
    let last = journal.len().to_string();
    let end = sandbox.output(&["show", &id, "--at", &last]);
    assert!(String::from_utf8_lossy(&end.stdout).contains("succeeded  as of event"));

    for bad in ["0", &(journal.len() + 1).to_string()] {
        let refused = sandbox.output(&["show", &id, "--at", bad]);
        assert_eq!(refused.status.code(), Some(2));
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(
            message.contains(&format!("--at takes a sequence number from 1 to {last}")),
            "{message}"
        );
    }
}

#[test]
fn events_of_one_step_are_its_story_and_an_unknown_step_is_refused() {
    let sandbox = Sandbox::new();
    let (id, lines) = recorded(&sandbox);
    let flaky = sandbox.output(&["events", &id, "--step", "flaky"]);
    assert_eq!(flaky.status.code(), Some(0));
    let types: Vec<String> = String::from_utf8_lossy(&flaky.stdout)
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["subject"], "flaky");
            event["type"].as_str().unwrap().rsplit('.').nth(1).unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["started", "running", "faulted", "retried", "started", "running", "completed"]
    );
    let expected = lines.iter().filter(|line| line["subject"] == "flaky").count();
    assert_eq!(types.len(), expected);
    let refused = sandbox.output(&["events", &id, "--step", "nope"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("workflow `story` has no step `nope`")
    );
}
