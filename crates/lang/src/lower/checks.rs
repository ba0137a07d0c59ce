//! Checks that need the whole workflow: group needs and branches expanded, cycles,
//! references to steps that are not upstream, outputs that do not exist, and steps that can
//! never run.

use std::collections::BTreeSet;

use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::graph::{self, Reachability};
use crate::model::*;

use super::{Ctx, Lower, Need};

impl Lower {
    pub(super) fn finish(
        &mut self,
        mut workflow: Workflow,
        declared: Vec<Vec<Need>>,
    ) -> Option<Workflow> {
        let count = workflow.steps.len();
        // Effective needs: declared steps, group members, and the condition of every branch.
        let mut needs: Vec<BTreeSet<StepIndex>> = vec![BTreeSet::new(); count];
        for (index, list) in declared.into_iter().enumerate() {
            for need in list {
                let (group, span) = match need {
                    Need::Step(need) => {
                        needs[index].insert(need);
                        continue;
                    }
                    Need::Group { group, span } => (group, span),
                };
                let members = workflow.groups[group].steps.clone();
                if members.is_empty() {
                    self.push(Diagnostic::warning(
                        Code::NoEffect,
                        span,
                        format!(
                            "group `{}` has no steps, so needing it waits for nothing",
                            workflow.groups[group].name
                        ),
                    ));
                }
                for member in members {
                    if member == index {
                        self.push(
                            Diagnostic::error(Code::SelfDependency, span, format!("step `{}` is in group `{}`, so needing the group means needing itself", workflow.steps[index].id, workflow.groups[group].name)),
                        );
                        continue;
                    }
                    self.need_spans.entry((index, member)).or_insert(span);
                    needs[index].insert(member);
                }
            }
        }
        for condition in 0..count {
            if let Body::Condition(Condition { then, otherwise, .. }) =
                &workflow.steps[condition].body
            {
                let branches: Vec<(StepIndex, bool)> = then
                    .iter()
                    .map(|&s| (s, true))
                    .chain(otherwise.iter().map(|&s| (s, false)))
                    .collect();
                for (step, taken) in branches {
                    needs[step].insert(condition);
                    workflow.steps[step].branches.push((condition, taken));
                }
            }
        }
        let needs: Vec<Vec<StepIndex>> =
            needs.into_iter().map(|set| set.into_iter().collect()).collect();
        let cycles = graph::cycles(&needs);
        for cycle in &cycles {
            // Shown in the order things would run: each step before the one that needs it.
            let names: Vec<&str> =
                cycle.iter().rev().map(|&i| workflow.steps[i].id.as_str()).collect();
            let (from, to) = (cycle[0], cycle[1]);
            let span =
                self.need_spans.get(&(from, to)).copied().unwrap_or(workflow.steps[from].span);
            self.push(
                Diagnostic::error(Code::Cycle, span, format!("dependency cycle: {}", names.join(" -> ")))
                    .with_label(format!("`{}` needs `{}` here", workflow.steps[from].id, workflow.steps[to].id))
                    .with_help("a step cannot (even indirectly) need a step that needs it; remove one of these dependencies"),
            );
        }
        if !cycles.is_empty() {
            return None;
        }
        let order = graph::topological_order(&needs)?;
        self.check_step_refs(&workflow, &needs, &order);
        self.check_never_runs(&workflow, &needs, &order);
        for (index, list) in needs.iter().enumerate() {
            workflow.steps[index].needs = list.clone();
        }
        workflow.dependents = graph::dependents(&needs);
        workflow.order = order;
        Some(workflow)
    }

    fn check_step_refs(
        &mut self,
        workflow: &Workflow,
        needs: &[Vec<StepIndex>],
        order: &[StepIndex],
    ) {
        let mut reach = Reachability::new(needs, order);
        for reference in std::mem::take(&mut self.step_refs) {
            let id = &reference.path[0];
            let Some(&target) = workflow.ids.get(id) else { continue };
            // The workflow's outputs read any step: all have finished by then.
            let from = match reference.ctx.step() {
                Some(from) => from,
                None if reference.ctx == Ctx::Outputs => target,
                None => continue,
            };
            let own = target == from && matches!(reference.ctx, Ctx::Compensate(_) | Ctx::Outputs);
            if target == from && !own {
                self.push(
                    Diagnostic::error(Code::NotUpstream, reference.span, format!("step `{id}` reads its own `steps.{id}`"))
                        .with_help("a step's outputs exist only after it finished; read them from a later step"),
                );
                continue;
            }
            if !own && !reach.is_upstream(target, from) {
                let reader = &workflow.steps[from].id;
                self.push(
                    Diagnostic::error(Code::NotUpstream, reference.span, format!("step `{reader}` reads `steps.{id}`, but `{id}` is not upstream of `{reader}`"))
                        .with_help(format!("add `{id}` to the `needs` of `{reader}` (directly or through another step) so its result exists when `{reader}` runs")),
                );
                continue;
            }
            let fan_out = workflow.steps[target].fan_out.is_some();
            match reference.path.get(1).map(String::as_str) {
                Some("items") if !fan_out => {
                    self.push(
                        Diagnostic::error(
                            Code::UnknownReference,
                            reference.span,
                            format!("step `{id}` has no `items`: it has no `for_each` or `matrix`"),
                        )
                        .with_help(format!("read `steps.{id}.outputs` instead")),
                    );
                    continue;
                }
                Some("outputs") => {}
                _ => continue,
            }
            let Some(key) = reference.path.get(2) else { continue };
            if fan_out {
                self.push(
                    Diagnostic::error(Code::UnknownReference, reference.span, format!("the outputs of fan-out step `{id}` are a list, one entry per item: it has no output `{key}`"))
                        .with_help(format!("read one item's as `steps.{id}.outputs[0].{key}`, or all of them as `steps.{id}.outputs.map(o, o.{key})`")),
                );
                continue;
            }
            let known: Option<Vec<String>> = match &workflow.steps[target].body {
                Body::Set(entries) => Some(entries.iter().map(|(k, _)| k.clone()).collect()),
                Body::Condition(_) => Some(vec!["result".into()]),
                Body::Wait(_) => Some(Vec::new()),
                Body::Http(_) => Some(
                    ["status", "headers", "body", "url", "redirects"].map(String::from).to_vec(),
                ),
                Body::Run(_) => None,
            };
            if let Some(known) = known
                && !known.contains(key)
            {
                let kind = workflow.steps[target].body.kind();
                let mut d = Diagnostic::error(
                    Code::UnknownReference,
                    reference.span,
                    format!("step `{id}` ({kind}) has no output `{key}`"),
                );
                d = match did_you_mean(key, known.iter().map(String::as_str)) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None if known.is_empty() => {
                        d.with_help(format!("a {kind} step has no outputs"))
                    }
                    None => d.with_help(format!("its outputs are: {}", known.join(", "))),
                };
                self.push(d);
            }
        }
    }

    /// A step listed in a branch of a condition can only run if that branch is taken. If,
    /// through steps with the default `if` (which are skipped when a need is skipped), it also
    /// depends on the other branch of the same condition, it can never run.
    fn check_never_runs(
        &mut self,
        workflow: &Workflow,
        needs: &[Vec<StepIndex>],
        order: &[StepIndex],
    ) {
        let mut requires: Vec<BTreeSet<(StepIndex, bool)>> =
            vec![BTreeSet::new(); workflow.steps.len()];
        let mut hopeless = vec![false; workflow.steps.len()];
        for &index in order {
            let step = &workflow.steps[index];
            let mut set: BTreeSet<(StepIndex, bool)> = step.branches.iter().copied().collect();
            if step.default_if() {
                if needs[index].iter().any(|&need| hopeless[need]) {
                    hopeless[index] = true;
                    continue;
                }
                for &need in &needs[index] {
                    set.extend(requires[need].iter().copied());
                }
            }
            let conflict =
                set.iter().find(|(condition, taken)| set.contains(&(*condition, !taken))).copied();
            if let Some((condition, _)) = conflict {
                hopeless[index] = true;
                let both_here = step
                    .branches
                    .iter()
                    .any(|&(c, t)| c == condition && step.branches.contains(&(c, !t)));
                if !both_here {
                    let name = &workflow.steps[condition].id;
                    self.push(
                        Diagnostic::error(Code::NeverRuns, step.span, format!("step `{}` can never run: it needs both the `then` and the `else` branch of condition `{name}`", step.id))
                            .with_help("only one branch of a condition runs; move the step, or give it an `if` such as `${{ always() }}`"),
                    );
                }
            }
            requires[index] = set;
        }
    }
}
