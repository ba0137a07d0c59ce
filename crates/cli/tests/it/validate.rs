//! `wayline validate`: exit 0 when every file is valid, 2 otherwise; diagnostics on stderr
//! as text, or everything on stdout as JSON.

use expect_test::expect;

use crate::{temp_file, wayline};

const CYCLE: &str = "crates/lang/tests/fixtures/invalid/cycle.yaml";

#[test]
fn every_example_is_valid() {
    // Directories hold what examples use (`lib/`: files of templates they import).
    let examples: Vec<String> = std::fs::read_dir(crate::root().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| format!("examples/{}", entry.file_name().to_string_lossy()))
        .collect();
    let args: Vec<&str> =
        std::iter::once("validate").chain(examples.iter().map(String::as_str)).collect();
    let run = wayline(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(run.stdout.lines().count(), examples.len());
    assert!(run.stdout.lines().all(|line| line.contains(": valid (")), "{}", run.stdout);
}

#[test]
fn a_valid_file_exits_0() {
    let run = wayline(&["validate", "examples/hello.yaml"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "examples/hello.yaml: valid (1 step)\n", "")
    );
}

#[test]
fn an_invalid_file_exits_2_with_the_diagnostic_on_stderr() {
    let run = wayline(&["validate", CYCLE]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, format!("{CYCLE}: invalid (1 error)\n"));
    expect![[r#"
        error[cycle]: dependency cycle: a -> b -> c -> a
         --> crates/lang/tests/fixtures/invalid/cycle.yaml:5:13
          |
        5 |     needs: [c]
          |             ^ `a` needs `c` here
          = help: a step cannot (even indirectly) need a step that needs it; remove one of these dependencies
    "#]]
    .assert_eq(&run.stderr);
}

#[test]
fn one_invalid_file_among_several_exits_2_and_all_are_reported() {
    let run = wayline(&["validate", "examples/hello.yaml", CYCLE, "examples/wait.yaml"]);
    assert_eq!(run.code, 2);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "examples/hello.yaml: valid (1 step)",
            &format!("{CYCLE}: invalid (1 error)"),
            "examples/wait.yaml: valid (5 steps)",
        ]
    );
}

#[test]
fn warnings_alone_keep_the_file_valid() {
    let (_dir, path) = temp_file(
        "warn.yaml",
        "name: warn\nsteps:\n  - id: a\n    run: 'true'\n    allow_failure: true\n",
    );
    let run = wayline(&["validate", path.to_str().unwrap()]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.ends_with("warn.yaml: valid (1 step, 1 warning)\n"), "{}", run.stdout);
    assert!(
        run.stderr.starts_with("warning[no-effect]: `allow_failure` has no effect"),
        "{}",
        run.stderr
    );
}

#[test]
fn raw_in_a_url_is_a_warning_with_its_position() {
    let fixture = "crates/lang/tests/fixtures/warnings/raw_url.yaml";
    let run = wayline(&["validate", fixture]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.ends_with("raw_url.yaml: valid (2 steps, 3 warnings)\n"), "{}", run.stdout);
    let first = run.stderr.lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(
        first,
        format!(
            "warning[raw-url]: raw() puts the value into the URL unencoded: it can change the host, path or query\n --> {fixture}:9:17"
        )
    );
}

#[test]
fn a_missing_file_exits_2() {
    let run = wayline(&["validate", "examples/nope.yaml"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "examples/nope.yaml: invalid (cannot be read)\n");
    assert!(run.stderr.starts_with("error: cannot read examples/nope.yaml: "), "{}", run.stderr);
}

#[test]
fn json_format_is_one_object_on_stdout() {
    let run = wayline(&["validate", "--format", "json", "examples/hello.yaml", CYCLE]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr, "");
    serde_json::from_str::<serde_json::Value>(&run.stdout).expect("stdout is JSON");
    expect![[r#"
        {
          "valid": false,
          "files": [
            {
              "file": "examples/hello.yaml",
              "valid": true,
              "diagnostics": []
            },
            {
              "file": "crates/lang/tests/fixtures/invalid/cycle.yaml",
              "valid": false,
              "diagnostics": [
                {
                  "severity": "error",
                  "code": "cycle",
                  "message": "dependency cycle: a -> b -> c -> a",
                  "span": {
                    "line": 5,
                    "column": 13,
                    "end_line": 5,
                    "end_column": 14
                  },
                  "label": "`a` needs `c` here",
                  "help": "a step cannot (even indirectly) need a step that needs it; remove one of these dependencies"
                }
              ]
            }
          ]
        }
    "#]]
    .assert_eq(&run.stdout);
}

#[test]
fn json_format_reports_unreadable_files() {
    let run = wayline(&["validate", "--format", "json", "examples/nope.yaml"]);
    assert_eq!(run.code, 2);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(json["valid"], false);
    assert_eq!(json["files"][0]["valid"], false);
    assert!(json["files"][0]["error"].as_str().unwrap().contains("cannot read"));
}
