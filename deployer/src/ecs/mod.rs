//! The `ecs` scheduler backend: a release becomes task definitions, ECS services, a
//! target group with listener rules, Route53 records, SSM parameters and a log group,
//! and AWS keeps the desired state.
//!
//! [`plan`] decides what to change from what [`aws`] observes, [`aws`] applies it, and
//! [`rollout`] follows the deployments. See docs/ecs.md for the mapping.

pub mod aws;
pub mod config;
pub mod error;
mod logs;
mod ops;
pub mod plan;
pub mod rollout;
#[cfg(feature = "test-support")]
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use empire_core::app::AppName;
use empire_core::progress::Progress;
use empire_core::scheduler::{
    DeploySpec, LogLine, LogOptions, OneOffSpec, ProcessInstance, Reachable, RestartTarget, RunIo,
    RunOutcome, Scheduler,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use config::{EcsConfig, LaunchType};
pub use error::EcsError;

use aws::{Applied, Clients, Scope, apply, observe, short_arn};
use plan::{
    Action, Environment, Observed, Plan, TaskDefinitionRef, WEB, plan_deploy, plan_routing,
};
use rollout::{EcsSource, Outcome, Watch, follow};

/// The label of images whose ENTRYPOINT runs commands itself (buildpack images).
const LAUNCHER_LABEL: &str = "empire.launcher";

/// Runs releases as ECS services behind the load balancers.
pub struct EcsScheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EcsScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsScheduler")
            .field("cluster", &self.inner.env.cluster)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) clients: Clients,
    pub(crate) env: Environment,
    pub(crate) config: EcsConfig,
    /// Runs attached one-off processes on the gateway's Docker engine.
    pub(crate) local: Option<Arc<dyn Scheduler>>,
    /// Reads image labels on the gateway's Docker engine.
    pub(crate) docker: Option<bollard::Docker>,
    /// How often `logs --follow` polls.
    pub(crate) log_poll: Duration,
}

impl EcsScheduler {
    /// Checks the settings, loads the AWS configuration from the standard chain and
    /// resolves the load balancers and zones; names whatever is missing or wrong.
    pub async fn connect(config: EcsConfig) -> Result<Self, EcsError> {
        config.check().map_err(EcsError::Config)?;
        let (clients, sdk) = Clients::load().await;
        let region = sdk.region().map(|r| r.to_string());
        Self::with_clients(config, clients, region.as_deref()).await
    }

    /// Like [`EcsScheduler::connect`] with clients made elsewhere (tests point them at
    /// an emulator through a recording proxy).
    pub async fn with_clients(
        config: EcsConfig,
        clients: Clients,
        region: Option<&str>,
    ) -> Result<Self, EcsError> {
        let env = aws::resolve_environment(&clients, &config, region).await?;
        let docker = bollard::Docker::connect_with_local_defaults().ok();
        Ok(EcsScheduler {
            inner: Arc::new(Inner {
                clients,
                env,
                config,
                local: None,
                docker,
                log_poll: Duration::from_secs(2),
            }),
        })
    }

    /// Runs attached one-off processes (`run` with a terminal) with this scheduler,
    /// normally the docker backend on the gateway's own engine, as Empire did.
    pub fn with_local_runner(mut self, local: Arc<dyn Scheduler>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.local = Some(local);
        }
        self
    }

    /// How often `logs --follow` polls CloudWatch Logs (2 s).
    pub fn with_log_poll(mut self, poll: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.log_poll = poll;
        }
        self
    }

    /// The environment resolved at start-up.
    pub fn environment(&self) -> &Environment {
        &self.inner.env
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a rollout changed, so a failed one can be put back.
struct Moved {
    process: String,
    service: String,
    /// The task definition and count before, `None` when the service is new.
    before: Option<(String, u32)>,
    /// The task definition it moves to.
    to: String,
    /// The release it ran before.
    release_before: u32,
}

impl Inner {
    /// Applies actions that refer to nothing an earlier phase made (a whole deploy
    /// threads one phase's [`Applied`] into the next instead).
    async fn apply_phase(
        &self,
        actions: &[Action],
        progress: &Progress,
    ) -> Result<Applied, EcsError> {
        apply(
            &self.clients,
            &self.env,
            actions,
            &Applied::default(),
            progress,
        )
        .await
    }

    /// Whether the image's ENTRYPOINT runs commands (labelled by the buildpack build);
    /// known only when the gateway's engine has the image.
    async fn launcher(&self, image: &str) -> bool {
        let Some(docker) = &self.docker else {
            return false;
        };
        match docker.inspect_image(image).await {
            Ok(info) => info
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LAUNCHER_LABEL).cloned())
                .is_some_and(|v| v == "true"),
            Err(_) => false,
        }
    }

    async fn observe_for(&self, spec: &DeploySpec, launcher: bool) -> Result<Observed, EcsError> {
        let scope = Scope {
            processes: Some(spec.processes.iter().map(|p| p.name.clone()).collect()),
            wanted: spec
                .processes
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        plan::task_definition(&self.env, spec, p, launcher),
                    )
                })
                .collect(),
            hosts: Vec::new(),
        };
        observe(&self.clients, &self.env, spec.app.as_str(), &scope).await
    }

    /// Converges AWS to `spec`: a deploy, or a scale of the current release.
    async fn converge(
        &self,
        spec: &DeploySpec,
        title: &str,
        progress: &Progress,
    ) -> Result<(), EcsError> {
        let step = progress.step(title);
        let launcher = self.launcher(&spec.image).await;
        let observed = self.observe_for(spec, launcher).await?;
        let plan = plan_deploy(&self.env, spec, &observed.domains(), launcher, &observed)
            .map_err(|e| EcsError::Plan(e.0))?;
        if plan.is_empty() {
            progress.detail(format!(
                "v{} is deployed already: nothing to change",
                spec.release
            ));
            step.done("Checked");
            return Ok(());
        }
        self.run_plan(spec, &observed, &plan, progress).await?;
        step.done(format!("Deployed v{}", spec.release));
        Ok(())
    }

    /// Applies a plan's phases, following the rollout in between.
    async fn run_plan(
        &self,
        spec: &DeploySpec,
        observed: &Observed,
        plan: &Plan,
        progress: &Progress,
    ) -> Result<(), EcsError> {
        describe_actions(&plan.prepare, progress);
        let applied = self.apply_phase(&plan.prepare, progress).await?;
        let moved = moved_services(spec, observed, &plan.rollout, &applied)?;
        let since = now_millis() - 1000;
        describe_actions(&plan.rollout, progress);
        let applied = apply(&self.clients, &self.env, &plan.rollout, &applied, progress).await;
        let applied = match applied {
            Ok(applied) => applied,
            Err(err) => {
                // Some services may have moved: put them back.
                progress.error(format!("{err}"));
                self.put_back(&moved, None, progress).await;
                return Err(err);
            }
        };

        let watches: Vec<Watch> = moved
            .iter()
            .map(|m| Watch {
                process: m.process.clone(),
                service: m.service.clone(),
                task_definition: m.to.clone(),
            })
            .collect();
        if self.config.rollout_wait && !watches.is_empty() {
            let source = EcsSource {
                clients: &self.clients,
                env: &self.env,
            };
            let outcome = follow(
                &source,
                &watches,
                self.config.rollout_timeout,
                self.config.rollout_poll,
                since,
                progress,
            )
            .await?;
            let failure = match outcome {
                Outcome::Completed => None,
                Outcome::Failed {
                    process,
                    reason,
                    rolled_back_by_ecs,
                } => {
                    progress.error(format!("{process}: the deployment failed: {reason}"));
                    let skip = rolled_back_by_ecs.then_some(process.clone());
                    Some((format!("the {process} deployment failed: {reason}"), skip))
                }
                Outcome::TimedOut { waiting } => {
                    let minutes = crate::ecs::format_timeout(self.config.rollout_timeout);
                    progress.error(format!(
                        "{} did not finish rolling out within {minutes}",
                        waiting.join(", ")
                    ));
                    Some((
                        format!(
                            "{} did not finish rolling out within {minutes}",
                            waiting.join(", ")
                        ),
                        None,
                    ))
                }
            };
            if let Some((message, skip)) = failure {
                self.put_back(&moved, skip.as_deref(), progress).await;
                return Err(EcsError::Rollout(message));
            }
        } else if !watches.is_empty() {
            progress.detail("Services updated; ECS rolls them out (not waiting)");
        }

        describe_actions(&plan.finalize, progress);
        apply(&self.clients, &self.env, &plan.finalize, &applied, progress).await?;
        Ok(())
    }

    /// Puts every moved service back where it was (a new one is removed), except
    /// `skip`, which ECS's circuit breaker puts back itself.
    async fn put_back(&self, moved: &[Moved], skip: Option<&str>, progress: &Progress) {
        let mut actions = Vec::new();
        for m in moved {
            if Some(m.process.as_str()) == skip {
                progress.detail(format!("{}: ECS rolls it back", m.process));
                continue;
            }
            match &m.before {
                Some((task_definition, count)) => {
                    progress.detail(format!(
                        "{}: back to {} ({count})",
                        m.process,
                        short_arn(task_definition)
                    ));
                    actions.push(Action::UpdateService {
                        name: m.service.clone(),
                        process: m.process.clone(),
                        task_definition: Some(TaskDefinitionRef::Arn(task_definition.clone())),
                        desired_count: *count,
                        force_new_deployment: false,
                        release: m.release_before,
                    });
                }
                None => {
                    progress.detail(format!("{}: removing the new service", m.process));
                    actions.push(Action::DeleteService {
                        name: m.service.clone(),
                    });
                }
            }
        }
        if let Err(err) = self.apply_phase(&actions, progress).await {
            warn!(error = %err, "putting services back failed");
            progress.error(format!("putting the services back failed: {err}"));
        }
    }
}

/// `10m`, `90s`.
pub(crate) fn format_timeout(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if secs > 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The services a rollout moves to another task definition (or creates), with where
/// they were.
fn moved_services(
    spec: &DeploySpec,
    observed: &Observed,
    rollout: &[Action],
    applied: &Applied,
) -> Result<Vec<Moved>, EcsError> {
    let mut moved = Vec::new();
    for action in rollout {
        match action {
            Action::CreateService { service } => moved.push(Moved {
                process: service.process.clone(),
                service: service.name.clone(),
                before: None,
                to: applied.resolve(&service.task_definition)?,
                release_before: 0,
            }),
            Action::UpdateService {
                name,
                process,
                task_definition,
                force_new_deployment,
                ..
            } => {
                let before = observed
                    .services
                    .get(process)
                    .map(|s| (s.task_definition.clone(), s.desired_count));
                let release_before = observed
                    .services
                    .get(process)
                    .and_then(|s| s.release)
                    .unwrap_or(spec.release);
                let to = match task_definition {
                    Some(reference) => applied.resolve(reference)?,
                    None if *force_new_deployment => {
                        before.as_ref().map(|b| b.0.clone()).unwrap_or_default()
                    }
                    // A count change alone: nothing to follow or put back… unless it
                    // scales up a web process, which health checks gate too.
                    None => {
                        if process == WEB
                            && let Some((td, _)) = &before
                        {
                            moved.push(Moved {
                                process: process.clone(),
                                service: name.clone(),
                                before: before.clone(),
                                to: td.clone(),
                                release_before,
                            });
                        }
                        continue;
                    }
                };
                moved.push(Moved {
                    process: process.clone(),
                    service: name.clone(),
                    before,
                    to,
                    release_before,
                });
            }
            _ => {}
        }
    }
    Ok(moved)
}

/// Prints one line per action.
fn describe_actions(actions: &[Action], progress: &Progress) {
    let mut parameters = 0;
    for action in actions {
        let line = match action {
            Action::CreateLogGroup { name, .. } => format!("Creating the log group {name}"),
            Action::DeleteLogGroup { name } => format!("Deleting the log group {name}"),
            Action::PutParameter { .. } => {
                parameters += 1;
                continue;
            }
            Action::DeleteParameters { names } => {
                format!("Deleting {} old config parameter(s)", names.len())
            }
            Action::RegisterTaskDefinition { .. } => continue,
            Action::DeregisterTaskDefinitions { arns } => {
                format!("Deregistering {} old task definition(s)", arns.len())
            }
            Action::CreateTargetGroup { target_group } => {
                format!("Creating the target group {}", target_group.name)
            }
            Action::ModifyTargetGroup {
                health_check_path, ..
            } => format!("Health check: GET {health_check_path}"),
            Action::SetDeregistrationDelay { seconds, .. } => {
                format!("Connection draining: {seconds}s")
            }
            Action::DeleteTargetGroup { .. } => "Deleting the target group".to_string(),
            Action::CreateRule {
                hosts, listener, ..
            } => format!(
                "Routing {} through the {} load balancer",
                hosts.join(", "),
                match listener {
                    plan::Listener::Internal => "internal",
                    plan::Listener::External => "internet-facing",
                }
            ),
            Action::ModifyRule { hosts, .. } => format!("Routing {}", hosts.join(", ")),
            Action::DeleteRule { .. } => "Removing a listener rule".to_string(),
            Action::ChangeRecords { changes, .. } => changes
                .iter()
                .map(|c| {
                    format!(
                        "DNS {} {}",
                        if c.action == "DELETE" {
                            "removing"
                        } else {
                            "setting"
                        },
                        c.record.name
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Action::CreateService { service } => format!(
                "{}: creating the service {} ({} task{})",
                service.process,
                service.name,
                service.desired_count,
                if service.desired_count == 1 { "" } else { "s" }
            ),
            Action::UpdateService {
                process,
                name,
                task_definition,
                desired_count,
                force_new_deployment,
                ..
            } => {
                let what = match (task_definition, force_new_deployment) {
                    (Some(_), _) => "updating",
                    (None, true) => "restarting",
                    (None, false) => "scaling",
                };
                format!(
                    "{process}: {what} the service {name} ({desired_count} task{})",
                    if *desired_count == 1 { "" } else { "s" }
                )
            }
            Action::DeleteService { name } => format!("Removing the service {name}"),
            Action::PutSchedule {
                process,
                expression,
                ..
            } => format!("{process}: scheduled {expression}"),
            Action::DeleteSchedule { rule } => format!("Removing the schedule {rule}"),
        };
        progress.detail(line);
    }
    if parameters > 0 {
        progress.detail(format!(
            "Storing {parameters} config var(s) in SSM Parameter Store"
        ));
    }
}

#[async_trait]
impl Scheduler for EcsScheduler {
    async fn deploy(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        let title = format!(
            "Deploying v{} to ECS (cluster {})",
            spec.release, self.inner.env.cluster
        );
        self.inner.converge(spec, &title, progress).await?;
        info!(app = %spec.app, release = spec.release, "deployed to ecs");
        Ok(())
    }

    async fn restore(&self, current: &[DeploySpec]) -> empire_core::Result<()> {
        // AWS keeps the desired state; check that the services are there.
        for spec in current {
            let services =
                aws::list_app_services(&self.inner.clients, &self.inner.env, spec.app.as_str())
                    .await?;
            let missing: Vec<&str> = spec
                .processes
                .iter()
                .filter(|p| p.is_service())
                .filter(|p| !services.contains(&plan::family(spec.app.as_str(), &p.name)))
                .map(|p| p.name.as_str())
                .collect();
            if !missing.is_empty() {
                warn!(app = %spec.app, ?missing, "services of the current release are missing in ECS; the next deploy recreates them");
            }
        }
        Ok(())
    }

    async fn remove_release(&self, app: &AppName, release: u32) -> empire_core::Result<()> {
        Ok(self.inner.remove_release(app.as_str(), release).await?)
    }

    async fn remove_app(&self, app: &AppName) -> empire_core::Result<()> {
        Ok(self.inner.remove_app(app.as_str()).await?)
    }

    async fn processes(&self, app: &AppName) -> empire_core::Result<Vec<ProcessInstance>> {
        Ok(self.inner.processes(app.as_str()).await?)
    }

    async fn scale(&self, spec: &DeploySpec, progress: &Progress) -> empire_core::Result<()> {
        let title = format!("Scaling v{} on ECS", spec.release);
        Ok(self.inner.converge(spec, &title, progress).await?)
    }

    async fn restart(
        &self,
        spec: &DeploySpec,
        target: &RestartTarget,
        progress: &Progress,
    ) -> empire_core::Result<()> {
        Ok(self.inner.restart(spec, target, progress).await?)
    }

    async fn run(&self, spec: &OneOffSpec, io: Option<RunIo>) -> empire_core::Result<RunOutcome> {
        match io {
            Some(io) => match &self.inner.local {
                Some(local) => local.run(spec, Some(io)).await,
                None => Err(EcsError::Unsupported(
                    "an attached run needs the gateway's docker engine, which is not configured; use run --detach"
                        .into(),
                )
                .into()),
            },
            None => Ok(self.inner.run_detached(spec).await?),
        }
    }

    async fn logs(
        &self,
        app: &AppName,
        options: &LogOptions,
    ) -> empire_core::Result<mpsc::Receiver<LogLine>> {
        Ok(logs::stream(self.inner.clone(), app.as_str(), options).await?)
    }

    async fn set_domains(&self, app: &AppName, hostnames: &[String]) -> empire_core::Result<()> {
        Ok(self.inner.set_domains(app.as_str(), hostnames).await?)
    }
    fn reachable(&self, app: &AppName) -> Option<Reachable> {
        let internal = &self.inner.env.internal;
        Some(Reachable {
            url: format!(
                "{}://{}.{}",
                if internal.https { "https" } else { "http" },
                app.as_str(),
                self.inner.env.internal_zone.domain
            ),
            via: "the internal load balancer".to_string(),
        })
    }
}

impl Inner {
    async fn set_domains(&self, app: &str, hostnames: &[String]) -> Result<(), EcsError> {
        let scope = Scope {
            processes: Some(Vec::new()),
            hosts: hostnames.to_vec(),
            ..Scope::default()
        };
        let observed = observe(&self.clients, &self.env, app, &scope).await?;
        let release = observed
            .services
            .values()
            .filter_map(|s| s.release)
            .max()
            .unwrap_or(0);
        let actions = plan_routing(&self.env, app, None, release, hostnames, &observed)
            .map_err(|e| EcsError::Plan(e.0))?;
        self.apply_phase(&actions, &Progress::null()).await?;
        Ok(())
    }
}

/// Process types by name, for lookups.
pub(crate) fn by_name(spec: &DeploySpec) -> BTreeMap<&str, &empire_core::scheduler::ProcessSpec> {
    spec.processes
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect()
}
