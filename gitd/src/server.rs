//! The SSH server (russh) that runs git's transport services.
//!
//! Public-key authentication only: the key's `SHA256:` fingerprint is looked up in the
//! store and names the user (the SSH user name, `git@` or `empire@`, is ignored). Each
//! session channel may run one allowed command ([`crate::command`]); its stdio is wired
//! to a `git receive-pack` / `git upload-pack` child:
//!
//! * client data → a bounded queue → a task that writes the child's stdin. The `data`
//!   callback only waits for room in the queue, never for the child, so a large push
//!   cannot deadlock the session; the queue gives backpressure to the client.
//! * child stdout → channel data and child stderr → extended data 1, each sent only as
//!   the client's window allows, so a large clone is never buffered whole.
//! * when the child exited and its output is forwarded: exit status, EOF, close.
//! * when the client goes away first (channel closed or connection lost): the child's
//!   whole process group is killed, which kills the pre-receive hook too; the hook's
//!   socket closes and the daemon cancels the deploy.
//!
//! Any other command is one of the operation commands of [`crate::admin`] (`apps`,
//! `config:set`, `run`, …), run through the [`Platform`] given with
//! [`GitServer::with_platform`]. A PTY request is accepted and recorded, but only `run`
//! uses it (window changes become resizes).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use empire_core::Error as CoreError;
use empire_core::app::AppName;
use empire_core::pipeline::{DeployTurn, Pipeline};
use empire_core::progress::{Progress, ProgressSink};
use empire_core::service::Platform;
use empire_core::store::Store;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelWriteHalf, Disconnect, MethodKind, MethodSet, SshId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::GitdError;
use crate::admin::{self, Console, Invocation, TerminalSize};
use crate::command::{CommandError, GitCommand, GitService, parse_exec};
use crate::hook::{ENV_APP, ENV_SOCKET, ENV_TURN, ENV_USER};
use crate::repo::{GIT_LOCATION_VARS, ensure_repo, repo_path};

/// How many chunks of client data may wait for the child's stdin.
const STDIN_QUEUE: usize = 32;
/// How many window changes may wait for a running command.
const RESIZE_QUEUE: usize = 8;
/// Session channels one connection may have open at once.
const MAX_CHANNELS: usize = 4;
/// How long a client may take to send its SSH identification.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to authenticate.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Extended-data stream number of stderr.
const STDERR: u32 = 1;

/// How the git server runs.
#[derive(Debug, Clone)]
pub struct GitServerConfig {
    /// Where the apps' bare repositories live (`<repos_dir>/<app>.git`).
    pub repos_dir: PathBuf,
    /// The program the pre-receive hook runs as `<hook_program> hook pre-receive`
    /// (the `empire` binary).
    pub hook_program: PathBuf,
    /// The daemon's hook socket, passed to the hook as `EMPIRE_HOOK_SOCKET`.
    pub hook_socket: PathBuf,
    /// Create an app on its first push instead of refusing the push.
    pub autocreate: bool,
    /// SSH keepalive interval: keeps a push alive through a quiet build.
    pub keepalive: Duration,
}

/// The SSH git server.
pub struct GitServer {
    shared: Shared,
    host_key: PrivateKey,
    sessions: TaskTracker,
}

struct Shared {
    config: GitServerConfig,
    store: Arc<dyn Store>,
    pipeline: Arc<dyn Pipeline>,
    platform: Option<Arc<Platform>>,
}

impl GitServer {
    /// A server with `host_key` that authenticates users against `store` and reserves
    /// each push's deploy turn with `pipeline` before git receives it.
    pub fn new(
        config: GitServerConfig,
        host_key: PrivateKey,
        store: Arc<dyn Store>,
        pipeline: Arc<dyn Pipeline>,
    ) -> Self {
        GitServer {
            shared: Shared {
                config,
                store,
                pipeline,
                platform: None,
            },
            host_key,
            sessions: TaskTracker::new(),
        }
    }

    /// Enables the operation commands (`ssh git@HOST apps`, `config:set`, `run`, …; see
    /// [`crate::admin`]) over this service layer. Without it the server runs git only.
    pub fn with_platform(mut self, platform: Arc<Platform>) -> Self {
        self.shared.platform = Some(platform);
        self
    }

    /// The tracker of running SSH sessions, to wait for them after [`GitServer::run`]
    /// returned (`close()` then `wait()`).
    pub fn sessions(&self) -> TaskTracker {
        self.sessions.clone()
    }

    /// The `SHA256:` fingerprint of the host key, for the startup banner.
    pub fn host_key_fingerprint(&self) -> String {
        host_key_fingerprint(&self.host_key)
    }

    /// Accepts SSH connections on `listener` until `shutdown` is cancelled. Sessions
    /// already running continue (see [`GitServer::sessions`]).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), GitdError> {
        let ssh = Arc::new(self.ssh_config());
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, host_key = %self.host_key_fingerprint(), "git server listening");
        }
        let shared = Arc::new(self.shared);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        let config = ssh.clone();
                        let shared = shared.clone();
                        self.sessions.spawn(serve_connection(config, shared, socket, peer));
                    }
                    Err(e) => {
                        // EMFILE and friends pass; do not spin on them.
                        tracing::warn!(error = %e, "ssh accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!("git server stopped accepting connections");
        Ok(())
    }

    fn ssh_config(&self) -> russh::server::Config {
        russh::server::Config {
            server_id: SshId::Standard("SSH-2.0-empire".into()),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(100),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![self.host_key.clone()],
            // The inactivity timer does not see a quiet build; keepalives find dead peers.
            inactivity_timeout: None,
            keepalive_interval: Some(self.shared.config.keepalive),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        }
    }
}

/// Runs one SSH connection to its end.
async fn serve_connection(
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let authenticated = CancellationToken::new();
    let handler = Connection {
        shared,
        peer,
        user: None,
        authenticated: authenticated.clone(),
        channels: HashMap::new(),
    };
    let session = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        russh::server::run_stream(config, socket, handler),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "ssh handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "ssh handshake timed out");
            return;
        }
    };
    let handle = session.handle();
    let done = CancellationToken::new();
    let _done = done.clone().drop_guard();
    tokio::spawn(async move {
        tokio::select! {
            _ = authenticated.cancelled() => {}
            _ = done.cancelled() => {}
            _ = tokio::time::sleep(AUTH_TIMEOUT) => {
                tracing::debug!(%peer, "ssh authentication timed out");
                let _ = handle
                    .disconnect(Disconnect::ByApplication, "authentication timed out".into(), "en".into())
                    .await;
            }
        }
    });
    if let Err(e) = session.await {
        tracing::debug!(%peer, error = %e, "ssh session ended with an error");
    }
}

/// One SSH connection's state (russh calls it the handler).
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// The authenticated user.
    user: Option<String>,
    authenticated: CancellationToken,
    channels: HashMap<ChannelId, ChannelState>,
}

struct ChannelState {
    /// The channel's write half until a command takes it.
    writer: Option<ChannelWriteHalf<Msg>>,
    /// `GIT_PROTOCOL` from an env request.
    git_protocol: Option<String>,
    /// Feeds the child's stdin; dropped on the client's EOF.
    stdin: Option<mpsc::Sender<Bytes>>,
    /// The PTY the client asked for (`ssh -t`), with its current size.
    terminal: Option<TerminalSize>,
    /// Passes the PTY's window changes to a running command.
    resize: Option<mpsc::Sender<(u16, u16)>>,
    /// Cancelled when the channel or the connection goes away.
    cancel: CancellationToken,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The connection is gone: stop whatever its channels still run.
        for state in self.channels.values() {
            state.cancel.cancel();
        }
    }
}

impl Connection {
    /// Looks a key up in the store; the owning user if it is known.
    async fn key_owner(&self, key: &PublicKey) -> Option<String> {
        let fp = fingerprint(key);
        match self.shared.store.key(&fp).await {
            Ok(k) => Some(k.user),
            Err(CoreError::NotFound { .. }) => {
                tracing::debug!(peer = %self.peer, fingerprint = %fp, "unknown key");
                None
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, fingerprint = %fp, error = %e, "key lookup failed");
                None
            }
        }
    }

    /// Starts a task that refuses the channel's command with `message`.
    fn refuse(&mut self, channel: ChannelId, message: String) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(writer) = state.writer.take() else {
            return;
        };
        // A client with a PTY (`ssh host` without a command asks for one) has its terminal
        // in raw mode.
        let newline = if state.terminal.is_some() {
            "\r\n"
        } else {
            "\n"
        };
        tokio::spawn(async move {
            let writer = writer;
            let _ = writer
                .extended_data_bytes(STDERR, Bytes::from(format!("{message}{newline}")))
                .await;
            finish(&writer, 1).await;
        });
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Spare the client a signature for a key that is not known anyway.
        Ok(match self.key_owner(offer.public_key).await {
            Some(_) => Auth::Accept,
            None => Auth::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        ssh_user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.key_owner(key.public_key).await {
            Some(user) => {
                tracing::info!(peer = %self.peer, %user, ssh_user, "authenticated");
                self.user = Some(user);
                self.authenticated.cancel();
                Ok(Auth::Accept)
            }
            None => Ok(Auth::reject()),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.user.is_none() || self.channels.len() >= MAX_CHANNELS {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        // Inbound traffic arrives through the callbacks below; the read half is not
        // used (dropping it keeps russh from queueing every message for it).
        let (_read, write) = channel.split();
        self.channels.insert(
            write.id(),
            ChannelState {
                writer: Some(write),
                git_protocol: None,
                stdin: None,
                terminal: None,
                resize: None,
                cancel: CancellationToken::new(),
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(state) if name == "GIT_PROTOCOL" && valid_git_protocol(value) => {
                state.git_protocol = Some(value.to_string());
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Recorded for `run`; nothing else runs on a terminal.
        match self.channels.get_mut(&channel) {
            Some(state) if state.writer.is_some() => {
                state.terminal = Some(terminal_size(col_width, row_height));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel)
            && state.terminal.is_some()
        {
            let size = terminal_size(col_width, row_height);
            state.terminal = Some(size);
            if let Some(resize) = &state.resize {
                // A full queue means the command does not keep up: a later change wins.
                let _ = resize.try_send((size.cols, size.rows));
            }
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // `ssh empire@host` without a command: say what this server is for.
        session.channel_success(channel)?;
        self.refuse(channel, CommandError::Empty.to_string());
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.clone() else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(state) = self.channels.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(writer) = state.writer.take() else {
            // One command per channel.
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;

        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        state.stdin = Some(stdin_tx);
        let resize = state.terminal.map(|size| {
            let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
            // The size the terminal has now comes first.
            let _ = tx.try_send((size.cols, size.rows));
            state.resize = Some(tx);
            rx
        });
        let exec = Exec {
            shared: self.shared.clone(),
            peer: self.peer,
            user,
            line: data.to_vec(),
            git_protocol: state.git_protocol.clone(),
            writer: Arc::new(writer),
            stdin: stdin_rx,
            terminal: state.terminal,
            resize,
            cancel: state.cancel.clone(),
        };
        tokio::spawn(exec.run());
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        let Some(stdin) = state.stdin.clone() else {
            return Ok(());
        };
        // Only wait for room in the queue: the stdin task does the writing.
        if stdin.send(Bytes::copy_from_slice(data)).await.is_err()
            && let Some(state) = self.channels.get_mut(&channel)
        {
            // The child no longer reads its stdin.
            state.stdin = None;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            // Closes the child's stdin once the queued data is written.
            state.stdin = None;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.remove(&channel) {
            state.cancel.cancel();
        }
        Ok(())
    }
}

/// Whether a command line asks for git (`git-receive-pack …`, `git upload-pack …`) rather
/// than one of the operation commands. An empty line goes the git way too, which explains
/// what this server runs.
fn is_git_line(line: &str) -> bool {
    matches!(
        line.split_whitespace().next(),
        None | Some("git" | "git-receive-pack" | "git-upload-pack")
    )
}

/// A PTY size from a request, clamped to what a terminal can be.
fn terminal_size(cols: u32, rows: u32) -> TerminalSize {
    let clamp = |n: u32, default: u16| match u16::try_from(n) {
        Ok(0) => default,
        Ok(n) => n,
        Err(_) => u16::MAX,
    };
    TerminalSize {
        cols: clamp(cols, 80),
        rows: clamp(rows, 24),
    }
}

/// `GIT_PROTOCOL` values look like `version=2` (possibly several, `:`-separated).
fn valid_git_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
}

/// One exec request, run on its own task.
struct Exec {
    shared: Arc<Shared>,
    peer: SocketAddr,
    user: String,
    line: Vec<u8>,
    git_protocol: Option<String>,
    writer: Arc<ChannelWriteHalf<Msg>>,
    stdin: mpsc::Receiver<Bytes>,
    terminal: Option<TerminalSize>,
    resize: Option<mpsc::Receiver<(u16, u16)>>,
    cancel: CancellationToken,
}

impl Exec {
    async fn run(self) {
        match std::str::from_utf8(&self.line) {
            Ok(line) if !is_git_line(line) => {
                let line = line.to_string();
                self.run_admin(line).await
            }
            _ => self.run_git_command().await,
        }
    }

    /// Runs one of the operation commands.
    async fn run_admin(self, line: String) {
        let writer = self.writer.clone();
        tracing::info!(
            peer = %self.peer,
            user = %self.user,
            // Not the whole line: it may hold config values.
            command = line.split_whitespace().next().unwrap_or(""),
            "running command"
        );
        let console = Console::new(writer.clone(), self.terminal.is_some(), self.cancel.clone());
        let code = admin::run(Invocation {
            platform: self.shared.platform.clone(),
            user: self.user,
            line,
            console,
            writer: writer.clone(),
            stdin: self.stdin,
            terminal: self.terminal,
            resize: self.resize,
            cancel: self.cancel,
        })
        .await;
        finish(&writer, code).await;
    }

    /// Runs a git transport command.
    async fn run_git_command(mut self) {
        let writer = self.writer.clone();
        let code = match self.prepare().await {
            Ok((command, repo)) => {
                tracing::info!(
                    peer = %self.peer,
                    user = %self.user,
                    app = %command.app,
                    service = %command.service,
                    "running git"
                );
                match self.reserve_turn(&command).await {
                    Ok(turn) => {
                        let owner = turn.as_ref().map(|t| t.owner().to_string());
                        let code = self.run_git(&command, &repo, owner).await;
                        if let Some(turn) = turn {
                            turn.finish().await;
                        }
                        code
                    }
                    Err(message) => {
                        let _ = writer
                            .extended_data_bytes(STDERR, Bytes::from(format!("{message}\n")))
                            .await;
                        1
                    }
                }
            }
            Err(message) => {
                // Nothing will read the client's data: let the session stop queueing it.
                self.stdin.close();
                tracing::info!(
                    peer = %self.peer,
                    user = %self.user,
                    command = %String::from_utf8_lossy(&self.line),
                    reason = %message,
                    "command refused"
                );
                let _ = writer
                    .extended_data_bytes(STDERR, Bytes::from(format!("{message}\n")))
                    .await;
                1
            }
        };
        finish(&writer, code).await;
    }

    /// Checks the command and the app; returns the command and its repository, or the
    /// one line to refuse it with.
    async fn prepare(&self) -> Result<(GitCommand, PathBuf), String> {
        let line =
            std::str::from_utf8(&self.line).map_err(|_| CommandError::NotUtf8.to_string())?;
        let command = parse_exec(line).map_err(|e| e.to_string())?;
        let app = &command.app;
        let store = &self.shared.store;
        let config = &self.shared.config;
        match store.app(app).await {
            Ok(_) => self.check_access(app).await?,
            Err(CoreError::NotFound { .. }) => match command.service {
                GitService::ReceivePack if config.autocreate => {
                    match store.create_app(app, &self.user).await {
                        Ok(_) => {
                            tracing::info!(%app, user = %self.user, "created app on first push");
                            let event = empire_core::event::NewEvent::new(
                                Some(app),
                                self.user.clone(),
                                empire_core::event::APP_CREATED,
                                format!("created {app} on first push"),
                            )
                            .with("source", "push");
                            if let Err(e) = store.record_event(event).await {
                                tracing::warn!(%app, error = %e, "recording an event");
                            }
                        }
                        // Another push created it meanwhile.
                        Err(CoreError::Conflict(_)) => {}
                        Err(e) => {
                            tracing::error!(%app, error = %e, "cannot create app");
                            return Err(format!("cannot create app {app}: {e}"));
                        }
                    }
                }
                GitService::ReceivePack => {
                    return Err(format!("app {app} does not exist (create it first)"));
                }
                GitService::UploadPack => return Err(format!("app {app} does not exist")),
            },
            Err(e) => {
                tracing::error!(%app, error = %e, "app lookup failed");
                return Err(format!(
                    "cannot look up app {app}: internal error, try again"
                ));
            }
        }

        match command.service {
            GitService::ReceivePack => {
                let repos_dir = config.repos_dir.clone();
                let hook = config.hook_program.clone();
                let name = app.clone();
                let prepared =
                    tokio::task::spawn_blocking(move || ensure_repo(&repos_dir, &name, &hook))
                        .await;
                match prepared {
                    Ok(Ok(path)) => Ok((command, path)),
                    Ok(Err(e)) => {
                        tracing::error!(%app, error = %e, "cannot prepare the repository");
                        Err(format!(
                            "cannot prepare the repository of app {app}: internal error, try again"
                        ))
                    }
                    Err(e) => {
                        tracing::error!(%app, error = %e, "repository task failed");
                        Err(format!(
                            "cannot prepare the repository of app {app}: internal error, try again"
                        ))
                    }
                }
            }
            GitService::UploadPack => {
                let path = repo_path(&config.repos_dir, app);
                if path.join("HEAD").is_file() {
                    Ok((command, path))
                } else {
                    Err(format!(
                        "app {app} has no repository on this server yet: push to it first"
                    ))
                }
            }
        }
    }

    /// Only the app's collaborators (and admins) may push to or fetch from it.
    async fn check_access(&self, app: &AppName) -> Result<(), String> {
        let store = &self.shared.store;
        let allowed = match store.user(&self.user).await {
            Ok(user) if user.admin => Ok(true),
            Ok(_) => store.is_collaborator(app, &self.user).await,
            Err(e) => Err(e),
        };
        match allowed {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "you ({}) do not have access to app {app}: ask a collaborator to run `access:add {app} {}`",
                self.user, self.user
            )),
            Err(e) => {
                tracing::error!(%app, error = %e, "access check failed");
                Err(format!(
                    "cannot check your access to app {app}: internal error, try again"
                ))
            }
        }
    }

    /// For a push, waits for the app's deploy turn before git advertises its refs, so a
    /// push that waited for another deploy sees the refs that deploy left. What the
    /// pipeline prints while waiting goes to the client's stderr.
    async fn reserve_turn(&self, command: &GitCommand) -> Result<Option<DeployTurn>, String> {
        if command.service != GitService::ReceivePack {
            return Ok(None);
        }
        let (lines, mut pending) = mpsc::unbounded_channel::<String>();
        let writer = self.writer.clone();
        let relay = tokio::spawn(async move {
            while let Some(line) = pending.recv().await {
                let _ = writer
                    .extended_data_bytes(STDERR, Bytes::from(format!("{line}\n")))
                    .await;
            }
        });
        let progress = Progress::new(Arc::new(LineSink(lines)));
        let reserved = self
            .shared
            .pipeline
            .reserve(&command.app, &self.user, &progress, &self.cancel)
            .await;
        drop(progress);
        let _ = relay.await;
        reserved.map(Some).map_err(|e| format!(" !     {e}"))
    }

    /// Runs git and pumps its stdio; returns its exit code.
    async fn run_git(self, command: &GitCommand, repo: &Path, turn: Option<String>) -> u32 {
        let config = &self.shared.config;
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg(command.service.program())
            .arg(repo)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env_remove("GIT_PROTOCOL")
            .env(ENV_SOCKET, &config.hook_socket)
            .env(ENV_APP, command.app.as_str())
            .env(ENV_USER, &self.user);
        for var in GIT_LOCATION_VARS {
            cmd.env_remove(var);
        }
        if let Some(protocol) = &self.git_protocol {
            cmd.env("GIT_PROTOCOL", protocol);
        }
        if let Some(turn) = &turn {
            cmd.env(ENV_TURN, turn);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(error = %e, "cannot run git");
                let _ = self
                    .writer
                    .extended_data_bytes(
                        STDERR,
                        Bytes::from("cannot run git on the server: internal error\n"),
                    )
                    .await;
                return 1;
            }
        };
        let pgid = child.id();

        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut queue = self.stdin;
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = queue.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Dropping stdin closes it: git sees the client's EOF.
        });
        let stdout = tokio::spawn(forward(
            child.stdout.take().expect("piped stdout"),
            self.writer.clone(),
            None,
            self.cancel.clone(),
        ));
        let stderr = tokio::spawn(forward(
            child.stderr.take().expect("piped stderr"),
            self.writer.clone(),
            Some(STDERR),
            self.cancel.clone(),
        ));

        let status = tokio::select! {
            status = child.wait() => status,
            _ = self.cancel.cancelled() => {
                tracing::info!(peer = %self.peer, app = %command.app, "client went away: killing git");
                kill_group(pgid);
                child.wait().await
            }
        };
        feeder.abort();
        let _ = stdout.await;
        let _ = stderr.await;
        match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                tracing::error!(error = %e, "waiting for git failed");
                1
            }
        }
    }
}

/// Sends progress lines to a channel, for a task that writes them to the client.
struct LineSink(mpsc::UnboundedSender<String>);

impl ProgressSink for LineSink {
    fn write_line(&self, line: &str) {
        let _ = self.0.send(line.to_string());
    }
}

/// Kills a child's whole process group (git and its hook).
fn kill_group(pgid: Option<u32>) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

fn exit_code(status: ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(signal)) => 128 + signal as u32,
        (None, None) => 1,
    }
}

/// Copies a child's output to the channel, waiting for the client's window.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    writer: Arc<ChannelWriteHalf<Msg>>,
    ext: Option<u32>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        let send = async {
            match ext {
                None => writer.data_bytes(chunk).await,
                Some(ext) => writer.extended_data_bytes(ext, chunk).await,
            }
        };
        let sent = tokio::select! {
            sent = send => sent.is_ok(),
            // The client is gone: its window will never open again.
            _ = cancel.cancelled() => false,
        };
        if !sent {
            return;
        }
    }
}

/// Ends a channel: exit status, EOF, close. Errors mean the client is gone already.
async fn finish(writer: &ChannelWriteHalf<Msg>, code: u32) {
    let _ = writer.exit_status(code).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

// ---------------------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------------------

/// OpenSSH's fingerprint of a public key: `SHA256:<base64 without padding>`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The fingerprint of a host key's public half.
pub fn host_key_fingerprint(key: &PrivateKey) -> String {
    fingerprint(key.public_key())
}

/// Parses one public key in OpenSSH form (`ssh-ed25519 AAAA… comment`, a line of an
/// `authorized_keys` file without options, or the content of a `.pub` file). Returns its
/// fingerprint and its normalized form (`type base64 comment`).
pub fn parse_public_key(openssh_line: &str) -> Result<(String, String), GitdError> {
    let line = openssh_line.trim();
    if line.is_empty() {
        return Err(GitdError::PublicKey("the key is empty".to_string()));
    }
    if line.contains("PRIVATE KEY") {
        return Err(GitdError::PublicKey(
            "this is a private key: give the public key (the .pub file)".to_string(),
        ));
    }
    if line.lines().count() > 1 {
        return Err(GitdError::PublicKey(
            "give exactly one key, on one line".to_string(),
        ));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        GitdError::PublicKey(format!(
            "expected an OpenSSH public key like \"ssh-ed25519 AAAA… you@host\" ({e})"
        ))
    })?;
    let normalized = key
        .to_openssh()
        .map_err(|e| GitdError::PublicKey(format!("cannot encode the key: {e}")))?;
    Ok((fingerprint(&key), normalized))
}

/// Reads the host key (an unencrypted OpenSSH private key file), or generates an Ed25519
/// key and writes it (mode 0600) when the file does not exist.
pub fn load_or_generate_host_key(path: &Path) -> Result<PrivateKey, GitdError> {
    let host_key_error = |message: String| GitdError::HostKey {
        path: path.display().to_string(),
        message,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let key = PrivateKey::from_openssh(text.as_bytes())
                .map_err(|e| host_key_error(format!("not an OpenSSH private key: {e}")))?;
            if key.is_encrypted() {
                return Err(host_key_error(
                    "the key is encrypted: the server needs an unencrypted host key".to_string(),
                ));
            }
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| GitdError::io(format!("cannot create {}", parent.display()), e))?;
            }
            let seed: [u8; 32] = rand::random();
            let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            key.set_comment("empire host key");
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| host_key_error(format!("cannot encode the new key: {e}")))?;
            let written = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut file| {
                    file.write_all(pem.as_bytes())?;
                    file.sync_all()
                });
            match written {
                Ok(()) => {
                    tracing::info!(path = %path.display(), fingerprint = %host_key_fingerprint(&key), "generated a new ssh host key");
                    Ok(key)
                }
                // Another process wrote one meanwhile: use it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    load_or_generate_host_key(path)
                }
                Err(e) => Err(GitdError::io(format!("cannot write {}", path.display()), e)),
            }
        }
        Err(e) => Err(GitdError::io(format!("cannot read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn ssh_keygen_fingerprint(path: &Path) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(path)
            .output()
            .expect("ssh-keygen runs");
        assert!(out.status.success(), "{out:?}");
        // "256 SHA256:abc… comment (ED25519)"
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, bits) in [
            ("ed25519", None),
            ("ecdsa", Some("256")),
            ("rsa", Some("2048")),
        ] {
            let key = dir.path().join(format!("id_{kind}"));
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-t", kind, "-N", "", "-C", "me@laptop", "-f"])
                .arg(&key);
            if let Some(bits) = bits {
                cmd.args(["-b", bits]);
            }
            assert!(cmd.status().unwrap().success());
            let pub_path = key.with_extension("pub");
            let line = fs::read_to_string(&pub_path).unwrap();
            let (fp, normalized) = parse_public_key(&line).unwrap();
            assert_eq!(fp, ssh_keygen_fingerprint(&pub_path), "{kind}");
            assert!(fp.starts_with("SHA256:") && !fp.ends_with('='), "{fp}");
            assert_eq!(normalized, line.trim(), "{kind}");
            let public = PublicKey::from_openssh(&line).unwrap();
            assert_eq!(fingerprint(&public), fp);
        }
    }

    #[test]
    fn parse_public_key_normalizes_and_refuses_junk() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        assert!(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
                .arg(&key)
                .status()
                .unwrap()
                .success()
        );
        let line = fs::read_to_string(key.with_extension("pub")).unwrap();
        let mut parts = line.split_whitespace();
        let (kind, data) = (parts.next().unwrap(), parts.next().unwrap());
        let (_, normalized) = parse_public_key(&format!("  {kind} {data}  \n")).unwrap();
        assert_eq!(normalized, format!("{kind} {data}"));

        let private = fs::read_to_string(&key).unwrap();
        let e = parse_public_key(&private).unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid public key: this is a private key: give the public key (the .pub file)"
        );
        assert_eq!(
            parse_public_key("  ").unwrap_err().to_string(),
            "invalid public key: the key is empty"
        );
        let two = format!("{line}{line}");
        assert!(
            parse_public_key(&two)
                .unwrap_err()
                .to_string()
                .contains("exactly one key")
        );
        for junk in [
            "hello",
            "ssh-ed25519",
            "ssh-ed25519 notbase64!!",
            "ssh-rsa AAAA",
        ] {
            let e = parse_public_key(junk).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid public key: expected an OpenSSH public key"),
                "{junk}: {e}"
            );
        }
    }

    #[test]
    fn host_key_is_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host_ed25519");
        let key = load_or_generate_host_key(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_generate_host_key(&path).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        // OpenSSH reads it and agrees on the fingerprint.
        assert_eq!(host_key_fingerprint(&key), ssh_keygen_fingerprint(&path));

        // Keys made by ssh-keygen load too.
        let rsa = dir.path().join("host_rsa");
        assert!(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
                .arg(&rsa)
                .status()
                .unwrap()
                .success()
        );
        let loaded = load_or_generate_host_key(&rsa).unwrap();
        assert_eq!(host_key_fingerprint(&loaded), ssh_keygen_fingerprint(&rsa));

        let garbage = dir.path().join("garbage");
        fs::write(&garbage, "not a key").unwrap();
        let e = load_or_generate_host_key(&garbage).unwrap_err().to_string();
        assert!(e.contains("not an OpenSSH private key"), "{e}");
        assert_eq!(fs::read_to_string(&garbage).unwrap(), "not a key");
    }

    #[test]
    fn git_protocol_values() {
        assert!(valid_git_protocol("version=2"));
        assert!(valid_git_protocol("version=2:object-format=sha256"));
        assert!(!valid_git_protocol(""));
        assert!(!valid_git_protocol("version=2; rm -rf /"));
        assert!(!valid_git_protocol(&"a".repeat(300)));
    }
}
