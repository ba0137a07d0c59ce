//! Every workflow in `examples/` runs: each file has a case here that runs it through the real
//! binary (`wayline run --ephemeral --json`), with its files in a temporary directory and a
//! local server where it calls the network, and checks how it ended.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use expect_test::{Expect, expect};
use serde_json::{Value, json};

use crate::root;
use crate::server::Server;

/// Every example and its case, in file name order. A new file in `examples/` needs one.
const CASES: &[(&str, fn())] = &[
    ("agents.yaml", agents),
    ("branching.yaml", branching),
    ("continue.yaml", continue_on_failure),
    ("escalate.yaml", escalate),
    ("fan-out.yaml", fan_out),
    ("groups.yaml", groups),
    ("hello.json", hello_json),
    ("hello.yaml", hello_yaml),
    ("http.yaml", http),
    ("imports.yaml", imports),
    ("inputs.yaml", inputs),
    ("outputs.yaml", outputs),
    ("release.yaml", release),
    ("retries.yaml", retries),
    ("rollback.yaml", rollback),
    ("secrets.yaml", secrets),
    ("templates.yaml", templates),
    ("timeouts.yaml", timeouts),
    ("wait.yaml", wait),
];

/// No example may hang the test run: past this, its process is killed and the case fails.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn every_example_runs_and_ends_as_expected() {
    // Directories hold what examples use (`lib/`: files of templates they import).
    let mut files: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .map(|entry| entry.expect("an entry"))
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let cased: Vec<&str> = CASES.iter().map(|(file, _)| *file).collect();
    assert_eq!(files, cased, "every file in examples/ has exactly one case in CASES");
    // All at once: most of an example's time is spent waiting (retry delays, waits, timeouts).
    let failed: Vec<&str> = std::thread::scope(|scope| {
        let running: Vec<_> = CASES
            .iter()
            .map(|&(file, case)| {
                let thread =
                    std::thread::Builder::new().name(file.to_owned()).spawn_scoped(scope, case);
                (file, thread.expect("a thread"))
            })
            .collect();
        running
            .into_iter()
            .filter_map(|(file, thread)| thread.join().is_err().then_some(file))
            .collect()
    });
    assert!(failed.is_empty(), "examples that did not end as expected (see above): {failed:?}");
}

/// Found while running the examples: `wayline run` shows the log lines of its steps live, but
/// loses most of them when a step writes many lines quickly. Its subscription lags behind the
/// engine's bus, catches up the events from the store, and never the log lines. These 50,000
/// short lines (about 290 KB, well under the 1 MiB log limit) must all be shown, in order.
#[test]
fn a_chatty_step_shows_every_log_line() {
    let scratch = Scratch::new();
    let flow = scratch.path("chatty.yaml");
    std::fs::write(&flow, "name: chatty\nsteps:\n  - id: chatty\n    run: seq 1 50000\n").unwrap();
    let run = scratch.run(flow.to_str().expect("a UTF-8 path"), &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown: Vec<&str> =
        run.stderr.lines().filter_map(|line| line.strip_prefix("  chatty | ")).collect();
    let expected: Vec<String> = (1..=50_000).map(|n| n.to_string()).collect();
    assert!(
        shown == expected,
        "{} of 50000 lines shown, the last one {:?}",
        shown.len(),
        shown.last()
    );
}

fn agents() {
    let run = Scratch::new().run("agents.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        fetch           succeeded   x1  {"exit_code":0}
        train           succeeded   x1  {"exit_code":0}
        publish         succeeded   x1  {"exit_code":0}
    "#]],
    );
    assert!(
        run.stderr.contains("`agent.labels` only routes steps in server mode"),
        "{}",
        run.stderr
    );
}

fn branching() {
    // The defaults: coverage 85 is good enough, the environment is staging.
    let run = Scratch::new().run("branching.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        test            succeeded   x1  {"coverage":85}
        good_enough     succeeded   x1  {"result":true}
        is_prod         succeeded   x1  {"result":false}
        deploy_prod     skipped     x0  (branch `then` of `is_prod` was not taken)
        deploy_staging  succeeded   x1  {"exit_code":0}
        smoke_prod      skipped     x0  (needs did not succeed: `deploy_prod` skipped)
        canary          skipped     x0  (`if: success() && inputs.coverage >= 90` is false)
        report          skipped     x0  (branch `else` of `good_enough` was not taken)
        summary         succeeded   x1  {"exit_code":0}
        page            skipped     x0  (`if: failure()` is false)
        tidy            skipped     x0  (`if: cancelled() || failure()` is false)
    "#]],
    );

    let run =
        Scratch::new().run("branching.yaml", &["-i", "environment=prod", "-i", "coverage=95"], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        test            succeeded   x1  {"coverage":95}
        good_enough     succeeded   x1  {"result":true}
        is_prod         succeeded   x1  {"result":true}
        deploy_prod     succeeded   x1  {"exit_code":0}
        deploy_staging  skipped     x0  (branch `else` of `is_prod` was not taken)
        smoke_prod      succeeded   x1  {"exit_code":0}
        canary          succeeded   x1  {"exit_code":0}
        report          skipped     x0  (branch `else` of `good_enough` was not taken)
        summary         succeeded   x1  {"exit_code":0}
        page            skipped     x0  (`if: failure()` is false)
        tidy            skipped     x0  (`if: cancelled() || failure()` is false)
    "#]],
    );

    let run = Scratch::new().run("branching.yaml", &["-i", "coverage=50"], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        test            succeeded   x1  {"coverage":50}
        good_enough     succeeded   x1  {"result":false}
        is_prod         skipped     x0  (branch `then` of `good_enough` was not taken)
        deploy_prod     skipped     x0  (branch `then` of `is_prod` was not taken)
        deploy_staging  skipped     x0  (branch `else` of `is_prod` was not taken)
        smoke_prod      skipped     x0  (needs did not succeed: `deploy_prod` skipped)
        canary          skipped     x0  (`if: success() && inputs.coverage >= 90` is false)
        report          succeeded   x1  {"exit_code":0}
        summary         succeeded   x1  {"exit_code":0}
        page            skipped     x0  (`if: failure()` is false)
        tidy            skipped     x0  (`if: cancelled() || failure()` is false)
    "#]],
    );
}

fn continue_on_failure() {
    // Only the tolerated lint failed: the execution succeeds.
    let run = Scratch::new().run("continue.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        lint            failed      x1  {"exit_code":1}  error failure: exited with code 1
        build           succeeded   x1  {"exit_code":0}
        package         succeeded   x1  {"exit_code":0}
        lint_report     succeeded   x1  {"exit_code":0}
        publish         skipped     x0  (needs did not succeed: `lint` failed)
    "#]],
    );
}

fn escalate() {
    let scratch = Scratch::new();
    let run = scratch.run("escalate.yaml", &["-i", &scratch.workdir()], &[]);
    // Nobody decides within escalation.timeout (1s): `then: rollback` applies.
    run.check(1, expect![[r#"
        rolled_back (fatal: step `migrate` failed and escalation timeout decided to rollback: no decision before escalation.timeout)
        backup          compensated x1  {"exit_code":0}  compensation succeeded x1
        migrate         failed      x2  {"exit_code":3}  error failure: exited with code 3
        restart         skipped     x0  (the execution stopped after a failure)
        lint            succeeded   x1  {"exit_code":0}
    "#]]);
    assert!(run.elapsed >= Duration::from_secs(1), "the escalation waited for its timeout");
    let escalated = run.events_of("workflow.escalated");
    assert_eq!(escalated.len(), 1);
    assert_eq!(escalated[0]["data"]["step"], "migrate");
    let decided = run.events_of("workflow.decided");
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["data"]["decision"], "rollback");
    assert_eq!(decided[0]["data"]["actor"]["by"], "escalation timeout");
    // The notify command ran once, in the workdir.
    assert_eq!(
        scratch.read("work/wayline-escalations.log"),
        format!("escalate/{}: migrate failed: exited with code 3\n", run.id()),
    );
}

fn fan_out() {
    let scratch = Scratch::new();
    let run = scratch.run("fan-out.yaml", &["-i", &scratch.workdir()], &[]);
    run.check(0, expect![[r#"
        succeeded
        split           succeeded   x1  {"shards":[1,2,3,4]}
        shard           succeeded   x4  [{"size":"10","exit_code":0},{"size":"20","exit_code":0},{"size":"30","exit_code":0},{"size":"40","exit_code":0}]
        test            succeeded   x3  [{"exit_code":0},{"exit_code":0},null]
        merge           succeeded   x1  {"total":"100","passed":"2","exit_code":0}
    "#]]);
    // Four shard items, at most two at a time, each writing its own file.
    let shards: Vec<String> = (0..4).map(|i| format!("shard[{i}]")).collect();
    let shards: Vec<&str> = shards.iter().map(String::as_str).collect();
    assert_eq!(run.max_running(&shards), 2, "max_parallel: 2");
    for (index, size) in [10, 20, 30, 40].iter().enumerate() {
        assert_eq!(scratch.read(&format!("work/shard_{index}")), format!("{size}\n"));
    }
    // The matrix: three combinations, the mac one failing within the tolerance.
    let test = &run.report["steps"][2];
    let combos: Vec<String> = test["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| format!("{} {} {}", item["item"], item["status"], item["outputs"]["exit_code"]))
        .collect();
    assert_eq!(
        combos,
        [
            r#"{"os":"linux","arch":"x64"} "succeeded" 0"#,
            r#"{"os":"linux","arch":"arm","emulated":true} "succeeded" 0"#,
            r#"{"os":"mac","arch":"arm"} "failed" 1"#,
        ]
    );
    // Events and log lines name the item.
    assert_eq!(run.events_of("task.faulted")[0]["subject"], "test[2]");
    assert!(run.stderr.contains("test[2] | testing on mac/arm"), "{}", run.stderr);
}

fn imports() {
    let run = Scratch::new().run("imports.yaml", &["-i", "version=2.1.0"], &[]);
    run.check(0, expect![[r#"
        succeeded
        deploy          succeeded   x3  [{"url":"https://eu.example/2.1.0","exit_code":0},{"url":"https://us.example/2.1.0","exit_code":0},{"url":"https://ap.example/2.1.0","exit_code":0}]
        verify          succeeded   x1  {"count":3}
    "#]]);
    // The template ran once per item, each with its own region.
    assert!(run.stderr.contains("deploy[1] | deploying 2.1.0 to us"), "{}", run.stderr);
    // The imported file is recorded with the execution.
    let created = &run.events_of("workflow.created")[0];
    let recorded = created["data"]["imports"]["lib/deploy.yaml"].as_str().unwrap_or_default();
    assert!(recorded.contains("deploy_region:"), "{created}");
}

fn groups() {
    let run = Scratch::new().run("groups.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        build           succeeded   x1  {"exit_code":0}
        deploy_eu       succeeded   x1  {"exit_code":0}
        deploy_us       succeeded   x1  {"exit_code":0}
        deploy_ap       succeeded   x1  {"exit_code":0}
        smoke           succeeded   x1  {"exit_code":0}
        metrics         succeeded   x1  {"exit_code":0}
        release         succeeded   x1  {"exit_code":0}
    "#]],
    );
    // Three deploys want to run at once; the group lets two.
    assert_eq!(run.max_running(&["deploy_eu", "deploy_us", "deploy_ap"]), 2);
    // `needs: [deploys]` waits for every step of the group.
    let last_deploy = ["deploy_eu", "deploy_us", "deploy_ap"]
        .iter()
        .map(|step| run.seq("task.completed", step))
        .max()
        .unwrap();
    for check in ["smoke", "metrics"] {
        assert!(
            run.seq("task.started", check) > last_deploy,
            "{check} started before the deploys ended"
        );
    }
    assert!(run.seq("task.started", "release") > run.seq("task.completed", "smoke"));
    assert!(run.seq("task.started", "release") > run.seq("task.completed", "metrics"));
}

fn hello_json() {
    let run = Scratch::new().run("hello.json", &["-i", "who=json"], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        greet           succeeded   x1  {"exit_code":0}
        done            succeeded   x1  {"greeted":"json"}
    "#]],
    );
}

fn hello_yaml() {
    let run = Scratch::new().run("hello.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        greet           succeeded   x1  {"exit_code":0}
    "#]],
    );
}

fn templates() {
    let server = Server::start(vec![(201, vec![], "")]);
    let port = format!("port={}", server.port());
    let run = Scratch::new().run("templates.yaml", &["-i", "version=2.0", "-i", &port], &[]);
    run.check(0, expect![[r#"
        succeeded
        eu              succeeded   x1  {"url":"/2.0","replicas":"2","exit_code":0}
        us              succeeded   x1  {"url":"/2.0","replicas":"5","exit_code":0}
        wait-for-traffic succeeded   x1
        summary         succeeded   x1  {"label":"release 2.0 to https://eu.example/2.0 and https://us.example/2.0"}
        tell            succeeded   x1  {"status":201,"redirects":[],"body":"","url":"/announcements"}
    "#]]);
    assert_eq!(
        run.report["outputs"],
        json!({
            "label": "release 2.0 to https://eu.example/2.0 and https://us.example/2.0",
            "us_replicas": "5"
        })
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].uri, "/announcements");
    let body: Value = serde_json::from_str(&requests[0].body).expect("a JSON body");
    assert_eq!(body["text"], "release 2.0 to https://eu.example/2.0 and https://us.example/2.0");
}

fn http() {
    let server = Server::start(vec![
        (503, vec![], "starting"),
        (200, vec![], "ok"),
        (201, vec![("content-type", "application/json")], r#"{"id": "svc-1", "replicas": 2}"#),
        (204, vec![], ""),
    ]);
    let run = Scratch::new().run("http.yaml", &["-i", &format!("port={}", server.port())], &[]);
    run.check(
        0,
        expect![[r#"
            succeeded
            health          succeeded   x2  {"status":200,"redirects":[],"body":"ok","url":"/health"}
            create          succeeded   x1  {"status":201,"redirects":[],"body":{"id":"svc-1","replicas":2},"url":"/services?dry_run=false&source=http"}
            show            succeeded   x1  {"exit_code":0}
            remove          succeeded   x1  {"status":204,"redirects":[],"body":"","url":"/services/svc-1"}
        "#]],
    );
    let requests = server.requests();
    let lines: Vec<String> =
        requests.iter().map(|r| format!("{} {} {}", r.method, r.uri, r.body)).collect();
    assert_eq!(
        lines,
        [
            "GET /health ",
            "GET /health ",
            r#"POST /services?dry_run=false&source=http {"name":"demo","replicas":2}"#,
            "DELETE /services/svc-1 ",
        ]
    );
    let create = &requests[2];
    assert_eq!(create.header("x-request-id"), run.id());
    assert_eq!(create.header("user-agent"), "wayline-example");
    assert_eq!(create.header("content-type"), "application/json");
    assert_eq!(create.header("idempotency-key"), format!("{}:create", run.id()));
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key"),
        "both attempts of `health` carry the same key"
    );
}

fn inputs() {
    let args = ["-i", "version=2.0", "-i", "dry_run=false", "-i", r#"regions=["ap", "eu", "us"]"#];
    let run = Scratch::new().run("inputs.yaml", &args, &[]);
    run.check(0, expect![[r#"
        succeeded
        show            succeeded   x1  {"exit_code":0}
        computed        succeeded   x1  {"canary_replicas":1,"first_region":"ap","region_count":3,"team":"platform","target":"staging-2.0"}
        deploy          succeeded   x1  {"exit_code":0}
    "#]]);
    assert_eq!(run.report["inputs"]["regions"], json!(["ap", "eu", "us"]));

    // Without the required `version`, nothing runs.
    let run = Scratch::new().run_raw("inputs.yaml", &[], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

fn outputs() {
    let server = Server::start(vec![(201, vec![], "")]);
    let scratch = Scratch::new();
    let args = ["-i", &scratch.workdir(), "-i", &format!("port={}", server.port())];
    let run = scratch.run("outputs.yaml", &args, &[]);
    run.check(0, expect![[r#"
        succeeded
        version         succeeded   x1  {"version":"1.4.2","commit":"abc123","exit_code":0}
        manifest        succeeded   x1  {"files":3,"bytes":2048,"exit_code":0}
        meta            succeeded   x1  {"tag":"v1.4.2","files":3,"large":true,"labels":{"commit":"abc123","team":"platform"}}
        record          succeeded   x1  {"exit_code":0}
        publish         succeeded   x1  {"status":201,"redirects":[],"body":"","url":"/releases"}
        report          succeeded   x1  {"exit_code":0}
    "#]]);
    assert_eq!(scratch.read("work/release"), "v1.4.2 3\n");
    assert_eq!(
        run.report["outputs"],
        json!({ "tag": "v1.4.2", "published": true, "summary": "v1.4.2 (3 files)" })
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].method.as_str(), requests[0].uri.as_str()), ("POST", "/releases"));
    let body: Value = serde_json::from_str(&requests[0].body).expect("a JSON body");
    assert_eq!(
        body,
        json!({ "tag": "v1.4.2", "files": 3, "large": true, "labels": { "commit": "abc123", "team": "platform" } })
    );
}

fn release() {
    const TOKEN: &str = "chat-token-release-0042";
    let chat = Server::start(vec![(204, vec![], "")]);
    let scratch = Scratch::new();
    let args = [
        "-i",
        "version=1.0",
        "-i",
        &scratch.workdir(),
        "-i",
        &format!("chat_url={}/hooks/releases", chat.url),
        "-i",
        &format!("hooks_url={}/ops", chat.url),
    ];
    let run = scratch.run("release.yaml", &args, &[("WAYLINE_SECRET_CHAT_TOKEN", TOKEN)]);
    run.check(
        0,
        expect![[r#"
            succeeded
            build           succeeded   x1  {"exit_code":0}
            test            succeeded   x1  {"passed":42,"coverage":87,"exit_code":0}
            coverage_ok     succeeded   x1  {"result":true}
            deploy_eu       succeeded   x1  {"exit_code":0}
            deploy_us       succeeded   x1  {"exit_code":0}
            settle          succeeded   x1
            announce        succeeded   x1  {"status":204,"redirects":[],"body":"","url":"/hooks/releases"}
            report          skipped     x0  (branch `else` of `coverage_ok` was not taken)
            meta            succeeded   x1  {"tag":"v1.0","artifacts":3}
            cleanup         succeeded   x1  {"exit_code":0}
        "#]],
    );
    assert!(run.elapsed >= Duration::from_secs(1), "`settle` waited");
    assert_eq!(scratch.read("work/eu"), "1.0\n");
    assert_eq!(scratch.read("work/us"), "1.0\n");
    assert!(!scratch.path("work/tmp").exists(), "`cleanup` removed the build's scratch files");
    // One call: the announcement (nothing escalated, so no notification).
    let requests = chat.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let announce = &requests[0];
    assert_eq!((announce.method.as_str(), announce.uri.as_str()), ("POST", "/hooks/releases"));
    assert_eq!(announce.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(announce.body, r#"{"text":"released 1.0"}"#);
    assert!(!run.everything().contains(TOKEN), "the token leaked");
}

fn retries() {
    let run = Scratch::new().run("retries.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        exponential     succeeded   x3  {"exit_code":0}
        fixed           succeeded   x3  {"exit_code":0}
        linear          succeeded   x3  {"exit_code":0}
        random          succeeded   x3  {"exit_code":0}
        full_jitter     succeeded   x3  {"exit_code":0}
        equal_jitter    succeeded   x3  {"exit_code":0}
        budget          succeeded   x3  {"exit_code":0}
        timeouts_only   succeeded   x2  {"exit_code":0}
        inherited       succeeded   x2  {"exit_code":0}
        partial         succeeded   x3  {"exit_code":0}
    "#]],
    );
    // The pause before each retry, as the journal recorded it.
    let delays = |step: &str| -> Vec<u64> {
        run.events_of("task.retried")
            .iter()
            .filter(|event| event["subject"] == step)
            .map(|event| event["data"]["delay_ms"].as_u64().expect("delay_ms"))
            .collect()
    };
    assert_eq!(delays("exponential"), [1000, 2000]);
    assert_eq!(delays("fixed"), [200, 200]);
    assert_eq!(delays("linear"), [100, 200]);
    assert_eq!(delays("budget"), [100, 100]);
    assert_eq!(delays("timeouts_only"), [100]);
    assert_eq!(delays("inherited"), [100]);
    assert_eq!(delays("partial"), [100, 100]);
    let within = |step: &str, bounds: &[(u64, u64)]| {
        let delays = delays(step);
        assert_eq!(delays.len(), bounds.len(), "{step}: {delays:?}");
        for (delay, (low, high)) in delays.iter().zip(bounds) {
            assert!((low..=high).contains(&delay), "{step}: {delay}ms outside {low}..{high}");
        }
    };
    within("random", &[(100, 1000), (100, 1000)]);
    within("full_jitter", &[(0, 100), (0, 200)]);
    within("equal_jitter", &[(50, 100), (100, 200)]);
    // `timeouts_only` was killed at its timeout, then retried.
    let faulted = run.events_of("task.faulted");
    let killed = faulted.iter().find(|e| e["subject"] == "timeouts_only").expect("a fault");
    assert_eq!(killed["data"]["error"]["type"], "https://wayline.dev/errors/timeout");
}

fn rollback() {
    let scratch = Scratch::new();
    let run = scratch.run("rollback.yaml", &["-i", &scratch.workdir()], &[]);
    run.check(
        1,
        expect![[r#"
        rolled_back (failure: step `verify` failed: exited with code 1)
        prepare         compensated x1  {"exit_code":0}  compensation succeeded x1
        deploy_eu       compensated x1  {"exit_code":0}  compensation succeeded x1
        deploy_us       compensated x1  {"exit_code":0}  compensation succeeded x1
        verify          failed      x1  {"exit_code":1}  error failure: exited with code 1
    "#]],
    );
    // Reverse dependency order: `prepare` is undone after both deploys were.
    let prepare = run.seq("task.compensation.started", "prepare");
    assert!(prepare > run.seq("task.compensation.completed", "deploy_eu"));
    assert!(prepare > run.seq("task.compensation.completed", "deploy_us"));
    let left: Vec<_> = std::fs::read_dir(scratch.path("work")).unwrap().collect();
    assert!(left.is_empty(), "the compensations removed every file: {left:?}");
}

fn secrets() {
    const API_TOKEN: &str = "api-token-0451";
    const SIGNING_KEY: &str = "signing-key-1729";
    // A careless server echoes the token back: the stored output still masks it.
    let server = Server::start(vec![(
        200,
        vec![("content-type", "application/json")],
        r#"{"user": "demo", "seen": "Bearer api-token-0451"}"#,
    )]);
    let scratch = Scratch::new();
    let file = scratch.path("secrets.env");
    std::fs::write(&file, format!("# signing\nSIGNING_KEY={SIGNING_KEY}\n")).unwrap();
    let args = [
        "-i",
        &format!("port={}", server.port()),
        "--secrets-file",
        file.to_str().expect("a UTF-8 path"),
    ];
    let run = scratch.run("secrets.yaml", &args, &[("WAYLINE_SECRET_API_TOKEN", API_TOKEN)]);
    run.check(
        0,
        expect![[r#"
            succeeded
            check           succeeded   x1  {"exit_code":0}
            call            succeeded   x1  {"status":200,"redirects":[],"body":{"user":"demo","seen":"Bearer ***"},"url":"/whoami"}
            sign            succeeded   x1  {"exit_code":0}
        "#]],
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].uri, "/whoami");
    assert_eq!(requests[0].header("authorization"), format!("Bearer {API_TOKEN}"));
    let everything = run.everything();
    assert!(!everything.contains(API_TOKEN), "the API token leaked");
    assert!(!everything.contains(SIGNING_KEY), "the signing key leaked");

    // Without its secrets the workflow does not start.
    let run = scratch.run_raw("secrets.yaml", &["-i", "port=1"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("API_TOKEN"), "{}", run.stderr);
}

fn timeouts() {
    let run = Scratch::new().run("timeouts.yaml", &[], &[]);
    run.check(0, expect![[r#"
        succeeded
        quick           succeeded   x1  {"exit_code":0}
        slow_first_time succeeded   x2  {"exit_code":0}
        call            failed      x1  error failure: connection failed: error sending request for url (http://127.0.0.1:9/unreachable): client error (Connect): tcp connect error: Connection refused (os error 111)
    "#]]);
    let faulted = run.events_of("task.faulted");
    let killed = faulted.iter().find(|e| e["subject"] == "slow_first_time").expect("a fault");
    assert_eq!(killed["data"]["attempt"], 1);
    assert_eq!(killed["data"]["error"]["type"], "https://wayline.dev/errors/timeout");
    assert_eq!(killed["data"]["error"]["detail"], "timed out after 1s");
}

fn wait() {
    let run = Scratch::new().run("wait.yaml", &[], &[]);
    run.check(
        0,
        expect![[r#"
        succeeded
        start           succeeded   x1  {"exit_code":0}
        settle          succeeded   x1
        window          succeeded   x1
        fixed_date      succeeded   x1
        finish          succeeded   x1  {"exit_code":0}
    "#]],
    );
    assert!(run.elapsed >= Duration::from_secs(1), "`settle` waited");
}

/// A temporary directory: the runs' working directory, with `work/` for the `workdir` input.
struct Scratch {
    dir: tempfile::TempDir,
}

/// One finished `wayline run` of an example.
struct Outcome {
    code: i32,
    report: Value,
    stderr: String,
    events: Vec<Value>,
    elapsed: Duration,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("work")).expect("a work dir");
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// `workdir=…`: where examples that take a `workdir` input write their files.
    fn workdir(&self) -> String {
        format!("workdir={}", self.path("work").display())
    }

    /// Runs `examples/FILE` (or FILE, when it is an absolute path) here, and reads its result
    /// and its events.
    fn run(&self, file: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let events = self.path("events.jsonl");
        let events_arg = events.to_str().expect("a UTF-8 path");
        let raw = self.run_raw(file, &[args, &["--events", events_arg]].concat(), env);
        let report = serde_json::from_str(&raw.stdout).unwrap_or_else(|error| {
            panic!("{file}: --json prints one JSON object ({error}); stderr:\n{}", raw.stderr)
        });
        let events = std::fs::read_to_string(&events)
            .expect("the events file")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
            .collect();
        Outcome { code: raw.code, report, stderr: raw.stderr, events, elapsed: raw.elapsed }
    }

    /// Runs `examples/FILE` (or FILE, when it is an absolute path) here, whatever it prints.
    fn run_raw(&self, file: &str, args: &[&str], env: &[(&str, &str)]) -> Raw {
        #[allow(clippy::disallowed_methods)] // tests start the binary under test
        let mut command = Command::new(env!("CARGO_BIN_EXE_wayline"));
        command
            .arg("run")
            .arg(root().join("examples").join(file))
            .args(["--ephemeral", "--json"])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = command.spawn().expect("wayline starts");
        let pid = child.id();
        let (sender, receiver) = mpsc::channel();
        let output = std::thread::scope(|scope| {
            scope.spawn(move || sender.send(child.wait_with_output()));
            match receiver.recv_timeout(LIMIT) {
                Ok(output) => output.expect("wayline ends"),
                Err(_) => {
                    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    panic!("{file} still runs after {LIMIT:?}");
                }
            }
        });
        Raw {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
            elapsed: started.elapsed(),
        }
    }
}

/// What a run printed, before any parsing.
struct Raw {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    /// Checks the exit code and the result: the execution's status and every step's.
    fn check(&self, code: i32, expect: Expect) {
        assert_eq!(self.code, code, "exit code; stderr:\n{}", self.stderr);
        expect.assert_eq(&summary(&self.report));
    }

    fn id(&self) -> &str {
        self.report["id"].as_str().expect("an id")
    }

    /// The events of one kind, such as `task.started`, in journal order.
    fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|event| self::kind(event) == kind).collect()
    }

    /// The sequence number of the first event of `kind` about `step`.
    fn seq(&self, kind: &str, step: &str) -> u64 {
        self.events_of(kind)
            .iter()
            .find(|event| event["subject"] == step)
            .and_then(|event| event["id"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} event for {step}"))
    }

    /// The largest number of attempts of `steps` running at the same time.
    fn max_running(&self, steps: &[&str]) -> usize {
        let (mut running, mut max) = (0usize, 0usize);
        for event in &self.events {
            if !steps.iter().any(|step| event["subject"] == *step) {
                continue;
            }
            match kind(event).as_str() {
                "task.started" => running += 1,
                "task.completed" | "task.faulted" | "task.cancelled" => running -= 1,
                _ => {}
            }
            max = max.max(running);
        }
        max
    }

    /// Everything the run let out: the result, the progress and logs, the events.
    fn everything(&self) -> String {
        format!("{}\n{}\n{}", self.report, self.stderr, Value::from(self.events.clone()))
    }
}

/// An event's type without its namespace and version: `task.started`, `workflow.escalated`.
fn kind(event: &Value) -> String {
    let kind = event["type"].as_str().expect("a type");
    let kind = kind.strip_prefix("io.serverlessworkflow.").or(kind.strip_prefix("dev.wayline."));
    kind.and_then(|kind| kind.strip_suffix(".v1")).expect("a known namespace").to_owned()
}

/// The result object in short: the execution's status and error, then a line per step with its
/// status, attempts, outputs (HTTP headers left out: they carry dates; URLs without the
/// server's address), error, why it was
/// skipped, and its compensation.
fn summary(report: &Value) -> String {
    let mut out = String::from(report["status"].as_str().expect("a status"));
    if let Some(error) = report["error"].as_object() {
        out += &format!(
            " ({}: {})",
            error["class"].as_str().unwrap(),
            error["message"].as_str().unwrap()
        );
    }
    out.push('\n');
    for step in report["steps"].as_array().expect("steps") {
        let mut line = format!(
            "{:<15} {:<11} x{}",
            step["id"].as_str().unwrap(),
            step["status"].as_str().unwrap(),
            step["attempts"]
        );
        // A fan-out's outputs are a list, one entry per item.
        if let Some(list) = step["outputs"].as_array() {
            line += &format!("  {}", Value::from(list.clone()));
        }
        let mut outputs = step["outputs"].as_object().cloned().unwrap_or_default();
        outputs.remove("headers");
        // The test server's port changes from run to run; the path is what the step called.
        if let Some(Value::String(url)) = outputs.get_mut("url") {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            *url = rest.find('/').map_or(String::new(), |at| rest[at..].to_owned());
        }
        if !outputs.is_empty() {
            line += &format!("  {}", Value::from(outputs));
        }
        if let Some(error) = step["error"].as_object() {
            line += &format!(
                "  error {}: {}",
                error["class"].as_str().unwrap(),
                error["message"].as_str().unwrap()
            );
        }
        if let Some(reason) = step["reason"].as_str() {
            line += &format!("  ({reason})");
        }
        if let Some(compensation) = step["compensation"].as_object() {
            line += &format!(
                "  compensation {} x{}",
                compensation["status"].as_str().unwrap(),
                compensation["attempts"]
            );
            if let Some(error) = compensation["error"].as_object() {
                line += &format!(": {}", error["message"].as_str().unwrap());
            }
        }
        out += &line;
        out.push('\n');
    }
    out
}
