//! http steps from the workflow file to the wire: a step is rendered for an attempt the way the
//! engine renders it, sent by the executor to a real server on 127.0.0.1, and the test looks
//! at what arrived. Hostile values stay data in the path, the query and the fragment, and
//! cannot reach the host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use expect_test::expect;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wayline_core::execution::{Created, Execution, Secrets};
use wayline_exec as exec;
use wayline_journal::ErrorClass;
use wayline_journal::Time;
use wayline_runtime::render::{self, Limits};

/// The execution of `yaml` with `inputs` and the secret `KEY`, before anything ran.
fn execution(yaml: &str, inputs: Value) -> Execution {
    let loaded = wayline_lang::load(yaml);
    let workflow = loaded.workflow.unwrap_or_else(|| panic!("invalid: {:?}", loaded.diagnostics));
    let Value::Object(inputs) = inputs else { panic!("inputs are an object") };
    let created = Created {
        id: "ex1".into(),
        workflow: Arc::new(workflow),
        source: yaml.into(),
        path: "flow.yaml".into(),
        inputs,
        imports: Default::default(),
    };
    let secrets = Secrets::new(BTreeMap::from([("KEY".to_owned(), "key-123".to_owned())]));
    Execution::create(created, Arc::new(secrets), Time::from_millis(1_000_000)).0
}

/// The request of the first attempt of step `index` (or its compensation).
fn rendered(
    execution: &Execution,
    index: usize,
    compensation: bool,
) -> Result<render::Request, render::Error> {
    let attempt = if compensation {
        wayline_core::execution::Attempt::compensation(index, 1)
    } else {
        wayline_core::execution::Attempt::step(index, 1)
    };
    render::attempt(execution, attempt, &Limits::default())
}

fn http(request: Result<render::Request, render::Error>) -> exec::Http {
    match request {
        Ok(render::Request::Http(http)) => http,
        Ok(render::Request::Command(_)) => panic!("a command"),
        Err(error) => panic!("not rendered: {error:?}"),
    }
}

/// Serves a router that answers every request with its path and query, as received.
async fn with_server<T>(test: impl AsyncFnOnce(u16) -> T) -> T {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().fallback(async |request: Request| request.uri().to_string());
    tokio::select! {
        result = axum::serve(listener, router).into_future() => panic!("server stopped: {result:?}"),
        value = test(port) => value,
    }
}

async fn send(request: exec::Http) -> exec::Outputs {
    let client = exec::HttpClient::new().unwrap();
    match exec::run_http(&client, request, CancellationToken::new()).await {
        exec::Outcome::Succeeded { outputs } => outputs,
        exec::Outcome::Failed(failure) => panic!("{}: {}", failure.class.as_str(), failure.message),
    }
}

const ITEMS: &str = r#"
name: items
inputs:
  port: { type: integer }
  p: { type: string }
steps:
  - id: get
    http:
      url: "http://127.0.0.1:${{ inputs.port }}/v1/items/${{ inputs.p }}?q=${{ inputs.p }}&n=1#${{ inputs.p }}"
"#;

#[tokio::test]
async fn hostile_values_stay_data_in_the_path_query_and_fragment() {
    let hostile = ["../../admin?x=1#", "a@evil", "%2e%2e", "a b", "é☃", "&x=", "..;/x"];
    let seen = with_server(async |port| {
        let mut seen = String::new();
        for value in hostile {
            let execution = execution(ITEMS, json!({ "port": port, "p": value }));
            let request = http(rendered(&execution, 0, false));
            let fragment = request.url.split_once('#').map(|(_, f)| f.to_owned()).unwrap();
            let outputs = send(request).await;
            seen.push_str(&format!(
                "{value:?}\n  {} #{fragment}\n",
                outputs["body"].as_str().unwrap()
            ));
        }
        seen
    })
    .await;
    expect![[r#"
        "../../admin?x=1#"
          /v1/items/..%2F..%2Fadmin%3Fx%3D1%23?q=..%2F..%2Fadmin%3Fx%3D1%23&n=1 #..%2F..%2Fadmin%3Fx%3D1%23
        "a@evil"
          /v1/items/a%40evil?q=a%40evil&n=1 #a%40evil
        "%2e%2e"
          /v1/items/%252e%252e?q=%252e%252e&n=1 #%252e%252e
        "a b"
          /v1/items/a%20b?q=a%20b&n=1 #a%20b
        "é☃"
          /v1/items/%C3%A9%E2%98%83?q=%C3%A9%E2%98%83&n=1 #%C3%A9%E2%98%83
        "&x="
          /v1/items/%26x%3D?q=%26x%3D&n=1 #%26x%3D
        "..;/x"
          /v1/items/..%3B%2Fx?q=..%3B%2Fx&n=1 #..%3B%2Fx
    "#]]
    .assert_eq(&seen);
}

#[tokio::test]
async fn a_value_that_would_climb_the_path_is_refused() {
    let execution = execution(ITEMS, json!({ "port": 1, "p": ".." }));
    let Err(error) = rendered(&execution, 0, false) else { panic!("rendered") };
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(error.message.contains("`.` or `..` path segment"), "{}", error.message);
}

const REGIONAL: &str = r#"
name: regional
inputs:
  host: { type: string }
  port: { type: integer }
steps:
  - id: get
    http:
      url: "http://${{ inputs.host }}:${{ inputs.port }}/v1/status"
      headers: { X-Api-Key: "${{ secrets.KEY }}" }
"#;

#[tokio::test]
async fn a_value_in_the_host_must_be_plain_host_text() {
    let arrived = with_server(async |port| {
        let execution = execution(REGIONAL, json!({ "host": "127.0.0.1", "port": port }));
        send(http(rendered(&execution, 0, false))).await
    })
    .await;
    assert_eq!(arrived["body"], "/v1/status");

    for host in ["evil.example/", "evil.example?", "evil.example#", "user@evil", "evil:1", "é"] {
        let execution = execution(REGIONAL, json!({ "host": host, "port": 80 }));
        let Err(error) = rendered(&execution, 0, false) else { panic!("{host:?} was rendered") };
        assert_eq!(error.class, ErrorClass::Fatal, "never retried");
        expect![[r#"the URL template `http://${{ inputs.host }}:${{ inputs.port }}/v1/status`: `${{ inputs.host }}` is in the scheme or host, and its value is not plain host text (letters, digits, `-` and `.`)"#]]
        .assert_eq(&error.message);
    }
}

#[tokio::test]
async fn the_whole_url_from_one_expression_must_be_absolute() {
    let yaml = "name: whole\ninputs: { url: { type: string } }\nsteps:\n  - id: get\n    http: { url: \"${{ inputs.url }}\" }\n";
    let arrived = with_server(async |port| {
        let url = format!("http://127.0.0.1:{port}/as/is?a=b%20c");
        send(http(rendered(&execution(yaml, json!({ "url": url })), 0, false))).await
    })
    .await;
    assert_eq!(arrived["body"], "/as/is?a=b%20c");
    let Err(error) = rendered(&execution(yaml, json!({ "url": "file:///etc/passwd" })), 0, false)
    else {
        panic!("rendered")
    };
    assert_eq!(error.class, ErrorClass::Fatal);
    assert!(error.message.contains("not an absolute http:// or https:// URL"), "{}", error.message);
}

#[test]
fn templated_headers_are_sensitive_and_literal_ones_are_not() {
    let yaml = r#"
name: headers
steps:
  - id: get
    http:
      url: https://a.example/
      headers: { X-Plain: written, X-Key: "${{ secrets.KEY }}", X-Build: "b-${{ execution.id }}" }
"#;
    let headers = http(rendered(&execution(yaml, json!({})), 0, false)).headers;
    let flags: Vec<(&str, &str, bool)> =
        headers.iter().map(|h| (h.name.as_str(), h.value.as_str(), h.sensitive)).collect();
    assert_eq!(
        flags,
        [("X-Plain", "written", false), ("X-Key", "key-123", true), ("X-Build", "b-ex1", true)]
    );
}

#[test]
fn http_attempts_default_to_a_30_second_timeout() {
    let yaml = r#"
name: timeouts
steps:
  - id: default
    http: { url: "https://a.example/" }
    compensate: { http: { url: "https://a.example/undo" } }
  - id: own
    http: { url: "https://a.example/" }
    timeout: 2s
    compensate: { http: { url: "https://a.example/undo" }, timeout: 5s }
  - id: command
    run: "true"
"#;
    let execution = execution(yaml, json!({}));
    let timeout = |index, compensation| http(rendered(&execution, index, compensation)).timeout;
    assert_eq!(timeout(0, false), Duration::from_secs(30));
    assert_eq!(timeout(0, true), Duration::from_secs(30));
    assert_eq!(timeout(1, false), Duration::from_secs(2));
    assert_eq!(timeout(1, true), Duration::from_secs(5));
    let Ok(render::Request::Command(command)) = rendered(&execution, 2, false) else {
        panic!("a command")
    };
    assert_eq!(command.timeout, None, "commands have no default timeout");
}
