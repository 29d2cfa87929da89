//! Outgoing webhooks: `/apps/{app}/webhooks` (an app's, for its collaborators) and
//! `/outgoing-webhooks` (every app's, for admins; listing shows every webhook the caller
//! may see), with each webhook's deliveries and their attempts.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use empire_core::app::AppName;
use empire_core::service::{DeliveryReport, WebhookRequest};
use empire_core::store::{Webhook, WebhookFormat};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name, required};
use super::resources::timestamp;
use super::{ApiState, json};

/// What adding a webhook takes.
#[derive(Debug, Deserialize)]
pub struct WebhookForm {
    url: Option<String>,
    /// `["deploy.*", "scale"]` or `"deploy.*,scale"`; none means every event.
    #[serde(default)]
    events: Option<Events>,
    /// `json` (default) or `slack`.
    format: Option<String>,
    /// The signing secret; generated when not given.
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Events {
    List(Vec<String>),
    Text(String),
}

impl Events {
    fn patterns(self) -> Vec<String> {
        let list = match self {
            Events::List(list) => list,
            Events::Text(text) => text.split(',').map(str::to_string).collect(),
        };
        list.into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// `?limit=` of a delivery listing.
#[derive(Debug, Deserialize)]
pub struct DeliveryQuery {
    limit: Option<u32>,
}

/// A webhook as the API shows it; the secret only when `with_secret` (just added).
pub fn webhook(webhook: &Webhook, with_secret: bool) -> Value {
    let mut value = json!({
        "id": webhook.id.to_string(),
        "app": webhook.app.as_ref().map(|a| json!({ "id": a.as_str(), "name": a.as_str() })),
        "url": webhook.url,
        "events": webhook.events,
        "format": webhook.format.as_str(),
        "created_by": webhook.creator,
        "created_at": timestamp(webhook.created_at),
    });
    if with_secret {
        value["secret"] = Value::String(webhook.secret.clone());
    }
    value
}

/// A delivery with its attempts.
pub fn delivery(report: &DeliveryReport) -> Value {
    let d = &report.delivery;
    json!({
        "id": d.id,
        "webhook": d.webhook.to_string(),
        "event": d.event,
        "status": d.status.as_str(),
        "attempt_count": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(timestamp),
        "created_at": timestamp(d.created_at),
        "payload": d.payload,
        "attempts": report.attempts.iter().map(|a| json!({
            "number": a.number,
            "attempted_at": timestamp(a.attempted_at),
            "status_code": a.status_code,
            "error": a.error,
            "duration_ms": a.duration_ms,
            "response": a.response,
        })).collect::<Vec<_>>(),
    })
}

fn request(app: Option<AppName>, form: WebhookForm) -> ApiResult<WebhookRequest> {
    let url = required(
        form.url,
        "url",
        "give {\"url\": \"https://example.com/hook\"}",
    )?;
    let format = match form.format.as_deref().map(str::trim) {
        None | Some("") => WebhookFormat::Json,
        Some(text) => text.parse::<WebhookFormat>()?,
    };
    Ok(WebhookRequest {
        app,
        url: url.trim().to_string(),
        events: form.events.map(Events::patterns).unwrap_or_default(),
        format,
        secret: form.secret,
    })
}

fn webhook_id(text: &str) -> ApiResult<i64> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::invalid("webhook", format!("{text:?} is not a webhook id")))
}

/// `GET /apps/{app}/webhooks`
pub async fn list_app(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let found = state.platform.webhooks(&actor, Some(&app)).await?;
    let items: Vec<Value> = found.iter().map(|w| webhook(w, false)).collect();
    Ok(json(StatusCode::OK, Value::Array(items)))
}

/// `POST /apps/{app}/webhooks` with `{"url": …, "events"?: […], "format"?, "secret"?}`.
pub async fn create_app(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(form): JsonBody<WebhookForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let added = state
        .platform
        .add_webhook(&actor, request(Some(app), form)?)
        .await?;
    Ok(json(StatusCode::CREATED, webhook(&added, true)))
}

/// `GET /outgoing-webhooks`: every webhook the caller may see.
pub async fn list(State(state): State<ApiState>, Actor(actor): Actor) -> ApiResult<Response> {
    let found = state.platform.webhooks(&actor, None).await?;
    let items: Vec<Value> = found.iter().map(|w| webhook(w, false)).collect();
    Ok(json(StatusCode::OK, Value::Array(items)))
}

/// `POST /outgoing-webhooks`: a webhook of every app (admins).
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    JsonBody(form): JsonBody<WebhookForm>,
) -> ApiResult<Response> {
    let added = state
        .platform
        .add_webhook(&actor, request(None, form)?)
        .await?;
    Ok(json(StatusCode::CREATED, webhook(&added, true)))
}

/// `DELETE /outgoing-webhooks/{id}`
pub async fn destroy(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state
        .platform
        .remove_webhook(&actor, webhook_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /outgoing-webhooks/{id}/deliveries[?limit=N]`: newest first, with attempts.
pub async fn deliveries(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> ApiResult<Response> {
    let (_, reports) = state
        .platform
        .webhook_deliveries(&actor, webhook_id(&id)?, query.limit.unwrap_or(20))
        .await?;
    let items: Vec<Value> = reports.iter().map(delivery).collect();
    Ok(json(StatusCode::OK, Value::Array(items)))
}
