//! `/apps/{app}/config-vars` and `/apps/{app}/releases`: config, releases, rollback,
//! deploy logs.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use empire_core::Error;
use empire_core::progress::Progress;
use empire_core::release::ConfigVars;
use empire_core::service::ConfigChanges;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name};
use super::{ApiState, PLAIN_TEXT, json, list_typed, resources, with_content_type, write_json};

/// `GET /apps/{app}/config-vars`
pub async fn config(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    let config = state.platform.config(&actor, &app_name(&app)?).await?;
    Ok(config_answer(&config))
}

/// `GET /apps/{app}/config-vars/{version}`: the config a release ran with.
pub async fn config_of(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let version = release_version(&version)?;
    let release = state
        .platform
        .release(&actor, &app_name(&app)?, version)
        .await?;
    Ok(config_answer(&release.config))
}

/// `PATCH /apps/{app}/config-vars` with `{"KEY": "value", "OLD": null}`: sets and unsets
/// in one change (one release when the app runs), answering the new config.
pub async fn set_config(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<BTreeMap<String, Value>>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let mut changes = ConfigChanges::new();
    for (key, value) in body {
        let value = match value {
            Value::Null => None,
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                return Err(ApiError::invalid(
                    "config value",
                    format!("{key}: give a string to set it or null to unset it"),
                ));
            }
        };
        changes.insert(key, value);
    }
    let config = state
        .operate(&actor, &app, |platform, actor, app| async move {
            platform
                .set_config(&actor, &app, &changes, Progress::null())
                .await
        })
        .await?;
    Ok(config_answer(&config))
}

/// `GET /apps/{app}/releases`, newest first (or as the `Range` orders them).
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let (app, releases) = state.platform.app_releases(&actor, &app).await?;
    let current = app.current_release;
    list_typed(
        &headers,
        releases,
        resources::RELEASE_SIZE,
        move |out, r| write_json(out, &resources::ReleaseResource::new(r, current)),
    )
}

/// `GET /apps/{app}/releases/{version}` (`3` or `v3`).
pub async fn info(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let version = release_version(&version)?;
    let current = state.platform.app(&actor, &app).await?.current_release;
    let release = state.platform.release(&actor, &app, version).await?;
    Ok(json(StatusCode::OK, resources::release(&release, current)))
}

/// `GET /apps/{app}/releases/{version}/log`: what the release's deploy printed.
pub async fn log(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let version = release_version(&version)?;
    let text = state
        .platform
        .release_log(&actor, &app_name(&app)?, version)
        .await?;
    Ok(with_content_type(PLAIN_TEXT, text))
}

#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    release: Value,
}

/// `POST /apps/{app}/releases` with `{"release": "3"}`: a new release of v3's image and
/// config. Answers the new release once it serves.
pub async fn rollback(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(form): JsonBody<RollbackForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let version = match &form.release {
        Value::String(s) => parse_version(s),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid(
            "release",
            format!(
                "{} is not a release version (e.g. \"3\" or \"v3\")",
                form.release
            ),
        )
    })?;
    let outcome = state
        .operate(&actor, &app, |platform, actor, app| async move {
            platform
                .rollback(&actor, &app, version, Progress::null())
                .await
        })
        .await?;
    let release = state
        .platform
        .release(&actor, &app, outcome.release)
        .await?;
    Ok(json(
        StatusCode::OK,
        resources::release(&release, Some(outcome.release)),
    ))
}

/// Config vars as a JSON object.
fn config_answer(config: &ConfigVars) -> Response {
    json(
        StatusCode::OK,
        serde_json::to_value(config).unwrap_or_default(),
    )
}

fn parse_version(text: &str) -> Option<u32> {
    text.trim().trim_start_matches('v').parse().ok()
}

/// A version from the path: `3` or `v3`; anything else names no release.
fn release_version(text: &str) -> ApiResult<u32> {
    parse_version(text).ok_or_else(|| ApiError::from(Error::not_found("release", text)))
}
