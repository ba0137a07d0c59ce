//! The command line as a client of a real `wayline server` (`--server URL`): every command
//! prints what it prints from the database and ends with the same exit code, because it reads
//! the same execution through the API.

use std::path::Path;

use serde_json::Value;

use super::api::{Server, eventually, sandbox, status_of};
use super::{Run, wayline_in};

/// `wayline ARGS` through `server`: its URL and token come from the environment, and no
/// database is named anywhere.
fn remote(dir: &Path, server: &Server, args: &[&str]) -> Run {
    let mut command = wayline_in(dir, "", args);
    command
        .env_remove("WAYLINE_DB")
        .env("WAYLINE_SERVER", format!("http://{}", server.address))
        .env("WAYLINE_TOKEN", server.token.as_deref().unwrap())
        // Not the server's token file: the token must come from the environment.
        .env("XDG_CONFIG_HOME", dir.join("client-config"));
    finish(command)
}

/// `wayline ARGS` on the database `db` itself.
fn local(dir: &Path, db: &str, args: &[&str]) -> Run {
    finish(wayline_in(dir, db, args))
}

fn finish(mut command: std::process::Command) -> Run {
    let output = command.output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// The execution id in `wayline: execution ID of NAME started (...)`.
fn started_id(stderr: &str) -> String {
    let line = stderr.lines().find(|line| line.contains(" started (")).unwrap_or_else(|| {
        panic!("no start line in {stderr}");
    });
    line.split_whitespace().nth(2).unwrap().to_owned()
}

const LOGGED: &str = "name: logged\ninputs:\n  who: { type: string }\nsteps:\n  - id: greet\n    run: echo \"hello ${{ inputs.who }}\" && echo second line\n  - id: store\n    needs: [greet]\n    set: { done: true }\n";

#[test]
fn run_and_every_read_command_print_through_the_server_what_they_print_from_the_database() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    std::fs::write(dir.path().join("flow.yaml"), LOGGED).unwrap();

    let run = remote(dir.path(), &server, &["run", "flow.yaml", "-i", "who=api"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains(&format!("started (server http://{})", server.address)), "{run:?}");
    // On a pipe the steps' lines are shown live, in the order they were written, before the
    // summary.
    let hello = run.stderr.find("greet | hello api").expect("the first log line");
    let second = run.stderr.find("greet | second line").expect("the second log line");
    let summary = run.stderr.rfind("  greet ").expect("the summary");
    assert!(hello < second && second < summary, "{}", run.stderr);
    let id = started_id(&run.stderr);
    assert!(run.stderr.trim_end().ends_with(&format!("logged {id} succeeded")), "{run:?}");

    for args in [
        vec!["show", id.as_str()],
        vec!["show", id.as_str(), "--json"],
        vec!["events", id.as_str()],
        vec!["events", id.as_str(), "--after", "3"],
        vec!["events", id.as_str(), "-f"],
        vec!["logs", id.as_str()],
        vec!["logs", id.as_str(), "greet"],
        vec!["logs", id.as_str(), "greet", "-f"],
        vec!["list"],
        vec!["list", "--status", "succeeded", "--workflow", "logged", "--since", "1h"],
    ] {
        let there = remote(dir.path(), &server, &args);
        let here = local(dir.path(), &db, &args);
        assert_eq!(there.code, 0, "{args:?}: {there:?}");
        assert_eq!((there.code, &there.stdout), (here.code, &here.stdout), "{args:?}");
    }
    // The server's result object is the one `run --json` prints.
    let json = remote(dir.path(), &server, &["run", "flow.yaml", "-i", "who=x", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["steps"][1]["outputs"]["done"], true, "{report}");
    let listed = remote(dir.path(), &server, &["list", "--json", "--limit", "1"]);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], report["id"], "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Mistakes read and end the same.
    for args in [
        vec!["show", "0000000000000"],
        vec!["logs", id.as_str(), "gret"],
        vec!["list", "--status", "done"],
        vec!["list", "--since", "yesterday"],
    ] {
        let there = remote(dir.path(), &server, &args);
        let here = local(dir.path(), &db, &args);
        assert_eq!(there.code, 2, "{args:?}: {there:?}");
        assert_eq!(here.code, 2, "{args:?}: {here:?}");
        let said = |run: &Run| run.stderr.lines().last().unwrap_or_default().to_owned();
        assert_eq!(said(&there), said(&here), "{args:?}");
    }
    let hint = remote(dir.path(), &server, &["logs", &id, "gret"]);
    assert!(hint.stderr.contains("did you mean `greet`?"), "{hint:?}");
}

#[test]
fn a_run_through_the_server_ends_with_the_exit_code_of_a_run_here() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let failing = "name: failing\nsteps:\n  - id: boom\n    run: echo going down >&2 && exit 4\n";
    std::fs::write(dir.path().join("failing.yaml"), failing).unwrap();
    let there = remote(dir.path(), &server, &["run", "failing.yaml"]);
    let here = local(dir.path(), &db, &["run", "failing.yaml"]);
    assert_eq!((there.code, here.code), (1, 1), "{there:?}\n{here:?}");
    assert!(there.stderr.contains("boom | going down"), "{there:?}");
    assert!(there.stderr.contains("failed"), "{there:?}");

    // An invalid file is refused before anything is sent, with its line and column.
    std::fs::write(dir.path().join("bad.yaml"), "name: bad\nsteps:\n  - id: a\n    rnu: x\n")
        .unwrap();
    let bad = remote(dir.path(), &server, &["run", "bad.yaml"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("bad.yaml:4:5"), "{bad:?}");
    // A missing input, the same.
    std::fs::write(dir.path().join("flow.yaml"), LOGGED).unwrap();
    let missing = remote(dir.path(), &server, &["run", "flow.yaml"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("who"), "{missing:?}");
    // Secrets are the server's.
    std::fs::write(dir.path().join("secrets.env"), "TOKEN=x\n").unwrap();
    let secrets = remote(
        dir.path(),
        &server,
        &["run", "flow.yaml", "-i", "who=x", "--secrets-file", "secrets.env"],
    );
    assert_eq!(secrets.code, 2, "{secrets:?}");
    assert!(secrets.stderr.contains("server's secrets"), "{secrets:?}");
    let listed = server.get("/api/v1/executions").json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "only the two runs: {listed}");
}

#[test]
fn control_commands_steer_an_execution_of_the_server_and_refusals_exit_2() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let slow = "name: slow\nsteps:\n  - id: first\n    run: sleep 0.3\n  - id: second\n    needs: [first]\n    run: sleep 30\n";
    std::fs::write(dir.path().join("slow.yaml"), slow).unwrap();
    let detached = remote(dir.path(), &server, &["run", "slow.yaml", "--detach"]);
    assert_eq!(detached.code, 0, "{detached:?}");
    let id = detached.stdout.trim().to_owned();
    assert_eq!(status_of(&server, &id), "running");

    let pause = remote(dir.path(), &server, &["pause", &id, "--reason", "maintenance"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    assert!(pause.stderr.contains(&format!("execution {id} paused")), "{pause:?}");
    eventually("paused", || status_of(&server, &id) == "paused");
    let resume = remote(dir.path(), &server, &["resume", &id]);
    assert_eq!(resume.code, 0, "{resume:?}");
    assert!(resume.stderr.contains(&format!("execution {id} resumed")), "{resume:?}");
    // A request that cannot apply is refused with the reason.
    let again = remote(dir.path(), &server, &["resume", &id]);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("is not paused"), "{again:?}");
    eventually("the second step", || {
        let report = server.get(&format!("/api/v1/executions/{id}")).json();
        report["steps"][1]["status"] == "running"
    });
    // `events -f` follows it live until it ends.
    let follower = {
        let mut command = wayline_in(dir.path(), "", &["events", &id, "-f"]);
        command
            .env_remove("WAYLINE_DB")
            .env("WAYLINE_SERVER", format!("http://{}", server.address))
            .env("WAYLINE_TOKEN", server.token.as_deref().unwrap())
            .stdout(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let cancel = remote(dir.path(), &server, &["cancel", &id, "--reason", "not today"]);
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(cancel.stderr.contains(&format!("execution {id} cancelling")), "{cancel:?}");
    let followed = follower.wait_with_output().unwrap();
    assert_eq!(followed.status.code(), Some(0));
    let followed = String::from_utf8(followed.stdout).unwrap();
    let all = local(dir.path(), &db, &["events", &id]);
    assert_eq!(followed, all.stdout, "the live stream holds every event, once, in order");
    let last: Value = serde_json::from_str(followed.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "io.serverlessworkflow.workflow.cancelled.v1", "{last}");
    // The control events name the token as their actor, and keep the reason.
    let stopping = followed.lines().find(|line| line.contains("not today")).unwrap();
    assert!(stopping.contains("admin"), "{stopping}");
    assert_eq!(status_of(&server, &id), "cancelled");
    // A finished execution cannot be cancelled: exit 2 in both modes.
    let late = remote(dir.path(), &server, &["cancel", &id]);
    let here = local(dir.path(), &db, &["cancel", &id]);
    assert_eq!((late.code, here.code), (2, 2), "{late:?}\n{here:?}");
}

#[test]
fn an_escalated_step_is_decided_through_the_server() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let escalating = "name: asks\non_failure: escalate\nescalation: { timeout: 1h, then: fail }\nsteps:\n  - id: migrate\n    run: exit 3\n  - id: after\n    needs: [migrate]\n    run: echo \"got ${{ steps.migrate.outputs.rows }}\"\n";
    std::fs::write(dir.path().join("asks.yaml"), escalating).unwrap();
    let detached = remote(dir.path(), &server, &["run", "asks.yaml", "--detach"]);
    let id = detached.stdout.trim().to_owned();
    eventually("the escalation", || status_of(&server, &id) == "escalated");
    let wrong = remote(dir.path(), &server, &["decide", &id, "after", "skip"]);
    assert_eq!(wrong.code, 2, "{wrong:?}");
    let decide = remote(
        dir.path(),
        &server,
        &["decide", &id, "migrate", "skip", "--output", "rows=7", "--reason", "done by hand"],
    );
    assert_eq!(decide.code, 0, "{decide:?}");
    assert!(
        decide.stderr.contains(&format!("execution {id} decided skip for migrate")),
        "{decide:?}"
    );
    eventually("the end", || status_of(&server, &id) == "succeeded");
    let logs = remote(dir.path(), &server, &["logs", &id, "after"]);
    assert_eq!(logs.stdout, "after#1 | got 7\n", "{logs:?}");
    let show = remote(dir.path(), &server, &["show", &id]);
    assert!(show.stdout.contains("decision: skip by admin: done by hand"), "{show:?}");
}

#[test]
fn a_missing_token_a_wrong_one_and_an_absent_server_say_what_is_wrong() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let url = format!("http://{}", server.address);
    let client = |args: &[&str], token: Option<&str>| {
        let mut command = wayline_in(dir.path(), "", args);
        command.env_remove("WAYLINE_DB").env("XDG_CONFIG_HOME", dir.path().join("nowhere"));
        if let Some(token) = token {
            command.env("WAYLINE_TOKEN", token);
        }
        finish(command)
    };
    let none = client(&["list", "--server", &url], None);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("no API token"), "{none:?}");
    let wrong = client(&["list", "--server", &url], Some("wl_nothing_like_a_token"));
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(wrong.stderr.contains("refused the token"), "{wrong:?}");
    // The token file a server's first start writes is found by itself.
    let mut own = wayline_in(dir.path(), "", &["list", "--server", &url]);
    own.env_remove("WAYLINE_DB").env("XDG_CONFIG_HOME", dir.path().join("config"));
    let own = finish(own);
    assert_eq!(own.code, 0, "{own:?}");
    // Nothing listens there: an infrastructure error.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let away = client(&["list", "--server", &format!("http://127.0.0.1:{closed}")], Some("x"));
    assert_eq!(away.code, 3, "{away:?}");
    assert!(away.stderr.contains("cannot reach the server"), "{away:?}");
    let nonsense = client(&["list", "--server", "ftp://example"], Some("x"));
    assert_eq!(nonsense.code, 2, "{nonsense:?}");
    // A server and a database are two different places.
    let both = client(&["list", "--server", &url, "--db", &db], Some("x"));
    assert_eq!(both.code, 2, "{both:?}");
    assert!(both.stderr.contains("cannot be used with"), "{both:?}");
}

#[test]
fn ctrl_c_of_a_run_through_the_server_cancels_the_execution_there() {
    use rustix::process::{Pid, Signal, kill_process};

    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let slow = "name: slow\nsteps:\n  - id: wait\n    run: sleep 30\n";
    std::fs::write(dir.path().join("slow.yaml"), slow).unwrap();
    let mut command = wayline_in(dir.path(), "", &["run", "slow.yaml"]);
    command
        .env_remove("WAYLINE_DB")
        .env("WAYLINE_SERVER", format!("http://{}", server.address))
        .env("WAYLINE_TOKEN", server.token.as_deref().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32).unwrap();
    let running = || {
        let listed = server.get("/api/v1/executions").json();
        let id = listed["items"][0]["id"].as_str().map(str::to_owned)?;
        let report = server.get(&format!("/api/v1/executions/{id}")).json();
        (report["steps"][0]["status"] == "running").then_some(id)
    };
    eventually("the step to run", || running().is_some());
    let id = running().unwrap();
    kill_process(pid, Signal::INT).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("Ctrl-C: cancelling execution {id}")), "{stderr}");
    assert!(stderr.contains(&format!("\nslow {id} cancelled")), "{stderr}");
    assert_eq!(status_of(&server, &id), "cancelled");
}

#[test]
fn workflows_are_pushed_in_versions_listed_shown_and_deleted_through_the_server_or_the_database() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let first = "name: deploy\nsteps:\n  - id: a\n    run: echo one\n";
    let second = "name: deploy\nsteps:\n  - id: a\n    run: echo two\n";
    let other = "name: other\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    std::fs::write(dir.path().join("deploy.yaml"), first).unwrap();
    std::fs::write(dir.path().join("other.yaml"), other).unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "name: bad\nsteps: []\nnope: 1\n").unwrap();

    let pushed = remote(dir.path(), &server, &["workflows", "push", "deploy.yaml", "other.yaml"]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    assert_eq!(pushed.stdout, "deploy 1\nother 1\n");
    // The same file again is the same version; a changed one is the next.
    let again = remote(dir.path(), &server, &["workflows", "push", "deploy.yaml"]);
    assert_eq!(again.stdout, "deploy 1\n", "{again:?}");
    assert!(again.stderr.contains("already this file"), "{again:?}");
    std::fs::write(dir.path().join("deploy.yaml"), second).unwrap();
    // Through the database, the same registry.
    let changed = local(dir.path(), &db, &["workflows", "push", "deploy.yaml"]);
    assert_eq!(changed.stdout, "deploy 2\n", "{changed:?}");
    // One invalid file and nothing is registered, with the file's line and column.
    let refused = remote(dir.path(), &server, &["workflows", "push", "other.yaml", "bad.yaml"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("bad.yaml:3:1"), "{refused:?}");
    assert!(refused.stderr.contains("nothing is registered"), "{refused:?}");

    let listed = remote(dir.path(), &server, &["workflows", "list"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(rows, [vec!["deploy", "2"], vec!["other", "1"]], "{listed:?}");
    let here = local(dir.path(), &db, &["workflows", "list", "--json"]);
    let there = remote(dir.path(), &server, &["workflows", "list", "--json"]);
    assert_eq!(here.stdout, there.stdout);

    let shown = remote(dir.path(), &server, &["workflows", "show", "deploy", "1"]);
    assert_eq!(shown.stdout, first, "{shown:?}");
    let json = remote(dir.path(), &server, &["workflows", "show", "deploy", "--json"]);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (json["version"].clone(), json["versions"].clone()),
        (2.into(), serde_json::json!([1, 2]))
    );
    assert_eq!(json["source"], second);
    for args in [
        vec!["workflows", "show", "deploy", "9"],
        vec!["workflows", "show", "nothing"],
        vec!["workflows", "delete", "nothing"],
    ] {
        let there = remote(dir.path(), &server, &args);
        let here = local(dir.path(), &db, &args);
        assert_eq!((there.code, here.code), (2, 2), "{args:?}: {there:?} {here:?}");
    }
    // A server starts a registered workflow by name.
    let started =
        server.post_json("/api/v1/executions", &serde_json::json!({"workflow": "deploy"}));
    assert_eq!(started["version"], 2, "{started}");
    let deleted = remote(dir.path(), &server, &["workflows", "delete", "deploy"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    let after = remote(dir.path(), &server, &["workflows", "list"]);
    assert!(!after.stdout.contains("deploy"), "{after:?}");
}

#[test]
fn a_rerun_through_the_server_runs_again_what_failed_with_the_exit_codes_of_a_rerun_here() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let effects = dir.path().join("effects.txt");
    let fixed = dir.path().join("fixed");
    let flow = format!(
        "name: fixable\nsteps:\n  - id: prep\n    run: echo prep >> {effects}\n  - id: build\n    needs: [prep]\n    run: test -f {fixed} && echo build >> {effects}\n",
        effects = effects.display(),
        fixed = fixed.display()
    );
    std::fs::write(dir.path().join("flow.yaml"), flow).unwrap();
    let failed = remote(dir.path(), &server, &["run", "flow.yaml"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    let id = started_id(&failed.stderr);

    std::fs::write(&fixed, "").unwrap();
    let rerun = remote(dir.path(), &server, &["rerun", &id, "--reason", "fixed"]);
    assert_eq!(rerun.code, 0, "{rerun:?}");
    assert!(rerun.stderr.contains("build run again"), "{rerun:?}");
    assert!(!rerun.stderr.contains("build: failed"), "the earlier run is history: {rerun:?}");
    assert!(rerun.stderr.trim_end().ends_with(&format!("fixable {id} succeeded")), "{rerun:?}");
    assert_eq!(std::fs::read_to_string(&effects).unwrap(), "prep\nbuild\n");
    // The journal records the server token's name as the actor, with the reason.
    let events = local(dir.path(), &db, &["events", &id]);
    let redriven: Vec<Value> = events
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["type"] == "dev.wayline.workflow.redriven.v1")
        .collect();
    assert_eq!(redriven.len(), 1, "{}", events.stdout);
    assert_eq!(redriven[0]["data"]["actor"]["reason"], "fixed");

    let nothing = remote(dir.path(), &server, &["rerun", &id]);
    let here = local(dir.path(), &db, &["rerun", &id]);
    assert_eq!((nothing.code, here.code), (2, 2), "{nothing:?} {here:?}");
    assert!(nothing.stderr.contains("every step of execution"), "{nothing:?}");
}

#[test]
fn breakpoints_step_inspect_patch_and_time_travel_work_through_the_server() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let flow = "name: gated\nsteps:\n  - id: build\n    set: { version: '1.0' }\n  - id: ship\n    needs: [build]\n    set: { shipped: \"${{ steps.build.outputs.version }}\" }\n";
    std::fs::write(dir.path().join("flow.yaml"), flow).unwrap();
    let started = remote(dir.path(), &server, &["run", "flow.yaml", "--break", "ship", "--detach"]);
    assert_eq!(started.code, 0, "{started:?}");
    let id = started.stdout.trim().to_owned();
    eventually("the breakpoint", || status_of(&server, &id) == "paused");

    let inspect = remote(dir.path(), &server, &["inspect", &id, "ship", "--json"]);
    assert_eq!(inspect.code, 0, "{inspect:?}");
    let inspection: Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(inspection["kind"], "set");
    assert_eq!(inspection["reads"]["steps"]["build"]["version"], "1.0");

    let patch = remote(dir.path(), &server, &["patch", &id, "build", "--output", "version=v2"]);
    assert_eq!(patch.code, 0, "{patch:?}");
    let refused = remote(dir.path(), &server, &["patch", &id, "ship", "--output", "x=1"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("only the outputs of a succeeded step"), "{refused:?}");
    let step = remote(dir.path(), &server, &["step", &id]);
    assert_eq!(step.code, 0, "{step:?}");
    eventually("the end", || status_of(&server, &id) == "succeeded");

    let report = remote(dir.path(), &server, &["show", &id, "--json"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let ship = report["steps"].as_array().unwrap().iter().find(|s| s["id"] == "ship").unwrap();
    assert_eq!(ship["outputs"]["shipped"], "v2");
    // Back in time, through the server and from the database alike.
    for at in ["3", "5"] {
        let there = remote(dir.path(), &server, &["show", &id, "--at", at, "--json"]);
        let here = local(dir.path(), &db, &["show", &id, "--at", at, "--json"]);
        assert_eq!((there.code, &there.stdout), (0, &here.stdout), "--at {at}");
    }
    let steps = remote(dir.path(), &server, &["events", &id, "--step", "build"]);
    assert_eq!(steps.stdout, local(dir.path(), &db, &["events", &id, "--step", "build"]).stdout);
    assert!(steps.stdout.contains("dev.wayline.workflow.patched.v1"), "{steps:?}");
}
