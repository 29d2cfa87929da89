//! `/apps/{app}/dynos` and `/apps/{app}/formation`: processes, restarts and scaling.
//! (`POST /apps/{app}/dynos`, running a one-off process, is in `run`.)

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use empire_core::app::AppName;
use empire_core::formation::{ProcessSize, ScaleRequest};
use empire_core::progress::Progress;
use empire_core::release::ProcessTypes;
use empire_core::user::User;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, JsonBody, app_name};
use super::{ApiState, json, list as list_response, resources};

/// `GET /apps/{app}/dynos`: every process instance, with its command and size.
pub async fn list(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let processes = state.platform.processes(&actor, &app).await?;
    let sizes: BTreeMap<String, ProcessSize> = state
        .platform
        .formation(&actor, &app)
        .await?
        .into_iter()
        .map(|f| (f.process, f.size))
        .collect();
    let mut commands: BTreeMap<u32, ProcessTypes> = BTreeMap::new();
    for process in &processes {
        if !commands.contains_key(&process.release)
            && let Ok(release) = state.platform.release(&actor, &app, process.release).await
        {
            commands.insert(process.release, release.process_types);
        }
    }
    list_response(&headers, processes, |p| {
        let command = commands
            .get(&p.release)
            .and_then(|types| command_of(types, &p.process));
        let size = sizes.get(&p.process).map(ToString::to_string);
        resources::dyno(p, command, size)
    })
}

/// `DELETE /apps/{app}/dynos`: restarts every process, health-gated.
pub async fn restart_all(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
) -> ApiResult<Response> {
    restart_target(state, actor, app_name(&app)?, None).await
}

/// `DELETE /apps/{app}/dynos/{dyno}`: restarts one process type (`web`) or one
/// instance (`web.2`).
pub async fn restart(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path((app, dyno)): Path<(String, String)>,
) -> ApiResult<Response> {
    restart_target(state, actor, app_name(&app)?, Some(dyno)).await
}

async fn restart_target(
    state: ApiState,
    actor: User,
    app: AppName,
    target: Option<String>,
) -> ApiResult<Response> {
    state
        .operate(&actor, &app, |platform, actor, app| async move {
            platform
                .restart(&actor, &app, target.as_deref(), Progress::null())
                .await
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /apps/{app}/formation`: count and size of every process type.
pub async fn formation(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let formation = state.platform.formation(&actor, &app).await?;
    let commands = current_commands(&state, &actor, &app).await?;
    list_response(&headers, formation, |f| {
        resources::formation(f, command_of(&commands, &f.process))
    })
}

#[derive(Debug, Deserialize)]
pub struct ScaleForm {
    updates: Vec<ScaleUpdate>,
}

#[derive(Debug, Deserialize)]
pub struct ScaleUpdate {
    process: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    quantity: Option<Value>,
    size: Option<String>,
}

/// `PATCH /apps/{app}/formation` with `{"updates": [{"process": "web", "quantity": 2,
/// "size": "2X"}]}`: scales without a new release and answers the changed types.
pub async fn scale(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    JsonBody(form): JsonBody<ScaleForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let requests = form
        .updates
        .into_iter()
        .map(scale_request)
        .collect::<ApiResult<Vec<_>>>()?;
    let changed: Vec<String> = requests.iter().map(|r| r.process.clone()).collect();
    let formation = state
        .operate(&actor, &app, |platform, actor, app| async move {
            platform
                .scale(&actor, &app, &requests, Progress::null())
                .await
        })
        .await?;
    let commands = current_commands(&state, &actor, &app).await?;
    let body = formation
        .iter()
        .filter(|f| changed.contains(&f.process))
        .map(|f| resources::formation(f, command_of(&commands, &f.process)))
        .collect();
    Ok(json(StatusCode::OK, Value::Array(body)))
}

fn scale_request(update: ScaleUpdate) -> ApiResult<ScaleRequest> {
    let process = update
        .process
        .or(update.kind)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "process",
                "each update names a process type: {\"process\": \"web\"}",
            )
        })?;
    let quantity = match update.quantity {
        None | Some(Value::Null) => None,
        Some(value) => {
            let count = match &value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let count = count.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                ApiError::invalid(
                    "quantity",
                    format!("{value} for {process} is not a count: use a whole number 0 or more"),
                )
            })?;
            Some(count)
        }
    };
    let size = update.size.as_deref().map(ProcessSize::parse).transpose()?;
    if quantity.is_none() && size.is_none() {
        return Err(ApiError::invalid(
            "quantity",
            format!("the update of {process} gives neither a quantity nor a size"),
        ));
    }
    Ok(ScaleRequest {
        process,
        quantity,
        size,
    })
}

async fn current_commands(
    state: &ApiState,
    actor: &User,
    app: &AppName,
) -> ApiResult<ProcessTypes> {
    let found = state.platform.app(actor, app).await?;
    Ok(match found.current_release {
        Some(version) => {
            state
                .platform
                .release(actor, app, version)
                .await?
                .process_types
        }
        None => ProcessTypes::new(),
    })
}

fn command_of<'a>(commands: &'a ProcessTypes, process: &str) -> Option<&'a str> {
    commands
        .get(process)
        .map(String::as_str)
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: &str) -> ApiResult<ScaleRequest> {
        scale_request(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn reads_scale_updates() {
        let r = update(r#"{"process": "web", "quantity": 2, "size": "2X"}"#).unwrap();
        assert_eq!(
            (r.process.as_str(), r.quantity, r.size),
            ("web", Some(2), Some(ProcessSize::X2))
        );
        let r = update(r#"{"type": "worker", "quantity": "3"}"#).unwrap();
        assert_eq!(
            (r.process.as_str(), r.quantity, r.size),
            ("worker", Some(3), None)
        );
        let r = update(r#"{"process": "web", "size": "512:1GB"}"#).unwrap();
        assert_eq!(r.quantity, None);
    }

    #[test]
    fn refuses_bad_counts_naming_quantity() {
        for bad in [
            r#"{"process": "web", "quantity": -1}"#,
            r#"{"process": "web", "quantity": 1.5}"#,
            r#"{"process": "web", "quantity": "many"}"#,
            r#"{"process": "web"}"#,
        ] {
            let err = update(bad).unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{bad}");
            assert!(
                err.message.starts_with("invalid quantity"),
                "{}",
                err.message
            );
        }
        let err = update(r#"{"process": "web", "size": "3X"}"#).unwrap_err();
        assert!(err.message.starts_with("invalid size"), "{}", err.message);
        let err = update(r#"{"quantity": 1}"#).unwrap_err();
        assert!(
            err.message.starts_with("invalid process"),
            "{}",
            err.message
        );
    }
}
