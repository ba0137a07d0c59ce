//! HTTP steps against a real server on 127.0.0.1, started inside each test and driven in the
//! same future as the request (no spawned tasks).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::routing::{any, get};
use expect_test::expect;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wayline_exec::{
    Body, FailureClass, Header, Http, HttpClient, Masker, Outcome, Outputs, RetryAfter, run_http,
};

use crate::render;

/// Serves `router` on a random local port while `test` runs against its base URL.
pub async fn with_server<T>(router: Router, test: impl AsyncFnOnce(String) -> T) -> T {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::select! {
        result = axum::serve(listener, router).into_future() => panic!("server stopped: {result:?}"),
        value = test(base) => value,
    }
}

pub async fn send(request: Http) -> Outcome {
    let client = HttpClient::new().unwrap();
    run_http(&client, request, CancellationToken::new()).await
}

/// The verdict and the outputs, without the `date` header that changes every second.
pub fn summary(outcome: &Outcome) -> String {
    let (verdict, outputs) = match outcome {
        Outcome::Succeeded { outputs } => ("succeeded".to_owned(), outputs),
        Outcome::Failed(failure) => {
            (format!("{}: {}", failure.class.as_str(), failure.message), &failure.outputs)
        }
    };
    let mut outputs = outputs.clone();
    if let Some(Value::Object(headers)) = outputs.get_mut("headers") {
        headers.remove("date");
    }
    // The server's port changes from run to run.
    if let Some(Value::String(url)) = outputs.get_mut("url") {
        *url = path_of(url);
    }
    format!("{verdict}\noutputs: {}\n", Value::Object(outputs))
}

/// A URL without its scheme and authority: `http://127.0.0.1:4711/a?b` is `/a?b`.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or(String::new(), |at| rest[at..].to_owned())
}

/// Echoes what the server received, so the test sees the request as it arrived.
async fn echo(
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let header = |name: &str| headers.get(name).map(|value| value.to_str().unwrap().to_owned());
    Json(json!({
        "method": method.as_str(),
        "query": query,
        "content_type": header("content-type"),
        "idempotency_key": header("idempotency-key"),
        "authorization": header("authorization"),
        "x_multi": headers.get_all("x-multi").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>(),
        "body": body,
    }))
}

fn echo_router() -> Router {
    Router::new().route("/echo", any(echo))
}

pub fn failure(outcome: Outcome) -> wayline_exec::Failure {
    match outcome {
        Outcome::Failed(failure) => failure,
        Outcome::Succeeded { outputs } => panic!("succeeded unexpectedly: {outputs:?}"),
    }
}

pub fn outputs(outcome: Outcome) -> Outputs {
    match outcome {
        Outcome::Succeeded { outputs } => outputs,
        Outcome::Failed(failure) => panic!("failed: {failure:?}"),
    }
}

#[tokio::test]
async fn json_round_trip_with_headers_query_and_idempotency_key() {
    let outcome = with_server(echo_router(), async |base| {
        let mut request = Http::new("post", format!("{base}/echo?fixed=1"));
        request.query = vec![("q".to_owned(), "a b&c".to_owned())];
        request.headers = vec![Header::new("X-Multi", "one"), Header::new("x-multi", "two")];
        request.body = Some(Body::Json(json!({"text": "released 1.2.3", "n": 1})));
        request.idempotency_key = "exec-7/announce".to_owned();
        send(request).await
    })
    .await;
    let outputs = outputs(outcome);
    assert_eq!(outputs["status"], 200);
    assert_eq!(outputs["headers"]["content-type"], "application/json");
    let body = &outputs["body"];
    assert_eq!(body["method"], "POST");
    assert_eq!(body["query"], "fixed=1&q=a+b%26c");
    assert_eq!(body["content_type"], "application/json");
    assert_eq!(body["idempotency_key"], "exec-7/announce");
    assert_eq!(body["x_multi"], json!(["one", "two"]));
    let sent: Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"text": "released 1.2.3", "n": 1}));
}

#[tokio::test]
async fn user_headers_win_over_defaults() {
    let outcome = with_server(echo_router(), async |base| {
        let mut request = Http::new("PUT", format!("{base}/echo"));
        request.headers = vec![
            Header::new("Content-Type", "application/vnd.custom+json"),
            Header::new("Idempotency-Key", "mine"),
        ];
        request.body = Some(Body::Text("{}".to_owned()));
        request.idempotency_key = "engine-key".to_owned();
        send(request).await
    })
    .await;
    let body = &outputs(outcome)["body"];
    assert_eq!(body["content_type"], "application/vnd.custom+json");
    assert_eq!(body["idempotency_key"], "mine");

    let outcome = with_server(echo_router(), async |base| {
        let mut request = Http::new("POST", format!("{base}/echo"));
        request.body = Some(Body::Text("plain words".to_owned()));
        send(request).await
    })
    .await;
    let body = &outputs(outcome)["body"];
    assert_eq!(body["content_type"], "text/plain; charset=utf-8");
    assert_eq!(body["idempotency_key"], Value::Null, "no key, no header");
    assert_eq!(body["body"], "plain words");
}

#[tokio::test]
async fn non_json_bodies_stay_text() {
    let router = Router::new().route("/text", get(|| async { "42" }));
    let outcome =
        with_server(router, async |base| send(Http::new("GET", format!("{base}/text"))).await)
            .await;
    expect![[r#"
        succeeded
        outputs: {"status":200,"headers":{"content-type":"text/plain; charset=utf-8","content-length":"2"},"body":"42","url":"/text","redirects":[]}
    "#]]
    .assert_eq(&summary(&outcome));
}

#[tokio::test]
async fn unexpected_status_is_a_failure_with_outputs() {
    let router = Router::new()
        .route("/created", get(|| async { (StatusCode::CREATED, Json(json!({"id": 7}))) }));
    let outcome = with_server(router, async |base| {
        let mut request = Http::new("GET", format!("{base}/created"));
        request.expect_status = Some(vec![200, 204]);
        send(request).await
    })
    .await;
    expect![[r#"
        failure: unexpected status 201 (expected 200, 204)
        outputs: {"status":201,"headers":{"content-type":"application/json","content-length":"8"},"body":{"id":7},"url":"/created","redirects":[]}
    "#]]
    .assert_eq(&summary(&outcome));
    assert_eq!(failure(outcome).retry_after, None);
}

#[tokio::test]
async fn expected_non_2xx_status_succeeds() {
    let router = Router::new().route("/gone", get(|| async { StatusCode::GONE }));
    let outcome = with_server(router, async |base| {
        let mut request = Http::new("GET", format!("{base}/gone"));
        request.expect_status = Some(vec![410]);
        send(request).await
    })
    .await;
    assert_eq!(outputs(outcome)["status"], 410);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after_seconds() {
    let router = Router::new().route(
        "/busy",
        get(|| async {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")], "slow down")
        }),
    );
    let outcome =
        with_server(router, async |base| send(Http::new("GET", format!("{base}/busy"))).await)
            .await;
    let failure = failure(outcome);
    assert_eq!(failure.class, FailureClass::Failure);
    assert_eq!(failure.message, "unexpected status 429 (expected 2xx)");
    assert_eq!(failure.retry_after, Some(RetryAfter::Delay(Duration::from_secs(7))));
    assert_eq!(failure.outputs["body"], "slow down");
}

#[tokio::test]
async fn unavailable_carries_retry_after_date_measured_against_the_response_date() {
    let router = Router::new().route(
        "/down",
        get(|| async {
            let headers = [
                (header::DATE, "Wed, 21 Oct 2015 07:28:00 GMT"),
                (header::RETRY_AFTER, "Wed, 21 Oct 2015 07:30:00 GMT"),
            ];
            (StatusCode::SERVICE_UNAVAILABLE, headers)
        }),
    );
    let outcome =
        with_server(router, async |base| send(Http::new("GET", format!("{base}/down"))).await)
            .await;
    let failure = failure(outcome);
    assert_eq!(failure.message, "unexpected status 503 (expected 2xx)");
    assert_eq!(failure.retry_after, Some(RetryAfter::Delay(Duration::from_secs(120))));
}

#[tokio::test]
async fn a_response_over_the_limit_is_fatal() {
    let router = Router::new().route("/big", get(|| async { "x".repeat(2000) }));
    let outcome = with_server(router, async |base| {
        let mut request = Http::new("GET", format!("{base}/big"));
        request.limits.output_bytes = 1000;
        send(request).await
    })
    .await;
    let failure = failure(outcome);
    assert_eq!(failure.class, FailureClass::Fatal);
    assert_eq!(failure.message, "response body exceeds 1000 bytes");
    assert_eq!(failure.outputs["status"], 200);
}

#[tokio::test]
async fn a_chunked_response_over_the_limit_is_cut_off_while_streaming() {
    // No Content-Length, so the limit can only be enforced while reading; the server would go
    // on sending for far longer than the test runs.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = async {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await.unwrap();
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = format!("400\r\n{}\r\n", "y".repeat(0x400));
        for _ in 0..10_000 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                break; // the client hung up, as it should
            }
        }
        std::future::pending::<()>().await;
    };
    let client = async {
        let mut request = Http::new("GET", url);
        request.limits.output_bytes = 4096;
        send(request).await
    };
    let outcome = tokio::select! {
        () = server => unreachable!(),
        outcome = client => outcome,
    };
    let failure = failure(outcome);
    assert_eq!(failure.class, FailureClass::Fatal);
    assert_eq!(failure.message, "response body exceeds 4096 bytes");
}

#[tokio::test]
async fn timeout_against_a_server_that_never_answers() {
    let router = Router::new().route("/hang", get(std::future::pending::<()>));
    let outcome = with_server(router, async |base| {
        let mut request = Http::new("GET", format!("{base}/hang"));
        request.timeout = Duration::from_millis(300);
        send(request).await
    })
    .await;
    expect![[r#"
        timeout: timed out after 300ms
        outputs: {}
    "#]]
    .assert_eq(&render(&outcome, &[]));
}

#[tokio::test]
async fn timeout_against_a_server_that_drips_its_body() {
    // The head arrives at once, then one byte of the body every 50ms: each read makes
    // progress, so only a limit on the whole exchange ends it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/drip", listener.local_addr().unwrap());
    let server = async {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await.unwrap();
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            if socket.write_all(b"x").await.is_err() {
                break; // the client hung up, as it should
            }
        }
        std::future::pending::<()>().await;
    };
    let client = async {
        let mut request = Http::new("GET", url);
        request.timeout = Duration::from_millis(300);
        send(request).await
    };
    let outcome = tokio::select! {
        () = server => unreachable!(),
        outcome = client => outcome,
    };
    expect![[r#"
        timeout: timed out after 300ms
        outputs: {}
    "#]]
    .assert_eq(&render(&outcome, &[]));
}

#[tokio::test]
async fn cancel_aborts_a_request_in_flight() {
    let arrived = Arc::new(Notify::new());
    let signal = arrived.clone();
    let router = Router::new().route(
        "/hang",
        get(async move || {
            signal.notify_one();
            std::future::pending::<()>().await
        }),
    );
    let outcome = with_server(router, async |base| {
        let cancel = CancellationToken::new();
        let client = HttpClient::new().unwrap();
        let request = run_http(&client, Http::new("GET", format!("{base}/hang")), cancel.clone());
        let canceller = async {
            arrived.notified().await;
            cancel.cancel();
        };
        tokio::join!(request, canceller).0
    })
    .await;
    expect![[r#"
        cancelled: cancelled
        outputs: {}
    "#]]
    .assert_eq(&render(&outcome, &[]));
}

#[tokio::test]
async fn connection_refused_is_a_retryable_failure() {
    // A port that was just free: bound, then released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let failure = failure(send(Http::new("GET", format!("http://{address}/"))).await);
    assert_eq!(failure.class, FailureClass::Failure);
    assert!(failure.message.starts_with("connection failed: "), "{}", failure.message);
    assert!(failure.message.contains("refused"), "{}", failure.message);
}

#[tokio::test]
async fn invalid_requests_are_fatal() {
    let cases = [
        Http::new("GET", "not a url"),
        Http::new("GET", "ftp://example.com/file"),
        Http::new("GE T", "http://127.0.0.1:1/"),
        {
            let mut request = Http::new("GET", "http://127.0.0.1:1/");
            request.headers = vec![Header::new("bad header", "x")];
            request
        },
        {
            let mut request = Http::new("GET", "http://127.0.0.1:1/");
            request.headers = vec![Header::sensitive("X-Token", "line\nbreak")];
            request
        },
    ];
    let mut rendered = String::new();
    for request in cases {
        let failure = failure(send(request).await);
        assert_eq!(failure.class, FailureClass::Fatal);
        rendered.push_str(&failure.message);
        rendered.push('\n');
    }
    expect![[r#"
        invalid URL: relative URL without a base
        unsupported URL scheme "ftp" (expected http or https)
        invalid HTTP method "GE T"
        invalid header name "bad header"
        invalid value for header x-token
    "#]]
    .assert_eq(&rendered);
}

#[tokio::test]
async fn secrets_are_masked_in_outputs_and_messages() {
    let outcome = with_server(echo_router(), async |base| {
        let mut request = Http::new("GET", format!("{base}/echo"));
        request.headers = vec![Header::new("Authorization", "Bearer tok-123")];
        request.masker = Masker::new(["tok-123"]);
        send(request).await
    })
    .await;
    assert_eq!(outputs(outcome)["body"]["authorization"], "Bearer ***");

    // reqwest quotes the URL in connection errors.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let mut request = Http::new("GET", format!("http://{address}/hook?token=tok-123"));
    request.masker = Masker::new(["tok-123"]);
    let failure = failure(send(request).await);
    assert!(failure.message.contains("token=***"), "{}", failure.message);
    assert!(!failure.message.contains("tok-123"), "{}", failure.message);
}
