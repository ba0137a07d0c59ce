//! A scripted runtime for the core: it records effects, keeps timers on a manual clock and
//! lets a test decide how each attempt ends.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use wayline_core::execution::{
    Attempt, AttemptResult, Control, Created, Effect, Execution, Input, Redrive, Secrets, Timer,
};
use wayline_journal::Decision;
use wayline_journal::{Actor, AttemptKind, ErrorClass, ErrorInfo, EventKind};
use wayline_journal::{Event, Time};

pub struct Harness {
    pub execution: Execution,
    pub now: Time,
    start: Time,
    pub journal: Vec<Event>,
    /// Armed timers, by due time.
    timers: BTreeSet<(Time, Timer)>,
    /// Attempts in flight on the scripted executor: (step id, or `id[item]` for an item of a
    /// fan-out, attempt, compensation).
    pub running: BTreeSet<(String, u32, bool)>,
    /// Cancel requests received.
    pub cancels: Vec<(String, u32)>,
    pub notified: Vec<String>,
    pub finished: bool,
    /// Highest number of attempts in flight at once, overall and per group.
    pub peak: usize,
    /// The live state after every input, with the journal's length then: what `show --at`
    /// must find again by folding that prefix.
    pub snapshots: Vec<(usize, String)>,
}

pub fn load(yaml: &str) -> Arc<wayline_lang::Workflow> {
    let loaded = wayline_lang::load(yaml);
    let errors: Vec<String> =
        loaded.diagnostics.iter().map(|d| d.render("test.yaml", yaml)).collect();
    Arc::new(
        loaded.workflow.unwrap_or_else(|| panic!("invalid test workflow:\n{}", errors.join(""))),
    )
}

impl Harness {
    pub fn new(yaml: &str) -> Harness {
        Harness::with_inputs(yaml, Map::new())
    }

    pub fn with_inputs(yaml: &str, inputs: Map<String, Value>) -> Harness {
        let mut harness = Harness::unstarted(yaml, inputs);
        harness.input(Input::Start);
        harness
    }

    /// Created, not started: what `run --break` sets comes first.
    pub fn unstarted(yaml: &str, inputs: Map<String, Value>) -> Harness {
        let workflow = load(yaml);
        let now = Time::from_millis(1_000_000);
        let created = Created {
            id: "ex1".into(),
            workflow,
            source: yaml.into(),
            path: "test.yaml".into(),
            inputs,
            imports: Default::default(),
        };
        let (execution, first) = Execution::create(created, Arc::new(Secrets::default()), now);
        Harness {
            execution,
            now,
            start: now,
            journal: vec![first],
            timers: BTreeSet::new(),
            running: BTreeSet::new(),
            cancels: Vec::new(),
            notified: Vec::new(),
            finished: false,
            peak: 0,
            snapshots: Vec::new(),
        }
    }

    pub fn index(&self, step: &str) -> usize {
        self.execution.workflow().step(step).unwrap_or_else(|| panic!("no step {step}"))
    }

    pub fn input(&mut self, input: Input) {
        let step = self.execution.handle(input, self.now).expect("input rejected");
        self.absorb(step);
    }

    pub fn control(&mut self, control: Control) -> Result<(), String> {
        let step =
            self.execution.handle(Input::Control(control), self.now).map_err(|e| e.to_string())?;
        self.absorb(step);
        Ok(())
    }

    fn absorb(&mut self, step: wayline_core::execution::Transition) {
        for (offset, event) in step.events.iter().enumerate() {
            assert_eq!(
                event.seq,
                (self.journal.len() + offset) as u64 + 1,
                "events are numbered without gaps"
            );
        }
        self.journal.extend(step.events);
        let state = format!("{:?}", self.execution.journal_state());
        self.snapshots.push((self.journal.len(), state));
        for effect in step.effects {
            match effect {
                Effect::Start(attempt) => {
                    let compensation = attempt.is_compensation();
                    let id = self.label(attempt.step, attempt.item);
                    let attempt = attempt.number;
                    assert!(
                        !self.running.iter().any(|(s, _, c)| *s == id && *c == compensation),
                        "two attempts of {id} in flight"
                    );
                    self.running.insert((id, attempt, compensation));
                    self.peak = self.peak.max(self.running.len());
                }
                Effect::Cancel(attempt) => {
                    let step = self.label(attempt.step, attempt.item);
                    self.cancels.push((step, attempt.number));
                }
                Effect::Timer { at, timer } => {
                    self.timers.insert((at, timer));
                }
                Effect::Notify { step } => {
                    self.notified.push(self.execution.workflow().steps[step].id.clone())
                }
                Effect::Finished => self.finished = true,
            }
        }
    }

    /// `deploy` or `deploy[3]`: how the running set names an attempt.
    fn label(&self, step: usize, item: Option<u32>) -> String {
        wayline_journal::instance_name(&self.execution.workflow().steps[step].id, item)
    }

    /// The attempt in flight under `label`, taken off the running set.
    fn target(&mut self, label: &str, kind: AttemptKind) -> Attempt {
        let number = self.take(label, kind == AttemptKind::Compensation);
        let (step, item) = match label.split_once('[') {
            Some((step, rest)) => {
                let item = rest.trim_end_matches(']').parse().expect("item index");
                (step, Some(item))
            }
            None => (label, None),
        };
        Attempt { step: self.index(step), item, number, kind }
    }

    fn take(&mut self, step: &str, compensation: bool) -> u32 {
        let entry = self
            .running
            .iter()
            .find(|(s, _, c)| s == step && *c == compensation)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "{step} (compensation: {compensation}) is not running; running: {:?}",
                    self.running
                )
            });
        self.running.remove(&entry);
        entry.1
    }

    pub fn succeed(&mut self, step: &str) {
        self.succeed_with(step, Map::new());
    }

    pub fn succeed_with(&mut self, step: &str, outputs: Map<String, Value>) {
        let attempt = self.target(step, AttemptKind::Step);
        self.input(Input::Finished { attempt, result: AttemptResult::Succeeded { outputs } });
    }

    pub fn fail(&mut self, step: &str, class: ErrorClass) {
        self.fail_after(step, class, None);
    }

    pub fn fail_after(&mut self, step: &str, class: ErrorClass, retry_after: Option<Duration>) {
        let attempt = self.target(step, AttemptKind::Step);
        let error = ErrorInfo::new(class, format!("{step} broke"));
        self.input(Input::Finished {
            attempt,
            result: AttemptResult::Failed { error, outputs: Map::new(), retry_after },
        });
    }

    pub fn cancelled(&mut self, step: &str) {
        let attempt = self.target(step, AttemptKind::Step);
        self.input(Input::Finished { attempt, result: AttemptResult::Cancelled });
    }

    pub fn compensated(&mut self, step: &str, ok: bool) {
        let attempt = self.target(step, AttemptKind::Compensation);
        let result = if ok {
            AttemptResult::Succeeded { outputs: Map::new() }
        } else {
            AttemptResult::Failed {
                error: ErrorInfo::new(ErrorClass::Failure, "undo broke"),
                outputs: Map::new(),
                retry_after: None,
            }
        };
        self.input(Input::Finished { attempt, result });
    }

    /// `wayline rerun`: opens the finished execution again.
    pub fn rerun(&mut self, from: &[&str], inputs: Map<String, Value>) -> Result<(), String> {
        let redrive = Redrive {
            from: from.iter().map(|step| step.to_string()).collect(),
            inputs,
            actor: actor("ops"),
        };
        let step =
            self.execution.handle(Input::Redrive(redrive), self.now).map_err(|e| e.to_string())?;
        self.finished = false;
        self.absorb(step);
        Ok(())
    }

    /// Moves the clock forward, firing every timer that falls due, in order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now.after(by);
        while let Some(&(at, timer)) = self.timers.iter().next() {
            if at > until {
                break;
            }
            self.timers.remove(&(at, timer));
            self.now = self.now.max(at);
            self.input(Input::Timer(timer));
        }
        self.now = until;
    }

    pub fn decide(&mut self, step: &str, decision: Decision) -> Result<(), String> {
        self.control(Control::Decide {
            step: step.into(),
            decision,
            outputs: Map::new(),
            actor: actor("ops"),
        })
    }

    pub fn status(&self) -> &'static str {
        self.execution.status().name()
    }

    pub fn step_status(&self, step: &str) -> &'static str {
        self.execution.steps()[self.index(step)].status().name()
    }

    /// The journal after `Created`, one compact line per event, times relative to the start.
    pub fn timeline(&self) -> String {
        let mut out = String::new();
        for event in &self.journal[1..] {
            let ms = event.time.since(self.start).as_millis();
            let _ = write!(out, "[{ms:>7}ms] ");
            let line = match &event.kind {
                EventKind::Started => "started".to_owned(),
                EventKind::Recovered { owner } => format!("recovered by {owner}"),
                EventKind::AttemptStarted { step, attempt, compensation, until, item } => {
                    let step = wayline_journal::instance_name(step, *item);
                    let what = if *compensation { "compensate" } else { "start" };
                    let until = until
                        .map(|u| format!(" until +{}ms", u.since(self.start).as_millis()))
                        .unwrap_or_default();
                    format!("{what} {step}#{attempt}{until}")
                }
                EventKind::AttemptRunning { step, attempt, process, item, .. } => {
                    let step = wayline_journal::instance_name(step, *item);
                    format!("running {step}#{attempt} as pid {}", process.pid)
                }
                EventKind::AttemptSucceeded { step, attempt, compensation, outputs, item } => {
                    let step = wayline_journal::instance_name(step, *item);
                    let what = if *compensation { "compensated" } else { "succeeded" };
                    let outputs = if outputs.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", Value::Object(outputs.clone()))
                    };
                    format!("{what} {step}#{attempt}{outputs}")
                }
                EventKind::AttemptFailed {
                    step,
                    attempt,
                    compensation,
                    error,
                    terminal,
                    item,
                    ..
                } => {
                    let step = wayline_journal::instance_name(step, *item);
                    let what = if *compensation { "compensation failed" } else { "failed" };
                    let end = if *terminal { " (terminal)" } else { "" };
                    format!("{what} {step}#{attempt} {}{end}", error.class.name())
                }
                EventKind::AttemptCancelled { step, attempt, item, .. } => {
                    let step = wayline_journal::instance_name(step, *item);
                    format!("cancelled {step}#{attempt}")
                }
                EventKind::RetryScheduled { step, attempt, delay_ms, item, .. } => {
                    let step = wayline_journal::instance_name(step, *item);
                    format!("retry {step}#{attempt} in {delay_ms}ms")
                }
                EventKind::StepSkipped { step, reason, cancelled, item } => {
                    let step = wayline_journal::instance_name(step, *item);
                    format!("{} {step}: {reason}", if *cancelled { "cancelled" } else { "skipped" })
                }
                EventKind::StepEscalated { step, .. } => format!("escalated {step}"),
                EventKind::FannedOut { step, items } => {
                    format!("fanned out {step}: {}", Value::Array(items.clone()))
                }
                EventKind::Decided { step, decision, actor, .. } => {
                    format!("decided {step}: {decision} by {}", actor.by)
                }
                EventKind::Paused { actor, until } => {
                    let until = until
                        .map(|u| format!(" until +{}ms", u.since(self.start).as_millis()))
                        .unwrap_or_default();
                    format!("paused by {}{until}", actor.by)
                }
                EventKind::Resumed { actor } => format!("resumed by {}", actor.by),
                EventKind::Stopping { reason, rollback, .. } => {
                    format!("stopping ({reason:?}, rollback: {rollback})")
                }
                EventKind::RollbackStarted => "rollback started".to_owned(),
                EventKind::BreakpointsSet { steps, every, actor } => {
                    let every = if *every { " (every step)" } else { "" };
                    format!("breakpoints by {}: {}{every}", actor.by, steps.join(", "))
                }
                EventKind::BreakpointHit { steps } => {
                    format!("breakpoint before {}", steps.join(", "))
                }
                EventKind::Stepped { actor } => format!("stepped by {}", actor.by),
                EventKind::Patched { step, outputs, inputs, actor } => format!(
                    "patched by {}: {} {} {}",
                    actor.by,
                    step.as_deref().unwrap_or("-"),
                    Value::Object(outputs.clone()),
                    Value::Object(inputs.clone())
                ),
                EventKind::Redriven { actor, steps, inputs, kept_items } => {
                    let kept = if kept_items.is_empty() {
                        String::new()
                    } else {
                        format!(" (keeping the items of {})", kept_items.join(", "))
                    };
                    let inputs = if inputs.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", Value::Object(inputs.clone()))
                    };
                    format!("rerun by {}: {}{inputs}{kept}", actor.by, steps.join(", "))
                }
                EventKind::Finished { outcome, error, .. } => {
                    let error =
                        error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default();
                    format!("finished {}{error}", outcome.name())
                }
                EventKind::Created { .. } => "created".to_owned(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The owner dies and a new one takes over: the journal is folded into a fresh execution,
    /// which recovers. Attempts in flight and armed timers die with the old owner.
    pub fn crash_and_recover(&mut self) {
        let workflow = Arc::clone(self.execution.workflow());
        self.execution =
            Execution::replay("ex1".into(), workflow, Arc::new(Secrets::default()), &self.journal)
                .expect("the journal folds");
        self.running.clear();
        self.timers.clear();
        self.cancels.clear();
        self.input(Input::Recover { owner: "new-owner".into() });
    }

    /// Every past state is the fold of the journal up to then (time travel: `show --at`).
    pub fn assert_history_folds(&self) {
        for (length, state) in &self.snapshots {
            let replayed = Execution::replay(
                "ex1".into(),
                Arc::clone(self.execution.workflow()),
                Arc::new(Secrets::default()),
                &self.journal[..*length],
            )
            .expect("a prefix of the journal folds");
            assert_eq!(&format!("{:?}", replayed.journal_state()), state, "after {length} events");
        }
    }

    /// Folding the journal from scratch gives the same state as the live execution: all of
    /// it, not only what a report shows (what only the live engine knows is kept apart).
    pub fn assert_replay_matches(&self) {
        let replayed = Execution::replay(
            "ex1".into(),
            Arc::clone(self.execution.workflow()),
            Arc::new(Secrets::default()),
            &self.journal,
        )
        .expect("the journal folds");
        assert_eq!(replayed.status(), self.execution.status());
        assert_eq!(replayed.journal_state(), self.execution.journal_state());
    }
}

pub fn actor(by: &str) -> Actor {
    Actor { by: by.into(), reason: None }
}

pub fn outputs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("outputs must be an object"),
    }
}
