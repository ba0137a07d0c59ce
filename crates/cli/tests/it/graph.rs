//! `wayline graph`: the dependency graph as Graphviz dot and as Mermaid, with groups as
//! clusters and condition branches as labelled dashed edges.

use expect_test::expect;

use crate::wayline;

#[test]
fn dot() {
    let run = wayline(&["graph", "examples/release.yaml"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    expect![[r#"
        digraph "release" {
          rankdir=LR;
          node [shape=box, style=rounded];
          subgraph cluster_0 {
            label="deploys (max 2)";
            "deploy_eu";
            "deploy_us";
          }
          "build" [label="build\nrun"];
          "test" [label="test\nrun"];
          "coverage_ok" [label="coverage_ok\ncondition", shape=diamond, style=""];
          "deploy_eu" [label="deploy_eu\nrun"];
          "deploy_us" [label="deploy_us\nrun"];
          "settle" [label="settle\nwait", shape=ellipse];
          "announce" [label="announce\nhttp"];
          "report" [label="report\nrun"];
          "meta" [label="meta\nset"];
          "cleanup" [label="cleanup\nrun"];
          "build" -> "test";
          "test" -> "coverage_ok";
          "coverage_ok" -> "deploy_eu" [label="then", style=dashed];
          "coverage_ok" -> "deploy_us" [label="then", style=dashed];
          "deploy_eu" -> "settle";
          "deploy_us" -> "settle";
          "settle" -> "announce";
          "coverage_ok" -> "report" [label="else", style=dashed];
          "build" -> "meta";
          "announce" -> "cleanup";
        }
    "#]]
    .assert_eq(&run.stdout);
}

#[test]
fn mermaid() {
    let run = wayline(&["graph", "--format", "mermaid", "examples/release.yaml"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    expect![[r#"
        flowchart LR
          subgraph g0 ["deploys"]
            s3
            s4
          end
          s0["build"]
          s1["test"]
          s2{"coverage_ok"}
          s3["deploy_eu"]
          s4["deploy_us"]
          s5(["settle"])
          s6["announce"]
          s7["report"]
          s8["meta"]
          s9["cleanup"]
          s0 --> s1
          s1 --> s2
          s2 -. then .-> s3
          s2 -. then .-> s4
          s3 --> s5
          s4 --> s5
          s5 --> s6
          s2 -. else .-> s7
          s0 --> s8
          s6 --> s9
    "#]]
    .assert_eq(&run.stdout);
}

#[test]
fn a_fan_out_is_drawn_as_a_stack() {
    let dot = wayline(&["graph", "examples/fan-out.yaml"]);
    assert_eq!((dot.code, dot.stderr.as_str()), (0, ""));
    assert!(dot.stdout.contains(r#""shard" [label="shard\nrun · for_each", peripheries=2];"#));
    assert!(dot.stdout.contains(r#""test" [label="test\nrun · matrix", peripheries=2];"#));
    let mermaid = wayline(&["graph", "--format", "mermaid", "examples/fan-out.yaml"]);
    assert!(mermaid.stdout.contains(r#"s1[["shard · for_each"]]"#), "{}", mermaid.stdout);
}

#[test]
fn an_invalid_workflow_has_no_graph() {
    let run = wayline(&["graph", "crates/lang/tests/fixtures/invalid/cycle.yaml"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
}
