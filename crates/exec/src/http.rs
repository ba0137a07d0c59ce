//! HTTP steps: send one request per attempt, read a bounded response, and turn the status into
//! an outcome the retry policy understands (DESIGN §2.2, §2.3).

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
    pub headers: Vec<(String, String)>,
    /// Query parameters appended (URL-encoded) to those already in the URL.
    pub query: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Body>,
    /// Statuses that count as success; `None` (or an empty list) means any 2xx.
    pub expect_status: Option<Vec<u16>>,
    /// Per-attempt limit on the whole exchange, response body included.
    pub timeout: Option<Duration>,
    /// Sent as `Idempotency-Key` unless the request sets that header itself; the same for
    /// every attempt of a step in one execution, so the receiver can drop repeats (DESIGN §5).
    pub idempotency_key: String,
    /// [`Limits::output_bytes`] bounds the response body; `log_bytes` is unused.
    pub limits: Limits,
    /// Secrets to mask in the outputs and the failure message.
    pub masker: Masker,
}

impl Http {
    /// A request with no headers, query or body, accepting any 2xx, with default limits.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Http {
        Http {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            query: Vec::new(),
            body: None,
            expect_status: None,
            timeout: None,
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
/// Redirects are followed (at most 10); the usual `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`
/// variables are honoured.
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
/// `", "`) and `body`: the parsed JSON value when the response's `Content-Type` is JSON
/// (`application/json` or `*/*+json`) and parses, otherwise the text (invalid UTF-8 replaced).
/// Bodies that merely look like JSON under another content type stay text, so a `text/plain`
/// `"42"` never turns into a number.
///
/// - A status outside `expect_status` is `Failure` ("unexpected status 503 (expected 2xx)"),
///   with the outputs, and for 429 and 503 the `Retry-After` in [`Failure::retry_after`].
/// - Refused or reset connections, DNS failures and broken responses are `Failure`.
/// - Past [`Http::timeout`] the request is dropped and the attempt is `Timeout`; `cancel`
///   drops it too and the attempt is `Cancelled`.
/// - An invalid method, URL (or a scheme other than http/https), header name or value, and a
///   response body larger than [`Limits::output_bytes`] are `Fatal`. The body is read only up
///   to that limit, never buffered whole first.
///
/// ```no_run
/// use tokio_util::sync::CancellationToken;
/// use wayline_exec::{Body, Http, HttpClient, Outcome, run_http};
///
/// # async fn demo() -> Result<(), wayline_exec::http::Error> {
/// let client = HttpClient::new()?;
/// let mut request = Http::new("POST", "https://chat.example/hooks/releases");
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
    let outcome = match build(&client.client, &request) {
        Ok(built) => {
            let exchange = exchange(&client.client, built, &request);
            let timeout = request.timeout.unwrap_or_default();
            tokio::select! {
                biased;
                () = cancel.cancelled() => Outcome::failed(FailureClass::Cancelled, "cancelled"),
                outcome = exchange => outcome,
                () = tokio::time::sleep(timeout), if request.timeout.is_some() => {
                    let message = format!("timed out after {}", format_duration(timeout));
                    Outcome::failed(FailureClass::Timeout, message)
                }
            }
        }
        Err(message) => Outcome::failed(FailureClass::Fatal, message),
    };
    outcome.masked(&masker)
}

/// Validates the request and turns it into reqwest's form; every error is the request's fault.
fn build(client: &reqwest::Client, request: &Http) -> Result<reqwest::Request, String> {
    let method = request.method.trim().to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("invalid HTTP method {:?}", request.method))?;
    let mut url =
        Url::parse(request.url.trim()).map_err(|error| format!("invalid URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme {:?} (expected http or https)", url.scheme()));
    }
    if !request.query.is_empty() {
        url.query_pairs_mut().extend_pairs(&request.query);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        // The value is not quoted: it may well be a credential.
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    let idempotency_key = HeaderName::from_static("idempotency-key");
    if !request.idempotency_key.is_empty() && !headers.contains_key(&idempotency_key) {
        let value = HeaderValue::from_str(&request.idempotency_key)
            .map_err(|_| "invalid idempotency key for the Idempotency-Key header".to_owned())?;
        headers.insert(idempotency_key, value);
    }
    let body = match &request.body {
        None => None,
        Some(Body::Json(value)) => {
            let content_type = HeaderValue::from_static("application/json");
            headers.entry(header::CONTENT_TYPE).or_insert(content_type);
            Some(serde_json::to_vec(value).map_err(|error| format!("invalid JSON body: {error}"))?)
        }
        Some(Body::Text(text)) => {
            let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
            headers.entry(header::CONTENT_TYPE).or_insert(content_type);
            Some(text.clone().into_bytes())
        }
    };
    let mut builder = client.request(method, url).headers(headers);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    builder.build().map_err(|error| format!("invalid request: {}", chain(&error)))
}

/// Sends the request and reads the response within the body limit.
async fn exchange(client: &reqwest::Client, built: reqwest::Request, request: &Http) -> Outcome {
    let mut response = match client.execute(built).await {
        Ok(response) => response,
        Err(error) => return request_error(&error),
    };
    let status = response.status();
    let headers = response.headers().clone();
    let limit = request.limits.output_bytes;
    let mut outputs = Outputs::new();
    outputs.insert("status".to_owned(), status.as_u16().into());
    outputs.insert("headers".to_owned(), header_map(&headers, &request.masker));
    let too_large = |outputs: Outputs| {
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
