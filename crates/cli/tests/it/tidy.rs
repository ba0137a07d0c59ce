//! Rules of the codebase that tools check, so reviewers don't have to (ARCHITECTURE.md,
//! "Invariants").

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use super::root;

/// Every Rust source file says why it exists in its first line.
#[test]
fn every_source_file_starts_with_a_doc_line() {
    let mut missing = Vec::new();
    visit(&root().join("crates"), &mut |path| {
        if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if !text.starts_with("//!") {
                missing.push(path.strip_prefix(root()).unwrap_or(path).display().to_string());
            }
        }
    });
    assert!(missing.is_empty(), "files without a leading `//!` line:\n{}", missing.join("\n"));
}

/// Every `docs/design.md §N.M` the code cites names a section that exists.
#[test]
fn every_design_reference_resolves() {
    let design = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    let sections: BTreeSet<String> = design
        .lines()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| line.trim_start_matches('#').split_whitespace().next())
        .map(|number| number.trim_end_matches('.').to_owned())
        .collect();
    let mut broken = Vec::new();
    visit(&root().join("crates"), &mut |path| {
        if path.extension().is_none_or(|ext| ext != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for (at, _) in text.match_indices("docs/design.md §") {
            let rest = &text[at + "docs/design.md §".len()..];
            let number: String =
                rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let number = number.trim_end_matches('.');
            // Not a reference (this test's own text).
            if number.is_empty() {
                continue;
            }
            if !sections.contains(number) {
                broken.push(format!("{}: §{number}", path.display()));
            }
        }
    });
    assert!(broken.is_empty(), "references to missing sections:\n{}", broken.join("\n"));
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "target") {
                continue;
            }
            visit(&path, f);
        } else {
            f(&path);
        }
    }
}

/// What each crate may depend on (normal dependencies, transitively): the layering of
/// ARCHITECTURE.md. A wayline crate not listed in a rule's `wayline` may not be reached at all;
/// `forbidden` lists outside crates a rule's crate must not reach either.
struct Rule {
    krate: &'static str,
    wayline: &'static [&'static str],
    forbidden: &'static [&'static str],
}

/// Crates that make a crate impure: an async runtime, a database, HTTP, processes.
const IMPURE: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "rusqlite",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "reqwest",
    "hyper",
    "axum",
    "rustix",
];

const RULES: &[Rule] = &[
    // The journal is the bottom layer: shared words, no behaviour.
    Rule { krate: "wayline-journal", wayline: &[], forbidden: IMPURE },
    Rule { krate: "wayline-lang", wayline: &["wayline-journal"], forbidden: IMPURE },
    Rule {
        krate: "wayline-core",
        wayline: &["wayline-journal", "wayline-lang"],
        forbidden: IMPURE,
    },
    // Executors know nothing of workflows, journals' meaning or storage (the masker is the
    // journal's, so that what is masked is decided once).
    Rule {
        krate: "wayline-exec",
        wayline: &["wayline-journal"],
        forbidden: &["rusqlite", "tokio-postgres"],
    },
    // The store keeps journals without understanding them: no language, no state machine.
    Rule {
        krate: "wayline-store",
        wayline: &["wayline-journal"],
        forbidden: &["rusqlite", "tokio-postgres", "reqwest"],
    },
    Rule {
        krate: "wayline-store-sqlite",
        wayline: &["wayline-journal", "wayline-store"],
        forbidden: &["tokio-postgres", "reqwest"],
    },
    Rule {
        krate: "wayline-store-postgres",
        wayline: &["wayline-journal", "wayline-store"],
        forbidden: &["rusqlite", "reqwest"],
    },
    // The runtime is generic over the store: it never names a backend.
    Rule {
        krate: "wayline-runtime",
        wayline: &[
            "wayline-journal",
            "wayline-lang",
            "wayline-core",
            "wayline-exec",
            "wayline-store",
        ],
        forbidden: &["rusqlite", "tokio-postgres"],
    },
    // The API knows HTTP, and reaches executions only through the runtime and the store's
    // trait: no SQL and no concrete backend (the executors come with the runtime).
    Rule {
        krate: "wayline-server",
        wayline: &[
            "wayline-journal",
            "wayline-lang",
            "wayline-core",
            "wayline-exec",
            "wayline-runtime",
            "wayline-store",
        ],
        forbidden: &["rusqlite", "tokio-postgres"],
    },
    // Choosing a backend is all the backend crate does.
    Rule {
        krate: "wayline-backend",
        wayline: &[
            "wayline-journal",
            "wayline-store",
            "wayline-store-sqlite",
            "wayline-store-postgres",
        ],
        forbidden: &["reqwest"],
    },
];

/// Every way a crate breaks its rule, in a dependency graph (crate name → direct dependencies).
fn violations(graph: &HashMap<&str, Vec<&str>>) -> Vec<String> {
    let mut out = Vec::new();
    for rule in RULES {
        let Some(direct) = graph.get(rule.krate) else {
            out.push(format!("{} is not in the workspace", rule.krate));
            continue;
        };
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&str> = direct.clone();
        while let Some(name) = stack.pop() {
            if seen.insert(name) {
                stack.extend(graph.get(name).into_iter().flatten());
            }
        }
        for name in seen {
            let wayline = name.starts_with("wayline");
            if (wayline && !rule.wayline.contains(&name)) || rule.forbidden.contains(&name) {
                out.push(format!("{} depends on {name}", rule.krate));
            }
        }
    }
    out
}

/// The workspace's normal dependency graph for this platform, from `cargo metadata`.
fn workspace_graph() -> HashMap<String, Vec<String>> {
    // Only this platform's dependencies: others are never downloaded by a build.
    #[allow(clippy::disallowed_methods)] // asks rustc and cargo about the build
    let rustc = std::process::Command::new("rustc").arg("-vV").output().expect("rustc runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    #[allow(clippy::disallowed_methods)]
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"].as_array().unwrap().iter().any(|kind| kind["kind"].is_null())
                })
                .map(|dep| names[dep["pkg"].as_str().unwrap()].to_owned())
                .collect();
            (names[node["id"].as_str().unwrap()].to_owned(), deps)
        })
        .collect()
}

/// The layering holds: every crate depends only on what its rule allows.
#[test]
fn dependency_boundaries() {
    let graph = workspace_graph();
    let graph: HashMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(name, deps)| (name.as_str(), deps.iter().map(String::as_str).collect()))
        .collect();
    let found = violations(&graph);
    assert!(found.is_empty(), "the layering is broken:\n{}", found.join("\n"));
}

/// The check fails when a forbidden dependency is added: the real graph with one edge more for
/// each rule — a backend under the runtime, the state machine under the store, tokio under the
/// language, the language under the executors.
#[test]
fn dependency_boundaries_catch_a_forbidden_edge() {
    let graph = workspace_graph();
    let base: HashMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(name, deps)| (name.as_str(), deps.iter().map(String::as_str).collect()))
        .collect();
    for (from, to) in [
        ("wayline-runtime", "wayline-store-sqlite"),
        ("wayline-store", "wayline-core"),
        ("wayline-lang", "tokio"),
        ("wayline-exec", "wayline-lang"),
        ("wayline-journal", "wayline-lang"),
        ("wayline-core", "reqwest"),
    ] {
        let mut broken = base.clone();
        broken.get_mut(from).expect("the crate exists").push(to);
        let found = violations(&broken);
        assert!(
            found.iter().any(|line| line.starts_with(from)),
            "adding {from} -> {to} went unnoticed: {found:?}"
        );
    }
}
