//! `/apps/{app}/collaborators`: who may operate an app besides admins.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Actor, JsonBody, app_name, required};
use super::{ApiState, json, list as list_response, resources};

/// `GET /apps/{app}/collaborators`
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let users = state.platform.collaborators(&actor, &app).await?;
    list_response(&headers, users, |user| {
        resources::collaborator(app.as_str(), user)
    })
}

#[derive(Debug, Deserialize)]
pub struct CollaboratorForm {
    user: Option<String>,
}

/// `POST /apps/{app}/collaborators` with `{"user": "bob"}` (Heroku's form).
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(form): JsonBody<CollaboratorForm>,
) -> ApiResult<Response> {
    let user = required(form.user, "user", "give {\"user\": \"<user name>\"}")?;
    add(state, actor, app, user).await
}

/// `PUT /apps/{app}/collaborators/{user}` (`access:add`).
pub async fn put(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    add(state, actor, app, user).await
}

async fn add(
    state: ApiState,
    actor: empire_core::user::User,
    app: String,
    user: String,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let user = user.trim().to_string();
    state.platform.add_collaborator(&actor, &app, &user).await?;
    Ok(json(
        StatusCode::CREATED,
        resources::collaborator(app.as_str(), &user),
    ))
}

/// `DELETE /apps/{app}/collaborators/{user}` (`access:remove`).
pub async fn destroy(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    state
        .platform
        .remove_collaborator(&actor, &app_name(&app)?, &user)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
