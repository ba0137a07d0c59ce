//! The workflow registry: `PUT`, `GET` and `DELETE /api/v1/workflows/{name}`, and `GET
//! /api/v1/workflows`. A registered version never changes; a changed file is a new version,
//! and an execution started by name runs the version it was given (its journal keeps the
//! source).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use wayline_store::{Error as StoreError, Store, WorkflowVersion};

use crate::api::{Page, WorkflowDetail, WorkflowSummary};
use crate::problem::Problem;
use crate::routes::validated;
use crate::{App, BODY_LIMIT};

type Answer<T> = Result<T, Problem>;

/// Why `name` cannot name a workflow in a URL, if it cannot: 1 to 128 letters, digits, `-`,
/// `_` or `.`, starting with a letter or digit (so no `/`, no `..`).
fn check_name(name: &str) -> Answer<()> {
    let valid = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(Problem::invalid(format!(
            "`{name}` cannot name a workflow here: use 1 to 128 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        )))
    }
}

/// The version to run of workflow `name`: `version`, or the newest.
pub async fn pick<S: Store>(
    store: &S,
    name: &str,
    version: Option<u32>,
) -> Answer<WorkflowVersion> {
    check_name(name)?;
    let versions = store.workflow_versions(name).await.map_err(|error| match error {
        StoreError::NotFound(_) => {
            Problem::not_found(format!("no workflow `{name}` is registered"))
        }
        other => other.into(),
    })?;
    match version {
        None => versions
            .into_iter()
            .next_back()
            .ok_or_else(|| Problem::not_found(format!("no workflow `{name}` is registered"))),
        Some(wanted) => versions.into_iter().find(|v| v.version == wanted).ok_or_else(|| {
            Problem::not_found(format!("workflow `{name}` has no version {wanted}"))
        }),
    }
}

pub async fn put<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Answer<Response> {
    check_name(&name)?;
    let bytes = bytes.map_err(|rejection| {
        Problem::new(
            rejection.status(),
            "bad-body",
            format!("{rejection} (the limit is {BODY_LIMIT} bytes)"),
        )
    })?;
    let source = String::from_utf8(bytes.to_vec()).map_err(|error| {
        Problem::bad_request(format!(
            "the file is not UTF-8 (byte {})",
            error.utf8_error().valid_up_to()
        ))
    })?;
    let (workflow, _) = validated(&source, &Default::default())?;
    if workflow.name != name {
        return Err(Problem::invalid(format!(
            "the file's workflow is named `{}`, not `{name}`: PUT it at /api/v1/workflows/{}",
            workflow.name, workflow.name
        )));
    }
    let (stored, new) = app.handle.store().put_workflow(&name, &source, app.clock.now()).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/api/v1/workflows/{name}?version={}", stored.version);
    Ok((status, [(header::LOCATION, location)], Json(summary(stored))).into_response())
}

fn summary(version: WorkflowVersion) -> WorkflowSummary {
    WorkflowSummary {
        name: version.name,
        version: version.version,
        created_at: version.created_at.rfc3339(),
    }
}

pub async fn list<S: Store>(State(app): State<Arc<App<S>>>) -> Answer<Json<Page<WorkflowSummary>>> {
    let newest = app.handle.store().workflows().await?;
    Ok(Json(Page { items: newest.into_iter().map(summary).collect(), next_cursor: None }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    version: Option<u32>,
}

pub async fn show<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Answer<Json<WorkflowDetail>> {
    let Query(query) = query.map_err(|rejection| Problem::invalid(rejection.body_text()))?;
    let chosen = pick(app.handle.store(), &name, query.version).await?;
    let versions =
        app.handle.store().workflow_versions(&name).await?.iter().map(|v| v.version).collect();
    Ok(Json(WorkflowDetail {
        name: chosen.name,
        version: chosen.version,
        created_at: chosen.created_at.rfc3339(),
        source: chosen.source,
        versions,
    }))
}

pub async fn delete<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(name): Path<String>,
) -> Answer<StatusCode> {
    check_name(&name)?;
    if app.handle.store().delete_workflow(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no workflow `{name}` is registered")))
    }
}
