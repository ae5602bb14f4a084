//! JSON errors: every non-2xx answer is `{"error": "<code>", "message": "<sentence>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use taskflow_core::state::CommandError;
use taskflow_core::{ActionError, RuntimeError};

/// An API error: status, machine-readable code and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthorized", message: message.into() }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        let e = match e {
            ActionError::Unavailable(m) => return ApiError::unavailable(m),
            ActionError::Refused(e) => e,
        };
        let message = e.to_string();
        let (status, code) = match e {
            CommandError::UnknownTask(_) | CommandError::ShardOutOfRange { .. } => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            CommandError::DayNotOpen => (StatusCode::CONFLICT, "day_not_open"),
            CommandError::DayClosed => (StatusCode::CONFLICT, "day_closed"),
            CommandError::NotRegistered(_) => (StatusCode::CONFLICT, "not_registered"),
            CommandError::Illegal { .. } => (StatusCode::CONFLICT, "illegal_transition"),
            CommandError::DependenciesNotDone { .. } => {
                (StatusCode::CONFLICT, "dependencies_not_done")
            }
            CommandError::DependentsRan { .. } => (StatusCode::CONFLICT, "dependents_ran"),
            CommandError::DependentBusy { .. } => (StatusCode::CONFLICT, "dependent_busy"),
            CommandError::NothingEligible { .. } => (StatusCode::CONFLICT, "nothing_eligible"),
            CommandError::AlreadyHeld { .. } => (StatusCode::CONFLICT, "already_held"),
            CommandError::NotHeld { .. } => (StatusCode::CONFLICT, "not_held"),
            CommandError::AlreadyDone { .. } => (StatusCode::CONFLICT, "already_done"),
            CommandError::AlreadyForced(_) => (StatusCode::CONFLICT, "already_forced"),
            CommandError::ForceStartOfShard { .. } => {
                (StatusCode::BAD_REQUEST, "force_start_of_shard")
            }
            CommandError::ReasonRequired { .. } => (StatusCode::BAD_REQUEST, "reason_required"),
        };
        ApiError { status, code, message }
    }
}
