//! The API's one error type: a status and a message naming what was wrong,
//! answered as `{"error":{"message","type"}}`. It sits below `http`, every
//! `api` resource and the dashboard's fallback, so none of them imports the
//! router to report a mistake.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::ServiceError;

/// An API error: a status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            kind: "conflict",
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "permission_error",
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal_error",
            message: message.into(),
        }
    }
    /// An error with the status axum chose for a rejected request part
    /// (body, query, path), typed by that status.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            s if s.is_server_error() => "internal_error",
            _ => "invalid_request_error",
        };
        // Client mistakes stay 4xx even when axum files them otherwise, and
        // a well-formed body with wrong fields is a plain 400 like any other.
        let status = if status.is_server_error() || status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }
}

/// Blackboard refusals are client mistakes (400/403/404/409); database and I/O
/// trouble is ours (500/503).
impl From<crate::blackboard::BbError> for ApiError {
    fn from(e: crate::blackboard::BbError) -> Self {
        use crate::blackboard::BbError as E;
        let message = e.to_string();
        match e {
            E::NotFound { .. } => ApiError::not_found(message),
            E::Conflict(_) | E::IllegalTransition { .. } => ApiError::conflict(message),
            E::Invalid(_) => ApiError::bad_request(message),
            E::Forbidden(_) => ApiError::forbidden(message),
            E::SchemaTooNew { .. } | E::Corrupt { .. } | E::Missing { .. } | E::Unavailable(_) => {
                ApiError::unavailable(message)
            }
            E::Db(_) | E::Migrate(_) | E::Io(_) => ApiError::internal(message),
        }
    }
}

impl From<crate::registry::RegistryError> for ApiError {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::RegistryError as E;
        let message = e.to_string();
        match e {
            E::InvalidId(_) | E::Invalid(_) => ApiError::bad_request(message),
            E::Unknown { .. } => ApiError::not_found(message),
            E::Exists(_) | E::Archived(_) | E::NotArchived(_) | E::Busy { .. } => {
                ApiError::conflict(message)
            }
            E::Blackboard(b) => b.into(),
            E::File { .. } | E::Io(_) => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "message": self.message, "type": self.kind } })),
        )
            .into_response()
    }
}

impl From<crate::home::InvalidProjectId> for ApiError {
    fn from(e: crate::home::InvalidProjectId) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Service refusals are the caller's mistakes (400/403/404/409); store
/// trouble is ours (500/503).
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::NotFound(_) => ApiError::not_found(message),
            ServiceError::Conflict(_) | ServiceError::IllegalTransition(_) => {
                ApiError::conflict(message)
            }
            ServiceError::Invalid(_) => ApiError::bad_request(message),
            ServiceError::Forbidden(_) => ApiError::forbidden(message),
            ServiceError::Timeout(_) => ApiError::unavailable(message),
            ServiceError::Store(e) => e.into(),
            ServiceError::Io { .. } => ApiError::internal(message),
        }
    }
}
