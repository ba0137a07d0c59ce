//! HTTP steps: send one request per attempt, read a bounded response, and turn the status into
//! an outcome the retry policy understands (docs/design.md §2.2, §2.3).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Failure, FailureClass, Limits, Masker, Outcome, Outputs, format_duration};

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Serialized as JSON; `Content-Type: application/json` unless the request sets one.
    Json(Value),
    /// Sent as is; `Content-Type: text/plain; charset=utf-8` unless the request sets one.
    Text(String),
}

/// A request header.
#[derive(Clone)]
pub struct Header {
    pub name: String,
    pub value: String,
    /// Dropped when a redirect leads to another origin. The caller knows which values carry
    /// credentials or came from data it did not write; `Authorization`, `Cookie` and
    /// `Proxy-Authorization` are dropped there whatever this says.
    pub sensitive: bool,
}

impl Header {
    /// A header that follows redirects to other origins.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header { name: name.into(), value: value.into(), sensitive: false }
    }

    /// A header that is sent to the request's own origin only.
    pub fn sensitive(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header { sensitive: true, ..Header::new(name, value) }
    }
}

/// One attempt of an http step, fully resolved.
///
/// Deliberately not `Debug`: headers and URLs often carry secrets.
#[derive(Clone)]
pub struct Http {
    /// The method, case-insensitive for the standard ones (`post` is `POST`).
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Request headers, in order; a name may repeat.
    pub headers: Vec<Header>,
    /// Query parameters appended (URL-encoded) to those already in the URL.
    pub query: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Body>,
    /// Statuses that count as success; `None` (or an empty list) means any 2xx. A redirect
    /// status listed here is the answer, not followed.
    pub expect_status: Option<Vec<u16>>,
    /// Per-attempt limit on the whole exchange: connecting, every redirect, and the response
    /// body to its last byte.
    pub timeout: Duration,
    /// Sent as `Idempotency-Key` unless the request sets that header itself; the same for
    /// every attempt of a step in one execution, so the receiver can drop repeats (docs/design.md §5).
    pub idempotency_key: String,
    /// [`Limits::output_bytes`] bounds the response body; `log_bytes` is unused.
    pub limits: Limits,
    /// Secrets to mask in the outputs and the failure message.
    pub masker: Masker,
}

impl Http {
    /// The timeout of [`Http::new`]: without one, a server that never answers, or sends a
    /// byte a second, would hold the attempt forever.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Redirects followed before the attempt fails.
    pub const MAX_REDIRECTS: usize = 10;

    /// A request with no headers, query or body, accepting any 2xx, with the default timeout
    /// and limits.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Http {
        Http {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            query: Vec::new(),
            body: None,
            expect_status: None,
            timeout: Http::DEFAULT_TIMEOUT,
            idempotency_key: String::new(),
            limits: Limits::default(),
            masker: Masker::default(),
        }
    }
}

/// The HTTP client every http step shares: one connection pool and one TLS configuration.
/// Build it once; clones are cheap and share the pool.
///
/// TLS is rustls with the *ring* provider, verifying servers against the platform's trust
/// store. It is configured per client, not installed as the process-wide rustls default.
/// Redirects are not followed by reqwest but by [`run_http`], which decides per hop which
/// headers may go along; the usual `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` variables are
/// honoured.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// Builds the client.
    pub fn new() -> Result<HttpClient, Error> {
        use rustls_platform_verifier::BuilderVerifierExt;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_platform_verifier())
            .map_err(|error| Error(format!("cannot configure TLS: {error}")))?
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wayline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error(format!("cannot build the HTTP client: {}", chain(&error))))?;
        Ok(HttpClient { client })
    }
}

/// The HTTP client could not be built (no usable TLS configuration): an engine setup problem,
/// not a step failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// How long a server asked us to wait (`Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// A delay: the header gave seconds, or a date that could be measured against the
    /// response's own `Date` header (which also sidesteps clock skew between the hosts).
    Delay(Duration),
    /// A date, and the response had no `Date` to measure it against. This crate reads no wall
    /// clock, so the caller turns it into a delay with [`RetryAfter::delay_from`].
    At(SystemTime),
}

impl RetryAfter {
    /// The delay as seen at `now`; zero when the date has passed.
    pub fn delay_from(&self, now: SystemTime) -> Duration {
        match *self {
            RetryAfter::Delay(delay) => delay,
            RetryAfter::At(at) => at.duration_since(now).unwrap_or_default(),
        }
    }
}

/// Performs one attempt of an http step.
///
/// Outputs are `status` (integer), `headers` (lower-case names; repeated headers joined with
/// `", "`), `body`: the parsed JSON value when the response's `Content-Type` is JSON
/// (`application/json` or `*/*+json`) and parses, otherwise the text (invalid UTF-8 replaced),
/// `url`: the URL that gave the answer, and `redirects`: one `{status, url}` per redirect
/// followed, `url` being the URL that answered with the redirect. Bodies that merely look
/// like JSON under another content type stay text, so a `text/plain` `"42"` never turns into
/// a number.
///
/// Redirects (301, 302, 303, 307, 308 with a `Location`) are followed, at most
/// [`Http::MAX_REDIRECTS`], unless their status is in `expect_status`. 303, and 301/302 after
/// a `POST`, continue as a `GET` without the body (as browsers do); 307 and 308 keep the
/// method and the body. Once a redirect leads to another origin (scheme, host or port), the
/// [`Header::sensitive`] headers and `Authorization`, `Cookie` and `Proxy-Authorization` are
/// no longer sent.
///
/// - A status outside `expect_status` is `Failure` ("unexpected status 503 (expected 2xx)"),
///   with the outputs, and for 429 and 503 the `Retry-After` in [`Failure::retry_after`].
/// - Refused or reset connections, DNS failures, broken responses, too many redirects and a
///   redirect to an invalid or non-HTTP location are `Failure`.
/// - Past [`Http::timeout`] the request is dropped and the attempt is `Timeout`; `cancel`
///   drops it too and the attempt is `Cancelled`.
/// - An invalid method, URL (or a scheme other than http/https), header name or value, and a
///   response body larger than [`Limits::output_bytes`] are `Fatal`. The body is read only up
///   to that limit, never buffered whole first.
///
/// ```no_run
/// use tokio_util::sync::CancellationToken;
/// use wayline_exec::{Body, Header, Http, HttpClient, Outcome, run_http};
///
/// # async fn demo() -> Result<(), wayline_exec::http::Error> {
/// let client = HttpClient::new()?;
/// let mut request = Http::new("POST", "https://chat.example/hooks/releases");
/// request.headers = vec![Header::sensitive("Authorization", "Bearer tok-123")];
/// request.body = Some(Body::Json(serde_json::json!({ "text": "released 1.2.3" })));
/// request.expect_status = Some(vec![200, 204]);
/// request.idempotency_key = "exec-42/announce".to_owned();
/// if let Outcome::Succeeded { outputs } = run_http(&client, request, CancellationToken::new()).await {
///     println!("status {}", outputs["status"]);
/// }
/// # Ok(())
/// # }
/// ```
pub async fn run_http(client: &HttpClient, request: Http, cancel: CancellationToken) -> Outcome {
    let masker = request.masker.clone();
    let outcome = match Hop::first(&request) {
        Ok(hop) => {
            let exchange = exchange(&client.client, hop, &request);
            tokio::select! {
                biased;
                () = cancel.cancelled() => Outcome::failed(FailureClass::Cancelled, "cancelled"),
                outcome = exchange => outcome,
                () = tokio::time::sleep(request.timeout) => {
                    let message = format!("timed out after {}", format_duration(request.timeout));
                    Outcome::failed(FailureClass::Timeout, message)
                }
            }
        }
        Err(message) => Outcome::failed(FailureClass::Fatal, message),
    };
    outcome.masked(&masker)
}

/// Headers that carry credentials by their very name.
const CREDENTIALS: [HeaderName; 3] =
    [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION];

/// Headers that describe a body, dropped with it when a redirect turns the request into a GET.
const BODY_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
];

/// One request of an exchange: the first, or the one a redirect leads to.
struct Hop {
    method: Method,
    url: Url,
    /// Each header with whether it stays with the first request's origin.
    headers: Vec<(HeaderName, HeaderValue, bool)>,
    body: Option<Vec<u8>>,
}

impl Hop {
    /// Validates the request; every error is the request's fault.
    fn first(request: &Http) -> Result<Hop, String> {
        let method = request.method.trim().to_ascii_uppercase();
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("invalid HTTP method {:?}", request.method))?;
        let mut url =
            Url::parse(request.url.trim()).map_err(|error| format!("invalid URL: {error}"))?;
        if !is_http(&url) {
            return Err(format!(
                "unsupported URL scheme {:?} (expected http or https)",
                url.scheme()
            ));
        }
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        let mut headers = Vec::new();
        for Header { name, value, sensitive } in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            // The value is not quoted: it may well be a credential.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            let sensitive = *sensitive || CREDENTIALS.contains(&name);
            // Keeps it out of HTTP/2 header compression tables, and out of debug output.
            value.set_sensitive(sensitive);
            headers.push((name, value, sensitive));
        }
        let has = |headers: &[(HeaderName, HeaderValue, bool)], name: &HeaderName| {
            headers.iter().any(|(present, _, _)| present == name)
        };
        let idempotency_key = HeaderName::from_static("idempotency-key");
        if !request.idempotency_key.is_empty() && !has(&headers, &idempotency_key) {
            let value = HeaderValue::from_str(&request.idempotency_key)
                .map_err(|_| "invalid idempotency key for the Idempotency-Key header".to_owned())?;
            headers.push((idempotency_key, value, false));
        }
        let (body, content_type) = match &request.body {
            None => (None, None),
            Some(Body::Json(value)) => {
                let body = serde_json::to_vec(value)
                    .map_err(|error| format!("invalid JSON body: {error}"))?;
                (Some(body), Some("application/json"))
            }
            Some(Body::Text(text)) => {
                (Some(text.clone().into_bytes()), Some("text/plain; charset=utf-8"))
            }
        };
        if let Some(content_type) = content_type
            && !has(&headers, &header::CONTENT_TYPE)
        {
            headers.push((header::CONTENT_TYPE, HeaderValue::from_static(content_type), false));
        }
        Ok(Hop { method, url, headers, body })
    }

    fn build(&self, client: &reqwest::Client) -> Result<reqwest::Request, String> {
        let mut headers = HeaderMap::new();
        for (name, value, _) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut builder = client.request(self.method.clone(), self.url.clone()).headers(headers);
        if let Some(body) = &self.body {
            builder = builder.body(body.clone());
        }
        builder.build().map_err(|error| format!("invalid request: {}", chain(&error)))
    }

    /// The request a redirect with `status` to `location` leads to.
    fn follow(mut self, status: StatusCode, mut location: Url) -> Hop {
        let to_get = match status {
            StatusCode::SEE_OTHER => self.method != Method::GET && self.method != Method::HEAD,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => self.method == Method::POST,
            _ => false,
        };
        if to_get {
            self.method = Method::GET;
            self.body = None;
            self.headers.retain(|(name, _, _)| !BODY_HEADERS.contains(name));
        }
        if location.origin() != self.url.origin() {
            self.headers.retain(|(_, _, sensitive)| !sensitive);
        } else if location.username().is_empty() && location.password().is_none() {
            // User info is a credential like `Authorization`: it stays with its origin.
            let _ = location.set_username(self.url.username());
            let _ = location.set_password(self.url.password());
        }
        self.url = location;
        self
    }
}

fn is_http(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// A URL as it goes into outputs and messages: without user info, which is a credential
/// (reqwest sends it as `Authorization`, never in the request line).
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Sends the request, follows redirects, and reads the final response within the body limit.
async fn exchange(client: &reqwest::Client, mut hop: Hop, request: &Http) -> Outcome {
    let mut redirects = Vec::new();
    loop {
        let built = match hop.build(client) {
            Ok(built) => built,
            Err(message) => return Outcome::failed(FailureClass::Fatal, message),
        };
        let response = match client.execute(built).await {
            Ok(response) => response,
            Err(error) => return request_error(&error),
        };
        let status = response.status();
        let Some(location) = redirect(&response, request) else {
            return read(response, &hop.url, redirects, request).await;
        };
        let location = match location {
            Ok(location) => location,
            Err(problem) => {
                let message = format!("redirect ({}) {problem}", status.as_u16());
                return Outcome::failed(FailureClass::Failure, message);
            }
        };
        if redirects.len() == Http::MAX_REDIRECTS {
            let message = format!("more than {} redirects", Http::MAX_REDIRECTS);
            return Outcome::failed(FailureClass::Failure, message);
        }
        redirects.push(serde_json::json!({ "status": status.as_u16(), "url": shown(&hop.url) }));
        hop = hop.follow(status, location);
    }
}

/// Where a response redirects to: `None` when it is the answer (not a redirect status, no
/// `Location`, or a status the request expects), an error when the location is unusable.
fn redirect(response: &reqwest::Response, request: &Http) -> Option<Result<Url, &'static str>> {
    let status = response.status();
    let followed = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    let expected = request.expect_status.as_deref().unwrap_or_default();
    if !followed || expected.contains(&status.as_u16()) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?;
    let location = location
        .to_str()
        .ok()
        .and_then(|location| response.url().join(location).ok())
        .ok_or("to an invalid location");
    Some(location.and_then(|url| if is_http(&url) { Ok(url) } else { Err("to a non-HTTP URL") }))
}

/// Reads the final response within the body limit and judges its status.
async fn read(
    mut response: reqwest::Response,
    url: &Url,
    redirects: Vec<Value>,
    request: &Http,
) -> Outcome {
    let status = response.status();
    let headers = response.headers().clone();
    let limit = request.limits.output_bytes;
    let mut outputs = Outputs::new();
    outputs.insert("status".to_owned(), status.as_u16().into());
    outputs.insert("headers".to_owned(), header_map(&headers, &request.masker));
    let mut url = Value::String(shown(url));
    let mut redirects = Value::Array(redirects);
    request.masker.mask_value(&mut url);
    request.masker.mask_value(&mut redirects);
    let too_large = |mut outputs: Outputs| {
        outputs.insert("url".to_owned(), url.clone());
        outputs.insert("redirects".to_owned(), redirects.clone());
        Outcome::Failed(Failure {
            class: FailureClass::Fatal,
            message: format!("response body exceeds {limit} bytes"),
            outputs,
            retry_after: None,
        })
    };
    if response.content_length().is_some_and(|length| length > limit) {
        return too_large(outputs);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    return too_large(outputs);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => {
                let message = format!("reading the response failed: {}", chain(&error));
                return Outcome::failed(FailureClass::Failure, message);
            }
        }
    }
    let mut body = parse_body(&headers, &body);
    request.masker.mask_value(&mut body);
    outputs.insert("body".to_owned(), body);
    outputs.insert("url".to_owned(), url);
    outputs.insert("redirects".to_owned(), redirects);

    let expected = request.expect_status.as_deref().filter(|list| !list.is_empty());
    let accepted = match expected {
        Some(list) => list.contains(&status.as_u16()),
        None => status.is_success(),
    };
    if accepted {
        return Outcome::Succeeded { outputs };
    }
    let expected = match expected {
        Some(list) => list.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
        None => "2xx".to_owned(),
    };
    let retry_after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            headers.get(header::RETRY_AFTER).and_then(|value| {
                let date = headers.get(header::DATE).and_then(|date| date.to_str().ok());
                parse_retry_after(value.to_str().ok()?, date)
            })
        }
        _ => None,
    };
    Outcome::Failed(Failure {
        class: FailureClass::Failure,
        message: format!("unexpected status {} (expected {expected})", status.as_u16()),
        outputs,
        retry_after,
    })
}

/// Classifies an error from sending a request. The request was validated before, so what is
/// left is the network's or the server's doing, which another attempt may not meet.
fn request_error(error: &reqwest::Error) -> Outcome {
    let class = if error.is_builder() { FailureClass::Fatal } else { FailureClass::Failure };
    let what = if error.is_connect() { "connection failed" } else { "request failed" };
    Outcome::failed(class, format!("{what}: {}", chain(error)))
}

/// An error and its causes on one line; reqwest's own message alone hides the useful part
/// ("error sending request" … "Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn header_map(headers: &HeaderMap, masker: &Masker) -> Value {
    let mut map = Outputs::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let mut map = Value::Object(map);
    masker.mask_value(&mut map);
    map
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let media_type = value.split(';').next().unwrap_or_default().trim();
            media_type.eq_ignore_ascii_case("application/json")
                || media_type.to_ascii_lowercase().ends_with("+json")
        });
    if is_json && let Ok(value) = serde_json::from_slice(body) {
        return value;
    }
    Value::String(String::from_utf8_lossy(body).into_owned())
}

/// Parses `Retry-After`: delay-seconds, or an HTTP-date measured against the response's `Date`.
fn parse_retry_after(value: &str, date: Option<&str>) -> Option<RetryAfter> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Absurdly large values saturate rather than being ignored: the server asked for long.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(RetryAfter::Delay(Duration::from_secs(seconds)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    match date.and_then(|date| httpdate::parse_http_date(date.trim()).ok()) {
        Some(now) => Some(RetryAfter::Delay(at.duration_since(now).unwrap_or_default())),
        None => Some(RetryAfter::At(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let later = "Wed, 21 Oct 2015 07:30:00 GMT";
        let secs = |s| Some(RetryAfter::Delay(Duration::from_secs(s)));
        assert_eq!(parse_retry_after(" 120 ", None), secs(120));
        assert_eq!(parse_retry_after("0", Some(date)), secs(0));
        assert_eq!(parse_retry_after(later, Some(date)), secs(120));
        // A date already past the response's own Date means "now".
        assert_eq!(parse_retry_after(date, Some(later)), secs(0));
        let at = httpdate::parse_http_date(later).unwrap();
        assert_eq!(parse_retry_after(later, None), Some(RetryAfter::At(at)));
        assert_eq!(parse_retry_after(later, Some("garbage")), Some(RetryAfter::At(at)));
        assert_eq!(parse_retry_after("-5", None), None);
        assert_eq!(parse_retry_after("soon", None), None);
        assert_eq!(parse_retry_after("99999999999999999999999", None), secs(u64::MAX));
    }

    #[test]
    fn retry_after_at_is_measured_by_the_caller() {
        let at = httpdate::parse_http_date("Wed, 21 Oct 2015 07:30:00 GMT").unwrap();
        let retry = RetryAfter::At(at);
        assert_eq!(retry.delay_from(at - Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(retry.delay_from(at + Duration::from_secs(30)), Duration::ZERO);
    }

    #[test]
    fn only_json_content_types_are_parsed() {
        let with = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            headers
        };
        let json = with("application/json; charset=utf-8");
        assert_eq!(parse_body(&json, br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_body(&with("application/problem+json"), b"[1]"), serde_json::json!([1]));
        assert_eq!(parse_body(&with("text/plain"), b"42"), serde_json::json!("42"));
        assert_eq!(parse_body(&json, b"not json"), serde_json::json!("not json"));
        assert_eq!(parse_body(&HeaderMap::new(), b"\xffok"), serde_json::json!("\u{fffd}ok"));
    }
}
