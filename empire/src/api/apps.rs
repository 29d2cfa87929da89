//! `/apps`: list, create, info, destroy.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Actor, OptionalJson, app_name, required};
use super::{ApiState, json, list_typed, resources, write_json};

/// `GET /apps`
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let apps = state.platform.apps(&actor).await?;
    let urls = state.urls(&headers);
    list_typed(&headers, apps, resources::APP_SIZE, move |out, app| {
        write_json(out, &resources::AppResource::new(app, &urls))
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    name: Option<String>,
}

/// `POST /apps` (and `POST /organizations/apps`, which `emp create` calls).
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    headers: HeaderMap,
    OptionalJson(form): OptionalJson<CreateForm>,
) -> ApiResult<Response> {
    let name = required(
        form.name,
        "name",
        "give the app a name: {\"name\": \"my-app\"}",
    )?;
    let app = state.platform.create_app(&actor, name.trim()).await?;
    Ok(json(
        StatusCode::CREATED,
        resources::app(&app, &state.urls(&headers)),
    ))
}

/// `GET /apps/{app}`
pub async fn info(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = state.platform.app(&actor, &app_name(&app)?).await?;
    Ok(json(
        StatusCode::OK,
        resources::app(&app, &state.urls(&headers)),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct DestroyForm {
    confirm: Option<String>,
}

/// `DELETE /apps/{app}`. A confirmation may be given as `?confirm=<app>`, the
/// `X-Heroku-Confirm` header or `{"confirm": "<app>"}`, and must then repeat the name.
/// Without one the path itself is the confirmation, as in Empire (`emp destroy` asks
/// on the terminal and sends none).
pub async fn destroy(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    OptionalJson(form): OptionalJson<DestroyForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let header = headers
        .get("x-heroku-confirm")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let confirm = query
        .get("confirm")
        .cloned()
        .or(header)
        .or(form.confirm)
        .unwrap_or_else(|| app.to_string());
    state.platform.destroy_app(&actor, &app, &confirm).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
