//! The operations a team runs after the first push, with their permission checks and
//! events. The HTTP API, the CLI (through the API) and the SSH commands are three faces
//! over this one layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::{App, AppName};
use crate::domain::{Domain, normalize_hostname};
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent};
use crate::formation::{ProcessFormation, ProcessSize, ScaleRequest};
use crate::pipeline::{
    DeployOutcome, DeployRequest, DeploySource, Pipeline, RELEASE_PROCESS, deploy_spec, size_of,
};
use crate::progress::Progress;
use crate::release::{ConfigVars, Release};
use crate::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, RestartTarget, RunIo, RunOutcome,
    Scheduler,
};
use crate::store::Store;
use crate::user::{ApiToken, SshKey, User};

mod webhooks;
pub use webhooks::{DeliveryReport, MAX_DELIVERIES, WebhookRequest};

pub mod builds;

/// Removes what an app leaves outside the store and the scheduler: its git repository,
/// build cache and images. Implemented by the binary over gitd's and the builder's parts.
#[async_trait]
pub trait AppData: Send + Sync {
    /// Removes everything kept for the app.
    async fn remove(&self, app: &AppName) -> Result<()>;
}

/// The service layer.
pub struct Platform {
    store: Arc<dyn Store>,
    scheduler: Arc<dyn Scheduler>,
    pipeline: Arc<dyn Pipeline>,
    app_data: Arc<dyn AppData>,
    /// Runs webhook builds ([`builds`]); `None` refuses webhooks.
    builds: Option<Arc<builds::Builds>>,
}

/// A change to config vars: `Some` sets, `None` unsets.
pub type ConfigChanges = BTreeMap<String, Option<String>>;

/// An API token as created: the record and its secret, shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The stored record.
    pub token: ApiToken,
    /// The secret to present (`Authorization: Basic` password or bearer).
    pub secret: String,
}

impl Platform {
    /// Wires the service layer.
    pub fn new(
        store: Arc<dyn Store>,
        scheduler: Arc<dyn Scheduler>,
        pipeline: Arc<dyn Pipeline>,
        app_data: Arc<dyn AppData>,
    ) -> Self {
        Platform {
            store,
            scheduler,
            pipeline,
            app_data,
            builds: None,
        }
    }

    /// The store, for faces that need a read the service does not wrap.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks that `actor` may read and change `app`: admins may, collaborators may,
    /// anybody else gets [`Error::Forbidden`]. An unknown app is not found.
    pub async fn authorize(&self, actor: &User, app: &AppName) -> Result<App> {
        let found = self.store.app(app).await?;
        if actor.admin || self.store.is_collaborator(app, &actor.name).await? {
            Ok(found)
        } else {
            Err(Error::Forbidden(format!(
                "you ({}) do not have access to app {app}",
                actor.name
            )))
        }
    }

    fn require_admin(actor: &User, what: &str) -> Result<()> {
        if actor.admin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("only admins may {what}")))
        }
    }

    async fn event(
        &self,
        actor: &User,
        app: Option<&AppName>,
        action: &str,
        release: Option<u32>,
        message: String,
    ) {
        let event = NewEvent::new(app, actor.name.clone(), action, message).with_release(release);
        self.record(event).await;
    }

    /// Records an event (and so queues its webhook deliveries); a failure is logged.
    async fn record(&self, event: NewEvent) {
        if let Err(err) = self.store.record_event(event.clone()).await {
            tracing::warn!(%err, action = event.action, "recording an event");
        }
    }

    // ----- users, tokens, keys -----

    /// Authenticates an API token secret.
    pub async fn user_by_token(&self, secret: &str) -> Result<User> {
        self.store
            .user_by_token(&token_digest(secret))
            .await
            .map_err(|err| match err {
                Error::NotFound { .. } => Error::Unauthorized("the API token is not valid".into()),
                other => other,
            })
    }

    /// Creates an API token for `user`.
    pub async fn create_token(&self, user: &str, description: &str) -> Result<NewToken> {
        issue_token(self.store.as_ref(), user, description).await
    }

    /// The actor's SSH keys.
    pub async fn keys(&self, actor: &User) -> Result<Vec<SshKey>> {
        self.store.keys(Some(&actor.name)).await
    }

    /// Adds an SSH key (already parsed: fingerprint and normalized line) for the actor.
    pub async fn add_key(
        &self,
        actor: &User,
        fingerprint: &str,
        public_key: &str,
    ) -> Result<SshKey> {
        let key = self
            .store
            .add_key(&actor.name, fingerprint, public_key)
            .await?;
        self.event(
            actor,
            None,
            "key.added",
            None,
            format!("added key {fingerprint}"),
        )
        .await;
        Ok(key)
    }

    /// Removes one of the actor's SSH keys (admins may remove anybody's).
    pub async fn remove_key(&self, actor: &User, fingerprint: &str) -> Result<()> {
        let key = self.store.key(fingerprint).await?;
        if key.user != actor.name && !actor.admin {
            return Err(Error::not_found("key", fingerprint));
        }
        self.store.remove_key(fingerprint).await?;
        self.event(
            actor,
            None,
            "key.removed",
            None,
            format!("removed key {fingerprint}"),
        )
        .await;
        Ok(())
    }

    // ----- apps -----

    /// The apps the actor may see.
    pub async fn apps(&self, actor: &User) -> Result<Vec<App>> {
        self.store.apps_for(actor).await
    }

    /// Creates an app owned by the actor.
    pub async fn create_app(&self, actor: &User, name: &str) -> Result<App> {
        let name = AppName::new(name)?;
        let app = self.store.create_app(&name, &actor.name).await?;
        self.event(
            actor,
            Some(&name),
            "app.created",
            None,
            format!("created {name}"),
        )
        .await;
        Ok(app)
    }

    /// One app.
    pub async fn app(&self, actor: &User, app: &AppName) -> Result<App> {
        self.authorize(actor, app).await
    }

    /// Destroys an app: its processes, router entries, images, repository, cache and
    /// records. `confirm` must repeat the app's name.
    pub async fn destroy_app(&self, actor: &User, app: &AppName, confirm: &str) -> Result<()> {
        self.authorize(actor, app).await?;
        if confirm != app.as_str() {
            return Err(Error::invalid(
                "confirm",
                format!("destroying {app} needs --confirm {app}"),
            ));
        }
        self.scheduler.remove_app(app).await?;
        self.scheduler.set_domains(app, &[]).await?;
        self.app_data.remove(app).await?;
        self.store.delete_app(app).await?;
        self.event(
            actor,
            Some(app),
            "app.destroyed",
            None,
            format!("destroyed {app}"),
        )
        .await;
        Ok(())
    }

    // ----- releases and deploys -----

    /// The app's releases, newest first.
    pub async fn releases(&self, actor: &User, app: &AppName) -> Result<Vec<Release>> {
        self.authorize(actor, app).await?;
        self.store.releases(app).await
    }

    /// The app and its releases, newest first, checking access once (what
    /// `GET /apps/{app}/releases` answers: the releases and which one is current).
    pub async fn app_releases(&self, actor: &User, app: &AppName) -> Result<(App, Vec<Release>)> {
        let found = self.authorize(actor, app).await?;
        let releases = self.store.releases(app).await?;
        Ok((found, releases))
    }

    /// One release.
    pub async fn release(&self, actor: &User, app: &AppName, version: u32) -> Result<Release> {
        self.authorize(actor, app).await?;
        self.store.release(app, version).await
    }

    /// A release's deploy output.
    pub async fn release_log(&self, actor: &User, app: &AppName, version: u32) -> Result<String> {
        self.authorize(actor, app).await?;
        self.store.release(app, version).await?;
        self.store.deploy_log(app, version).await
    }

    async fn deploy(
        &self,
        actor: &User,
        app: &AppName,
        source: DeploySource,
        message: Option<String>,
        progress: Progress,
        cancel: CancellationToken,
    ) -> Result<DeployOutcome> {
        let request = DeployRequest {
            app: app.clone(),
            user: actor.name.clone(),
            source,
            no_cache: false,
            message,
            turn: None,
        };
        self.pipeline.deploy(request, progress, cancel).await
    }

    /// Deploys a prebuilt image as a new release (`emp deploy`).
    pub async fn deploy_image(
        &self,
        actor: &User,
        app: &AppName,
        image: &str,
        message: Option<String>,
        progress: Progress,
    ) -> Result<DeployOutcome> {
        self.authorize(actor, app).await?;
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(Error::invalid(
                "image",
                format!("{image:?} is not an image reference"),
            ));
        }
        let outcome = self
            .deploy(
                actor,
                app,
                DeploySource::Image {
                    image: image.to_string(),
                },
                message,
                progress,
                CancellationToken::new(),
            )
            .await?;
        self.event(
            actor,
            Some(app),
            "deploy",
            Some(outcome.release),
            format!("deployed {image}"),
        )
        .await;
        Ok(outcome)
    }

    /// Rolls back to `version`'s image and config as a new release, keeping today's
    /// formation.
    pub async fn rollback(
        &self,
        actor: &User,
        app: &AppName,
        version: u32,
        progress: Progress,
    ) -> Result<DeployOutcome> {
        self.authorize(actor, app).await?;
        let outcome = self
            .deploy(
                actor,
                app,
                DeploySource::Rollback { version },
                None,
                progress,
                CancellationToken::new(),
            )
            .await?;
        self.record(
            NewEvent::new(
                Some(app),
                actor.name.clone(),
                crate::event::ROLLBACK,
                format!("rolled back to v{version}"),
            )
            .with_release(Some(outcome.release))
            .with("rollback_to", version),
        )
        .await;
        Ok(outcome)
    }

    // ----- config -----

    /// The app's config vars.
    pub async fn config(&self, actor: &User, app: &AppName) -> Result<ConfigVars> {
        self.authorize(actor, app).await?;
        self.store.app_config(app).await
    }

    /// Sets and unsets config vars in one change. With a running release this redeploys
    /// through the health-gated rollout as one new release; if that does not become
    /// healthy nothing changes and no release is recorded.
    pub async fn set_config(
        &self,
        actor: &User,
        app: &AppName,
        changes: &ConfigChanges,
        progress: Progress,
    ) -> Result<ConfigVars> {
        let found = self.authorize(actor, app).await?;
        if changes.is_empty() {
            return Err(Error::invalid("config", "no config vars given"));
        }
        for key in changes.keys() {
            validate_config_key(key)?;
        }
        let mut config = self.store.app_config(app).await?;
        for (key, value) in changes {
            match value {
                Some(value) => {
                    config.insert(key.clone(), value.clone());
                }
                None => {
                    config.remove(key);
                }
            }
        }
        let set: Vec<&str> = changes
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.as_str())
            .collect();
        let unset: Vec<&str> = changes
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut description = Vec::new();
        if !set.is_empty() {
            description.push(format!(
                "Set {} config var{}",
                set.join(", "),
                plural(set.len())
            ));
        }
        if !unset.is_empty() {
            description.push(format!(
                "Unset {} config var{}",
                unset.join(", "),
                plural(unset.len())
            ));
        }
        let description = description.join("; ");
        let release = if found.current_release.is_some() {
            let outcome = self
                .deploy(
                    actor,
                    app,
                    DeploySource::Config {
                        config: config.clone(),
                        description: description.clone(),
                    },
                    None,
                    progress,
                    CancellationToken::new(),
                )
                .await?;
            Some(outcome.release)
        } else {
            self.store.set_app_config(app, &config).await?;
            None
        };
        // The keys only: config values never leave the store in an event.
        self.record(
            NewEvent::new(
                Some(app),
                actor.name.clone(),
                crate::event::CONFIG_CHANGED,
                description,
            )
            .with_release(release)
            .with("set", set)
            .with("unset", unset),
        )
        .await;
        Ok(config)
    }

    // ----- formation and processes -----

    /// The formation of every process type of the current release.
    pub async fn formation(&self, actor: &User, app: &AppName) -> Result<Vec<ProcessFormation>> {
        let found = self.authorize(actor, app).await?;
        let scaled = self.store.formation(app).await?;
        let Some(version) = found.current_release else {
            return Ok(scaled);
        };
        let release = self.store.release(app, version).await?;
        let spec = deploy_spec(&release, &scaled)?;
        Ok(spec
            .processes
            .into_iter()
            .map(|p| ProcessFormation {
                process: p.name,
                quantity: p.quantity,
                size: p.size,
            })
            .collect())
    }

    /// Scales process types (`web=3`, `worker=2:2X`); makes no release. Unknown process
    /// types are refused and nothing is applied.
    pub async fn scale(
        &self,
        actor: &User,
        app: &AppName,
        requests: &[ScaleRequest],
        progress: Progress,
    ) -> Result<Vec<ProcessFormation>> {
        let found = self.authorize(actor, app).await?;
        if requests.is_empty() {
            return Err(Error::invalid(
                "scale",
                "no process types given (e.g. web=2)",
            ));
        }
        let version = found.current_release.ok_or_else(|| {
            Error::Conflict(format!(
                "{app} has no release yet: deploy it before scaling"
            ))
        })?;
        let release = self.store.release(app, version).await?;
        let current = self.formation(actor, app).await?;
        let mut changed = Vec::new();
        for request in requests {
            if request.process == RELEASE_PROCESS
                || !release.process_types.contains_key(&request.process)
            {
                let known: Vec<&str> = release
                    .process_types
                    .keys()
                    .filter(|p| p.as_str() != RELEASE_PROCESS)
                    .map(String::as_str)
                    .collect();
                return Err(Error::not_found(
                    "process type",
                    format!(
                        "{} (v{version} of {app} has {})",
                        request.process,
                        known.join(", ")
                    ),
                ));
            }
            let before = current.iter().find(|f| f.process == request.process);
            changed.push(ProcessFormation {
                process: request.process.clone(),
                quantity: request.quantity.or(before.map(|f| f.quantity)).unwrap_or(0),
                size: request.size.or(before.map(|f| f.size)).unwrap_or_default(),
            });
        }
        let mut formation = self.store.formation(app).await?;
        for entry in &changed {
            formation.retain(|f| f.process != entry.process);
            formation.push(entry.clone());
        }
        let spec = deploy_spec(&release, &formation)?;
        refuse_scaling_non_services(&spec, requests)?;
        self.scheduler.scale(&spec, &progress).await?;
        self.store.set_formation(app, &changed).await?;
        let summary: Vec<String> = changed
            .iter()
            .map(|f| format!("{}={}:{}", f.process, f.quantity, f.size))
            .collect();
        let formation: Vec<serde_json::Value> = changed
            .iter()
            .map(|f| {
                serde_json::json!({
                    "process": f.process,
                    "quantity": f.quantity,
                    "size": f.size.to_string(),
                })
            })
            .collect();
        self.record(
            NewEvent::new(
                Some(app),
                actor.name.clone(),
                crate::event::SCALE,
                format!("scaled {}", summary.join(" ")),
            )
            .with("formation", formation),
        )
        .await;
        self.formation(actor, app).await
    }

    /// The app's process instances.
    pub async fn processes(&self, actor: &User, app: &AppName) -> Result<Vec<ProcessInstance>> {
        self.authorize(actor, app).await?;
        self.scheduler.processes(app).await
    }

    /// Restarts all processes, one type (`web`) or one instance (`web.2`).
    pub async fn restart(
        &self,
        actor: &User,
        app: &AppName,
        target: Option<&str>,
        progress: Progress,
    ) -> Result<()> {
        let found = self.authorize(actor, app).await?;
        let version = found
            .current_release
            .ok_or_else(|| Error::Conflict(format!("{app} has no release to restart")))?;
        let release = self.store.release(app, version).await?;
        let target = match target {
            None => RestartTarget::All,
            Some(text) => parse_restart_target(text, &release)?,
        };
        let formation = self.store.formation(app).await?;
        self.scheduler
            .restart(&deploy_spec(&release, &formation)?, &target, &progress)
            .await?;
        self.event(
            actor,
            Some(app),
            "restart",
            None,
            format!("restarted {}", target_name(&target)),
        )
        .await;
        Ok(())
    }

    /// Runs a one-off process in the current release's image and config, at `size` or
    /// else the formation's `run` size.
    pub async fn run(
        &self,
        actor: &User,
        app: &AppName,
        command: &str,
        tty: bool,
        size: Option<ProcessSize>,
        io: Option<RunIo>,
    ) -> Result<RunOutcome> {
        let found = self.authorize(actor, app).await?;
        if command.trim().is_empty() {
            return Err(Error::invalid("command", "no command given"));
        }
        let version = found
            .current_release
            .ok_or_else(|| Error::Conflict(format!("{app} has no release to run a command in")))?;
        let release = self.store.release(app, version).await?;
        let formation = self.store.formation(app).await?;
        let mut spec = OneOffSpec {
            app: app.clone(),
            release: version,
            image: release.image.clone().unwrap_or_default(),
            config: release.config.clone(),
            command: command.to_string(),
            size: size.unwrap_or_else(|| size_of(&formation, "run")),
            tty,
        };
        // `run console --verbose` runs the `console` process type's command with the
        // arguments after it, its environment and (unless given) its size, as Empire did.
        let (first, rest) = command
            .trim_start()
            .split_once(char::is_whitespace)
            .unwrap_or((command.trim(), ""));
        let named = deploy_spec(&release, &formation)
            .ok()
            .and_then(|deploy| deploy.processes.into_iter().find(|p| p.name == first))
            .filter(|process| process.command.is_some());
        if let Some(process) = named {
            let own = process.command.unwrap_or_default();
            spec.command = if rest.trim().is_empty() {
                own
            } else {
                format!("{own} {}", rest.trim())
            };
            spec.config.extend(process.environment);
            if size.is_none() {
                spec.size = process.size;
            }
        }
        self.event(
            actor,
            Some(app),
            "run",
            Some(version),
            format!("ran {command}"),
        )
        .await;
        self.scheduler.run(&spec, io).await
    }

    /// Streams the app's logs.
    pub async fn logs(
        &self,
        actor: &User,
        app: &AppName,
        options: &LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>> {
        self.authorize(actor, app).await?;
        self.scheduler.logs(app, options).await
    }

    // ----- domains -----

    /// The app's custom domains.
    pub async fn domains(&self, actor: &User, app: &AppName) -> Result<Vec<Domain>> {
        self.authorize(actor, app).await?;
        self.store.domains(Some(app)).await
    }

    /// Adds a hostname; the router serves it for the app at once.
    pub async fn add_domain(&self, actor: &User, app: &AppName, hostname: &str) -> Result<Domain> {
        self.authorize(actor, app).await?;
        let hostname = normalize_hostname(hostname)?;
        let domain = self.store.add_domain(app, &hostname).await?;
        self.sync_domains(app).await?;
        self.event(
            actor,
            Some(app),
            "domain.added",
            None,
            format!("added domain {hostname}"),
        )
        .await;
        Ok(domain)
    }

    /// Removes a hostname.
    pub async fn remove_domain(&self, actor: &User, app: &AppName, hostname: &str) -> Result<()> {
        self.authorize(actor, app).await?;
        let hostname = normalize_hostname(hostname)?;
        self.store.remove_domain(app, &hostname).await?;
        self.sync_domains(app).await?;
        self.event(
            actor,
            Some(app),
            "domain.removed",
            None,
            format!("removed domain {hostname}"),
        )
        .await;
        Ok(())
    }

    async fn sync_domains(&self, app: &AppName) -> Result<()> {
        let hostnames: Vec<String> = self
            .store
            .domains(Some(app))
            .await?
            .into_iter()
            .map(|d| d.hostname)
            .collect();
        self.scheduler.set_domains(app, &hostnames).await
    }

    /// Tells the scheduler every app's domains (after a restart).
    pub async fn restore_domains(&self) -> Result<()> {
        let mut by_app: BTreeMap<AppName, Vec<String>> = BTreeMap::new();
        for domain in self.store.domains(None).await? {
            by_app.entry(domain.app).or_default().push(domain.hostname);
        }
        for (app, hostnames) in by_app {
            self.scheduler.set_domains(&app, &hostnames).await?;
        }
        Ok(())
    }

    // ----- access -----

    /// The app's collaborators.
    pub async fn collaborators(&self, actor: &User, app: &AppName) -> Result<Vec<String>> {
        self.authorize(actor, app).await?;
        self.store.collaborators(app).await
    }

    /// Adds a collaborator.
    pub async fn add_collaborator(&self, actor: &User, app: &AppName, user: &str) -> Result<()> {
        self.authorize(actor, app).await?;
        self.store.user(user).await?;
        self.store.add_collaborator(app, user).await?;
        self.event(
            actor,
            Some(app),
            "access.added",
            None,
            format!("gave {user} access"),
        )
        .await;
        Ok(())
    }

    /// Removes a collaborator.
    pub async fn remove_collaborator(&self, actor: &User, app: &AppName, user: &str) -> Result<()> {
        self.authorize(actor, app).await?;
        self.store.remove_collaborator(app, user).await?;
        self.event(
            actor,
            Some(app),
            "access.removed",
            None,
            format!("removed {user}'s access"),
        )
        .await;
        Ok(())
    }

    /// Events of one app (collaborators) or of all apps (admins).
    pub async fn events(
        &self,
        actor: &User,
        app: Option<&AppName>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        match app {
            Some(app) => {
                self.authorize(actor, app).await?;
            }
            None => Self::require_admin(actor, "read every app's events")?,
        }
        self.store.events(app, limit).await
    }
}

/// Creates an API token for `user` in `store`: a long random secret, stored only as its
/// SHA-256 digest, so checking one costs a digest and an index lookup.
pub async fn issue_token(store: &dyn Store, user: &str, description: &str) -> Result<NewToken> {
    let secret = new_token_secret();
    let token = store
        .create_token(user, &token_digest(&secret), description)
        .await?;
    Ok(NewToken { token, secret })
}

/// The SHA-256 hex digest under which a token's secret is stored.
pub fn token_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_token_secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("emp_{}", hex::encode(bytes))
}

/// Config keys are environment variable names: a letter or `_`, then letters, digits or
/// `_`.
pub fn validate_config_key(key: &str) -> Result<()> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "config key",
            format!(
                "{key:?} is not a valid name: use letters, digits and _ and start with a letter or _"
            ),
        ))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn parse_restart_target(text: &str, release: &Release) -> Result<RestartTarget> {
    let (process, instance) = match text.split_once('.') {
        Some((process, n)) => {
            let n: u32 = n.parse().map_err(|_| {
                Error::invalid(
                    "process",
                    format!("{text:?} is not a process (web) or an instance (web.1)"),
                )
            })?;
            (process, Some(n))
        }
        None => (text, None),
    };
    if !release.process_types.contains_key(process) || process == RELEASE_PROCESS {
        return Err(Error::not_found("process type", process));
    }
    Ok(match instance {
        Some(n) => RestartTarget::Instance(process.to_string(), n),
        None => RestartTarget::Process(process.to_string()),
    })
}

fn target_name(target: &RestartTarget) -> String {
    match target {
        RestartTarget::All => "all processes".into(),
        RestartTarget::Process(p) => p.clone(),
        RestartTarget::Instance(p, n) => format!("{p}.{n}"),
    }
}

/// Refuses a count above zero for a process type that runs no service: a `cron` type
/// runs as one-off processes on its schedule, a `noservice` type only through `run`.
/// Their size may still be set.
fn refuse_scaling_non_services(spec: &DeploySpec, requests: &[ScaleRequest]) -> Result<()> {
    for request in requests
        .iter()
        .filter(|r| r.quantity.is_some_and(|q| q > 0))
    {
        let Some(process) = spec.processes.iter().find(|p| p.name == request.process) else {
            continue;
        };
        if let Some(schedule) = &process.cron {
            return Err(Error::invalid(
                "scale",
                format!(
                    "{} runs on its schedule \"{schedule}\" as one-off processes; it cannot be scaled",
                    process.name
                ),
            ));
        }
        if process.noservice {
            return Err(Error::invalid(
                "scale",
                format!(
                    "{} is a noservice process type: start it with run {}",
                    process.name, process.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        for ok in ["FOO", "_X", "a1_B"] {
            validate_config_key(ok).unwrap();
        }
        for bad in ["", "1A", "A-B", "A B", "A=B"] {
            assert!(validate_config_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_secrets_are_long_random_and_digested() {
        let a = new_token_secret();
        let b = new_token_secret();
        assert_ne!(a, b);
        assert!(a.len() >= 64);
        assert_eq!(token_digest(&a).len(), 64);
        assert_eq!(token_digest(&a), token_digest(&a));
    }
}
