//! Property tests: random workflows driven by a random executor and random interventions.
//! Whatever happens, the invariants of the scheduler hold and the journal folds back into
//! the same state.

use std::time::Duration;

use proptest::prelude::*;
use wayline_core::execution::{AttemptState, Compensation, Control};
use wayline_journal::Decision;
use wayline_journal::ErrorClass;

use crate::harness::{Harness, actor};

/// A random workflow: `needs` edges to earlier steps, groups with caps, retries, strategies,
/// conditions, explicit `if`s and fan-outs (with caps, tolerances and compensations).
fn workflow() -> impl Strategy<Value = String> {
    let step = (
        proptest::collection::vec(any::<u8>(), 0..3), // needs (indices mod position)
        0u8..4,                                       // group
        1u32..4,                                      // max_attempts
        0u8..8,                                       // kind / if
    );
    (2usize..12, proptest::option::of(1u32..4), 0u8..4, proptest::collection::vec(step, 12))
        .prop_map(|(count, max_parallel, strategy, steps)| {
            let strategy = ["fail_fast", "continue", "rollback", "escalate"][strategy as usize];
            let mut yaml = format!("name: prop\non_failure: {strategy}\nescalation: {{ timeout: 1h, then: retry }}\ngroups:\n  g1: {{ max_parallel: 1 }}\n  g2: {{ max_parallel: 2 }}\n");
            if let Some(cap) = max_parallel {
                yaml.push_str(&format!("max_parallel: {cap}\n"));
            }
            yaml.push_str("steps:\n");
            for (index, (needs, group, attempts, kind)) in steps.into_iter().take(count).enumerate() {
                yaml.push_str(&format!("  - id: s{index}\n"));
                let mut needs: Vec<usize> = if index == 0 { vec![] } else { needs.iter().map(|n| *n as usize % index).collect() };
                needs.sort_unstable();
                needs.dedup();
                if !needs.is_empty() {
                    let names: Vec<String> = needs.iter().map(|n| format!("s{n}")).collect();
                    yaml.push_str(&format!("    needs: [{}]\n", names.join(", ")));
                }
                match kind {
                    0 => yaml.push_str("    set: { x: 1 }\n"),
                    1 => yaml.push_str("    wait: 2s\n"),
                    2 => yaml.push_str("    run: work\n    if: ${{ always() }}\n"),
                    // Fan-outs: `attempts` also picks their cap and tolerance.
                    6 => yaml.push_str(&format!("    for_each: [a, b, c, d]\n    max_parallel: {attempts}\n    tolerate: {}\n    run: work ${{{{ item }}}}\n    compensate: {{ run: undo }}\n", attempts - 1)),
                    7 => yaml.push_str("    matrix: { x: [1, 2], y: [a, b] }\n    tolerate: 50%\n    if: ${{ item.x == 1 || item.y == 'b' }}\n    run: work\n"),
                    _ => yaml.push_str("    run: work\n    compensate: { run: undo }\n"),
                }
                if group > 0 && kind != 0 {
                    yaml.push_str(&format!("    group: g{}\n", 1 + group % 2));
                }
                yaml.push_str(&format!("    retry: {{ max_attempts: {attempts}, delay: 1s }}\n"));
            }
            yaml
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_invariants_hold_and_every_execution_ends(yaml in workflow(), script in proptest::collection::vec(any::<u8>(), 200)) {
        let mut h = Harness::new(&yaml);
        let workflow = std::sync::Arc::clone(h.execution.workflow());
        let mut choices = script.into_iter().cycle();
        let mut rounds = 0;
        let mut reruns = 0;
        loop {
        while !h.finished {
            rounds += 1;
            prop_assert!(rounds < 2_000, "the execution does not end:\n{}", h.timeline());
            check_invariants(&h)?;
            let choice = choices.next().unwrap_or(0);
            let status = h.status();
            match choice % 16 {
                0 if status == "running" => { let _ = h.control(Control::Pause { actor: actor("p"), until: None }); }
                1 => { let _ = h.control(Control::Cancel { actor: actor("c"), rollback: choice > 128 }); }
                2 if choice > 200 => h.crash_and_recover(),
                3 if choice > 128 => {
                    // A breakpoint before some step (refused once it started).
                    let step = workflow.steps[choice as usize % workflow.steps.len()].id.clone();
                    let every = choice > 240;
                    let _ = h.control(Control::Break { steps: vec![step], every, actor: actor("b") });
                }
                4 if status == "paused" => {
                    // A person changes what later steps see (refused unless the step succeeded).
                    let step = workflow.steps[choice as usize % workflow.steps.len()].id.clone();
                    let outputs = serde_json::Map::from_iter([("x".to_owned(), serde_json::json!(choice))]);
                    let _ = h.control(Control::Patch { step: Some(step), outputs, inputs: Default::default(), actor: actor("p") });
                }
                _ if status == "paused" && h.running.is_empty() => {
                    let control = if choice % 2 == 0 { Control::Step { actor: actor("p") } } else { Control::Resume { actor: actor("p") } };
                    h.control(control).unwrap();
                }
                _ if status == "escalated" && h.running.is_empty() => {
                    let escalated: Vec<String> = workflow.steps.iter().map(|s| s.id.clone()).filter(|id| h.step_status(id) == "escalated").collect();
                    let decision = [Decision::Retry, Decision::Skip, Decision::Fail, Decision::Rollback][choice as usize % 4];
                    h.decide(&escalated[0], decision).unwrap();
                }
                _ => {
                    let running: Vec<(String, u32, bool)> = h.running.iter().cloned().collect();
                    if running.is_empty() {
                        h.advance(Duration::from_secs(3600));
                        continue;
                    }
                    let (step, _, compensation) = running[choice as usize % running.len()].clone();
                    if compensation {
                        h.compensated(&step, choice % 3 != 0);
                    } else {
                        match choice % 5 {
                            0 => h.fail(&step, ErrorClass::Failure),
                            1 => h.fail(&step, ErrorClass::Timeout),
                            2 if !h.cancels.is_empty() => h.cancelled(&step),
                            _ => h.succeed(&step),
                        }
                    }
                }
            }
        }
        check_invariants(&h)?;
        prop_assert!(h.execution.status().is_final());
        prop_assert!(h.running.is_empty(), "attempts still in flight after the end: {:?}", h.running);
        for run in h.execution.steps() {
            prop_assert!(run.state.is_done(), "step left in {:?}", run.state);
        }
        h.assert_history_folds();
        // A rerun, now and then: of what did not succeed, or from a random step.
        let choice = choices.next().unwrap_or(0);
        if reruns == 2 || choice % 3 == 0 {
            break;
        }
        reruns += 1;
        let from = workflow.steps[choice as usize % workflow.steps.len()].id.clone();
        let from: Vec<&str> = if choice % 3 == 1 { vec![] } else { vec![from.as_str()] };
        let before = h.journal.len();
        match h.rerun(&from, Default::default()) {
            Ok(()) => prop_assert!(h.journal.len() > before),
            // Refused: nothing changed, and the execution stays finished.
            Err(_) => {
                prop_assert_eq!(h.journal.len(), before);
                break;
            }
        }
        }
    }
}

fn check_invariants(h: &Harness) -> Result<(), TestCaseError> {
    // The live state is the fold of the journal after every input, not only at the end.
    h.assert_replay_matches();
    let workflow = h.execution.workflow();
    // Caps. An item counts as its step.
    let running: Vec<&(String, u32, bool)> = h.running.iter().collect();
    let step_of = |label: &str| -> usize {
        workflow.step(label.split('[').next().unwrap_or(label)).expect("a step of the workflow")
    };
    for (index, step) in workflow.steps.iter().enumerate() {
        let Some(cap) = step.fan_out.as_ref().and_then(|fan_out| fan_out.max_parallel) else {
            continue;
        };
        let items = running.iter().filter(|(s, _, c)| !c && step_of(s) == index).count();
        prop_assert!(items as u32 <= cap, "{} has {items} items running, cap {cap}", step.id);
        // Items are compensated one at a time.
        let undoing = running.iter().filter(|(s, _, c)| *c && step_of(s) == index).count();
        prop_assert!(undoing <= 1, "{} compensates {undoing} items at once", step.id);
    }
    if let Some(cap) = workflow.max_parallel {
        prop_assert!(
            running.len() as u32 <= cap,
            "{} running with max_parallel {cap}",
            running.len()
        );
    }
    for group in &workflow.groups {
        let members = running
            .iter()
            .filter(|(s, _, c)| {
                !c && workflow.steps[step_of(s)].group.map(|g| workflow.groups[g].name.as_str())
                    == Some(group.name.as_str())
            })
            .count();
        if let Some(cap) = group.max_parallel {
            prop_assert!(members as u32 <= cap, "group {} has {members} running", group.name);
        }
    }
    // Needs: a step in flight (or between attempts) has all its needs finished. (A step that
    // succeeded keeps its outputs when a rerun runs one of its needs again.)
    for (index, run) in h.execution.steps().iter().enumerate() {
        if matches!(
            run.state,
            wayline_core::execution::StepState::Active(_)
                | wayline_core::execution::StepState::FannedOut
        ) {
            for &need in &workflow.steps[index].needs {
                let state = &h.execution.steps()[need].state;
                prop_assert!(
                    state.is_done(),
                    "{} started while its need {} is {:?}",
                    workflow.steps[index].id,
                    workflow.steps[need].id,
                    state
                );
            }
        }
    }
    // Compensation order: a step's compensation runs only after those of its dependents.
    for (index, run) in h.execution.steps().iter().enumerate() {
        if matches!(run.compensation, Compensation::Active(AttemptState::Running { .. })) {
            for &dependent in &workflow.dependents[index] {
                let theirs = &h.execution.steps()[dependent].compensation;
                prop_assert!(
                    matches!(
                        theirs,
                        Compensation::None
                            | Compensation::Succeeded
                            | Compensation::Failed(_)
                            | Compensation::Nothing
                    ),
                    "{} compensates while its dependent {} is {:?}",
                    workflow.steps[index].id,
                    workflow.steps[dependent].id,
                    theirs
                );
            }
        }
    }
    Ok(())
}
