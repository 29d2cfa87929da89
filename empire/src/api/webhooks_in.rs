//! `POST /webhooks/{github,gitlab,gitea}/{app}`: push webhooks from git hosts.
//!
//! No API token here: the request's signature (GitHub's `X-Hub-Signature-256`, Gitea's
//! `X-Gitea-Signature`, GitLab's `X-Gitlab-Token`) made with the app's connection secret
//! is the authentication. The checks run in this order and nothing else happens before
//! all pass: the body is within the limit (413), the app is connected (404), the
//! signature matches in constant time (401). Then the event is read and answered with
//! 202: the build queued, or why nothing deploys.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use empire_core::push_event::{HookHeaders, Provider};
use empire_core::service::builds::WebhookOutcome;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::{ApiState, json};

/// The body limit when none is configured: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// `POST /webhooks/github/{app}` (events `push` and `ping`).
pub async fn github(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    receive(&state, Provider::GitHub, &app, &headers, body).await
}

/// `POST /webhooks/gitlab/{app}` (event `Push Hook`).
pub async fn gitlab(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    receive(&state, Provider::GitLab, &app, &headers, body).await
}

/// `POST /webhooks/gitea/{app}` (event `push`).
pub async fn gitea(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    receive(&state, Provider::Gitea, &app, &headers, body).await
}

async fn receive(
    state: &ApiState,
    provider: Provider,
    app: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let limit = state.config.webhook_max_body.unwrap_or(DEFAULT_MAX_BODY);
    let body = read_limited(headers, body, limit).await?;
    let outcome = state
        .platform
        .receive_webhook(provider, app, &hook_headers(headers), &body)
        .await
        .inspect_err(|err| {
            tracing::info!(%provider, app, %err, "webhook refused");
        })?;
    Ok(match outcome {
        WebhookOutcome::Queued(build) => json(
            StatusCode::ACCEPTED,
            json!({
                "status": "queued",
                "build_id": build.id,
                "app": build.app.as_str(),
                "commit": build.commit,
                "ref": build.reference,
                "pusher": build.pusher,
            }),
        ),
        WebhookOutcome::Ignored(reason) => json(
            StatusCode::ACCEPTED,
            json!({ "status": "ignored", "reason": reason }),
        ),
    })
}

/// The body, or 413 when it is longer than `limit` (by its `Content-Length` before any
/// of it is read, else as it arrives).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the webhook body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(ApiError::bad_request(format!(
            "reading the webhook body: {err}"
        ))),
    }
}

/// The request's headers with lowercase names (the last of a repeated one wins).
fn hook_headers(headers: &HeaderMap) -> HookHeaders {
    headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}
