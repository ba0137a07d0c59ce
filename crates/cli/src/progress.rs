//! What a person sees while `wayline run` works: on a terminal, a live table of steps
//! (status, attempt, elapsed time, why a step waits) redrawn in place; on a pipe, one plain
//! line per thing that happened.
//!
//! Everything a step wrote or caused (its output, its error messages) is shown with control
//! characters escaped, so a step cannot move the cursor, clear the screen or draw a fake line.
//! The table fits the terminal: a line wider than it would wrap, and a table taller than it
//! would scroll; either way moving the cursor back over the drawn lines would miss, and each
//! redraw would leave a copy of the table behind.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use wayline_core::execution::{AttemptState, Execution, StepRun, StepState};
use wayline_journal::EventKind;
use wayline_journal::StepStatus;
use wayline_journal::duration;
use wayline_journal::{Event, Time};

use crate::output::escape;

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
            say!("[{at:>7.2}s] {}", escape(&line));
        }
    }

    /// A log line of a step (shown on a pipe, or above the table on a terminal).
    pub fn log(&mut self, step: &str, text: &str) {
        self.clear();
        say!("  {step} | {}", escape(text));
    }

    /// On a terminal: redraws the table.
    pub fn draw(&mut self, execution: &Execution, now: Time) {
        if !self.terminal {
            return;
        }
        let mut out = String::new();
        let lines = table(execution, now, Size::of_stderr());
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for line in &lines {
            out.push_str("\x1b[2K");
            out.push_str(line);
            out.push('\n');
        }
        // A table shorter than the last one leaves no old lines below it.
        out.push_str("\x1b[J");
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
    // `deploy`, or `deploy[3]` for an item of a fan-out.
    let who = event.kind.subject().unwrap_or_default();
    Some(match &event.kind {
        EventKind::Started => format!("{} started", workflow.name),
        EventKind::Recovered { owner } => format!("taken over by {owner}"),
        EventKind::AttemptStarted { attempt, compensation: true, .. } => {
            format!("{who}: compensating (attempt {attempt})")
        }
        EventKind::AttemptStarted { attempt, until: Some(until), .. } => {
            format!("{who}: waiting until {} (attempt {attempt})", until.rfc3339())
        }
        EventKind::AttemptStarted { attempt, .. } => {
            format!("{who}: running (attempt {attempt})")
        }
        EventKind::AttemptSucceeded { compensation: true, .. } => {
            format!("{who}: compensated")
        }
        EventKind::AttemptSucceeded { step, attempt, item, .. } => {
            // An item's time is its own attempt's: the step's clock started with its first item.
            let took = if item.is_some() { None } else { elapsed(step) };
            format!(
                "{who}: succeeded (attempt {attempt}{})",
                took.map(|e| format!(", {e}")).unwrap_or_default()
            )
        }
        EventKind::AttemptFailed { attempt, compensation, error, terminal, .. } => {
            let what = if *compensation { "compensation failed" } else { "failed" };
            let end = if *terminal { "" } else { ", will retry" };
            format!(
                "{who}: {what} (attempt {attempt}, {}): {}{end}",
                error.class.name(),
                error.message
            )
        }
        EventKind::AttemptCancelled { attempt, .. } => {
            format!("{who}: cancelled (attempt {attempt})")
        }
        EventKind::RetryScheduled { attempt, delay_ms, .. } => {
            format!(
                "{who}: attempt {attempt} in {}",
                duration::format(Duration::from_millis(*delay_ms))
            )
        }
        EventKind::StepSkipped { reason, cancelled: true, .. } => {
            format!("{who}: cancelled ({reason})")
        }
        EventKind::StepSkipped { reason, .. } => format!("{who}: skipped ({reason})"),
        EventKind::FannedOut { step, items } => {
            format!("{step}: {} item{}", items.len(), if items.len() == 1 { "" } else { "s" })
        }
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
        EventKind::BreakpointsSet { steps, every: true, .. } if steps.is_empty() => {
            "breaks before every step".to_owned()
        }
        EventKind::BreakpointsSet { steps, every, .. } => format!(
            "breaks before {}{}",
            steps.join(", "),
            if *every { " and every step" } else { "" }
        ),
        EventKind::BreakpointHit { steps } => format!(
            "BREAKPOINT before {}: paused (wayline step {id} runs the next steps, wayline resume {id} goes on, wayline inspect {id} STEP shows what a step will do)",
            steps.join(", "),
            id = execution.id()
        ),
        EventKind::Stepped { actor } => format!("step by {}", actor.by),
        EventKind::Patched { step, outputs, inputs, actor } => {
            let mut changed: Vec<String> = Vec::new();
            if let Some(step) = step {
                changed.extend(outputs.keys().map(|key| format!("steps.{step}.outputs.{key}")));
            }
            changed.extend(inputs.keys().map(|key| format!("inputs.{key}")));
            format!("patched by {}: {}", actor.by, changed.join(", "))
        }
        EventKind::Redriven { actor, steps, .. } => {
            format!("rerun by {}: {} run again", actor.by, steps.join(", "))
        }
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

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: usize,
    pub columns: usize,
}

impl Size {
    /// When the terminal does not say.
    const FALLBACK: Size = Size { rows: 24, columns: 80 };

    /// The size of the terminal on stderr, where the table is drawn; read at every redraw,
    /// so a resized window is followed.
    fn of_stderr() -> Size {
        match rustix::termios::tcgetwinsize(std::io::stderr()) {
            Ok(size) if size.ws_row > 0 && size.ws_col > 0 => {
                Size { rows: size.ws_row.into(), columns: size.ws_col.into() }
            }
            _ => Size::FALLBACK,
        }
    }
}

/// The table: a header line, then a line per step, at most `size.rows - 1` lines (the last
/// row stays free for the cursor) and none wider than the terminal. When the steps do not
/// all fit, those that need attention are shown (escalated, failed, running, retrying, then
/// the next pending ones), in the workflow's order, and one line counts the others.
fn table(execution: &Execution, now: Time, size: Size) -> Vec<String> {
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
    let room = size.rows.saturating_sub(2);
    let mut shown = vec![steps.len() <= room; steps.len()];
    if steps.len() > room {
        // One row goes to the line that counts the hidden steps.
        let mut ranked: Vec<(u8, usize, usize)> = workflow
            .order
            .iter()
            .enumerate()
            .map(|(position, &index)| (urgency(steps[index].status()), position, index))
            .collect();
        ranked.sort_unstable();
        for &(_, _, index) in ranked.iter().take(room.saturating_sub(1)) {
            shown[index] = true;
        }
    }
    for &index in workflow.order.iter().filter(|&&index| shown[index]) {
        let run = &steps[index];
        let (mark, detail) = match &run.state {
            StepState::Pending => ("·", execution.waiting(index).unwrap_or_default()),
            StepState::Active(AttemptState::Running { attempt, since, until, .. }) => match until {
                Some(until) => {
                    ("◷", format!("attempt {attempt}, waiting until {}", until.rfc3339()))
                }
                None => (
                    "●",
                    format!("attempt {attempt}, {}", duration::format(round(now.since(*since)))),
                ),
            },
            StepState::Active(AttemptState::Retrying { next, at }) => {
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
            StepState::FannedOut => ("●", items_detail(run)),
            StepState::Escalated => (
                "!",
                format!(
                    "needs a decision: wayline decide {} {} …",
                    execution.id(),
                    workflow.steps[index].id
                ),
            ),
        };
        // Bounded before escaping: the line is cut to the terminal's width anyway.
        let detail: String = detail.chars().take(200).collect();
        lines.push(format!(
            "  {mark} {:<width$}  {:<12} {}",
            workflow.steps[index].id,
            run.status().name(),
            escape(&detail)
        ));
    }
    let hidden = shown.iter().filter(|shown| !**shown).count();
    if hidden > 0 && room > 0 {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for (run, _) in steps.iter().zip(&shown).filter(|(_, shown)| !**shown) {
            let name = run.status().name();
            match counts.iter_mut().find(|(counted, _)| *counted == name) {
                Some((_, count)) => *count += 1,
                None => counts.push((name, 1)),
            }
        }
        let counts: Vec<String> =
            counts.iter().map(|(name, count)| format!("{count} {name}")).collect();
        lines.push(format!("  … {hidden} more: {}", counts.join(", ")));
    }
    lines.truncate(size.rows.saturating_sub(1).max(1));
    lines.iter().map(|line| fit(line, size.columns)).collect()
}

/// How far a fan-out got: `4/10 items done, 3 running, 1 failed`.
fn items_detail(run: &StepRun) -> String {
    let Some(items) = &run.items else { return String::new() };
    let done = items.runs.iter().filter(|item| item.state.is_done()).count();
    let mut detail = format!("{done}/{} items done", items.values.len());
    if items.running() > 0 {
        let _ = write!(detail, ", {} running", items.running());
    }
    if items.failed() > 0 {
        let _ = write!(detail, ", {} failed", items.failed());
    }
    detail
}

/// How much a step needs to be seen, most first.
fn urgency(status: StepStatus) -> u8 {
    match status {
        StepStatus::Escalated => 0,
        StepStatus::Failed => 1,
        StepStatus::Running | StepStatus::Compensating => 2,
        StepStatus::Retrying => 3,
        StepStatus::Pending => 4,
        StepStatus::Cancelled => 5,
        StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Compensated => 6,
    }
}

/// `line` cut to fit in `columns` (one column short of it: a line that ends in the last
/// column leaves some terminals about to wrap), marked with `…` where it was cut.
fn fit(line: &str, columns: usize) -> String {
    let room = columns.saturating_sub(1).max(1);
    if line.chars().map(cells).sum::<usize>() <= room {
        return line.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in line.chars() {
        // One cell stays for the `…`.
        if used + cells(c) + 1 > room {
            break;
        }
        out.push(c);
        used += cells(c);
    }
    out.push('…');
    out
}

/// The cells a character takes on a terminal: two for the wide East Asian ranges and emoji,
/// one for the rest (close enough for a progress table; control characters are escaped).
fn cells(c: char) -> usize {
    let wide = matches!(c as u32,
        0x1100..=0x115f
        | 0x2e80..=0x303e
        | 0x3041..=0x33ff
        | 0x3400..=0x4dbf
        | 0x4e00..=0x9fff
        | 0xa000..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1f64f
        | 0x1f900..=0x1f9ff
        | 0x20000..=0x3fffd);
    if wide { 2 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_out_is_one_line_that_counts_its_items() {
        use std::sync::Arc;
        use wayline_core::execution::{Attempt, AttemptResult, Created, Input, Secrets};
        let yaml = "name: fan\nsteps:\n  - id: shard\n    for_each: [1, 2, 3, 4, 5]\n    max_parallel: 3\n    tolerate: 2\n    run: work\n";
        let workflow = Arc::new(wayline_lang::load(yaml).workflow.expect("valid"));
        let now = Time::from_millis(1_000_000);
        let created = Created {
            id: "ex".into(),
            workflow,
            source: yaml.into(),
            path: "f".into(),
            inputs: Default::default(),
            imports: Default::default(),
        };
        let (mut execution, _) = Execution::create(created, Arc::new(Secrets::default()), now);
        execution.handle(Input::Start, now).expect("started");
        let end =
            |item, result| Input::Finished { attempt: Attempt::of_item(0, Some(item), 1), result };
        let failed = AttemptResult::Failed {
            error: wayline_journal::ErrorInfo::new(wayline_journal::ErrorClass::Failure, "no"),
            outputs: Default::default(),
            retry_after: None,
        };
        execution
            .handle(end(0, AttemptResult::Succeeded { outputs: Default::default() }), now)
            .unwrap();
        execution.handle(end(1, failed), now).unwrap();
        let lines = table(&execution, now, Size { rows: 24, columns: 80 });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[1].trim_end(),
            "  ● shard  running      2/5 items done, 3 running, 1 failed"
        );
    }

    #[test]
    fn lines_are_cut_to_the_terminal_width() {
        assert_eq!(fit("short", 80), "short");
        assert_eq!(fit("exactly nine", 13), "exactly nine");
        assert_eq!(fit("exactly nine!", 13), "exactly nin…");
        assert_eq!(fit("漢字漢字漢字", 8), "漢字漢…");
        assert_eq!(fit("anything", 1), "…");
    }
}
