//! `POST /apps/{app}/deploys` and `POST /deploys`: deploy a prebuilt image, streaming
//! progress as Docker-style JSON messages, one per line, the way Empire did, so
//! `emp deploy` shows it as it happens:
//!
//! ```text
//! {"stream":"-----> Deploying v3\n"}
//! {"aux":{"app":"web","release":3,"url":"http://web.localhost:8000/"}}
//! {"status":"Status: Created new release v3 of web"}
//! ```
//!
//! A failure after the deploy started ends the stream with
//! `{"error":"…","errorDetail":{"message":"…"}}`; one before (no access, unknown app, no
//! image) is an ordinary error answer with its status.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::pipeline::DeployOutcome;
use empire_core::progress::Progress;
use empire_core::user::User;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::ApiState;
use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name};
use super::stream::{ChannelSink, channel_body, joined};

#[derive(Debug, Deserialize)]
pub struct DeployForm {
    image: Option<String>,
    app: Option<String>,
    /// Empire's `emp deploy -s`; progress always streams here.
    #[serde(default)]
    #[allow(dead_code)]
    stream: bool,
}

/// `POST /apps/{app}/deploys` with `{"image": "…"}`.
pub async fn deploy_app(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
    JsonBody(form): JsonBody<DeployForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let image = image_of(&form)?;
    deploy_streaming(state, actor, app, image, commit_message(&headers)).await
}

/// `POST /deploys` with `{"image": "…", "app"?: "…"}`. Without `app` the app is named
/// after the image's repository (`registry/acme/web:v2` deploys to `web`), as Empire did.
pub async fn deploy(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    headers: HeaderMap,
    JsonBody(form): JsonBody<DeployForm>,
) -> ApiResult<Response> {
    let image = image_of(&form)?;
    let app = match &form.app {
        Some(app) => app_name(app)?,
        None => {
            let name = repository_name(&image);
            AppName::new(&name).map_err(|_| {
                ApiError::invalid(
                    "app",
                    format!("the image {image:?} names no app ({name:?} is not an app name): give \"app\""),
                )
            })?
        }
    };
    deploy_streaming(state, actor, app, image, commit_message(&headers)).await
}

fn image_of(form: &DeployForm) -> ApiResult<String> {
    form.image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "image",
                "give the image to deploy: {\"image\": \"repo:tag\"}",
            )
        })
}

/// The `Commit-Message` header `emp` sends with `-m`.
fn commit_message(headers: &HeaderMap) -> Option<String> {
    headers
        .get("commit-message")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// `registry:5000/acme/web:v2@sha256:…` → `web`.
fn repository_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    last.split(':').next().unwrap_or_default().to_string()
}

async fn deploy_streaming(
    state: ApiState,
    actor: User,
    app: AppName,
    image: String,
    message: Option<String>,
) -> ApiResult<Response> {
    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let progress = Progress::new(Arc::new(ChannelSink(line_tx)));
    let platform = state.platform.clone();
    let task_app = app.clone();
    let mut task = state.spawn(async move {
        platform
            .deploy_image(&actor, &task_app, &image, message, progress)
            .await
    });
    // Until the deploy prints something it may still be refused with a proper status.
    let first = tokio::select! {
        biased;
        line = lines.recv() => line,
        result = &mut task => {
            let outcome = joined(result)?;
            let mut body = Vec::new();
            while let Ok(line) = lines.try_recv() {
                body.extend_from_slice(&stream_message(&line));
            }
            body.extend_from_slice(&success_messages(&app, &outcome));
            return Ok(streamed(axum::body::Body::from(body)));
        }
    };
    let (body_tx, body) = channel_body(64);
    tokio::spawn(async move {
        if let Some(line) = first
            && body_tx.send(stream_message(&line)).await.is_err()
        {
            return;
        }
        let end = loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) => {
                        if body_tx.send(stream_message(&line)).await.is_err() {
                            return; // the client went away; the deploy goes on
                        }
                    }
                    None => break joined((&mut task).await),
                },
                result = &mut task => break joined(result),
            }
        };
        while let Ok(line) = lines.try_recv() {
            let _ = body_tx.send(stream_message(&line)).await;
        }
        let last = match end {
            Ok(outcome) => success_messages(&app, &outcome),
            Err(err) => error_message(&err.message),
        };
        let _ = body_tx.send(last).await;
    });
    Ok(streamed(body))
}

fn streamed(body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; boundary=NL"),
        )],
        body,
    )
        .into_response()
}

fn json_line(value: serde_json::Value) -> Bytes {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

fn stream_message(line: &str) -> Bytes {
    json_line(json!({ "stream": format!("{line}\n") }))
}

fn success_messages(app: &AppName, outcome: &DeployOutcome) -> Bytes {
    let mut bytes = json_line(json!({
        "aux": { "app": app.as_str(), "release": outcome.release, "url": outcome.url }
    }))
    .to_vec();
    bytes.extend_from_slice(&json_line(json!({
        "status": format!("Status: Created new release v{} of {app}", outcome.release)
    })));
    Bytes::from(bytes)
}

fn error_message(message: &str) -> Bytes {
    json_line(json!({ "error": message, "errorDetail": { "message": message } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_app_after_the_repository() {
        assert_eq!(repository_name("web"), "web");
        assert_eq!(repository_name("acme/web:v2"), "web");
        assert_eq!(repository_name("registry:5000/acme/web:v2"), "web");
        assert_eq!(repository_name("acme/web@sha256:abc"), "web");
    }

    #[test]
    fn writes_docker_json_messages() {
        assert_eq!(
            &stream_message("-----> Go")[..],
            b"{\"stream\":\"-----> Go\\n\"}\n"
        );
        let error: serde_json::Value = serde_json::from_slice(&error_message("boom")).unwrap();
        assert_eq!(error["errorDetail"]["message"], "boom");
        let app = AppName::new("web").unwrap();
        let outcome = DeployOutcome {
            release: 3,
            url: None,
        };
        let text = String::from_utf8(success_messages(&app, &outcome).to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["aux"]["release"], 3);
        assert_eq!(lines[1]["status"], "Status: Created new release v3 of web");
    }
}
