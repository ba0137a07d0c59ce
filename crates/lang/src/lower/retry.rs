//! Retry policies: a step's `retry` is merged over the workflow's, and contradictions are
//! judged on the merged policy but reported where they can be fixed.

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::format;
use crate::model::*;
use crate::yaml::{Node, Value};
use wayline_journal::duration;

use super::Lower;

/// Where each retry field was written, for messages about contradictions between fields that
/// may come from the workflow default and the step.
#[derive(Debug, Clone, Default)]
pub(super) struct RetrySpans {
    max_attempts: Option<Span>,
    backoff: Option<Span>,
    delay: Option<Span>,
    max_delay: Option<Span>,
    on: Option<Span>,
}

impl Lower {
    pub(super) fn retry(
        &mut self,
        node: &Node,
        base: &Retry,
        base_spans: &RetrySpans,
    ) -> (Retry, RetrySpans) {
        let mut retry = base.clone();
        let mut spans = base_spans.clone();
        let Some(obj) = self.object(node, &format::RETRY) else { return (retry, spans) };
        // A `max_attempts` that is itself wrong says nothing about whether the rest applies.
        let mut attempts_valid = true;
        if let Some(node) = obj.get("max_attempts") {
            attempts_valid = false;
            match node.value {
                Value::Int(value) if value < 1 => self.push(
                    Diagnostic::error(
                        Code::RetryConflict,
                        node.span,
                        format!("`max_attempts: {value}` would never run the step"),
                    )
                    .with_help("`max_attempts` counts every attempt, the first included: 1 means no retry, 3 means up to two retries"),
                ),
                _ => {
                    if let Some(value) = self.integer(node, "`max_attempts`", 1) {
                        retry.max_attempts = value.min(u32::MAX as i64) as u32;
                        spans.max_attempts = Some(node.span);
                        attempts_valid = true;
                    }
                }
            }
        }
        let mut factor = None;
        if let Some(node) = obj.get("factor") {
            match node.value {
                Value::Int(v) => factor = Some((v as f64, node.span)),
                Value::Float(v) if v.is_finite() => factor = Some((v, node.span)),
                _ => self.wrong_type(node, "`factor`", "a number like 2 or 1.5"),
            }
        }
        if let Some(node) = obj.get("backoff")
            && let Some(word) = self.word(node, "`backoff`", format::BACKOFFS)
        {
            retry.backoff = match word {
                "fixed" => Backoff::Fixed,
                "linear" => Backoff::Linear,
                "exponential" => Backoff::Exponential { factor: 2.0 },
                _ => Backoff::Random,
            };
            spans.backoff = Some(node.span);
        }
        if let Some((value, span)) = factor {
            match retry.backoff {
                Backoff::Exponential { .. } if (1.0..=1000.0).contains(&value) => {
                    retry.backoff = Backoff::Exponential { factor: value };
                }
                Backoff::Exponential { .. } => {
                    self.error(
                        Code::RetryConflict,
                        span,
                        format!("`factor` must be between 1 and 1000, not {value}"),
                    );
                }
                other => {
                    self.push(
                        Diagnostic::error(Code::RetryConflict, span, format!("`factor` only applies to `backoff: exponential`, but the backoff is {}", other.name()))
                            .with_help("remove `factor`, or set `backoff: exponential`"),
                    );
                }
            }
        }
        if let Some(node) = obj.get("delay")
            && let Some(value) = self.duration(node)
        {
            retry.delay = value;
            spans.delay = Some(node.span);
        }
        if let Some(node) = obj.get("max_delay")
            && let Some(value) = self.duration(node)
        {
            retry.max_delay = Some(value);
            spans.max_delay = Some(node.span);
        }
        if let Some(node) = obj.get("jitter")
            && let Some(word) = self.word(node, "`jitter`", format::JITTERS)
        {
            retry.jitter = match word {
                "none" => Jitter::None,
                "full" => Jitter::Full,
                _ => Jitter::Equal,
            };
        }
        if let Some(node) = obj.get("budget") {
            retry.budget = self.duration(node);
        }
        if let Some(node) = obj.get("on") {
            let mut on = RetryOn { failure: false, timeout: false, lost: false };
            for item in self.list(node, "`on`") {
                match self.word(item, "an error class", format::ERROR_CLASSES) {
                    Some("failure") => on.failure = true,
                    Some("timeout") => on.timeout = true,
                    Some(_) => on.lost = true,
                    None => {}
                }
            }
            retry.on = on;
            spans.on = Some(node.span);
        }
        // Contradictions, judged on the merged policy.
        // Each contradiction is reported at a field written in this object when there is one:
        // that is the line to change when the other half comes from the workflow's default.
        let own = |name: &str| obj.get(name).map(|node| node.span);
        if retry.backoff == Backoff::Random && retry.max_delay.is_none() {
            let span = own("backoff").or(spans.backoff).unwrap_or(obj.span.start());
            self.push(
                Diagnostic::error(Code::RetryConflict, span, "`backoff: random` needs `max_delay`")
                    .with_help("the pause is drawn between `delay` and `max_delay`; set both"),
            );
        }
        if let Some(max_delay) = retry.max_delay
            && max_delay < retry.delay
        {
            let span =
                own("max_delay").or(own("delay")).or(spans.max_delay).unwrap_or(obj.span.start());
            let help = match (own("max_delay"), spans.max_delay) {
                (None, Some(inherited)) => format!(
                    "`max_delay` comes from the workflow's `retry` (line {}); set a larger `max_delay` here, or a smaller `delay`",
                    inherited.line
                ),
                _ => "`max_delay` caps the pause; make it at least `delay`".to_owned(),
            };
            self.push(
                Diagnostic::error(
                    Code::RetryConflict,
                    span,
                    format!(
                        "`max_delay` ({}) is shorter than `delay` ({})",
                        duration::format(max_delay),
                        duration::format(retry.delay)
                    ),
                )
                .with_help(help),
            );
        }
        let on = retry.on;
        if retry.max_attempts > 1 && !(on.failure || on.timeout || on.lost) {
            let span = own("on").or(own("max_attempts")).or(spans.on).unwrap_or(obj.span.start());
            self.push(
                Diagnostic::error(Code::RetryConflict, span, format!("`on` is empty, so none of the {} attempts after the first can ever run", retry.max_attempts - 1))
                    .with_help("list the error classes to retry (failure, timeout, lost), or set `max_attempts: 1`"),
            );
        }
        if retry.max_attempts == 1 && attempts_valid {
            let tuned = ["backoff", "delay", "factor", "max_delay", "jitter", "budget"]
                .iter()
                .find_map(|field| obj.key(field));
            if let Some(key) = tuned {
                self.push(
                    Diagnostic::warning(
                        Code::NoEffect,
                        key.span,
                        format!("`{}` has no effect with `max_attempts: 1` (no retry)", key.name),
                    )
                    .with_help("set `max_attempts` to the number of attempts, the first included"),
                );
            }
        }
        (retry, spans)
    }
}
