//! Errors as RFC 7807 problem documents (`application/problem+json`). Every failure of the API
//! is one of these; the status comes from the error's type, never from its text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wayline_core::execution::Rejected;
use wayline_runtime::Error as EngineError;
use wayline_store::Error as StoreError;

/// A problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:wayline:problem:not-found`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The definition's diagnostics, for an invalid workflow.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One problem in a submitted definition or in its inputs.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub code: String,
    pub message: String,
    /// Position in the definition (1-based); absent for problems with the inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:wayline:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// The request is well-formed but its content is not acceptable (422).
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = errors;
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        let detail = error.to_string();
        match error {
            StoreError::NotFound(_) => Problem::not_found(detail),
            StoreError::Ambiguous { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "ambiguous", detail)
            }
            StoreError::Held { .. } | StoreError::Fenced { .. } | StoreError::Exists(_) => {
                Problem::new(StatusCode::CONFLICT, "conflict", detail)
            }
            StoreError::Unavailable(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", detail)
            }
            StoreError::SchemaTooNew { .. } | StoreError::Corrupt(_) | StoreError::Config(_) => {
                tracing::error!(%error, "store failure");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "store-failure", detail)
            }
        }
    }
}

impl From<Rejected> for Problem {
    fn from(rejected: Rejected) -> Problem {
        let detail = rejected.to_string();
        match rejected {
            Rejected::UnknownStep { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "unknown-step", detail)
            }
            Rejected::OutputsWithoutSkip | Rejected::BadPatch(_) => Problem::invalid(detail),
            Rejected::Finished { .. }
            | Rejected::Stopping
            | Rejected::NotPaused { .. }
            | Rejected::AlreadyStopping
            | Rejected::NotEscalated { .. }
            | Rejected::NotFinished { .. }
            | Rejected::NothingToRerun { .. }
            | Rejected::NeedNotRerun { .. }
            | Rejected::AlreadyStarted { .. }
            | Rejected::NotPausedForPatch { .. }
            | Rejected::OutputsOfFanOut { .. }
            | Rejected::NotSucceeded { .. } => {
                Problem::new(StatusCode::CONFLICT, "rejected", detail)
            }
        }
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Problem {
        match error {
            EngineError::Store(error) => error.into(),
            EngineError::Rejected(rejected) => rejected.into(),
            EngineError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            EngineError::Invalid(detail) => Problem::invalid(detail),
            EngineError::Stopped => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "the server is shutting down",
            ),
        }
    }
}

/// Turns every error response that is not a problem document yet into one: the framework's
/// own rejections (a path segment that is not UTF-8, a malformed query) answer in plain text,
/// and a client of this API should never have to parse two kinds of error.
pub async fn everywhere(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).trim().to_owned();
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        detail
    };
    let mut problem = Problem::new(status, "request", detail).into_response();
    // Keep what the original said beyond its body (`WWW-Authenticate`, `Allow`, …).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}
