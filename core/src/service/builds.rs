//! Apps connected to repositories on GitHub, GitLab or Gitea, and the builds their push
//! webhooks start.
//!
//! A push to the connected branch becomes a [`Build`]: the commit is fetched from the
//! connected URL (never one from the payload) into the app's repository and deployed by
//! the same [`Pipeline`] as `git push`, its output kept as the build's log. Per app at
//! most one webhook build runs on a gateway; while it runs, a newer push replaces the one
//! waiting (which is recorded as superseded), so only the newest waiting push deploys
//! after it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Platform;
use crate::app::AppName;
use crate::error::{Error, Result};
use crate::pipeline::{DeployRequest, DeploySource, Pipeline, PushOrigin, short};
use crate::progress::{BatchedLog, Progress};
use crate::push_event::{
    Hook, HookHeaders, Provider, RepoTransport, new_deploy_key, new_secret, repo_transport,
    validate_branch,
};
use crate::store::{
    Build, BuildLogChunk, BuildStatus, NewBuild, NewConnection, RepoConnection, Store,
};
use crate::user::User;

/// How many builds a listing shows at most.
pub const BUILDS_LISTED: u32 = 50;

/// Brings a pushed commit into the app's repository and moves its branch afterwards.
/// Implemented by gitd, which knows where repositories live, with `git` itself.
#[async_trait]
pub trait SourceFetcher: Send + Sync {
    /// Fetches `commit` from the connection's URL into the app's bare repository
    /// (creating it if needed) and answers the repository's path. Fails unless the
    /// commit is there afterwards.
    async fn fetch(
        &self,
        connection: &RepoConnection,
        commit: &str,
        progress: &Progress,
    ) -> Result<PathBuf>;

    /// Points `refs/heads/<branch>` of the repository at `commit` (after it deployed).
    async fn set_branch(&self, repo: &Path, branch: &str, commit: &str) -> Result<()>;
}

/// Settings of webhook builds.
#[derive(Debug, Clone, Default)]
pub struct BuildsConfig {
    /// The gateway's public HTTP address (`https://empire.example.com`), webhook URLs
    /// are printed under; `None` leaves it to the face (the API uses the request's host).
    pub webhook_base_url: Option<String>,
    /// This gateway's id: builds it queued are its own to fail after a restart.
    pub gateway_id: Option<String>,
}

/// Runs webhook builds: one at a time per app, a newer push replacing the waiting one.
pub struct Builds {
    store: Arc<dyn Store>,
    pipeline: Arc<dyn Pipeline>,
    fetcher: Arc<dyn SourceFetcher>,
    config: BuildsConfig,
    /// Apps with a build running; the value is the build waiting after it.
    queues: Mutex<HashMap<AppName, Option<Build>>>,
    tasks: TaskTracker,
}

impl Builds {
    /// Wires the runner.
    pub fn new(
        store: Arc<dyn Store>,
        pipeline: Arc<dyn Pipeline>,
        fetcher: Arc<dyn SourceFetcher>,
        config: BuildsConfig,
    ) -> Arc<Self> {
        Arc::new(Builds {
            store,
            pipeline,
            fetcher,
            config,
            queues: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    /// The running builds, for a shutdown to wait for: close it, then wait.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// After a restart: the builds a previous run of this gateway left queued or running
    /// never finish; marks them failed (other gateways' builds are theirs).
    pub async fn recover(&self) -> Result<()> {
        for build in self.store.unfinished_builds().await? {
            if build.gateway != self.config.gateway_id {
                continue;
            }
            tracing::warn!(app = %build.app, build = build.id, "failing a build interrupted by a restart");
            self.store
                .set_build_status(
                    &build.app,
                    build.id,
                    BuildStatus::Failed,
                    None,
                    Some("interrupted by a gateway restart"),
                )
                .await?;
        }
        Ok(())
    }

    /// Queues a build: it runs now when no build of its app runs, else it waits,
    /// replacing (superseding) the build that waited.
    async fn enqueue(self: &Arc<Self>, build: Build) {
        let superseded = {
            let mut queues = self.queues.lock().expect("build queues poisoned");
            match queues.get_mut(&build.app) {
                Some(waiting) => waiting.replace(build.clone()),
                None => {
                    queues.insert(build.app.clone(), None);
                    let runner = self.clone();
                    let first = build.clone();
                    self.tasks.spawn(async move { runner.work(first).await });
                    None
                }
            }
        };
        if let Some(old) = superseded {
            let why = format!(
                "superseded by build {} ({}), pushed while build {} waited",
                build.id,
                short(&build.commit),
                old.id
            );
            let _ = self
                .store
                .append_build_log(&old.app, old.id, &format!(" !     {why}\n"))
                .await;
            if let Err(err) = self
                .store
                .set_build_status(&old.app, old.id, BuildStatus::Superseded, None, Some(&why))
                .await
            {
                tracing::warn!(app = %old.app, build = old.id, %err, "marking a build superseded");
            }
        }
    }

    /// Runs the app's builds one after the other until none waits.
    async fn work(self: Arc<Self>, mut build: Build) {
        loop {
            let runner = self.clone();
            let current = build.clone();
            // A panicking build must not leave the app's queue stuck.
            if tokio::spawn(async move { runner.run(&current).await })
                .await
                .is_err()
            {
                tracing::error!(app = %build.app, build = build.id, "a build stopped unexpectedly");
                let _ = self
                    .store
                    .set_build_status(
                        &build.app,
                        build.id,
                        BuildStatus::Failed,
                        None,
                        Some("internal error: the build stopped unexpectedly"),
                    )
                    .await;
            }
            let next = {
                let mut queues = self.queues.lock().expect("build queues poisoned");
                match queues.get_mut(&build.app).and_then(Option::take) {
                    Some(next) => next,
                    None => {
                        queues.remove(&build.app);
                        return;
                    }
                }
            };
            build = next;
        }
    }

    /// Runs one build to its end and records how it ended.
    async fn run(&self, build: &Build) {
        let app = &build.app;
        if let Err(err) = self
            .store
            .set_build_status(app, build.id, BuildStatus::Running, None, None)
            .await
        {
            // Superseded meanwhile, or the app is gone.
            tracing::info!(%app, build = build.id, %err, "not running a build");
            return;
        }
        let log = build_log(self.store.clone(), app.clone(), build.id);
        let progress = Progress::new(log.sink());
        let result = self.deploy(build, &progress).await;
        if let Err(err) = &result {
            progress.error(err.to_string());
        }
        log.finish().await;
        let (status, release, failure) = match &result {
            Ok(release) => (BuildStatus::Succeeded, Some(*release), None),
            Err(err) => (BuildStatus::Failed, None, Some(err.to_string())),
        };
        if let Err(err) = self
            .store
            .set_build_status(app, build.id, status, release, failure.as_deref())
            .await
        {
            tracing::warn!(%app, build = build.id, %err, "recording how a build ended");
        }
    }

    /// Fetches and deploys a build's commit within the app's deploy turn; answers the
    /// release.
    async fn deploy(&self, build: &Build, progress: &Progress) -> Result<u32> {
        let app = &build.app;
        progress.raw(format!(
            "Build {} of {app}: {} {} pushed by {} ({})",
            build.id,
            build.reference,
            short(&build.commit),
            build.pusher,
            build.source
        ));
        let connection = self.store.repo_connection(app).await?;
        let cancel = CancellationToken::new();
        let turn = self
            .pipeline
            .reserve(app, &build.pusher, progress, &cancel)
            .await?;
        let step = progress.step(format!(
            "Fetching {} from {}",
            short(&build.commit),
            connection.repo_url
        ));
        let repo = match self
            .fetcher
            .fetch(&connection, &build.commit, progress)
            .await
        {
            Ok(repo) => repo,
            Err(err) => {
                turn.finish().await;
                return Err(err);
            }
        };
        step.done("Fetched");
        let message = build
            .message
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_string);
        let request = DeployRequest {
            app: app.clone(),
            user: build.pusher.clone(),
            source: DeploySource::Push {
                repo_path: repo.clone(),
                object_dirs: vec![],
                commit: build.commit.clone(),
                reference: build.reference.clone(),
                origin: PushOrigin::Webhook,
            },
            no_cache: false,
            message,
            turn: Some(turn.owner().to_string()),
        };
        let outcome = self
            .pipeline
            .deploy(request, progress.clone(), cancel)
            .await;
        if outcome.is_ok() {
            let branch = build
                .reference
                .strip_prefix("refs/heads/")
                .unwrap_or(&connection.branch);
            if let Err(err) = self.fetcher.set_branch(&repo, branch, &build.commit).await {
                tracing::warn!(%app, %err, "moving the deployed branch");
            }
        }
        turn.finish().await;
        Ok(outcome?.release)
    }
}

/// An app connected to a repository, as `apps:connect` made it.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The connection.
    pub connection: RepoConnection,
    /// Whether Empire made the secret up (it is then shown once, to be pasted into the
    /// git host's webhook settings).
    pub secret_generated: bool,
}

/// What became of a webhook request that passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A build was queued.
    Queued(Box<Build>),
    /// Nothing deploys, for this reason.
    Ignored(String),
}

impl Platform {
    /// Lets this platform run webhook builds (without it, webhooks are refused).
    pub fn with_builds(mut self, builds: Arc<Builds>) -> Self {
        self.builds = Some(builds);
        self
    }

    /// The webhook build runner, when there is one.
    pub fn builds_runner(&self) -> Option<&Arc<Builds>> {
        self.builds.as_ref()
    }

    /// The webhook URLs of an app under the configured public address, else under
    /// `fallback_base` (`http://host:port`); empty when neither is known.
    pub fn webhook_urls(
        &self,
        app: &AppName,
        fallback_base: Option<&str>,
    ) -> Vec<(Provider, String)> {
        let base = self
            .builds
            .as_ref()
            .and_then(|b| b.config.webhook_base_url.as_deref())
            .or(fallback_base);
        match base {
            Some(base) => Provider::ALL
                .iter()
                .map(|p| (*p, webhook_url(base, *p, app)))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Connects an app to a repository: pushes to `branch` (default `main`) deploy.
    /// Generates the secret when none is given and, for SSH URLs, a deploy key (kept
    /// when the app was already connected over SSH). Replaces an earlier connection.
    pub async fn connect_app(
        &self,
        actor: &User,
        app: &AppName,
        repo_url: &str,
        branch: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Connected> {
        self.authorize(actor, app).await?;
        let repo_url = repo_url.trim();
        let transport = repo_transport(repo_url)?;
        let branch = branch.map(str::trim).unwrap_or("main");
        let branch = branch.strip_prefix("refs/heads/").unwrap_or(branch);
        validate_branch(branch)?;
        let secret = secret.map(str::trim).filter(|s| !s.is_empty());
        if let Some(secret) = secret
            && secret.len() < 8
        {
            return Err(Error::invalid(
                "secret",
                "use at least 8 characters (or none, and Empire makes one up)",
            ));
        }
        let deploy_key = match transport {
            RepoTransport::Ssh => {
                let earlier = match self.store.repo_connection(app).await {
                    Ok(connection) => connection.deploy_key,
                    Err(Error::NotFound { .. }) => None,
                    Err(err) => return Err(err),
                };
                Some(
                    earlier
                        .unwrap_or_else(|| new_deploy_key(&format!("empire deploy key for {app}"))),
                )
            }
            RepoTransport::Https | RepoTransport::Plain => None,
        };
        let connection = self
            .store
            .connect_repo(
                app,
                &NewConnection {
                    repo_url: repo_url.to_string(),
                    branch: branch.to_string(),
                    secret: secret.map_or_else(new_secret, str::to_string),
                    deploy_key,
                },
            )
            .await?;
        self.event(
            actor,
            Some(app),
            "app.connected",
            None,
            format!("connected {app} to {repo_url} ({branch})"),
        )
        .await;
        Ok(Connected {
            connection,
            secret_generated: secret.is_none(),
        })
    }

    /// Disconnects an app from its repository; its builds stay listed.
    pub async fn disconnect_app(&self, actor: &User, app: &AppName) -> Result<RepoConnection> {
        self.authorize(actor, app).await?;
        let connection = self.store.repo_connection(app).await?;
        self.store.disconnect_repo(app).await?;
        self.event(
            actor,
            Some(app),
            "app.disconnected",
            None,
            format!("disconnected {app} from {}", connection.repo_url),
        )
        .await;
        Ok(connection)
    }

    /// The app's connection.
    pub async fn connection(&self, actor: &User, app: &AppName) -> Result<RepoConnection> {
        self.authorize(actor, app).await?;
        self.store.repo_connection(app).await
    }

    /// The app's webhook builds, newest first.
    pub async fn builds(&self, actor: &User, app: &AppName) -> Result<Vec<Build>> {
        self.authorize(actor, app).await?;
        self.store.builds(app, BUILDS_LISTED).await
    }

    /// One build, or the newest when `id` is `None`.
    pub async fn build(&self, actor: &User, app: &AppName, id: Option<i64>) -> Result<Build> {
        self.authorize(actor, app).await?;
        match id {
            Some(id) => self.store.build(app, id).await,
            None => self
                .store
                .builds(app, 1)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Error::not_found("build", format!("{app} has no builds yet"))),
        }
    }

    /// The build as it is now and its log after `after`. The build is read first, so a
    /// follower that saw it finished and read the log has all of it.
    pub async fn build_log(
        &self,
        actor: &User,
        app: &AppName,
        id: i64,
        after: i64,
    ) -> Result<(Build, Vec<BuildLogChunk>)> {
        self.authorize(actor, app).await?;
        let build = self.store.build(app, id).await?;
        let chunks = self.store.build_log(app, id, after).await?;
        Ok((build, chunks))
    }

    /// Handles a webhook request whose body is within the size limit. The checks run in
    /// order: the app is connected (else not found), the signature matches the app's
    /// secret (else unauthorized, and nothing else happens), then the event is read.
    pub async fn receive_webhook(
        &self,
        provider: Provider,
        app: &str,
        headers: &HookHeaders,
        body: &[u8],
    ) -> Result<WebhookOutcome> {
        let app = AppName::new(app).map_err(|_| Error::not_found("app", app))?;
        let connection = self.store.repo_connection(&app).await?;
        provider.verify(&connection.secret, headers, body)?;
        let hook = provider.parse(headers, body)?;
        let delivery = provider.delivery_id(headers);
        if let Some(delivery) = &delivery
            && !self.store.record_delivery(&app, delivery).await?
        {
            return Ok(WebhookOutcome::Ignored(format!(
                "delivery {delivery} was already handled"
            )));
        }
        let push = match hook {
            Hook::Ping => {
                return Ok(WebhookOutcome::Ignored(format!(
                    "ping received: pushes to {} will deploy {app}",
                    connection.branch
                )));
            }
            Hook::Other(event) => {
                return Ok(WebhookOutcome::Ignored(format!(
                    "{event} events do not deploy; only pushes do"
                )));
            }
            Hook::Push(push) => push,
        };
        if let Some(reason) = push.ignored_on(&connection.branch) {
            return Ok(WebhookOutcome::Ignored(reason));
        }
        let runner = self.builds.clone().ok_or_else(|| {
            Error::Conflict("this gateway does not run webhook builds".to_string())
        })?;
        let build = self
            .store
            .create_build(
                &app,
                &NewBuild {
                    source: provider.as_str().to_string(),
                    commit: push.after.clone(),
                    reference: push.reference.clone(),
                    pusher: push.pusher.clone(),
                    message: push.message.clone(),
                    delivery,
                    gateway: runner.config.gateway_id.clone(),
                },
            )
            .await?;
        tracing::info!(%app, build = build.id, commit = %push.after, pusher = %push.pusher, %provider, "queued a webhook build");
        runner.enqueue(build.clone()).await;
        Ok(WebhookOutcome::Queued(Box::new(build)))
    }
}

/// `<base>/webhooks/<provider>/<app>`.
pub fn webhook_url(base: &str, provider: Provider, app: &AppName) -> String {
    format!(
        "{}/webhooks/{}/{app}",
        base.trim_end_matches('/'),
        provider.as_str()
    )
}

/// Copies progress lines into a build's log in the store.
fn build_log(store: Arc<dyn Store>, app: AppName, id: i64) -> BatchedLog {
    BatchedLog::start(move |text| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            if let Err(err) = store.append_build_log(&app, id, &text).await {
                tracing::warn!(%app, build = id, %err, "writing the build log");
            }
        }
    })
}
