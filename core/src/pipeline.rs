//! The deploy pipeline: one path for every deploy, whatever started it (a git push, an
//! API call, a webhook, a config change, a rollback).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::AppName;
use crate::build::{BuildRequest, BuiltImage, ImageBuilder};
use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::formation::{ProcessFormation, ProcessSize};
use crate::procfile;
use crate::progress::{BatchedLog, Progress};
use crate::release::{ConfigVars, NewRelease, ProcessTypes, Release, ReleaseStatus};
use crate::scheduler::{DeploySpec, OneOffSpec, ProcessSpec, RunIo, RunOutcome, Scheduler};
use crate::store::{ReleaseBuild, Store};

/// Who delivered a pushed commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOrigin {
    /// A `git push` to the gateway.
    Git,
    /// A hosted git server's push webhook (GitHub, GitLab, Gitea).
    Webhook,
}

/// What is being deployed.
#[derive(Debug, Clone)]
pub enum DeploySource {
    /// A pushed commit, read from the app's repository (and a push's quarantine).
    Push {
        /// The app's bare repository.
        repo_path: PathBuf,
        /// Extra object directories holding the pushed objects (git's quarantine).
        object_dirs: Vec<PathBuf>,
        /// The pushed commit.
        commit: String,
        /// The ref it was pushed to (`refs/heads/main`).
        reference: String,
        /// Who delivered the commit.
        origin: PushOrigin,
    },
    /// A prebuilt image.
    Image {
        /// The image reference.
        image: String,
    },
    /// A new release of an earlier one's image, process types and config.
    Rollback {
        /// The release to go back to.
        version: u32,
    },
    /// A new release of the current image with changed config; when it does not become
    /// healthy, no release is recorded.
    Config {
        /// The complete new config.
        config: ConfigVars,
        /// The release description (`Set FOO, BAR config vars`).
        description: String,
    },
}

/// One deploy to run.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The app to deploy.
    pub app: AppName,
    /// Who asked for it.
    pub user: String,
    /// What to deploy.
    pub source: DeploySource,
    /// Build without cache.
    pub no_cache: bool,
    /// A deploy message, which becomes the release description.
    pub message: Option<String>,
    /// The owner of a turn already reserved for this deploy ([`Pipeline::reserve`]);
    /// `None` waits for a turn.
    pub turn: Option<String>,
}

/// What a successful deploy produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOutcome {
    /// The release that now serves.
    pub release: u32,
    /// Where the app answers, when the scheduler routes it.
    pub url: Option<String>,
}

/// Runs deploys. The caller owns `cancel`: cancelling it before the rollout starts
/// (the pusher went away) abandons the deploy; once the rollout started it completes or
/// rolls back. The pipeline writes every step to `progress`; the final error, if any,
/// is returned and printed by the caller.
#[async_trait]
pub trait Pipeline: Send + Sync {
    /// Waits for the app's turn (printing who is deploying while it waits), up to the
    /// lock timeout. The deploy that names the turn's owner runs without waiting again.
    async fn reserve(
        &self,
        app: &AppName,
        user: &str,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<DeployTurn>;

    /// Runs one deploy to its end.
    async fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Result<DeployOutcome>;
}

/// How long a deploy lease lasts unless its heartbeat renews it.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Settings of the [`DeployPipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// This gateway's id; deploy lease owners are `<gateway_id>/<deploy id>`.
    pub gateway_id: String,
    /// How long a push waits for another deploy of the same app before giving up.
    pub lock_timeout: Duration,
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// The app's URL, with `{app}` replaced by its name (`http://{app}.localhost:8000/`).
    pub url_template: Option<String>,
    /// Refuse deploys of code or images without a deploy message (`--require-message`);
    /// rollbacks and config changes describe themselves.
    pub require_message: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            gateway_id: Uuid::new_v4().to_string(),
            lock_timeout: Duration::from_secs(15 * 60),
            lease_ttl: LEASE_TTL,
            url_template: None,
            require_message: false,
        }
    }
}

/// The one [`Pipeline`]: lease → release → build → rollout → current, each transition
/// persisted in the store.
pub struct DeployPipeline {
    store: Arc<dyn Store>,
    builder: Arc<dyn ImageBuilder>,
    scheduler: Arc<dyn Scheduler>,
    config: PipelineConfig,
    queues: Mutex<HashMap<AppName, AppQueue>>,
    reservations: Arc<Mutex<HashMap<String, AppName>>>,
}

/// The local, first-come first-served queue of deploys of one app, and who is deploying.
#[derive(Clone)]
struct AppQueue {
    turn: Arc<tokio::sync::Mutex<()>>,
    deploying_user: Arc<Mutex<Option<String>>>,
}

impl DeployPipeline {
    /// Wires a pipeline from its parts.
    pub fn new(
        store: Arc<dyn Store>,
        builder: Arc<dyn ImageBuilder>,
        scheduler: Arc<dyn Scheduler>,
        config: PipelineConfig,
    ) -> Self {
        DeployPipeline {
            store,
            builder,
            scheduler,
            config,
            queues: Mutex::new(HashMap::new()),
            reservations: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// After a restart: marks the deploys this gateway (or a dead one) left in progress as
    /// failed and removes their processes, frees the leases a previous run of this gateway
    /// left behind, then has the scheduler adopt or restart every app's current release.
    pub async fn recover(&self) -> Result<()> {
        for release in self.store.releases_in_progress().await? {
            if !self.free_stale_lease(&release.app).await? {
                continue; // another live gateway is deploying it
            }
            tracing::warn!(app = %release.app, version = release.version, "failing a deploy interrupted by a restart");
            self.store
                .set_release_status(
                    &release.app,
                    release.version,
                    ReleaseStatus::Failed,
                    Some("interrupted by a gateway restart"),
                )
                .await?;
            self.scheduler
                .remove_release(&release.app, release.version)
                .await?;
        }
        let mut current = Vec::new();
        for app in self.store.apps().await? {
            self.free_stale_lease(&app.name).await?;
            if let Some(version) = app.current_release {
                let release = self.store.release(&app.name, version).await?;
                let formation = self.store.formation(&app.name).await?;
                current.push(deploy_spec(&release, &formation)?);
            }
        }
        self.scheduler.restore(&current).await
    }

    /// Frees an app's deploy lease unless a live deploy holds it: a lease is dead when it
    /// lapsed or when a previous run of this gateway took it. Returns whether it was free.
    async fn free_stale_lease(&self, app: &AppName) -> Result<bool> {
        let ours = format!("{}/", self.config.gateway_id);
        let owner = format!("{ours}recover");
        match self
            .store
            .try_acquire_lease(app, &owner, "recovery", self.config.lease_ttl)
            .await?
        {
            Some(holder) if holder.owner.starts_with(&ours) => {
                self.store.release_lease(app, &holder.owner).await?;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.store.release_lease(app, &owner).await?;
                Ok(true)
            }
        }
    }

    fn queue(&self, app: &AppName) -> AppQueue {
        let mut queues = self.queues.lock().expect("queue map poisoned");
        queues
            .entry(app.clone())
            .or_insert_with(|| AppQueue {
                turn: Arc::new(tokio::sync::Mutex::new(())),
                deploying_user: Arc::new(Mutex::new(None)),
            })
            .clone()
    }

    fn url(&self, app: &AppName) -> Option<String> {
        self.config
            .url_template
            .as_ref()
            .map(|t| t.replace("{app}", app.as_str()))
    }

    /// Waits for this app's turn on this gateway, then for its lease in the store.
    async fn wait_for_turn(
        &self,
        app: &AppName,
        user: &str,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<DeployTurn> {
        let queue = self.queue(app);
        let owner = format!("{}/{}", self.config.gateway_id, Uuid::new_v4());
        let deadline = Instant::now() + self.config.lock_timeout;
        let waiting = |holder: &str| {
            progress.step(format!(
                "Waiting for the deploy of {app} (started by {holder}) to finish"
            ));
        };
        let mut announced = false;
        let turn = match queue.turn.clone().try_lock_owned() {
            Ok(turn) => turn,
            Err(_) => {
                let holder = queue
                    .deploying_user
                    .lock()
                    .expect("poisoned")
                    .clone()
                    .unwrap_or_else(|| "another user".into());
                waiting(&holder);
                announced = true;
                tokio::select! {
                    turn = queue.turn.clone().lock_owned() => turn,
                    _ = tokio::time::sleep_until(deadline.into()) => return Err(self.gave_up(app, &holder)),
                    _ = cancel.cancelled() => return Err(Error::Cancelled("the pusher disconnected while waiting".into())),
                }
            }
        };
        while let Some(holder) = self
            .store
            .try_acquire_lease(app, &owner, user, self.config.lease_ttl)
            .await?
        {
            if !announced {
                waiting(&holder.user);
                announced = true;
            }
            if Instant::now() >= deadline {
                return Err(self.gave_up(app, &holder.user));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = cancel.cancelled() => return Err(Error::Cancelled("the pusher disconnected while waiting".into())),
            }
        }
        *queue.deploying_user.lock().expect("poisoned") = Some(user.to_string());
        self.reservations
            .lock()
            .expect("poisoned")
            .insert(owner.clone(), app.clone());
        let heartbeat = CancellationToken::new();
        tokio::spawn(heartbeat_loop(
            self.store.clone(),
            app.clone(),
            owner.clone(),
            self.config.lease_ttl,
            heartbeat.clone(),
        ));
        Ok(DeployTurn {
            app: app.clone(),
            owner,
            store: Some(self.store.clone()),
            heartbeat,
            reservations: self.reservations.clone(),
            deploying_user: queue.deploying_user,
            turn: Some(turn),
        })
    }

    fn gave_up(&self, app: &AppName, user: &str) -> Error {
        Error::Conflict(format!(
            "gave up after waiting {} for the deploy of {app} (started by {user}); try again later",
            crate::progress::format_duration(self.config.lock_timeout)
        ))
    }

    /// Runs a deploy once the lease is held.
    async fn run(
        &self,
        request: &DeployRequest,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<DeployOutcome> {
        let app = &request.app;
        let plan = self.plan(request).await?;
        let release = self
            .store
            .create_release(
                app,
                NewRelease {
                    commit: plan.commit.clone(),
                    user: request.user.clone(),
                    description: request
                        .message
                        .clone()
                        .unwrap_or_else(|| plan.description.clone()),
                    config: plan.config.clone(),
                },
            )
            .await?;
        let version = release.version;
        let log = deploy_log(self.store.clone(), app.clone(), version);
        let progress = progress.tee(log.sink());
        // Deploy events: recorded (with their webhook deliveries) by the store, delivered
        // later by the gateway's dispatcher, so no receiver ever holds a deploy up.
        let started = Instant::now();
        let tail = Arc::new(crate::event::OutputTail::new());
        let progress = progress.tee(tail.clone());
        let deploy_event = |action: &str, message: String| {
            NewEvent::new(Some(app), request.user.clone(), action, message)
                .with_release(Some(version))
                .with("source", crate::event::source_name(&request.source))
                .with("commit", plan.commit.clone())
                .with("description", release.description.clone())
        };
        self.record_event(deploy_event(
            crate::event::DEPLOY_STARTED,
            format!("deploying v{version}: {}", release.description),
        ))
        .await;
        let result = self
            .build_and_roll_out(request, &plan, version, &progress, cancel)
            .await;
        let timings = serde_json::json!({ "duration_ms": started.elapsed().as_millis() as u64 });
        match &result {
            Ok(()) => {
                self.record_event(
                    deploy_event(
                        crate::event::DEPLOY_SUCCEEDED,
                        format!("deployed v{version}: {}", release.description),
                    )
                    .with("timings", timings.clone()),
                )
                .await;
            }
            Err(err) => {
                self.record_event(
                    deploy_event(
                        crate::event::DEPLOY_FAILED,
                        format!("deploy of v{version} failed: {err}"),
                    )
                    .with("error", err.to_string())
                    .with("step", tail.step())
                    .with("output", tail.lines())
                    .with("timings", timings.clone()),
                )
                .await;
            }
        }
        let result = match result {
            Ok(()) => {
                let recorded = self
                    .store
                    .set_release_status(app, version, ReleaseStatus::Succeeded, None)
                    .await;
                if recorded.is_ok() {
                    self.prune_images(app).await;
                }
                if recorded.is_ok() {
                    self.record_event(
                        deploy_event(
                            crate::event::RELEASE_CREATED,
                            format!("v{version}: {}", release.description),
                        )
                        .with("timings", timings),
                    )
                    .await;
                }
                recorded.map(|()| {
                    let (url, via) = match self.scheduler.reachable(app) {
                        Some(r) => (Some(r.url), r.via),
                        None => (self.url(app), "the router".to_string()),
                    };
                    let step = progress.step(format!("Released v{version}"));
                    if let Some(url) = &url {
                        progress.detail(format!("{url} deployed to {via}"));
                    }
                    drop(step);
                    DeployOutcome {
                        release: version,
                        url,
                    }
                })
            }
            Err(err) => {
                self.record_failure(app, version, plan.keep_failed, &err)
                    .await;
                progress.detail(if plan.keep_failed {
                    format!("v{version} failed; the running release was not changed")
                } else {
                    "nothing changed; the running release keeps serving".to_string()
                });
                Err(err)
            }
        };
        log.finish().await;
        result
    }

    /// Removes the app's local images beyond the newest [`KEEP_IMAGES`] releases that
    /// served (the current one always among them). A failure is logged, never fatal.
    async fn prune_images(&self, app: &AppName) {
        let keep: Vec<u32> = match self.store.releases(app).await {
            Ok(releases) => releases
                .iter()
                .filter(|r| r.status == ReleaseStatus::Succeeded)
                .take(KEEP_IMAGES)
                .map(|r| r.version)
                .collect(),
            Err(err) => {
                tracing::warn!(%app, %err, "listing releases to prune images");
                return;
            }
        };
        if let Err(err) = self.builder.prune(app, &keep).await {
            tracing::warn!(%app, %err, "pruning old images");
        }
    }

    /// Records an event; a failure is logged, never fatal to the deploy.
    async fn record_event(&self, event: NewEvent) {
        if let Err(err) = self.store.record_event(event.clone()).await {
            tracing::warn!(app = ?event.app, action = event.action, %err, "recording an event");
        }
    }

    /// Marks a release failed, or deletes it when the deploy records no failed release
    /// (a config change that did not become healthy).
    async fn record_failure(&self, app: &AppName, version: u32, keep: bool, err: &Error) {
        let reason = err.to_string();
        let recorded = self
            .store
            .set_release_status(app, version, ReleaseStatus::Failed, Some(&reason))
            .await;
        let recorded = match recorded {
            Ok(()) if !keep => self.store.delete_release(app, version).await,
            other => other,
        };
        if let Err(store_err) = recorded {
            tracing::error!(%app, version, %store_err, "recording a failed release");
        }
    }

    /// What a deploy will release: its config, description, and for deploys that reuse
    /// an existing release's image, that release.
    async fn plan(&self, request: &DeployRequest) -> Result<Plan> {
        let app = &request.app;
        let current = match self.store.app(app).await?.current_release {
            Some(version) => Some(self.store.release(app, version).await?),
            None => None,
        };
        let app_config = self.store.app_config(app).await?;
        Ok(match &request.source {
            DeploySource::Push { commit, .. } => Plan {
                commit: Some(commit.clone()),
                description: format!("Deploy {}", short(commit)),
                config: app_config,
                base: None,
                keep_failed: true,
            },
            DeploySource::Image { image } => Plan {
                commit: None,
                description: format!("Deploy {image}"),
                config: app_config,
                base: None,
                keep_failed: true,
            },
            DeploySource::Rollback { version } => {
                let target = self.store.release(app, *version).await?;
                if target.status != ReleaseStatus::Succeeded {
                    return Err(Error::invalid(
                        "release",
                        format!(
                            "v{version} of {app} {}; only a release that served can be rolled back to",
                            target.status
                        ),
                    ));
                }
                Plan {
                    commit: target.commit.clone(),
                    description: format!("Rollback to v{version}"),
                    config: target.config.clone(),
                    base: Some(target),
                    keep_failed: true,
                }
            }
            DeploySource::Config {
                config,
                description,
            } => {
                let base = current.ok_or_else(|| {
                    Error::Conflict(format!("{app} has no release to apply the config to"))
                })?;
                Plan {
                    commit: base.commit.clone(),
                    description: description.clone(),
                    config: config.clone(),
                    base: Some(base),
                    keep_failed: false,
                }
            }
        })
    }

    async fn build_and_roll_out(
        &self,
        request: &DeployRequest,
        plan: &Plan,
        version: u32,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let app = &request.app;
        let cancelled =
            || Error::Cancelled("the pusher disconnected before the rollout started".into());
        self.store
            .set_release_status(app, version, ReleaseStatus::Building, None)
            .await?;
        let built = match (&request.source, &plan.base) {
            (_, Some(base)) => BuiltImage {
                image: base.image.clone().ok_or_else(|| {
                    Error::Conflict(format!("release v{} has no image", base.version))
                })?,
                image_id: base.image_id.clone().unwrap_or_default(),
                procfile: base.procfile.clone(),
            },
            (
                DeploySource::Push {
                    repo_path,
                    object_dirs,
                    commit,
                    ..
                },
                None,
            ) => {
                let build = BuildRequest {
                    app: app.clone(),
                    version,
                    repo_path: repo_path.clone(),
                    object_dirs: object_dirs.clone(),
                    commit: commit.clone(),
                    config: plan.config.clone(),
                    no_cache: request.no_cache,
                };
                tokio::select! {
                    built = self.builder.build(&build, progress) => built?,
                    _ = cancel.cancelled() => return Err(cancelled()),
                }
            }
            (DeploySource::Image { image }, None) => BuiltImage {
                image: image.clone(),
                image_id: image.clone(),
                procfile: None,
            },
            (DeploySource::Rollback { .. } | DeploySource::Config { .. }, None) => {
                unreachable!("plan() gives these deploys a base release")
            }
        };
        let process_types = match &plan.base {
            Some(base) => base.process_types.clone(),
            None => process_types(built.procfile.as_deref())?,
        };
        self.store
            .set_release_build(
                app,
                version,
                &ReleaseBuild {
                    image: built.image.clone(),
                    image_id: built.image_id.clone(),
                    procfile: built.procfile.clone(),
                    process_types,
                },
            )
            .await?;
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        self.store
            .set_release_status(app, version, ReleaseStatus::Deploying, None)
            .await?;
        let release = self.store.release(app, version).await?;
        let formation = self.store.formation(app).await?;
        let rolled_out = async {
            self.release_phase(&release, &formation, progress).await?;
            self.scheduler
                .deploy(&deploy_spec(&release, &formation)?, progress)
                .await
        }
        .await;
        match (&request.source, release.image.as_deref()) {
            (DeploySource::Rollback { version }, Some(image)) => {
                rolled_out.map_err(|err| gone_image(err, *version, image))
            }
            _ => rolled_out,
        }
    }

    /// Heroku's release phase: the Procfile's `release` process runs once in the new
    /// image and config before the rollout; if it fails, the deploy fails.
    async fn release_phase(
        &self,
        release: &Release,
        formation: &[ProcessFormation],
        progress: &Progress,
    ) -> Result<()> {
        let Some(command) = release.process_types.get(RELEASE_PROCESS) else {
            return Ok(());
        };
        let step = progress.step(format!("Running release command: {command}"));
        let spec = OneOffSpec {
            app: release.app.clone(),
            release: release.version,
            image: release.image.clone().unwrap_or_default(),
            config: release.config.clone(),
            command: command.clone(),
            size: size_of(formation, RELEASE_PROCESS),
            tty: false,
        };
        let io = RunIo {
            input: Box::new(tokio::io::empty()),
            output: Box::new(ProgressWriter::new(progress.clone())),
            resize: None,
        };
        match self.scheduler.run(&spec, Some(io)).await? {
            RunOutcome::Exited(0) => {
                step.done("Release command succeeded");
                Ok(())
            }
            RunOutcome::Exited(code) => Err(Error::Deploy(format!(
                "the release command `{command}` exited with code {code}"
            ))),
            RunOutcome::Detached { .. } => Err(Error::Deploy(
                "the release command did not run attached".into(),
            )),
        }
    }
}

/// A rollback's error when the scheduler has the image of the release rolled back to
/// nowhere (it says `image <image> is not on the docker engine and …`): that release
/// served once, so its image was pruned; the error names the release.
fn gone_image(err: Error, version: u32, image: &str) -> Error {
    match err {
        Error::Deploy(message) => {
            match message.strip_prefix(&format!("image {image} is not on the docker engine")) {
                Some(rest) => Error::Deploy(format!(
                    "release v{version}'s image {image} is gone (pruned){rest}"
                )),
                None => Error::Deploy(message),
            }
        }
        other => other,
    }
}

/// How many of an app's newest successful releases keep their local image.
pub const KEEP_IMAGES: usize = 5;

/// The process type that runs once per deploy instead of as a service.
pub const RELEASE_PROCESS: &str = "release";

/// What a deploy releases, decided before its release is recorded.
struct Plan {
    commit: Option<String>,
    description: String,
    config: ConfigVars,
    /// The release whose image and process types are reused (rollback, config change).
    base: Option<Release>,
    /// Record a failure as a failed release (else no release is recorded).
    keep_failed: bool,
}

/// Turns bytes a process writes into detail lines, as complete lines arrive.
struct ProgressWriter {
    progress: Progress,
    partial: Vec<u8>,
}

impl ProgressWriter {
    fn new(progress: Progress) -> Self {
        ProgressWriter {
            progress,
            partial: Vec::new(),
        }
    }

    fn emit_complete_lines(&mut self) {
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            self.progress.detail(text.trim_end_matches(['\n', '\r']));
        }
    }
}

impl tokio::io::AsyncWrite for ProgressWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.partial.extend_from_slice(buf);
        self.emit_complete_lines();
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.emit_complete_lines();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Pipeline for DeployPipeline {
    async fn reserve(
        &self,
        app: &AppName,
        user: &str,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<DeployTurn> {
        self.wait_for_turn(app, user, progress, cancel).await
    }

    async fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Result<DeployOutcome> {
        if self.config.require_message {
            crate::event::check_message(&request)?;
        }
        let own_turn = match &request.turn {
            Some(owner) => {
                let held =
                    self.reservations.lock().expect("poisoned").get(owner) == Some(&request.app);
                if !held {
                    return Err(Error::Conflict(format!(
                        "the deploy turn of {} is no longer held; push again",
                        request.app
                    )));
                }
                None
            }
            None => Some(
                self.wait_for_turn(&request.app, &request.user, &progress, &cancel)
                    .await?,
            ),
        };
        let result = self.run(&request, &progress, &cancel).await;
        if let Some(turn) = own_turn {
            turn.finish().await;
        }
        result
    }
}

/// A deploy's place at the head of its app's queue: this gateway's turn and the app's
/// lease in the store, renewed by a heartbeat until [`DeployTurn::finish`] or drop.
///
/// gitd reserves a turn before `git receive-pack` starts, so a push that waited sees the
/// refs the previous deploy left and its ref update applies cleanly.
pub struct DeployTurn {
    app: AppName,
    owner: String,
    store: Option<Arc<dyn Store>>,
    heartbeat: CancellationToken,
    reservations: Arc<Mutex<HashMap<String, AppName>>>,
    deploying_user: Arc<Mutex<Option<String>>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl DeployTurn {
    /// A turn that holds no lease in any store, for pipelines that serialise deploys
    /// another way (and for stand-in pipelines in tests of gitd).
    pub fn unleased(app: AppName, owner: String) -> Self {
        DeployTurn {
            app,
            owner,
            store: None,
            heartbeat: CancellationToken::new(),
            reservations: Arc::new(Mutex::new(HashMap::new())),
            deploying_user: Arc::new(Mutex::new(None)),
            turn: None,
        }
    }

    /// The lease owner id; a [`DeployRequest::turn`] names it to deploy within this turn.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The app whose turn it is.
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// Gives the lease back, then lets the next deploy of the app go.
    pub async fn finish(mut self) {
        self.heartbeat.cancel();
        if let Some(store) = &self.store
            && let Err(err) = store.release_lease(&self.app, &self.owner).await
        {
            tracing::warn!(app = %self.app, %err, "releasing a deploy lease");
        }
        self.release_locally();
    }

    fn release_locally(&mut self) {
        self.heartbeat.cancel();
        self.reservations
            .lock()
            .expect("poisoned")
            .remove(&self.owner);
        if self.turn.take().is_some() {
            *self.deploying_user.lock().expect("poisoned") = None;
        }
    }
}

impl Drop for DeployTurn {
    fn drop(&mut self) {
        if self.turn.is_none() {
            return;
        }
        self.release_locally();
        // Dropped without finish(): give the lease back in the background (it would
        // lapse by itself within its TTL otherwise).
        if let (Ok(runtime), Some(store)) =
            (tokio::runtime::Handle::try_current(), self.store.clone())
        {
            let (app, owner) = (self.app.clone(), self.owner.clone());
            runtime.spawn(async move {
                let _ = store.release_lease(&app, &owner).await;
            });
        }
    }
}

/// Renews a lease every third of its TTL until `stop` is cancelled.
async fn heartbeat_loop(
    store: Arc<dyn Store>,
    app: AppName,
    owner: String,
    ttl: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
        if let Err(err) = store.renew_lease(&app, &owner, ttl).await {
            tracing::error!(%app, %err, "renewing the deploy lease");
        }
    }
}

/// The process types of a release: the Procfile's, else one `web` running the image's
/// own CMD (an empty command).
pub fn process_types(procfile: Option<&str>) -> Result<ProcessTypes> {
    match procfile {
        Some(text) => {
            let parsed =
                procfile::parse(text).map_err(|e| Error::invalid("Procfile", e.to_string()))?;
            if parsed.processes.is_empty() {
                return Err(Error::invalid("Procfile", "it defines no process types"));
            }
            Ok(parsed.processes.into_iter().collect())
        }
        None => Ok(ProcessTypes::from([("web".to_string(), String::new())])),
    }
}

/// The size of a process type in a formation (the default size when not scaled).
pub fn size_of(formation: &[ProcessFormation], process: &str) -> ProcessSize {
    formation
        .iter()
        .find(|f| f.process == process)
        .map(|f| f.size)
        .unwrap_or_default()
}

/// What the scheduler runs for a release under the app's formation: the counts and sizes
/// scaled so far, else `web` at one instance and other types at zero. The `release`
/// process runs once per deploy, never as a service.
///
/// The extended Procfile's settings (re-read from the release's raw Procfile; none
/// without one) fill each process's `cron`, `noservice`, `ports`, `environment` and
/// `healthcheck`. Its `size` is the default: a process type that was ever scaled runs
/// at the size its formation entry records (`scale` records the size given, else the
/// one it ran at), so a size set with `scale` wins. Cron and noservice processes run no
/// service: their quantity is 0 whatever the formation says.
pub fn deploy_spec(release: &Release, formation: &[ProcessFormation]) -> Result<DeploySpec> {
    let image = release
        .image
        .clone()
        .ok_or_else(|| Error::Conflict(format!("release v{} has no image", release.version)))?;
    let procfile = match release.procfile.as_deref() {
        Some(text) => procfile::parse(text).map_err(|e| {
            Error::invalid("Procfile", format!("release v{}: {e}", release.version))
        })?,
        None => procfile::Procfile::default(),
    };
    let processes = release
        .process_types
        .iter()
        .filter(|(name, _)| name.as_str() != RELEASE_PROCESS)
        .map(|(name, command)| {
            let scaled = formation.iter().find(|f| &f.process == name);
            let settings = procfile.settings_of(name);
            let mut spec = ProcessSpec {
                size: scaled.map(|f| f.size).or(settings.size).unwrap_or_default(),
                healthcheck: settings.healthcheck,
                cron: settings.cron,
                noservice: settings.noservice,
                ports: settings.ports,
                environment: settings.environment,
                ..ProcessSpec::new(
                    name.clone(),
                    (!command.is_empty()).then(|| command.clone()),
                    scaled.map_or(u32::from(name == "web"), |f| f.quantity),
                )
            };
            if !spec.is_service() {
                spec.quantity = 0;
            }
            spec
        })
        .collect();
    Ok(DeploySpec {
        app: release.app.clone(),
        release: release.version,
        image,
        config: release.config.clone(),
        processes,
    })
}

/// A commit's abbreviated form (`1a2b3c4`).
pub(crate) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// Copies progress lines into a release's deploy log in the store.
fn deploy_log(store: Arc<dyn Store>, app: AppName, version: u32) -> BatchedLog {
    BatchedLog::start(move |text| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            if let Err(err) = store.append_deploy_log(&app, version, &text).await {
                tracing::warn!(%app, version, %err, "writing the deploy log");
            }
        }
    })
}
