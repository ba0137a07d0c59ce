//! Valid workflows that validation warns about, one per kind of warning. Each fixture's
//! diagnostics, rendered exactly as `wayline validate` prints them, are compared with
//! `<fixture>.expected` next to it (`UPDATE_EXPECT=1` rewrites the snapshots; read the diff).

use std::collections::BTreeSet;

use expect_test::expect_file;

use crate::{crate_path, render};

const DIR: &str = "tests/fixtures/warnings";

/// Loads fixture `name`, checks that it is valid and only warned about, and compares its
/// diagnostics with the snapshot `<name>.expected`.
fn check(name: &str) {
    let path = crate_path(&format!("{DIR}/{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let loaded = wayline_lang::load(&text);
    assert!(loaded.workflow.is_some(), "fixture `{name}` should be valid");
    assert!(!loaded.diagnostics.is_empty(), "fixture `{name}` has no warning");
    assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "fixture `{name}` has an error");
    let shown = render(&format!("{name}.yaml"), &text);
    expect_file![crate_path(&format!("{DIR}/{name}.expected"))].assert_eq(&shown);
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
        const STORED: &[&str] = &[$(stringify!($name)),*];
    };
}

fixtures! {
    raw_url,
}

#[test]
fn every_fixture_has_a_test_and_a_snapshot() {
    let mut yaml = BTreeSet::new();
    let mut expected = BTreeSet::new();
    for entry in std::fs::read_dir(crate_path(DIR)).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => yaml.insert(stem),
            Some("expected") => expected.insert(stem),
            _ => panic!("unexpected file {}", path.display()),
        };
    }
    let stored: BTreeSet<String> = STORED.iter().map(|s| s.to_string()).collect();
    assert_eq!(yaml, stored, "each fixture needs a line in `fixtures!`, and each line a fixture");
    assert_eq!(expected, stored, "each fixture needs a snapshot: run with UPDATE_EXPECT=1");
}
