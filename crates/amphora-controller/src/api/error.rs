//! The one error type of the API and its one rendering: upstream's WSME body
//! `{"faultcode": "Client"|"Server", "faultstring": ..., "debuginfo": null}`.
//!
//! Handlers and the domain return `ApiError`; internal details (SQL, I/O) go
//! to the log, never to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Authentication required")]
    Unauthorized,
    #[error("Policy does not allow this request to be performed.")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("The resource could not be found.")]
    NoRoute,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("The requested media type is not supported.")]
    NotAcceptable,
    #[error("{0}")]
    Conflict(String),
    #[error("Request entity is too large.")]
    TooLarge,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `"<Resource> <id> not found."`, upstream's NotFound text.
    pub fn not_found(resource: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("{resource} {id} not found."))
    }

    /// Upstream's ImmutableObject text.
    pub fn immutable(resource: &str, id: &str) -> ApiError {
        ApiError::Conflict(format!("{resource} {id} is immutable and cannot be updated."))
    }

    /// Upstream's InvalidOption-style 400 for a field.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (faultcode, faultstring) = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                ("Server", "An unknown exception occurred.".to_owned())
            }
            ApiError::Unavailable(_) => ("Server", self.to_string()),
            _ => ("Client", self.to_string()),
        };
        (status, Json(json!({"faultcode": faultcode, "faultstring": faultstring, "debuginfo": null}))).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
