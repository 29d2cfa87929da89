//! The Docker calls of the scheduler: containers of one namespace, found by label.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EventMessage, HostConfig,
    HostConfigLogConfig, ImageInspect, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use empire_core::formation::ProcessSize;
use empire_core::progress::Progress;
use empire_core::registry_errors::{refused_credentials, unreachable_reason};
use empire_core::scheduler::{DEFAULT_PORT, DeploySpec, OneOffSpec, ProcessSpec};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tracing::{debug, warn};

use crate::error::{DeployerError, docker_message, docker_status};
use crate::registry::{ImageRegistry, RegistryLogin, pull_reference, split_reference};

/// The process type that receives HTTP traffic.
pub(crate) const ROUTED_PROCESS: &str = "web";

/// The process type of one-off processes (`run.1234`).
pub(crate) const ONEOFF_PROCESS: &str = "run";

/// The image label that marks an image whose ENTRYPOINT launches commands (buildpack
/// images): such an image keeps its ENTRYPOINT and gets a command as its CMD.
pub(crate) const LAUNCHER_LABEL: &str = "empire.launcher";

/// The container port every process listens on, as Docker names it.
pub(crate) fn port_key() -> String {
    format!("{DEFAULT_PORT}/tcp")
}

/// A stream of Docker events.
pub(crate) type Events = BoxStream<'static, Result<EventMessage, bollard::errors::Error>>;

/// The next event of `events`; never, while there is no stream (it failed and was
/// dropped until it is opened again).
pub(crate) async fn next_event(
    events: &mut Option<Events>,
) -> Option<Result<EventMessage, bollard::errors::Error>> {
    match events {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// Label keys under one prefix (`empire.app`, …).
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    prefix: String,
}

impl Labels {
    pub(crate) fn new(prefix: &str) -> Self {
        Labels {
            prefix: prefix.to_string(),
        }
    }
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
    pub(crate) fn gateway(&self) -> String {
        self.key("gateway")
    }
    pub(crate) fn app(&self) -> String {
        self.key("app")
    }
    pub(crate) fn process(&self) -> String {
        self.key("process")
    }
    pub(crate) fn release(&self) -> String {
        self.key("release")
    }
    pub(crate) fn instance(&self) -> String {
        self.key("instance")
    }
    /// Which rollout created the container: every deploy starts fresh containers, so a
    /// redeploy of the same release (a restart, a scale) replaces the running ones.
    pub(crate) fn deploy(&self) -> String {
        self.key("deploy")
    }
    /// Set on one-off processes: `attached` or `detached`.
    pub(crate) fn oneoff(&self) -> String {
        self.key("oneoff")
    }
}

/// A container of this namespace, as listed.
#[derive(Debug, Clone)]
pub(crate) struct Managed {
    pub id: String,
    pub app: String,
    pub process: String,
    pub instance: u32,
    pub release: u32,
    /// Docker's state: `running`, `restarting`, `exited`, `created`, …
    pub state: String,
    pub created: i64,
    pub host_port: Option<u16>,
    /// For a one-off process: whether a client is attached to it.
    pub oneoff: Option<OneOff>,
}

/// How a one-off process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OneOff {
    /// A client streams it; nobody needs it once that session is gone.
    Attached,
    /// It runs on its own until it exits.
    Detached,
}

impl Managed {
    /// `web.1`, …
    pub(crate) fn label(&self) -> String {
        format!("{}.{}", self.process, self.instance)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// Docker access scoped to one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub docker: Docker,
    pub labels: Labels,
    pub namespace: String,
    /// The registry release images are pulled from when the engine lacks them.
    pub registry: Option<Arc<dyn ImageRegistry>>,
    /// Release image references the engine has under another name (pulled from, or
    /// pushed to, the registry's endpoint): reference → local reference.
    pub pulled: Arc<Mutex<HashMap<String, String>>>,
}

impl Engine {
    /// Docker access for the containers labelled `<labels>.gateway=<namespace>`.
    pub(crate) fn new(
        docker: Docker,
        labels: Labels,
        namespace: String,
        registry: Option<Arc<dyn ImageRegistry>>,
    ) -> Self {
        Engine {
            docker,
            labels,
            namespace,
            registry,
            pulled: Arc::default(),
        }
    }

    /// The label filters that select this namespace (and optionally one app / release).
    pub(crate) fn filters(
        &self,
        app: Option<&str>,
        release: Option<u32>,
    ) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{}={}", self.labels.gateway(), self.namespace)];
        if let Some(app) = app {
            labels.push(format!("{}={app}", self.labels.app()));
        }
        if let Some(release) = release {
            labels.push(format!("{}={release}", self.labels.release()));
        }
        HashMap::from([("label".to_string(), labels)])
    }

    /// Docker's events of the kinds `events` (`start`, `die`, …) of the containers
    /// `filters` selects (see [`Engine::filters`]), replayed from `since` (Unix
    /// seconds) when given.
    pub(crate) fn container_events(
        &self,
        mut filters: HashMap<String, Vec<String>>,
        events: &[&str],
        since: Option<u64>,
    ) -> Events {
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            events.iter().map(|event| event.to_string()).collect(),
        );
        let options = EventsOptions {
            since: since.map(|s| s.to_string()),
            until: None,
            filters: Some(filters),
        };
        self.docker.events(Some(options)).boxed()
    }

    /// Lists the containers of this namespace (all states).
    pub(crate) async fn list(
        &self,
        app: Option<&str>,
        release: Option<u32>,
    ) -> Result<Vec<Managed>, DeployerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.filters(app, release)),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DeployerError::docker("listing containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| self.managed(c))
            .collect())
    }

    fn managed(&self, c: ContainerSummary) -> Option<Managed> {
        let labels = c.labels.unwrap_or_default();
        if labels.get(&self.labels.gateway()) != Some(&self.namespace) {
            return None;
        }
        let host_port = c.ports.unwrap_or_default().into_iter().find_map(|p| {
            (p.private_port == DEFAULT_PORT)
                .then_some(p.public_port)
                .flatten()
        });
        Some(Managed {
            id: c.id?,
            app: labels.get(&self.labels.app())?.clone(),
            process: labels.get(&self.labels.process())?.clone(),
            instance: labels.get(&self.labels.instance())?.parse().ok()?,
            release: labels.get(&self.labels.release())?.parse().ok()?,
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            created: c.created.unwrap_or(0),
            host_port,
            oneoff: match labels.get(&self.labels.oneoff()).map(String::as_str) {
                Some("attached") => Some(OneOff::Attached),
                Some(_) => Some(OneOff::Detached),
                None => None,
            },
        })
    }

    /// Creates (without starting) instance `n` of `process`. Routed processes get their
    /// port published on 127.0.0.1 with an ephemeral host port. `launcher` tells
    /// whether the image keeps its ENTRYPOINT (see [`command_override`]).
    pub(crate) async fn create(
        &self,
        spec: &DeploySpec,
        process: &ProcessSpec,
        n: u32,
        deploy_id: &str,
        launcher: bool,
    ) -> Result<String, DeployerError> {
        let app = spec.app.as_str();
        let instance = format!("{}.{n}", process.name);
        let name = format!(
            "{}-{app}-{}-{n}-v{}-{}",
            self.namespace,
            sanitize(&process.name),
            spec.release,
            short_id()
        );
        let env = environment(&spec.config, app, &process.name, spec.release, &instance);
        let (entrypoint, cmd) = command_override(process.command.as_deref(), launcher);

        let labels = HashMap::from([
            (self.labels.gateway(), self.namespace.clone()),
            (self.labels.app(), app.to_string()),
            (self.labels.process(), process.name.clone()),
            (self.labels.release(), spec.release.to_string()),
            (self.labels.instance(), n.to_string()),
            (self.labels.deploy(), deploy_id.to_string()),
        ]);

        let published = process.name == ROUTED_PROCESS;
        let host_config = HostConfig {
            port_bindings: published.then(|| {
                HashMap::from([(
                    port_key(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..base_host_config(process.size)
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(env),
            entrypoint,
            cmd,
            labels: Some(labels),
            exposed_ports: Some(vec![port_key()]),
            host_config: Some(host_config),
            ..Default::default()
        };
        self.create_container(name, body, &spec.image, &instance)
            .await
    }

    /// Creates (without starting) the one-off process `run.<n>`. An attached one keeps
    /// its stdin open until the client's input ends; a detached one is removed by the
    /// engine when it exits.
    pub(crate) async fn create_oneoff(
        &self,
        spec: &OneOffSpec,
        n: u32,
        attached: bool,
        launcher: bool,
    ) -> Result<String, DeployerError> {
        let app = spec.app.as_str();
        let instance = format!("{ONEOFF_PROCESS}.{n}");
        let name = format!(
            "{}-{app}-{ONEOFF_PROCESS}-{n}-v{}-{}",
            self.namespace,
            spec.release,
            short_id()
        );
        let env = environment(&spec.config, app, ONEOFF_PROCESS, spec.release, &instance);
        let (entrypoint, cmd) = command_override(Some(&spec.command), launcher);
        let labels = HashMap::from([
            (self.labels.gateway(), self.namespace.clone()),
            (self.labels.app(), app.to_string()),
            (self.labels.process(), ONEOFF_PROCESS.to_string()),
            (self.labels.release(), spec.release.to_string()),
            (self.labels.instance(), n.to_string()),
            (
                self.labels.oneoff(),
                if attached { "attached" } else { "detached" }.to_string(),
            ),
        ]);
        let host_config = HostConfig {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            auto_remove: Some(!attached),
            ..base_host_config(spec.size)
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(env),
            entrypoint,
            cmd,
            labels: Some(labels),
            tty: Some(spec.tty),
            open_stdin: Some(attached),
            stdin_once: Some(attached),
            attach_stdin: Some(attached),
            attach_stdout: Some(attached),
            attach_stderr: Some(attached),
            host_config: Some(host_config),
            ..Default::default()
        };
        self.create_container(name, body, &spec.image, &instance)
            .await
    }

    /// Creates a container of `image` (the body's image is set here): under the name
    /// the engine has it by, pulling it from the registry first when it has it under
    /// none.
    async fn create_container(
        &self,
        name: String,
        mut body: ContainerCreateBody,
        image: &str,
        instance: &str,
    ) -> Result<String, DeployerError> {
        let options = CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        body.image = Some(self.local_image(image));
        match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(created) => return Ok(created.id),
            Err(err) if docker_status(&err) == Some(404) => {
                debug!(
                    image,
                    instance, "the image is not on the engine; resolving it"
                );
            }
            Err(err) => return Err(DeployerError::docker(format!("creating {instance}"), err)),
        }
        lock(&self.pulled).remove(image);
        let (local, _) = self.resolve_image(image, None).await?;
        body.image = Some(local);
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(err) if docker_status(&err) == Some(404) => Err(DeployerError::ImageNotFound {
                image: image.to_string(),
            }),
            Err(err) => Err(DeployerError::docker(format!("creating {instance}"), err)),
        }
    }

    /// Whether the image carries the label [`LAUNCHER_LABEL`]`=true`. An image that
    /// cannot be found or pulled counts as a plain one (creating its containers says
    /// why).
    pub(crate) async fn launcher(&self, image: &str) -> bool {
        match self.prepare_image(image, None).await {
            Ok(launcher) => launcher,
            Err(err) => {
                debug!(image, error = %err, "could not inspect the image");
                false
            }
        }
    }

    /// Makes sure the engine has `image` (pulling it from the registry when it does
    /// not, with a line on `progress`) and says whether it carries the label
    /// [`LAUNCHER_LABEL`]`=true`.
    pub(crate) async fn prepare_image(
        &self,
        image: &str,
        progress: Option<&Progress>,
    ) -> Result<bool, DeployerError> {
        let (_, info) = self.resolve_image(image, progress).await?;
        Ok(info
            .config
            .and_then(|c| c.labels)
            .and_then(|labels| labels.get(LAUNCHER_LABEL).cloned())
            .is_some_and(|v| v == "true"))
    }

    /// The name the engine has `image` under, as far as known.
    fn local_image(&self, image: &str) -> String {
        lock(&self.pulled)
            .get(image)
            .cloned()
            .unwrap_or_else(|| image.to_string())
    }

    /// The local reference of `image` and its inspection: the image itself; else, when
    /// it names the registry, the same reference at the registry's endpoint, pulled
    /// with the registry's login when the engine does not have it yet.
    async fn resolve_image(
        &self,
        image: &str,
        progress: Option<&Progress>,
    ) -> Result<(String, ImageInspect), DeployerError> {
        let local = self.local_image(image);
        if let Some(info) = self.inspect_image(&local).await? {
            return Ok((local, info));
        }
        lock(&self.pulled).remove(image);
        let Some(registry) = self.registry.as_deref() else {
            return Err(DeployerError::ImageGone {
                image: image.to_string(),
                registry: None,
            });
        };
        let Some(reference) = pull_reference(registry, image) else {
            return Err(DeployerError::ImageGone {
                image: image.to_string(),
                registry: None,
            });
        };
        if reference != image
            && let Some(info) = self.inspect_image(&reference).await?
        {
            lock(&self.pulled).insert(image.to_string(), reference.clone());
            return Ok((reference, info));
        }
        let shown = shown_registry(registry);
        if let Some(progress) = progress {
            progress.detail(format!("Pulling {image} from {shown} (not on this engine)"));
        }
        self.pull(registry, image, &reference).await?;
        let Some(info) = self.inspect_image(&reference).await? else {
            return Err(DeployerError::ImageGone {
                image: image.to_string(),
                registry: Some(shown),
            });
        };
        if let Some(progress) = progress {
            progress.detail(format!("Pulled {reference}"));
        }
        if reference != image {
            lock(&self.pulled).insert(image.to_string(), reference.clone());
        }
        Ok((reference, info))
    }

    /// The image's inspection, `None` when the engine does not have it.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInspect>, DeployerError> {
        match self.docker.inspect_image(reference).await {
            Ok(info) => Ok(Some(info)),
            Err(err) if docker_status(&err) == Some(404) => Ok(None),
            Err(err) => Err(DeployerError::docker(
                format!("inspecting the image {reference}"),
                err,
            )),
        }
    }

    /// Pulls `reference` (the release's `image` at the registry's endpoint) with the
    /// registry's login; credentials the registry refuses are renewed once (an expired
    /// ECR token).
    async fn pull(
        &self,
        registry: &dyn ImageRegistry,
        image: &str,
        reference: &str,
    ) -> Result<(), DeployerError> {
        let failed = |reason: String| DeployerError::Pull {
            image: image.to_string(),
            registry: shown_registry(registry),
            reason,
        };
        let mut renew = false;
        loop {
            let login = registry
                .login(renew)
                .await
                .map_err(|e| failed(one_line(&e)))?;
            let anonymous = login.is_none();
            match self
                .engine_pull(reference, login, registry.endpoint())
                .await
            {
                Ok(()) => return Ok(()),
                Err(message) => match classify_pull_error(&message) {
                    PullError::Gone => {
                        return Err(DeployerError::ImageGone {
                            image: image.to_string(),
                            registry: Some(shown_registry(registry)),
                        });
                    }
                    PullError::Unauthorized if !renew && !anonymous => renew = true,
                    PullError::Unauthorized => {
                        debug!(image, %message, "the registry refused the pull");
                        return Err(failed(if anonymous {
                            "unauthorized: the registry wants credentials".into()
                        } else {
                            "unauthorized: the registry refused the credentials".into()
                        }));
                    }
                    PullError::Other(reason) => return Err(failed(reason)),
                },
            }
        }
    }

    /// `POST /images/create?fromImage=…`: pulls and waits for the end of the stream.
    async fn engine_pull(
        &self,
        reference: &str,
        login: Option<RegistryLogin>,
        server: &str,
    ) -> Result<(), String> {
        let (repo, tag) = split_reference(reference);
        let options = CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let credentials = login.map(|login| DockerCredentials {
            username: Some(login.username),
            password: Some(login.password),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        while let Some(message) = stream.next().await {
            match message {
                Ok(info) => {
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        return Err(error);
                    }
                }
                Err(err) => return Err(docker_message(&err)),
            }
        }
        Ok(())
    }

    /// The CPU shares and memory limit a container was created with.
    pub(crate) async fn size_of(&self, id: &str) -> Result<ProcessSize, DeployerError> {
        let info = self
            .inspect(id)
            .await
            .map_err(|e| DeployerError::docker("inspecting a container", e))?;
        let host = info.host_config.unwrap_or_default();
        Ok(ProcessSize {
            cpu_shares: u32::try_from(host.cpu_shares.unwrap_or(0)).unwrap_or(0),
            memory_bytes: u64::try_from(host.memory.unwrap_or(0)).unwrap_or(0),
        })
    }

    /// Starts a container; a refusal of the engine (a missing executable, …) is a
    /// [`DeployerError::StartFailed`].
    pub(crate) async fn start(&self, id: &str, instance: &str) -> Result<(), DeployerError> {
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if matches!(docker_status(&err), Some(400 | 500)) => {
                Err(DeployerError::StartFailed {
                    instance: instance.to_string(),
                    message: docker_message(&err),
                })
            }
            Err(err) => Err(DeployerError::docker(format!("starting {instance}"), err)),
        }
    }

    pub(crate) async fn inspect(
        &self,
        id: &str,
    ) -> Result<ContainerInspectResponse, bollard::errors::Error> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
    }

    /// Kills and removes a container at once; a container already gone is fine.
    pub(crate) async fn remove_now(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(err) = self.docker.remove_container(id, Some(options)).await
            && !matches!(docker_status(&err), Some(404 | 409))
        {
            warn!(container = id, error = %err, "could not remove container");
        }
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace`) and removes it.
    pub(crate) async fn stop_and_remove(&self, id: &str, grace: Duration) {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        if let Err(err) = self.docker.stop_container(id, Some(options)).await {
            debug!(container = id, error = %err, "stopping container failed; removing it anyway");
        }
        self.remove_now(id).await;
    }

    /// The last `lines` lines a container wrote (stdout and stderr).
    pub(crate) async fn last_logs(&self, id: &str, lines: usize) -> Vec<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(options));
        let mut bytes = Vec::new();
        let collect = async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(output) => bytes.extend_from_slice(output.as_ref()),
                    Err(err) => {
                        debug!(container = id, error = %err, "reading logs failed");
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .collect();
        all[all.len().saturating_sub(lines)..].to_vec()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The registry as messages name it: `127.0.0.1:5000`, or `localhost:5000 (via
/// 127.0.0.1:5000)` when images are pulled from another endpoint.
fn shown_registry(registry: &dyn ImageRegistry) -> String {
    if registry.name() == registry.endpoint() {
        registry.name().to_string()
    } else {
        format!("{} (via {})", registry.name(), registry.endpoint())
    }
}

/// Why a pull failed.
#[derive(Debug, PartialEq, Eq)]
enum PullError {
    /// The registry does not have the image (or its repository).
    Gone,
    /// The registry refused the credentials (or wants some).
    Unauthorized,
    /// Anything else, as one line.
    Other(String),
}

/// Sorts the engine's message for a failed pull.
fn classify_pull_error(message: &str) -> PullError {
    let lower = message.to_ascii_lowercase();
    if [
        "manifest unknown",
        "name unknown",
        "not found",
        "does not exist",
    ]
    .iter()
    .any(|m| lower.contains(m))
    {
        return PullError::Gone;
    }
    if refused_credentials(message) {
        return PullError::Unauthorized;
    }
    PullError::Other(unreachable_reason(message).unwrap_or_else(|| one_line(message)))
}

/// Joins a multi-line message into one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The environment of a process: the release's config plus what Empire sets.
fn environment(
    config: &BTreeMap<String, String>,
    app: &str,
    process: &str,
    release: u32,
    instance: &str,
) -> Vec<String> {
    let mut env = config.clone();
    env.insert("PORT".into(), DEFAULT_PORT.to_string());
    env.insert("EMPIRE_APPNAME".into(), app.to_string());
    env.insert("EMPIRE_PROCESS".into(), process.to_string());
    env.insert("EMPIRE_RELEASE".into(), format!("v{release}"));
    env.insert("DYNO".into(), instance.to_string());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The ENTRYPOINT and CMD overrides of a container that runs `command`.
///
/// A command runs through `/bin/sh -c` so `$PORT` expands as on Heroku. An image
/// labelled [`LAUNCHER_LABEL`]`=true` (a buildpack image, whose ENTRYPOINT sets up the
/// slug's environment and then runs its arguments through a shell) keeps its
/// ENTRYPOINT and gets the command as its only argument. Without a command the image's
/// own ENTRYPOINT and CMD run.
pub(crate) fn command_override(
    command: Option<&str>,
    launcher: bool,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match command.map(str::trim) {
        Some(command) if !command.is_empty() => {
            let cmd = Some(vec![command.to_string()]);
            if launcher {
                (None, cmd)
            } else {
                (Some(vec!["/bin/sh".to_string(), "-c".to_string()]), cmd)
            }
        }
        _ => (None, None),
    }
}

/// The host settings every container gets: its size, bounded logs and an init process.
fn base_host_config(size: ProcessSize) -> HostConfig {
    let memory = i64::try_from(size.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        cpu_shares: Some(i64::from(size.cpu_shares)),
        memory: Some(memory),
        // The same as the memory: no swap on top of it.
        memory_swap: Some(memory),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "3".to_string()),
            ])),
        }),
        init: Some(true),
        ..Default::default()
    }
}

/// The published host port of an inspected container.
pub(crate) fn inspected_host_port(info: &ContainerInspectResponse) -> Option<u16> {
    info.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&port_key())?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// Keeps characters Docker allows in container names.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Six random hex characters.
pub(crate) fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("web"), "web");
        assert_eq!(sanitize("my worker:2"), "my-worker-2");
        assert_eq!(short_id().len(), 6);
    }

    #[test]
    fn overrides_commands_unless_the_image_launches_them() {
        let shell = Some(vec!["/bin/sh".to_string(), "-c".to_string()]);
        let cmd = Some(vec!["echo $PORT".to_string()]);
        assert_eq!(
            command_override(Some(" echo $PORT "), false),
            (shell, cmd.clone())
        );
        assert_eq!(command_override(Some("echo $PORT"), true), (None, cmd));
        assert_eq!(command_override(None, false), (None, None));
        assert_eq!(command_override(Some("  "), true), (None, None));
    }

    #[test]
    fn classifies_pull_errors() {
        assert_eq!(
            classify_pull_error(
                "manifest for 127.0.0.1:5000/a@sha256:00 not found: manifest unknown: manifest unknown"
            ),
            PullError::Gone
        );
        assert_eq!(
            classify_pull_error(
                "Head \"http://127.0.0.1:5001/v2/a/manifests/v1\": no basic auth credentials"
            ),
            PullError::Unauthorized
        );
        assert_eq!(
            classify_pull_error(
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused"
            ),
            PullError::Other("cannot reach the registry (connection refused)".into())
        );
        assert_eq!(
            classify_pull_error("something\nelse"),
            PullError::Other("something else".into())
        );
    }

    #[test]
    fn says_which_image_is_gone_in_one_line() {
        let gone = DeployerError::ImageGone {
            image: "empire/app:v2".into(),
            registry: None,
        };
        assert_eq!(
            gone.to_string(),
            "image empire/app:v2 is not on the docker engine and no registry holds it"
        );
        let gone = DeployerError::ImageGone {
            image: "localhost:5000/app@sha256:00".into(),
            registry: Some("localhost:5000 (via 127.0.0.1:5000)".into()),
        };
        assert_eq!(
            gone.to_string(),
            "image localhost:5000/app@sha256:00 is not on the docker engine and the \
             registry localhost:5000 (via 127.0.0.1:5000) does not hold it"
        );
    }

    #[test]
    fn sizes_containers() {
        let host = base_host_config(ProcessSize::X2);
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.memory, Some(1024 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.init, Some(true));
    }
}
