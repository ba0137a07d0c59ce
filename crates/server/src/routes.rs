//! The routes of docs/design.md §7.1 and what each does: read the request, call the library
//! function the command line calls for the same thing, answer with the API's types or a
//! problem document.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use wayline_core::execution::Control;
use wayline_journal::{Actor, Decision, EventKind, Status, cloudevents};
use wayline_lang::inputs::{self, Given};
use wayline_runtime::control::{self, Sent, Settled};
use wayline_runtime::{Error as EngineError, Rerun, Submission, inspect};
use wayline_store::{Error as StoreError, Filter, Store};

use tower_http::compression::CompressionLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::TraceLayer;

use crate::api::{self, Accepted, ExecutionSummary, Page, Started};
use crate::problem::{FieldError, Problem};
use crate::tokens::{self, Caller, Refused, Role};
use crate::{App, BODY_LIMIT};

type Shared<S> = Arc<App<S>>;
type Answer<T> = Result<T, Problem>;

pub fn router<S: Store>(app: Shared<S>) -> Router {
    let api = Router::new()
        .route("/executions", post(start::<S>).get(list::<S>))
        .route("/executions/{id}", get(show::<S>))
        .route("/executions/{id}/events", get(events::<S>))
        .route("/executions/{id}/logs", get(logs::<S>))
        .route("/executions/{id}/pause", post(pause::<S>))
        .route("/executions/{id}/resume", post(resume::<S>))
        .route("/executions/{id}/cancel", post(cancel::<S>))
        .route("/executions/{id}/rerun", post(rerun::<S>))
        .route("/executions/{id}/step", post(step::<S>))
        .route("/executions/{id}/patch", post(patch::<S>))
        .route("/executions/{id}/steps/{step}/decision", post(decide::<S>))
        .route("/executions/{id}/steps/{step}/inspect", get(inspect_step::<S>))
        .route("/ws", get(socket::<S>))
        .route("/events", get(lifecycle::<S>))
        .route("/workflows", get(crate::workflows::list::<S>))
        .route(
            "/workflows/{name}",
            get(crate::workflows::show::<S>)
                .put(crate::workflows::put::<S>)
                .delete(crate::workflows::delete::<S>),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), authorize::<S>))
        // Added after the token check: the description of the API is public.
        .route("/openapi.json", get(|| async { Json(crate::openapi::document()) }));
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<S>))
        .nest("/api/v1", api)
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app.metrics),
            crate::metrics::count_requests,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A request body that trickles in is cut off; so is an answer that takes too long to
        // begin (the streams begin at once, then run as long as they are read).
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, ANSWER_TIMEOUT))
        .layer(middleware::from_fn(crate::problem::everywhere))
        .layer(TraceLayer::new_for_http())
        // Event streams are left uncompressed (each event must go out as it happens).
        .layer(CompressionLayer::new())
        .with_state(app)
}

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an answer may take to begin: more than a control request's wait for another
/// engine (`PATIENCE`).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics: open to loopback peers (a local Prometheus or agent), and to a `read` token
/// from anywhere else.
async fn metrics<S: Store>(
    State(app): State<Shared<S>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !peer.ip().is_loopback() {
        let header = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        match tokens::authenticate(app.handle.store(), header, app.clock.now()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return unauthorized(Refused::Invalid),
            Err(error) => return Problem::from(error).into_response(),
        }
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}

fn unauthorized(refused: Refused) -> Response {
    let detail = match refused {
        Refused::Missing => "this route needs `Authorization: Bearer <token>`",
        Refused::Invalid => "the token is not valid (unknown, revoked or expired)",
    };
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn socket<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => match app.streams.open(&caller.name) {
            Ok(slot) => upgrade.on_upgrade(move |socket| crate::ws::serve(socket, app, slot)),
            Err(problem) => problem.into_response(),
        },
        Err(rejection) => {
            Problem::new(rejection.status(), "not-a-websocket", rejection.body_text())
                .into_response()
        }
    }
}

async fn ready<S: Store>(State(app): State<Shared<S>>) -> Response {
    match app.handle.store().list(Filter { limit: Some(1), ..Filter::default() }).await {
        Ok(_) => "ready\n".into_response(),
        Err(error) => Problem::from(error).into_response(),
    }
}

/// A JSON request body: malformed JSON is 400 with its position, a body that does not fit
/// the request's type (an unknown field, a wrong type) is 422, a body over the limit is 413.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>, empty: Option<T>) -> Answer<T> {
    let bytes = bytes.map_err(|rejection| {
        let status = rejection.status();
        let slug = if status == StatusCode::PAYLOAD_TOO_LARGE { "too-large" } else { "bad-body" };
        Problem::new(status, slug, format!("{rejection} (the limit is {BODY_LIMIT} bytes)"))
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| Problem::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        let at = format!("line {} column {}", error.line(), error.column());
        match error.classify() {
            serde_json::error::Category::Data => Problem::invalid(format!("{error}")),
            _ => Problem::bad_request(format!("malformed JSON at {at}: {error}")),
        }
    })
}

/// Lets a request through when its bearer token may do what the route needs: reading for
/// `GET`, operating for the rest. 401 without a valid token, 403 with one whose role does not
/// allow it. The caller goes into the request's extensions for the handler.
async fn authorize<S: Store>(
    State(app): State<Shared<S>>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    // Inside `/api/v1` the path has lost its prefix.
    let path = request.uri().path();
    let registry = path == "/workflows" || path.starts_with("/workflows/");
    let needed = if reading {
        Role::Read
    } else if registry {
        Role::Admin
    } else {
        Role::Operate
    };
    let header = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    match tokens::authenticate(app.handle.store(), header, app.clock.now()).await {
        Err(error) => Problem::from(error).into_response(),
        Ok(Err(refused)) => unauthorized(refused),
        Ok(Ok(caller)) if !caller.role.allows(needed) => Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` has the role `{}`, which may not do this (it needs `{}`)",
                caller.name,
                caller.role.name(),
                needed.name()
            ),
        )
        .into_response(),
        Ok(Ok(caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
    }
}

/// Who asks: the token's name, as the actor of the events the request causes.
fn actor(caller: &Caller, reason: Option<String>) -> Actor {
    Actor { by: caller.name.clone(), reason }
}

/// The longest `Idempotency-Key` taken.
const MAX_KEY: usize = 255;

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Answer<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// The answer to a start repeated with the key of execution `id`: that execution, when the
/// request is the same one (same definition, same inputs); 422 when the key was used for
/// another.
async fn repeated<S: Store>(
    app: &App<S>,
    id: String,
    key: &str,
    definition: &str,
    inputs: &serde_json::Map<String, Value>,
) -> Answer<Response> {
    let events = app.handle.store().events(&id, 0, 1).await?;
    let same = events.first().is_some_and(|event| {
        matches!(&event.kind, EventKind::Created { source, inputs: stored, .. }
            if source == definition && stored == inputs)
    });
    if !same {
        return Err(Problem::invalid(format!(
            "Idempotency-Key `{key}` was used for a different request (execution {id})"
        )));
    }
    let record = app.handle.store().get(&id).await?;
    let started = Started { id, workflow: record.workflow, status: record.status, version: None };
    let location = format!("/api/v1/executions/{}", started.id);
    Ok((StatusCode::OK, [(header::LOCATION, location)], Json(started)).into_response())
}

/// The workflow a definition's text describes (with the files it imports, from `imports`),
/// and the texts of the files it does import (what the execution records: not whatever else
/// the request sent), or 422 with every error and its position.
pub(crate) fn validated(
    definition: &str,
    imports: &std::collections::BTreeMap<String, String>,
) -> Answer<(wayline_lang::Workflow, std::collections::BTreeMap<String, String>)> {
    let loaded = wayline_lang::load_with(definition, &mut |path: &str| {
        imports.get(path).cloned().ok_or_else(|| {
            "its text is not in the request's `imports` (the server reads no files)".to_owned()
        })
    });
    let sources = loaded.sources();
    loaded.workflow.map(|workflow| (workflow, sources)).ok_or_else(|| {
        let errors: Vec<FieldError> = loaded
            .diagnostics
            .iter()
            .filter(|diagnostic| diagnostic.is_error())
            .map(|diagnostic| FieldError {
                code: diagnostic.code.as_str().to_owned(),
                // A problem in an imported file names it.
                message: match diagnostic.span.file.checked_sub(1) {
                    Some(file) => {
                        format!("{}: {}", loaded.files[file as usize].path, diagnostic.message)
                    }
                    None => diagnostic.message.clone(),
                },
                line: Some(diagnostic.span.line),
                column: Some(diagnostic.span.column),
            })
            .collect();
        let detail = format!("the definition is invalid ({} errors)", errors.len());
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-definition", detail)
            .with_errors(errors)
    })
}

async fn start<S: Store>(
    State(app): State<Shared<S>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let key = idempotency_key(&headers)?;
    let request: api::StartRequest = body(bytes, None)?;
    let (definition, path, version) = match (request.definition, request.workflow) {
        (Some(definition), None) if request.version.is_none() => {
            (definition, "(api)".to_owned(), None)
        }
        (None, Some(_)) if !request.imports.is_empty() => {
            return Err(Problem::invalid(
                "`imports` goes with `definition`: a registered workflow is one file",
            ));
        }
        (None, Some(name)) => {
            let stored = crate::workflows::pick(app.handle.store(), &name, request.version).await?;
            let path = format!("workflow {name} version {}", stored.version);
            (stored.source, path, Some(stored.version))
        }
        _ => {
            return Err(Problem::invalid(
                "give either `definition` (a workflow file's text) or `workflow` (a registered name, with an optional `version`)",
            ));
        }
    };
    let (workflow, imports) = validated(&definition, &request.imports)?;
    if let Some(step) = request.breakpoints.iter().find(|step| workflow.step(step).is_none()) {
        return Err(Problem::invalid(format!(
            "`breakpoints`: workflow `{}` has no step `{step}`",
            workflow.name
        )));
    }
    let given =
        request.inputs.into_iter().map(|(name, value)| (name, Given::Json(value))).collect();
    let inputs = inputs::resolve(&workflow, given).map_err(|errors| {
        let errors = errors
            .into_iter()
            .map(|message| FieldError {
                code: "invalid-input".into(),
                message,
                line: None,
                column: None,
            })
            .collect();
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-inputs",
            "the inputs do not fit the workflow",
        )
        .with_errors(errors)
    })?;
    if let Some(key) = &key
        && let Some(id) = app.handle.store().by_idempotency_key(key).await?
    {
        return repeated(&app, id, key, &definition, &inputs).await;
    }
    let name = workflow.name.clone();
    let submission = Submission {
        workflow: Arc::new(workflow),
        source: definition.as_str().into(),
        imports,
        path,
        inputs: inputs.clone(),
        secrets: Arc::clone(&app.secrets),
        idempotency_key: key.clone(),
        breakpoints: wayline_runtime::Breakpoints {
            steps: request.breakpoints,
            every: request.step,
        },
    };
    let id = match app.handle.submit(submission).await {
        Ok(id) => id,
        // The same key, in a request that raced this one: the execution it started.
        Err(EngineError::Store(StoreError::Exists(_))) if key.is_some() => {
            let key = key.unwrap_or_default();
            let Some(id) = app.handle.store().by_idempotency_key(&key).await? else {
                return Err(Problem::new(StatusCode::CONFLICT, "conflict", "the execution exists"));
            };
            return repeated(&app, id, &key, &definition, &inputs).await;
        }
        Err(error) => return Err(error.into()),
    };
    let location = format!("/api/v1/executions/{id}");
    let started = Started { id, workflow: name, status: Status::Running, version };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(started)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Comma-separated statuses.
    status: Option<String>,
    workflow: Option<String>,
    /// An RFC 3339 time or a duration back from now (`2h`).
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

async fn list<S: Store>(
    State(app): State<Shared<S>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Json<Page<ExecutionSummary>>> {
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let mut status = Vec::new();
    for name in query.status.iter().flat_map(|list| list.split(',')).filter(|name| !name.is_empty())
    {
        status.push(
            Status::parse(name)
                .ok_or_else(|| Problem::invalid(format!("unknown status `{name}`")))?,
        );
    }
    let since = match query.since.as_deref() {
        None => None,
        Some(text) => Some(match wayline_journal::duration::parse(text) {
            Ok(age) => wayline_journal::Time::from_micros(
                app.clock.now().as_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX),
            ),
            Err(_) => wayline_journal::Time::parse(text).map_err(|_| {
                Problem::invalid(format!(
                    "`since={text}`: give an RFC 3339 time or a duration like 2h"
                ))
            })?,
        }),
    };
    let before = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(
            api::parse_cursor(text)
                .ok_or_else(|| Problem::invalid("`cursor` is not one this server gave"))?,
        ),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::invalid(format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let filter = Filter { status, workflow: query.workflow, since, before, limit: Some(limit + 1) };
    let mut records = app.handle.store().list(filter).await?;
    let next_cursor = (records.len() > limit).then(|| {
        records.truncate(limit);
        records.last().map(api::cursor)
    });
    Ok(Json(Page {
        items: records.into_iter().map(ExecutionSummary::from).collect(),
        next_cursor: next_cursor.flatten(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// A sequence number: the execution as it was right after that event.
    at: Option<u64>,
}

async fn show<S: Store>(
    State(app): State<Shared<S>>,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let id = app.handle.store().resolve(&id).await?;
    let Some(at) = query.at else {
        return Ok(Json(app.handle.report(&id).await?).into_response());
    };
    let events = inspect::all_events(app.handle.store(), &id).await?;
    let execution = inspect::fold_at(&id, &events, at)?;
    Ok(Json(wayline_core::report::Report::new(&execution)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    /// Only the events of this step.
    step: Option<String>,
}

/// How often an idle stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleQuery {
    workflow: Option<String>,
}

/// Whether an event changes an execution's life (what a dashboard shows), rather than one of
/// its steps' progress.
fn is_lifecycle(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Created { .. }
            | EventKind::Recovered { .. }
            | EventKind::Paused { .. }
            | EventKind::Resumed { .. }
            | EventKind::StepEscalated { .. }
            | EventKind::Decided { .. }
            | EventKind::Stopping { .. }
            | EventKind::Redriven { .. }
            | EventKind::BreakpointHit { .. }
            | EventKind::Stepped { .. }
            | EventKind::Finished { .. }
    )
}

/// `GET /api/v1/events`: the lifecycle events of every execution this server runs, as
/// server-sent events, live from now. It is a view for dashboards: a reader that falls behind
/// gets a `lagged` event saying how many messages it missed (each execution's own stream is
/// the lossless one).
async fn lifecycle<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<LifecycleQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let slot = app.streams.open(&caller.name)?;
    let bus = app.handle.published();
    let counted = (app.metrics.stream(), slot);
    let workflows: std::collections::HashMap<Arc<str>, String> = Default::default();
    let state = (bus, workflows, std::collections::VecDeque::<SseEvent>::new());
    let store = app.handle.store().clone();
    let stream = futures_util::stream::unfold(state, move |(mut bus, mut workflows, mut ready)| {
        let wanted = query.workflow.clone();
        let store = store.clone();
        async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok::<_, Infallible>(event), (bus, workflows, ready)));
                }
                let published = match bus.recv().await {
                    Ok(published) => published,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        ready.push_back(
                            SseEvent::default().event("lagged").data(missed.to_string()),
                        );
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                let wayline_runtime::subscription::Published::Events { execution, events } =
                    &*published
                else {
                    continue;
                };
                for event in events.iter().filter(|event| is_lifecycle(&event.kind)) {
                    match &event.kind {
                        EventKind::Created { workflow, .. } => {
                            workflows.insert(Arc::clone(execution), workflow.clone());
                        }
                        // A taken-over execution's workflow is in the store.
                        EventKind::Recovered { .. } | EventKind::Redriven { .. } => {
                            if let Ok(record) = store.get(execution).await {
                                workflows.insert(Arc::clone(execution), record.workflow);
                            }
                        }
                        _ => {}
                    }
                    let workflow = workflows.get(execution).cloned();
                    if let EventKind::Finished { .. } = &event.kind {
                        workflows.remove(execution);
                    }
                    if wanted.as_ref().is_some_and(|wanted| workflow.as_ref() != Some(wanted)) {
                        continue;
                    }
                    let data = cloudevents::to_json(execution, event).to_string();
                    ready.push_back(SseEvent::default().data(data));
                }
            }
        }
    })
    .take_until(app.stopping.clone().cancelled_owned())
    .map(move |item| {
        let _ = &counted;
        item
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

async fn events<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let id = app.handle.store().resolve(&id).await?;
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    let step = query.step.clone();
    if let Some(step) = &step {
        let first = app.handle.store().events(&id, 0, 1).await?;
        inspect::check_step(&first, step)?;
    }
    let wanted =
        move |kind: &EventKind| step.as_deref().is_none_or(|step| kind.step() == Some(step));
    if !streaming {
        let events = inspect::all_events(app.handle.store(), &id).await?;
        let out: Vec<Value> = events
            .iter()
            .filter(|event| event.seq > query.after && wanted(&event.kind))
            .map(|event| cloudevents::to_json(&id, event))
            .collect();
        return Ok(Json(out).into_response());
    }
    // A reconnecting client says where it stopped; it wins over the query, which is where the
    // first connection started.
    let resume_after = match headers.get("last-event-id") {
        None => query.after,
        Some(value) => {
            value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()).ok_or_else(
                || Problem::bad_request("Last-Event-ID must be an event's sequence number"),
            )?
        }
    };
    let slot = app.streams.open(&caller.name)?;
    let subscription = app.handle.subscribe(&id, resume_after);
    let counted = (app.metrics.stream(), slot);
    let stream = event_stream(id, subscription, wanted)
        .take_until(app.stopping.clone().cancelled_owned())
        // The guard goes with the stream: the gauge counts streams, not requests.
        .map(move |item| {
            let _ = &counted;
            item
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// An execution's events as server-sent events (`id:` is the sequence number), ending after
/// the final one. A store error ends the stream with an `error` event; the client resumes from
/// its last id.
fn event_stream<S: Store>(
    id: String,
    subscription: wayline_runtime::Subscription<S>,
    wanted: impl Fn(&EventKind) -> bool + Send + Sync + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    crate::follow(id, subscription, wanted)
        .take_while(|followed| std::future::ready(!matches!(followed, crate::Followed::Ended)))
        .map(|followed| {
            Ok(match followed {
                crate::Followed::Event(seq, json) => {
                    SseEvent::default().id(seq.to_string()).data(json.to_string())
                }
                crate::Followed::Failed(error) => SseEvent::default().event("error").data(error),
                crate::Followed::Ended => SseEvent::default(),
            })
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    step: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// Log lines as NDJSON, oldest first, at most `limit` (default and most: 10,000) after line
/// `after`.
async fn logs<S: Store>(
    State(app): State<Shared<S>>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Response> {
    const MOST: usize = 10_000;
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let id = app.handle.store().resolve(&id).await?;
    let limit = query.limit.unwrap_or(MOST).clamp(1, MOST);
    let lines = app.handle.store().logs(&id, query.step.as_deref(), query.after, limit).await?;
    let mut out = String::new();
    for line in lines {
        let mut json = serde_json::json!({
            "line": line.line,
            "step": line.step,
            "attempt": line.attempt,
            "kind": line.kind,
            "stream": line.stream,
            "time": line.time.rfc3339(),
            "text": line.text,
        });
        if let Some(item) = line.item {
            json["item"] = item.into();
        }
        out.push_str(&json.to_string());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

/// How long a control request waits for the journal to show it when another engine owns the
/// execution.
const PATIENCE: Duration = Duration::from_secs(10);

/// Carries out a control request: at once when this server's engine owns the execution,
/// otherwise through the store's inbox for its owner (checked against the journal first, so a
/// request that cannot apply is refused with the reason).
async fn steer<S: Store>(app: &App<S>, id: &str, control: Control) -> Answer<Response> {
    let id = app.handle.store().resolve(id).await?;
    let accepted = |applied| {
        (StatusCode::ACCEPTED, Json(Accepted { id: id.clone(), applied })).into_response()
    };
    match app.handle.control(&id, control.clone()).await {
        Ok(()) => return Ok(accepted(true)),
        // Not owned here: through the inbox.
        Err(EngineError::Conflict(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let by = control.actor().by.clone();
    match control::send(app.handle.store(), &id, control, app.clock.now()).await? {
        Sent::Orphaned => Ok(accepted(false)),
        Sent::Delivered { after } => {
            match control::wait(app.handle.store().clone(), &id, after, &by, PATIENCE).await? {
                Settled::Applied(_) | Settled::Ended(_) => Ok(accepted(true)),
                Settled::TimedOut => Ok(accepted(false)),
            }
        }
    }
}

async fn pause<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::PauseRequest = body(bytes, Some(api::PauseRequest::default()))?;
    if !request.before.is_empty() {
        if request.until.is_some() {
            return Err(Problem::invalid("`until` and `before` do not go together"));
        }
        let control = Control::Break {
            steps: request.before,
            every: false,
            actor: actor(&caller, request.reason),
        };
        return steer(&app, &id, control).await;
    }
    let now = app.clock.now();
    let until = match request.until.as_deref() {
        None => None,
        Some(text) => Some(match wayline_journal::duration::parse(text) {
            Ok(duration) => now.after(duration),
            Err(_) => wayline_journal::Time::parse(text).map_err(|_| {
                Problem::invalid(format!(
                    "`until`: `{text}` is neither an RFC 3339 time nor a duration like 30m"
                ))
            })?,
        }),
    };
    steer(&app, &id, Control::Pause { actor: actor(&caller, request.reason), until }).await
}

async fn resume<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::ResumeRequest = body(bytes, Some(api::ResumeRequest::default()))?;
    steer(&app, &id, Control::Resume { actor: actor(&caller, request.reason) }).await
}

async fn cancel<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::CancelRequest = body(bytes, Some(api::CancelRequest::default()))?;
    steer(
        &app,
        &id,
        Control::Cancel { actor: actor(&caller, request.reason), rollback: request.rollback },
    )
    .await
}

/// What a step will do when it next starts, rendered with this server's secrets, masked.
async fn inspect_step<S: Store>(
    State(app): State<Shared<S>>,
    Path((id, step)): Path<(String, String)>,
) -> Answer<Response> {
    let id = app.handle.store().resolve(&id).await?;
    let events = inspect::all_events(app.handle.store(), &id).await?;
    let (workflow, _) = inspect::definition(&events)?;
    let execution = wayline_core::Execution::replay(
        id.clone(),
        Arc::new(workflow),
        Arc::clone(&app.secrets),
        &events,
    )
    .map_err(|error| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt",
            format!("execution {id}: {error}"),
        )
    })?;
    let inspection = inspect::inspection(&execution, &step).map_err(|error| match error {
        EngineError::Invalid(detail) => Problem::new(StatusCode::NOT_FOUND, "unknown-step", detail),
        other => other.into(),
    })?;
    Ok(Json(inspection).into_response())
}

async fn step<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::StepRequest = body(bytes, Some(api::StepRequest::default()))?;
    steer(&app, &id, Control::Step { actor: actor(&caller, request.reason) }).await
}

async fn patch<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::PatchRequest = body(bytes, None)?;
    let control = Control::Patch {
        step: request.step,
        outputs: request.outputs,
        inputs: request.inputs,
        actor: actor(&caller, request.reason),
    };
    steer(&app, &id, control).await
}

/// Reruns a finished execution on this server's engine (which takes it over for that).
async fn rerun<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::RerunRequest = body(bytes, Some(api::RerunRequest::default()))?;
    let store = app.handle.store();
    let id = store.resolve(&id).await?;
    let seq = inspect::all_events(store, &id).await?.len() as u64 + 1;
    let mut log_after = 0;
    loop {
        let lines = store.logs(&id, None, log_after, 10_000).await?;
        let Some(last) = lines.last() else { break };
        log_after = last.line;
    }
    let rerun = Rerun {
        from: request.from,
        inputs: request
            .inputs
            .into_iter()
            .map(|(name, value)| (name, Given::Json(value)))
            .collect(),
        actor: actor(&caller, request.reason),
    };
    app.handle.rerun(&id, rerun, Arc::clone(&app.secrets)).await?;
    Ok((StatusCode::ACCEPTED, Json(api::Rerun { id, seq, log_after })).into_response())
}

async fn decide<S: Store>(
    State(app): State<Shared<S>>,
    Extension(caller): Extension<Caller>,
    Path((id, step)): Path<(String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    let request: api::DecisionRequest = body(bytes, None)?;
    let decision = Decision::parse(&request.action).ok_or_else(|| {
        Problem::invalid(format!(
            "`action`: `{}` is not one of retry, skip, rollback, fail",
            request.action
        ))
    })?;
    let control = Control::Decide {
        step,
        decision,
        outputs: request.outputs,
        actor: actor(&caller, request.reason),
    };
    steer(&app, &id, control).await
}
