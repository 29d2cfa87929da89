//! `/apps/{app}/domains`: custom hostnames the router serves for an app.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name};
use super::{ApiState, json, list as list_response, resources};

/// `GET /apps/{app}/domains`
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let domains = state.platform.domains(&actor, &app_name(&app)?).await?;
    list_response(&headers, domains, resources::domain)
}

#[derive(Debug, Deserialize)]
pub struct DomainForm {
    hostname: Option<String>,
}

/// `POST /apps/{app}/domains` with `{"hostname": "www.example.com"}`; the router serves
/// it at once.
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(form): JsonBody<DomainForm>,
) -> ApiResult<Response> {
    let hostname = form
        .hostname
        .ok_or_else(|| ApiError::invalid("hostname", "give {\"hostname\": \"www.example.com\"}"))?;
    let domain = state
        .platform
        .add_domain(&actor, &app_name(&app)?, &hostname)
        .await?;
    Ok(json(StatusCode::CREATED, resources::domain(&domain)))
}

/// `DELETE /apps/{app}/domains/{hostname}`
pub async fn destroy(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, hostname)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .platform
        .remove_domain(&actor, &app_name(&app)?, &hostname)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
