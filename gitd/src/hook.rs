//! The link between git's `pre-receive` hook and the daemon's deploy pipeline.
//!
//! git runs the hook (`empire hook pre-receive`, i.e. [`run_pre_receive_hook`]) in the
//! app's bare repository while the pushed objects are still quarantined, with one
//! `<old> <new> <ref>` line per ref update on stdin. The hook connects to the daemon's
//! Unix socket (`EMPIRE_HOOK_SOCKET`, set by the git server on the git child), sends one
//! [`HookRequest`] and copies the [`HookResponse`] lines it gets back to its stdout as
//! they arrive; git relays them to the pusher as `remote:` lines. The final
//! `{"exit": N}` becomes the hook's exit code, and a non-zero code rejects the push.
//!
//! The wire format is newline-delimited JSON:
//!
//! ```text
//! hook → daemon  {"app":"web","user":"alice","repo_path":"/srv/repos/web.git",
//!                 "updates":[{"old":"000…","new":"4b8…","ref":"refs/heads/main"}],
//!                 "object_dirs":["/srv/repos/web.git/objects/tmp_objdir-incoming-x"],
//!                 "push_options":["no-cache"]}
//! daemon → hook  {"line":"-----> Building web"}
//!                {"line":"       ..."}
//!                {"exit":0}
//! ```
//!
//! The hook keeps its side of the socket open until the exit message: the daemon takes
//! the end of the connection as the pusher going away and cancels the deploy.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use empire_core::app::AppName;
use empire_core::pipeline::{DeployRequest, DeploySource, Pipeline, PushOrigin};
use empire_core::progress::{Progress, ProgressSink};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The environment variable naming the daemon's hook socket.
pub const ENV_SOCKET: &str = "EMPIRE_HOOK_SOCKET";
/// The environment variable naming the app being pushed.
pub const ENV_APP: &str = "EMPIRE_APP";
/// The environment variable naming the user who pushes.
pub const ENV_USER: &str = "EMPIRE_USER";
/// The environment variable naming the deploy turn gitd reserved for the push.
pub const ENV_TURN: &str = "EMPIRE_DEPLOY_TURN";

/// The refs a push deploys from.
pub const DEPLOY_REFS: [&str; 2] = ["refs/heads/main", "refs/heads/master"];

/// Heroku's prefix for error lines.
const ERROR_PREFIX: &str = " !     ";

/// The largest request the daemon reads.
const MAX_REQUEST_BYTES: u64 = 4 << 20;

/// How long the daemon waits for a connected hook to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One ref update as git passes it to the pre-receive hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    /// The ref's current object (all zeros when the ref is created).
    pub old: String,
    /// The pushed object (all zeros when the ref is deleted).
    pub new: String,
    /// The full ref name (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub reference: String,
}

impl RefUpdate {
    /// Parses one `<old> <new> <ref>` line from git.
    pub fn parse(line: &str) -> Result<RefUpdate, String> {
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(reference)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("malformed ref update from git: {line:?}"));
        };
        if !is_object_name(old) || !is_object_name(new) || reference.is_empty() {
            return Err(format!("malformed ref update from git: {line:?}"));
        }
        Ok(RefUpdate {
            old: old.to_string(),
            new: new.to_string(),
            reference: reference.to_string(),
        })
    }

    /// Whether the update deletes the ref.
    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }
}

fn is_object_name(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

/// What the hook sends to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRequest {
    /// The app being pushed (`EMPIRE_APP`).
    pub app: String,
    /// Who pushes (`EMPIRE_USER`).
    pub user: String,
    /// The bare repository (the hook's working directory, canonical).
    pub repo_path: PathBuf,
    /// The ref updates, in git's order.
    pub updates: Vec<RefUpdate>,
    /// Where the pushed objects are: git's quarantine directory and the alternates.
    #[serde(default)]
    pub object_dirs: Vec<PathBuf>,
    /// `git push -o` options.
    #[serde(default)]
    pub push_options: Vec<String>,
    /// The deploy turn gitd reserved before git started (`EMPIRE_DEPLOY_TURN`).
    #[serde(default)]
    pub turn: Option<String>,
}

/// One message from the daemon to the hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookResponse {
    /// A line of output, to print as it comes.
    Line {
        /// The line, without its newline.
        line: String,
    },
    /// The end: the hook's exit code.
    Exit {
        /// 0 accepts the push, anything else rejects it.
        exit: i32,
    },
}

// ---------------------------------------------------------------------------------------
// The hook side (a short-lived process run by git).
// ---------------------------------------------------------------------------------------

/// Runs the pre-receive hook: reads git's ref updates from stdin, hands them to the daemon
/// and prints the deploy's output as it comes. Returns the exit code for the process
/// (0 accepts the push).
pub fn run_pre_receive_hook() -> i32 {
    let cwd = std::env::current_dir();
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cwd {
        Ok(cwd) => run_hook(
            &|name: &str| std::env::var_os(name),
            &cwd,
            stdin.lock(),
            &mut out,
        ),
        Err(e) => {
            print_line(
                &mut out,
                &format!("{ERROR_PREFIX}cannot read the hook's working directory: {e}"),
            );
            1
        }
    }
}

/// The hook, with its environment, working directory, stdin and stdout passed in.
fn run_hook(
    env: &dyn Fn(&str) -> Option<OsString>,
    cwd: &Path,
    stdin: impl BufRead,
    out: &mut impl Write,
) -> i32 {
    let (socket, request) = match build_request(env, cwd, stdin) {
        Ok(built) => built,
        Err(message) => {
            print_line(out, &format!("{ERROR_PREFIX}{message}"));
            return 1;
        }
    };
    let fail = |out: &mut dyn Write, message: String| {
        print_line(out, &format!("{ERROR_PREFIX}{message}"));
        1
    };

    let stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                out,
                format!(
                    "the empire daemon is not reachable at {}: {e}",
                    socket.display()
                ),
            );
        }
    };
    let mut payload = serde_json::to_vec(&request).expect("a hook request serializes");
    payload.push(b'\n');
    // The write side stays open: closing it tells the daemon the pusher went away.
    if let Err(e) = (&stream)
        .write_all(&payload)
        .and_then(|_| (&stream).flush())
    {
        return fail(
            out,
            format!("cannot send the push to the empire daemon: {e}"),
        );
    }

    let mut reader = io::BufReader::new(&stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                return fail(
                    out,
                    "the empire daemon closed the connection before the deploy finished"
                        .to_string(),
                );
            }
            Ok(_) => {}
            Err(e) => {
                return fail(
                    out,
                    format!("lost the connection to the empire daemon: {e}"),
                );
            }
        }
        match serde_json::from_slice::<HookResponse>(&line) {
            Ok(HookResponse::Line { line }) => print_line(out, &line),
            Ok(HookResponse::Exit { exit }) => return exit,
            Err(_) => {
                return fail(
                    out,
                    format!(
                        "unexpected reply from the empire daemon: {:?}",
                        String::from_utf8_lossy(&line).trim_end()
                    ),
                );
            }
        }
    }
}

/// Writes and flushes one line. git relays the hook's output as it arrives, so every
/// line is flushed on its own. A broken stdout (git went away) is ignored: the daemon
/// still decides the exit code.
fn print_line(out: &mut (impl Write + ?Sized), line: &str) {
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Reads everything the hook needs from its environment and stdin.
fn build_request(
    env: &dyn Fn(&str) -> Option<OsString>,
    cwd: &Path,
    stdin: impl BufRead,
) -> Result<(PathBuf, HookRequest), String> {
    let required = |name: &str| {
        env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!("{name} is not set: this hook runs only under the empire git server")
        })
    };
    let socket = PathBuf::from(required(ENV_SOCKET)?);
    let app = required(ENV_APP)?
        .into_string()
        .map_err(|_| format!("{ENV_APP} is not valid utf-8"))?;
    let user = required(ENV_USER)?
        .into_string()
        .map_err(|_| format!("{ENV_USER} is not valid utf-8"))?;

    let mut updates = Vec::new();
    for line in stdin.lines() {
        let line = line.map_err(|e| format!("cannot read the ref updates from git: {e}"))?;
        if line.is_empty() {
            continue;
        }
        updates.push(RefUpdate::parse(&line)?);
    }

    let repo_path = cwd.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the repository directory {}: {e}",
            cwd.display()
        )
    })?;
    let object_dirs = object_dirs(env, &repo_path);
    let push_options = push_options(env)?;
    let turn = env(ENV_TURN).and_then(|v| v.into_string().ok());
    Ok((
        socket,
        HookRequest {
            app,
            user,
            repo_path,
            updates,
            object_dirs,
            push_options,
            turn,
        },
    ))
}

/// The quarantine (`GIT_OBJECT_DIRECTORY`) and the alternates
/// (`GIT_ALTERNATE_OBJECT_DIRECTORIES`), absolute, without duplicates.
fn object_dirs(env: &dyn Fn(&str) -> Option<OsString>, base: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut add = |raw: &[u8]| {
        if raw.is_empty() {
            return;
        }
        let path = PathBuf::from(OsString::from_vec(raw.to_vec()));
        let path = if path.is_absolute() {
            path
        } else {
            base.join(path)
        };
        let path = path.canonicalize().unwrap_or(path);
        if !dirs.contains(&path) {
            dirs.push(path);
        }
    };
    if let Some(dir) = env("GIT_OBJECT_DIRECTORY") {
        add(dir.as_bytes());
    }
    if let Some(alternates) = env("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
        for entry in split_alternates(alternates.as_bytes()) {
            add(&entry);
        }
    }
    dirs
}

/// Splits `GIT_ALTERNATE_OBJECT_DIRECTORIES` as git does: entries separated by `:`, an
/// entry starting with `"` is a C-style quoted string (which may hold a `:`).
fn split_alternates(value: &[u8]) -> Vec<Vec<u8>> {
    let mut entries = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if value[i] == b':' {
            i += 1;
            continue;
        }
        if value[i] == b'"' {
            let (entry, next) = unquote_c(value, i + 1);
            entries.push(entry);
            // Skip to the next separator.
            i = next;
            while i < value.len() && value[i] != b':' {
                i += 1;
            }
        } else {
            let end = value[i..]
                .iter()
                .position(|&b| b == b':')
                .map_or(value.len(), |p| i + p);
            entries.push(value[i..end].to_vec());
            i = end;
        }
    }
    entries
}

/// Unquotes a C-style string starting after its opening quote; returns the text and the
/// index after the closing quote.
fn unquote_c(value: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    while i < value.len() {
        match value[i] {
            b'"' => return (out, i + 1),
            b'\\' if i + 1 < value.len() => {
                let c = value[i + 1];
                i += 2;
                match c {
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    b'0'..=b'3'
                        if i + 1 < value.len()
                            && (b'0'..=b'7').contains(&value[i])
                            && (b'0'..=b'7').contains(&value[i + 1]) =>
                    {
                        out.push(
                            ((c - b'0') << 6) | ((value[i] - b'0') << 3) | (value[i + 1] - b'0'),
                        );
                        i += 2;
                    }
                    other => out.push(other),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    (out, i)
}

/// The `git push -o` options from `GIT_PUSH_OPTION_COUNT` / `GIT_PUSH_OPTION_<n>`.
fn push_options(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Vec<String>, String> {
    let Some(count) = env("GIT_PUSH_OPTION_COUNT") else {
        return Ok(Vec::new());
    };
    let count: usize = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GIT_PUSH_OPTION_COUNT is not a number: {count:?}"))?;
    (0..count)
        .map(|i| {
            let name = format!("GIT_PUSH_OPTION_{i}");
            env(&name)
                .unwrap_or_default()
                .into_string()
                .map_err(|_| format!("push option {i} is not valid utf-8"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The daemon side.
// ---------------------------------------------------------------------------------------

/// Binds the hook socket at `path`: creates its directory (mode 0700) if missing, removes
/// a stale socket left by a daemon that died, refuses to take over a socket another live
/// process serves or a path that is not a socket, and makes the socket owner-only (0600).
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| annotate(e, format!("cannot create {}", parent.display())))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another process serves the hook socket {} (is another empire daemon running?)",
                        path.display()
                    ),
                ));
            }
            fs::remove_file(path).map_err(|e| {
                annotate(
                    e,
                    format!("cannot remove the stale socket {}", path.display()),
                )
            })?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: refusing to replace it",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(annotate(e, format!("cannot inspect {}", path.display()))),
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| annotate(e, format!("cannot bind the hook socket {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| annotate(e, format!("cannot restrict {}", path.display())))?;
    Ok(listener)
}

fn annotate(err: io::Error, context: String) -> io::Error {
    io::Error::new(err.kind(), format!("{context}: {err}"))
}

/// The daemon's end of the hook socket: turns each hook connection into one deploy.
///
/// Cheap to clone; clones share the running-deploy count.
#[derive(Clone)]
pub struct HookServer {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Arc<dyn Pipeline>,
    connections: TaskTracker,
    active: AtomicUsize,
}

impl HookServer {
    /// A hook server that runs deploys on `pipeline`.
    pub fn new(pipeline: Arc<dyn Pipeline>) -> Self {
        HookServer {
            inner: Arc::new(Inner {
                pipeline,
                connections: TaskTracker::new(),
                active: AtomicUsize::new(0),
            }),
        }
    }

    /// How many deploys run now.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// The tracker of the connections being served (each holds at most one deploy).
    pub fn tracker(&self) -> TaskTracker {
        self.inner.connections.clone()
    }

    /// Accepts hook connections until `shutdown` is cancelled, serving each on its own
    /// task. Connections already accepted keep running; see [`HookServer::drain`].
    pub async fn serve(&self, listener: UnixListener, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let server = self.clone();
                        self.inner.connections.spawn(async move {
                            server.handle_connection(stream).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "hook socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::debug!("hook server stopped accepting");
    }

    /// Waits up to `timeout` for the connections (and their deploys) already accepted to
    /// finish. Returns whether they all did.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let tracker = &self.inner.connections;
        tracker.close();
        let done = tokio::time::timeout(timeout, tracker.wait()).await.is_ok();
        tracker.reopen();
        done
    }

    /// Serves one hook connection: reads the request, runs the deploy, streams its output
    /// and ends with the exit code.
    pub async fn handle_connection(&self, stream: UnixStream) {
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_responses(write, rx));

        let exit = match read_request(&mut reader).await {
            Ok(request) => self.handle_request(request, reader, &tx).await,
            Err(message) => {
                send_error(&tx, &message);
                1
            }
        };
        let _ = tx.send(HookResponse::Exit { exit });
        drop(tx);
        let _ = writer.await;
    }

    async fn handle_request<R>(
        &self,
        request: HookRequest,
        reader: R,
        tx: &mpsc::UnboundedSender<HookResponse>,
    ) -> i32
    where
        R: AsyncRead + Unpin + Send,
    {
        let app = match AppName::new(&request.app) {
            Ok(app) => app,
            Err(e) => {
                send_error(tx, &e.to_string());
                return 1;
            }
        };
        let update = match deploy_update(&request.updates) {
            Ok(Some(update)) => update.clone(),
            Ok(None) => return 0,
            Err(lines) => {
                for line in lines {
                    send_error(tx, &line);
                }
                return 1;
            }
        };

        let mut no_cache = false;
        let mut message = None;
        for option in &request.push_options {
            if option == "no-cache" {
                no_cache = true;
            } else if let Some(text) = option.strip_prefix("message=") {
                message = Some(text.to_string());
            } else {
                let _ = tx.send(HookResponse::Line {
                    line: format!("       ignoring unknown push option {option:?}"),
                });
            }
        }

        let deploy = DeployRequest {
            app: app.clone(),
            user: request.user.clone(),
            source: DeploySource::Push {
                repo_path: request.repo_path.clone(),
                object_dirs: request.object_dirs.clone(),
                commit: update.new.clone(),
                reference: update.reference.clone(),
                origin: PushOrigin::Git,
            },
            no_cache,
            message,
            turn: request.turn.clone(),
        };
        tracing::info!(
            app = %app,
            user = %request.user,
            commit = %update.new,
            reference = %update.reference,
            "deploying a push"
        );

        let progress = Progress::new(Arc::new(SocketSink(tx.clone())));
        let cancel = CancellationToken::new();
        let _active = ActiveGuard::new(&self.inner.active);
        let pipeline = self.inner.pipeline.clone();
        let run =
            AssertUnwindSafe(pipeline.deploy(deploy, progress, cancel.clone())).catch_unwind();
        tokio::pin!(run);
        let watch = watch_disconnect(reader);
        tokio::pin!(watch);
        let result = tokio::select! {
            result = &mut run => result,
            _ = &mut watch => {
                tracing::info!(app = %app, "the pusher went away: cancelling the deploy");
                cancel.cancel();
                run.await
            }
        };

        match result {
            Ok(Ok(outcome)) => {
                tracing::info!(app = %app, release = outcome.release, "push deployed");
                let repo = request.repo_path.clone();
                let reference = update.reference.clone();
                let head =
                    tokio::task::spawn_blocking(move || crate::repo::set_head(&repo, &reference))
                        .await;
                if let Ok(Err(e)) = head {
                    tracing::warn!(app = %app, error = %e, "cannot point HEAD at the deployed branch");
                }
                0
            }
            Ok(Err(e)) => {
                tracing::info!(app = %app, error = %e, "push rejected");
                send_error(tx, &e.to_string());
                1
            }
            Err(_) => {
                tracing::error!(app = %app, "the deploy pipeline panicked");
                send_error(tx, "internal error: the deploy stopped unexpectedly");
                1
            }
        }
    }
}

/// Reads the one request line.
async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<HookRequest, String> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut *reader)
            .take(MAX_REQUEST_BYTES)
            .read_until(b'\n', &mut buf),
    )
    .await;
    match read {
        Err(_) => return Err("the hook sent no request in time".to_string()),
        Ok(Err(e)) => return Err(format!("cannot read the hook's request: {e}")),
        Ok(Ok(0)) => return Err("the hook sent no request".to_string()),
        Ok(Ok(_)) => {}
    }
    if buf.last() != Some(&b'\n') {
        return Err("the hook's request is incomplete or too large".to_string());
    }
    serde_json::from_slice(&buf).map_err(|e| format!("cannot understand the hook's request: {e}"))
}

/// Resolves when the hook's side of the connection ends (EOF or error).
async fn watch_disconnect<R: AsyncRead + Unpin>(mut reader: R) {
    let mut buf = [0u8; 256];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Chooses the update to deploy: exactly one update of `main` or `master`. `Ok(None)`
/// when there is nothing to do; `Err` holds the lines that explain a refusal.
fn deploy_update(updates: &[RefUpdate]) -> Result<Option<&RefUpdate>, Vec<String>> {
    let mut refused = Vec::new();
    let mut deploys = Vec::new();
    for update in updates {
        if DEPLOY_REFS.contains(&update.reference.as_str()) {
            deploys.push(update);
        } else {
            refused.push(format!(
                "pushes to {} are not deployed: push to main (git push empire HEAD:main)",
                update.reference
            ));
        }
    }
    for update in &deploys {
        if update.is_delete() {
            let branch = update.reference.trim_start_matches("refs/heads/");
            refused.push(format!(
                "deleting {branch} is not allowed: it is the branch empire deploys"
            ));
        }
    }
    if deploys.len() > 1 {
        refused.push("push main or master, not both: each push deploys one branch".to_string());
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    Ok(deploys.first().copied())
}

fn send_error(tx: &mpsc::UnboundedSender<HookResponse>, text: &str) {
    let mut any = false;
    for line in text.lines() {
        any = true;
        let _ = tx.send(HookResponse::Line {
            line: format!("{ERROR_PREFIX}{line}"),
        });
    }
    if !any {
        let _ = tx.send(HookResponse::Line {
            line: format!("{ERROR_PREFIX}the deploy failed"),
        });
    }
}

/// Writes responses to the hook, one JSON line each, until the exit message.
async fn write_responses(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<HookResponse>,
) {
    while let Some(response) = rx.recv().await {
        let is_exit = matches!(response, HookResponse::Exit { .. });
        let mut line = serde_json::to_vec(&response).expect("a hook response serializes");
        line.push(b'\n');
        if write.write_all(&line).await.is_err() {
            // The hook is gone; the deploy notices through its cancel token.
            return;
        }
        if is_exit {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// A progress sink that queues each line for the socket writer: never blocks.
struct SocketSink(mpsc::UnboundedSender<HookResponse>);

impl ProgressSink for SocketSink {
    fn write_line(&self, line: &str) {
        let _ = self.0.send(HookResponse::Line {
            line: line.to_string(),
        });
    }
}

/// Counts a running deploy for as long as it lives.
struct ActiveGuard<'a>(&'a AtomicUsize);

impl<'a> ActiveGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(counter)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use empire_core::pipeline::DeployOutcome;

    const OLD: &str = "0000000000000000000000000000000000000000";
    const NEW: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

    #[test]
    fn parses_ref_updates() {
        let u = RefUpdate::parse(&format!("{OLD} {NEW} refs/heads/main")).unwrap();
        assert_eq!(u.old, OLD);
        assert_eq!(u.new, NEW);
        assert_eq!(u.reference, "refs/heads/main");
        assert!(!u.is_delete());
        let d = RefUpdate::parse(&format!("{NEW} {OLD} refs/heads/main")).unwrap();
        assert!(d.is_delete());
        let sha256 = "a".repeat(64);
        assert!(RefUpdate::parse(&format!("{sha256} {sha256} refs/heads/x")).is_ok());
        for bad in [
            "",
            "abc def refs/heads/main",
            &format!("{OLD} {NEW}"),
            &format!("{OLD} {NEW} "),
            &format!("{OLD} zz{} refs/heads/main", &NEW[2..]),
        ] {
            let e = RefUpdate::parse(bad).unwrap_err();
            assert!(e.starts_with("malformed ref update from git"), "{e}");
        }
    }

    #[test]
    fn wire_format() {
        let request = HookRequest {
            app: "web".into(),
            user: "alice".into(),
            repo_path: "/srv/web.git".into(),
            updates: vec![RefUpdate {
                old: OLD.into(),
                new: NEW.into(),
                reference: "refs/heads/main".into(),
            }],
            object_dirs: vec!["/srv/web.git/objects/incoming".into()],
            push_options: vec!["no-cache".into()],
            turn: None,
        };
        let json: serde_json::Value = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "app": "web", "user": "alice", "repo_path": "/srv/web.git",
                "updates": [{"old": OLD, "new": NEW, "ref": "refs/heads/main"}],
                "object_dirs": ["/srv/web.git/objects/incoming"],
                "push_options": ["no-cache"],
                "turn": null,
            })
        );
        assert_eq!(
            serde_json::to_string(&HookResponse::Line { line: "hi".into() }).unwrap(),
            r#"{"line":"hi"}"#
        );
        assert_eq!(
            serde_json::to_string(&HookResponse::Exit { exit: 1 }).unwrap(),
            r#"{"exit":1}"#
        );
        assert_eq!(
            serde_json::from_str::<HookResponse>(r#"{"exit":0}"#).unwrap(),
            HookResponse::Exit { exit: 0 }
        );
    }

    fn update(reference: &str, new: &str) -> RefUpdate {
        RefUpdate {
            old: OLD.into(),
            new: new.into(),
            reference: reference.into(),
        }
    }

    #[test]
    fn decides_what_deploys() {
        assert_eq!(deploy_update(&[]), Ok(None));
        let main = [update("refs/heads/main", NEW)];
        assert_eq!(
            deploy_update(&main).unwrap().unwrap().reference,
            "refs/heads/main"
        );
        let master = [update("refs/heads/master", NEW)];
        assert_eq!(
            deploy_update(&master).unwrap().unwrap().reference,
            "refs/heads/master"
        );

        let other = [
            update("refs/heads/main", NEW),
            update("refs/heads/feature", NEW),
        ];
        assert_eq!(
            deploy_update(&other).unwrap_err(),
            [
                "pushes to refs/heads/feature are not deployed: push to main (git push empire HEAD:main)"
            ]
        );
        let tag = [update("refs/tags/v1", NEW)];
        assert_eq!(
            deploy_update(&tag).unwrap_err(),
            ["pushes to refs/tags/v1 are not deployed: push to main (git push empire HEAD:main)"]
        );
        let delete = [update("refs/heads/main", OLD)];
        assert_eq!(
            deploy_update(&delete).unwrap_err(),
            ["deleting main is not allowed: it is the branch empire deploys"]
        );
        let both = [
            update("refs/heads/main", NEW),
            update("refs/heads/master", NEW),
        ];
        assert_eq!(
            deploy_update(&both).unwrap_err(),
            ["push main or master, not both: each push deploys one branch"]
        );
    }

    #[test]
    fn splits_alternates_like_git() {
        assert_eq!(
            split_alternates(b"/a/objects:/b/objects"),
            [b"/a/objects".to_vec(), b"/b/objects".to_vec()]
        );
        assert_eq!(
            split_alternates(b"\"/with:colon/objects\":/plain::"),
            [b"/with:colon/objects".to_vec(), b"/plain".to_vec()]
        );
        assert_eq!(
            split_alternates(b"\"/q\\\"uote\\\\back\\nnl\\101\""),
            [b"/q\"uote\\back\nnlA".to_vec()]
        );
        assert!(split_alternates(b"").is_empty());
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn builds_the_request_from_git_and_gitd() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("web.git");
        let quarantine = repo.join("objects/tmp_objdir-incoming-abc");
        fs::create_dir_all(&quarantine).unwrap();
        let env = env_of(&[
            (ENV_SOCKET, "/run/empire/hook.sock"),
            (ENV_APP, "web"),
            (ENV_USER, "alice"),
            ("GIT_OBJECT_DIRECTORY", quarantine.to_str().unwrap()),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", "./objects"),
            ("GIT_PUSH_OPTION_COUNT", "2"),
            ("GIT_PUSH_OPTION_0", "no-cache"),
            ("GIT_PUSH_OPTION_1", "message=fix the thing"),
        ]);
        let stdin = format!("{OLD} {NEW} refs/heads/main\n");
        let (socket, request) = build_request(&env, &repo, stdin.as_bytes()).unwrap();
        assert_eq!(socket, Path::new("/run/empire/hook.sock"));
        assert_eq!(request.app, "web");
        assert_eq!(request.user, "alice");
        let repo = repo.canonicalize().unwrap();
        assert_eq!(request.repo_path, repo);
        assert_eq!(request.updates, [update("refs/heads/main", NEW)]);
        assert_eq!(
            request.object_dirs,
            [quarantine.canonicalize().unwrap(), repo.join("objects")]
        );
        assert_eq!(request.push_options, ["no-cache", "message=fix the thing"]);
    }

    #[test]
    fn the_hook_needs_gitd_environment() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[(ENV_APP, "web"), (ENV_USER, "alice")]);
        let mut out = Vec::new();
        let code = run_hook(&env, dir.path(), &b""[..], &mut out);
        assert_eq!(code, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            " !     EMPIRE_HOOK_SOCKET is not set: this hook runs only under the empire git server\n"
        );
    }

    #[test]
    fn an_unreachable_daemon_rejects_the_push() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nobody.sock");
        let env = env_of(&[
            (ENV_SOCKET, socket.to_str().unwrap()),
            (ENV_APP, "web"),
            (ENV_USER, "alice"),
        ]);
        let mut out = Vec::new();
        let stdin = format!("{OLD} {NEW} refs/heads/main\n");
        let code = run_hook(&env, dir.path(), stdin.as_bytes(), &mut out);
        assert_eq!(code, 1);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with(&format!(
                " !     the empire daemon is not reachable at {}: ",
                socket.display()
            )),
            "{out}"
        );
    }

    /// A pipeline that records requests and answers as told.
    #[derive(Default)]
    struct FakePipeline {
        requests: Mutex<Vec<DeployRequest>>,
        fail: Option<String>,
        wait_for_cancel: bool,
        cancelled: Mutex<bool>,
        lines: Vec<&'static str>,
    }

    #[async_trait]
    impl Pipeline for FakePipeline {
        async fn reserve(
            &self,
            app: &empire_core::app::AppName,
            _user: &str,
            _progress: &Progress,
            _cancel: &CancellationToken,
        ) -> empire_core::Result<empire_core::pipeline::DeployTurn> {
            Ok(empire_core::pipeline::DeployTurn::unleased(
                app.clone(),
                "test-turn".into(),
            ))
        }

        async fn deploy(
            &self,
            request: DeployRequest,
            progress: Progress,
            cancel: CancellationToken,
        ) -> empire_core::Result<DeployOutcome> {
            self.requests.lock().unwrap().push(request);
            for line in &self.lines {
                progress.raw(line);
            }
            if self.wait_for_cancel {
                tokio::time::timeout(Duration::from_secs(10), cancel.cancelled())
                    .await
                    .expect("the deploy was not cancelled");
                *self.cancelled.lock().unwrap() = true;
                return Err(empire_core::Error::Cancelled("the pusher went away".into()));
            }
            match &self.fail {
                Some(message) => Err(empire_core::Error::Build(message.clone())),
                None => Ok(DeployOutcome {
                    release: 1,
                    url: None,
                }),
            }
        }
    }

    struct Daemon {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        repo: PathBuf,
        server: HookServer,
        shutdown: CancellationToken,
        serving: tokio::task::JoinHandle<()>,
    }

    async fn daemon(pipeline: Arc<FakePipeline>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/hook.sock");
        let repo = dir.path().join("web.git");
        fs::create_dir_all(&repo).unwrap();
        let listener = bind(&socket).unwrap();
        let server = HookServer::new(pipeline);
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn({
            let server = server.clone();
            let shutdown = shutdown.clone();
            async move { server.serve(listener, shutdown).await }
        });
        Daemon {
            _dir: dir,
            socket,
            repo,
            server,
            shutdown,
            serving,
        }
    }

    async fn push(daemon: &Daemon, stdin: String, options: &[&str]) -> (i32, String) {
        let mut vars = vec![
            (
                ENV_SOCKET.to_string(),
                daemon.socket.to_str().unwrap().to_string(),
            ),
            (ENV_APP.to_string(), "web".to_string()),
            (ENV_USER.to_string(), "alice".to_string()),
            (
                "GIT_PUSH_OPTION_COUNT".to_string(),
                options.len().to_string(),
            ),
        ];
        for (i, o) in options.iter().enumerate() {
            vars.push((format!("GIT_PUSH_OPTION_{i}"), o.to_string()));
        }
        let repo = daemon.repo.clone();
        tokio::task::spawn_blocking(move || {
            let map: HashMap<String, OsString> = vars
                .into_iter()
                .map(|(k, v)| (k, OsString::from(v)))
                .collect();
            let env = move |name: &str| map.get(name).cloned();
            let mut out = Vec::new();
            let code = run_hook(&env, &repo, stdin.as_bytes(), &mut out);
            (code, String::from_utf8(out).unwrap())
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_push_to_main_deploys_and_streams_output() {
        let pipeline = Arc::new(FakePipeline {
            lines: vec!["-----> Building web", "       done"],
            ..Default::default()
        });
        let daemon = daemon(pipeline.clone()).await;
        let mode = fs::metadata(&daemon.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (code, out) = push(
            &daemon,
            format!("{OLD} {NEW} refs/heads/main\n"),
            &["no-cache", "message=hello", "bogus"],
        )
        .await;
        assert_eq!(code, 0, "{out}");
        assert_eq!(
            out,
            "       ignoring unknown push option \"bogus\"\n-----> Building web\n       done\n"
        );
        let requests = pipeline.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.app.as_str(), "web");
        assert_eq!(r.user, "alice");
        assert!(r.no_cache);
        assert_eq!(r.message.as_deref(), Some("hello"));
        match &r.source {
            DeploySource::Push {
                repo_path,
                commit,
                reference,
                ..
            } => {
                assert_eq!(repo_path, &daemon.repo.canonicalize().unwrap());
                assert_eq!(commit, NEW);
                assert_eq!(reference, "refs/heads/main");
            }
            other => panic!("unexpected source {other:?}"),
        }
        assert_eq!(daemon.server.active(), 0);
    }

    #[tokio::test]
    async fn a_failed_deploy_rejects_the_push() {
        let pipeline = Arc::new(FakePipeline {
            fail: Some("no Dockerfile\nand no buildpack".into()),
            lines: vec!["-----> Building web"],
            ..Default::default()
        });
        let daemon = daemon(pipeline).await;
        let (code, out) = push(&daemon, format!("{OLD} {NEW} refs/heads/master\n"), &[]).await;
        assert_eq!(code, 1);
        assert_eq!(
            out,
            "-----> Building web\n !     build failed: no Dockerfile\n !     and no buildpack\n"
        );
    }

    #[tokio::test]
    async fn other_refs_are_refused_without_deploying() {
        let pipeline = Arc::new(FakePipeline::default());
        let daemon = daemon(pipeline.clone()).await;
        let (code, out) = push(&daemon, format!("{OLD} {NEW} refs/heads/feature\n"), &[]).await;
        assert_eq!(code, 1);
        assert_eq!(
            out,
            " !     pushes to refs/heads/feature are not deployed: push to main (git push empire HEAD:main)\n"
        );
        let (code, out) = push(&daemon, format!("{NEW} {OLD} refs/heads/main\n"), &[]).await;
        assert_eq!(code, 1);
        assert_eq!(
            out,
            " !     deleting main is not allowed: it is the branch empire deploys\n"
        );
        assert!(pipeline.requests.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn garbage_requests_get_a_clear_refusal() {
        let daemon = daemon(Arc::new(FakePipeline::default())).await;
        let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
        stream.write_all(b"{\"hello\": 1}\n").await.unwrap();
        let mut reply = String::new();
        BufReader::new(stream)
            .read_to_string(&mut reply)
            .await
            .unwrap();
        let lines: Vec<HookResponse> = reply
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{reply}");
        match &lines[0] {
            HookResponse::Line { line } => {
                assert!(
                    line.starts_with(" !     cannot understand the hook's request: "),
                    "{line}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(lines[1], HookResponse::Exit { exit: 1 });

        // An invalid app name is refused too.
        let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
        let request = HookRequest {
            app: "Bad_App".into(),
            user: "alice".into(),
            repo_path: "/tmp".into(),
            updates: vec![update("refs/heads/main", NEW)],
            object_dirs: vec![],
            push_options: vec![],
            turn: None,
        };
        let mut payload = serde_json::to_vec(&request).unwrap();
        payload.push(b'\n');
        stream.write_all(&payload).await.unwrap();
        let mut reply = String::new();
        BufReader::new(stream)
            .read_to_string(&mut reply)
            .await
            .unwrap();
        assert!(reply.contains("invalid app name"), "{reply}");
        assert!(reply.ends_with("{\"exit\":1}\n"), "{reply}");
    }

    #[tokio::test]
    async fn a_daemon_that_drops_the_connection_rejects_the_push() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("drop.sock");
        let listener = bind(&socket).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            write
                .write_all(b"{\"line\":\"-----> Building\"}\n")
                .await
                .unwrap();
            // Dropped without an exit message.
        });
        let env = env_of(&[
            (ENV_SOCKET, socket.to_str().unwrap()),
            (ENV_APP, "web"),
            (ENV_USER, "alice"),
        ]);
        let cwd = dir.path().to_path_buf();
        let (code, out) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let stdin = format!("{OLD} {NEW} refs/heads/main\n");
            let code = run_hook(&env, &cwd, stdin.as_bytes(), &mut out);
            (code, String::from_utf8(out).unwrap())
        })
        .await
        .unwrap();
        assert_eq!(code, 1);
        assert_eq!(
            out,
            "-----> Building\n !     the empire daemon closed the connection before the deploy finished\n"
        );
    }

    #[tokio::test]
    async fn a_hook_that_goes_away_cancels_the_deploy() {
        let pipeline = Arc::new(FakePipeline {
            wait_for_cancel: true,
            ..Default::default()
        });
        let daemon = daemon(pipeline.clone()).await;
        let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
        let request = HookRequest {
            app: "web".into(),
            user: "alice".into(),
            repo_path: daemon.repo.clone(),
            updates: vec![update("refs/heads/main", NEW)],
            object_dirs: vec![],
            push_options: vec![],
            turn: None,
        };
        let mut payload = serde_json::to_vec(&request).unwrap();
        payload.push(b'\n');
        stream.write_all(&payload).await.unwrap();
        // Wait until the deploy runs, then vanish.
        for _ in 0..200 {
            if daemon.server.active() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(daemon.server.active(), 1);
        drop(stream);
        assert!(daemon.server.drain(Duration::from_secs(10)).await);
        assert!(*pipeline.cancelled.lock().unwrap());
        assert_eq!(daemon.server.active(), 0);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_drain_waits() {
        let mut daemon = daemon(Arc::new(FakePipeline::default())).await;
        daemon.shutdown.cancel();
        (&mut daemon.serving).await.unwrap();
        assert!(daemon.server.drain(Duration::from_secs(1)).await);
        // Nobody accepts any more: the hook fails cleanly (connect succeeds on the
        // backlog or fails, but no deploy runs and no exit 0 comes back).
        let (code, _) = push(&daemon, format!("{OLD} {NEW} refs/heads/main\n"), &[]).await;
        assert_eq!(code, 1);
    }

    #[tokio::test]
    async fn bind_replaces_stale_sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        {
            let _stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        }
        // The listener above is gone but its file stays: bind replaces it.
        let live = bind(&path).unwrap();
        // A live socket is not taken over.
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);
        // A regular file is never removed.
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = bind(&file).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    }
}
