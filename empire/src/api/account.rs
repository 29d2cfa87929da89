//! `/account`, `/account/keys` and `/oauth/authorizations`: who am I, my SSH keys, and
//! new API tokens (`emp login`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, Credentials, JsonBody, OptionalJson};
use super::{ApiState, json, list as list_response, resources};

/// `GET /account`: the user the token belongs to.
pub async fn info(Actor(actor): Actor) -> ApiResult<Response> {
    Ok(json(StatusCode::OK, resources::account(&actor)))
}

/// `GET /account/keys`
pub async fn keys(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let keys = state.platform.keys(&actor).await?;
    list_response(&headers, keys, resources::key)
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    public_key: Option<String>,
}

/// `POST /account/keys` with `{"public_key": "ssh-ed25519 AAAA… me@laptop"}`.
pub async fn add_key(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    JsonBody(form): JsonBody<KeyForm>,
) -> ApiResult<Response> {
    let text = form.public_key.ok_or_else(|| {
        ApiError::invalid("public_key", "give {\"public_key\": \"ssh-ed25519 AAAA…\"}")
    })?;
    let (fingerprint, public_key) = empire_gitd::parse_public_key(&text)
        .map_err(|err| ApiError::invalid("public_key", err.to_string()))?;
    let key = state
        .platform
        .add_key(&actor, &fingerprint, &public_key)
        .await?;
    Ok(json(StatusCode::CREATED, resources::key(&key)))
}

/// `DELETE /account/keys/{key}`: by fingerprint (`SHA256:…`, with `/` written `%2F`).
pub async fn remove_key(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(fingerprint): Path<String>,
) -> ApiResult<Response> {
    state.platform.remove_key(&actor, &fingerprint).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AuthorizationForm {
    description: Option<String>,
}

/// `POST /oauth/authorizations`: Basic auth with a user name and one of that user's
/// tokens (or a bearer token) creates a NEW token, answered once in
/// `access_token.token`. Tokens do not expire; `expires_in` is ignored.
pub async fn authorize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    OptionalJson(form): OptionalJson<AuthorizationForm>,
) -> ApiResult<Response> {
    let credentials = Credentials::from_headers(&headers)?;
    let user = state.platform.user_by_token(&credentials.token).await?;
    if let Some(name) = &credentials.username
        && name != &user.name
        && credentials.token != *name
    {
        return Err(ApiError::unauthorized(format!(
            "the token given does not belong to {name}"
        )));
    }
    let description = form
        .description
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| "created by POST /oauth/authorizations".to_string());
    let token = state
        .platform
        .create_token(&user.name, &description)
        .await?;
    Ok(json(StatusCode::CREATED, resources::authorization(&token)))
}
