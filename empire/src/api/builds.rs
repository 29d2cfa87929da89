//! `/apps/{app}/connection` and `/apps/{app}/builds`: connecting an app to a repository
//! on GitHub, GitLab or Gitea, and the builds its push webhooks start, with their logs
//! (followed while they run).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::push_event::Provider;
use empire_core::service::builds::Connected;
use empire_core::store::{Build, RepoConnection};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name, request_host};
use super::resources::timestamp;
use super::stream::channel_body;
use super::{ApiState, PLAIN_TEXT, json, with_content_type};

/// How often a followed build log looks for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The JSON of a build.
pub fn build(build: &Build) -> Value {
    json!({
        "id": build.id,
        "app": { "name": build.app.as_str() },
        "source": build.source,
        "commit": build.commit,
        "ref": build.reference,
        "pusher": build.pusher,
        "message": build.message,
        "delivery": build.delivery,
        "status": build.status.as_str(),
        "release": build.release.map(|v| json!({ "version": v })),
        "failure": build.failure,
        "created_at": timestamp(build.created_at),
        "updated_at": timestamp(build.updated_at),
    })
}

/// The JSON of a connection: never its secret or private key.
fn connection(connection: &RepoConnection, urls: &[(Provider, String)]) -> Value {
    let mut webhooks = Map::new();
    for (provider, url) in urls {
        webhooks.insert(provider.as_str().to_string(), json!(url));
    }
    json!({
        "app": { "name": connection.app.as_str() },
        "repo_url": connection.repo_url,
        "branch": connection.branch,
        "webhook_urls": webhooks,
        "deploy_key": connection.deploy_key.as_ref().map(|k| k.public.clone()),
        "created_at": timestamp(connection.created_at),
    })
}

impl ApiState {
    /// Webhook URLs under the configured public address, else the one the client used.
    fn webhook_urls(&self, app: &AppName, headers: &HeaderMap) -> Vec<(Provider, String)> {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| request_host(headers));
        self.platform
            .webhook_urls(app, Some(&format!("http://{host}")))
    }
}

/// `PUT /apps/{app}/connection` body.
#[derive(Debug, Deserialize)]
pub struct ConnectForm {
    repo: Option<String>,
    branch: Option<String>,
    secret: Option<String>,
}

/// `PUT /apps/{app}/connection` with `{"repo": URL, "branch"?, "secret"?}`: pushes to the
/// branch deploy. Answers the connection, its webhook URLs, the secret when Empire made
/// it up, and the deploy key for SSH URLs.
pub async fn connect(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
    JsonBody(form): JsonBody<ConnectForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let repo = super::extract::required(
        form.repo,
        "repo",
        "give {\"repo\": \"https://github.com/acme/shop.git\"}",
    )?;
    let Connected {
        connection: made,
        secret_generated,
    } = state
        .platform
        .connect_app(
            &actor,
            &app,
            &repo,
            form.branch.as_deref(),
            form.secret.as_deref(),
        )
        .await?;
    let mut body = connection(&made, &state.webhook_urls(&app, &headers));
    body["secret_generated"] = json!(secret_generated);
    if secret_generated {
        body["secret"] = json!(made.secret);
    }
    Ok(json(StatusCode::OK, body))
}

/// `GET /apps/{app}/connection`
pub async fn info(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let found = state.platform.connection(&actor, &app).await?;
    Ok(json(
        StatusCode::OK,
        connection(&found, &state.webhook_urls(&app, &headers)),
    ))
}

/// `DELETE /apps/{app}/connection`
pub async fn disconnect(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    state
        .platform
        .disconnect_app(&actor, &app_name(&app)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /apps/{app}/builds`, newest first.
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    let builds = state.platform.builds(&actor, &app_name(&app)?).await?;
    Ok(json(
        StatusCode::OK,
        Value::Array(builds.iter().map(build).collect()),
    ))
}

/// A build id in a path: a number, or `latest`.
fn build_id(text: &str) -> Result<Option<i64>, ApiError> {
    if text == "latest" {
        return Ok(None);
    }
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| ApiError::invalid("build", format!("{text:?} is not a build id")))
}

/// `GET /apps/{app}/builds/{id}` (`latest` for the newest).
pub async fn info_build(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let found = state
        .platform
        .build(&actor, &app_name(&app)?, build_id(&id)?)
        .await?;
    Ok(json(StatusCode::OK, build(&found)))
}

/// `GET /apps/{app}/builds/{id}/log[?follow=true]`
#[derive(Debug, Deserialize, Default)]
pub struct LogQuery {
    follow: Option<bool>,
}

/// `GET /apps/{app}/builds/{id}/log`: the build's output; with `?follow=true` the
/// answer streams until the build ends.
pub async fn log(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let found = state.platform.build(&actor, &app, build_id(&id)?).await?;
    let (now, chunks) = state.platform.build_log(&actor, &app, found.id, 0).await?;
    if !query.follow.unwrap_or(false) || now.status.is_finished() {
        let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
        return Ok(with_content_type(PLAIN_TEXT, text));
    }
    let (body_tx, body) = channel_body(64);
    let shutdown = state.shutdown.clone();
    let platform = state.platform.clone();
    tokio::spawn(async move {
        let mut after = 0;
        let mut pending = chunks;
        loop {
            for chunk in pending.drain(..) {
                after = chunk.seq;
                if body_tx.send(Bytes::from(chunk.text)).await.is_err() {
                    return; // the client went away
                }
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                () = body_tx.closed() => return,
                () = shutdown.cancelled() => return,
            }
            match platform.build_log(&actor, &app, found.id, after).await {
                Ok((now, chunks)) => {
                    pending = chunks;
                    if now.status.is_finished() {
                        for chunk in pending.drain(..) {
                            if body_tx.send(Bytes::from(chunk.text)).await.is_err() {
                                return;
                            }
                        }
                        return;
                    }
                }
                Err(err) => {
                    let _ = body_tx.send(Bytes::from(format!(" !     {err}\n"))).await;
                    return;
                }
            }
        }
    });
    Ok(with_content_type(PLAIN_TEXT, body))
}
