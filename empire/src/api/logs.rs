//! `POST /apps/{app}/log-sessions`: the app's output, streamed in the answer itself as
//! Empire did (`emp log` copies the body to the terminal), one line per record:
//! `2024-05-01T12:00:00.123Z app[web.1]: GET / 200`.

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use empire_core::scheduler::{LogLine, LogOptions};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Actor, OptionalJson, app_name};
use super::resources::timestamp;
use super::stream::channel_body;
use super::{ApiState, PLAIN_TEXT, with_content_type};

/// The body of a log session; every field is optional.
#[derive(Debug, Default, Deserialize)]
pub struct LogForm {
    /// Start with at most this many lines of each process (all when absent).
    lines: Option<u32>,
    /// Keep streaming new lines (the default, as `emp log` expects); `false` ends after
    /// the lines there are.
    tail: Option<bool>,
    /// Only this process type (`web`).
    process: Option<String>,
    /// Only this process type or instance (`web`, `web.1`), Heroku's name for it.
    dyno: Option<String>,
}

/// `POST /apps/{app}/log-sessions`
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    OptionalJson(form): OptionalJson<LogForm>,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let (process, instance) = match form.dyno.or(form.process) {
        Some(dyno) => match dyno.split_once('.') {
            Some((process, _)) => (Some(process.to_string()), Some(dyno.clone())),
            None => (Some(dyno), None),
        },
        None => (None, None),
    };
    let options = LogOptions {
        process,
        tail: form.lines,
        follow: form.tail.unwrap_or(true),
    };
    let mut lines = state.platform.logs(&actor, &app, &options).await?;
    let (body_tx, body) = channel_body(256);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            // A client that goes away while the app is quiet ends the follow too, and
            // so does the gateway shutting down.
            let line = tokio::select! {
                line = lines.recv() => line,
                () = body_tx.closed() => None,
                () = shutdown.cancelled() => None,
            };
            let Some(line) = line else { break };
            if instance.as_ref().is_some_and(|i| *i != line.source) {
                continue;
            }
            if body_tx.send(format_line(&line)).await.is_err() {
                break; // the client went away: dropping `lines` stops the follow
            }
        }
    });
    Ok(with_content_type(PLAIN_TEXT, body))
}

fn format_line(line: &LogLine) -> Bytes {
    Bytes::from(format!(
        "{} app[{}]: {}\n",
        timestamp(line.time),
        line.source,
        line.text
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_heroku_log_lines() {
        let line = LogLine {
            time: time::OffsetDateTime::from_unix_timestamp(1_714_564_800).unwrap()
                + time::Duration::milliseconds(500),
            source: "web.1".into(),
            text: "GET / 200".into(),
        };
        assert_eq!(
            &format_line(&line)[..],
            b"2024-05-01T12:00:00.5Z app[web.1]: GET / 200\n"
        );
    }
}
