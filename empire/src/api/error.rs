//! API errors in Heroku's shape, `{"id": "not_found", "message": "…"}`, and the one
//! mapping from [`empire_core::Error`] to HTTP statuses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use empire_core::Error;
use serde_json::json;

/// An error answer: a status, Heroku's error id and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Heroku's error id (`not_found`, `invalid_params`, …).
    pub id: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with any status and id.
    pub fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            id,
            message: message.into(),
        }
    }

    /// 400 `bad_request`: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 422 `invalid_params` naming the field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::from(Error::invalid(field, message))
    }
}

/// The one place where core errors become statuses.
impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let (status, id) = match &err {
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_params"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Build(_) => (StatusCode::UNPROCESSABLE_ENTITY, "build_failed"),
            Error::Deploy(_) => (StatusCode::UNPROCESSABLE_ENTITY, "deploy_failed"),
            Error::Cancelled(_) => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            Error::Backend { .. } => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
        };
        if status.is_server_error() {
            tracing::warn!(%err, "API request failed");
        }
        ApiError::new(status, id, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "id": self.id, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"empire\""),
            );
        }
        response
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_core_errors_to_statuses_and_ids() {
        let cases = [
            (
                Error::not_found("app", "web"),
                404,
                "not_found",
                "app not found: web",
            ),
            (
                Error::invalid("quantity", "-1 is not a count"),
                422,
                "invalid_params",
                "invalid quantity: -1 is not a count",
            ),
            (Error::Conflict("taken".into()), 409, "conflict", "taken"),
            (Error::Forbidden("no".into()), 403, "forbidden", "no"),
            (
                Error::Unauthorized("who".into()),
                401,
                "unauthorized",
                "who",
            ),
            (
                Error::Build("x".into()),
                422,
                "build_failed",
                "build failed: x",
            ),
            (
                Error::Deploy("x".into()),
                422,
                "deploy_failed",
                "deploy failed: x",
            ),
            (
                Error::Store("disk".into()),
                500,
                "internal_error",
                "store error: disk",
            ),
            (
                Error::backend("docker", "down"),
                503,
                "backend_unavailable",
                "docker error: down",
            ),
        ];
        for (err, status, id, message) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{message}");
            assert_eq!(api.id, id);
            assert_eq!(api.message, message);
        }
    }

    #[test]
    fn unauthorized_answers_ask_for_basic_auth() {
        let response = ApiError::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"empire\""
        );
    }
}
