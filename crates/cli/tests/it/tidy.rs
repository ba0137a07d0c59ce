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

/// The pure crates stay pure: no async runtime, database, HTTP or process crate anywhere in
/// their (normal) dependency tree.
#[test]
fn dependency_boundaries() {
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
    let nodes: HashMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
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
                .map(|dep| dep["pkg"].as_str().unwrap())
                .collect();
            (node["id"].as_str().unwrap(), deps)
        })
        .collect();
    let forbidden = [
        "tokio",
        "async-std",
        "rusqlite",
        "tokio-postgres",
        "postgres",
        "sqlx",
        "reqwest",
        "hyper",
        "axum",
        "wayline-exec",
        "wayline-runtime",
        "wayline-store",
    ];
    for pure in ["wayline-lang", "wayline-core"] {
        let start = names
            .iter()
            .find(|(_, name)| **name == pure)
            .map(|(id, _)| *id)
            .expect("the crate exists");
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(nodes.get(id).into_iter().flatten());
            }
        }
        let bad: Vec<&str> =
            seen.iter().map(|id| names[id]).filter(|name| forbidden.contains(name)).collect();
        assert!(bad.is_empty(), "{pure} depends on {bad:?}");
    }
}
