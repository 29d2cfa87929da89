//! `POST /apps/{app}/dynos`: one-off processes.
//!
//! Detached (`"attach": false`) answers `201` with the dyno once it started. Attached
//! (`"attach": true`) takes over the connection, as Empire did:
//!
//! - A client that sends `Connection: Upgrade` and `Upgrade: tcp` gets
//!   `101 Switching Protocols`; from then on the connection is a raw byte stream: what
//!   the client writes is the process's stdin (half-closing the connection ends it),
//!   what the process writes comes back. After the output the server writes one line
//!   `\u{FFFF} heroku-command-exit-status: <code>\n` (the marker Heroku's CLI uses),
//!   then closes. If the run fails after the switch, the server writes the error and
//!   closes without a status line.
//! - Empire's `emp run` sends no `Upgrade` header and expects `200 OK` with
//!   `Content-Type: application/vnd.empire.raw-stream` before the raw stream and no
//!   status line; the HTTP listener marks such requests (see `crate::http`) and they
//!   get exactly that.
//!
//! Errors found before the process starts (no access, unknown app, no release, no
//! command) are ordinary error answers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use empire_core::formation::ProcessSize;
use empire_core::scheduler::{RunIo, RunOutcome};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;

use super::error::{ApiError, ApiResult};
use super::extract::{Actor, app_name, parse_json};
use super::stream::joined;
use super::{ApiState, json, resources};

/// The `Upgrade` value the HTTP listener adds to an attached run from a client that
/// asked for no upgrade (Empire's `emp run`): its switch is answered `200 OK`.
pub const LEGACY_ATTACH_UPGRADE: &str = "x-empire-legacy-attach";

/// The content type of an attached run's stream.
const RAW_STREAM: &str = "application/vnd.empire.raw-stream";

/// How large a request body a run may have.
const MAX_BODY: usize = 1 << 20;

/// The body of `POST /apps/{app}/dynos`.
#[derive(Debug, Deserialize)]
pub struct RunForm {
    command: Option<String>,
    #[serde(default)]
    attach: bool,
    size: Option<String>,
    /// Heroku's flag: no TTY for an attached process.
    #[serde(default)]
    force_no_tty: bool,
    /// Empire's explicit choice; wins over `force_no_tty`.
    tty: Option<bool>,
}

/// `POST /apps/{app}/dynos`
pub async fn create(
    State(state): State<ApiState>,
    Actor(actor): Actor,
    Path(app): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let app = app_name(&app)?;
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|err| ApiError::bad_request(format!("reading the request body: {err}")))?;
    let form: RunForm = parse_json(&bytes)?;
    let command = form.command.clone().unwrap_or_default();
    let size = form.size.as_deref().map(ProcessSize::parse).transpose()?;

    if !form.attach {
        let run_command = command.clone();
        let outcome = state
            .operate(&actor, &app, |platform, actor, app| async move {
                platform
                    .run(&actor, &app, &run_command, false, size, None)
                    .await
            })
            .await?;
        let RunOutcome::Detached { name, id } = outcome else {
            return Err(ApiError::from(empire_core::Error::backend(
                "scheduler",
                "a detached run reported an exit code",
            )));
        };
        let release = state.platform.app(&actor, &app).await?.current_release;
        return Ok(json(
            StatusCode::CREATED,
            resources::detached_dyno(&name, &id, &command, release),
        ));
    }

    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let (Some(protocol), Some(on_upgrade)) = (upgrade, on_upgrade) else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "an attached run takes over the connection: send `Connection: Upgrade` and `Upgrade: tcp` (HTTP/1.1)",
        ));
    };
    let legacy = protocol.eq_ignore_ascii_case(LEGACY_ATTACH_UPGRADE);
    let tty = form.tty.unwrap_or(!form.force_no_tty);

    // The process's stdin and output, until the connection is switched over.
    let (mut stdin_ours, stdin_theirs) = tokio::io::duplex(64 * 1024);
    let (mut output_ours, output_theirs) = tokio::io::duplex(64 * 1024);
    let started = Arc::new(Notify::new());
    let io = RunIo {
        input: Box::new(Signal::new(stdin_theirs, started.clone())),
        output: Box::new(Signal::new(output_theirs, started.clone())),
        resize: None,
    };
    let platform = state.platform.clone();
    // Not tracked: an interactive session does not hold up a shutdown.
    let mut task = tokio::spawn(async move {
        platform
            .run(&actor, &app, &command, tty, size, Some(io))
            .await
    });
    // The scheduler touches the streams once the process runs; a run refused before
    // that is an ordinary error answer.
    let mut finished = None;
    tokio::select! {
        biased;
        () = started.notified() => {}
        result = &mut task => match joined(result) {
            Err(err) => return Err(err),
            Ok(outcome) => finished = Some(Ok(outcome)),
        },
    }

    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%err, "an attached run's connection did not switch over");
                return; // dropping the streams ends the process
            }
        };
        let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(upgraded));
        let stdin = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut stdin_ours).await;
            let _ = stdin_ours.shutdown().await;
        });
        if tokio::io::copy(&mut output_ours, &mut client_write)
            .await
            .is_err()
        {
            stdin.abort();
            return; // the client went away; the scheduler removes the process
        }
        let result = match finished {
            Some(result) => result,
            None => joined(task.await),
        };
        let trailer = match result {
            Ok(RunOutcome::Exited(code)) if !legacy => {
                format!("\u{FFFF} heroku-command-exit-status: {code}\n")
            }
            Ok(_) => String::new(),
            Err(err) => format!("{}\r\n", err.message),
        };
        let _ = client_write.write_all(trailer.as_bytes()).await;
        let _ = client_write.shutdown().await;
        stdin.abort();
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    if !legacy {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(value) = HeaderValue::from_str(&protocol) {
            headers.insert(header::UPGRADE, value);
        }
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
    Ok(response)
}

/// A stream that tells `started` the first time it is read or written.
struct Signal<S> {
    inner: S,
    started: Arc<Notify>,
    told: AtomicBool,
}

impl<S> Signal<S> {
    fn new(inner: S, started: Arc<Notify>) -> Self {
        Signal {
            inner,
            started,
            told: AtomicBool::new(false),
        }
    }

    fn tell(&self) {
        if !self.told.swap(true, Ordering::Relaxed) {
            self.started.notify_one();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Signal<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.tell();
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Signal<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.tell();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
