//! Invalid workflows, one per kind of mistake. Each fixture's diagnostics, rendered exactly as
//! `wayline validate` prints them, are compared with `<fixture>.expected` next to it
//! (`UPDATE_EXPECT=1 cargo nextest run -p wayline-lang` rewrites the snapshots; read the diff).

use std::collections::BTreeSet;

use expect_test::{expect, expect_file};

use crate::{crate_path, render};

const DIR: &str = "tests/fixtures/invalid";

/// Loads `text` as fixture `name`, checks that it is refused, and compares its diagnostics
/// with the snapshot `<name>.expected`.
fn check(name: &str, text: &str) {
    let loaded = wayline_lang::load(text);
    assert!(loaded.workflow.is_none(), "fixture `{name}` should be invalid");
    assert!(loaded.diagnostics.iter().any(|d| d.is_error()), "fixture `{name}` has no error");
    let shown = render(&format!("{name}.yaml"), text);
    expect_file![crate_path(&format!("{DIR}/{name}.expected"))].assert_eq(&shown);
}

fn fixture(name: &str) -> String {
    let path = crate_path(&format!("{DIR}/{name}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One test per stored fixture, and the list of them for the completeness check.
macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), &fixture(stringify!($name)));
            }
        )*
        const STORED: &[&str] = &[$(stringify!($name)),*];
    };
}

fixtures! {
    // the shape of the file
    yaml_syntax,
    colon_in_value,
    multiple_documents,
    tabs,
    empty,
    yaml_tag,
    not_a_mapping,
    unsupported_version,
    unknown_field,
    unknown_field_no_suggestion,
    missing_field,
    wrong_type,
    duplicate_key,
    misplaced_fields,
    // steps and the graph
    duplicate_id,
    empty_steps,
    missing_body,
    multiple_bodies,
    bad_name,
    unknown_step,
    self_dependency,
    cycle,
    unknown_group,
    group_needs_itself,
    id_is_group,
    both_branches,
    never_runs,
    bad_compensate,
    http,
    url_without_host,
    // values
    bad_duration,
    bad_timestamp,
    input_default,
    retry_random_without_max_delay,
    retry_max_delay_below_delay,
    retry_zero_attempts,
    retry_empty_on,
    retry_factor_without_exponential,
    retry_inherited_conflict,
    // expressions
    expression_syntax,
    expression_unclosed,
    single_expression,
    undeclared_input,
    not_upstream,
    unknown_step_in_expression,
    unknown_output,
    unknown_function,
    unknown_name,
    status_function_outside_if,
    workflow_env,
    workflow_outputs,
    templates,
    // fan-out
    fan_out_for_each,
    fan_out_outside,
    fan_out_matrix,
    // limits
    expression_too_long,
    expression_too_deep,
    nesting_too_deep,
    alias_bomb,
}

/// Fixtures too large to store: generated here, snapshot stored.
const GENERATED: &[&str] = &["too_many_steps", "file_too_large"];

#[test]
fn too_many_steps() {
    let steps: String = (0..=wayline_lang::lower::MAX_STEPS)
        .map(|index| format!("  - {{ id: s{index}, run: 'true' }}\n"))
        .collect();
    check("too_many_steps", &format!("name: many\nsteps:\n{steps}"));
}

#[test]
fn file_too_large() {
    let padding = "# padding\n".repeat(wayline_lang::lower::MAX_FILE_BYTES / 10 + 1);
    check("file_too_large", &format!("name: big\nsteps:\n  - {{ id: a, run: 'true' }}\n{padding}"));
}

#[test]
fn the_step_limit_itself_is_allowed() {
    let steps: String = (0..wayline_lang::lower::MAX_STEPS)
        .map(|index| format!("  - {{ id: s{index}, set: {{ n: {index} }} }}\n"))
        .collect();
    let loaded = wayline_lang::load(&format!("name: many\nsteps:\n{steps}"));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics.first());
    assert_eq!(loaded.workflow.map(|w| w.steps.len()), Some(wayline_lang::lower::MAX_STEPS));
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
    let all: BTreeSet<String> = STORED.iter().chain(GENERATED).map(|s| s.to_string()).collect();
    assert_eq!(expected, all, "each fixture needs a snapshot: run with UPDATE_EXPECT=1");
}

/// The JSON form (`wayline validate --format json`) carries the same facts for tools.
#[test]
fn diagnostics_serialise_for_tools() {
    let loaded = wayline_lang::load(&fixture("unknown_field"));
    let json = serde_json::to_string_pretty(&loaded.diagnostics).unwrap();
    expect![[r#"
        [
          {
            "severity": "error",
            "code": "unknown-field",
            "message": "unknown field `nedes` in step",
            "span": {
              "line": 7,
              "column": 5,
              "end_line": 7,
              "end_column": 10
            },
            "label": "did you mean `needs`?"
          },
          {
            "severity": "error",
            "code": "unknown-field",
            "message": "unknown field `rnu` in step",
            "span": {
              "line": 11,
              "column": 5,
              "end_line": 11,
              "end_column": 8
            },
            "label": "did you mean `run`?"
          }
        ]"#]]
    .assert_eq(&json);
}

/// Every problem is reported in one pass, not only the first.
#[test]
fn all_problems_are_reported_at_once() {
    let text = "\
name: Many Problems
steps:
  - id: a
    nedes: [b]
    run: echo ${{ inputs.nope }}
  - id: b
    needs: [a, c]
    wait: 5 minutes
  - id: a
    set: { x: 1 }
";
    let codes: Vec<&str> =
        wayline_lang::load(text).diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "bad-name",
            "unknown-field",
            "unknown-reference",
            "unknown-step",
            "bad-duration",
            "duplicate-id"
        ]
    );
}

/// Large mappings take another path through the duplicate check; it must agree.
#[test]
fn every_repeat_of_a_key_points_at_its_first_use() {
    for size in [4, 40] {
        let mut keys: Vec<String> = (0..size).map(|i| format!("      k{i}: {i}\n")).collect();
        keys.push("      k1: again\n".into());
        keys.push("      k1: and again\n".into());
        let text = format!("name: dupes\nsteps:\n  - id: a\n    set:\n{}", keys.concat());
        let labels: Vec<(u32, Option<String>)> = wayline_lang::load(&text)
            .diagnostics
            .into_iter()
            .map(|d| (d.span.line, d.label))
            .collect();
        let first = Some("first given on line 6".to_owned());
        let end = 4 + size as u32; // the line of the last distinct key
        assert_eq!(labels, [(end + 1, first.clone()), (end + 2, first)], "{size} keys");
    }
}
