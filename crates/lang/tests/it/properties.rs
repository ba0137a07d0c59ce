//! Property tests: no input panics the loader, random DAG workflows load and plan with levels
//! that respect every dependency, and an injected cycle is always reported as one.

use proptest::prelude::*;
use wayline_core::plan::Plan;
use wayline_lang::{Code, format};

// ----- nothing panics -----

/// Field names of every object of the format, so random documents reach deep into lowering.
fn field_names() -> Vec<&'static str> {
    let objects = [
        &format::WORKFLOW,
        &format::INPUT,
        &format::RETRY,
        &format::ESCALATION,
        &format::COMPENSATE,
        &format::GROUP,
        &format::STEP,
        &format::HTTP,
        &format::EXPECT,
        &format::WAIT,
        &format::AGENT,
    ];
    objects.iter().flat_map(|object| object.names()).collect()
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(field_names()).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
        1 => "[A-Za-z0-9 _.:-]{0,10}",
        1 => proptest::sample::select(vec!["a", "b", "build", "deploys", "version", "then"])
            .prop_map(str::to_owned),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    let words = vec![
        "5m",
        "1.5h",
        "0s",
        "250ms",
        "1d2h",
        "30",
        "-1",
        "0",
        "3",
        "1e309",
        "0x1f",
        "true",
        "no",
        "~",
        "null",
        "fixed",
        "exponential",
        "random",
        "linear",
        "full",
        "continue",
        "rollback",
        "escalate",
        "fail_fast",
        "string",
        "integer",
        "object",
        "a",
        "b",
        "build",
        "deploys",
        "https://example.com",
        "2026-12-01T09:00:00Z",
        "[]",
        "{}",
        "''",
        "\"\"",
    ];
    let fragments = vec![
        "${{ inputs.version }}",
        "${{ steps.a.outputs.x }}",
        "${{ steps.b.status == 'succeeded' }}",
        "${{ success() }}",
        "${{ always() || failure() }}",
        "${{ secrets.TOKEN }}",
        "${{ env.X + attempt }}",
        "${{ [1, 2].map(x, x * 2) }}",
        "${{ ((((1)))) }}",
        "${{ nope(1) }}",
        "${{ 1 + }}",
        "${{ 'unterminated }}",
        "${{",
        "}}",
        "${{ }}",
        "${{ {'a': {'b': 1}} }}",
        "${{ steps['a-b'].outputs['k'] }}",
        "${{ inputs.é + 'ü' }}",
    ];
    prop_oneof![
        3 => proptest::sample::select(words).prop_map(str::to_owned),
        3 => proptest::sample::select(fragments).prop_map(str::to_owned),
        1 => "[ -~]{0,12}",
        1 => ("[a-z ]{0,5}", "[ -~]{0,20}").prop_map(|(a, b)| format!("{a}${{{{ {b} }}}}")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// A YAML-ish tree, rendered in block or flow style with anchors and aliases sprinkled in.
#[derive(Debug, Clone)]
enum Tree {
    Scalar(String),
    Alias(u8),
    Anchored(u8, Box<Tree>),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        8 => scalar().prop_map(Tree::Scalar),
        1 => (0u8..4).prop_map(Tree::Alias),
    ];
    leaf.prop_recursive(12, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::Seq),
            proptest::collection::vec((key(), inner.clone()), 0..7).prop_map(Tree::Map),
            (0u8..4, inner).prop_map(|(anchor, tree)| Tree::Anchored(anchor, Box::new(tree))),
        ]
    })
}

fn quote(text: &str) -> String {
    if text.is_empty() || text.contains([':', '#', '{', '}', '[', ']', ',', '&', '*', '!', '|']) {
        format!("'{}'", text.replace('\'', "''"))
    } else {
        text.to_owned()
    }
}

fn flow(tree: &Tree, out: &mut String) {
    match tree {
        Tree::Scalar(text) => out.push_str(&quote(text)),
        Tree::Alias(anchor) => out.push_str(&format!("*x{anchor}")),
        Tree::Anchored(anchor, inner) => {
            out.push_str(&format!("&x{anchor} "));
            flow(inner, out);
        }
        Tree::Seq(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                flow(item, out);
            }
            out.push(']');
        }
        Tree::Map(entries) => {
            out.push('{');
            for (index, (key, value)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                out.push_str(&format!("{}: ", quote(key)));
                flow(value, out);
            }
            out.push('}');
        }
    }
}

/// Block style where it can be, flow style for every third collection; `raw` skips quoting so
/// the scalars can break the syntax too.
fn block(tree: &Tree, indent: usize, raw: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let scalar = |text: &str| if raw { text.to_owned() } else { quote(text) };
    match tree {
        Tree::Seq(items) if !items.is_empty() && indent % 3 != 2 => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                match item {
                    Tree::Seq(_) | Tree::Map(_) => {
                        out.push('\n');
                        block(item, indent + 2, raw, out);
                    }
                    _ => {
                        out.push(' ');
                        inline(item, raw, out);
                        out.push('\n');
                    }
                }
            }
        }
        Tree::Map(entries) if !entries.is_empty() && indent % 3 != 2 => {
            for (key, value) in entries {
                out.push_str(&format!("{pad}{}:", scalar(key)));
                match value {
                    Tree::Seq(items) if !items.is_empty() => {
                        out.push('\n');
                        block(value, indent + 2, raw, out);
                    }
                    Tree::Map(entries) if !entries.is_empty() => {
                        out.push('\n');
                        block(value, indent + 2, raw, out);
                    }
                    _ => {
                        out.push(' ');
                        inline(value, raw, out);
                        out.push('\n');
                    }
                }
            }
        }
        _ => {
            out.push_str(&pad);
            inline(tree, raw, out);
            out.push('\n');
        }
    }
}

fn inline(tree: &Tree, raw: bool, out: &mut String) {
    match tree {
        Tree::Scalar(text) if raw => out.push_str(text),
        _ => flow(tree, out),
    }
}

/// A valid workflow to mutate: every feature in one file.
const BASE: &str = include_str!("../../../../examples/release.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = wayline_lang::load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_documents_never_panic(tree in tree(), raw in any::<bool>(), as_flow in any::<bool>()) {
        let mut text = String::new();
        if as_flow { flow(&tree, &mut text) } else { block(&tree, 0, raw, &mut text) }
        let _ = wayline_lang::load(&text);
    }

    #[test]
    fn deep_nesting_never_panics(
        kinds in proptest::collection::vec(0u8..4, 0..160),
        leaf in scalar(),
    ) {
        // Flow and block collections mixed, down past the depth limit.
        let mut text = String::from("name: deep\nsteps:\n  - id: a\n    set:\n      v: ");
        let mut close = String::new();
        for (depth, kind) in kinds.iter().enumerate() {
            match kind {
                0 => { text.push('['); close.insert(0, ']'); }
                1 => { text.push_str("{k: "); close.insert(0, '}'); }
                2 => text.push_str(&format!("\n{}- ", " ".repeat(8 + depth))),
                _ => text.push_str(&format!("\n{}k{depth}: ", " ".repeat(8 + depth))),
            }
        }
        text.push_str(&quote(&leaf));
        text.push_str(&close);
        text.push('\n');
        let loaded = wayline_lang::load(&text);
        if kinds.len() > wayline_lang::yaml::MAX_DEPTH {
            prop_assert!(loaded.workflow.is_none());
        }
    }

    #[test]
    fn random_steps_in_a_real_workflow_never_panic(steps in proptest::collection::vec(tree(), 1..6)) {
        let mut text = String::from("name: fuzz\ninputs:\n  version: { type: string }\ngroups:\n  deploys: {}\nsteps:\n");
        for (index, step) in steps.iter().enumerate() {
            text.push_str(&format!("  - id: {}\n", ["a", "b", "build", "deploys", "c", "d"][index]));
            if let Tree::Map(entries) = step {
                for (key, value) in entries {
                    text.push_str(&format!("    {}: ", quote(key)));
                    flow(value, &mut text);
                    text.push('\n');
                }
            }
        }
        let _ = wayline_lang::load(&text);
    }

    #[test]
    fn edited_examples_never_panic(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0usize..40, "[ -~\n\t]{0,8}"), 1..4)
    ) {
        let mut text = BASE.to_owned();
        for (at, remove, insert) in edits {
            let start = at.index(text.len() + 1);
            let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (start + remove).min(text.len());
            let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
        }
        let _ = wayline_lang::load(&text);
    }
}

// ----- random DAGs -----

/// A random acyclic workflow: step `i` needs some earlier steps and maybe a group whose members
/// all come earlier; some steps read an output of a direct need.
#[derive(Debug, Clone)]
struct Dag {
    needs: Vec<Vec<usize>>,
    /// Group of each step, if any (groups `g0`, `g1`, `g2`).
    group: Vec<Option<usize>>,
    /// Groups each step needs by name.
    group_needs: Vec<Vec<usize>>,
    /// The order the steps are written in the file.
    order: Vec<usize>,
}

const GROUPS: usize = 3;

fn dag(max: usize) -> impl Strategy<Value = Dag> {
    (1..max).prop_flat_map(|n| {
        let needs = proptest::collection::vec(
            proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            n,
        );
        let group = proptest::collection::vec(proptest::option::weighted(0.3, 0..GROUPS), n);
        let group_needs = proptest::collection::vec(proptest::option::weighted(0.2, 0..GROUPS), n);
        let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        (needs, group, group_needs, order).prop_map(move |(picks, group, wanted, order)| {
            let needs: Vec<Vec<usize>> = picks
                .iter()
                .enumerate()
                .map(|(index, picks)| {
                    let mut list: Vec<usize> = if index == 0 {
                        Vec::new()
                    } else {
                        picks.iter().map(|p| p.index(index)).collect()
                    };
                    list.sort_unstable();
                    list.dedup();
                    list
                })
                .collect();
            // A step may need a group only when it has members and every one comes before it.
            let group_needs = wanted
                .iter()
                .enumerate()
                .map(|(index, wanted)| {
                    wanted
                        .filter(|&g| {
                            let members: Vec<usize> =
                                (0..n).filter(|&m| group[m] == Some(g)).collect();
                            !members.is_empty() && members.iter().all(|&m| m < index)
                        })
                        .into_iter()
                        .collect()
                })
                .collect();
            Dag { needs, group, group_needs, order }
        })
    })
}

impl Dag {
    fn yaml(&self) -> String {
        let mut text = String::from("name: random\ngroups:\n");
        for g in 0..GROUPS {
            text.push_str(&format!("  g{g}: {{ max_parallel: {} }}\n", g + 1));
        }
        text.push_str("steps:\n");
        for &index in &self.order {
            text.push_str(&format!("  - id: s{index}\n"));
            let mut needs: Vec<String> =
                self.needs[index].iter().map(|n| format!("s{n}")).collect();
            needs.extend(self.group_needs[index].iter().map(|g| format!("g{g}")));
            if !needs.is_empty() {
                text.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
            }
            if let Some(g) = self.group[index] {
                text.push_str(&format!("    group: g{g}\n"));
            }
            // Read the output of a direct need, and set one for dependents to read.
            match self.needs[index].first() {
                Some(need) => text.push_str(&format!(
                    "    set: {{ v: \"${{{{ steps.s{need}.outputs.v }}}}-{index}\" }}\n"
                )),
                None => text.push_str(&format!("    set: {{ v: \"{index}\" }}\n")),
            }
        }
        text
    }

    /// Every dependency, group needs expanded.
    fn effective(&self) -> Vec<Vec<usize>> {
        (0..self.needs.len())
            .map(|index| {
                let mut list = self.needs[index].clone();
                for &g in &self.group_needs[index] {
                    list.extend((0..self.needs.len()).filter(|&m| self.group[m] == Some(g)));
                }
                list.sort_unstable();
                list.dedup();
                list
            })
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_load_and_plan_levels_respect_every_edge(dag in dag(40)) {
        let text = dag.yaml();
        let loaded = wayline_lang::load(&text);
        prop_assert!(loaded.diagnostics.is_empty(), "{}\n{:?}", text, loaded.diagnostics);
        let workflow = loaded.workflow.expect("valid");
        let effective = dag.effective();
        let index_of = |id: &str| id[1..].parse::<usize>().unwrap();
        for step in &workflow.steps {
            let mut needs: Vec<usize> =
                step.needs.iter().map(|&n| index_of(&workflow.steps[n].id)).collect();
            needs.sort_unstable();
            prop_assert_eq!(&needs, &effective[index_of(&step.id)], "needs of {}", step.id);
        }
        let plan = Plan::new(&workflow);
        let mut level = vec![usize::MAX; effective.len()];
        for (at, ids) in plan.levels.iter().enumerate() {
            for id in ids {
                prop_assert_eq!(level[index_of(id)], usize::MAX, "{} is listed twice", id);
                level[index_of(id)] = at;
            }
        }
        for (step, needs) in effective.iter().enumerate() {
            prop_assert!(level[step] != usize::MAX, "s{} is in no level", step);
            for &need in needs {
                prop_assert!(level[need] < level[step], "s{} (level {}) needs s{} (level {})", step, level[step], need, level[need]);
            }
        }
    }

    #[test]
    fn an_injected_cycle_is_always_reported(dag in dag(30), start in any::<prop::sample::Index>(), walk in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let mut dag = dag;
        let n = dag.needs.len();
        prop_assume!(n >= 2);
        // Walk down the needs from some step, then make the last step reached need the first.
        let first = 1 + start.index(n - 1);
        if dag.needs[first].is_empty() {
            dag.needs[first].push(0);
        }
        let mut path = vec![first, dag.needs[first][0]];
        for pick in walk {
            let here = *path.last().unwrap();
            let options = &dag.needs[here];
            if options.is_empty() {
                break;
            }
            path.push(options[pick.index(options.len())]);
        }
        let last = *path.last().unwrap();
        dag.needs[last].push(first);
        let text = dag.yaml();
        let loaded = wayline_lang::load(&text);
        prop_assert!(loaded.workflow.is_none());
        let cycles: Vec<&str> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::Cycle)
            .map(|d| d.message.as_str())
            .collect();
        prop_assert!(!cycles.is_empty(), "{}\n{:?}", text, loaded.diagnostics);
        // Each cycle is printed in run order: every step is needed by the one after it.
        let effective = dag.effective();
        for message in cycles {
            let names: Vec<usize> = message
                .strip_prefix("dependency cycle: ")
                .expect("message format")
                .split(" -> ")
                .map(|id| id[1..].parse().unwrap())
                .collect();
            prop_assert!(names.len() >= 3, "{}", message);
            prop_assert_eq!(names.first(), names.last());
            for pair in names.windows(2) {
                prop_assert!(effective[pair[1]].contains(&pair[0]), "{}: s{} does not need s{}", message, pair[1], pair[0]);
            }
        }
    }
}
