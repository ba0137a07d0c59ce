//! What a person sees while `wayline run` works: on a terminal, a live table of steps
//! (status, attempt, elapsed time, why a step waits) redrawn in place; on a pipe, one plain
//! line per thing that happened.

use std::io::Write as _;
use std::time::Duration;

use wayline_core::event::EventKind;
use wayline_core::execution::{Execution, StepState};
use wayline_core::{Event, Time};
use wayline_spec::duration;

pub struct Progress {
    terminal: bool,
    /// Lines drawn last time (to move the cursor back over them).
    drawn: usize,
    start: Time,
}

impl Progress {
    pub fn new(terminal: bool, start: Time) -> Progress {
        Progress { terminal, drawn: 0, start }
    }

    /// On a pipe: one line for an event.
    pub fn event(&mut self, execution: &Execution, event: &Event) {
        if self.terminal {
            return;
        }
        if let Some(line) = describe(execution, event) {
            let at = event.time.since(self.start).as_secs_f64();
            eprintln!("[{at:>7.2}s] {line}");
        }
    }

    /// A log line of a step (shown on a pipe, or above the table on a terminal).
    pub fn log(&mut self, step: &str, text: &str) {
        self.clear();
        eprintln!("  {step} | {text}");
    }

    /// On a terminal: redraws the table.
    pub fn draw(&mut self, execution: &Execution, now: Time) {
        if !self.terminal {
            return;
        }
        let mut out = String::new();
        let lines = table(execution, now);
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &lines {
            out.push_str("\x1b[2K");
            out.push_str(line);
            out.push('\n');
        }
        self.drawn = lines.len();
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(out.as_bytes());
        let _ = stderr.flush();
    }

    /// Forgets the drawn table so the next output starts below it.
    pub fn clear(&mut self) {
        if self.terminal && self.drawn > 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }
}

fn describe(execution: &Execution, event: &Event) -> Option<String> {
    let steps = execution.steps();
    let workflow = execution.workflow();
    let elapsed = |step: &str| {
        let started = steps[workflow.step(step)?].started_at?;
        Some(duration::format(round(event.time.since(started))))
    };
    Some(match &event.kind {
        EventKind::Started => format!("{} started", workflow.name),
        EventKind::Recovered { owner } => format!("taken over by {owner}"),
        EventKind::AttemptStarted { step, attempt, compensation: true, .. } => {
            format!("{step}: compensating (attempt {attempt})")
        }
        EventKind::AttemptStarted { step, attempt, until: Some(until), .. } => {
            format!("{step}: waiting until {} (attempt {attempt})", until.rfc3339())
        }
        EventKind::AttemptStarted { step, attempt, .. } => {
            format!("{step}: running (attempt {attempt})")
        }
        EventKind::AttemptSucceeded { step, compensation: true, .. } => {
            format!("{step}: compensated")
        }
        EventKind::AttemptSucceeded { step, attempt, .. } => {
            format!(
                "{step}: succeeded (attempt {attempt}{})",
                elapsed(step).map(|e| format!(", {e}")).unwrap_or_default()
            )
        }
        EventKind::AttemptFailed { step, attempt, compensation, error, terminal, .. } => {
            let what = if *compensation { "compensation failed" } else { "failed" };
            let end = if *terminal { "" } else { ", will retry" };
            format!(
                "{step}: {what} (attempt {attempt}, {}): {}{end}",
                error.class.name(),
                error.message
            )
        }
        EventKind::AttemptCancelled { step, attempt, .. } => {
            format!("{step}: cancelled (attempt {attempt})")
        }
        EventKind::RetryScheduled { step, attempt, delay_ms, .. } => {
            format!(
                "{step}: attempt {attempt} in {}",
                duration::format(Duration::from_millis(*delay_ms))
            )
        }
        EventKind::StepSkipped { step, reason, cancelled: true } => {
            format!("{step}: cancelled ({reason})")
        }
        EventKind::StepSkipped { step, reason, .. } => format!("{step}: skipped ({reason})"),
        EventKind::StepEscalated { step, error } => {
            format!(
                "{step}: ESCALATED, waiting for a decision: {} (wayline decide {} {step} retry|skip|rollback|fail)",
                error.message,
                execution.id()
            )
        }
        EventKind::Decided { step, decision, actor, .. } => {
            format!("{step}: {} decided {decision}", actor.by)
        }
        EventKind::Paused { actor, until } => {
            format!(
                "paused by {}{}",
                actor.by,
                until.map(|u| format!(" until {}", u.rfc3339())).unwrap_or_default()
            )
        }
        EventKind::Resumed { actor } => format!("resumed by {}", actor.by),
        EventKind::Stopping { error, .. } => {
            format!(
                "stopping: {}",
                error.as_ref().map(|e| e.message.as_str()).unwrap_or("requested")
            )
        }
        EventKind::RollbackStarted => "rolling back".to_owned(),
        EventKind::Finished { outcome, .. } => format!("{} {}", workflow.name, outcome.name()),
        EventKind::Created { .. } | EventKind::AttemptRunning { .. } => return None,
    })
}

fn round(d: Duration) -> Duration {
    if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64 / 10 * 10)
    }
}

fn table(execution: &Execution, now: Time) -> Vec<String> {
    let workflow = execution.workflow();
    let steps = execution.steps();
    let done = steps.iter().filter(|s| s.state.is_done()).count();
    let width = workflow.steps.iter().map(|s| s.id.len()).max().unwrap_or(4).min(40);
    let mut lines = vec![format!(
        "{} {}  {}  {done}/{} steps  {}",
        workflow.name,
        execution.id(),
        execution.status().name(),
        steps.len(),
        duration::format(round(now.since(execution.started_at().unwrap_or(now)))),
    )];
    // Long workflows: show what is active and the next few waiting steps only.
    let mut shown = 0;
    for &index in &workflow.order {
        let run = &steps[index];
        let active = !matches!(run.state, StepState::Pending) || shown < 20;
        if !active && steps.len() > 30 {
            continue;
        }
        shown += 1;
        let (mark, detail) = match &run.state {
            StepState::Pending => ("·", execution.waiting(index).unwrap_or_default()),
            StepState::Running { attempt, since, until, .. } => match until {
                Some(until) => {
                    ("◷", format!("attempt {attempt}, waiting until {}", until.rfc3339()))
                }
                None => (
                    "●",
                    format!("attempt {attempt}, {}", duration::format(round(now.since(*since)))),
                ),
            },
            StepState::Retrying { next, at } => {
                ("↻", format!("attempt {next} in {}", duration::format(round(at.since(now)))))
            }
            StepState::Succeeded => (
                "✓",
                format!("{} attempt{}", run.attempts, if run.attempts == 1 { "" } else { "s" }),
            ),
            StepState::Failed => {
                ("✗", run.error.as_ref().map(|e| e.message.clone()).unwrap_or_default())
            }
            StepState::Skipped { reason } => ("-", reason.clone()),
            StepState::Cancelled => ("⊘", String::new()),
            StepState::Escalated => (
                "!",
                format!(
                    "needs a decision: wayline decide {} {} …",
                    execution.id(),
                    workflow.steps[index].id
                ),
            ),
        };
        let detail: String = detail.chars().take(100).collect();
        lines.push(format!(
            "  {mark} {:<width$}  {:<12} {detail}",
            workflow.steps[index].id,
            run.status().name()
        ));
    }
    lines
}
