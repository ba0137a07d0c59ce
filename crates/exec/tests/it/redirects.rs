//! Redirects, followed by the executor itself: which headers go along to the same origin and
//! to another one (two listeners on two ports are two origins), how each status changes the
//! method and the body, and the hop limit.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use expect_test::expect;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wayline_exec::{Body, FailureClass, Header, Http};

use crate::http::{failure, outputs, path_of, send, summary, with_server};

/// Serves two routers, two origins, while `test` runs against their base URLs.
async fn with_two_origins<T>(test: impl AsyncFnOnce(String, String) -> T) -> T {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bases =
        [&first, &second].map(|listener| format!("http://{}", listener.local_addr().unwrap()));
    let [a, b] = bases;
    tokio::select! {
        result = axum::serve(first, router()).into_future() => panic!("server stopped: {result:?}"),
        result = axum::serve(second, router()).into_future() => panic!("server stopped: {result:?}"),
        value = test(a, b) => value,
    }
}

/// `/echo` answers with the request as it arrived; `/redirect?status=S&to=URL` redirects;
/// `/chain/N` redirects to `/chain/N-1` until `/chain/0`, which answers.
fn router() -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/redirect", any(redirect))
        .route("/chain/{n}", any(chain))
}

async fn echo(method: Method, headers: HeaderMap, body: String) -> Json<Value> {
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "host" | "accept" | "user-agent"))
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
        .collect();
    Json(json!({ "method": method.as_str(), "headers": headers, "body": body }))
}

async fn redirect(RawQuery(query): RawQuery) -> Response {
    let url = Url::parse(&format!("http://query/?{}", query.unwrap_or_default())).unwrap();
    let get = |key: &str| {
        url.query_pairs().find(|(name, _)| name == key).map(|(_, value)| value.into_owned())
    };
    let status = StatusCode::from_u16(get("status").unwrap().parse().unwrap()).unwrap();
    match get("to") {
        Some(to) => (status, [(header::LOCATION, to)]).into_response(),
        None => status.into_response(),
    }
}

async fn chain(Path(n): Path<u32>) -> Response {
    if n == 0 {
        return "arrived".into_response();
    }
    (StatusCode::FOUND, [(header::LOCATION, format!("/chain/{}", n - 1))]).into_response()
}

/// `/redirect` sending `status` to `to`, with `to` encoded as a query value.
fn redirect_to(base: &str, status: u16, to: &str) -> String {
    let mut url = Url::parse(&format!("{base}/redirect")).unwrap();
    url.query_pairs_mut().append_pair("status", &status.to_string()).append_pair("to", to);
    url.to_string()
}

/// Every kind of header: credentials by name, sensitive ones (templated in a workflow), and
/// plain ones.
fn headers() -> Vec<Header> {
    vec![
        Header::new("Authorization", "Bearer tok"),
        Header::new("Cookie", "session=1"),
        Header::new("Proxy-Authorization", "Basic cHJveHk="),
        Header::sensitive("X-Api-Key", "key-123"),
        Header::sensitive("X-Templated", "from an input"),
        Header::new("X-Plain", "written in the file"),
    ]
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_every_header() {
    let outcome = with_two_origins(async |a, _| {
        let mut request = Http::new("GET", redirect_to(&a, 302, "/echo"));
        request.headers = headers();
        request.idempotency_key = "ex1:call".into();
        send(request).await
    })
    .await;
    let outputs = outputs(outcome);
    expect![[r#"
        {"authorization":"Bearer tok","cookie":"session=1","idempotency-key":"ex1:call","proxy-authorization":"Basic cHJveHk=","x-api-key":"key-123","x-plain":"written in the file","x-templated":"from an input"}"#]]
    .assert_eq(&outputs["body"]["headers"].to_string());
    assert_eq!(path_of(outputs["url"].as_str().unwrap()), "/echo");
    let redirects = outputs["redirects"].as_array().unwrap();
    assert_eq!(redirects.len(), 1);
    assert_eq!(redirects[0]["status"], 302);
    assert_eq!(path_of(redirects[0]["url"].as_str().unwrap()), "/redirect?status=302&to=%2Fecho");
}

#[tokio::test]
async fn a_cross_origin_redirect_drops_credentials_and_sensitive_headers() {
    let (a, outcome) = with_two_origins(async |a, b| {
        // a → b → back to a: once the headers left, they stay dropped.
        let back = redirect_to(&b, 307, &format!("{a}/echo"));
        let mut request = Http::new("GET", redirect_to(&a, 301, &back));
        request.headers = headers();
        request.idempotency_key = "ex1:call".into();
        (a.clone(), send(request).await)
    })
    .await;
    let outputs = outputs(outcome);
    expect![[r#"
        {"idempotency-key":"ex1:call","x-plain":"written in the file"}"#]]
    .assert_eq(&outputs["body"]["headers"].to_string());
    assert_eq!(outputs["url"], format!("{a}/echo"));
    let statuses: Vec<&Value> =
        outputs["redirects"].as_array().unwrap().iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [301, 307]);

    // One hop is enough to drop them.
    let outcome = with_two_origins(async |a, b| {
        let mut request = Http::new("GET", redirect_to(&a, 302, &format!("{b}/echo")));
        request.headers = headers();
        send(request).await
    })
    .await;
    expect![[r#"
        {"x-plain":"written in the file"}"#]]
    .assert_eq(&self::outputs(outcome)["body"]["headers"].to_string());
}

#[tokio::test]
async fn each_redirect_status_decides_the_method_and_the_body() {
    let mut seen = String::new();
    for (method, status) in [
        ("POST", 303),
        ("PUT", 303),
        ("POST", 301),
        ("POST", 302),
        ("PUT", 301),
        ("POST", 307),
        ("POST", 308),
    ] {
        let outcome = with_server(router(), async |base| {
            let mut request = Http::new(method, redirect_to(&base, status, "/echo"));
            request.body = Some(Body::Json(json!({ "n": 1 })));
            send(request).await
        })
        .await;
        let body = &outputs(outcome)["body"];
        let content_type = body["headers"]["content-type"].as_str().unwrap_or("-");
        seen.push_str(&format!(
            "{method} {status} -> {} body {:?} content-type {content_type}\n",
            body["method"].as_str().unwrap(),
            body["body"].as_str().unwrap(),
        ));
    }
    expect![[r#"
        POST 303 -> GET body "" content-type -
        PUT 303 -> GET body "" content-type -
        POST 301 -> GET body "" content-type -
        POST 302 -> GET body "" content-type -
        PUT 301 -> PUT body "{\"n\":1}" content-type application/json
        POST 307 -> POST body "{\"n\":1}" content-type application/json
        POST 308 -> POST body "{\"n\":1}" content-type application/json
    "#]]
    .assert_eq(&seen);
}

#[tokio::test]
async fn at_most_ten_redirects_are_followed() {
    let (ten, eleven) = with_server(router(), async |base| {
        let ten = send(Http::new("GET", format!("{base}/chain/10"))).await;
        let eleven = send(Http::new("GET", format!("{base}/chain/11"))).await;
        (ten, eleven)
    })
    .await;
    let ten = outputs(ten);
    assert_eq!(ten["body"], "arrived");
    assert_eq!(ten["redirects"].as_array().unwrap().len(), 10);
    assert_eq!(path_of(ten["url"].as_str().unwrap()), "/chain/0");
    let eleven = failure(eleven);
    assert_eq!(
        (eleven.class, eleven.message.as_str()),
        (FailureClass::Failure, "more than 10 redirects")
    );
}

#[tokio::test]
async fn an_expected_redirect_status_is_the_answer() {
    let outcome = with_server(router(), async |base| {
        let mut request = Http::new("GET", redirect_to(&base, 302, "/echo"));
        request.expect_status = Some(vec![302]);
        send(request).await
    })
    .await;
    let outputs = outputs(outcome);
    assert_eq!(outputs["status"], 302);
    assert_eq!(outputs["headers"]["location"], "/echo");
    assert_eq!(outputs["redirects"], json!([]));
}

#[tokio::test]
async fn unusable_locations_fail_and_other_statuses_are_not_followed() {
    let outcomes = with_server(router(), async |base| {
        let mut outcomes = Vec::new();
        for (status, to) in [(302, "ftp://files.example/x"), (307, "http://[::1"), (300, "/echo")] {
            outcomes.push(send(Http::new("GET", redirect_to(&base, status, to))).await);
        }
        outcomes.push(send(Http::new("GET", format!("{base}/redirect?status=301"))).await);
        outcomes
    })
    .await;
    let shown: String = outcomes
        .iter()
        .map(|outcome| summary(outcome).lines().next().unwrap().to_owned() + "\n")
        .collect();
    expect![[r#"
        failure: redirect (302) to a non-HTTP URL
        failure: redirect (307) to an invalid location
        failure: unexpected status 300 (expected 2xx)
        failure: unexpected status 301 (expected 2xx)
    "#]]
    .assert_eq(&shown);
}

#[tokio::test]
async fn user_info_is_a_credential_of_its_origin() {
    let (same, other) = with_two_origins(async |a, b| {
        let with_user = |url: String| url.replacen("http://", "http://user:pw@", 1);
        let same = send(Http::new("GET", with_user(redirect_to(&a, 302, "/echo")))).await;
        let other =
            send(Http::new("GET", with_user(redirect_to(&a, 302, &format!("{b}/echo"))))).await;
        (same, other)
    })
    .await;
    let same = outputs(same);
    assert_eq!(same["body"]["headers"]["authorization"], "Basic dXNlcjpwdw==");
    let shown = format!("{} {}", same["url"], same["redirects"]);
    assert!(!shown.contains("pw"), "outputs never show user info: {shown}");
    assert_eq!(outputs(other)["body"]["headers"], json!({}));
}
