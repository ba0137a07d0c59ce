//! `imports:`: templates from other files, read through the caller's reader, with diagnostics
//! that point into the file they are in and name the step they were checked for.

use std::collections::BTreeMap;

use expect_test::expect;
use wayline_lang::Loaded;
use wayline_lang::model::Body;

/// Loads `main` (as `flows/main.yaml`) with `files` as the files it may import.
fn load(main: &str, files: &[(&str, &str)]) -> (Loaded, Vec<String>) {
    let files: BTreeMap<&str, &str> = files.iter().copied().collect();
    let mut asked = Vec::new();
    let loaded = wayline_lang::load_with(main, &mut |path: &str| {
        asked.push(path.to_owned());
        files.get(path).map(|text| text.to_string()).ok_or_else(|| "no such file".to_owned())
    });
    (loaded, asked)
}

fn rendered(loaded: &Loaded, main: &str) -> String {
    loaded.diagnostics.iter().map(|d| loaded.render(d, "flows/main.yaml", main)).collect()
}

const COMMON: &str = "description: shared steps\ntemplates:\n  deploy:\n    inputs:\n      region: { type: string, required: true }\n    run: ./deploy.sh \"${{ inputs.region }}\"\n    retry: { max_attempts: 3 }\n  unused:\n    set: { x: 1 }\n";

#[test]
fn a_step_uses_a_template_of_an_imported_file() {
    let main = "name: m\nimports: [./lib/../lib/common.yaml]\nsteps:\n  - id: eu\n    uses: deploy\n    with: { region: eu }\n";
    let (loaded, asked) = load(main, &[("lib/common.yaml", COMMON)]);
    assert_eq!(asked, ["lib/common.yaml"], "the path is normalised");
    assert_eq!(rendered(&loaded, main), "", "an unused imported template is no warning");
    let workflow = loaded.workflow.as_ref().expect("valid");
    assert!(matches!(workflow.steps[0].body, Body::Run(_)));
    assert_eq!(workflow.steps[0].retry.max_attempts, 3);
    assert_eq!(loaded.sources().keys().collect::<Vec<_>>(), ["lib/common.yaml"]);
}

#[test]
fn problems_in_an_imported_template_point_into_its_file_and_name_the_step() {
    let broken = "templates:\n  deploy:\n    inputs:\n      region: { type: string }\n    run: ./deploy.sh ${{ inputs.regoin }}\n";
    let main = "name: m\nimports: [lib/common.yaml]\nsteps:\n  - id: eu\n    uses: deploy\n    with: { region: eu }\n";
    let (loaded, _) = load(main, &[("lib/common.yaml", broken)]);
    assert!(loaded.workflow.is_none());
    expect![[r#"
        error[unknown-reference]: template `deploy` has no input `regoin`
         --> flows/lib/common.yaml:5:26
          |
        5 |     run: ./deploy.sh ${{ inputs.regoin }}
          |                          ^^^^^^^^^^^^^ did you mean `region`?
          = help: found checking step `eu`, which uses this template
    "#]]
    .assert_eq(&rendered(&loaded, main));
}

#[test]
fn imports_that_cannot_be_read_parsed_or_merged_are_reported_where_they_are() {
    let main = "name: m\nimports: [missing.yaml, bad.yaml, common.yaml, other.yaml, /etc/passwd, common.yaml]\ntemplates:\n  deploy:\n    set: { x: 1 }\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    let files = [
        ("bad.yaml", "templates:\n  t:\n\trun: x\n"),
        ("common.yaml", COMMON),
        ("other.yaml", "templates:\n  unused:\n    set: { y: 2 }\nsteps: []\n"),
    ];
    let (loaded, _) = load(main, &files);
    assert!(loaded.workflow.is_none());
    expect![[r#"
        error[invalid-value]: cannot import `missing.yaml`: no such file
         --> flows/main.yaml:2:11
          |
        2 | imports: [missing.yaml, bad.yaml, common.yaml, other.yaml, /etc/passwd, common.yaml]
          |           ^^^^^^^^^^^^
          = help: the path is relative to the workflow file
        error[invalid-value]: `/etc/passwd` is not a relative path with `/`: an import is found relative to the importing file
         --> flows/main.yaml:2:60
          |
        2 | imports: [missing.yaml, bad.yaml, common.yaml, other.yaml, /etc/passwd, common.yaml]
          |                                                            ^^^^^^^^^^^
        error[duplicate-key]: `common.yaml` is imported twice
         --> flows/main.yaml:2:73
          |
        2 | imports: [missing.yaml, bad.yaml, common.yaml, other.yaml, /etc/passwd, common.yaml]
          |                                                                         ^^^^^^^^^^^
        error[duplicate-id]: template `deploy` is defined twice: first at common.yaml:3:3
         --> flows/main.yaml:4:3
          |
        4 |   deploy:
          |   ^^^^^^
          = help: rename one of them; a step names the one it uses
        error[syntax]: a tab in the indentation; YAML indents with spaces only
         --> flows/bad.yaml:3:1
          |
        3 |  run: x
          | ^
          = help: replace the tab with spaces
        error[duplicate-id]: template `unused` is defined twice: first at common.yaml:8:3
         --> flows/other.yaml:2:3
          |
        2 |   unused:
          |   ^^^^^^
          = help: rename one of them; a step names the one it uses
        error[unknown-field]: unknown field `steps` in template file
         --> flows/other.yaml:4:1
          |
        4 | steps: []
          | ^^^^^
          = help: template file fields: description, templates
    "#]]
    .assert_eq(&rendered(&loaded, main));
}

#[test]
fn text_that_is_not_read_from_a_file_cannot_import() {
    let main = "name: m\nimports: [common.yaml]\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    let loaded = wayline_lang::load(main);
    assert!(loaded.workflow.is_none());
    let shown = rendered(&loaded, main);
    assert!(
        shown.contains("cannot import `common.yaml`: this workflow is not read from a file"),
        "{shown}"
    );
}
