//! Pushing built images to a registry (`--registry HOST[:PORT][/PREFIX]`).
//!
//! A built image `empire/<app>:v<N>` is tagged `<endpoint>/<prefix>/<app>:v<N>` and
//! pushed by the Docker engine with the registry's credentials (none, basic, or a token
//! from Amazon ECR). The release then records the image by digest,
//! `<registry>/<prefix>/<app>@sha256:…`, which the engine knows locally after the push,
//! so the scheduler runs exactly what was pushed.
//!
//! The push's progress is shown per layer: a line when a layer crosses 25, 50 and 75
//! percent (with the bytes sent), and one when it is pushed (its size) or already in the
//! registry, so at most four lines a layer, never a line per chunk. A push that fails says why in one line (`pushing to 127.0.0.1:5000 failed:
//! unauthorized: check --registry-username/--registry-password`).
//!
//! The push talks to the engine's HTTP API directly (hyper over the same socket bollard
//! uses): bollard's push type drops the layer ids and the digest the engine reports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::query_parameters::{
    ListImagesOptions, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bytes::Bytes;
use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::registry_errors::{refused_credentials, unreachable_reason};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::DockerBuilder;
use crate::ecr::{EcrAuth, EcrSettings, Login};

/// How images are authenticated to the registry.
#[derive(Clone, Default)]
pub enum RegistryAuth {
    /// No credentials (an open registry).
    #[default]
    None,
    /// HTTP basic auth with a username and password.
    Basic {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// A token from Amazon ECR's `GetAuthorizationToken`, cached until it expires; the
    /// app's repository is created on its first push.
    Ecr(EcrSettings),
}

impl RegistryAuth {
    /// The `--registry-auth` value: `none`, `basic` or `ecr`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryAuth::None => "none",
            RegistryAuth::Basic { .. } => "basic",
            RegistryAuth::Ecr(_) => "ecr",
        }
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::None => f.write_str("None"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
            RegistryAuth::Ecr(settings) => f.debug_tuple("Ecr").field(settings).finish(),
        }
    }
}

/// Where built images are pushed and how.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `HOST[:PORT][/PREFIX]`: the registry's name and the repository prefix. Images are
    /// named `HOST[:PORT]/PREFIX/<app>`.
    pub address: String,
    /// `HOST:PORT` images are actually pushed to and pulled from when that differs from
    /// the registry's name (an ECR registry served locally in tests).
    pub endpoint: Option<String>,
    /// The credentials.
    pub auth: RegistryAuth,
}

/// Why a registry could not be set up or an image not pushed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A setting is not a registry address.
    #[error("invalid --{flag} {value:?}: {reason}")]
    Invalid {
        /// The flag (`registry` or `registry-endpoint`).
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The push failed; the reason is one line.
    #[error("pushing to {registry} failed: {reason}")]
    Push {
        /// The registry (and the endpoint, when it differs).
        registry: String,
        /// Why, in one line.
        reason: String,
    },
    /// The engine refused to tag or untag an image.
    #[error("{action}: {source}")]
    Docker {
        /// What was being done.
        action: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
}

impl From<RegistryError> for empire_core::Error {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid { flag, .. } => {
                empire_core::Error::invalid(flag, err.to_string())
            }
            RegistryError::Push { .. } => empire_core::Error::backend("registry", err),
            RegistryError::Docker { .. } => empire_core::Error::backend("docker", err),
        }
    }
}

/// The credentials in use.
enum Auth {
    None,
    Basic(Login),
    Ecr(Box<EcrAuth>),
}

/// A registry images are pushed to. Clones share the credentials (an ECR token fetched
/// for one is cached for all), so the scheduler pulls with the builder's login.
#[derive(Clone)]
pub struct Registry {
    /// `HOST[:PORT]`, as images are named.
    name: String,
    /// The repository prefix (`a/b`), if any.
    prefix: Option<String>,
    /// `HOST[:PORT]` the engine pushes to.
    endpoint: String,
    auth: Arc<Auth>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth_kind())
            .finish()
    }
}

impl Registry {
    /// Checks the addresses and sets up the credentials (for ECR, the API client; no
    /// call is made before the first push).
    pub async fn new(config: RegistryConfig) -> Result<Registry, RegistryError> {
        let (name, prefix) = parse_address(&config.address)?;
        let endpoint = match &config.endpoint {
            Some(endpoint) => {
                check_host(endpoint).map_err(|reason| RegistryError::Invalid {
                    flag: "registry-endpoint",
                    value: endpoint.clone(),
                    reason,
                })?;
                endpoint.clone()
            }
            None => name.clone(),
        };
        let auth = match &config.auth {
            RegistryAuth::None => Auth::None,
            RegistryAuth::Basic { username, password } => Auth::Basic(Login {
                username: username.clone(),
                password: password.clone(),
            }),
            RegistryAuth::Ecr(settings) => Auth::Ecr(Box::new(EcrAuth::new(settings, &name).await)),
        };
        Ok(Registry {
            name,
            prefix,
            endpoint,
            auth: Arc::new(auth),
        })
    }

    /// `HOST[:PORT]`, as images are named.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// `HOST[:PORT]` the engine pushes to (the name unless `--registry-endpoint`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `none`, `basic` or `ecr`.
    pub fn auth_kind(&self) -> &'static str {
        match *self.auth {
            Auth::None => "none",
            Auth::Basic(_) => "basic",
            Auth::Ecr(_) => "ecr",
        }
    }

    /// The app's repository in the registry: `<prefix>/<app>`.
    pub fn repository(&self, app: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}/{app}"),
            None => app.to_string(),
        }
    }

    /// The app's image name as releases record it: `<registry>/<prefix>/<app>`.
    pub fn image_name(&self, app: &str) -> String {
        format!("{}/{}", self.name, self.repository(app))
    }

    /// The app's image name as the engine pushes it: `<endpoint>/<prefix>/<app>`.
    pub fn push_name(&self, app: &str) -> String {
        format!("{}/{}", self.endpoint, self.repository(app))
    }

    /// The registry as error messages name it.
    fn shown(&self) -> String {
        if self.endpoint == self.name {
            self.name.clone()
        } else {
            format!("{} (via {})", self.name, self.endpoint)
        }
    }

    fn failed(&self, reason: impl Into<String>) -> RegistryError {
        RegistryError::Push {
            registry: self.shown(),
            reason: one_line(&reason.into()),
        }
    }

    /// The login to send, and whether it is fresh (an ECR token just fetched).
    async fn login(&self) -> Result<(Option<Login>, bool), RegistryError> {
        match &*self.auth {
            Auth::None => Ok((None, true)),
            Auth::Basic(login) => Ok((Some(login.clone()), true)),
            Auth::Ecr(ecr) => {
                let (login, fresh) = ecr.login().await.map_err(|err| self.failed(err))?;
                Ok((Some(login), fresh))
            }
        }
    }

    /// The username and password to pull the registry's images with (`None` for an
    /// open registry): the same login pushes use, an ECR token from the shared cache.
    /// `renew` drops a cached ECR token first (the registry refused it).
    /// Fails with the reason in one line (ECR's `GetAuthorizationToken` failed).
    pub async fn pull_login(&self, renew: bool) -> Result<Option<(String, String)>, String> {
        match &*self.auth {
            Auth::None => Ok(None),
            Auth::Basic(login) => Ok(Some((login.username.clone(), login.password.clone()))),
            Auth::Ecr(ecr) => {
                if renew {
                    ecr.invalidate().await;
                }
                let (login, _) = ecr.login().await.map_err(|err| one_line(&err))?;
                Ok(Some((login.username, login.password)))
            }
        }
    }

    /// What to tell the user when the registry refused the credentials.
    fn unauthorized(&self, message: &str) -> RegistryError {
        let hint = match *self.auth {
            Auth::None => {
                "the registry wants credentials: use --registry-auth basic with \
                 --registry-username/--registry-password"
            }
            Auth::Basic(_) => "check --registry-username/--registry-password",
            Auth::Ecr(_) => "the registry refused the ECR token",
        };
        tracing::debug!(registry = %self.name, %message, "the registry refused the push");
        self.failed(format!("unauthorized: {hint}"))
    }
}

/// Splits `HOST[:PORT][/PREFIX]` and checks both parts.
fn parse_address(address: &str) -> Result<(String, Option<String>), RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        flag: "registry",
        value: address.to_string(),
        reason,
    };
    if address.contains("://") {
        return Err(invalid(
            "give HOST[:PORT][/PREFIX] without a scheme (the engine picks https, or http \
             for an insecure registry)"
                .into(),
        ));
    }
    let trimmed = address.trim().trim_end_matches('/');
    let (host, prefix) = match trimmed.split_once('/') {
        Some((host, prefix)) => (host, Some(prefix)),
        None => (trimmed, None),
    };
    check_host(host).map_err(invalid)?;
    if let Some(prefix) = prefix {
        for component in prefix.split('/') {
            check_component(component).map_err(invalid)?;
        }
    }
    Ok((host.to_string(), prefix.map(str::to_string)))
}

/// Checks a registry `HOST[:PORT]`. The engine reads a first name component without a
/// `.` or `:` (other than `localhost`) as a Docker Hub account, so such a host is refused.
fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(format!("{host:?} is not a HOST[:PORT]"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{port:?} is not a port"));
    }
    if port.is_none() && !name.contains('.') && name != "localhost" {
        return Err(format!(
            "{host:?} would be read as a Docker Hub account: give the registry's domain \
             name or its port"
        ));
    }
    Ok(())
}

/// Checks one component of a repository prefix (lowercase letters, digits and single
/// `.`, `_`, `-` separators, as image names allow).
fn check_component(component: &str) -> Result<(), String> {
    let bytes = component.as_bytes();
    let separator = |b: u8| b == b'.' || b == b'_' || b == b'-';
    let valid = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || separator(b))
        && !separator(bytes[0])
        && !separator(bytes[bytes.len() - 1]);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the prefix component {component:?} is not a repository name (lowercase letters, \
             digits, and . _ - between them)"
        ))
    }
}

/// Joins a multi-line message into one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------
// pushing

/// One JSON message of the engine's push stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PushMessage {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "progressDetail")]
    progress_detail: Option<ProgressDetail>,
    #[serde(default)]
    aux: Option<PushAux>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ProgressDetail {
    #[serde(default)]
    current: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct PushAux {
    #[serde(default, rename = "Digest")]
    digest: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

/// What happened to one layer.
#[derive(Debug, Default)]
struct Layer {
    /// The last quarter (1–3) reported.
    quarter: u8,
    /// Bytes sent so far, and the layer's size.
    current: u64,
    total: u64,
    /// The last status shown.
    shown: String,
    /// Pushed now (true) or already there (false), once known.
    pushed: Option<bool>,
}

/// Turns the engine's push messages into a few lines: per layer, one when it crosses
/// 25/50/75 percent and one when it is done (which says 100%).
#[derive(Debug, Default)]
pub(crate) struct PushTracker {
    layers: HashMap<String, Layer>,
    digest: Option<String>,
}

impl PushTracker {
    /// The line to show for this message, if any.
    pub(crate) fn handle(&mut self, message: &PushMessage) -> Option<String> {
        if let Some(digest) = message.aux.as_ref().and_then(|aux| aux.digest.clone()) {
            self.digest = Some(digest);
        }
        let status = message.status.as_deref()?.trim();
        let id = message.id.as_deref().unwrap_or("").trim();
        if id.is_empty() {
            // `v3: digest: sha256:… size: 943`: the digest (the step's last line shows it).
            if let Some(digest) = digest_in_status(status) {
                self.digest.get_or_insert(digest);
                return None;
            }
            return (!status.is_empty()).then(|| status.to_string());
        }
        let layer = self.layers.entry(id.to_string()).or_default();
        match status {
            "Preparing" | "Waiting" => None,
            "Pushing" => {
                let detail = message.progress_detail.as_ref()?;
                let current = detail.current.unwrap_or(0);
                layer.current = layer.current.max(current);
                if let Some(total) = detail.total.filter(|t| *t > 0) {
                    layer.total = total;
                }
                if layer.total == 0 {
                    return None;
                }
                let total = layer.total.max(layer.current);
                let percent = (layer.current.saturating_mul(100) / total).min(100);
                if percent >= 100 {
                    // The `Pushed` line that follows says so.
                    layer.quarter = 3;
                    return None;
                }
                let quarter = (percent / 25) as u8;
                if quarter <= layer.quarter {
                    return None;
                }
                layer.quarter = quarter;
                Some(format!(
                    "{id}: Pushing {percent:>3}% ({} of {})",
                    human_bytes(layer.current),
                    human_bytes(total)
                ))
            }
            "Pushed" => {
                layer.pushed = Some(true);
                let size = layer.current.max(layer.total);
                Some(if size > 0 {
                    format!("{id}: Pushed ({})", human_bytes(size))
                } else {
                    format!("{id}: Pushed")
                })
            }
            other => {
                if other == "Layer already exists" || other.starts_with("Mounted from") {
                    layer.pushed = Some(false);
                }
                if layer.shown == other {
                    return None;
                }
                layer.shown = other.to_string();
                Some(format!("{id}: {other}"))
            }
        }
    }

    /// The digest the engine reported.
    pub(crate) fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `3 layers: 2 pushed, 1 already in the registry`.
    pub(crate) fn summary(&self) -> String {
        let pushed = self
            .layers
            .values()
            .filter(|l| l.pushed == Some(true))
            .count();
        let existed = self
            .layers
            .values()
            .filter(|l| l.pushed == Some(false))
            .count();
        let count = self.layers.len();
        let noun = if count == 1 { "layer" } else { "layers" };
        format!("{count} {noun}: {pushed} pushed, {existed} already in the registry")
    }
}

/// The digest in a `<tag>: digest: sha256:… size: N` status.
fn digest_in_status(status: &str) -> Option<String> {
    let (_, rest) = status.split_once(": digest: ")?;
    let digest = rest.split_whitespace().next()?;
    digest.starts_with("sha256:").then(|| digest.to_string())
}

/// `512 B`, `3.2 kB`, `1.9 MB`, `1.20 GB` (decimal units, as the engine shows them).
pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1000 {
        format!("{bytes} B")
    } else if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.2} GB", b / 1e9)
    }
}

/// How a push went wrong.
enum PushFailure {
    /// The registry refused the credentials.
    Unauthorized(String),
    /// Anything else, in the engine's words.
    Other(String),
}

/// Where the engine's API is: `DOCKER_HOST` as [`DockerBuilder::connect`] reads it.
enum EngineAddr {
    Unix(PathBuf),
    Tcp(String),
}

fn engine_addr() -> Result<EngineAddr, String> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|host| !host.is_empty());
    let Some(host) = host else {
        return Ok(EngineAddr::Unix("/var/run/docker.sock".into()));
    };
    if host.starts_with('/') {
        return Ok(EngineAddr::Unix(host.into()));
    }
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(EngineAddr::Unix(path.into()));
    }
    if let Some(addr) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        return Ok(EngineAddr::Tcp(addr.trim_end_matches('/').to_string()));
    }
    Err(format!(
        "DOCKER_HOST {host:?} is not a unix:// or tcp:// address"
    ))
}

/// Sends one request to the engine on a connection of its own.
async fn engine_request(
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, String> {
    async fn send<S>(
        stream: S,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("talking to the docker daemon: {err}"))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "docker push connection");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|err| format!("talking to the docker daemon: {err}"))
    }
    match engine_addr()? {
        EngineAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|err| {
                    format!(
                        "connecting to the docker daemon at {}: {err}",
                        path.display()
                    )
                })?;
            send(stream, request).await
        }
        EngineAddr::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|err| format!("connecting to the docker daemon at {addr}: {err}"))?;
            send(stream, request).await
        }
    }
}

/// The `X-Registry-Auth` header: base64url JSON of the login (`{}` without one).
fn auth_header(login: Option<&Login>, server: &str) -> String {
    use base64::Engine;
    let json = match login {
        Some(login) => serde_json::json!({
            "username": login.username,
            "password": login.password,
            "serveraddress": server,
        }),
        None => serde_json::json!({}),
    };
    base64::engine::general_purpose::URL_SAFE.encode(json.to_string())
}

impl DockerBuilder {
    /// Pushes the local image `local` to the registry as the app's release `version`, and
    /// returns the reference the release records: `<registry>/<prefix>/<app>@sha256:…`.
    /// Progress goes to `progress` as one step with a few lines per layer.
    pub async fn push_to_registry(
        &self,
        registry: &Registry,
        app: &str,
        version: u32,
        local: &str,
        progress: &Progress,
    ) -> Result<String, RegistryError> {
        let step = progress.step(format!("Pushing image to {}", registry.shown()));
        let repository = registry.repository(app);
        if let Auth::Ecr(ecr) = &*registry.auth {
            let created = ecr
                .ensure_repository(&repository)
                .await
                .map_err(|err| registry.failed(err))?;
            if created {
                progress.detail(format!("Created repository {repository}"));
            }
        }
        let push_name = registry.push_name(app);
        let tag = format!("v{version}");
        self.docker()
            .tag_image(
                local,
                Some(
                    TagImageOptionsBuilder::new()
                        .repo(&push_name)
                        .tag(&tag)
                        .build(),
                ),
            )
            .await
            .map_err(|source| RegistryError::Docker {
                action: format!("tagging {local} as {push_name}:{tag}"),
                source,
            })?;

        let result = self
            .push_with_login(registry, &push_name, &tag, progress)
            .await;
        let digest = match result {
            Ok(digest) => digest,
            Err(err) => {
                // Leave no tag of an image that is not in the registry.
                let untag = RemoveImageOptionsBuilder::new().noprune(true).build();
                if let Err(e) = self
                    .docker()
                    .remove_image(&format!("{push_name}:{tag}"), Some(untag), None)
                    .await
                {
                    tracing::debug!(error = %e, "untagging {push_name}:{tag}");
                }
                return Err(err);
            }
        };
        let reference = format!("{}@{digest}", registry.image_name(app));
        step.done(format!("Pushed {reference}"));
        Ok(reference)
    }

    /// Pushes with the registry's login; an ECR token from the cache that the registry
    /// refuses is renewed once.
    async fn push_with_login(
        &self,
        registry: &Registry,
        push_name: &str,
        tag: &str,
        progress: &Progress,
    ) -> Result<String, RegistryError> {
        let mut retried = false;
        loop {
            let (login, fresh) = registry.login().await?;
            let header = auth_header(login.as_ref(), registry.endpoint());
            match self.engine_push(push_name, tag, &header, progress).await {
                Ok(Some(digest)) => return Ok(digest),
                Ok(None) => {
                    return self.digest_after_push(registry, push_name).await;
                }
                Err(PushFailure::Unauthorized(message)) => {
                    if let Auth::Ecr(ecr) = &*registry.auth
                        && !fresh
                        && !retried
                    {
                        progress.detail("The registry refused the cached ECR token; renewing it");
                        ecr.invalidate().await;
                        retried = true;
                        continue;
                    }
                    return Err(registry.unauthorized(&message));
                }
                Err(PushFailure::Other(message)) => {
                    let reason = unreachable_reason(&message).unwrap_or(message);
                    return Err(registry.failed(reason));
                }
            }
        }
    }

    /// The digest of a push whose stream did not say it: the image's digest reference
    /// for the pushed repository.
    async fn digest_after_push(
        &self,
        registry: &Registry,
        push_name: &str,
    ) -> Result<String, RegistryError> {
        let image = self
            .docker()
            .inspect_image(push_name)
            .await
            .map_err(|source| RegistryError::Docker {
                action: format!("inspecting {push_name}"),
                source,
            })?;
        image
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find_map(|reference| {
                reference
                    .strip_prefix(push_name)
                    .and_then(|rest| rest.strip_prefix('@'))
                    .map(str::to_string)
            })
            .ok_or_else(|| registry.failed("the engine reported no digest for the pushed image"))
    }

    /// Runs `POST /images/<name>/push?tag=<tag>` and relays its progress. Returns the
    /// digest when the stream reported it.
    async fn engine_push(
        &self,
        name: &str,
        tag: &str,
        auth_header: &str,
        progress: &Progress,
    ) -> Result<Option<String>, PushFailure> {
        let version = self.docker().client_version();
        let request = hyper::Request::post(format!("/v{version}/images/{name}/push?tag={tag}"))
            .header(hyper::header::HOST, "docker")
            .header("X-Registry-Auth", auth_header)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|err| PushFailure::Other(err.to_string()))?;
        let response = engine_request(request).await.map_err(PushFailure::Other)?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
            let message = format!("the docker daemon answered {status}: {message}");
            return Err(if refused_credentials(&message) {
                PushFailure::Unauthorized(message)
            } else {
                PushFailure::Other(message)
            });
        }

        let mut tracker = PushTracker::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut failure: Option<String> = None;
        let handle = |line: &[u8], tracker: &mut PushTracker| {
            let line = line.trim_ascii();
            if line.is_empty() {
                return None;
            }
            let message: PushMessage = match serde_json::from_slice(line) {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(error = %err, "unreadable push message");
                    return None;
                }
            };
            if let Some(error) = message
                .error_detail
                .as_ref()
                .and_then(|d| d.message.clone())
                .or_else(|| message.error.clone())
            {
                return Some(error);
            }
            if let Some(line) = tracker.handle(&message) {
                progress.detail(line);
            }
            None
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                PushFailure::Other(format!("reading the docker daemon's push output: {err}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(error) = handle(&line, &mut tracker) {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = handle(&pending, &mut tracker) {
            failure.get_or_insert(error);
        }
        if let Some(error) = failure {
            return Err(if refused_credentials(&error) {
                PushFailure::Unauthorized(error)
            } else {
                PushFailure::Other(error)
            });
        }
        progress.detail(tracker.summary());
        Ok(tracker.digest().map(str::to_string))
    }

    /// Removes the app's registry tags `<endpoint>/<prefix>/<app>:v<N>` whose N is not in
    /// `keep` (with the digest references of the same images), and returns the tags
    /// removed. An image a container still uses stays. Without a registry, does nothing.
    pub async fn prune_registry_tags(
        &self,
        app: &AppName,
        keep: &[u32],
    ) -> Result<Vec<String>, RegistryError> {
        let Some(registry) = self.registry() else {
            return Ok(Vec::new());
        };
        let repo = registry.push_name(app.as_str());
        let images = self
            .docker()
            .list_images(Some(ListImagesOptions {
                filters: Some(HashMap::from([(
                    "reference".to_string(),
                    vec![repo.clone()],
                )])),
                ..Default::default()
            }))
            .await
            .map_err(|source| RegistryError::Docker {
                action: format!("listing images of {repo}"),
                source,
            })?;
        let mut tags: Vec<(u32, String)> = images
            .iter()
            .flat_map(|image| image.repo_tags.iter())
            .filter_map(|tag| {
                let version: u32 = tag.strip_prefix(&repo)?.strip_prefix(":v")?.parse().ok()?;
                (!keep.contains(&version)).then(|| (version, tag.clone()))
            })
            .collect();
        tags.sort();
        let mut removed = Vec::new();
        for (_, tag) in tags {
            let options = RemoveImageOptionsBuilder::new().build();
            match self.docker().remove_image(&tag, Some(options), None).await {
                Ok(_) => removed.push(tag),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => {}
                Err(source) => {
                    return Err(RegistryError::Docker {
                        action: format!("removing {tag}"),
                        source,
                    });
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> PushMessage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_registry_addresses() {
        assert_eq!(
            parse_address("127.0.0.1:5000/team/apps").unwrap(),
            ("127.0.0.1:5000".into(), Some("team/apps".into()))
        );
        assert_eq!(
            parse_address("registry.example.com").unwrap(),
            ("registry.example.com".into(), None)
        );
        assert_eq!(
            parse_address("localhost/empire/").unwrap(),
            ("localhost".into(), Some("empire".into()))
        );
        for bad in [
            "https://registry.example.com",
            "myregistry/apps",
            "127.0.0.1:http",
            "127.0.0.1:5000/Apps",
            "127.0.0.1:5000/a//b",
            "127.0.0.1:5000/-a",
            "",
        ] {
            let err = parse_address(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid --registry"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn names_images() {
        let registry = Registry::new(RegistryConfig {
            address: "123456789012.dkr.ecr.us-east-1.amazonaws.com/empire".into(),
            endpoint: Some("127.0.0.1:5000".into()),
            auth: RegistryAuth::None,
        })
        .await
        .unwrap();
        assert_eq!(registry.repository("web"), "empire/web");
        assert_eq!(
            registry.image_name("web"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/empire/web"
        );
        assert_eq!(registry.push_name("web"), "127.0.0.1:5000/empire/web");
        let err = registry.failed("boom\nagain").to_string();
        assert_eq!(
            err,
            "pushing to 123456789012.dkr.ecr.us-east-1.amazonaws.com (via 127.0.0.1:5000) \
             failed: boom again"
        );
    }

    #[test]
    fn reports_each_layer_at_quarters_only() {
        let mut tracker = PushTracker::default();
        let mut lines = Vec::new();
        let mut feed = |json: &str, tracker: &mut PushTracker| {
            if let Some(line) = tracker.handle(&message(json)) {
                lines.push(line);
            }
        };
        feed(
            r#"{"status":"The push refers to repository [127.0.0.1:5000/a/b]"}"#,
            &mut tracker,
        );
        feed(
            r#"{"status":"Preparing","progressDetail":{},"id":"aaa"}"#,
            &mut tracker,
        );
        feed(
            r#"{"status":"Waiting","progressDetail":{},"id":"aaa"}"#,
            &mut tracker,
        );
        for current in (0..=4_000_000u64).step_by(100_000) {
            feed(
                &format!(
                    r#"{{"status":"Pushing","progressDetail":{{"current":{current},"total":4000000}},"id":"aaa"}}"#
                ),
                &mut tracker,
            );
        }
        feed(
            r#"{"status":"Pushed","progressDetail":{},"id":"aaa"}"#,
            &mut tracker,
        );
        feed(
            r#"{"status":"Layer already exists","progressDetail":{},"id":"bbb"}"#,
            &mut tracker,
        );
        feed(
            r#"{"status":"v1: digest: sha256:abc size: 943"}"#,
            &mut tracker,
        );
        feed(
            r#"{"progressDetail":{},"aux":{"Tag":"v1","Digest":"sha256:abc","Size":943}}"#,
            &mut tracker,
        );
        assert_eq!(
            lines,
            [
                "The push refers to repository [127.0.0.1:5000/a/b]",
                "aaa: Pushing  25% (1.0 MB of 4.0 MB)",
                "aaa: Pushing  50% (2.0 MB of 4.0 MB)",
                "aaa: Pushing  75% (3.0 MB of 4.0 MB)",
                "aaa: Pushed (4.0 MB)",
                "bbb: Layer already exists",
            ]
        );
        assert_eq!(tracker.digest(), Some("sha256:abc"));
        assert_eq!(
            tracker.summary(),
            "2 layers: 1 pushed, 1 already in the registry"
        );
    }

    #[test]
    fn a_layer_larger_than_announced_counts_as_complete() {
        let mut tracker = PushTracker::default();
        let line = tracker.handle(&message(
            r#"{"status":"Pushing","progressDetail":{"current":2000,"total":68},"id":"c"}"#,
        ));
        assert_eq!(line, None);
        let line = tracker.handle(&message(r#"{"status":"Pushed","id":"c"}"#));
        assert_eq!(line.as_deref(), Some("c: Pushed (2.0 kB)"));
    }

    #[test]
    fn takes_the_digest_from_the_status_line() {
        let mut tracker = PushTracker::default();
        assert_eq!(
            tracker.handle(&message(
                r#"{"status":"v7: digest: sha256:0123 size: 527"}"#
            )),
            None
        );
        assert_eq!(tracker.digest(), Some("sha256:0123"));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3216), "3.2 kB");
        assert_eq!(human_bytes(1_982_256), "2.0 MB");
        assert_eq!(human_bytes(1_200_000_000), "1.20 GB");
    }

    #[test]
    fn encodes_the_auth_header() {
        use base64::Engine;
        let login = Login {
            username: "empire".into(),
            password: "s3cret?>".into(),
        };
        let header = auth_header(Some(&login), "127.0.0.1:5001");
        let json = base64::engine::general_purpose::URL_SAFE
            .decode(header)
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["username"], "empire");
        assert_eq!(value["password"], "s3cret?>");
        assert_eq!(value["serveraddress"], "127.0.0.1:5001");
        assert_eq!(auth_header(None, "x"), "e30=");
    }
}
