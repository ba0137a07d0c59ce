//! `imports:` through the binary: problems in an imported file shown at its own position, the
//! imported texts recorded with the execution (a rerun after the file is gone still works),
//! and a run through a server that sends them along.

use serde_json::Value;

use crate::api::{Server, sandbox};
use crate::durable::Sandbox;

const LIBRARY: &str = "templates:\n  greet:\n    inputs:\n      who: { type: string, required: true }\n    run: echo \"hello ${{ inputs.who }}\" && echo \"said=${{ inputs.who }}\" >> \"$WAYLINE_OUTPUT\"\n";

const FLOW: &str = "name: greeter\nimports: [lib/greet.yaml]\nsteps:\n  - id: hi\n    for_each: [ann, bob]\n    uses: greet\n    with: { who: \"${{ item }}\" }\n";

fn write_flow(sandbox: &Sandbox, library: &str) -> String {
    std::fs::create_dir_all(sandbox.path("flows/lib")).unwrap();
    std::fs::write(sandbox.path("flows/lib/greet.yaml"), library).unwrap();
    std::fs::write(sandbox.path("flows/main.yaml"), FLOW).unwrap();
    "flows/main.yaml".to_owned()
}

#[test]
fn a_problem_in_an_imported_template_is_shown_in_its_file_naming_the_step() {
    let sandbox = Sandbox::new();
    let flow = write_flow(&sandbox, &LIBRARY.replace("inputs.who }}\" &&", "inputs.wh }}\" &&"));
    let output = sandbox.output(&["validate", &flow]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--> flows/lib/greet.yaml:5:26"), "{stderr}");
    assert!(stderr.contains("template `greet` has no input `wh`"), "{stderr}");
    assert!(stderr.contains("found checking step `hi`, which uses this template"), "{stderr}");
    let json = sandbox.output(&["validate", &flow, "--format", "json"]);
    let report: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(report["files"][0]["diagnostics"][0]["file"], "flows/lib/greet.yaml", "{report}");
    // A missing import is named at its entry.
    std::fs::remove_file(sandbox.path("flows/lib/greet.yaml")).unwrap();
    let output = sandbox.output(&["validate", &flow]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot import `lib/greet.yaml`: cannot read flows/lib/greet.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("--> flows/main.yaml:2:11"), "{stderr}");
}

#[test]
fn an_execution_keeps_the_imported_text_it_ran_with() {
    let sandbox = Sandbox::new();
    let flow = write_flow(&sandbox, LIBRARY);
    let run = sandbox.output(&["run", &flow, "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_owned();
    assert_eq!(report["steps"][0]["outputs"][1]["said"], "bob");
    // The file changes, then goes: the execution is rebuilt from what it recorded.
    std::fs::write(sandbox.path("flows/lib/greet.yaml"), "templates: {}\n").unwrap();
    std::fs::remove_file(sandbox.path("flows/lib/greet.yaml")).unwrap();
    let rerun = sandbox.output(&["rerun", &id, "--from", "hi", "--json"]);
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    let shown = sandbox.report(&id);
    assert_eq!(shown["status"], "succeeded");
    let fanned = sandbox
        .events(&id)
        .iter()
        .filter(|event| event["type"] == "dev.wayline.task.fanned_out.v1")
        .count();
    assert_eq!(fanned, 2, "the rerun ran the step again");
    let inspect = sandbox.output(&["inspect", &id, "hi[1]", "--json"]);
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
}

#[test]
fn a_run_through_a_server_sends_the_imported_files_along() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::write(dir.path().join("lib/greet.yaml"), LIBRARY).unwrap();
    std::fs::write(dir.path().join("main.yaml"), FLOW).unwrap();
    let mut command = crate::wayline_in(dir.path(), "", &["run", "main.yaml", "--json"]);
    let output = command
        .env_remove("WAYLINE_DB")
        .env("WAYLINE_SERVER", format!("http://{}", server.address))
        .env("WAYLINE_TOKEN", server.token.as_deref().unwrap())
        .env("XDG_CONFIG_HOME", dir.path().join("client-config"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["steps"][0]["outputs"][0]["said"], "ann");
    // Without the files, the server says which one it misses.
    let refused = server.post("/api/v1/executions", &serde_json::json!({ "definition": FLOW }));
    assert_eq!(refused.status, 422);
    let problem = refused.json();
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message
            .contains("cannot import `lib/greet.yaml`: its text is not in the request's `imports`"),
        "{problem}"
    );
}

#[test]
fn the_registry_refuses_a_workflow_that_imports() {
    let sandbox = Sandbox::new();
    let flow = write_flow(&sandbox, LIBRARY);
    let output = sandbox.output(&["workflows", "push", &flow]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the registry stores one file per version, and this one imports lib/greet.yaml; nothing is registered"),
        "{stderr}"
    );
    let listed = sandbox.output(&["workflows", "list"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("greeter"));
}
